"""Validation helpers of :mod:`dbkit.backup._manifest`: every failure is one :class:`ManifestError` line
naming the backup and the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from dbkit.backup._manifest_names import _short, is_backup_id, looks_secret
from dbkit.backup._manifest_types import Encryption, TableInfo
from dbkit.errors import OperationFailed

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


def _encryption_from_dict(check: _Check, value: Mapping) -> Encryption:
    if extra := sorted(str(k) for k in set(value) - {"format", "recipients"}):
        raise check.fail("encryption", f"has unexpected keys {extra} (only 'format' and 'recipients' are recorded)")
    recipients = value.get("recipients")
    if not isinstance(recipients, (list, tuple)):
        raise check.fail("encryption.recipients", f"must be a list of age recipients, got {_short(recipients)}")
    return Encryption(recipients=tuple(recipients), format=value.get("format"))


def _check_encryption(check: _Check, enc: Encryption) -> None:
    if enc.format != "age":
        raise check.fail("encryption.format", f"must be 'age', got {_short(enc.format)}")
    if not isinstance(enc.recipients, (list, tuple)) or not enc.recipients:
        raise check.fail("encryption.recipients", "must list at least one age recipient (public key)")
    for i, r in enumerate(enc.recipients):
        name = f"encryption.recipients[{i}]"
        if isinstance(r, str) and looks_secret(r):
            raise check.fail(name, "is an age identity or private key, not a recipient; give the public key "
                             "(age1..., from age-keygen -y) and keep the identity out of dbkit")
        if not isinstance(r, str) or not (_AGE_RECIPIENT_RE.fullmatch(r) or _SSH_RECIPIENT_RE.fullmatch(r)):
            raise check.fail(name, f"must be an age recipient (age1...) or an ssh-ed25519/ssh-rsa public key, "
                             f"got {_short(r)}")


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
