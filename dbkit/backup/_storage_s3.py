"""The S3 backend: obstore's multipart writer for uploads (``_storage_s3_io``), boto3 for the rest.

boto3 does what obstore cannot: list and abort in-progress multipart uploads (crash detection,
prune, and making sure a failed or abandoned writer leaves no parts behind), resolve credentials
through the standard AWS chain (profiles, SSO, instance roles) for obstore, and the small
requests (list, head, delete, one streamed ``GetObject`` per read).  Connecting: ``_storage_s3_connect``;
errors: ``_storage_s3_errors``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from dbkit._urls import mask_url
from dbkit.backup._storage_base import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    READ_BUFFER,
    BucketNotFound,
    IncompleteUpload,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    Writer,
    _check_key,
    _check_metadata,
    _check_prefix,
    _cutoff,
    choose_part_size,
)
from dbkit.backup._storage_s3_connect import make_client, make_store, new_session
from dbkit.backup._storage_s3_io import (
    _S3Reader,
    _S3Writer,
    upload_memory_bound,  # noqa: F401 - dbkit.backup._storage imports it from here
)
from dbkit.backup._storage_uri import S3Options, StorageLocation
from dbkit.errors import DbkitError


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
        self._session: Any = None
        self._store: Any = None
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
                self._client = make_client(self, self._boto_session())
            return self._client

    @property
    def store(self):
        """The obstore S3Store that uploads (built on first use)."""
        with self._lock:
            if self._store is None:
                self._store = make_store(self, self._boto_session())
            return self._store

    def _boto_session(self):
        """The boto3 session (held by the lock)."""
        if self._session is None:
            self._session = new_session(self.options)
        return self._session

    def _bucket_region(self) -> str:
        """The AWS region of the bucket (boto3 follows S3's region redirects, obstore does not)."""
        try:
            if self._client is None:  # the lock is held by store
                self._client = make_client(self, self._boto_session())
            resp = self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - a 301/403 answer still names the region
            resp = getattr(exc, "response", None) or {}
        headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return headers.get("x-amz-bucket-region") or "us-east-1"

    def _error(self, exc: BaseException, action: str, key: str | None = None, *,
               obstore: bool = False) -> DbkitError:
        """A one-line DbkitError for a boto3/botocore (or, ``obstore``, an obstore) exception, never a secret."""
        from dbkit.backup._storage_s3_errors import storage_error

        return storage_error(self, exc, action, key, obstore=obstore)

    def _abort_uploads_of(self, full_key: str, key: str) -> None:
        """Abort the in-progress multipart uploads of exactly ``full_key``."""
        try:
            found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full_key).get("Uploads", [])
        except Exception as exc:
            raise StorageError(f"cannot check for an unfinished upload of {self.uri}/{key} "
                               f"({self._error(exc, 'list unfinished uploads in').message})",
                               hint="run the cleanup of incomplete uploads later; a bucket lifecycle rule "
                                    "AbortIncompleteMultipartUpload is a good backstop") from None
        for up in found:
            if up["Key"] == full_key:
                self._abort_upload(full_key, up["UploadId"], key)

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
        attributes: dict[str, str] = dict(_check_metadata(metadata))  # other keys than obstore's are user metadata
        if self.options.storage_class:
            attributes["Storage-Class"] = self.options.storage_class
        return _S3Writer(self, key, self.part_size or choose_part_size(expected_size), attributes)

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

    def abort_upload(self, upload: IncompleteUpload) -> None:
        self._abort_upload(self.prefix + upload.key, upload.upload_id, upload.key)

    def check(self) -> None:
        try:  # a GET (not HeadBucket): its error body names the cause (NoSuchBucket, InvalidAccessKeyId, ...)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise self._error(exc, "check") from None

    def create_bucket(self) -> bool:
        """Create the bucket when it is missing (MinIO and dev setups); True when it was created.

        Through the configured endpoint and addressing style, in the client's region (a
        LocationConstraint outside us-east-1).  An existing bucket is only checked (:meth:`check`);
        refused credentials are reported as they are, never answered by a create.
        """
        try:
            self.check()
            return False
        except BucketNotFound:
            pass
        region = self.client.meta.region_name
        config = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region not in (
            None, "", "us-east-1") else {}
        try:
            self.client.create_bucket(Bucket=self.bucket, **config)
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code != "BucketAlreadyOwnedByYou":  # made meanwhile by another run: fine
                raise self._error(exc, "create the bucket of") from None
        try:  # S3 may answer for a new bucket a moment later
            self.client.get_waiter("bucket_exists").wait(Bucket=self.bucket,
                                                         WaiterConfig={"Delay": 1, "MaxAttempts": 20})
        except Exception as exc:
            raise StorageError(f"created S3 bucket {self.bucket!r} at {self.endpoint}, but it does not answer "
                               f"yet ({type(exc).__name__})", hint="run the command again in a minute") from None
        self.check()
        return True

