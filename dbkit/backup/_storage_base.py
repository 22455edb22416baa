"""What both storage backends share: limits, errors, values, part sizes, keys, the Writer and Storage interfaces."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from dbkit.errors import DbkitError, OperationFailed, UsageError

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
#: parts an S3 writer uploads at once (obstore's max_concurrency)
UPLOAD_CONCURRENCY = 2
_META_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

#: temp-file marker of the local backend (a key may not contain it)
PARTIAL = ".partial-"
READ_BUFFER = 1 * MIB


# --------------------------------------------------------------------- errors

class StorageError(OperationFailed):
    """A storage operation failed (exit code 1)."""


class StorageConfigError(UsageError, StorageError):
    """The storage is misconfigured: missing bucket, refused credentials (exit code 2, from UsageError)."""


class BucketNotFound(StorageConfigError):
    """The S3 bucket does not exist (``dbkit backup --create-bucket`` creates it; nothing else does)."""


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

    Every part has the writer's part size (parts do not grow mid-stream), so
    :func:`choose_part_size` leaves the headroom.
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
    if prefix.startswith("/") or "\\" in prefix or "\x00" in prefix or any(
            seg in (".", "..") for seg in prefix.split("/")):
        raise ValueError(f"invalid list prefix {prefix!r}")
    return prefix


def _cutoff(older_than: datetime | timedelta | None) -> datetime | None:
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        return datetime.now(UTC) - older_than
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    return older_than


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

    def abort_incomplete_uploads(self, older_than: datetime | timedelta | None) -> int:
        """Discard :meth:`list_incomplete_uploads` (``None``: all of them, even running ones); returns how many."""
        uploads = self.list_incomplete_uploads(older_than)
        for upload in uploads:
            self.abort_upload(upload)
        return len(uploads)

    @abstractmethod
    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Discard one unfinished write found by :meth:`list_incomplete_uploads` (gone already: no error)."""

    @abstractmethod
    def check(self) -> None:
        """Fail fast, before a long dump, when the storage cannot be used (missing bucket, refused keys)."""

    def create_bucket(self) -> bool:
        """Create the bucket the backups go in when it is missing; True when it was created.

        Only the S3 backend has one; a local storage makes its folders as it writes, so this is a
        usage error there (``dbkit backup --create-bucket`` names s3:// targets only).
        """
        raise StorageConfigError(f"{self.uri} is not an S3 location: it has no bucket to create",
                                 hint="use --create-bucket with an s3://bucket/prefix target only")

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
