"""The S3 backend: obstore's multipart writer for uploads (``_storage_s3_io``), boto3 for the rest.

boto3 does what obstore cannot: list and abort in-progress multipart uploads (crash detection,
prune, and making sure a failed or abandoned writer leaves no parts behind), resolve credentials
through the standard AWS chain (profiles, SSO, instance roles) and lend them to obstore when no
explicit keys are given, and the small requests (list, head, delete, one streamed ``GetObject`` per
read).  boto3, botocore and obstore are imported on first use.  Errors: ``_storage_s3_errors``.
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
from dbkit.backup._storage_s3_errors import storage_error
from dbkit.backup._storage_s3_io import _S3Reader, _S3Writer
from dbkit.backup._storage_uri import S3Options, StorageLocation
from dbkit.errors import MissingDependency

#: a request's whole time limit in obstore (its body included: one part of up to 5 GiB)
REQUEST_TIMEOUT = "30m"
_CLEANUP_HINT = ("run the cleanup of incomplete uploads later; a bucket lifecycle rule AbortIncompleteMultipartUpload "
                 "is a good backstop")


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
        self._lock = threading.RLock()  # the store looks up the bucket's region with the client

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

    @property
    def store(self):
        """The obstore S3Store that uploads (built on first use), with the boto3 session's credentials."""
        with self._lock:
            if self._store is None:
                self._store = self._make_store()
            return self._store

    def _boto_session(self):
        """The boto3 session (held by the lock): explicit keys, or the standard AWS credential chain."""
        if self._session is None:
            try:
                import boto3
            except ImportError:  # pragma: no cover - boto3 is a dependency of dbkit
                raise MissingDependency("the S3 backend needs boto3", hint="pip install boto3") from None
            o = self.options
            self._session = boto3.session.Session(aws_access_key_id=o.access_key, aws_secret_access_key=o.secret_key,
                                                  aws_session_token=o.session_token, region_name=o.region)
        return self._session

    def _make_client(self):
        """The boto3 S3 client (everything but uploads)."""
        from botocore.config import Config

        o, session = self.options, self._boto_session()
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
            raise storage_error(self, exc, "connect to") from None

    def _make_store(self):
        try:
            from obstore.store import S3Store
        except ImportError:  # pragma: no cover - obstore is a dependency of dbkit
            raise MissingDependency("the S3 backend needs obstore", hint="pip install obstore") from None
        o, session = self.options, self._boto_session()
        kwargs: dict[str, Any] = {}
        if o.access_key is not None:  # explicit keys (S3Options makes sure the secret comes with them)
            kwargs.update(access_key_id=o.access_key, secret_access_key=o.secret_key)
            if o.session_token:
                kwargs["session_token"] = o.session_token
        else:
            from botocore.exceptions import NoCredentialsError
            from obstore.auth.boto3 import Boto3CredentialProvider

            try:
                kwargs["credential_provider"] = Boto3CredentialProvider(session)
            except ValueError:  # no credentials anywhere in the chain
                raise storage_error(self, NoCredentialsError(), "connect to") from None
        if o.sse:  # SSE headers only when asked for (not every S3-compatible server has SSE)
            kwargs["server_side_encryption"] = o.sse
        if o.kms_key_id:
            kwargs["sse_kms_key_id"] = o.kms_key_id
        if o.endpoint_url:
            kwargs["endpoint"] = o.endpoint_url
        region = session.region_name or ("us-east-1" if o.endpoint_url else self._bucket_region())
        style = o.addressing_style  # auto: as boto3, virtual-hosted on AWS unless a dot would break TLS
        virtual = style == "virtual" or (style == "auto" and not o.endpoint_url and "." not in self.bucket)
        try:
            return S3Store(self.bucket, region=region, virtual_hosted_style_request=virtual,
                           client_options={"allow_http": bool(o.endpoint_url and o.endpoint_url.startswith("http:")),
                                           "connect_timeout": f"{int(o.connect_timeout * 1000)}ms",
                                           "timeout": REQUEST_TIMEOUT},
                           retry_config={"max_retries": int(o.max_attempts) - 1,
                                         "retry_timeout": timedelta(seconds=o.read_timeout * int(o.max_attempts))},
                           **kwargs)
        except Exception as exc:
            raise storage_error(self, exc, "connect to") from None

    def _bucket_region(self) -> str:
        """The AWS region of the bucket (boto3 follows S3's region redirects, obstore does not)."""
        try:
            resp = self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - a 301/403 answer still names the region
            resp = getattr(exc, "response", None) or {}
        headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return headers.get("x-amz-bucket-region") or "us-east-1"

    def _abort_uploads_of(self, full_key: str, key: str) -> None:
        """Abort the in-progress multipart uploads of exactly ``full_key``."""
        try:
            found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full_key).get("Uploads", [])
        except Exception as exc:
            raise StorageError(f"cannot check for an unfinished upload of {self.uri}/{key} "
                               f"({storage_error(self, exc, 'list unfinished uploads in').message})",
                               hint=_CLEANUP_HINT) from None
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
                               f"({storage_error(self, exc, 'abort').message})", hint=_CLEANUP_HINT)

    # -- interface

    def open_write(self, key: str, *, expected_size: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Writer:
        _check_key(key)
        attributes = _check_metadata(metadata)  # other keys than obstore's are user metadata
        if self.options.storage_class:
            attributes["Storage-Class"] = self.options.storage_class
        return _S3Writer(self, key, self.part_size or choose_part_size(expected_size), attributes)

    def open_read(self, key: str) -> BinaryIO:
        _check_key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise storage_error(self, exc, "read", key) from None
        raw = _S3Reader(self, key, resp["Body"])
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
            raise storage_error(self, exc, "list") from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        _check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise storage_error(self, exc, "delete", key) from None

    def exists(self, key: str) -> bool:
        _check_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            error = storage_error(self, exc, "look up", key)
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
                    modified = max((t for t in (started, newest) if t is not None), default=None)
                    if cutoff is not None and (modified is None or modified >= cutoff):
                        continue  # started long ago but still uploading parts: running, not stale
                    found.append(IncompleteUpload(up["Key"][len(self.prefix):], up["UploadId"], started, None,
                                                  modified))
        except Exception as exc:
            raise storage_error(self, exc, "list unfinished uploads in") from None
        return sorted(found, key=lambda u: (u.key, u.upload_id))

    def _newest_part(self, full_key: str, upload_id: str):
        """When the newest part of an unfinished upload was uploaded (None: no part yet; False: the upload
        is gone).  A long backup's upload was initiated hours ago but keeps adding parts."""
        from botocore.exceptions import ClientError

        try:
            pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=full_key,
                                                                     UploadId=upload_id)
            return max((part["LastModified"].astimezone(UTC) for page in pages for part in page.get("Parts", [])
                        if part.get("LastModified") is not None), default=None)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                return False
            raise

    def abort_upload(self, upload: IncompleteUpload) -> None:
        self._abort_upload(self.prefix + upload.key, upload.upload_id, upload.key)

    def check(self) -> None:
        try:  # a GET (not HeadBucket): its error body names the cause (NoSuchBucket, InvalidAccessKeyId, ...)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise storage_error(self, exc, "check") from None

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
                raise storage_error(self, exc, "create the bucket of") from None
        try:  # S3 may answer for a new bucket a moment later
            self.client.get_waiter("bucket_exists").wait(Bucket=self.bucket,
                                                         WaiterConfig={"Delay": 1, "MaxAttempts": 20})
        except Exception as exc:
            raise StorageError(f"created S3 bucket {self.bucket!r} at {self.endpoint}, but it does not answer "
                               f"yet ({type(exc).__name__})", hint="run the command again in a minute") from None
        self.check()
        return True

