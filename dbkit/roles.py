"""Roles as code: ``sql/roles/NN_<kind>.sql``, one idempotent file per role.

``<kind>`` is one of owner, enforce, bypass, readonly; dbkit replaces
``{{role}}`` in the file with the role name from the settings
(``DBKIT_ROLE_<KIND>``, validated as a plain lower-case identifier, so the
substitution cannot inject SQL).  Passwords never appear in these files.

The files are the single source of truth for each role's attributes: the line
``attrs constant text := '...';`` is what the file applies and what
:func:`check` compares the server with (:func:`declared_roles` parses it).

Public functions (the CLI's ``dbkit roles apply|list|check`` calls them):

* :func:`apply` runs the files (idempotent) and sets the LOGIN roles' passwords
  from ``DBKIT_PASSWORD_<ROLE>``; the password never leaves this process: a
  SCRAM-SHA-256 verifier is computed here (:func:`scram_sha256_verifier`) and only
  the verifier is sent, so neither the server log nor ``ps`` can show the password;
* :func:`list_roles` describes the four configured roles (JSON-ready);
* :func:`check` lists the drift from the declared state: roles, attributes,
  memberships, passwords, and the grants, ownership and default privileges in
  ``DBKIT_SCHEMA`` against :func:`expected_grants` (the model migrations grant).

The migration runner and the ``apply_roles`` migration operation use
:func:`role_files` directly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dbkit.config import password_variable
from dbkit.errors import ConfigError, DbkitError, MissingDependency

__all__ = [
    "KINDS", "RoleFile", "role_files", "render", "role_names",
    "DeclaredRole", "declared_roles",
    "ApplyResult", "apply",
    "RoleInfo", "list_roles",
    "Drift", "check",
    "DML", "READ_ONLY_TABLES", "TABLE_GRANTS", "SCHEMA_GRANTS", "expected_grants", "allowed_default_privileges",
    "scram_sha256_verifier", "scram_verify", "parse_scram_verifier", "saslprep",
]

KINDS = ("owner", "enforce", "bypass", "readonly")
_FILE = re.compile(r"^(\d+)_([a-z]+)\.sql$")


@dataclass(frozen=True)
class RoleFile:
    path: Path
    kind: str
    role: str
    sql: str


def role_names(settings) -> dict[str, str]:
    """``{"owner": "app_owner", "enforce": "app_rls", ...}`` from the settings."""
    return {kind: getattr(settings, f"role_{kind}") for kind in KINDS}


def roles_dir(settings) -> Path:
    return settings.project_dir / "sql" / "roles"


def render(text: str, role: str) -> str:
    return text.replace("{{role}}", role)


def role_files(settings, directory: Path | None = None) -> list[RoleFile]:
    """The role files in name order, rendered with the configured role names."""
    directory = directory or roles_dir(settings)
    names = role_names(settings)
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
    if not files:
        raise ConfigError(str(directory), "holds no role files", example="sql/roles/10_owner.sql")
    return files


# --------------------------------------------------------------------- declared attributes

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
_ATTRS_LINE = re.compile(r"\battrs\s+constant\s+text\s*:=\s*'([^']*)'\s*;", re.IGNORECASE)


@dataclass(frozen=True)
class DeclaredRole:
    """What a role file declares: the ``attrs`` line, parsed."""

    kind: str
    name: str
    path: Path
    attributes: Mapping[str, bool]  # "LOGIN" -> True, "BYPASSRLS" -> False, ...
    connection_limit: int | None = None

    @property
    def login(self) -> bool:
        return bool(self.attributes.get("LOGIN", False))

    def attribute_keywords(self) -> list[str]:
        """``["LOGIN", "NOSUPERUSER", ...]`` (only whitelisted keywords: safe to put in SQL)."""
        words = [k if on else f"NO{k}" for k, on in self.attributes.items()]
        if self.connection_limit is not None:
            words.append(f"CONNECTION LIMIT {int(self.connection_limit)}")
        return words


def parse_attributes(text: str, *, where: str = "attrs") -> tuple[dict[str, bool], int | None]:
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
                              example="attrs constant text := 'LOGIN NOSUPERUSER NOBYPASSRLS INHERIT';")
        i += 1
    return attributes, limit


def declared_roles(settings, directory: Path | None = None) -> dict[str, DeclaredRole]:
    """``{kind: DeclaredRole}`` from the ``attrs constant text := '...'`` line of each role file.

    A kind without a file is absent from the result; a file without that line is a ConfigError.
    """
    declared: dict[str, DeclaredRole] = {}
    for f in role_files(settings, directory):
        m = _ATTRS_LINE.search(f.sql)
        if not m:
            if f.kind in declared:
                continue  # a second file for the same role (e.g. extra grants) need not repeat it
            raise ConfigError(str(f.path), "has no `attrs constant text := '...';` line (dbkit reads the declared "
                              "attributes from it)", example="attrs constant text := 'LOGIN NOSUPERUSER NOBYPASSRLS';")
        if f.kind in declared:
            continue  # the first file that declares the role wins
        attributes, limit = parse_attributes(m.group(1), where=str(f.path))
        declared[f.kind] = DeclaredRole(f.kind, f.role, f.path, attributes, limit)
    return declared


# --------------------------------------------------------------------- SCRAM-SHA-256

SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")

_SASL_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
    stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1,
)


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes for ``password`` (its ``pg_saslprep``, RFC 4013).

    Like PostgreSQL: an ASCII password is used as it is; otherwise non-ASCII spaces
    map to a space, "commonly mapped to nothing" characters are dropped, the result is
    NFKC-normalized and then checked for prohibited, unassigned (Unicode 3.2) and
    mixed-direction characters.  When SASLprep rejects the password (or it is empty
    after mapping, or not valid UTF-8), PostgreSQL uses the original bytes, and so do we.
    Python's ``stringprep`` module provides the RFC 3454 tables; normalization uses
    Python's Unicode database, which agrees with PostgreSQL's for every character
    assigned in Unicode 3.2 (later ones are rejected as unassigned before it matters).
    """
    try:
        raw = password.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the environment (surrogateescape)
        return password.encode("utf-8", "surrogateescape")
    if password.isascii():
        return raw
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in password if not stringprep.in_table_b1(c))
    if not mapped:
        return raw
    prepared = unicodedata.normalize("NFKC", mapped)
    if any(check(c) for c in prepared for check in _SASL_PROHIBITED):
        return raw
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            return raw
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return raw
    return prepared.encode("utf-8")


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    ``SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>``;
    a random 16-byte salt unless one is given.  Sending this instead of the password
    (``ALTER ROLE … PASSWORD '<verifier>'``) is what psql's ``\\password`` does.
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
    stored_key, server_key = _scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def parse_scram_verifier(verifier: str | None) -> tuple[int, bytes, bytes, bytes] | None:
    """``(iterations, salt, stored_key, server_key)``, or None when it is not a SCRAM-SHA-256 verifier."""
    m = _SCRAM.match(verifier or "")
    if not m:
        return None
    try:
        return int(m.group(1)), *(base64.b64decode(g, validate=True) for g in m.group(2, 3, 4))
    except ValueError:
        return None


