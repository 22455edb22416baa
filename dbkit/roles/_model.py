"""The role model, as data: which roles exist, their attributes, where their passwords come
from, and what each kind is granted.  Everything else (the SQL that creates and corrects the
roles, the drift check, the grants revisions make, the RLS matrix's expectations) is derived
from :func:`model`.

Kinds (the reference application's names are the defaults of the ``DBKIT_ROLE_*`` settings):

=========  ==============================================================================
owner      NOLOGIN; owns every table; migrations run as it (``SET ROLE``)
enforce    LOGIN NOBYPASSRLS; what the application connects as; DML on every table,
           SELECT only on the read-only tables
bypass     LOGIN BYPASSRLS; trusted workers; DML on every table
readonly   LOGIN; SELECT on every table, still subject to RLS
=========  ==============================================================================

``[tool.dbkit.roles]`` in pyproject.toml says what differs from these defaults::

    [tool.dbkit.roles]
    read_only_tables = ["tenants"]        # SELECT only for the enforce role

    [tool.dbkit.roles.readonly]
    connection_limit = 20                 # any kind: attributes, connection_limit, password_env
    attributes = "LOGIN NOINHERIT"        # [NO]<ATTRIBUTE> keywords layered over the kind's defaults
    password_env = "GRAFANA_DB_PASSWORD"  # default: DBKIT_PASSWORD_<ROLE NAME>

Files in ``sql/roles/`` remain possible for what the model cannot say (extra grants,
memberships): they run after the model is applied (see :func:`role_files`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbkit.config import password_variable
from dbkit.errors import ConfigError

KINDS = ("owner", "enforce", "bypass", "readonly")
DML = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: Role attribute keyword -> pg_roles column.  ``NO<KEYWORD>`` declares it off.
ATTRIBUTES: dict[str, str] = {
    "LOGIN": "rolcanlogin",
    "SUPERUSER": "rolsuper",
    "CREATEDB": "rolcreatedb",
    "CREATEROLE": "rolcreaterole",
    "REPLICATION": "rolreplication",
    "BYPASSRLS": "rolbypassrls",
    "INHERIT": "rolinherit",
}

_BASE = {"SUPERUSER": False, "CREATEDB": False, "CREATEROLE": False, "REPLICATION": False, "INHERIT": True}
#: kind -> the attributes a role of that kind has (before [tool.dbkit.roles.<kind>] attributes).
KIND_ATTRIBUTES: dict[str, dict[str, bool]] = {
    "owner": {"LOGIN": False, **_BASE, "BYPASSRLS": False},
    "enforce": {"LOGIN": True, **_BASE, "BYPASSRLS": False},
    "bypass": {"LOGIN": True, **_BASE, "BYPASSRLS": True},
    "readonly": {"LOGIN": True, **_BASE, "BYPASSRLS": False},
}
#: kind -> (privileges on every table, privileges on the read-only tables).  The owner owns
#: every table (it has all privileges as owner, nothing is granted to it).
TABLE_GRANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enforce": (DML, ("SELECT",)),
    "bypass": (DML, DML),
    "readonly": (("SELECT",), ("SELECT",)),
}
#: kind -> privileges on the application schema itself.
SCHEMA_GRANTS: dict[str, tuple[str, ...]] = {"enforce": ("USAGE",), "bypass": ("USAGE",), "readonly": ("USAGE",)}

def parse_attributes(text: str, *, where: str = "attributes") -> tuple[dict[str, bool], int | None]:
    """``'LOGIN NOBYPASSRLS CONNECTION LIMIT 5'`` -> ``({"LOGIN": True, "BYPASSRLS": False}, 5)``."""
    tokens = text.upper().split()
    attributes: dict[str, bool] = {}
    limit = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "CONNECTION" and i + 2 < len(tokens) and tokens[i + 1] == "LIMIT":
            try:
                limit = int(tokens[i + 2])
            except ValueError:
                raise ConfigError(where, f"has CONNECTION LIMIT {tokens[i + 2]!r}, not a whole number",
                                  example="CONNECTION LIMIT 20") from None
            i += 3
            continue
        if tok in ATTRIBUTES:
            attributes[tok] = True
        elif tok.startswith("NO") and tok[2:] in ATTRIBUTES:
            attributes[tok[2:]] = False
        else:
            known = ", ".join(f"[NO]{k}" for k in ATTRIBUTES)
            raise ConfigError(where, f"declares {tok!r}, which dbkit cannot check (known: {known}, CONNECTION LIMIT n)",
                              example="attributes = \"LOGIN NOINHERIT\"")
        i += 1
    return attributes, limit


@dataclass(frozen=True)
class Role:
    """One role of the model."""

    kind: str
    name: str
    attributes: Mapping[str, bool]  # "LOGIN" -> True, "BYPASSRLS" -> False, ... (every key of ATTRIBUTES)
    connection_limit: int | None = None
    password_env: str | None = None  # LOGIN roles: the variable holding the password

    @property
    def login(self) -> bool:
        return bool(self.attributes.get("LOGIN", False))

    def attribute_keywords(self) -> list[str]:
        """``["LOGIN", "NOSUPERUSER", ...]`` (only whitelisted keywords: safe to put in SQL)."""
        words = [k if on else f"NO{k}" for k, on in self.attributes.items()]
        if self.connection_limit is not None:
            words.append(f"CONNECTION LIMIT {int(self.connection_limit)}")
        return words


#: The name older code used for a role of the model.
DeclaredRole = Role


@dataclass(frozen=True)
class RoleModel:
    """The roles, by kind, and what the model grants them."""

    roles: Mapping[str, Role]  # kind -> role
    read_only_tables: frozenset[str] = field(default_factory=frozenset)

    def names(self) -> dict[str, str]:
        return {kind: role.name for kind, role in self.roles.items()}

    def logins(self) -> list[Role]:
        return [r for r in self.roles.values() if r.login]

    def expected_grants(self, tables: Iterable[str]) -> dict[str, dict[str, frozenset[str]]]:
        """``{role name: {table: privileges}}`` for every kind the model grants table privileges to."""
        tables = list(tables)
        return {self.roles[kind].name: {t: frozenset(read_only if t in self.read_only_tables else everywhere)
                                         for t in tables}
                for kind, (everywhere, read_only) in TABLE_GRANTS.items() if kind in self.roles}

    def allowed_default_privileges(self) -> dict[str, frozenset[str]]:
        """``{role name: privileges}`` that ``ALTER DEFAULT PRIVILEGES … ON TABLES`` may grant: what the
        model grants the role on *every* table."""
        return {self.roles[k].name: frozenset(a) & frozenset(b) for k, (a, b) in TABLE_GRANTS.items()
                if k in self.roles}

    def table_privileges(self, kind: str, table: str) -> tuple[str, ...]:
        everywhere, read_only = TABLE_GRANTS.get(kind, ((), ()))
        return read_only if table in self.read_only_tables else everywhere


def _kind_config(config: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    value = config.get(kind, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[tool.dbkit.roles.{kind}]", "is not a table", example='connection_limit = 20')
    unknown = set(value) - {"attributes", "connection_limit", "password_env"}
    if unknown:
        raise ConfigError(f"[tool.dbkit.roles.{kind}]", f"has unknown keys {', '.join(sorted(unknown))}",
                          example='attributes = "LOGIN NOINHERIT", connection_limit = 20, password_env = "MY_VAR"')
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def model(settings) -> RoleModel:
    """The role model of the project: names from ``DBKIT_ROLE_*``, the rest from ``[tool.dbkit.roles]``."""
    config: Mapping[str, Any] = getattr(settings, "roles_config", None) or {}
    unknown = set(config) - {*KINDS, "read_only_tables"}
    if unknown:
        raise ConfigError("[tool.dbkit.roles]", f"has unknown keys {', '.join(sorted(unknown))}",
                          example='read_only_tables = ["tenants"]')
    read_only = config.get("read_only_tables", [])
    if not isinstance(read_only, list) or not all(isinstance(t, str) for t in read_only):
        raise ConfigError("[tool.dbkit.roles] read_only_tables", "is not a list of table names",
                          example='read_only_tables = ["tenants"]')
    roles = {}
    for kind in KINDS:
        name = getattr(settings, f"role_{kind}")
        extra = _kind_config(config, kind)
        attributes = dict(KIND_ATTRIBUTES[kind])
        where = f"[tool.dbkit.roles.{kind}] attributes"
        overrides, limit = parse_attributes(str(extra.get("attributes", "")), where=where)
        if kind != "bypass" and overrides.get("BYPASSRLS"):
            raise ConfigError(where, f"gives the {kind} role BYPASSRLS: only the bypass role may have it",
                              example='attributes = "NOINHERIT"')
        if overrides.get("SUPERUSER"):
            raise ConfigError(where, "gives a role SUPERUSER: no role of the model may be a superuser",
                              example='attributes = "NOINHERIT"')
        attributes.update(overrides)
        if "connection_limit" in extra:
            limit = extra["connection_limit"]
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < -1:
                raise ConfigError(f"[tool.dbkit.roles.{kind}] connection_limit", "is not a whole number >= -1",
                                  example="connection_limit = 20")
        password_env = extra.get("password_env")
        if password_env is not None and not (isinstance(password_env, str) and _ENV_NAME.fullmatch(password_env)):
            raise ConfigError(f"[tool.dbkit.roles.{kind}] password_env", "is not an environment variable name",
                              example='password_env = "POSTGRES_USER_RLS_PASS"')
        if attributes["LOGIN"]:
            password_env = password_env or password_variable(name)
        else:
            password_env = None
        roles[kind] = Role(kind, name, attributes, limit, password_env)
    return RoleModel(roles, frozenset(read_only))


# --------------------------------------------------------------------- extra SQL files

_FILE = re.compile(r"^(\d+)_([a-z]+)\.sql$")


@dataclass(frozen=True)
class RoleFile:
    path: Path
    kind: str
    role: str
    sql: str


def roles_dir(settings) -> Path:
    return settings.project_dir / "sql" / "roles"


def render(text: str, role: str) -> str:
    return text.replace("{{role}}", role)


def role_files(settings, directory: Path | None = None) -> list[RoleFile]:
    """Extra SQL for what the model cannot say: ``sql/roles/NN_<kind>.sql`` in name order, with
    ``{{role}}`` replaced by the configured name of that kind (a validated identifier, so the
    substitution cannot inject SQL).  Optional: no directory or no file means none."""
    directory = directory or roles_dir(settings)
    if not directory.is_dir():
        return []
    names = {kind: getattr(settings, f"role_{kind}") for kind in KINDS}
    files = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m or m.group(2) not in KINDS:
            raise ConfigError(
                str(path), f"is not named NN_<kind>.sql with kind one of {', '.join(KINDS)}",
                example="sql/roles/20_enforce.sql",
            )
        kind = m.group(2)
        files.append(RoleFile(path, kind, names[kind], render(path.read_text(), names[kind])))
    return files
