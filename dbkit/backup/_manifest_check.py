"""The parts of :mod:`dbkit.backup._manifest` (pure): backup ids, dump object names, the secret guard, the
table and encryption records, and the validation helpers (every failure is one :class:`ManifestError` line
naming the backup and the field).

Backup ids (``20261121T230501Z-3f9a``: the UTC start time and 4 random hex digits) sort as text in
the order the backups were started (ties within one second are broken by the random part).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dbkit.errors import ConfigError, OperationFailed

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


# -- the records of a manifest ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TableInfo:
    """One dumped table (a hypertable or a partitioned table counts with its chunks/partitions).

    ``rows``: the exact row count in the dump's own snapshot (tables small enough to count cheaply),
    None when not counted.  ``rows_estimate``: the exact count when there is one, else PostgreSQL's
    estimate (TimescaleDB's ``approximate_row_count`` for hypertables); None when there is none.
    ``has_rows``: whether the table had at least one row in the dump's snapshot (None: not known,
    manifests of older dbkit versions).
    """

    schema: str
    name: str
    rows_estimate: int | None = None
    rows: int | None = None
    has_rows: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.schema, "name": self.name, "rows_estimate": self.rows_estimate}
        if self.rows is not None:
            out["rows"] = self.rows
        if self.has_rows is not None:
            out["has_rows"] = self.has_rows
        return out


@dataclass(frozen=True)
class Encryption:
    """How the dump object is encrypted: age to these recipients (public keys only)."""

    recipients: tuple[str, ...]
    format: str = "age"

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "recipients": list(self.recipients)}


# -- checks -------------------------------------------------------------------------------------------------

_AGE_RECIPIENT_RE = re.compile(r"age1[0-9a-z]+")
_SSH_RECIPIENT_RE = re.compile(r"(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?")


class ManifestError(OperationFailed):
    """A manifest is malformed, foreign, from a newer dbkit, or would hold a secret."""


class _Check:
    """Raises :class:`ManifestError` with one line naming the backup and the field."""

    def __init__(self, backup_id: object) -> None:
        self.where = f"manifest of backup {backup_id}" if is_backup_id(backup_id) else "manifest"

    def fail(self, name: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.where}: field {name!r} {problem}")

    def text(self, name: str, value: object, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {_short(value)}")
        if "\n" in value or "\r" in value:
            raise self.fail(name, "must be one line")

    def integer(self, name: str, value: object, *, minimum: int = 0, optional: bool = False) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(name, f"must be an integer >= {minimum}, got {_short(value)}")

    def str_map(self, name: str, value: object) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise self.fail(name, f"must be an object of strings, got {_short(value)}")
        for k, v in value.items():
            if not isinstance(k, str) or not k or not isinstance(v, str):
                raise self.fail(name, f"must map non-empty names to strings, got {_short(k)}: {_short(v)}")
        return dict(sorted(value.items()))

    def when(self, name: str, value: object) -> datetime:
        if not isinstance(value, datetime):
            raise self.fail(name, f"must be a datetime, got {_short(value)}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise self.fail(name, f"must carry a time zone, got {value.isoformat()!r}")
        return value.astimezone(UTC)


def _strings(value: object, path: str):
    """Every string inside ``value`` (nested dicts, lists, dataclasses) with a path for messages."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k, f"{path} key")
            yield from _strings(v, f"{path}.{k}" if isinstance(k, str) else path)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, (TableInfo, Encryption)):
        yield from _strings(value.to_dict(), path)


def _encryption(check: _Check, value: object) -> Encryption | None:
    """``value`` (None, an :class:`Encryption` or its dict form) checked: age to public recipients only."""
    if isinstance(value, Mapping):
        if extra := sorted(str(k) for k in set(value) - {"format", "recipients"}):
            raise check.fail("encryption", f"has unexpected keys {extra} (only 'format' and 'recipients' are "
                             "recorded)")
        recipients = value.get("recipients")
        if not isinstance(recipients, (list, tuple)):
            raise check.fail("encryption.recipients", f"must be a list of age recipients, got {_short(recipients)}")
        value = Encryption(recipients=tuple(recipients), format=value.get("format"))
    if value is None:
        return None
    if not isinstance(value, Encryption):
        raise check.fail("encryption", f"must be null or {{'format': 'age', 'recipients': [...]}}, got {_short(value)}")
    if value.format != "age":
        raise check.fail("encryption.format", f"must be 'age', got {_short(value.format)}")
    if not isinstance(value.recipients, (list, tuple)) or not value.recipients:
        raise check.fail("encryption.recipients", "must list at least one age recipient (public key)")
    for i, r in enumerate(value.recipients):
        name = f"encryption.recipients[{i}]"
        if isinstance(r, str) and looks_secret(r):
            raise check.fail(name, "is an age identity or private key, not a recipient; give the public key "
                             "(age1..., from age-keygen -y) and keep the identity out of dbkit")
        if not isinstance(r, str) or not (_AGE_RECIPIENT_RE.fullmatch(r) or _SSH_RECIPIENT_RE.fullmatch(r)):
            raise check.fail(name, f"must be an age recipient (age1...) or an ssh-ed25519/ssh-rsa public key, "
                             f"got {_short(r)}")
    return value


def _table(check: _Check, i: int, value: object) -> TableInfo:
    name = f"tables[{i}]"
    if isinstance(value, Mapping):
        if not {"schema", "name"} <= set(value):
            raise check.fail(name, f"must have 'schema', 'name' and 'rows_estimate', got {_short(dict(value))}")
        value = TableInfo(value["schema"], value["name"], value.get("rows_estimate"), value.get("rows"),
                          value.get("has_rows"))
    if not isinstance(value, TableInfo):
        raise check.fail(name, f"must be {{'schema', 'name', 'rows_estimate'}}, got {_short(value)}")
    check.text(f"{name}.schema", value.schema)
    check.text(f"{name}.name", value.name)
    check.integer(f"{name}.rows_estimate", value.rows_estimate, optional=True)
    check.integer(f"{name}.rows", value.rows, optional=True)
    if value.has_rows is not None and not isinstance(value.has_rows, bool):
        raise check.fail(f"{name}.has_rows", f"must be true, false or absent, got {_short(value.has_rows)}")
    return value
