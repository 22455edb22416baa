"""The value types of the settings: each check returns the value in its type or raises one problem
(:mod:`dbkit.config` puts the variable, its source, purpose and an example around it)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainValidator
from pydantic_core import PydanticCustomError

from dbkit._urls import DbUrl, parse_database_url
from dbkit.errors import ConfigError

# --------------------------------------------------------------------- value types
# Each check returns the value in its type or raises one problem ("is 'x', not ..."); load_settings
# puts the variable's name, where the value came from, its purpose and an example around it.

ENVIRONMENTS = ("dev", "test", "staging", "prod")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _problem(text: str) -> PydanticCustomError:
    return PydanticCustomError("dbkit", "{problem}", {"problem": text})


def config_error(f, error, source: str) -> ConfigError:
    """The one line of a pydantic error of setting ``f`` (a :class:`dbkit.config.Field`), named as the user
    wrote it where the value came from (a secret's value is never quoted)."""
    problem = error["ctx"]["problem"] if error["type"] == "dbkit" else (
        f"is not valid ({error['msg']})" if f.secret else f"is {error['input']!r}, not valid ({error['msg']})")
    if source == "pyproject":
        label = f"[tool.dbkit] {f.name}"
    else:
        label = f"{f.env} (from {source})" if source.startswith(".env") else f.env
    return ConfigError(label, problem, purpose=f.purpose, example=f.example)


def _one_of(*choices: str):
    def check(value: Any) -> str:
        if (text := str(value).strip().lower()) not in choices:
            raise _problem(f"is {value!r}, not one of {', '.join(choices)}")
        return text
    return BeforeValidator(check)


def _matching(pattern: str, what: str, *, squeeze: bool = False):
    def check(value: Any) -> str:
        text = "".join(str(value).split()) if squeeze else str(value).strip()
        if not re.fullmatch(pattern, text):
            raise _problem(f"is {value!r}, not {what}")
        return text
    return BeforeValidator(check)


def _count(value: Any, *, most: int | None = None) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:
        raise _problem(f"is {value!r}, not a whole number") from None
    if number < 0:
        raise _problem(f"is {number}, must not be negative")
    if most is not None and number > most:
        raise _problem(f"is {number}, above {most}")
    return number


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in _TRUE + _FALSE:
        return value if isinstance(value, bool) else text in _TRUE
    raise _problem(f"is {value!r}, not true or false")


def _names(value: Any) -> tuple[str, ...]:
    """``"a, b"`` (a variable) or ``["a", "b"]`` (TOML): empty items dropped."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(text for text in (str(i).strip() for i in items) if text)


def _role_names(value: Any) -> tuple[str, ...]:
    """Role names of one kind: ``"api"``, ``"api,ingest"`` or ``["api", "ingest"]``; ``none`` (or
    ``[]`` in TOML) when the project has no role of that kind."""
    names = _names(value)
    if len(names) == 1 and names[0].lower() == "none":
        return ()
    for name in names:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise _problem(f"has {name!r}, not a lower-case SQL identifier (letters, digits, _; at most 63)")
    if len(set(names)) != len(names):
        raise _problem(f"is {value!r}, which names a role twice")
    return names


def _anchor(value: Any) -> str | None:
    """An ISO date or timestamp (``2026-01-01``, ``2026-01-01T12:00:00+00:00``); kept as text."""
    if value is None:
        return None
    text = str(value).strip()
    from datetime import datetime

    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise _problem(f"is {value!r}, not an ISO date or timestamp (e.g. 2026-01-01)") from None
    return text


def _url(value: Any) -> DbUrl | None:
    if value is None or isinstance(value, DbUrl):
        return value
    try:
        return parse_database_url(str(value))
    except ConfigError as exc:  # its problem text never quotes the user name or password
        raise _problem(exc.problem) from None


Environment = Annotated[str, _one_of(*ENVIRONMENTS)]
Count = Annotated[int, BeforeValidator(_count)]
Port = Annotated[int, BeforeValidator(lambda v: _count(v, most=65535))]
Flag = Annotated[bool, PlainValidator(_flag)]
Url = Annotated[DbUrl | None, PlainValidator(_url)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
Anchor = Annotated[str | None, PlainValidator(_anchor)]
RoleNames = Annotated[tuple[str, ...], BeforeValidator(_role_names)]
Ident = Annotated[str, _matching(r"[a-z_][a-z0-9_]{0,62}",
                                 "a lower-case SQL identifier (letters, digits, _; at most 63)")]
Claim = Annotated[str, _matching(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+",
                                 "a custom setting name (lower-case identifiers joined by dots, "
                                 "such as app.tenant_id or request.jwt.claims)")]
JsonKey = Annotated[str, _matching(r"[A-Za-z_][A-Za-z0-9_]{0,62}", "a JSON key (letters, digits, _)")]
RlsModel = Annotated[str, _one_of("tenant", "jwt", "none")]
Duration = Annotated[str, _matching(r"\d+(ms|s|min|h|d)?", "a PostgreSQL duration (e.g. 5s, 500ms, 2min, 0)",
                                    squeeze=True)]
Memory = Annotated[str, _matching(r"\d+(kB|MB|GB|TB)", "a PostgreSQL memory size (e.g. 512MB, 1GB)", squeeze=True)]
AddressingStyle = Annotated[str, _one_of("auto", "path", "virtual")]
Text = Annotated[str, BeforeValidator(str)]


def _printable(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)