def scram_verify(password: str, verifier: str | None) -> bool:
    """Whether ``verifier`` (as stored in pg_authid) was made from ``password``."""
    parsed = parse_scram_verifier(verifier)
    if parsed is None:
        return False
    iterations, salt, stored_key, server_key = parsed
    if iterations < 1:
        return False
    mine_stored, mine_server = _scram_keys(password, salt, iterations)
    return hmac.compare_digest(mine_stored, stored_key) and hmac.compare_digest(mine_server, server_key)


# --------------------------------------------------------------------- the grants model

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Tables the application (enforce role) may only read; the trusted workers manage them.
READ_ONLY_TABLES = frozenset({"tenants"})
#: kind -> (privileges on every table, privileges on READ_ONLY_TABLES).  The owner owns
#: every table (it has all privileges as owner, nothing is granted to it).
TABLE_GRANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enforce": (DML, ("SELECT",)),
    "bypass": (DML, DML),
    "readonly": (("SELECT",), ("SELECT",)),
}
#: kind -> privileges on the schema itself.
SCHEMA_GRANTS: dict[str, tuple[str, ...]] = {"enforce": ("USAGE",), "bypass": ("USAGE",), "readonly": ("USAGE",)}
_PRIVILEGE_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
                    "USAGE", "CREATE", "EXECUTE")
