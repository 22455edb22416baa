"""Backup ids and the backup manifest (pure: no I/O besides ``json``).

A backup is the folder ``<prefix>/<backup-id>/`` holding one dump object
(:func:`object_name`, e.g. ``dump.pgdump.zst.age``) and ``manifest.json``,
written LAST: a folder without a manifest is not a backup for list, restore or
prune.

Backup ids (``20261121T230501Z-3f9a``: the UTC start time and 4 random hex
digits) sort as text in the order the backups were started (ties within one
second are broken by the random part).

The manifest describes the dump so that a restore can check it before it
touches a database: the object's name, size and sha256, how it was compressed
and encrypted, the server, pg_dump, extensions and Alembic revision it came
from, and the tables with their row counts (exact in the dump's snapshot for
small tables, else estimates).  It never holds secrets: only age *recipients*
(public keys) are recorded, and every string in it is checked for age
identities and private keys before it is written or accepted.

``format_version`` changes only when an older dbkit would misread a manifest;
a reader refuses versions newer than :data:`FORMAT_VERSION` and ignores keys it
does not know (new optional keys are added without a bump).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from dbkit.backup._manifest_check import (
    COMPRESSIONS,
    EXAMPLE_ID,
    Encryption,
    ManifestError,
    TableInfo,
    _Check,
    _encryption,
    _short,
    _strings,
    _table,
    is_backup_id,
    looks_secret,
    new_backup_id,
    object_name,
    parse_backup_id,
)

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "SSE_MODES", "ManifestError", "Encryption", "TableInfo", "Manifest",
    "new_backup_id", "parse_backup_id", "is_backup_id", "object_name", "looks_secret"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# S3 ServerSideEncryption values; "SSE-C" records that a customer key (never stored) is needed
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse", "SSE-C")
_LEVELS = {"zstd": range(1, 23), "gzip": range(0, 10)}
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STORAGE_CLASS_RE = re.compile(r"[A-Z0-9_]{1,64}")
# keys a manifest may omit (optional keys are added without a format_version bump)
_OPTIONAL_KEYS = ("sse", "storage_class", "tags", "roles", "globals_object")
_SECRET_TAG_KEYS = {"password", "passwd", "pwd", "secret", "secret_key", "token", "api_key", "private_key",
                    "aws_secret_access_key", "identity", "passphrase"}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(check: _Check, name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise check.fail(name, f"must be an ISO 8601 time string, got {_short(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise check.fail(name, f"is not an ISO 8601 time: {_short(value)}") from None
    if parsed.tzinfo is None:
        raise check.fail(name, f"has no time zone: {_short(value)}")
    return parsed


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What ``manifest.json`` records about one backup.  Validated on construction.

    ``encryption`` and ``tables`` also accept their JSON shapes (a dict, a list of dicts).
    ``duration_s`` defaults to ``finished_at - started_at``.
    """

    format_version: int = FORMAT_VERSION
    id: str
    database: str
    server_version: str
    pg_dump_version: str
    extensions: dict[str, str] = field(default_factory=dict)
    alembic_revision: str | None = None
    dbkit_version: str
    started_at: datetime
    finished_at: datetime
    duration_s: float | None = None
    raw_bytes: int
    stored_bytes: int
    sha256: str
    object: str
    compression: str
    compression_level: int | None = None
    encryption: Encryption | None = None
    sse: str | None = None
    storage_class: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    tables: tuple[TableInfo, ...] = ()
    #: roles the dump refers to (owners, grantees): they must exist before a restore
    roles: tuple[str, ...] = ()
    #: ``globals.sql`` (pg_dumpall --globals-only --no-role-passwords) when taken with --globals
    globals_object: str | None = None

    def __post_init__(self) -> None:  # noqa: C901 - one flat list of checks, in field order
        check = _Check(self.id)
        put = object.__setattr__

        if isinstance(self.format_version, bool) or not isinstance(self.format_version, int):
            raise check.fail("format_version", f"must be an integer, got {_short(self.format_version)}")
        if self.format_version != FORMAT_VERSION:
            raise check.fail("format_version", f"is {self.format_version}; this dbkit writes only {FORMAT_VERSION}")
        if not is_backup_id(self.id):
            raise check.fail("id", f"must be a backup id like {EXAMPLE_ID}, got {_short(self.id)}")
        for name in ("database", "server_version", "pg_dump_version", "dbkit_version"):
            check.text(name, getattr(self, name))
        check.text("alembic_revision", self.alembic_revision, optional=True)
        put(self, "extensions", check.str_map("extensions", self.extensions))

        started = check.when("started_at", self.started_at)
        finished = check.when("finished_at", self.finished_at)
        if finished < started:
            raise check.fail("finished_at", f"({finished.isoformat()}) is before started_at ({started.isoformat()})")
        put(self, "started_at", started)
        put(self, "finished_at", finished)
        if self.duration_s is None:
            put(self, "duration_s", round((finished - started).total_seconds(), 3))
        elif (isinstance(self.duration_s, bool) or not isinstance(self.duration_s, (int, float))
              or not math.isfinite(self.duration_s) or self.duration_s < 0):
            raise check.fail("duration_s", f"must be a number of seconds >= 0, got {_short(self.duration_s)}")
        else:
            put(self, "duration_s", float(self.duration_s))

        check.integer("raw_bytes", self.raw_bytes)
        check.integer("stored_bytes", self.stored_bytes)
        if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
            raise check.fail("sha256", f"must be 64 lowercase hex digits, got {_short(self.sha256)}")

        if self.compression not in COMPRESSIONS:
            raise check.fail("compression", f"must be one of {', '.join(COMPRESSIONS)}, got {_short(self.compression)}")
        if self.compression == "none":
            if self.compression_level is not None:
                raise check.fail("compression_level", f"must be null without compression, got "
                                 f"{_short(self.compression_level)}")
        elif self.compression_level is not None:  # None: the compressor's default level
            levels = _LEVELS[self.compression]
            check.integer("compression_level", self.compression_level, minimum=levels.start)
            if self.compression_level not in levels:
                raise check.fail("compression_level", f"must be {levels.start}..{levels.stop - 1} for "
                                 f"{self.compression}, got {self.compression_level}")

        encryption = _encryption(check, self.encryption)
        put(self, "encryption", encryption)

        expected = object_name(self.compression, encryption is not None)
        if self.object != expected:
            raise check.fail("object", f"is {_short(self.object)}, expected {expected!r} for compression "
                             f"{self.compression!r}{' and age encryption' if encryption else ' without encryption'}")
        if self.compression == "none" and encryption is None and self.stored_bytes != self.raw_bytes:
            raise check.fail("stored_bytes", f"({self.stored_bytes}) must equal raw_bytes ({self.raw_bytes}) "
                             "when the dump is stored as is")

        if self.sse is not None and self.sse not in SSE_MODES:
            raise check.fail("sse", f"must be null or one of {', '.join(SSE_MODES)}, got {_short(self.sse)}")
        if self.storage_class is not None and (
                not isinstance(self.storage_class, str) or not _STORAGE_CLASS_RE.fullmatch(self.storage_class)):
            raise check.fail("storage_class", f"must be null or an S3 storage class like STANDARD_IA, "
                             f"got {_short(self.storage_class)}")
        tags = check.str_map("tags", self.tags)
        for key in tags:
            if key.lower().replace("-", "_") in _SECRET_TAG_KEYS:
                raise check.fail("tags", f"has a tag named {key!r}; tags are stored in clear and must not hold secrets")
        put(self, "tags", tags)

        if not isinstance(self.tables, (list, tuple)):
            raise check.fail("tables", f"must be a list, got {_short(self.tables)}")
        put(self, "tables", tuple(_table(check, i, t) for i, t in enumerate(self.tables)))

        if not isinstance(self.roles, (list, tuple)) or not all(isinstance(r, str) and r for r in self.roles):
            raise check.fail("roles", f"must be a list of role names, got {_short(self.roles)}")
        put(self, "roles", tuple(self.roles))
        if self.globals_object not in (None, "globals.sql"):
            raise check.fail("globals_object", f"must be 'globals.sql' or null, got {_short(self.globals_object)}")

        # Last line of defence: no string anywhere may be an age identity or a private key.
        for f in fields(self):
            for path, text in _strings(getattr(self, f.name), f.name):
                if looks_secret(text):
                    raise check.fail(path, "looks like a secret (an age identity or a private key); a manifest "
                                     "records only public recipients and never secrets")

    # -- serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, keys in field order (``format_version`` first)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(extensions=dict(self.extensions), started_at=_iso(self.started_at),
                   finished_at=_iso(self.finished_at), tags=dict(self.tags), tables=[t.to_dict() for t in self.tables],
                   encryption=self.encryption.to_dict() if self.encryption else None, roles=list(self.roles))
        return out

    def to_json(self) -> bytes:
        """``manifest.json``: UTF-8, indent 2, keys in a stable order, ending in a newline."""
        return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, backup_id: str | None = None) -> Manifest:
        """Parse and validate ``manifest.json``.

        ``backup_id`` is the folder the file was read from: the manifest must carry the same id.
        Raises :class:`ManifestError` (one line naming the backup and the field) for anything
        that is not a valid dbkit manifest this version can read.
        """
        check = _Check(backup_id)
        where = check.where
        try:
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise ManifestError(f"{where} is not UTF-8 text: not a dbkit manifest") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}): not a dbkit manifest") from None
        except ValueError as exc:
            raise ManifestError(f"{where} is not valid JSON ({exc}): not a dbkit manifest") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"{where} is a JSON {type(doc).__name__}, not an object: not a dbkit manifest")
        if "format_version" not in doc:
            raise ManifestError(f"{where} has no 'format_version': not a dbkit manifest")
        version = doc["format_version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise check.fail("format_version", f"must be a positive integer, got {_short(version)}")
        if backup_id is None:
            check = _Check(doc.get("id"))
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"{check.where} has format_version {version}, but this dbkit reads only up to "
                f"{FORMAT_VERSION}; upgrade dbkit to list or restore it")

        for f in fields(cls):
            if f.name not in doc and f.name not in _OPTIONAL_KEYS:
                raise check.fail(f.name, "is missing")
        if backup_id is not None and doc["id"] != backup_id:
            raise check.fail("id", f"is {_short(doc['id'])}, but the manifest is in backup {backup_id}'s folder "
                             "(copied from another backup?)")

        kwargs = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        for name in ("started_at", "finished_at"):
            kwargs[name] = _parse_time(check, name, doc[name])
        if doc["duration_s"] is None:
            raise check.fail("duration_s", "must be a number of seconds >= 0, got None")
        if kwargs.get("tags") is None:
            kwargs.pop("tags", None)
        return cls(**kwargs)
