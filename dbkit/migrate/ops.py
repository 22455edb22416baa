"""PostgreSQL-aware Alembic operations, registered with Alembic's Operations API.

Importing this module (``import dbkit.migrate``) makes them available as
``op.<name>`` in revisions.  Each operation has a ``reverse()`` so that
autogenerate-style tooling and ``downgrade()`` bodies can be derived.

=========================================  ==========================================
``op.create_extension("vector")``          ``op.drop_extension("vector")``
``op.create_hypertable("events", "time")`` ``op.revert_hypertable("events")``
``op.enable_rls("documents")``             ``op.disable_rls("documents")``
``op.create_policy(...)``                  ``op.drop_policy(...)``
``op.create_index_concurrently(...)``      ``op.drop_index_concurrently(...)``
``op.create_vector_index(...)``            ``op.drop_index_concurrently(...)``
``op.grant(["SELECT"], "documents", ...)`` ``op.revoke(...)``
``op.apply_roles()``                       ``op.drop_roles()``
=========================================  ==========================================

Extension and role statements run as the *session* user (the role that
connected), even while the migration runs as the owner role: creating an
untrusted extension such as pgvector or a role needs privileges the owner
does not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations

from dbkit.migrate import settings as dbkit_settings

__all__ = [
    "CreateExtensionOp", "DropExtensionOp", "CreateHypertableOp", "RevertHypertableOp",
    "EnableRLSOp", "DisableRLSOp", "CreatePolicyOp", "DropPolicyOp",
    "CreateIndexConcurrentlyOp", "DropIndexConcurrentlyOp", "CreateVectorIndexOp",
    "GrantOp", "RevokeOp", "ApplyRolesOp", "DropRolesOp",
]

COMMANDS = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE")
VECTOR_METHODS = ("hnsw", "ivfflat")


# --------------------------------------------------------------------- helpers

def _q(operations: Operations, name: str) -> str:
    return operations.migration_context.dialect.identifier_preparer.quote(name)


def _qualified(operations: Operations, name: str, schema: str | None) -> str:
    return f"{_q(operations, schema)}.{_q(operations, name)}" if schema else _q(operations, name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _run_as_session_user(operations: Operations, statements: Iterable[str]) -> None:
    """Run statements as the session (connecting) user, then return to the current role.

    Online, ``SET ROLE NONE`` switches to the session user and ``SET ROLE`` switches
    back; both are transactional, so a failure rolls the switch back with the DDL.
    Offline (``--sql``) the same switch to and from the owner role is written out.
    """
    ctx = operations.migration_context
    if ctx.as_sql:
        settings = dbkit_settings(operations)
        if settings.migrate_set_role:
            operations.execute("SET ROLE NONE")
        for stmt in statements:
            operations.execute(stmt)
        if settings.migrate_set_role:
            operations.execute(f"SET ROLE {_q(operations, settings.role_owner)}")
        return
    current, session = ctx.connection.exec_driver_sql("SELECT current_user, session_user").one()
    switch = current != session
    if switch:
        operations.execute("SET ROLE NONE")
    for stmt in statements:
        operations.execute(stmt)
    if switch:  # back to the role we were, unless a statement above dropped it
        still_there = ctx.connection.exec_driver_sql(
            "SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": current}).first()
        if still_there:
            operations.execute(f"SET ROLE {_q(operations, current)}")


# --------------------------------------------------------------------- extensions

@Operations.register_operation("create_extension")
class CreateExtensionOp(MigrateOperation):
    """Create a PostgreSQL extension if it is not there yet.

    Example::

        op.create_extension("vector")
        op.create_extension("pgcrypto", schema="public")
    """

    def __init__(self, name: str, schema: str | None = None, if_not_exists: bool = True) -> None:
        self.name, self.schema, self.if_not_exists = name, schema, if_not_exists

    @classmethod
    def create_extension(cls, operations, name: str, schema: str | None = None, if_not_exists: bool = True):
        return operations.invoke(cls(name, schema, if_not_exists))

    def reverse(self) -> DropExtensionOp:
        return DropExtensionOp(self.name, schema=self.schema)


@Operations.register_operation("drop_extension")
class DropExtensionOp(MigrateOperation):
    """Drop a PostgreSQL extension (``IF EXISTS``; ``cascade=True`` drops dependent objects too).

    Example::

        op.drop_extension("vector")
    """

    def __init__(self, name: str, schema: str | None = None, if_exists: bool = True, cascade: bool = False) -> None:
        self.name, self.schema, self.if_exists, self.cascade = name, schema, if_exists, cascade

    @classmethod
    def drop_extension(cls, operations, name: str, schema: str | None = None, if_exists: bool = True,
                       cascade: bool = False):
        return operations.invoke(cls(name, schema, if_exists, cascade))

    def reverse(self) -> CreateExtensionOp:
        return CreateExtensionOp(self.name, schema=self.schema)


@Operations.implementation_for(CreateExtensionOp)
def _create_extension(operations, op: CreateExtensionOp) -> None:
    stmt = f"CREATE EXTENSION {'IF NOT EXISTS ' if op.if_not_exists else ''}{_q(operations, op.name)}"
    if op.schema:
        stmt += f" SCHEMA {_q(operations, op.schema)}"
    _run_as_session_user(operations, [stmt])


@Operations.implementation_for(DropExtensionOp)
def _drop_extension(operations, op: DropExtensionOp) -> None:
    stmt = f"DROP EXTENSION {'IF EXISTS ' if op.if_exists else ''}{_q(operations, op.name)}"
    _run_as_session_user(operations, [stmt + (" CASCADE" if op.cascade else "")])


# --------------------------------------------------------------------- hypertables

@Operations.register_operation("create_hypertable")
class CreateHypertableOp(MigrateOperation):
    """Turn a table into a TimescaleDB hypertable partitioned by ``time_column``.

    ``chunk_interval`` is a PostgreSQL interval (``"1 day"``); ``migrate_data``
    moves existing rows into chunks (locks the table; slow on big tables).

    Example::

        op.create_hypertable("events", "time", schema="app", chunk_interval="1 day")
    """

    def __init__(self, table_name: str, time_column: str, schema: str | None = None,
                 chunk_interval: str | None = None, migrate_data: bool = False,
                 if_not_exists: bool = True) -> None:
        self.table_name, self.time_column, self.schema = table_name, time_column, schema
        self.chunk_interval, self.migrate_data, self.if_not_exists = chunk_interval, migrate_data, if_not_exists

    @classmethod
    def create_hypertable(cls, operations, table_name: str, time_column: str, schema: str | None = None,
                          chunk_interval: str | None = None, migrate_data: bool = False,
                          if_not_exists: bool = True):
        return operations.invoke(cls(table_name, time_column, schema, chunk_interval, migrate_data, if_not_exists))

    def reverse(self) -> RevertHypertableOp:
        return RevertHypertableOp(self.table_name, self.schema, self.time_column, self.chunk_interval)


@Operations.implementation_for(CreateHypertableOp)
def _create_hypertable(operations, op: CreateHypertableOp) -> None:
    rel = _literal(_qualified(operations, op.table_name, op.schema))
    dim = f"by_range({_literal(op.time_column)}"
    if op.chunk_interval:
        dim += f", INTERVAL {_literal(op.chunk_interval)}"
    dim += ")"
    args = [rel, dim]
    if op.migrate_data:
        args.append("migrate_data => true")
    if op.if_not_exists:
        args.append("if_not_exists => true")
    operations.execute(f"SELECT create_hypertable({', '.join(args)})")


@Operations.register_operation("revert_hypertable")
class RevertHypertableOp(MigrateOperation):
    """Turn a hypertable back into a plain table with the same rows (the reverse of
    :class:`CreateHypertableOp`).

    TimescaleDB cannot convert in place, so the rows are copied into a new table
    created ``LIKE`` the hypertable (columns, defaults, CHECK/NOT NULL constraints,
    identity, comments).  Indexes other than TimescaleDB's own, foreign keys,
    policies and grants are not carried over: recreate them in the same revision.
    Tables with generated columns are not supported.

    Example::

        op.revert_hypertable("events", schema="app")
    """

    def __init__(self, table_name: str, schema: str | None = None, time_column: str | None = None,
                 chunk_interval: str | None = None) -> None:
        self.table_name, self.schema = table_name, schema
        self.time_column, self.chunk_interval = time_column, chunk_interval

    @classmethod
    def revert_hypertable(cls, operations, table_name: str, schema: str | None = None,
                          time_column: str | None = None, chunk_interval: str | None = None):
        return operations.invoke(cls(table_name, schema, time_column, chunk_interval))

    def reverse(self) -> CreateHypertableOp:
        if self.time_column is None:
            raise ValueError(f"cannot reverse revert_hypertable({self.table_name!r}) without its time_column")
        return CreateHypertableOp(self.table_name, self.time_column, self.schema, self.chunk_interval,
                                  migrate_data=True)


@Operations.implementation_for(RevertHypertableOp)
def _revert_hypertable(operations, op: RevertHypertableOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)
    tmp_name = f"{op.table_name}__dbkit_plain"
    tmp = _qualified(operations, tmp_name, op.schema)
    operations.execute(
        f"CREATE TABLE {tmp} (LIKE {rel} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY "
        "INCLUDING STORAGE INCLUDING COMMENTS)"
    )
    operations.execute(f"INSERT INTO {tmp} SELECT * FROM {rel}")
    operations.execute(f"DROP TABLE {rel}")
    operations.execute(f"ALTER TABLE {tmp} RENAME TO {_q(operations, op.table_name)}")


# --------------------------------------------------------------------- row-level security

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
class DisableRLSOp(MigrateOperation):
    """Disable row-level security on a table (and ``NO FORCE`` it when ``force=True``).

    Example::

        op.disable_rls("documents", schema="app")
    """

    def __init__(self, table_name: str, schema: str | None = None, force: bool = True) -> None:
        self.table_name, self.schema, self.force = table_name, schema, force

    @classmethod
    def disable_rls(cls, operations, table_name: str, schema: str | None = None, force: bool = True):
        return operations.invoke(cls(table_name, schema, force))

    def reverse(self) -> EnableRLSOp:
        return EnableRLSOp(self.table_name, self.schema, self.force)


@Operations.implementation_for(EnableRLSOp)
def _enable_rls(operations, op: EnableRLSOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)
    operations.execute(f"ALTER TABLE {rel} ENABLE ROW LEVEL SECURITY")
    if op.force:
        operations.execute(f"ALTER TABLE {rel} FORCE ROW LEVEL SECURITY")


@Operations.implementation_for(DisableRLSOp)
def _disable_rls(operations, op: DisableRLSOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)
    if op.force:
        operations.execute(f"ALTER TABLE {rel} NO FORCE ROW LEVEL SECURITY")
    operations.execute(f"ALTER TABLE {rel} DISABLE ROW LEVEL SECURITY")


@Operations.register_operation("create_policy")
class CreatePolicyOp(MigrateOperation):
    """Create a row-level security policy.

    ``command``: ALL, SELECT, INSERT, UPDATE or DELETE.  ``roles``: role names
    (default PUBLIC).  ``using`` filters visible/affected rows; ``with_check``
    validates new rows.  ``permissive=False`` makes a RESTRICTIVE policy.
    Wrap settings in a sub-select so PostgreSQL evaluates them once per query.

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
        self.roles, self.using, self.with_check, self.permissive = tuple(roles), using, with_check, permissive

    @classmethod
    def create_policy(cls, operations, policy_name: str, table_name: str, schema: str | None = None,
                      command: str = "ALL", roles: Sequence[str] = ("PUBLIC",), using: str | None = None,
                      with_check: str | None = None, permissive: bool = True):
        return operations.invoke(cls(policy_name, table_name, schema, command, roles, using, with_check, permissive))

    def _args(self) -> dict[str, Any]:
        return dict(policy_name=self.policy_name, table_name=self.table_name, schema=self.schema,
                    command=self.command, roles=self.roles, using=self.using, with_check=self.with_check,
                    permissive=self.permissive)

    def reverse(self) -> DropPolicyOp:
        return DropPolicyOp(**self._args())


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
        self.roles, self.using, self.with_check, self.permissive = tuple(roles), using, with_check, permissive
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
    roles = ", ".join(r if r.upper() in ("PUBLIC", "CURRENT_USER", "SESSION_USER") else _q(operations, r)
                      for r in op.roles)
    stmt = (f"CREATE POLICY {_q(operations, op.policy_name)} ON {_qualified(operations, op.table_name, op.schema)} "
            f"AS {'PERMISSIVE' if op.permissive else 'RESTRICTIVE'} FOR {op.command} TO {roles}")
    if op.using:
        stmt += f" USING ({op.using})"
    if op.with_check:
        stmt += f" WITH CHECK ({op.with_check})"
    operations.execute(stmt)