_DEFAULT_ACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
#: Roles whose membership reads or writes around table grants.
_POWERFUL_BUILTIN_ROLES = frozenset({"pg_read_all_data", "pg_write_all_data", "pg_execute_server_program",
                                     "pg_write_server_files", "pg_read_server_files"})


def expected_grants(settings, tables: Iterable[str]) -> dict[str, dict[str, frozenset[str]]]:
    """``{role name: {table: privileges}}`` for the enforce, bypass and readonly roles.

    The model migrations/versions/0006_grants.py grants, as data (:data:`TABLE_GRANTS`):
    enforce SELECT on ``tenants`` and SELECT/INSERT/UPDATE/DELETE on every other table;
    bypass SELECT/INSERT/UPDATE/DELETE on all; readonly SELECT on all.  ``tables`` are the
    tables of ``settings.schema`` as read from the catalog.  Any other privilege those
    roles (or PUBLIC) hold on these tables is drift.
    """
    names = role_names(settings)
    tables = list(tables)
    model: dict[str, dict[str, frozenset[str]]] = {}
    for kind, (everywhere, read_only) in TABLE_GRANTS.items():
        model[names[kind]] = {t: frozenset(read_only if t in READ_ONLY_TABLES else everywhere) for t in tables}
    return model


def allowed_default_privileges(settings) -> dict[str, frozenset[str]]:
    """``{role name: privileges}`` that ``ALTER DEFAULT PRIVILEGES … ON TABLES`` may grant.

    Only what the model grants the role on *every* table (enforce SELECT, bypass DML,
    readonly SELECT); default privileges on sequences, functions, types or schemas for
    these roles are not part of the model.
    """
    names = role_names(settings)
    return {names[k]: frozenset(a) & frozenset(b) for k, (a, b) in TABLE_GRANTS.items()}


# --------------------------------------------------------------------- helpers

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def _ident(name: str) -> str:
    """An identifier for the one-line fixes we print (quoted only when it must be)."""
    return name if _PLAIN_IDENT.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def _privs(privileges: Iterable[str]) -> str:
    order = {p: i for i, p in enumerate(_PRIVILEGE_ORDER)}
    return ", ".join(sorted(set(privileges), key=lambda p: (order.get(p, 99), p))) or "(none)"


@contextlib.contextmanager
def _connection(settings, conn) -> Iterator[object]:
    if conn is not None:
        yield conn
        return
    from dbkit import db

    opened = db.connect(db.resolve_url(settings), autocommit=True, connect_timeout=settings.connect_timeout)
    try:
        yield opened
    finally:
        opened.close()


