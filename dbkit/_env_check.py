"""The application's own environment variables: declared in ``[tool.dbkit.variables.<NAME>]``, checked by
``dbkit config check`` and ``dbkit check`` (service ``environment``).

dbkit validates its own settings (:mod:`dbkit.config`); the other variables an application reads (``REDIS_URL``,
``JWT_SECRET``, ``SUPABASE_SERVICE_ROLE_KEY``, …) are declared once in ``pyproject.toml``::

    [tool.dbkit.variables.REDIS_URL]
    type = "url"                    # text | secret | url | int | port | bool | duration | email | enum
    schemes = ["redis", "rediss"]   # url: the schemes accepted
    purpose = "points at Redis (sessions, queues)"   # completes "it ..." in the message
    example = "redis://localhost:6379"
    required = true                 # true (default), false, or the environments: ["staging", "prod"]

Values are read as dbkit reads its own (environment > ``.env.<DBKIT_ENV>`` > ``.env``; empty means unset).
Each missing or malformed variable is one line naming it, where the value came from, the problem, its
purpose and an example.  The value of a secret (``type = "secret"`` or ``secret = true``) is never shown,
not even when it is malformed; URLs are shown with their password masked, and not at all when they do not
parse and hold an ``@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dbkit._config_types import _FALSE, _TRUE, ENVIRONMENTS
from dbkit._urls import clip, mask_url
from dbkit.errors import ConfigError

#: type -> what a valid value is (completes "not ...")
TYPES = {
    "text": "text",
    "secret": "a secret",
    "url": "a URL with a scheme and a host (scheme://host[:port][/path])",
    "int": "a whole number",
    "port": "a TCP port (1-65535)",
    "bool": "true or false (also 1/0, yes/no, on/off)",
    "duration": "a duration such as 30s, 15m, 1h or 7d",
    "email": "an email address (name@example.com)",
    "enum": "one of the choices",
}
_KEYS = {"type", "required", "secret", "purpose", "example", "choices", "min", "max", "schemes", "pattern",
         "min_length", "reject"}
_DURATION = re.compile(r"\d+(\.\d+)?\s*(ms|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?|y|years?)?",
                       re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = 'type = "url", example = "redis://localhost:6379", required = true'


@dataclass(frozen=True)
class Variable:
    """One declared variable (``[tool.dbkit.variables.<name>]``)."""

    name: str
    type: str = "text"
    required: tuple[str, ...] = ENVIRONMENTS  # the environments (DBKIT_ENV) in which it must be set
    secret: bool = False
    purpose: str | None = None
    example: str | None = None
    choices: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    schemes: tuple[str, ...] = ()
    pattern: str | None = None
    min_length: int | None = None
    reject: tuple[str, ...] = ()

    def label(self, source: str | None) -> str:
        return f"{self.name} (from {source})" if source and source.startswith(".env") else self.name

    def line(self, problem: str, source: str | None = None) -> str:
        """The one line of a problem: variable (and its file), problem, purpose, example."""
        return ConfigError(self.label(source), problem, purpose=self.purpose, example=self.example).message

    def shown(self, value: str) -> str:
        """What may be printed of a value: nothing of a secret, a URL's password masked."""
        return "***" if self.secret else clip(mask_url(value) if self.type == "url" else value)

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not valid for this variable (never quoting a secret), or None."""
        text = value.strip()
        quoted = "" if self.secret else f"is {self.shown(value)!r}, "
        what = TYPES[self.type] if self.type != "enum" else f"one of {', '.join(self.choices)}"
        bad = f"{quoted or 'is '}not {what}"
        if self.type == "int" or self.type == "port":
            try:
                number = int(text)
            except ValueError:
                return bad
            low = self.min if self.min is not None else (1 if self.type == "port" else None)
            high = self.max if self.max is not None else (65535 if self.type == "port" else None)
            if (low is not None and number < low) or (high is not None and number > high):
                limits = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
                return f"is {number if not self.secret else 'a number'}, outside {limits}"
        elif (self.type == "bool" and text.lower() not in _TRUE + _FALSE
              or self.type == "duration" and not _DURATION.fullmatch(text)
              or self.type == "email" and not _EMAIL.fullmatch(text)
              or self.type == "enum" and text not in self.choices):
            return bad
        elif self.type == "url" and (why := self._url_problem(text, bad)):
            return why
        if self.reject and text in self.reject:
            return "is a placeholder value (listed in reject), not a real one"
        if self.min_length is not None and len(text) < self.min_length:
            return f"is {len(text)} characters long, shorter than {self.min_length}"
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            return f"{quoted or 'is '}not of the expected form ({self.pattern})"
        return None

    def _url_problem(self, text: str, bad: str) -> str | None:
        if not self.secret and "@" in text:  # it may hold a password: a malformed one is not quoted
            bad = f"is not {TYPES['url']} (not shown: it may hold a password)"
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            return bad
        if not parts.scheme or not parts.hostname or any(c.isspace() for c in text):
            return bad
        if self.schemes and parts.scheme.lower() not in self.schemes:
            return f"has the scheme {parts.scheme!r}, not {' or '.join(self.schemes)}"
        return None


@dataclass(frozen=True)
class VariableCheck:
    """The verdict on one declared variable: ``status`` ok, missing (required here, unset), invalid, or unset
    (optional here); ``value`` is what may be shown of it (secrets as ``***``)."""

    name: str
    type: str
    required: bool
    secret: bool
    status: str
    source: str | None = None
    value: str | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class VariablesReport:
    env: str
    variables: tuple[VariableCheck, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(v.problem for v in self.variables if v.problem)


# --------------------------------------------------------------------- the declaration


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} {key}", "is not a list of strings", example=f'{key} = ["a", "b"]')
    return tuple(value)


def _parse_one(name: str, decl: Any, reserved: Mapping[str, str]) -> Variable:
    where = f"[tool.dbkit.variables.{name}]"
    if not _NAME.fullmatch(name):
        raise ConfigError(where, "is not an environment variable name (letters, digits, _)", example=_EXAMPLE)
    if name in reserved:
        raise ConfigError(where, f"declares {name}, one of dbkit's own settings ({reserved[name]}): dbkit "
                                 "validates it already; remove the table")
    if not isinstance(decl, Mapping):
        raise ConfigError(where, "is not a table", example=_EXAMPLE)
    unknown = sorted(set(decl) - _KEYS)
    if unknown:
        raise ConfigError(where, f"has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    kind = decl.get("type", "text")
    if kind not in TYPES:
        raise ConfigError(f"{where} type", f"is {kind!r}, not one of {', '.join(TYPES)}", example='type = "url"')
    required = decl.get("required", True)
    if isinstance(required, bool):
        envs = ENVIRONMENTS if required else ()
    else:
        envs = _strings(where, "required", required)
        if set(envs) - set(ENVIRONMENTS):
            raise ConfigError(f"{where} required", f"names {', '.join(sorted(set(envs) - set(ENVIRONMENTS)))}, "
                              f"not an environment ({', '.join(ENVIRONMENTS)})", example='required = ["prod"]')
    for key in ("purpose", "example", "pattern"):
        if key in decl and not isinstance(decl[key], str):
            raise ConfigError(f"{where} {key}", "is not a string", example=f'{key} = "..."')
    for key in ("min", "max", "min_length"):
        if key in decl and (not isinstance(decl[key], int) or isinstance(decl[key], bool)):
            raise ConfigError(f"{where} {key}", "is not a whole number", example=f"{key} = 1")
    out: dict[str, Any] = {
        "name": name, "type": kind, "required": envs,
        **{key: decl[key] for key in ("purpose", "example", "pattern", "min", "max", "min_length") if key in decl},
        **{key: _strings(where, key, decl[key]) for key in ("choices", "schemes", "reject") if key in decl}}
    if "secret" in decl and not isinstance(decl["secret"], bool):
        raise ConfigError(f"{where} secret", "is not true or false", example="secret = true")
    out["secret"] = decl.get("secret", kind == "secret")
    if kind == "enum" and not out.get("choices"):
        raise ConfigError(where, "is an enum without choices", example='type = "enum", choices = ["a", "b"]')
    if "pattern" in out:
        try:
            re.compile(out["pattern"])
        except re.error as exc:
            raise ConfigError(f"{where} pattern", f"is not a regular expression ({exc})") from None
    out["schemes"] = tuple(s.lower() for s in out.get("schemes", ()))
    return Variable(**out)


def parse_variables(table: Any, *, reserved: Mapping[str, str] | None = None) -> tuple[Variable, ...]:
    """``[tool.dbkit.variables]`` as :class:`Variable` s; a malformed declaration is one ConfigError line.
    ``reserved`` maps dbkit's own variables to their setting names (they cannot be declared again)."""
    if not isinstance(table, Mapping):
        raise ConfigError("[tool.dbkit] variables", "is not a table of tables",
                          example=f"[tool.dbkit.variables.REDIS_URL] {_EXAMPLE}")
    return tuple(_parse_one(name, decl, reserved or {}) for name, decl in table.items())