@Operations.implementation_for(DropPolicyOp)
def _drop_policy(operations, op: DropPolicyOp) -> None:
    operations.execute(f"DROP POLICY {'IF EXISTS ' if op.if_exists else ''}{_q(operations, op.policy_name)} "
                       f"ON {_qualified(operations, op.table_name, op.schema)}")


# --------------------------------------------------------------------- concurrent indexes

@Operations.register_operation("create_index_concurrently")
class CreateIndexConcurrentlyOp(MigrateOperation):
    """``CREATE INDEX CONCURRENTLY`` inside an autocommit block: writes to the table
    keep flowing while the index builds.

    An INVALID index of the same name (left by an earlier build that failed or was
    cancelled) is detected and dropped before the new build.  ``columns`` are
    column names or SQL expressions; ``ops`` maps a column to its operator class;
    ``using`` picks the access method (btree, gin, hnsw, ...); ``with_`` sets
    storage parameters; ``where`` makes a partial index.

    Note: the revision is no longer atomic once it has a concurrent index (the
    autocommit block commits what came before it).  Keep such indexes in their own
    revision when the table is large.

    Example::

        op.create_index_concurrently("documents_tenant_created_idx", "documents",
                                     ["tenant_id", "created_at DESC"], schema="app")
    """

    def __init__(self, index_name: str, table_name: str, columns: Sequence[str], schema: str | None = None,
                 unique: bool = False, using: str | None = None, ops: Mapping[str, str] | None = None,
                 with_: Mapping[str, Any] | None = None, where: str | None = None) -> None:
        self.index_name, self.table_name, self.columns, self.schema = index_name, table_name, tuple(columns), schema
        self.unique, self.using, self.ops, self.with_, self.where = unique, using, dict(ops or {}), dict(with_ or {}), where

    @classmethod
    def create_index_concurrently(cls, operations, index_name: str, table_name: str, columns: Sequence[str],
                                  schema: str | None = None, unique: bool = False, using: str | None = None,
                                  ops: Mapping[str, str] | None = None, with_: Mapping[str, Any] | None = None,
                                  where: str | None = None):
        return operations.invoke(cls(index_name, table_name, columns, schema, unique, using, ops, with_, where))

    def reverse(self) -> DropIndexConcurrentlyOp:
        return DropIndexConcurrentlyOp(self.index_name, schema=self.schema, create=self)