def _can_read_authid(conn) -> bool:
    return bool(conn.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").fetchone()[0])


def _stored_passwords(conn, names: list[str]) -> dict[str, str | None] | None:
    """``{role: rolpassword}`` from pg_authid, or None when it is not readable (not a superuser)."""
    if not _can_read_authid(conn):
        return None
    rows = conn.execute("SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
                        (names,)).fetchall()
    return dict(rows)


def _login_roles(declared: Mapping[str, DeclaredRole]) -> list[DeclaredRole]:
    return [d for d in declared.values() if d.login]


def _missing_password_error(settings, missing: list[DeclaredRole]) -> ConfigError:
    first = password_variable(missing[0].name)
    problem = "is not set"
    if len(missing) > 1:
        problem += f" (nor {', '.join(password_variable(d.name) for d in missing[1:])})"
    return ConfigError(
        first, problem,
        purpose=f"sets the password of the LOGIN role {missing[0].name}; DBKIT_ENV=prod requires one for "
        "every LOGIN role (environment or .env.prod)",
        example=f"{first}=<a long random secret>",
    )


# --------------------------------------------------------------------- apply

#: Advisory lock key for `dbkit roles apply`: the bytes of "dbkitrol" as a signed 64-bit integer.
ROLES_LOCK_KEY = int.from_bytes(b"dbkitrol", "big", signed=True)

_SNAPSHOT_SQL = (
    "SELECT r.rolname, " + ", ".join(f"r.{c}" for c in ATTRIBUTES.values()) + ", r.rolconnlimit, "
    "pg_has_role(session_user, r.oid, 'MEMBER'), has_database_privilege(r.oid, current_database(), 'CREATE') "
    "FROM pg_roles r WHERE r.rolname = ANY(%s)"
)


@dataclass
class ApplyResult:
    """What :func:`apply` did (role names only; never a password or a verifier)."""

    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    password_set: list[str] = field(default_factory=list)
    password_unchanged: list[str] = field(default_factory=list)
    #: paths around RLS closed in this database (:func:`dbkit.rls.isolation.harden`)
    hardened: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.altered or self.password_set or self.hardened)

    def as_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}


def _snapshot(conn, names: list[str]) -> dict[str, tuple]:
    return {r[0]: tuple(r[1:]) for r in conn.execute(_SNAPSHOT_SQL, (names,)).fetchall()}


def _attribute_diffs(row: Mapping[str, object], role: DeclaredRole) -> list[tuple[str, str, str]]:
    """``[(what, expected, actual)]`` between a pg_roles row (column -> value) and the declaration."""
    diffs = []
    for keyword, on in role.attributes.items():
        actual = bool(row[ATTRIBUTES[keyword]])
        if actual != on:
            diffs.append((f"attribute {keyword}", keyword if on else f"NO{keyword}",
                          keyword if actual else f"NO{keyword}"))
    if role.connection_limit is not None and row["rolconnlimit"] != role.connection_limit:
        diffs.append(("attribute CONNECTION LIMIT", str(role.connection_limit), str(row["rolconnlimit"])))
    return diffs


def _role_rows(conn, names: list[str]) -> dict[str, dict[str, object]]:
    cols = ["rolname", *ATTRIBUTES.values(), "rolconnlimit"]
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall()
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}


