"""Storage URIs (``s3://bucket/prefix``, ``file:///path``, a plain path) and the S3 options."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from dbkit._urls import mask_url
from dbkit.errors import ConfigError

if TYPE_CHECKING:
    from dbkit.backup._storage_base import Storage

SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
ADDRESSING_STYLES = ("auto", "path", "virtual")
URI_EXAMPLE = "s3://acme-db-backups/prod"

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_STORAGE_CLASS_RE = re.compile(r"[A-Z][A-Z0-9_]*")
#: what S3 allows in tag keys and values: letters, digits, spaces and + - = . _ : / @
_TAG_RE = re.compile(r"[\w .:/=+\-@]*")


@dataclass(frozen=True)
class S3Options:
    """How to reach S3.  Every field is optional: unset means boto3's default (AWS, its credential chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    addressing_style: str = "auto"
    sse: str | None = None
    kms_key_id: str | None = None
    storage_class: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: boto3's attempts per request (standard retry mode: throttling, 5xx, connection errors)
    max_attempts: int = 5
    connect_timeout: float = 10
    read_timeout: float = 120

    def __post_init__(self) -> None:
        for f in fields(self):  # "" (an empty variable) means unset, like None
            value = getattr(self, f.name)
            if f.default is None and isinstance(value, str) and not value.strip():
                object.__setattr__(self, f.name, None)
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("S3_ENDPOINT", f"is {mask_url(self.endpoint_url)!r}, not an http(s) URL",
                                  purpose="points at an S3-compatible endpoint such as MinIO",
                                  example="http://127.0.0.1:9000")
            if parts.password is not None:
                raise ConfigError("S3_ENDPOINT", f"carries credentials ({mask_url(self.endpoint_url)})",
                                  purpose="points at an S3-compatible endpoint; keys belong in "
                                          "S3_ACCESS_KEY/S3_SECRET_KEY", example="http://127.0.0.1:9000")
        if (self.access_key is None) != (self.secret_key is None):
            missing = "S3_SECRET_KEY" if self.secret_key is None else "S3_ACCESS_KEY"
            other = "S3_ACCESS_KEY" if self.secret_key is None else "S3_SECRET_KEY"
            raise ConfigError(missing, f"is not set but {other} is",
                              purpose="authenticates to S3 together with " + other,
                              example=f"{missing}=... (or unset both to use boto3's credential chain)")
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ConfigError("S3_ADDRESSING_STYLE", f"is {self.addressing_style!r}, not one of "
                              f"{', '.join(ADDRESSING_STYLES)}", example="path")
        if self.sse is not None and self.sse not in SSE_ALGORITHMS:
            raise ConfigError("S3_SSE", f"is {self.sse!r}, not one of {', '.join(SSE_ALGORITHMS)}",
                              purpose="selects S3 server-side encryption", example="aws:kms")
        if self.kms_key_id is not None and not (self.sse or "").startswith("aws:kms"):
            raise ConfigError("S3_SSE_KMS_KEY_ID", "is set but S3_SSE is not aws:kms",
                              purpose="names the KMS key for SSE-KMS", example="S3_SSE=aws:kms")
        if self.storage_class is not None and not _STORAGE_CLASS_RE.fullmatch(self.storage_class):
            raise ConfigError("S3_STORAGE_CLASS", f"is {self.storage_class!r}, not an S3 storage class",
                              example="STANDARD_IA")
        tags = dict(self.tags or {})
        if len(tags) > 10:
            raise ConfigError("S3_TAGS", f"has {len(tags)} tags; S3 allows at most 10", example="team=db,env=prod")
        for k, v in tags.items():
            if (not isinstance(k, str) or not isinstance(v, str) or not 0 < len(k) <= 128 or len(v) > 256
                    or not _TAG_RE.fullmatch(k) or not _TAG_RE.fullmatch(v)):
                raise ConfigError("S3_TAGS", f"has an invalid tag {str(k)[:40]!r} (keys 1-128, values 0-256 "
                                  "characters: letters, digits, spaces and + - = . _ : / @)",
                                  example="team=db,env=prod")
        object.__setattr__(self, "tags", tags)
        if int(self.max_attempts) < 1:
            raise ValueError("max_attempts must be at least 1")


@dataclass(frozen=True)
class StorageLocation:
    """A parsed storage URI: ``kind`` is ``s3`` (bucket, prefix) or ``file`` (path)."""

    kind: str
    bucket: str | None = None
    prefix: str = ""  # S3: "" or "a/b/" (always ends with "/")
    path: Path | None = None

    @property
    def uri(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix.rstrip('/')}".rstrip("/")
        return self.path.as_uri()  # type: ignore[union-attr]


def parse_storage_uri(uri: str, *, base: Path | None = None, variable: str = "DBKIT_BACKUP_URI") -> StorageLocation:
    """Parse ``s3://bucket/prefix``, ``file:///abs/path`` or a plain path (relative: against ``base`` or cwd).

    Raises :class:`~dbkit.errors.ConfigError` naming ``variable`` for anything else.
    """
    text = (uri or "").strip()

    def bad(problem: str) -> ConfigError:
        return ConfigError(variable, f"is {mask_url(text)!r}: {problem}",
                           purpose="says where backups are stored", example=URI_EXAMPLE)

    if not text:
        raise bad("empty")
    if "://" not in text and not text.startswith("file:"):
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return StorageLocation("file", path=Path(os.path.abspath(path)))
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise bad("a storage URI takes no ?query or #fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad("file URIs name a local path: file:///abs/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise bad("file URIs need an absolute path: file:///abs/path")
        return StorageLocation("file", path=Path(os.path.abspath(path)))
    if scheme == "s3":
        if "@" in parts.netloc:
            raise bad("credentials do not belong in the URI; use S3_ACCESS_KEY/S3_SECRET_KEY")
        bucket = parts.netloc
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IP_RE.fullmatch(bucket):
            raise bad(f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        prefix = unquote(parts.path).strip("/")
        if prefix:
            if "\\" in prefix or any(seg in ("", ".", "..") for seg in prefix.split("/")):
                raise bad("the prefix has an empty, '.' or '..' segment")
            prefix += "/"
        return StorageLocation("s3", bucket=bucket, prefix=prefix)
    raise bad(f"unsupported scheme {parts.scheme!r} (use s3://bucket/prefix, file:///path or a path)")


def open_storage(uri: str, *, s3: S3Options | None = None, part_size: int | None = None,
                 base: Path | None = None, variable: str = "DBKIT_BACKUP_URI") -> Storage:
    """The :class:`Storage` for ``uri``.  ``part_size`` fixes the S3 part size (default: chosen per write)."""
    from dbkit.backup._storage_local import LocalStorage
    from dbkit.backup._storage_s3 import S3Storage

    location = parse_storage_uri(uri, base=base, variable=variable)
    if location.kind == "s3":
        assert location.bucket is not None
        return S3Storage(location.bucket, location.prefix, s3 or S3Options(), part_size=part_size)
    return LocalStorage(location.path)  # type: ignore[arg-type]
