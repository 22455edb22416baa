"""``dbkit roles list`` and ``dbkit roles check``: the server against the role model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from dbkit.roles._common import _can_read_authid, _connection, _ident, _stored_passwords, password_of
from dbkit.roles._model import ATTRIBUTES, SCHEMA_GRANTS, TABLE_GRANTS, Role, RoleModel, model
from dbkit.roles._scram import scram_verify

_PRIVILEGE_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
                    "USAGE", "CREATE", "EXECUTE")
_DEFAULT_ACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
#: Roles whose membership reads or writes around table grants.
_POWERFUL_BUILTIN_ROLES = frozenset({"pg_read_all_data", "pg_write_all_data", "pg_execute_server_program",
                                     "pg_write_server_files", "pg_read_server_files"})


def _privs(privileges: Iterable[str]) -> str:
    order = {p: i for i, p in enumerate(_PRIVILEGE_ORDER)}
    return ", ".join(sorted(set(privileges), key=lambda p: (order.get(p, 99), p))) or "(none)"


@dataclass(frozen=True)
class RoleInfo:
    """One configured role as the server has it (JSON-ready with :meth:`as_dict`)."""

    name: str
    kind: str
    exists: bool
    login: bool | None = None
    superuser: bool | None = None
    bypassrls: bool | None = None
    inherit: bool | None = None
    createrole: bool | None = None
    createdb: bool | None = None
    replication: bool | None = None
    connection_limit: int | None = None
    member_of: list[str] = field(default_factory=list)
    #: rolpassword IS NOT NULL (pg_authid); None when pg_authid is not readable or the role is missing
    has_password: bool | None = None
    #: where the password comes from (LOGIN roles only); never the value
    password_variable: str | None = None
    password_variable_set: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def list_roles(settings, conn=None) -> list[RoleInfo]:
    """The roles of the model (owner, enforce, bypass, readonly), in that order."""
    declared = model(settings).roles
    names = [d.name for d in declared]
    with _connection(settings, conn) as c:
        rows = {r[0]: r[1:] for r in c.execute(
            "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolinherit, r.rolcreaterole, "
            "r.rolcreatedb, r.rolreplication, r.rolconnlimit, "
            "ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
            "      WHERE m.member = r.oid ORDER BY 1) "
            "FROM pg_roles r WHERE r.rolname = ANY(%s)", (names,)).fetchall()}
        passwords = (dict(c.execute("SELECT rolname, rolpassword IS NOT NULL FROM pg_catalog.pg_authid "
                                    "WHERE rolname = ANY(%s)", (names,)).fetchall())
                     if _can_read_authid(c) else None)
    # a row's columns are RoleInfo's fields from login to member_of, in order; a missing role has none of them.
    # password_env is set for the LOGIN roles that take a password only (model()).
    return [RoleInfo(d.name, d.kind, d.name in rows, *rows.get(d.name, ()), has_password=(passwords or {}).get(d.name),
                     password_variable=d.password_env,
                     password_variable_set=(password_of(settings, d) is not None) if d.password_env else None)
            for d in declared]


@dataclass(frozen=True)
class Drift:
    """One difference between the declared state and the server.

    ``severity`` is "error" (the state is wrong) or "warn" (worth knowing, e.g. a LOGIN
    role without a password variable outside prod).  ``fix`` is a one-line hint: a
    command to run or the SQL statement that removes the drift.
    """

    role: str
    what: str
    expected: str
    actual: str
    fix: str
    severity: str = "error"
    object: str | None = None  # the table or schema concerned, schema-qualified

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.role}: {self.what}: expected {self.expected}, found {self.actual} (fix: {self.fix})"


_APPLY = "run `dbkit roles apply`"


def _check_roles(c, declared: tuple[Role, ...]) -> tuple[list[Drift], set[str]]:
    drifts: list[Drift] = []
    names = [d.name for d in declared]
    cols = ["rolname", *ATTRIBUTES.values(), "rolconnlimit"]
    rows = {r[0]: dict(zip(cols, r, strict=True)) for r in c.execute(
        f"SELECT {', '.join(cols)} FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall()}
    for d in declared:
        row = rows.get(d.name)
        if row is None:
            drifts.append(Drift(d.name, "role", "exists", "missing", _APPLY))
            continue
        for keyword, on in d.attributes.items():
            actual = bool(row[ATTRIBUTES[keyword]])
            if actual != on:
                drifts.append(Drift(d.name, f"attribute {keyword}", keyword if on else f"NO{keyword}",
                                    keyword if actual else f"NO{keyword}", _APPLY))
        if d.connection_limit is not None and row["rolconnlimit"] != d.connection_limit:
            drifts.append(Drift(d.name, "attribute CONNECTION LIMIT", str(d.connection_limit),
                                str(row["rolconnlimit"]), _APPLY))
    # memberships of the roles that log in: none are declared
    app_roles = [d.name for d in declared if d.kind != "owner" and d.name in rows]
    for member, granted, powerful in c.execute(
        "SELECT m.rolname, g.rolname, (g.rolsuper OR g.rolbypassrls) FROM pg_auth_members am "
        "JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid "
        "WHERE m.rolname = ANY(%s) ORDER BY 1, 2", (app_roles,)
    ).fetchall():
        severe = powerful or granted in names or granted in _POWERFUL_BUILTIN_ROLES
        drifts.append(Drift(member, f"membership in {granted}", "no memberships", f"member of {granted}",
                            f"REVOKE {_ident(granted)} FROM {_ident(member)}",
                            severity="error" if severe else "warn"))
    return drifts, set(rows)


def _check_passwords(settings, c, declared: tuple[Role, ...], existing: set[str]) -> list[Drift]:
    passwordless = [d.name for d in declared if d.login and not d.takes_password and d.name in existing]
    drifts = [Drift(name, "password", "none (the owner logs in only for TimescaleDB's jobs)", "a password", _APPLY)
              for name, stored in ((_stored_passwords(c, passwordless) or {}) if passwordless else {}).items()
              if stored is not None]
    logins = [d for d in declared if d.takes_password and d.name in existing]
    with_password = [d.name for d in logins if password_of(settings, d) is not None]
    stored = _stored_passwords(c, with_password) if with_password else {}
    for d in logins:
        variable = d.password_env
        password = password_of(settings, d)
        if password is None:
            if settings.uses_dev_cluster:  # trust authentication: there is no password to check
                continue
            drifts.append(Drift(d.name, "password variable", f"{variable} set", "not set",
                                f"set {variable} (environment or .env), then {_APPLY}",
                                severity="error" if settings.env == "prod" else "warn"))
        elif stored is not None:
            current = stored.get(d.name)
            if current is None:
                drifts.append(Drift(d.name, "password", f"set from {variable}", "no password", _APPLY))
            elif not scram_verify(password, current):
                drifts.append(Drift(d.name, "password", f"SCRAM-SHA-256 verifier of {variable}",
                                    "a different password" if current.startswith("SCRAM-SHA-256$")
                                    else "a password not stored as SCRAM-SHA-256", _APPLY))
    return drifts


def _grant_drifts(role: str, grantee: str, what: str, on: str, want: set[str], have: set[str], missing: set[str],
                  obj: str) -> list[Drift]:
    """The missing and the extra privileges of ``role`` on ``what`` (``on``: how GRANT and REVOKE name it)."""
    drifts = []
    if missing:
        drifts.append(Drift(role, f"missing privileges on {what}: {_privs(missing)}", _privs(want), _privs(have),
                            f"GRANT {_privs(missing)} ON {on} TO {grantee}", object=obj))
    if have - want:
        revoke = {p.removesuffix(" WITH GRANT OPTION") for p in have - want}
        drifts.append(Drift(role, f"extra privileges on {what}: {_privs(have - want)}", _privs(want), _privs(have),
                            f"REVOKE {_privs(revoke)} ON {on} FROM {grantee}", object=obj))
    return drifts


def _check_schema(settings, c, existing: set[str], roles: RoleModel) -> list[Drift]:
    owner, schema = roles.owner.name, settings.schema
    s = _ident(schema)
    row = c.execute("SELECT n.oid, pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE n.nspname = %s",
                    (schema,)).fetchone()
    if row is None:
        return [Drift(owner, f"schema {schema}", "exists", "missing", "run `dbkit migrate`", object=schema)]
    drifts: list[Drift] = []
    nsp_oid, nsp_owner = row
    if schema == "public" and nsp_owner != owner:
        # public belongs to the database (pg_database_owner); the owner role needs CREATE in it, which
        # PostgreSQL 15 no longer gives PUBLIC (the migrate preflight grants it)
        missing = {p for p in ("USAGE", "CREATE") if owner in existing and not c.execute(
            "SELECT has_schema_privilege(%s, %s, %s)", (owner, schema, p)).fetchone()[0]}
        drifts += _grant_drifts(owner, _ident(owner), f"schema {schema}", f"SCHEMA {s}", {"USAGE", "CREATE"},
                                {"USAGE", "CREATE"} - missing, missing, schema)
    elif nsp_owner != owner:
        drifts.append(Drift(owner, f"owner of schema {schema}", owner, nsp_owner,
                            f"ALTER SCHEMA {s} OWNER TO {_ident(owner)}", object=schema))

    checked = {r.name for r in roles.roles if r.kind in TABLE_GRANTS} & existing  # the roles the model grants to
    who_sql = "CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"  # grantee 0: PUBLIC
    # ---- privileges on the schema
    schema_has: dict[str, set[str]] = {}
    for who, priv, grantable in c.execute(
        f"SELECT {who_sql}, a.privilege_type, a.is_grantable FROM pg_namespace n, "
        "LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a WHERE n.oid = %s", (nsp_oid,)
    ):
        if who in checked or who == "PUBLIC":
            schema_has.setdefault(who, set()).add(priv + (" WITH GRANT OPTION" if grantable else ""))
    for role, privs in ((r.name, SCHEMA_GRANTS[r.kind]) for r in roles.roles
                        if r.kind in SCHEMA_GRANTS and r.name in checked):
        have, want = schema_has.get(role, set()), set(privs)
        missing = want - have - schema_has.get("PUBLIC", set())  # what PUBLIC has (USAGE on public), every role has
        drifts += _grant_drifts(role, _ident(role), f"schema {schema}", f"SCHEMA {s}", want, have, missing, schema)
    if "CREATE" in schema_has.get("PUBLIC", set()):
        drifts.append(Drift("PUBLIC", f"extra privileges on schema {schema}: CREATE", "(none)",
                            _privs(schema_has["PUBLIC"]), f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC", object=schema))

    # ---- tables: owner and grants
    # the application's tables: not an extension's, not Alembic's version table
    version_table = (settings.version_table, settings.version_table_schema)
    tables = [(t, o) for t, o in c.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = %s "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND NOT EXISTS (SELECT FROM pg_depend d "
        "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') ORDER BY c.relname",
        (nsp_oid,)).fetchall() if (t, schema) != version_table]
    for table, table_owner in tables:
        if table_owner != owner:
            drifts.append(Drift(owner, f"owner of table {schema}.{table}", owner, table_owner,
                                f"ALTER TABLE {s}.{_ident(table)} OWNER TO {_ident(owner)}",
                                object=f"{schema}.{table}"))
    model = roles.expected_grants([t for t, _ in tables])
    has: dict[tuple[str, str], set[str]] = {}
    grant_option: dict[tuple[str, str], set[str]] = {}
    for table, who, priv, grantable in c.execute(
        f"SELECT c.relname, {who_sql}, a.privilege_type, a.is_grantable "
        "FROM pg_class c, LATERAL aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a "
        "WHERE c.relnamespace = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition", (nsp_oid,)
    ):
        if who in checked or who == "PUBLIC":
            has.setdefault((who, table), set()).add(priv)
            if grantable:
                grant_option.setdefault((who, table), set()).add(priv)
    for table, _ in tables:
        obj = f"{schema}.{table}"
        target = f"{s}.{_ident(table)}"
        for role in sorted(checked | {"PUBLIC"}):
            want = set(model.get(role, {}).get(table, frozenset()))
            got = has.get((role, table), set())
            grantee = role if role == "PUBLIC" else _ident(role)
            drifts += _grant_drifts(role, grantee, f"table {obj}", target, want, got, want - got, obj)
            go = grant_option.get((role, table), set()) & want
            if go:
                drifts.append(Drift(role, f"grant option on table {obj}: {_privs(go)}", "no grant option",
                                    f"{_privs(go)} WITH GRANT OPTION",
                                    f"REVOKE GRANT OPTION FOR {_privs(go)} ON {target} FROM {grantee}", object=obj))

    # ---- default privileges: in the schema (any creator) or global ones of the owner
    allowed = roles.allowed_default_privileges()
    per_entry: dict[tuple[str, bool, str, str], set[str]] = {}
    for creator, in_schema, objtype, who, priv in c.execute(
        f"SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace <> 0, d.defaclobjtype::text, {who_sql}, "
        "a.privilege_type FROM pg_default_acl d, LATERAL aclexplode(d.defaclacl) a "
        "WHERE d.defaclnamespace = %s OR (d.defaclnamespace = 0 AND pg_get_userbyid(d.defaclrole) = %s)",
        (nsp_oid, owner),
    ):
        if who not in checked:
            continue
        if objtype == "r" and priv in allowed.get(who, frozenset()):
            continue
        per_entry.setdefault((creator, in_schema, objtype, who), set()).add(priv)
    for (creator, in_schema, objtype, who), privs in sorted(per_entry.items()):
        objects = _DEFAULT_ACL_OBJECTS.get(objtype, objtype)
        where = f" IN SCHEMA {s}" if in_schema else ""
        scope = f"in schema {schema}" if in_schema else "in every schema"
        expected = _privs(allowed.get(who, ())) if objtype == "r" else "(none)"
        drifts.append(Drift(
            who, f"default privileges on {objects} created by {creator} {scope}: {_privs(privs)}", expected,
            _privs(privs),
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(creator)}{where} REVOKE {_privs(privs)} ON {objects} "
            f"FROM {_ident(who)}", object=schema,
        ))
    return drifts


def check(settings, conn=None) -> list[Drift]:
    """The drift from the declared state; an empty list means clean.

    * roles: a missing role, an attribute that differs from the role file's ``attrs``
      line, a membership of the enforce/bypass/readonly roles (none is declared; "error"
      when it grants another configured role, a superuser/BYPASSRLS role or a
      pg_read/write_all_data-like role, else "warn");
    * passwords: a LOGIN role without ``DBKIT_PASSWORD_<ROLE>`` ("warn"; "error" in prod);
      with the variable set and pg_authid readable, a stored password that is not that one;
    * ``settings.schema``: it exists and the owner role owns it and every table in it;
      the enforce/bypass/readonly roles hold exactly :func:`expected_grants` on each table
      (and USAGE on the schema); PUBLIC holds nothing on the tables (nor CREATE on the
      schema); no default privileges grant these roles more than
      :func:`allowed_default_privileges`.

    Privileges of other roles, column privileges, views and partitions (reached through
    their parent) are not checked.
    """
    roles = model(settings)
    with _connection(settings, conn) as c:
        drifts, existing = _check_roles(c, roles.roles)
        drifts += _check_passwords(settings, c, roles.roles, existing)
        drifts += _check_schema(settings, c, existing, roles)
    return drifts
