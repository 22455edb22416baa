"""The S3 backend's streams: the upload writer (obstore's multipart writer) and the download reader.

Uploads go through obstore (``obstore.open_writer``: the Rust object_store crate's buffered
writer): a stream shorter than one part is one ``PutObject`` at commit, a longer one a multipart
upload in parts of the writer's part size, ``UPLOAD_CONCURRENCY`` parts uploading at once;
``write`` blocks while that many are in flight, and a failed part is raised by a later ``write``.
A failed, aborted, dropped or abandoned writer leaves no parts behind (:func:`_discard`).
"""

from __future__ import annotations

import contextlib
import io
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dbkit.backup._storage_base import (
    MIB,
    UPLOAD_CONCURRENCY,
    ObjectInfo,
    StorageError,
    Writer,
    max_stream_size,
)
from dbkit.backup._storage_s3_errors import storage_error

if TYPE_CHECKING:
    from dbkit.backup._storage_s3 import S3Storage


def upload_memory_bound(part_size: int) -> int:
    """About the most memory one S3 writer holds while streaming.

    obstore holds the part being filled plus ``UPLOAD_CONCURRENCY`` parts uploading (the ``bytes``
    handed to ``write`` are kept, not copied, until their part is sent); a few MiB go to the HTTP
    client and request signing.  Measured: 50 MiB in 5 MiB parts grow the peak RSS by 12 MiB.
    """
    return (UPLOAD_CONCURRENCY + 1) * part_size + 4 * MIB


class _Discarded(Exception):
    """Passed to obstore's writer to make it abort the upload instead of completing it."""


def _discard(file: Any, storage: S3Storage, full_key: str, key: str, multipart: bool = True) -> None:
    """Abort a writer's upload: obstore aborts its multipart upload.  When that fails, or the failure was
    the CompleteMultipartUpload (obstore forgets the upload then), boto3 aborts the uploads of the key
    that are still there: keys hold the backup id, no other writer uploads to the same key meanwhile."""
    try:
        if not file.closed():
            file.__exit__(_Discarded, _Discarded("discarded"), None)
            return
    except Exception:  # noqa: BLE001, S110 - what is left is aborted below, or the failure reported
        pass
    if multipart:  # obstore starts a multipart upload once a part's worth was written
        storage._abort_uploads_of(full_key, key)


def _discard_quietly(*args: Any) -> None:
    """:func:`_discard` for a writer nobody waits for (dropped, or open at exit): a leftover is found by
    ``list_incomplete_uploads`` (``dbkit check``, prune) later."""
    with contextlib.suppress(Exception):  # nobody to report it to
        _discard(*args)


class _S3Writer(Writer):
    """Streams into ``obstore.open_writer`` (opened at the first write, or at commit for an empty object)."""

    def __init__(self, storage: S3Storage, key: str, part_size: int, attributes: dict[str, str]) -> None:
        super().__init__(key)
        self._s3 = storage
        self._full_key = storage.prefix + key
        self.part_size = part_size
        self._attributes = attributes
        self._file: Any = None
        self._sent = 0  # bytes handed to obstore
        self._dropped: weakref.finalize | None = None

    def _open(self) -> None:
        import obstore

        store = self._s3.store
        try:
            self._file = obstore.open_writer(store, self._full_key, attributes=self._attributes or None,
                                             tags=dict(self._s3.options.tags) or None, buffer_size=self.part_size,
                                             max_concurrency=UPLOAD_CONCURRENCY)
        except Exception as exc:
            raise storage_error(self._s3, exc, "start the upload of", self.key, obstore=True) from None
        # dropped without commit/abort, or still open when the interpreter exits: abort the upload
        self._dropped = weakref.finalize(self, _discard_quietly, self._file, self._s3, self._full_key, self.key)

    def _write(self, view: memoryview) -> None:
        total, limit = self.bytes_written + len(view), max_stream_size(self.part_size)
        if total > limit:
            raise StorageError(f"{self._s3.uri}/{self.key} outgrew S3's {limit // self.part_size} parts of "
                               f"{self.part_size // MIB} MiB at {total} bytes",
                               hint="pass a larger expected_size (or a larger part size)")
        if self._file is None:
            self._open()
        # obstore keeps a reference to the buffer until its part is sent: only immutable bytes are shared
        data = view if isinstance(view.obj, bytes) else bytes(view)
        self._sent += len(data)
        try:
            self._file.write(data)
        except Exception as exc:
            raise storage_error(self._s3, exc, "upload", self.key, obstore=True) from None

    def _commit(self) -> ObjectInfo:
        if self._file is None:
            self._open()  # nothing written: an empty object
        try:
            self._file.close()
        except Exception as exc:
            raise storage_error(self._s3, exc, "upload", self.key, obstore=True) from None
        self._dropped.detach()  # type: ignore[union-attr]
        return ObjectInfo(self.key, self.bytes_written, datetime.now(UTC))

    def _abort(self) -> None:
        if self._dropped is not None and self._dropped.detach() is not None:
            _discard(self._file, self._s3, self._full_key, self.key, self._sent >= self.part_size)


class _S3Reader(io.RawIOBase):
    def __init__(self, storage: S3Storage, key: str, body: Any) -> None:
        self._s3, self._key, self._body = storage, key, body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._body.read(len(b))
        except Exception as exc:
            raise storage_error(self._s3, exc, "read", self._key) from None
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()
