"""How the S3 backend connects: the boto3 session and client, and the obstore store that uploads.

boto3 resolves credentials through the standard AWS chain (profiles, SSO, instance roles) and lends
them to obstore when no explicit keys are given.  boto3, botocore and obstore are imported here, on
first use.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dbkit.errors import MissingDependency

if TYPE_CHECKING:
    from dbkit.backup._storage_s3 import S3Storage
    from dbkit.backup._storage_uri import S3Options

#: a request's whole time limit in obstore (its body included: one part of up to 5 GiB)
REQUEST_TIMEOUT = "30m"


def new_session(o: S3Options):
    """A boto3 session: explicit keys, or the standard AWS credential chain."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - boto3 is a dependency of dbkit
        raise MissingDependency("the S3 backend needs boto3", hint="pip install boto3") from None
    return boto3.session.Session(aws_access_key_id=o.access_key, aws_secret_access_key=o.secret_key,
                                 aws_session_token=o.session_token, region_name=o.region)


def make_store(storage: S3Storage, session: Any):
    """The obstore S3Store that uploads for ``storage``, with the credentials of the boto3 ``session``."""
    try:
        from obstore.store import S3Store
    except ImportError:  # pragma: no cover - obstore is a dependency of dbkit
        raise MissingDependency("the S3 backend needs obstore", hint="pip install obstore") from None
    o = storage.options
    kwargs: dict[str, Any] = {}
    if o.explicit_credentials:
        kwargs.update(access_key_id=o.access_key, secret_access_key=o.secret_key)
        if o.session_token:
            kwargs["session_token"] = o.session_token
    else:
        from obstore.auth.boto3 import Boto3CredentialProvider

        try:
            kwargs["credential_provider"] = Boto3CredentialProvider(session)
        except ValueError:  # no credentials anywhere in the chain
            raise storage._error(_no_credentials(), "connect to") from None
    if o.sse:  # SSE headers only when asked for (not every S3-compatible server has SSE)
        kwargs["server_side_encryption"] = o.sse
    if o.kms_key_id:
        kwargs["sse_kms_key_id"] = o.kms_key_id
    if o.endpoint_url:
        kwargs["endpoint"] = o.endpoint_url
    region = session.region_name or ("us-east-1" if o.endpoint_url else storage._bucket_region())
    style = o.addressing_style  # auto: as boto3, virtual-hosted on AWS unless a dot would break TLS
    virtual = style == "virtual" or (style == "auto" and not o.endpoint_url and "." not in storage.bucket)
    try:
        return S3Store(storage.bucket, region=region, virtual_hosted_style_request=virtual,
                       client_options={"allow_http": bool(o.endpoint_url and o.endpoint_url.startswith("http:")),
                                       "connect_timeout": f"{int(o.connect_timeout * 1000)}ms",
                                       "timeout": REQUEST_TIMEOUT},
                       retry_config={"max_retries": int(o.max_attempts) - 1,
                                     "retry_timeout": timedelta(seconds=o.read_timeout * int(o.max_attempts))},
                       **kwargs)
    except Exception as exc:
        raise storage._error(exc, "connect to") from None


def _no_credentials() -> BaseException:
    from botocore.exceptions import NoCredentialsError

    return NoCredentialsError()


def make_client(storage: S3Storage, session: Any):
    """The boto3 S3 client of ``storage`` (everything but uploads)."""
    from botocore.config import Config

    o = storage.options
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
        raise storage._error(exc, "connect to") from None
