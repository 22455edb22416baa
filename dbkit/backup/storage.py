"""One storage interface for backups, with a local-disk and an S3 backend.

:func:`open_storage` turns a URI into a :class:`Storage`:

* ``s3://bucket/prefix`` — S3 or an S3-compatible server (MinIO, …), see :class:`S3Options`;
* ``file:///abs/path`` or a plain path (relative paths are resolved against ``base`` or the cwd).

Keys are relative to the storage's root, ``/``-separated (``20260101T000000Z/dump.pgdump.zst``).

Writes are streamed with bounded memory and are atomic: nothing is visible under a
key until :meth:`Writer.commit`; :meth:`Writer.abort` (or an exception inside
``with storage.open_write(...)``) leaves nothing behind.

* local: bytes go to ``<dir>/<name>.partial-<random>``; commit fsyncs it and
  ``os.replace``\\ s it onto the final name (then fsyncs the directory);
* S3: at most one part is buffered in memory; a multipart upload is created lazily
  when the first part is full (a stream smaller than one part is a single
  ``PutObject`` at commit), parts are uploaded as they fill, commit completes the
  upload, abort (or any failure) aborts it so no orphan parts are billed.

Leftovers of crashed writers (temp files, in-progress multipart uploads) are found by
:meth:`Storage.list_incomplete_uploads` and removed by :meth:`Storage.abort_incomplete_uploads`.

boto3 is imported only when an S3 storage is used.  Every error is a
:class:`~dbkit.errors.DbkitError` with a one-line message that never contains a secret.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlencode, urlsplit

from dbkit.errors import ConfigError, DbkitError, MissingDependency
from dbkit.urls import mask_secrets, mask_url

__all__ = [
    "MIB",
    "MIN_PART_SIZE",
    "MAX_PART_SIZE",
    "MAX_PARTS",
    "DEFAULT_PART_SIZE",
    "StorageError",
    "StorageConfigError",
    "ObjectNotFound",
    "ObjectInfo",
    "IncompleteUpload",
    "S3Options",
    "StorageLocation",
    "Storage",
    "Writer",
    "LocalStorage",
    "S3Storage",
    "choose_part_size",
    "part_size_for",
    "max_stream_size",
    "parse_storage_uri",
    "open_storage",
]

MIB = 1024 * 1024
GIB = 1024 * MIB
#: S3's limits for multipart uploads
MIN_PART_SIZE = 5 * MIB  # every part but the last
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000
#: part size when the stream's size is unknown (10,000 x 64 MiB = 625 GiB before the ramp)
DEFAULT_PART_SIZE = 64 * MIB
#: smallest part size choose_part_size picks (fewer requests than 5 MiB, still small in memory)
MIN_CHOSEN_PART_SIZE = 8 * MIB
#: choose_part_size plans for the expected size x 1.5 in 9,000 parts ...
PLANNED_PARTS = 9_000
HEADROOM = 1.5
#: ... and if the stream still outgrows that, parts double in size every RAMP_EVERY parts after RAMP_AFTER
RAMP_AFTER = 8_000
RAMP_EVERY = 500
#: temp-file marker of the local backend (a key may not contain it)
PARTIAL = ".partial-"
READ_BUFFER = 1 * MIB

SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
ADDRESSING_STYLES = ("auto", "path", "virtual")
URI_EXAMPLE = "s3://acme-db-backups/prod"

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_META_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STORAGE_CLASS_RE = re.compile(r"[A-Z][A-Z0-9_]*")
#: what S3 allows in tag keys and values: letters, digits, spaces and + - = . _ : / @
_TAG_RE = re.compile(r"[\w .:/=+\-@]*")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId",
           "UnrecognizedClientException", "403", "Forbidden"}


# --------------------------------------------------------------------- errors

class StorageError(DbkitError):
    """A storage operation failed (exit code 1)."""


class StorageConfigError(StorageError):
    """The storage is misconfigured: missing bucket, refused credentials (exit code 2)."""

    exit_code = 2


class ObjectNotFound(StorageError):
    """The key does not exist."""


# --------------------------------------------------------------------- values

@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key (relative to the storage root), size in bytes, last modification (UTC)."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class IncompleteUpload:
    """A write that was started and neither committed nor aborted (a crashed or running writer).

    ``upload_id`` is the S3 multipart upload id, or the temp file's path relative to the root (local).
    ``size`` is known for local temp files only.
    """

    key: str
    upload_id: str
    started: datetime | None
    size: int | None = None


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
        def empty_to_none(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                object.__setattr__(self, name, None)

        for name in ("endpoint_url", "region", "access_key", "secret_key", "session_token", "sse",
                     "kms_key_id", "storage_class"):
            empty_to_none(name)
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

    @property
    def explicit_credentials(self) -> bool:
        return self.access_key is not None


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


# --------------------------------------------------------------------- part sizes

def choose_part_size(expected_size: int | None) -> int:
    """The S3 multipart part size for a stream of about ``expected_size`` bytes.

    Plans the expected size x 1.5 in 9,000 parts (S3 allows 10,000), rounded up to
    a MiB, at least 8 MiB, at most 5 GiB; unknown size: 64 MiB.  Memory use of a
    writer is one part.
    """
    if expected_size is None:
        return DEFAULT_PART_SIZE
    if expected_size < 0:
        raise ValueError(f"expected_size must not be negative, got {expected_size}")
    planned = -(-int(expected_size) * 3 // (2 * PLANNED_PARTS))  # ceil(size * 1.5 / 9000)
    planned = -(-planned // MIB) * MIB
    return min(MAX_PART_SIZE, max(MIN_CHOSEN_PART_SIZE, planned))


def part_size_for(base: int, part_number: int) -> int:
    """The size of part ``part_number`` (1-based) of a writer whose chosen part size is ``base``.

    ``base`` up to part 8,000, then doubling every 500 parts (capped at 5 GiB): a stream
    larger than planned still fits into S3's 10,000 parts instead of failing hours in.
    """
    if part_number <= RAMP_AFTER:
        return base
    steps = (part_number - RAMP_AFTER - 1) // RAMP_EVERY + 1
    return min(MAX_PART_SIZE, base << steps)


def max_stream_size(base: int) -> int:
    """The largest stream a writer with part size ``base`` can upload (all 10,000 parts)."""
    total = RAMP_AFTER * base
    for first in range(RAMP_AFTER + 1, MAX_PARTS + 1, RAMP_EVERY):
        total += RAMP_EVERY * part_size_for(base, first)
    return total


# --------------------------------------------------------------------- keys and URIs

def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("a storage key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: relative, '/'-separated, no backslash")
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' path segment")
    if PARTIAL in key:
        raise ValueError(f"invalid storage key {key!r}: {PARTIAL!r} marks temp files")
    if len(key.encode()) > 900:
        raise ValueError(f"storage key too long ({len(key.encode())} bytes)")
    return key


def _check_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    if prefix.startswith("/") or "\\" in prefix or "\x00" in prefix or any(
            seg in (".", "..") for seg in prefix.split("/")):
        raise ValueError(f"invalid list prefix {prefix!r}")
    return prefix


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
    location = parse_storage_uri(uri, base=base, variable=variable)
    if location.kind == "s3":
        assert location.bucket is not None
        return S3Storage(location.bucket, location.prefix, s3 or S3Options(), part_size=part_size)
    return LocalStorage(location.path)  # type: ignore[arg-type]


def _cutoff(older_than: datetime | timedelta | None) -> datetime | None:
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        return datetime.now(UTC) - older_than
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    return older_than


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------- interface

class Writer(ABC):
    """A streaming write to one key.  Nothing is visible under the key until :meth:`commit`.

    As a context manager: commit when the block ends normally, abort when it raises.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.bytes_written = 0
        self.state = "open"  # open | committed | aborted | failed
        self.info: ObjectInfo | None = None

    # file-like bits, so the writer can be the target of shutil.copyfileobj, pyrage.encrypt_io, ...
    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing to do: data becomes durable and visible at :meth:`commit`."""

    @property
    def closed(self) -> bool:
        return self.state != "open"

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if isinstance(data, str):
            raise TypeError("Writer.write() takes bytes, not str")
        if self.state != "open":
            raise ValueError(f"write to a {self.state} writer for {self.key!r}")
        view = memoryview(data).cast("B")
        n = len(view)
        if n:
            try:
                self._write(view)
            except BaseException as exc:
                self._fail(exc)
                raise
            self.bytes_written += n
        return n

    def commit(self) -> ObjectInfo:
        """Make the object visible under its key (atomically) and return what was stored."""
        if self.state == "committed":
            return self.info  # type: ignore[return-value]
        if self.state != "open":
            raise ValueError(f"commit of a {self.state} writer for {self.key!r}")
        try:
            self.info = self._commit()
        except BaseException as exc:
            self._fail(exc)
            raise
        self.state = "committed"
        return self.info

    def abort(self) -> None:
        """Discard everything written; idempotent.  Nothing is left under the key or as a temp/upload."""
        if self.state == "committed":
            raise ValueError(f"abort of a committed writer for {self.key!r}")
        if self.state != "open":
            return  # aborted already (explicitly or after a failure)
        self.state = "aborted"
        self._abort()

    def _fail(self, exc: BaseException) -> None:
        """After an error: discard what was written; the original exception stays the one reported."""
        self.state = "failed"
        try:
            self._abort()
        except Exception as abort_exc:  # noqa: BLE001 - the first error is the one to report
            note = "the unfinished upload could not be discarded either (clean up incomplete uploads later)"
            if isinstance(exc, DbkitError):
                exc.hint = f"{exc.hint}; {note}" if exc.hint else note
            exc.add_note(f"{note}: {abort_exc}")

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.state == "open":
                self.commit()
            return
        if self.state == "open":
            try:
                self.abort()
            except Exception as abort_exc:  # noqa: BLE001 - keep the original exception
                exc.add_note(f"and discarding the partial upload failed too: {abort_exc}")

    @abstractmethod
    def _write(self, view: memoryview) -> None: ...

    @abstractmethod
    def _commit(self) -> ObjectInfo: ...

    @abstractmethod
    def _abort(self) -> None: ...


class Storage(ABC):
    """Where backups live.  Keys are relative to the storage root and ``/``-separated."""

    #: a description safe to print: ``s3://bucket/prefix`` or ``file:///path``
    uri: str

    @abstractmethod
    def open_write(self, key: str, *, expected_size: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Writer:
        """Start a streaming write (see :class:`Writer`).  ``expected_size`` sizes S3 parts;
        ``metadata`` is stored as S3 user metadata (ASCII; ignored by the local backend)."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A buffered binary stream of the object (``read(n)``, context manager).

        Raises :class:`ObjectNotFound` when the key does not exist.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Committed objects whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_incomplete_uploads(self, older_than: datetime | timedelta | None = None) -> list[IncompleteUpload]:
        """Writes started and never committed or aborted (S3: multipart uploads; local: temp files).

        ``older_than`` (an aware datetime, or a timedelta before now) keeps writers that may still run out.
        """

    @abstractmethod
    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        """Discard :meth:`list_incomplete_uploads` (``None``: all of them, even running ones); returns how many."""

    @abstractmethod
    def check(self) -> None:
        """Fail fast, before a long dump, when the storage cannot be used (missing bucket, refused keys)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    total = 0
    for k, v in meta.items():
        if not isinstance(k, str) or not _META_KEY_RE.fullmatch(k):
            raise ValueError(f"invalid metadata key {k!r}: ASCII letters, digits, '.', '_', '-'")
        if not isinstance(v, str) or not v.isascii() or not v.isprintable():
            raise ValueError(f"invalid metadata value for {k!r}: printable ASCII only")
        total += len(k) + len(v)
    if total > 2000:
        raise ValueError(f"metadata too large ({total} bytes; S3 allows 2 KB)")
    return meta


# --------------------------------------------------------------------- local backend

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _LocalWriter(Writer):
    def __init__(self, storage: LocalStorage, key: str) -> None:
        super().__init__(key)
        self._storage = storage
        self.final = storage._path(key)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.temp = self.final.with_name(f"{self.final.name}{PARTIAL}{secrets.token_hex(6)}")
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise storage._error(exc, "write", key) from None
        self._fh: io.BufferedWriter | None = os.fdopen(fd, "wb", buffering=READ_BUFFER)

    def _write(self, view: memoryview) -> None:
        try:
            self._fh.write(view)  # type: ignore[union-attr]
        except OSError as exc:
            raise self._storage._error(exc, "write", self.key) from None

    def _commit(self) -> ObjectInfo:
        fh, self._fh = self._fh, None
        try:
            fh.flush()  # type: ignore[union-attr]
            os.fsync(fh.fileno())  # type: ignore[union-attr]
            fh.close()  # type: ignore[union-attr]
            os.replace(self.temp, self.final)
        except OSError as exc:
            fh.close()  # type: ignore[union-attr]
            raise self._storage._error(exc, "commit", self.key) from None
        _fsync_dir(self.final.parent)
        st = self.final.stat()
        return ObjectInfo(self.key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _abort(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError:
                pass
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._storage._error(exc, "discard", self.key) from None


class LocalStorage(Storage):
    """Backups in a directory.  Files are created 0600 (a dump holds every tenant's data)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def _error(self, exc: OSError, action: str, key: str | None = None) -> StorageError:
        where = f"{self.uri}/{key}" if key else self.uri
        reason = exc.strerror or type(exc).__name__
        return StorageError(f"cannot {action} {where}: {reason}")

    def open_write(self, key: str, *, expected_size: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Writer:
        _check_metadata(metadata)
        return _LocalWriter(self, key)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.uri}/{key} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"{self.uri}/{key} is a directory, not a stored object") from None
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def _walk(self, prefix: str):
        """(key, path, stat) of every regular file whose key starts with ``prefix``, temp files included."""
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start, onerror=None):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if not key.startswith(prefix):
                    continue
                path = Path(dirpath, name)
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                if os.path.isfile(path):
                    yield key, path, st

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = _check_prefix(prefix)
        try:
            found = [ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                     for key, _, st in self._walk(prefix) if PARTIAL not in key]
        except OSError as exc:
            raise self._error(exc, "list") from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, "delete", key) from None
        parent = path.parent  # drop directories the delete left empty (never the root)
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_incomplete_uploads(self, older_than: datetime | timedelta | None = None) -> list[IncompleteUpload]:
        cutoff = _cutoff(older_than)
        found = []
        for key, _, st in self._walk(""):
            if PARTIAL not in key:
                continue
            started = datetime.fromtimestamp(st.st_mtime, UTC)
            if cutoff is None or started < cutoff:
                found.append(IncompleteUpload(key.rsplit(PARTIAL, 1)[0], key, started, st.st_size))
        return found

    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        count = 0
        for upload in self.list_incomplete_uploads(older_than):
            try:
                self.root.joinpath(*upload.upload_id.split("/")).unlink()
                count += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._error(exc, "delete", upload.upload_id) from None
        return count

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, "create") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageConfigError(f"{self.uri} is not writable by this user")


