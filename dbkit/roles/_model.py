"""The role model, as data: which roles exist, their attributes, where their passwords come
from, and what each kind is granted.  Everything else (the SQL that creates and corrects the
roles, the drift check, the grants revisions make, the RLS matrix's expectations) is derived
from :func:`model`.

Kinds (the reference application's names are the defaults of the ``DBKIT_ROLE_*`` settings):

=========  ==============================================================================
owner      owns every table; migrations run as it (``SET ROLE``); never has a password.  NOLOGIN,
           except with the timescaledb extension: TimescaleDB runs policies and jobs as the
           hypertable's owner and requires LOGIN (without a password no one can log in as it)
enforce    LOGIN NOBYPASSRLS; what the application connects as; DML on every table,
           SELECT only on the read-only tables (and ``[tool.dbkit.rls] shared_tables``)
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
    tables = { audit_log = [] }           # privileges on these tables instead of the kind's default

Names come from ``DBKIT_ROLE_<KIND>`` (``[tool.dbkit] role_<kind>``): a kind may have several roles
(``role_enforce = ["api", "ingest"]``) and the bypass and readonly kinds none (``"none"``).  With
several roles, ``password_env`` is a table: ``password_env = { api = "API_DB_PASSWORD", ... }``.

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

    @property
    def takes_password(self) -> bool:
        """LOGIN roles other than the owner: the owner never has a password (it may have LOGIN only so
        that TimescaleDB can run its background jobs as it, see :func:`model`)."""
        return self.login and self.kind != "owner"

    def attribute_keywords(self) -> list[str]:
        """``["LOGIN", "NOSUPERUSER", ...]`` (only whitelisted keywords: safe to put in SQL)."""
        words = [k if on else f"NO{k}" for k, on in self.attributes.items()]
        if self.connection_limit is not None:
            words.append(f"CONNECTION LIMIT {int(self.connection_limit)}")
        return words


@dataclass(frozen=True)
class RoleModel:
    """The roles (owner first, then by kind) and what the model grants them.

    Owner and enforce are required; bypass and readonly are optional (``DBKIT_ROLE_BYPASS=none``);
    a kind may have more than one role (``DBKIT_ROLE_ENFORCE=api,ingest``)."""

    roles: tuple[Role, ...]
    read_only_tables: frozenset[str] = field(default_factory=frozenset)
    #: kind -> {table: privileges}: ``[tool.dbkit.roles.<kind>] tables`` (what differs from the kind's default)
    table_overrides: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def of(self, kind: str) -> tuple[Role, ...]:
        """The roles of ``kind``, in the order they were configured (empty for a kind the project has none of)."""
        return tuple(r for r in self.roles if r.kind == kind)

    def first(self, kind: str) -> Role | None:
        """The first role of ``kind`` (the one dbkit uses for that kind's work), or None."""
        return next(iter(self.of(kind)), None)

    @property
    def owner(self) -> Role:
        return self.of("owner")[0]

    def names(self, kind: str | None = None) -> list[str]:
        """The role names (of one kind, or all)."""
        return [r.name for r in self.roles if kind is None or r.kind == kind]

    def logins(self) -> list[Role]:
        """The roles whose password dbkit sets from their variable."""
        return [r for r in self.roles if r.takes_password]

    def expected_grants(self, tables: Iterable[str]) -> dict[str, dict[str, frozenset[str]]]:
        """``{role name: {table: privileges}}`` for every role the model grants table privileges to."""
        tables = list(tables)
        return {role.name: {t: frozenset(self.table_privileges(role.kind, t)) for t in tables}
                for role in self.roles if role.kind in TABLE_GRANTS}

    def allowed_default_privileges(self) -> dict[str, frozenset[str]]:
        """``{role name: privileges}`` that ``ALTER DEFAULT PRIVILEGES … ON TABLES`` may grant: what the
        model grants the role on *every* table."""
        return {role.name: frozenset(TABLE_GRANTS[role.kind][0]).intersection(
                    TABLE_GRANTS[role.kind][1], *self.table_overrides.get(role.kind, {}).values())
                for role in self.roles if role.kind in TABLE_GRANTS}

    def table_privileges(self, kind: str, table: str) -> tuple[str, ...]:
        """What a role of ``kind`` is granted on ``table``: the kind's default (SELECT only on a read-only
        table for the enforce role), unless ``[tool.dbkit.roles.<kind>] tables`` says otherwise."""
        override = self.table_overrides.get(kind, {}).get(table)
        if override is not None:
            return override
        everywhere, read_only = TABLE_GRANTS.get(kind, ((), ()))
        return read_only if table in self.read_only_tables else everywhere

    def grants(self, tables: Iterable[str], schema: str) -> list[dict[str, Any]]:
        """What the model grants, as keyword arguments of ``op.grant``: schema USAGE per kind, then the
        privileges on each table (for a revision's upgrade, and its downgrade with ``op.revoke``)."""
        out: list[dict[str, Any]] = []
        for kind, privileges in SCHEMA_GRANTS.items():
            if self.of(kind):
                out.append(dict(privileges=list(privileges), target=schema, object_type="SCHEMA",
                                roles=self.names(kind)))
        for table in tables:
            for kind in TABLE_GRANTS:
                if self.of(kind) and self.table_privileges(kind, table):
                    out.append(dict(privileges=list(self.table_privileges(kind, table)), target=table,
                                    schema=schema, roles=self.names(kind)))
        return out


def _kind_config(config: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    value = config.get(kind, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[tool.dbkit.roles.{kind}]", "is not a table", example='connection_limit = 20')
    unknown = set(value) - {"attributes", "connection_limit", "password_env", "tables"}
    if unknown:
        raise ConfigError(f"[tool.dbkit.roles.{kind}]", f"has unknown keys {', '.join(sorted(unknown))}",
                          example='attributes = "LOGIN NOINHERIT", connection_limit = 20, password_env = "MY_VAR", '
                                  'tables = { audit_log = ["SELECT"] }')
    return value


def _table_overrides(extra: Mapping[str, Any], kind: str) -> dict[str, tuple[str, ...]]:
    """``tables = { audit_log = ["SELECT"], secrets = [] }``: the kind's privileges on those tables."""
    value = extra.get("tables", {})
    where = f"[tool.dbkit.roles.{kind}] tables"
    example = 'tables = { audit_log = ["SELECT", "INSERT"], api_keys = [] }'
    if value and kind not in TABLE_GRANTS:
        raise ConfigError(where, f"is set for the {kind} role, which owns every table (nothing is granted to it)",
                          example="remove it")
    if not isinstance(value, Mapping):
        raise ConfigError(where, "is not a table of table names to privilege lists", example=example)
    out = {}
    for table, privileges in value.items():
        if not isinstance(privileges, list) or not all(isinstance(p, str) for p in privileges):
            raise ConfigError(f"{where} {table}", "is not a list of privileges", example=example)
        bad = [p for p in privileges if p.upper() not in DML]
        if bad:
            raise ConfigError(f"{where} {table}", f"has {', '.join(bad)}, not one of {', '.join(DML)}",
                              example=example)
        out[table] = tuple(p for p in DML if p in {q.upper() for q in privileges})
    return out


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _password_env(extra: Mapping[str, Any], kind: str, names: tuple[str, ...], name: str) -> str | None:
    """``password_env = "VAR"`` (a kind with one role) or ``password_env = {role = "VAR", ...}``."""
    value = extra.get("password_env")
    where = f"[tool.dbkit.roles.{kind}] password_env"
    example = 'password_env = "POSTGRES_USER_RLS_PASS"'
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise ConfigError(where, f"names {', '.join(sorted(unknown))}, not a {kind} role "
                              f"(the {kind} roles: {', '.join(names)})",
                              example=f'password_env = {{ {names[0]} = "VAR" }}')
        value = value.get(name)
    elif value is not None and len(names) > 1:
        raise ConfigError(where, f"is one variable for {len(names)} {kind} roles",
                          example=f'password_env = {{ {names[0]} = "VAR1", {names[1]} = "VAR2" }}')
    if value is not None and not (isinstance(value, str) and _ENV_NAME.fullmatch(value)):
        raise ConfigError(where, "is not an environment variable name", example=example)
    return value


def _names_of(settings, kind: str) -> tuple[str, ...]:
    value = getattr(settings, f"role_{kind}")
    return (value,) if isinstance(value, str) else tuple(value)


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
    from dbkit.rls._scoped import shared_tables  # every tenant reads them, none changes them

    read_only = [*read_only, *(t for s, t in shared_tables(settings) if s == settings.schema)]
    roles: list[Role] = []
    seen: dict[str, str] = {}
    overrides_by_kind: dict[str, dict[str, tuple[str, ...]]] = {}
    for kind in KINDS:
        names = _names_of(settings, kind)
        if not names and kind in ("owner", "enforce"):
            raise ConfigError(f"DBKIT_ROLE_{kind.upper()}", f"is none, but every project needs an {kind} role",
                              example="app_rls" if kind == "enforce" else "app_owner")
        extra = _kind_config(config, kind)
        if tables := _table_overrides(extra, kind):
            overrides_by_kind[kind] = tables
        attributes = dict(KIND_ATTRIBUTES[kind])
        if kind == "owner" and "timescaledb" in getattr(settings, "extensions", ()):
            # TimescaleDB runs policies and jobs as the hypertable's owner and refuses an owner that cannot
            # log in; the owner never gets a password, so password authentication can never log in as it
            attributes["LOGIN"] = True
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
        for name in names:
            if name in seen:
                raise ConfigError(f"DBKIT_ROLE_{kind.upper()}", f"names {name}, which is already the "
                                  f"{seen[name]} role: one role cannot be of two kinds",
                                  example=f"{name}_{kind}")
            seen[name] = kind
            password_env = _password_env(extra, kind, names, name)
            if kind == "owner" and password_env:
                raise ConfigError(f"[tool.dbkit.roles.{kind}] password_env", "is set, but the owner role never has "
                                  "a password (migrations SET ROLE to it; TimescaleDB's jobs run as it)",
                                  example="remove it")
            login = attributes["LOGIN"] and kind != "owner"
            password_env = (password_env or password_variable(name)) if login else None
            roles.append(Role(kind, name, attributes, limit, password_env))
    return RoleModel(tuple(roles), frozenset(read_only), overrides_by_kind)


# --------------------------------------------------------------------- extra SQL files

_FILE = re.compile(r"^(\d+)_([a-z]+)\.sql$")


@dataclass(frozen=True)
class RoleFile:
    path: Path
    kind: str
    role: str
    sql: str


def role_files(settings) -> list[RoleFile]:
    """Extra SQL for what the model cannot say: ``sql/roles/NN_<kind>.sql`` in name order, with
    ``{{role}}`` replaced by the configured name of that kind (a validated identifier, so the
    substitution cannot inject SQL), once per role of that kind.  Optional: no directory or no
    file means none."""
    directory = settings.project_dir / "sql" / "roles"
    if not directory.is_dir():
        return []
    names = {kind: _names_of(settings, kind) for kind in KINDS}
    files = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m or m.group(2) not in KINDS:
            raise ConfigError(str(path), f"is not named NN_<kind>.sql with kind one of {', '.join(KINDS)}",
                              example="sql/roles/20_enforce.sql")
        kind = m.group(2)
        if not names[kind]:
            raise ConfigError(str(path), f"is for the {kind} role, but the project has none (DBKIT_ROLE_{kind.upper()}"
                              "=none)", example="remove the file or configure the role")
        text = path.read_text()
        files.extend(RoleFile(path, kind, name, text.replace("{{role}}", name)) for name in names[kind])
    return files