def apply(settings, conn=None) -> ApplyResult:
    """Create or correct the roles from ``sql/roles/`` and set the LOGIN roles' passwords.

    Idempotent, in one transaction (a failure changes nothing):

    1. every role file runs (creates a missing role, corrects drifted attributes); if a
       role's attributes still differ from its ``attrs`` line, ``ALTER ROLE … WITH <attrs>``;
    2. for each LOGIN role with ``DBKIT_PASSWORD_<ROLE>`` set: when the stored verifier
       (pg_authid, readable by superusers) was not made from that password, a fresh
       SCRAM-SHA-256 verifier computed here is sent; the password itself is never sent.
       Without pg_authid access the verifier is always sent.  A LOGIN role without the
       variable keeps its current password (a warning); in ``DBKIT_ENV=prod`` that is a
       :class:`ConfigError`, raised before anything is changed (or even connected);
    3. in the connection's database, the paths around RLS are closed
       (:func:`dbkit.rls.isolation.harden`: TimescaleDB chunks in a schema no application
       role may use, ``pg_stats`` revoked from PUBLIC); a step that needs a superuser and
       cannot be done is a warning (``dbkit rls audit`` keeps reporting it).

    ``conn`` is a psycopg connection (one is opened from the settings when None).
    """
    from psycopg import errors, sql

    declared = declared_roles(settings)
    logins = _login_roles(declared)
    missing = [d for d in logins if settings.password_for(d.name) is None]
    if missing and settings.env == "prod":
        raise _missing_password_error(settings, missing)

    names = [d.name for d in declared.values()]
    result = ApplyResult()
    if not settings.uses_dev_cluster:  # the embedded dev cluster trusts local connections: no password is used
        for d in missing:
            result.warnings.append(f"{d.name}: {password_variable(d.name)} is not set; "
                                   "the role keeps its current password")

    with _connection(settings, conn) as c, c.transaction():
        c.execute("SELECT pg_advisory_xact_lock(%s)", (ROLES_LOCK_KEY,))
        before = _snapshot(c, names)
        current = None
        try:
            for f in role_files(settings):
                current = f"{f.role} ({f.path.name})"
                c.execute(f.sql)
            rows = _role_rows(c, names)
            for d in declared.values():
                current = f"{d.name} (attributes)"
                if d.name in rows and _attribute_diffs(rows[d.name], d):
                    c.execute(sql.SQL("ALTER ROLE {} WITH {}").format(
                        sql.Identifier(d.name), sql.SQL(" ".join(d.attribute_keywords()))))
        except errors.InsufficientPrivilege as exc:
            raise MissingDependency(
                f"the connecting role may not create or correct role {current}: {exc.diag.message_primary}",
                hint="connect as a role with CREATEROLE (a superuser for BYPASSRLS roles), "
                "or have a DBA run `dbkit roles apply` once",
            ) from None
        after = _snapshot(c, names)
        for name in names:
            if name not in before:
                result.created.append(name)
            elif before[name] != after.get(name):
                result.altered.append(name)

        to_set = [d for d in logins if d not in missing]
        stored = _stored_passwords(c, [d.name for d in to_set]) if to_set else {}
        if stored is None:
            result.warnings.append("pg_authid is not readable by the connecting role: passwords were set "
                                   "without checking whether they had changed")
        for d in to_set:
            password = settings.password_for(d.name)
            if stored is not None and scram_verify(password, stored.get(d.name)):
                result.password_unchanged.append(d.name)
                continue
            stmt = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(d.name), sql.Literal(scram_sha256_verifier(password)))
            try:
                c.execute(stmt)
            except errors.Error as exc:  # never let the statement (it holds the verifier) into a message
                cls = MissingDependency if isinstance(exc, errors.InsufficientPrivilege) else DbkitError
                raise cls(f"could not set the password of role {d.name}: "
                          f"{exc.diag.message_primary or type(exc).__name__} (SQLSTATE {exc.sqlstate})") from None
            result.password_set.append(d.name)

        from dbkit.rls import isolation

        hardened = isolation.harden(c, settings)
        result.hardened.extend(hardened.actions)
        result.warnings.extend(hardened.warnings)
    return result


# --------------------------------------------------------------------- list

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
    """The four configured roles (owner, enforce, bypass, readonly), in that order."""
    names = role_names(settings)
    try:
        declared = declared_roles(settings)
    except ConfigError:
        declared = {}
    with _connection(settings, conn) as c:
        rows = {r[0]: r[1:] for r in c.execute(
            "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolinherit, r.rolcreaterole, "
            "r.rolcreatedb, r.rolreplication, r.rolconnlimit, "
            "ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
            "      WHERE m.member = r.oid ORDER BY 1) "
            "FROM pg_roles r WHERE r.rolname = ANY(%s)", (list(names.values()),)).fetchall()}
        passwords = (dict(c.execute("SELECT rolname, rolpassword IS NOT NULL FROM pg_catalog.pg_authid "
                                    "WHERE rolname = ANY(%s)", (list(names.values()),)).fetchall())
                     if _can_read_authid(c) else None)
    infos = []
    for kind, name in names.items():
        d = declared.get(kind)
        row = rows.get(name)
        login = bool(row[0]) if row else None
        wants_password = d.login if d is not None else bool(login)
        variable = password_variable(name) if wants_password else None
        var_set = (settings.password_for(name) is not None) if variable else None
        if row is None:
            infos.append(RoleInfo(name, kind, False, password_variable=variable, password_variable_set=var_set))
            continue
        infos.append(RoleInfo(
            name, kind, True, login=login, superuser=row[1], bypassrls=row[2], inherit=row[3], createrole=row[4],
            createdb=row[5], replication=row[6], connection_limit=row[7], member_of=list(row[8]),
            has_password=passwords.get(name) if passwords is not None else None,
            password_variable=variable, password_variable_set=var_set,
        ))
    return infos