# --------------------------------------------------------------------- S3 backend

class _S3Writer(Writer):
    def __init__(self, storage: S3Storage, key: str, part_size: int, extra: dict[str, Any]) -> None:
        super().__init__(key)
        self._s3 = storage
        self._full_key = storage.prefix + key
        self._base = part_size
        self._part_size = part_size
        self._extra = extra  # SSE, storage class, tagging, metadata
        self._buf = bytearray()
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    def _write(self, view: memoryview) -> None:
        while view:
            n = min(self._part_size - self._fill, len(view))
            if self._fill + n <= len(self._buf):  # reuse the buffer allocated for an earlier part
                self._buf[self._fill:self._fill + n] = view[:n]
            else:  # the first part: grow (len(self._buf) == self._fill here)
                self._buf += view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._part_size:
                self._upload_part(self._buf)
                self._fill = 0
                next_size = part_size_for(self._base, len(self._parts) + 1)
                if next_size != self._part_size:
                    self._part_size, self._buf = next_size, bytearray()

    def _upload_part(self, body: bytearray) -> None:
        client = self._s3.client
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self._s3.uri}/{self.key} outgrew S3's {MAX_PARTS} parts at "
                               f"{self.bytes_written} bytes", hint="pass a larger expected_size")
        if self._upload_id is None:
            try:
                resp = client.create_multipart_upload(Bucket=self._s3.bucket, Key=self._full_key, **self._extra)
            except Exception as exc:
                raise self._s3._error(exc, "start the upload of", self.key) from None
            self._upload_id = resp["UploadId"]
        try:
            resp = client.upload_part(Bucket=self._s3.bucket, Key=self._full_key, UploadId=self._upload_id,
                                      PartNumber=number, Body=body)
        except Exception as exc:
            raise self._s3._error(exc, f"upload part {number} of", self.key) from None
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def _commit(self) -> ObjectInfo:
        client = self._s3.client
        del self._buf[self._fill:]  # the last (short) part, without copying it
        if self._upload_id is None:
            try:
                client.put_object(Bucket=self._s3.bucket, Key=self._full_key, Body=self._buf, **self._extra)
            except Exception as exc:
                raise self._s3._error(exc, "write", self.key) from None
        else:
            if self._fill or not self._parts:
                self._upload_part(self._buf)
            try:
                client.complete_multipart_upload(Bucket=self._s3.bucket, Key=self._full_key,
                                                 UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})
            except Exception as exc:
                raise self._s3._error(exc, "complete the upload of", self.key) from None
        self._buf = bytearray()
        return ObjectInfo(self.key, self.bytes_written, datetime.now(UTC))

    def _abort(self) -> None:
        self._buf = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        self._s3._abort_upload(self._full_key, upload_id, self.key)