@Operations.register_operation("drop_index_concurrently")
class DropIndexConcurrentlyOp(MigrateOperation):
    """``DROP INDEX CONCURRENTLY IF EXISTS`` inside an autocommit block.

    Example::

        op.drop_index_concurrently("documents_tenant_created_idx", schema="app")
    """

    def __init__(self, index_name: str, schema: str | None = None,
                 create: CreateIndexConcurrentlyOp | None = None) -> None:
        self.index_name, self.schema, self.create = index_name, schema, create

    @classmethod
    def drop_index_concurrently(cls, operations, index_name: str, schema: str | None = None):
        return operations.invoke(cls(index_name, schema))

    def reverse(self) -> CreateIndexConcurrentlyOp:
        if self.create is None:
            raise ValueError(f"cannot reverse drop_index_concurrently({self.index_name!r}) without its definition")
        return self.create


def index_sql(operations, op: CreateIndexConcurrentlyOp, *, concurrently: bool = True) -> str:
    """The CREATE INDEX statement for ``op`` (also used by ``dbkit seed --defer-indexes``)."""
    cols = []
    for col in op.columns:
        name, _, rest = col.partition(" ")
        is_plain = name.isidentifier() and (not rest or rest.upper() in ("ASC", "DESC", "DESC NULLS LAST",
                                                                         "ASC NULLS FIRST", "NULLS FIRST",
                                                                         "NULLS LAST"))
        text = f"{_q(operations, name)}{(' ' + rest) if rest else ''}" if is_plain else f"({col})"
        if col in op.ops or name in op.ops:
            opclass = op.ops.get(col) or op.ops[name]
            text = f"{_q(operations, name)} {opclass}{(' ' + rest) if rest else ''}" if is_plain else f"({col}) {opclass}"
        cols.append(text)
    stmt = (f"CREATE {'UNIQUE ' if op.unique else ''}INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
            f"{_q(operations, op.index_name)} ON {_qualified(operations, op.table_name, op.schema)}")
    if op.using:
        stmt += f" USING {op.using}"
    stmt += f" ({', '.join(cols)})"
    if op.with_:
        stmt += " WITH (" + ", ".join(f"{k} = {v}" for k, v in op.with_.items()) + ")"
    if op.where:
        stmt += f" WHERE {op.where}"
    return stmt


