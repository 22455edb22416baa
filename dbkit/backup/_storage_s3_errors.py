"""One-line errors of the S3 backend: boto3/botocore and obstore exceptions, classified, never a secret."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dbkit._urls import mask_secrets
from dbkit.backup._storage_base import BucketNotFound, ObjectNotFound, StorageConfigError, StorageError
from dbkit.errors import DbkitError

if TYPE_CHECKING:
    from dbkit.backup._storage_s3 import S3Storage

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId",
           "UnrecognizedClientException", "403", "Forbidden"}


def _cred_hint(s3: S3Storage) -> str:
    if s3.options.access_key is not None:
        return "check S3_ACCESS_KEY/S3_SECRET_KEY and the bucket's policy"
    return ("check the credentials boto3 found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "an instance role) or set S3_ACCESS_KEY/S3_SECRET_KEY")


def _scrub(s3: S3Storage, text: str) -> str:
    """``text`` on one line of at most 300 characters, without the secrets it may hold."""
    text = " ".join(mask_secrets(text).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    for secret in (s3.options.secret_key, s3.options.session_token):
        if secret:
            text = text.replace(secret, "***")
    return text


def storage_error(s3: S3Storage, exc: BaseException, action: str, key: str | None = None, *,
                  obstore: bool = False) -> DbkitError:
    """A one-line DbkitError for a boto3/botocore (or, ``obstore``, an obstore) exception, never a secret."""
    if isinstance(exc, DbkitError):
        return exc
    where = f"{s3.uri}/{key}" if key else s3.uri
    if obstore:
        return _obstore_error(s3, exc, action, where)
    from botocore import exceptions as bx  # loaded already: the error came from a boto3 client
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        op = exc.operation_name
        if code == "NoSuchBucket" or (op == "HeadBucket" and status == 404):
            return _no_bucket(s3)
        if code == "BucketAlreadyExists":  # CreateBucket: the name is taken by another account
            return StorageConfigError(f"S3 bucket {s3.bucket!r} at {s3.endpoint} belongs to another account",
                                     hint="bucket names are global: choose another one in the storage URI")
        if code in ("IllegalLocationConstraintException", "InvalidLocationConstraint"):
            return StorageConfigError(f"S3 at {s3.endpoint} refused to create bucket {s3.bucket!r} in region "
                                      f"{s3.options.region or 'us-east-1'} ({code})",
                                      hint="set S3_REGION to the region of the endpoint")
        if code in _DENIED or status == 403:
            return StorageConfigError(f"access denied by S3 for {where} ({code or status} on {op})",
                                      hint=_cred_hint(s3))
        if code in ("NoSuchKey", "NotFound") or (status == 404 and op in ("HeadObject", "GetObject")):
            return ObjectNotFound(f"{where} does not exist")
        return _failed(s3, action, where, op, code or status, str(err.get("Message") or ""))
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageConfigError(f"no S3 credentials for {s3.uri}",
                                  hint="set S3_ACCESS_KEY/S3_SECRET_KEY, or AWS_ACCESS_KEY_ID/"
                                       "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
    if isinstance(exc, bx.NoRegionError):
        return StorageConfigError(f"no S3 region for {s3.uri}", hint="set S3_REGION (e.g. eu-central-1)")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ProxyConnectionError
                  | bx.ConnectionClosedError | bx.ReadTimeoutError | bx.SSLError):
        return _unreachable(s3, action, where, type(exc).__name__)
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {_scrub(s3, str(exc))}")


def _obstore_error(s3: S3Storage, exc: BaseException, action: str, where: str) -> DbkitError:
    """A one-line DbkitError for an obstore exception: the S3 error code and operation from its text."""
    text = str(exc)
    code = _first(r"<Code>([^<]+)<", text) or _first(r"status (?:client|server) error \((\d{3})", text) \
        or _first(r"\bstatus (\d{3})\b", text)
    if code == "NoSuchBucket":
        return _no_bucket(s3)
    op = _operation(text)
    if code in _DENIED:
        return StorageConfigError(f"access denied by S3 for {where} ({code} on {op})", hint=_cred_hint(s3))
    if code:
        if code == "NoSuchUpload" and op == "AbortMultipartUpload":  # object_store reports the abort that
            return StorageError(f"cannot {action} {where}: S3 dropped the multipart upload "  # follows a failed
                                "(NoSuchUpload)")  # complete, not the complete's own error
        return _failed(s3, action, where, op, code, _first(r"<Message>([^<]*)</Message>", text) or "")
    if re.search(r"error sending request|connection|timed out|dns error", text, re.IGNORECASE):
        return _unreachable(s3, action, where, op)
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {_scrub(s3, text)}")


def _unreachable(s3: S3Storage, action: str, where: str, what: str) -> StorageError:
    return StorageError(f"cannot reach S3 at {s3.endpoint} to {action} {where} ({what})",
                        hint="check S3_ENDPOINT and the network" if s3.options.endpoint_url
                        else "check the network and S3_REGION")


def _failed(s3: S3Storage, action: str, where: str, op: str, code: object, message: str) -> StorageError:
    message = _scrub(s3, message)
    return StorageError(f"cannot {action} {where}: S3 {op} failed with {code}" + (f" ({message})" if message else ""))


def _no_bucket(s3: S3Storage) -> BucketNotFound:
    return BucketNotFound(f"S3 bucket {s3.bucket!r} does not exist at {s3.endpoint}",
                          hint="fix the bucket in the storage URI, or create it: `dbkit backup --create-bucket` "
                               "does (MinIO and dev setups)")


def _first(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


# per method: the URL marker of a multipart request, the operation with it and without it
_OPERATIONS = {"PUT": ("partNumber=", "UploadPart", "PutObject"),
               "POST": ("uploadId=", "CompleteMultipartUpload", "CreateMultipartUpload"),
               "DELETE": ("uploadId=", "AbortMultipartUpload", "DeleteObject"),
               "GET": ("", "GetObject", "GetObject"), "HEAD": ("", "HeadObject", "HeadObject")}


def _operation(text: str) -> str:
    """The S3 operation of an obstore error, from the request it names (``PUT http://…?partNumber=…``)."""
    match = re.search(r"\b(GET|PUT|POST|DELETE|HEAD) (\S+)", text)
    if not match:
        return "upload"
    marker, multipart, single = _OPERATIONS[match[1]]
    return multipart if marker and marker in match[2] else single
