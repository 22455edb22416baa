"""One storage interface for backups, with a local-disk and an S3 backend.

:func:`open_storage` turns a URI into a :class:`Storage`:

* ``s3://bucket/prefix`` — S3 or an S3-compatible server (MinIO, …), see :class:`S3Options`;
* ``file:///abs/path`` or a plain path (relative paths are resolved against ``base`` or the cwd).

Keys are relative to the storage's root, ``/``-separated (``20260101T000000Z/dump.pgdump.zst``).
Writes are streamed with bounded memory and are atomic: nothing is visible under a key until
:meth:`Writer.commit`; :meth:`Writer.abort` (or an exception inside ``with storage.open_write(...)``)
leaves nothing behind:

* local (``_storage_local``): a temp file ``<name>.partial-<random>``, fsynced and renamed at commit;
* S3 (``_storage_s3``): obstore's multipart writer, parts of a size chosen from the expected size
  (:func:`choose_part_size`: 10,000 parts always suffice), ``UPLOAD_CONCURRENCY`` uploading at once,
  memory bounded by :func:`upload_memory_bound`; a failed, aborted, dropped or abandoned (process
  exit) writer's multipart upload is aborted, so no orphan parts are billed.

Leftovers of crashed writers (temp files, in-progress multipart uploads) are found by
:meth:`Storage.list_incomplete_uploads` and removed by :meth:`Storage.abort_upload` /
:meth:`Storage.abort_incomplete_uploads`.  Their age is their last sign of life: a temp file's mtime,
or the newest uploaded part of a multipart upload (a long backup initiated hours ago is still running).

boto3 and obstore are imported only when an S3 storage is used.  Every error is a
:class:`~dbkit.errors.DbkitError` with a one-line message that never contains a secret.
"""

from __future__ import annotations

from dbkit.backup._storage_base import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    PARTIAL,
    UPLOAD_CONCURRENCY,
    BucketNotFound,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageConfigError,
    StorageError,
    choose_part_size,
    max_stream_size,
)
from dbkit.backup._storage_local import LocalStorage
from dbkit.backup._storage_s3 import S3Storage
from dbkit.backup._storage_s3_io import upload_memory_bound
from dbkit.backup._storage_uri import S3Options, open_storage, parse_storage_uri

__all__ = ["MIB", "MIN_PART_SIZE", "MAX_PART_SIZE", "MAX_PARTS", "DEFAULT_PART_SIZE", "PARTIAL",
    "UPLOAD_CONCURRENCY", "StorageError", "StorageConfigError", "BucketNotFound", "ObjectNotFound", "ObjectInfo",
    "S3Options", "Storage", "LocalStorage", "S3Storage", "choose_part_size", "max_stream_size",
    "upload_memory_bound", "parse_storage_uri", "open_storage"]