def _invalid_index_exists(operations, name: str, schema: str | None) -> bool:
    row = operations.migration_context.connection.exec_driver_sql(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %(name)s AND n.nspname = COALESCE(%(schema)s, current_schema())",
        {"name": name, "schema": schema},
    ).first()
    return row is not None and not row[0]


@Operations.implementation_for(CreateIndexConcurrentlyOp)
def _create_index_concurrently(operations, op: CreateIndexConcurrentlyOp) -> None:
    ctx = operations.migration_context
    with ctx.autocommit_block():
        if not ctx.as_sql and _invalid_index_exists(operations, op.index_name, op.schema):
            operations.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(operations, op.index_name, op.schema)}")
        operations.execute(index_sql(operations, op))


@Operations.implementation_for(DropIndexConcurrentlyOp)
def _drop_index_concurrently(operations, op: DropIndexConcurrentlyOp) -> None:
    with operations.migration_context.autocommit_block():
        operations.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(operations, op.index_name, op.schema)}")


@Operations.register_operation("create_vector_index")
class CreateVectorIndexOp(CreateIndexConcurrentlyOp):
    """A pgvector index (HNSW or IVFFlat), built concurrently.

    ``ops``: ``vector_cosine_ops`` (default), ``vector_l2_ops``, ``vector_ip_ops``, ...
    ``with_``: HNSW ``m`` / ``ef_construction``; IVFFlat ``lists``.
    The name defaults to ``<table>_<column>_<method>_idx``.

    Example::

        op.create_vector_index("document_chunks", "embedding", schema="app",
                               method="hnsw", with_={"m": 16, "ef_construction": 64})
    """

    def __init__(self, table_name: str, column: str, schema: str | None = None, method: str = "hnsw",
                 ops: str = "vector_cosine_ops", with_: Mapping[str, Any] | None = None,
                 index_name: str | None = None) -> None:
        if method not in VECTOR_METHODS:
            raise ValueError(f"vector index method must be one of {', '.join(VECTOR_METHODS)}, not {method!r}")
        super().__init__(index_name or f"{table_name}_{column}_{method}_idx", table_name, [column], schema,
                         using=method, ops={column: ops}, with_=with_)

    @classmethod
    def create_vector_index(cls, operations, table_name: str, column: str, schema: str | None = None,
                            method: str = "hnsw", ops: str = "vector_cosine_ops",
                            with_: Mapping[str, Any] | None = None, index_name: str | None = None):
        return operations.invoke(cls(table_name, column, schema, method, ops, with_, index_name))


