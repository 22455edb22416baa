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
* S3: boto3's transfer manager (s3transfer, what ``upload_fileobj`` runs) does the
  upload.  ``write`` copies the bytes into a bounded in-memory pipe (a quarter part,
  1-16 MiB) that the transfer manager reads as a non-seekable file: a stream shorter
  than one part becomes a single ``PutObject`` at commit, a longer one a multipart
  upload with parts of the writer's part size, ``UPLOAD_CONCURRENCY`` (2) uploading at
  once.  Commit ends the stream and waits for the transfer; abort (or any failure)
  makes the pipe's reads fail, so s3transfer aborts the multipart upload, and the
  writer aborts it once more if that did not happen: no orphan parts are billed.
  A failed upload is reported by the next ``write``, not only at commit.

  Memory of one S3 writer is bounded by :func:`upload_memory_bound`: the parts
  s3transfer holds (``UPLOAD_CONCURRENCY`` uploading plus the next one, read while
  it waits for a slot: 3 parts), the pipe, one slice being copied out of it, and
  a few MiB of request signing: ``3 x part size + pipe + 6 MiB``.  That is 22 MiB
  for 5 MiB parts (a stream of 50 MiB peaks at about 20 MiB, measured by the
  tests), 32 MiB for the smallest chosen part size (8 MiB, expected sizes up to 46 GiB),
  214 MiB for the 64 MiB parts of a stream of unknown size.
  The part size is fixed per writer (s3transfer cannot grow parts mid-stream), so a
  stream can be at most 10,000 parts (:func:`max_stream_size`); a write beyond that
  fails at once rather than at S3's 10,001st part.

  Reads stream one ``GetObject`` body through a 1 MiB buffer, not ``download_fileobj``:
  s3transfer bounds a download to a non-seekable target with a window of ranges
  (``max_in_memory_download_chunks``), and when response checksum validation is
  ``when_required`` (set for custom endpoints) it fetches the first range and then
  schedules the rest while still holding that range's window slot: an object with
  more ranges than the window stalls for good (s3transfer 0.19: 8 ranges with a
  window of 2 stalled in testing).

Leftovers of crashed writers (temp files, in-progress multipart uploads) are found by
:meth:`Storage.list_incomplete_uploads` and removed by :meth:`Storage.abort_upload` /
:meth:`Storage.abort_incomplete_uploads`.  Their age is their last sign of life: a temp file's mtime, or
the newest uploaded part of a multipart upload (a long backup initiated hours ago is still running).

boto3 is imported only when an S3 storage is used.  Every error is a
:class:`~dbkit.errors.DbkitError` with a one-line message that never contains a secret.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import secrets
import threading
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
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
    "UPLOAD_CONCURRENCY",
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
    "max_stream_size",
    "pipe_limit",
    "upload_memory_bound",
    "parse_storage_uri",
    "open_storage",
]

