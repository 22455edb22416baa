"""Row-level security operations: enable/disable (FORCE), policies."""

from __future__ import annotations

from collections.abc import Sequence

from alembic.ddl.postgresql import PostgresqlImpl
from alembic.operations import MigrateOperation, Operations
from sqlalchemy import ForeignKeyConstraint, text

from dbkit.migrate import settings as dbkit_settings
from dbkit.migrate._ops_common import (
    _execute,
    _kept,
    _q,
    _qualified,
    _role_specs,
    _run_as_session_user,
    quote_name,
    role_list,
    roles_in_use,
)

COMMANDS = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE")


@Operations.register_operation("enable_rls")
class EnableRLSOp(MigrateOperation):
    """Enable row-level security on a table; ``force=True`` (default) applies it to the
    table owner too, so nothing but BYPASSRLS roles reads around the policies.

    Example::

        op.enable_rls("documents", schema="app")
    """

    def __init__(self, table_name: str, schema: str | None = None, force: bool = True) -> None:
        self.table_name, self.schema, self.force = table_name, schema, force

    @classmethod
    def enable_rls(cls, operations, table_name: str, schema: str | None = None, force: bool = True):
        return operations.invoke(cls(table_name, schema, force))

    def reverse(self) -> DisableRLSOp:
        return DisableRLSOp(self.table_name, self.schema, self.force)


@Operations.register_operation("disable_rls")
class DisableRLSOp(EnableRLSOp):
    """Disable row-level security on a table (and ``NO FORCE`` it when ``force=True``).

    Example::

        op.disable_rls("documents", schema="app")
    """

    @classmethod
    def disable_rls(cls, operations, table_name: str, schema: str | None = None, force: bool = True):
        return operations.invoke(cls(table_name, schema, force))

    def reverse(self) -> EnableRLSOp:
        return EnableRLSOp(self.table_name, self.schema, self.force)


@Operations.implementation_for(EnableRLSOp)
def _enable_rls(operations, op: EnableRLSOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)
    _execute(operations, f"ALTER TABLE {rel} ENABLE ROW LEVEL SECURITY")
    if op.force:
        _execute(operations, f"ALTER TABLE {rel} FORCE ROW LEVEL SECURITY")


@Operations.implementation_for(DisableRLSOp)
def _disable_rls(operations, op: DisableRLSOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)
    if op.force:
        _execute(operations, f"ALTER TABLE {rel} NO FORCE ROW LEVEL SECURITY")
    _execute(operations, f"ALTER TABLE {rel} DISABLE ROW LEVEL SECURITY")


@Operations.register_operation("create_policy")
class CreatePolicyOp(MigrateOperation):
    """Create a row-level security policy.

    ``command``: ALL, SELECT, INSERT, UPDATE or DELETE.  ``roles``: role names
    (default PUBLIC).  ``using`` filters visible/affected rows; ``with_check``
    validates new rows.  ``permissive=False`` makes a RESTRICTIVE policy.
    Wrap settings in a sub-select so PostgreSQL evaluates them once per query.  ``roles`` may hold
    tuples (``settings.role_enforce``); an empty list (a kind the project has no role of) creates nothing.

    Example::

        op.create_policy(
            "documents_select", "documents", schema="app", command="SELECT", roles=["app_rls"],
            using="tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)",
        )
    """

    def __init__(self, policy_name: str, table_name: str, schema: str | None = None, command: str = "ALL",
                 roles: Sequence[str] = ("PUBLIC",), using: str | None = None, with_check: str | None = None,
                 permissive: bool = True) -> None:
        command = command.upper()
        if command not in COMMANDS:
            raise ValueError(f"policy command must be one of {', '.join(COMMANDS)}, not {command!r}")
        if command == "INSERT" and using:
            raise ValueError("an INSERT policy takes only with_check, not using")
        if command in ("SELECT", "DELETE") and with_check:
            raise ValueError(f"a {command} policy takes only using, not with_check")
        self.policy_name, self.table_name, self.schema, self.command = policy_name, table_name, schema, command
        self.roles, self.using, self.with_check, self.permissive = role_list(roles), using, with_check, permissive

    @classmethod
    def create_policy(cls, operations, policy_name: str, table_name: str, schema: str | None = None,
                      command: str = "ALL", roles: Sequence[str] = ("PUBLIC",), using: str | None = None,
                      with_check: str | None = None, permissive: bool = True):
        return operations.invoke(cls(policy_name, table_name, schema, command, roles, using, with_check, permissive))

    def reverse(self) -> DropPolicyOp:
        return DropPolicyOp(self.policy_name, self.table_name, self.schema, self.command, self.roles, self.using,
                            self.with_check, self.permissive)