class _S3Reader(io.RawIOBase):
    def __init__(self, storage: S3Storage, key: str, body: Any, size: int | None) -> None:
        self._s3, self._key, self._body, self.size = storage, key, body, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._body.read(len(b))
        except Exception as exc:
            raise self._s3._error(exc, "read", self._key) from None
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class S3Storage(Storage):
    """Backups under ``s3://bucket/prefix``.  boto3 is imported on first use."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None, *,
                 part_size: int | None = None) -> None:
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.options = options or S3Options()
        self.uri = StorageLocation("s3", bucket=bucket, prefix=self.prefix).uri
        if part_size is not None and not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        self.part_size = part_size
        self._client = None
        self._lock = threading.Lock()

    # -- plumbing

    @property
    def endpoint(self) -> str:
        """Where requests go, safe to print."""
        if self.options.endpoint_url:
            return mask_url(self.options.endpoint_url)
        return f"AWS S3 ({self.options.region or 'default region'})"

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - boto3 is a dependency of dbkit
            raise MissingDependency("the S3 backend needs boto3", hint="pip install boto3") from None
        o = self.options
        session = boto3.session.Session(aws_access_key_id=o.access_key, aws_secret_access_key=o.secret_key,
                                        aws_session_token=o.session_token, region_name=o.region)
        region = session.region_name or ("us-east-1" if o.endpoint_url else None)
        config: dict[str, Any] = {
            "s3": {"addressing_style": o.addressing_style},
            "signature_version": "s3v4",
            "retries": {"mode": "standard", "max_attempts": int(o.max_attempts)},
            "connect_timeout": o.connect_timeout,
            "read_timeout": o.read_timeout,
        }
        if o.endpoint_url and "request_checksum_calculation" in Config.OPTION_DEFAULTS:
            # S3-compatible servers do not all understand the CRC checksums botocore >= 1.36 sends by default
            config["request_checksum_calculation"] = "when_required"
            config["response_checksum_validation"] = "when_required"
        try:
            return session.client("s3", endpoint_url=o.endpoint_url, region_name=region, config=Config(**config))
        except Exception as exc:
            raise self._error(exc, "connect to") from None

    def _cred_hint(self) -> str:
        if self.options.explicit_credentials:
            return "check S3_ACCESS_KEY/S3_SECRET_KEY and the bucket's policy"
        return ("check the credentials boto3 found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "an instance role) or set S3_ACCESS_KEY/S3_SECRET_KEY")

    def _scrub(self, text: str) -> str:
        text = _one_line(mask_secrets(text))
        for secret in (self.options.secret_key, self.options.session_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _error(self, exc: BaseException, action: str, key: str | None = None) -> DbkitError:
        """A one-line DbkitError for a boto3/botocore exception (never a secret)."""
        if isinstance(exc, DbkitError):
            return exc
        where = f"{self.uri}/{key}" if key else self.uri
        try:
            from botocore import exceptions as bx
        except ImportError:  # pragma: no cover
            return StorageError(f"cannot {action} {where}: {self._scrub(str(exc))}")
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {}) or {}
            code = str(err.get("Code") or "")
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            op = exc.operation_name
            if code == "NoSuchBucket" or (op == "HeadBucket" and status == 404):
                return StorageConfigError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}",
                                          hint="create it or fix the bucket in the storage URI")
            if code in _DENIED or status == 403:
                return StorageConfigError(f"access denied by S3 for {where} ({code or status} on {op})",
                                          hint=self._cred_hint())
            if code in ("NoSuchKey", "NotFound") or (status == 404 and op in ("HeadObject", "GetObject")):
                return ObjectNotFound(f"{where} does not exist")
            message = self._scrub(str(err.get("Message") or ""))
            return StorageError(f"cannot {action} {where}: S3 {op} failed with {code or status}"
                                + (f" ({message})" if message else ""))
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StorageConfigError(f"no S3 credentials for {self.uri}",
                                      hint="set S3_ACCESS_KEY/S3_SECRET_KEY, or AWS_ACCESS_KEY_ID/"
                                           "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
        if isinstance(exc, bx.NoRegionError):
            return StorageConfigError(f"no S3 region for {self.uri}", hint="set S3_REGION (e.g. eu-central-1)")
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ProxyConnectionError
                      | bx.ConnectionClosedError | bx.ReadTimeoutError | bx.SSLError):
            return StorageError(f"cannot reach S3 at {self.endpoint} to {action} {where} ({type(exc).__name__})",
                                hint="check S3_ENDPOINT and the network" if self.options.endpoint_url
                                else "check the network and S3_REGION")
        return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    def _extra_args(self, metadata: Mapping[str, str] | None) -> dict[str, Any]:
        o = self.options
        extra: dict[str, Any] = {}
        if o.sse:
            extra["ServerSideEncryption"] = o.sse
        if o.kms_key_id:
            extra["SSEKMSKeyId"] = o.kms_key_id
        if o.storage_class:
            extra["StorageClass"] = o.storage_class
        if o.tags:
            extra["Tagging"] = urlencode(o.tags, quote_via=quote)
        meta = _check_metadata(metadata)
        if meta:
            extra["Metadata"] = meta
        return extra

    def _abort_upload(self, full_key: str, upload_id: str, key: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return  # already gone
            raise StorageError(f"cannot abort the unfinished upload of {self.uri}/{key} "
                               f"({self._error(exc, 'abort').message})",
                               hint="run the cleanup of incomplete uploads later; "
                                    "a bucket lifecycle rule AbortIncompleteMultipartUpload is a good backstop")

    # -- interface

    def open_write(self, key: str, *, expected_size: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Writer:
        _check_key(key)
        part_size = self.part_size or choose_part_size(expected_size)
        return _S3Writer(self, key, part_size, self._extra_args(metadata))

    def open_read(self, key: str) -> BinaryIO:
        _check_key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise self._error(exc, "read", key) from None
        raw = _S3Reader(self, key, resp["Body"], resp.get("ContentLength"))
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = _check_prefix(prefix)
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    if key and not key.endswith("/"):  # "folder" markers are not objects
                        found.append(ObjectInfo(key, int(obj["Size"]), obj["LastModified"].astimezone(UTC)))
        except Exception as exc:
            raise self._error(exc, "list") from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        _check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise self._error(exc, "delete", key) from None

    def exists(self, key: str) -> bool:
        _check_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            error = self._error(exc, "look up", key)
            if isinstance(error, ObjectNotFound):
                return False
            raise error from None
        return True

    def list_incomplete_uploads(self, older_than: datetime | timedelta | None = None) -> list[IncompleteUpload]:
        cutoff = _cutoff(older_than)
        found = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=self.prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    started = up.get("Initiated")
                    started = started.astimezone(UTC) if started else None
                    if cutoff is None or (started is not None and started < cutoff):
                        found.append(IncompleteUpload(up["Key"][len(self.prefix):], up["UploadId"], started))
        except Exception as exc:
            raise self._error(exc, "list unfinished uploads in") from None
        return sorted(found, key=lambda u: (u.key, u.upload_id))

    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        uploads = self.list_incomplete_uploads(older_than)
        for up in uploads:
            self._abort_upload(self.prefix + up.key, up.upload_id, up.key)
        return len(uploads)

    def check(self) -> None:
        try:  # a GET (not HeadBucket): its error body names the cause (NoSuchBucket, InvalidAccessKeyId, ...)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise self._error(exc, "check") from None