MIB = 1024 * 1024
GIB = 1024 * MIB
#: S3's limits for multipart uploads
MIN_PART_SIZE = 5 * MIB  # every part but the last
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000
#: part size when the stream's size is unknown (10,000 x 64 MiB = 625 GiB at most)
DEFAULT_PART_SIZE = 64 * MIB
#: smallest part size choose_part_size picks (fewer requests than 5 MiB, still small in memory)
MIN_CHOSEN_PART_SIZE = 8 * MIB
#: choose_part_size plans for the expected size x 1.5 in 9,000 parts (room for 1.67 x the expected size)
PLANNED_PARTS = 9_000
HEADROOM = 1.5
#: parts an S3 writer uploads at once (s3transfer's max_concurrency and max_in_memory_upload_chunks)
UPLOAD_CONCURRENCY = 2
#: largest piece write() hands to the transfer manager at a time (each is one copy of the caller's bytes)
PIPE_SLICE = 1 * MIB
#: seconds a write blocked on a full pipe waits before it checks whether the upload failed
PIPE_POLL = 0.2
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
    #: the last sign of life: local temp file's mtime; S3: the newest part's (or the initiation) time
    modified: datetime | None = None

    @property
    def last_activity(self) -> datetime | None:
        return self.modified or self.started


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

    Plans the expected size x 1.5 in 9,000 parts (S3 allows 10,000, so a stream may
    reach 1.67 x the expected size), rounded up to a MiB, at least 8 MiB, at most
    5 GiB; unknown size: 64 MiB.  A writer holds about three parts in memory
    (:func:`upload_memory_bound`).
    """
    if expected_size is None:
        return DEFAULT_PART_SIZE
    if expected_size < 0:
        raise ValueError(f"expected_size must not be negative, got {expected_size}")
    planned = -(-int(expected_size) * 3 // (2 * PLANNED_PARTS))  # ceil(size * 1.5 / 9000)
    planned = -(-planned // MIB) * MIB
    return min(MAX_PART_SIZE, max(MIN_CHOSEN_PART_SIZE, planned))


def max_stream_size(part_size: int) -> int:
    """The largest stream a writer with ``part_size`` can upload: S3's 10,000 parts of that size.

    The transfer manager uploads every part at the writer's part size (it cannot grow parts
    mid-stream), so :func:`choose_part_size` leaves the headroom.
    """
    return part_size * MAX_PARTS


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
    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Discard one unfinished write found by :meth:`list_incomplete_uploads` (gone already: no error)."""

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
            try:  # closing flushes again, and fails the same way (disk full): the first error is the one
                fh.close()  # type: ignore[union-attr]
            except OSError:
                pass
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
        self._remove_empty_parents(path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_incomplete_uploads(self, older_than: datetime | timedelta | None = None) -> list[IncompleteUpload]:
        cutoff = _cutoff(older_than)
        found = []
        for key, _, st in self._walk(""):
            if PARTIAL not in key:
                continue
            modified = datetime.fromtimestamp(st.st_mtime, UTC)
            if cutoff is None or modified < cutoff:
                found.append(IncompleteUpload(key.rsplit(PARTIAL, 1)[0], key, modified, st.st_size, modified))
        return found

    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        uploads = self.list_incomplete_uploads(older_than)
        for upload in uploads:
            self.abort_upload(upload)
        return len(uploads)

    def abort_upload(self, upload: IncompleteUpload) -> None:
        path = self.root.joinpath(*upload.upload_id.split("/"))
        if PARTIAL not in path.name or self.root not in path.parents:
            raise ValueError(f"not a temp file of this storage: {upload.upload_id!r}")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, "delete", upload.upload_id) from None
        self._remove_empty_parents(path)

    def _remove_empty_parents(self, path: Path) -> None:
        """Drop directories a delete left empty (never the root)."""
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, "create") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageConfigError(f"{self.uri} is not writable by this user")


# --------------------------------------------------------------------- S3 backend

class _Discarded(Exception):
    """Raised into the transfer manager's reading thread to stop an upload that is being discarded."""


#: pipes whose transfer may still wait for data: failed when the interpreter exits (see _fail_open_pipes)
_OPEN_PIPES: weakref.WeakSet[_UploadPipe] = weakref.WeakSet()
_EXIT_HOOK_LOCK = threading.Lock()
_exit_hook_registered = False


def _fail_open_pipes() -> None:
    """At interpreter exit: stop the uploads of writers that were never committed or aborted.

    The transfer manager's worker threads are joined at exit; one blocked waiting for data that never
    comes would hang the exit.  Failing the pipe makes s3transfer abort the multipart upload instead.
    """
    for pipe in list(_OPEN_PIPES):
        pipe.fail(_Discarded("the process exited before the write was committed"))


def _register_exit_hook() -> None:
    global _exit_hook_registered
    with _EXIT_HOOK_LOCK:
        if _exit_hook_registered:
            return
        _exit_hook_registered = True
        # threading's exit hooks run before non-daemon threads (the transfer manager's) are joined;
        # atexit hooks run only after that join, too late.  concurrent.futures uses the same hook.
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is not None:
                register(_fail_open_pipes)
            else:  # pragma: no cover - every supported Python has it
                atexit.register(_fail_open_pipes)
        except RuntimeError:  # pragma: no cover - the interpreter is already shutting down
            pass