@Operations.register_operation("drop_policy")
class DropPolicyOp(MigrateOperation):
    """Drop a row-level security policy.  Pass the original definition too if the
    drop must be reversible (``reverse()`` recreates it).

    Example::

        op.drop_policy("documents_select", "documents", schema="app")
    """

    def __init__(self, policy_name: str, table_name: str, schema: str | None = None, command: str = "ALL",
                 roles: Sequence[str] = ("PUBLIC",), using: str | None = None, with_check: str | None = None,
                 permissive: bool = True, if_exists: bool = True) -> None:
        self.policy_name, self.table_name, self.schema, self.command = policy_name, table_name, schema, command
        self.roles, self.using, self.with_check, self.permissive = role_list(roles), using, with_check, permissive
        self.if_exists = if_exists

    @classmethod
    def drop_policy(cls, operations, policy_name: str, table_name: str, schema: str | None = None, **definition):
        return operations.invoke(cls(policy_name, table_name, schema, **definition))

    def reverse(self) -> CreatePolicyOp:
        if self.using is None and self.with_check is None:
            raise ValueError(f"cannot reverse drop_policy({self.policy_name!r}) without its using/with_check")
        return CreatePolicyOp(self.policy_name, self.table_name, self.schema, self.command, self.roles,
                              self.using, self.with_check, self.permissive)


@Operations.implementation_for(CreatePolicyOp)
def _create_policy(operations, op: CreatePolicyOp) -> None:
    if not op.roles:  # roles of a kind the project has none of: no policy, so no access (fail closed)
        return
    roles = _role_specs(operations, op.roles)
    stmt = (f"CREATE POLICY {_q(operations, op.policy_name)} ON {_qualified(operations, op.table_name, op.schema)} "
            f"AS {'PERMISSIVE' if op.permissive else 'RESTRICTIVE'} FOR {op.command} TO {roles}")
    if op.using:
        stmt += f" USING ({op.using})"
    if op.with_check:
        stmt += f" WITH CHECK ({op.with_check})"
    _execute(operations, stmt)  # a colon in USING/WITH CHECK is SQL, not a bind parameter


@Operations.implementation_for(DropPolicyOp)
def _drop_policy(operations, op: DropPolicyOp) -> None:
    _execute(operations, f"DROP POLICY {'IF EXISTS ' if op.if_exists else ''}{_q(operations, op.policy_name)} "
                       f"ON {_qualified(operations, op.table_name, op.schema)}")


@Operations.register_operation("create_scoped_view")
class CreateScopedViewOp(MigrateOperation):
    """A tenant-scoped view: the isolation mode for tables that cannot have RLS (a hypertable with
    compression, a continuous aggregate).  The application reads and writes through the view; the
    table itself is granted to no application role (only the owner and bypass roles reach it)::

        CREATE VIEW app.events_scoped WITH (security_barrier) AS
          SELECT * FROM app.events WHERE tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)
          WITH CASCADED CHECK OPTION

    The filter is the RLS model's predicate (``dbkit.rls.Claims.predicate``; ``owner="user"`` for rows per
    user); ``security_barrier`` keeps caller-supplied functions from seeing rows before the filter; the
    check option rejects a written row of another tenant (SQLSTATE 44000).  ``updatable=False`` only for a
    source PostgreSQL cannot write through (a real-time continuous aggregate, ``materialized_only=False``): a
    materialized-only aggregate (TimescaleDB's default) is a simple view, so it keeps the check option.
    ``dbkit rls audit`` accepts a view that is exactly this (same definition as the one built from the
    configured model) and nothing looser.

    Example::

        op.create_scoped_view("events_scoped", "events", schema="app", column="tenant_id")
    """

    def __init__(self, view_name: str, source: str, schema: str | None = None, column: str = "tenant_id",
                 owner: str = "tenant", cast: str | None = None, updatable: bool = True,
                 source_schema: str | None = None) -> None:
        self.view_name, self.source, self.schema, self.column = view_name, source, schema, column
        self.owner, self.cast, self.updatable, self.source_schema = owner, cast, updatable, source_schema

    @classmethod
    def create_scoped_view(cls, operations, view_name: str, source: str, schema: str | None = None,
                           column: str = "tenant_id", owner: str = "tenant", cast: str | None = None,
                           updatable: bool = True, source_schema: str | None = None):
        return operations.invoke(cls(view_name, source, schema, column, owner, cast, updatable, source_schema))

    def reverse(self) -> DropScopedViewOp:
        return DropScopedViewOp(self.view_name, self.schema, create=self)


@Operations.register_operation("drop_scoped_view")
class DropScopedViewOp(MigrateOperation):
    """Drop a tenant-scoped view (``reverse()`` recreates it when the original definition is given).

    Example::

        op.drop_scoped_view("events_scoped", schema="app")
    """

    def __init__(self, view_name: str, schema: str | None = None, create: CreateScopedViewOp | None = None) -> None:
        self.view_name, self.schema, self.create = view_name, schema, create

    @classmethod
    def drop_scoped_view(cls, operations, view_name: str, schema: str | None = None):
        return operations.invoke(cls(view_name, schema))

    def reverse(self) -> CreateScopedViewOp:
        return _kept(self.create, f"cannot reverse drop_scoped_view({self.view_name!r}) without its definition")