def read_values(names: Iterable[str], layers: list[tuple[str, Mapping[str, Any]]]) -> dict[str, tuple[Any, str]]:
    """``{name: (value, source)}`` from the first layer (highest precedence first) that sets it; empty is unset."""
    found: dict[str, tuple[Any, str]] = {}
    for name in names:
        for source, values in layers:
            value = values.get(name)
            if value is not None and not (isinstance(value, str) and not value.strip()):  # FOO= means unset
                found[name] = (value, source)
                break
    return found


# --------------------------------------------------------------------- the check


def check_variables(settings) -> VariablesReport:
    """Every declared variable of ``settings`` (:func:`dbkit.config.load_settings`) against its value."""
    checks = []
    for var in settings.variables:
        required = settings.env in var.required
        value, source = settings.variable_values.get(var.name, (None, None))
        common = {"name": var.name, "type": var.type, "required": required, "secret": var.secret}
        if value is None:
            problem = var.line(f"is not set (required when DBKIT_ENV={settings.env})") if required else None
            checks.append(VariableCheck(**common, status="missing" if required else "unset", problem=problem))
            continue
        why = var.problem(value)
        checks.append(VariableCheck(**common, status="invalid" if why else "ok", source=source, value=var.shown(value),
                                    problem=var.line(why, source) if why else None))
    return VariablesReport(env=settings.env, variables=tuple(checks), warnings=_typos(settings))