class _UploadPipe(io.RawIOBase):
    """A bounded in-memory byte pipe: :class:`_S3Writer` pushes, s3transfer pulls (a non-seekable upload source).

    At most ``limit`` bytes wait in the pipe (plus the slice the reading side is copying out);
    ``put`` blocks while it is full.  ``read(n)`` blocks until it has ``n`` bytes or the end of the stream, as
    s3transfer expects of a file (a short read would be a short, invalid, multipart part).
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already read
        self._queued = 0  # bytes in _chunks not read yet
        self._eof = False
        self._error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())
        self._reads = 0
        _OPEN_PIPES.add(self)

    # -- the writer's side

    def put(self, view: memoryview, check: Callable[[], None]) -> bool:
        """Queue a copy of ``view`` once there is room; ``check()`` runs (outside the lock) while waiting.

        False (nothing queued) when the pipe was failed or finished: the upload is over.
        """
        n = len(view)
        while True:
            with self._cond:
                if self._error is not None or self._eof:
                    return False
                if not self._queued or self._queued + n <= self._limit:
                    self._queued += n  # reserved: the copy is made outside the lock, and only now
                    break
                self._cond.wait(PIPE_POLL)
            check()  # the upload may have failed meanwhile: nobody would make room then
        try:
            data = bytes(view)  # a copy: the caller may reuse its buffer
        except BaseException:
            with self._cond:
                self._queued -= n
                self._cond.notify_all()
            raise
        with self._cond:
            if self._error is not None:  # failed meanwhile: fail() dropped the queue (and the reservation)
                return False
            self._chunks.append(data)
            self._cond.notify_all()
        return True

    def finish(self) -> None:
        """The end of the stream: ``read`` returns what is left, then ``b""``."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        _OPEN_PIPES.discard(self)

    def fail(self, error: BaseException) -> None:
        """Make the reading side raise ``error`` (s3transfer then aborts the upload); drops what is queued."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._chunks.clear()
            self._offset = self._queued = 0
            self._cond.notify_all()
        _OPEN_PIPES.discard(self)

    # -- s3transfer's side

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _take(self, most: int) -> memoryview | None:
        """Up to ``most`` bytes of the next chunk (blocks until there are some); None at the end of the stream."""
        with self._cond:
            while not self._chunks and not self._eof and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return None
            chunk = self._chunks[0]
            n = min(most, len(chunk) - self._offset)
            piece = memoryview(chunk)[self._offset:self._offset + n]
            self._offset += n
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
            self._queued -= n
            self._cond.notify_all()
            return piece

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the stream; ``read()`` reads to the end.

        Returns ``bytes`` built in place (a BytesIO whose buffer becomes the result, no second copy):
        s3transfer wraps it in a BytesIO, which shares a bytes object's buffer but copies a bytearray.
        """
        want = None if size is None or size < 0 else size
        out = io.BytesIO()
        self._reads += 1
        presized = bool(want) and self._reads > 1
        if presized:  # a multipart part (the first read decides PutObject or not): all but the last are full
            out.seek(want - 1)  # type: ignore[operator]
            out.write(b"\0")
            out.seek(0)
        filled = 0
        while want is None or filled < want:
            piece = self._take(READ_BUFFER if want is None else want - filled)
            if piece is None:
                break
            out.write(piece)
            filled += len(piece)
        if presized and filled < want:  # type: ignore[operator]
            out.truncate(filled)
        return out.getvalue()  # no copy: the buffer is not exported

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        piece = self._take(len(view)) if len(view) else None
        if piece is None:
            return 0
        view[:len(piece)] = piece
        return len(piece)