def _column_type(operations, op: CreateScopedViewOp) -> str:
    if op.cast or operations.migration_context.as_sql:
        return op.cast or "uuid"
    row = operations.migration_context.connection.exec_driver_sql(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass(%(rel)s) "
        "AND a.attname = %(col)s AND NOT a.attisdropped",
        {"rel": _qualified(operations, op.source, op.source_schema or op.schema), "col": op.column}).first()
    if row is None:
        raise ValueError(f"create_scoped_view: {op.source} has no column {op.column!r}")
    return row[0]


@Operations.implementation_for(CreateScopedViewOp)
def _create_scoped_view(operations, op: CreateScopedViewOp) -> None:
    from dbkit.rls import claims
    from dbkit.rls._scoped import scoped_view_sql

    predicate = claims(dbkit_settings(operations)).predicate(op.owner, _column_type(operations, op))
    _execute(operations, scoped_view_sql(lambda n: _q(operations, n), op.view_name, op.source, op.schema, op.column,
                                       predicate, op.updatable, op.source_schema))


@Operations.implementation_for(DropScopedViewOp)
def _drop_scoped_view(operations, op: DropScopedViewOp) -> None:
    _execute(operations, f"DROP VIEW IF EXISTS {_qualified(operations, op.view_name, op.schema)}")


@Operations.register_operation("execute_unfiltered")
class ExecuteUnfilteredOp(MigrateOperation):
    """Run a statement that must see every row of FORCE RLS tables as the connecting role, which must
    bypass row-level security (a superuser or BYPASSRLS): a backfill, ``VALIDATE CONSTRAINT`` or a
    validated ``ADD CONSTRAINT … FOREIGN KEY``.

    Revisions run as the owner role with ``row_security = off``, so such a statement fails there ("query
    would be affected by row-level security policy"; as the owner it would otherwise see no row, and a
    foreign key would be validated against no row).  The locks stay those of the statement (un-forcing
    the table instead takes ACCESS EXCLUSIVE).  Not for creating objects: they would belong to the
    connecting role.  It has no ``reverse()``, like ``op.execute``.

    Example::

        op.execute_unfiltered("UPDATE app.documents SET lang = 'en' WHERE lang IS NULL")
        op.execute_unfiltered("ALTER TABLE app.audit_log VALIDATE CONSTRAINT audit_log_target_fkey")
    """

    def __init__(self, sqltext) -> None:
        self.sqltext = sqltext

    @classmethod
    def execute_unfiltered(cls, operations, sqltext):
        return operations.invoke(cls(sqltext))


@Operations.implementation_for(ExecuteUnfilteredOp)
def _execute_unfiltered(operations, op: ExecuteUnfilteredOp) -> None:
    ctx = operations.migration_context
    if not ctx.as_sql:
        _, user, bypass = roles_in_use(ctx.connection)
        if not bypass:
            raise ValueError(f"op.execute_unfiltered needs a connecting role that bypasses row-level security (a "
                             f"superuser or BYPASSRLS), and {user} does not: run this migration as such a role, or "
                             "un-force the table around the statement (ALTER TABLE … NO FORCE ROW LEVEL SECURITY, "
                             "then FORCE ROW LEVEL SECURITY, in the same revision)")
    # a string is read as op.execute reads it (SQLAlchemy text(): ``:name`` is a bind parameter)
    _run_as_session_user(operations, [text(op.sqltext) if isinstance(op.sqltext, str) else op.sqltext])


class _PostgresqlImpl(PostgresqlImpl):
    """Alembic's PostgreSQL implementation with one change for dbkit's rails: a validated foreign key
    (``op.create_foreign_key``, a ``ForeignKey`` in ``op.add_column``) is added as the connecting role when
    that role bypasses row-level security.  As the owner role, PostgreSQL would validate it against the rows
    the policies show (none, under FORCE) and, with ``row_security = off``, refuses to.  ``NOT VALID``
    foreign keys and every other constraint are added as they are.  Registered for the ``postgresql`` dialect
    when revisions run (importing :mod:`dbkit.migrate._ops`)."""

    __dialect__ = "postgresql"

    def add_constraint(self, const, **kw) -> None:
        owner = None  # the role revisions run as, when the connecting role is another one that bypasses RLS
        if isinstance(const, ForeignKeyConstraint) and not const.dialect_options["postgresql"].get("not_valid"):
            if self.as_sql:  # the settings' owner role; the script is applied by the role that made the extensions
                config = dbkit_settings()
                owner = config.role_owner if config.migrate_set_role else None
            else:
                current, session, bypass = roles_in_use(self.connection)
                owner = current if current != session and bypass else None
        if owner is None:
            return super().add_constraint(const, **kw)
        self._exec("SET ROLE NONE")
        super().add_constraint(const, **kw)
        self._exec(f"SET ROLE {quote_name(self.dialect, owner)}")
