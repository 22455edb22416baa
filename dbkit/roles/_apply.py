"""``dbkit roles apply``: the model's roles, extra role files, passwords, and tenant isolation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dbkit import _db as db
from dbkit._urls import few
from dbkit.errors import ConfigError, DbkitError, MissingDependency, Refused
from dbkit.roles._common import _connection, _stored_passwords, password_of
from dbkit.roles._model import ATTRIBUTES, model, role_files
from dbkit.roles._scram import encrypt_password, scram_verify
from dbkit.roles._sql import model_statements

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
    #: paths around RLS closed in this database (:func:`dbkit.rls._isolation.harden`)
    hardened: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: objects of the schema given to the owner role (``take_ownership``): "KIND name (was OWNER)"
    handed_over: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.altered or self.password_set or self.hardened or self.handed_over)

    def as_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}


def _refuse_role_changes(conn, settings) -> None:
    """Raise :class:`Refused` (the transaction rolls back) when ``conn``'s transaction changed the server's roles."""
    from dbkit._target import resolve_url

    with db.connect(resolve_url(settings, direct=True), autocommit=True,
                    connect_timeout=settings.connect_timeout) as other:
        changes = db.uncommitted_role_changes(conn, other)
    if changes:
        raise Refused(f"the role model would change the server's roles ({few(changes)}), which every database of "
                      "the server shares: a rehearsal changes none",
                      hint="run `dbkit roles apply` on that server first (`dbkit migrate` applies it anyway), or "
                           "rehearse on a rehearsal server with --change-roles")


def _snapshot(conn, names: list[str]) -> dict[str, tuple]:
    return {r[0]: tuple(r[1:]) for r in conn.execute(_SNAPSHOT_SQL, (names,)).fetchall()}


def apply(settings, conn=None, *, take_ownership: bool = False, keep_server_roles: bool = False) -> ApplyResult:
    """Create or correct the roles of the model and set the LOGIN roles' passwords.

    Idempotent, in one transaction (a failure changes nothing):

    1. the statements generated from the model (:mod:`dbkit.roles._sql`) run: a missing role
       is created, a drifted attribute corrected; then the extra files in ``sql/roles/``;
    2. for each LOGIN role whose password variable (``DBKIT_PASSWORD_<ROLE>`` unless the model
       says otherwise) is set: when the stored verifier (pg_authid, readable by superusers) was
       not made from that password, a fresh SCRAM-SHA-256 verifier made by libpq is sent; the
       password itself is never sent.
       Without pg_authid access the verifier is always sent.  A LOGIN role without the
       variable keeps its current password (a warning); in ``DBKIT_ENV=prod`` that is a
       :class:`ConfigError`, raised before anything is changed (or even connected);
    3. in the connection's database, the paths around RLS are closed
       (:func:`dbkit.rls._isolation.harden`: TimescaleDB chunks in a schema no application
       role may use, ``pg_stats`` revoked from PUBLIC); a step that needs a superuser and
       cannot be done is a warning (``dbkit rls audit`` keeps reporting it).

    ``conn`` is a psycopg connection (one is opened from the settings when None).  ``keep_server_roles``
    (a rehearsal, whose scratch database shares the server's roles): no password is set, and when the model
    would change a role of the server (:func:`dbkit._db.uncommitted_role_changes`) nothing is applied and
    :class:`~dbkit.errors.Refused` names the changes; the database's own part (step 3) is done.
    """
    from psycopg import errors, sql

    roles = model(settings)
    logins = roles.logins()
    missing = [] if keep_server_roles else [d for d in logins if password_of(settings, d) is None]
    if missing and settings.env == "prod":
        first = missing[0].password_env
        others = f" (nor {', '.join(d.password_env for d in missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(first, "is not set" + others, purpose=f"sets the password of the LOGIN role "
                          f"{missing[0].name}; DBKIT_ENV=prod requires one for every LOGIN role (environment or "
                          ".env.prod)", example=f"{first}=<a long random secret>")

    names = roles.names()
    result = ApplyResult()
    if not settings.uses_dev_cluster:  # the embedded dev cluster trusts local connections: no password is used
        for d in missing:
            result.warnings.append(f"{d.name}: {d.password_env} is not set; the role keeps its current password")

    with _connection(settings, conn) as c, c.transaction():
        c.execute("SELECT pg_advisory_xact_lock(%s)", (ROLES_LOCK_KEY,))
        before = _snapshot(c, names)
        current = None
        about = [f"{r.name} ({r.kind})" for r in roles.roles]  # what each statement is about, for the error
        about.insert(1, f"{roles.owner.name} (access for the migrating role)")
        try:
            for role, stmt in zip(about, model_statements(roles), strict=True):
                current = role
                c.execute(stmt)
            for f in role_files(settings):
                current = f"{f.role} ({f.path.name})"
                c.execute(f.sql)
        except errors.InsufficientPrivilege as exc:
            raise MissingDependency(
                f"the connecting role may not create or correct role {current}: {exc.diag.message_primary}",
                hint="connect as a role with CREATEROLE (a superuser for BYPASSRLS roles), "
                "or have a DBA run `dbkit roles apply` once",
            ) from None
        if keep_server_roles:
            _refuse_role_changes(c, settings)
        after = _snapshot(c, names)
        for name in names:
            if name not in before:
                result.created.append(name)
            elif before[name] != after.get(name):
                result.altered.append(name)

        to_set = [] if keep_server_roles else [d for d in logins if d not in missing]
        stored = _stored_passwords(c, [d.name for d in to_set]) if to_set else {}
        if stored is None:
            result.warnings.append("pg_authid is not readable by the connecting role: passwords were set "
                                   "without checking whether they had changed")
        for d in to_set:
            password = password_of(settings, d)
            if stored is not None and scram_verify(password, stored.get(d.name)):
                result.password_unchanged.append(d.name)
                continue
            stmt = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(d.name), sql.Literal(encrypt_password(c, d.name, password)))
            try:
                c.execute(stmt)
            except errors.Error as exc:  # never let the statement (it holds the verifier) into a message
                cls = MissingDependency if isinstance(exc, errors.InsufficientPrivilege) else DbkitError
                raise cls(f"could not set the password of role {d.name}: "
                          f"{exc.diag.message_primary or type(exc).__name__} (SQLSTATE {exc.sqlstate})") from None
            result.password_set.append(d.name)

        from dbkit.rls import _isolation as isolation

        hardened = isolation.harden(c, settings)
        result.hardened.extend(hardened.actions)
        result.warnings.extend(hardened.warnings)
        if take_ownership:  # adopting a project: what the old tool created becomes the owner role's
            from dbkit.roles._handover import hand_over

            result.handed_over.extend(f"{h.kind} {h.name} (was {h.previous_owner})" for h in hand_over(settings, c))
    return result