def _typos(settings) -> tuple[str, ...]:
    """A name in a .env file that nothing reads, close to a declared variable that is unset: a typo."""
    import difflib

    from dbkit.config import FIELDS_BY_ENV  # dbkit's own variables (imported here: config imports this module)

    known = {*FIELDS_BY_ENV, *settings.passwords, "DBKIT_PROJECT_DIR", *(v.name for v in settings.variables)}
    unset = [v.name for v in settings.variables if v.name not in settings.variable_values]
    warnings = []
    for name, source in settings.dotenv_keys:
        if name in known:
            continue
        close = difflib.get_close_matches(name, unset, n=1, cutoff=0.8)
        if close:
            warnings.append(f"{name} in {source} is not read by dbkit or declared: did you mean {close[0]}?")
    return tuple(warnings)


def prod_problems(settings) -> list[str]:
    """What DBKIT_ENV=prod requires of dbkit's settings and is missing (empty elsewhere): TLS to non-local
    hosts, a non-local backup target, passwords for the LOGIN roles."""
    if settings.env != "prod":
        return []
    problems = []
    for name, url in (("DATABASE_URL", settings.database_url), ("DIRECT_DATABASE_URL", settings.direct_database_url)):
        if url is not None and not url.is_local and url.sslmode not in ("require", "verify-ca", "verify-full"):
            problems.append(f"{name} must use TLS (sslmode=require or stricter) for {url.masked}")
    if "://" not in settings.backup_uri or settings.backup_uri.startswith("file://"):
        problems.append(f"DBKIT_BACKUP_URI={settings.backup_uri} is on this machine; prod backups go to s3://…")
    for role in (*settings.role_enforce, *settings.role_bypass, *settings.role_readonly):
        if not settings.password_for(role):
            problems.append(f"{settings.password_variable_of(role)} is not set (the {role} role's password)")
    return problems


@dataclass(frozen=True)
class ConfigReport:
    """``dbkit config check``: dbkit's own settings (``settings``: one line per problem) and the application's
    variables; ``ok`` when there is no problem (warnings, such as a likely typo in a .env file, do not count)."""

    env: str
    settings: tuple[str, ...]
    variables: VariablesReport

    @property
    def problems(self) -> tuple[str, ...]:
        return self.settings + self.variables.problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "env": self.env, "problems": list(self.problems),
                "warnings": list(self.variables.warnings),
                "variables": [v.as_dict() for v in self.variables.variables]}


def check_config(settings) -> ConfigReport:
    """Every problem of ``settings`` (best loaded with ``load_settings(lenient=True)``): malformed settings,
    DATABASE_URL outside dev, DBKIT_ENV=prod's requirements, then the application's variables."""
    problems = list(settings.problems)
    if settings.database_url is None and settings.env != "dev":
        try:
            settings.require_database_url()
        except ConfigError as exc:
            problems.append(exc.message)
    problems += prod_problems(settings)
    return ConfigReport(env=settings.env, settings=tuple(problems), variables=check_variables(settings))