# --------------------------------------------------------------------- check

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


def _check_roles(settings, c, declared: Mapping[str, DeclaredRole]) -> tuple[list[Drift], set[str]]:
    drifts: list[Drift] = []
    names = role_names(settings)
    rows = _role_rows(c, list(names.values()))
    for kind, name in names.items():
        d = declared.get(kind)
        if name not in rows:
            fix = _APPLY if d is not None else f"add sql/roles/NN_{kind}.sql, then {_APPLY}"
            drifts.append(Drift(name, "role", "exists", "missing", fix))
            continue
        if d is None:
            continue
        for what, expected, actual in _attribute_diffs(rows[name], d):
            drifts.append(Drift(name, what, expected, actual, _APPLY))
    # memberships of the roles that log in: none are declared
    app_roles = [names[k] for k in ("enforce", "bypass", "readonly") if names[k] in rows]
    for member, granted, powerful in c.execute(
        "SELECT m.rolname, g.rolname, (g.rolsuper OR g.rolbypassrls) FROM pg_auth_members am "
        "JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid "
        "WHERE m.rolname = ANY(%s) ORDER BY 1, 2", (app_roles,)
    ).fetchall():
        severe = powerful or granted in names.values() or granted in _POWERFUL_BUILTIN_ROLES
        drifts.append(Drift(member, f"membership in {granted}", "no memberships", f"member of {granted}",
                            f"REVOKE {_ident(granted)} FROM {_ident(member)}",
                            severity="error" if severe else "warn"))
    return drifts, set(rows)


def _check_passwords(settings, c, declared: Mapping[str, DeclaredRole], existing: set[str]) -> list[Drift]:
    drifts = []
    logins = [d for d in _login_roles(declared) if d.name in existing]
    with_password = [d.name for d in logins if settings.password_for(d.name) is not None]
    stored = _stored_passwords(c, with_password) if with_password else {}
    for d in logins:
        variable = password_variable(d.name)
        password = settings.password_for(d.name)
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