# --------------------------------------------------------------------- grants

_OBJECT_TYPES = ("TABLE", "SCHEMA", "SEQUENCE", "ALL TABLES IN SCHEMA", "ALL SEQUENCES IN SCHEMA")


@Operations.register_operation("grant")
class GrantOp(MigrateOperation):
    """Grant privileges to roles.

    ``object_type``: TABLE (default), SCHEMA, SEQUENCE, ALL TABLES IN SCHEMA,
    ALL SEQUENCES IN SCHEMA.

    Example::

        op.grant(["SELECT", "INSERT", "UPDATE", "DELETE"], "documents", schema="app", roles=["app_rls"])
        op.grant(["USAGE"], "app", object_type="SCHEMA", roles=["app_rls", "app_readonly"])
    """

    def __init__(self, privileges: Sequence[str], target: str, roles: Sequence[str], schema: str | None = None,
                 object_type: str = "TABLE") -> None:
        object_type = object_type.upper()
        if object_type not in _OBJECT_TYPES:
            raise ValueError(f"object_type must be one of {', '.join(_OBJECT_TYPES)}")
        self.privileges = tuple(p.upper() for p in privileges)
        self.target, self.roles, self.schema, self.object_type = target, tuple(roles), schema, object_type

    @classmethod
    def grant(cls, operations, privileges: Sequence[str], target: str, roles: Sequence[str],
              schema: str | None = None, object_type: str = "TABLE"):
        return operations.invoke(cls(privileges, target, roles, schema, object_type))

    def reverse(self) -> RevokeOp:
        return RevokeOp(self.privileges, self.target, self.roles, self.schema, self.object_type)


