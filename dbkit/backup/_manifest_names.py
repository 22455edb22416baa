"""Backup ids, dump object names and the secret guard of :mod:`dbkit.backup._manifest` (pure).

Backup ids (``20261121T230501Z-3f9a``: the UTC start time and 4 random hex digits) sort as text in
the order the backups were started (ties within one second are broken by the random part).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from dbkit.errors import ConfigError

COMPRESSIONS = ("zstd", "gzip", "none")
_SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}

EXAMPLE_ID = "20261121T230501Z-3f9a"
_ID_RE = re.compile(r"(?P<ts>\d{8}T\d{6}Z)-(?P<rand>[0-9a-f]{4})")
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# age identities (AGE-SECRET-KEY-1..., plugin identities AGE-PLUGIN-...-1...) and PEM/OpenSSH private keys
_SECRET_RE = re.compile(r"AGE-SECRET-KEY-|AGE-PLUGIN-|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.IGNORECASE)


# -- backup ids ---------------------------------------------------------------------------------------------
def require_aware(value: datetime, name: str) -> datetime:
    """``value`` in UTC; TypeError/ValueError for a non-datetime or a naive one."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value.isoformat()}")
    return value.astimezone(UTC)


def new_backup_id(now: datetime) -> str:
    """A new backup id for a backup started at ``now`` (aware): ``20261121T230501Z-3f9a``."""
    now = require_aware(now, "now")
    return f"{now.strftime(_ID_TIME_FORMAT)}-{secrets.token_hex(2)}"


def _id_time(text: object) -> datetime | None:
    """The UTC start time a backup id carries; None when ``text`` is not a backup id."""
    m = _ID_RE.fullmatch(text) if isinstance(text, str) else None
    try:
        return datetime.strptime(m["ts"], _ID_TIME_FORMAT).replace(tzinfo=UTC) if m else None
    except ValueError:
        return None


def is_backup_id(text: object) -> bool:
    """Whether ``text`` is a well-formed backup id (folders with other names are not dbkit's)."""
    return _id_time(text) is not None


def parse_backup_id(text: str) -> datetime:
    """The UTC start time a backup id carries; :class:`ConfigError` when it is not a backup id."""
    when = _id_time(text)
    if when is None:
        raise ConfigError("backup id", f"{_short(text)} is malformed (expected the UTC start time and 4 hex digits)",
                          example=EXAMPLE_ID)
    return when


# -- object names -------------------------------------------------------------------------------------------


def object_name(compression: str, encrypted: bool) -> str:
    """The dump object's file name: ``dump.pgdump`` + ``.zst``/``.gz`` + ``.age`` when encrypted."""
    if compression not in _SUFFIXES:
        raise ConfigError("compression", f"must be one of {', '.join(COMPRESSIONS)}, got {_short(compression)}",
                          example="zstd")
    return "dump.pgdump" + _SUFFIXES[compression] + (".age" if encrypted else "")


# -- secrets ------------------------------------------------------------------------------------------------


def looks_secret(text: str) -> bool:
    """Whether ``text`` contains an age identity or a private key (never stored in a manifest)."""
    return bool(_SECRET_RE.search(text))


def _short(value: object, limit: int = 60) -> str:
    """repr() of a value for a one-line message: bounded, and never a secret."""
    if isinstance(value, str) and looks_secret(value):
        return "<a secret, not shown>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