class _TrackingClient:
    """The S3 client as one writer's transfer manager sees it: remembers its unfinished multipart upload.

    s3transfer aborts a failed multipart upload itself, but swallows an error of that abort; the
    writer then still knows the upload id and retries the abort (and reports it if that fails too).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.upload_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        resp = self._client.create_multipart_upload(**kwargs)
        self.upload_id = resp["UploadId"]
        return resp

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        resp = self._client.complete_multipart_upload(**kwargs)
        if kwargs.get("UploadId") == self.upload_id:
            self.upload_id = None
        return resp

    def abort_multipart_upload(self, **kwargs: Any) -> Any:
        resp = self._client.abort_multipart_upload(**kwargs)
        if kwargs.get("UploadId") == self.upload_id:
            self.upload_id = None
        return resp


def pipe_limit(part_size: int) -> int:
    """Bytes an S3 writer queues between ``write()`` and the transfer manager: a quarter part, 1-16 MiB."""
    return min(max(part_size // 4, MIB), 16 * MIB)


def upload_memory_bound(part_size: int) -> int:
    """About the most memory one S3 writer holds while streaming (see the module docstring).

    The parts s3transfer holds (``UPLOAD_CONCURRENCY`` uploading, the next one read while it waits
    for a slot), the pipe and the slice being copied out of it, 2 MiB per part upload being
    signed (botocore hashes the body in 1 MiB reads, two alive at a time) and 1 MiB for the rest.
    """
    return ((UPLOAD_CONCURRENCY + 1) * part_size + pipe_limit(part_size) + PIPE_SLICE
            + (2 * UPLOAD_CONCURRENCY + 1) * MIB)


class _S3Writer(Writer):
    """Streams into boto3's transfer manager (s3transfer): ``write`` feeds a bounded pipe that it reads from.

    The transfer (and its threads) starts with the first write or at commit; s3transfer does a single
    PutObject for a stream shorter than one part, a multipart upload otherwise.
    """

    def __init__(self, storage: S3Storage, key: str, part_size: int, extra: dict[str, Any]) -> None:
        super().__init__(key)
        self._s3 = storage
        self._full_key = storage.prefix + key
        self.part_size = part_size
        self._extra = extra  # SSE, storage class, tagging, metadata: the transfer's ExtraArgs
        self._pipe: _UploadPipe | None = None
        self._client: _TrackingClient | None = None
        self._manager: Any = None
        self._future: Any = None
        self._finished = False
        self._outcome: BaseException | None = None
        self._dropped: weakref.finalize | None = None

    @property
    def upload_id(self) -> str | None:
        """The id of the multipart upload in progress (None before it starts, for a single PutObject, after it ends)."""
        return self._client.upload_id if self._client is not None else None

    def _start(self) -> None:
        try:
            from boto3.s3.transfer import TransferConfig, create_transfer_manager
        except ImportError:  # pragma: no cover - boto3 is a dependency of dbkit
            raise MissingDependency("the S3 backend needs boto3", hint="pip install boto3") from None
        config = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                                max_concurrency=UPLOAD_CONCURRENCY, use_threads=True,
                                preferred_transfer_client="classic")  # not the CRT client: same behaviour everywhere
        config.max_in_memory_upload_chunks = UPLOAD_CONCURRENCY  # parts read but not uploaded yet (default 10)
        self._client = _TrackingClient(self._s3.client)
        self._pipe = _UploadPipe(pipe_limit(self.part_size))
        _register_exit_hook()
        try:
            self._manager = create_transfer_manager(self._client, config)
            self._future = self._manager.upload(self._pipe, self._s3.bucket, self._full_key, extra_args=self._extra)
        except Exception as exc:
            self._pipe.fail(_Discarded("the upload did not start"))
            if self._manager is not None:
                self._manager.shutdown()
            self._finished = True
            raise self._s3._error(exc, "start the upload of", self.key) from None
        # a writer dropped without commit/abort: stop its upload (s3transfer aborts it) rather than leak it
        self._dropped = weakref.finalize(self, self._pipe.fail,
                                         _Discarded("the writer was dropped without commit or abort"))

    def _finish(self, error: BaseException | None = None) -> BaseException | None:
        """End the transfer: at the end of the stream, or (``error``) by failing its reads; wait for it.

        Returns the transfer's exception (None: the object is stored).  Idempotent.
        """
        if self._finished:
            return self._outcome
        if self._future is None:
            self._finished = True
            return None
        assert self._pipe is not None
        if self._dropped is not None:
            self._dropped.detach()
        if error is None:
            self._pipe.finish()
        else:
            self._pipe.fail(error)  # the reading thread stops, s3transfer aborts the multipart upload ...
            self._future.cancel()  # ... without finishing the parts in flight first (no-op if it failed already)
        try:
            self._future.result()
        except Exception as exc:  # noqa: BLE001 - reported by the caller, classified
            self._outcome = exc
        finally:
            self._finished = True
            self._manager.shutdown()
        return self._outcome

    def _check(self) -> None:
        """Raise now if the transfer already failed (a part, or starting the upload): no need to stream on."""
        if self._future is not None and not self._finished and self._future.done():
            self._stopped()

    def _stopped(self) -> None:
        """The transfer ended before the end of the stream: wait for it, raise why."""
        raise self._failure(self._finish(_Discarded("the upload failed"))) from None

    def _failure(self, exc: BaseException | None) -> DbkitError:
        if exc is None or isinstance(exc, _Discarded):
            return StorageError(f"cannot upload {self._s3.uri}/{self.key}: {exc or 'the upload stopped early'}")
        return self._s3._error(exc, "upload", self.key)

    def _write(self, view: memoryview) -> None:
        total = self.bytes_written + len(view)
        if total > max_stream_size(self.part_size):
            raise StorageError(f"{self._s3.uri}/{self.key} outgrew S3's {MAX_PARTS} parts of "
                               f"{self.part_size // MIB} MiB at {total} bytes",
                               hint="pass a larger expected_size (or a larger part size)")
        if self._future is None:
            self._start()
        assert self._pipe is not None
        for start in range(0, len(view), PIPE_SLICE):
            self._check()
            if not self._pipe.put(view[start:start + PIPE_SLICE], self._check):
                self._stopped()

    def _commit(self) -> ObjectInfo:
        if self._future is None:
            self._start()  # nothing written: s3transfer stores an empty object
        exc = self._finish()
        if exc is not None:
            raise self._failure(exc) from None
        return ObjectInfo(self.key, self.bytes_written, datetime.now(UTC))

    def _abort(self) -> None:
        self._finish(_Discarded("the write was aborted"))  # s3transfer aborts the multipart upload ...
        upload_id = self.upload_id
        if upload_id is not None:  # ... unless that failed or never happened: then once more, loudly
            assert self._client is not None
            self._client.upload_id = None
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
                    if cutoff is not None and (started is None or started >= cutoff):
                        continue
                    newest = self._newest_part(up["Key"], up["UploadId"])
                    if newest is False:
                        continue  # completed or aborted meanwhile
                    modified = max(t for t in (started, newest) if t is not None) if (started or newest) else None
                    if cutoff is not None and (modified is None or modified >= cutoff):
                        continue  # started long ago but still uploading parts: running, not stale
                    found.append(IncompleteUpload(up["Key"][len(self.prefix):], up["UploadId"], started, None,
                                                  modified))
        except Exception as exc:
            raise self._error(exc, "list unfinished uploads in") from None
        return sorted(found, key=lambda u: (u.key, u.upload_id))

    def _newest_part(self, full_key: str, upload_id: str):
        """When the newest part of an unfinished upload was uploaded (None: no part yet; False: the upload
        is gone).  A long backup's upload was initiated hours ago but keeps adding parts."""
        from botocore.exceptions import ClientError

        newest = None
        try:
            for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=full_key,
                                                                        UploadId=upload_id):
                for part in page.get("Parts", []):
                    when = part.get("LastModified")
                    if when is not None:
                        when = when.astimezone(UTC)
                        newest = when if newest is None or when > newest else newest
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                return False
            raise
        return newest

    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        uploads = self.list_incomplete_uploads(older_than)
        for up in uploads:
            self.abort_upload(up)
        return len(uploads)

    def abort_upload(self, upload: IncompleteUpload) -> None:
        self._abort_upload(self.prefix + upload.key, upload.upload_id, upload.key)

    def check(self) -> None:
        try:  # a GET (not HeadBucket): its error body names the cause (NoSuchBucket, InvalidAccessKeyId, ...)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise self._error(exc, "check") from None