@Operations.register_operation("revoke")
class RevokeOp(GrantOp):
    """Revoke privileges from roles (same arguments as :class:`GrantOp`).

    Example::

        op.revoke(["DELETE"], "documents", schema="app", roles=["app_rls"])
    """

    @classmethod
    def revoke(cls, operations, privileges: Sequence[str], target: str, roles: Sequence[str],
               schema: str | None = None, object_type: str = "TABLE"):
        return operations.invoke(cls(privileges, target, roles, schema, object_type))

    def reverse(self) -> GrantOp:
        return GrantOp(self.privileges, self.target, self.roles, self.schema, self.object_type)


def _grant_sql(operations, op: GrantOp, verb: str) -> str:
    if op.object_type in ("TABLE", "SEQUENCE"):
        target = f"{op.object_type} {_qualified(operations, op.target, op.schema)}"
    else:
        target = f"{op.object_type} {_q(operations, op.target)}"
    roles = ", ".join(_q(operations, r) for r in op.roles)
    direction = "TO" if verb == "GRANT" else "FROM"
    return f"{verb} {', '.join(op.privileges)} ON {target} {direction} {roles}"


@Operations.implementation_for(GrantOp)
def _grant(operations, op: GrantOp) -> None:
    verb = "REVOKE" if isinstance(op, RevokeOp) else "GRANT"
    operations.execute(_grant_sql(operations, op, verb))


# --------------------------------------------------------------------- roles

@Operations.register_operation("apply_roles")
class ApplyRolesOp(MigrateOperation):
    """Apply the role model and the extra ``sql/roles/*.sql`` (idempotent: creates missing roles, corrects drifted
    attributes), as the session user.  Role names come from the settings.

    Example::

        op.apply_roles()
    """

    @classmethod
    def apply_roles(cls, operations):
        return operations.invoke(cls())

    def reverse(self) -> DropRolesOp:
        return DropRolesOp()


@Operations.register_operation("drop_roles")
class DropRolesOp(MigrateOperation):
    """Drop the configured roles, each only when nothing in the cluster still depends
    on it (roles are shared by every database of the cluster).

    Example::

        op.drop_roles()
    """

    @classmethod
    def drop_roles(cls, operations):
        return operations.invoke(cls())

    def reverse(self) -> ApplyRolesOp:
        return ApplyRolesOp()


@Operations.implementation_for(ApplyRolesOp)
def _apply_roles(operations, op: ApplyRolesOp) -> None:
    from dbkit import roles

    from dbkit.migrate.session import _sql_statement

    _run_as_session_user(operations, [_sql_statement(s) for s in roles.statements(dbkit_settings(operations))])


@Operations.implementation_for(DropRolesOp)
def _drop_roles(operations, op: DropRolesOp) -> None:
    from dbkit import roles

    names = list(roles.role_names(dbkit_settings(operations)).values())
    stmt = (
        "DO $dbkit$ DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY["
        + ", ".join(_literal(n) for n in names)
        + "] LOOP IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) AND NOT EXISTS ("
        "SELECT FROM pg_shdepend d JOIN pg_roles x ON x.oid = d.refobjid WHERE x.rolname = r) "
        "THEN EXECUTE format('DROP ROLE %I', r); END IF; END LOOP; END $dbkit$"
    )
    _run_as_session_user(operations, [stmt])