def _check_schema(settings, c, existing: set[str]) -> list[Drift]:
    names = role_names(settings)
    owner, schema = names["owner"], settings.schema
    s = _ident(schema)
    row = c.execute("SELECT n.oid, pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE n.nspname = %s",
                    (schema,)).fetchone()
    if row is None:
        return [Drift(owner, f"schema {schema}", "exists", "missing", "run `dbkit migrate`", object=schema)]
    drifts: list[Drift] = []
    nsp_oid, nsp_owner = row
    if nsp_owner != owner:
        drifts.append(Drift(owner, f"owner of schema {schema}", owner, nsp_owner,
                            f"ALTER SCHEMA {s} OWNER TO {_ident(owner)}", object=schema))

    checked = {names[k] for k in TABLE_GRANTS} & existing  # the roles the model grants to

    def grantee_name(oid: int, name: str | None) -> str:
        return "PUBLIC" if oid == 0 else name

    # ---- privileges on the schema
    schema_has: dict[str, set[str]] = {}
    for grantee, gname, priv, grantable in c.execute(
        "SELECT a.grantee, pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable FROM pg_namespace n, "
        "LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a WHERE n.oid = %s", (nsp_oid,)
    ):
        who = grantee_name(grantee, gname)
        if who in checked or who == "PUBLIC":
            schema_has.setdefault(who, set()).add(priv + (" WITH GRANT OPTION" if grantable else ""))
    for kind, privs in SCHEMA_GRANTS.items():
        role = names[kind]
        if role not in checked:
            continue
        have, want = schema_has.get(role, set()), set(privs)
        if want - have:
            drifts.append(Drift(role, f"missing privileges on schema {schema}: {_privs(want - have)}", _privs(want),
                                _privs(have), f"GRANT {_privs(want - have)} ON SCHEMA {s} TO {_ident(role)}",
                                object=schema))
        if have - want:
            extra = {p.removesuffix(" WITH GRANT OPTION") for p in have - want}
            drifts.append(Drift(role, f"extra privileges on schema {schema}: {_privs(have - want)}", _privs(want),
                                _privs(have), f"REVOKE {_privs(extra)} ON SCHEMA {s} FROM {_ident(role)}",
                                object=schema))
    if "CREATE" in schema_has.get("PUBLIC", set()):
        drifts.append(Drift("PUBLIC", f"extra privileges on schema {schema}: CREATE", "(none)",
                            _privs(schema_has["PUBLIC"]), f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC", object=schema))

    # ---- tables: owner and grants
    tables = c.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = %s "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname", (nsp_oid,)).fetchall()
    for table, table_owner in tables:
        if table_owner != owner:
            drifts.append(Drift(owner, f"owner of table {schema}.{table}", owner, table_owner,
                                f"ALTER TABLE {s}.{_ident(table)} OWNER TO {_ident(owner)}",
                                object=f"{schema}.{table}"))
    model = expected_grants(settings, [t for t, _ in tables])
    has: dict[tuple[str, str], set[str]] = {}
    grant_option: dict[tuple[str, str], set[str]] = {}
    for table, grantee, gname, priv, grantable in c.execute(
        "SELECT c.relname, a.grantee, pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable "
        "FROM pg_class c, LATERAL aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a "
        "WHERE c.relnamespace = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition", (nsp_oid,)
    ):
        who = grantee_name(grantee, gname)
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
            if want - got:
                drifts.append(Drift(role, f"missing privileges on table {obj}: {_privs(want - got)}", _privs(want),
                                    _privs(got), f"GRANT {_privs(want - got)} ON {target} TO {grantee}", object=obj))
            if got - want:
                drifts.append(Drift(role, f"extra privileges on table {obj}: {_privs(got - want)}", _privs(want),
                                    _privs(got), f"REVOKE {_privs(got - want)} ON {target} FROM {grantee}", object=obj))
            go = grant_option.get((role, table), set()) & want
            if go:
                drifts.append(Drift(role, f"grant option on table {obj}: {_privs(go)}", "no grant option",
                                    f"{_privs(go)} WITH GRANT OPTION",
                                    f"REVOKE GRANT OPTION FOR {_privs(go)} ON {target} FROM {grantee}", object=obj))

    # ---- default privileges: in the schema (any creator) or global ones of the owner
    allowed = allowed_default_privileges(settings)
    per_entry: dict[tuple[str, bool, str, str], set[str]] = {}
    for creator, in_schema, objtype, grantee, gname, priv in c.execute(
        "SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace <> 0, d.defaclobjtype::text, a.grantee, "
        "pg_get_userbyid(a.grantee), a.privilege_type FROM pg_default_acl d, LATERAL aclexplode(d.defaclacl) a "
        "WHERE d.defaclnamespace = %s OR (d.defaclnamespace = 0 AND pg_get_userbyid(d.defaclrole) = %s)",
        (nsp_oid, owner),
    ):
        who = grantee_name(grantee, gname)
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
    declared = declared_roles(settings)
    with _connection(settings, conn) as c:
        drifts, existing = _check_roles(settings, c, declared)
        drifts += _check_passwords(settings, c, declared, existing)
        drifts += _check_schema(settings, c, existing)
    return drifts
