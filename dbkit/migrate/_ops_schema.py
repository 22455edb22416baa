"""Operations on extensions, hypertables, grants and roles."""

from __future__ import annotations

from collections.abc import Sequence

from alembic.operations import MigrateOperation, Operations

from dbkit.migrate import settings as dbkit_settings
from dbkit.migrate._ops_common import (
    _bool,
    _call,
    _do_block,
    _execute,
    _literal,
    _q,
    _qualified,
    _role_specs,
    _run_as_session_user,
    role_list,
)


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
    interval = f", INTERVAL {_literal(op.chunk_interval)}" if op.chunk_interval else ""
    _execute(operations, _call("create_hypertable", _literal(_qualified(operations, op.table_name, op.schema)),
                             f"by_range({_literal(op.time_column)}{interval})",
                             migrate_data=_bool(op.migrate_data), if_not_exists=_bool(op.if_not_exists)))


@Operations.register_operation("revert_hypertable")
class RevertHypertableOp(MigrateOperation):
    """Turn a hypertable back into a plain table with the same rows (the reverse of
    :class:`CreateHypertableOp`).

    TimescaleDB cannot convert in place, so the rows are copied into a new table
    created ``LIKE`` the hypertable (columns, defaults, CHECK/NOT NULL constraints,
    identity, comments).  Indexes other than TimescaleDB's own, foreign keys,
    row-level security, policies and grants are not carried over: recreate them in the same
    revision.  Row-level security is first un-FORCEd on the hypertable (which is dropped), so that
    the copy as its owner takes every row, never only those a policy would show.
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
    _execute(operations, f"ALTER TABLE {rel} NO FORCE ROW LEVEL SECURITY")  # the owner copies every row
    _execute(operations, f"CREATE TABLE {tmp} (LIKE {rel} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING "
                         "IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)")
    _execute(operations, f"INSERT INTO {tmp} SELECT * FROM {rel}")
    _execute(operations, f"DROP TABLE {rel}")
    _execute(operations, f"ALTER TABLE {tmp} RENAME TO {_q(operations, op.table_name)}")


_OBJECT_TYPES = ("TABLE", "SCHEMA", "SEQUENCE", "ALL TABLES IN SCHEMA", "ALL SEQUENCES IN SCHEMA")


@Operations.register_operation("grant")
class GrantOp(MigrateOperation):
    """Grant privileges to roles.

    ``object_type``: TABLE (default), SCHEMA, SEQUENCE, ALL TABLES IN SCHEMA,
    ALL SEQUENCES IN SCHEMA.  ``roles``: role names (quoted), or PUBLIC, CURRENT_ROLE, CURRENT_USER,
    SESSION_USER as keywords.

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
        self.target, self.roles, self.schema, self.object_type = target, role_list(roles), schema, object_type

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


@Operations.implementation_for(GrantOp)
def _grant(operations, op: GrantOp) -> None:
    if not op.roles or not op.privileges:  # e.g. roles=settings.role_readonly in a project without one
        return
    target = (_qualified(operations, op.target, op.schema) if op.object_type in ("TABLE", "SEQUENCE")
              else _q(operations, op.target))
    roles = _role_specs(operations, op.roles)
    verb, direction = ("REVOKE", "FROM") if isinstance(op, RevokeOp) else ("GRANT", "TO")
    _execute(operations, f"{verb} {', '.join(op.privileges)} ON {op.object_type} {target} {direction} {roles}")


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
    from dbkit.migrate._session import _sql_statement

    _run_as_session_user(operations, [_sql_statement(s) for s in roles.statements(dbkit_settings(operations))])


@Operations.implementation_for(DropRolesOp)
def _drop_roles(operations, op: DropRolesOp) -> None:
    from dbkit import roles

    names = ", ".join(_literal(n) for n in roles.model(dbkit_settings(operations)).names())
    _run_as_session_user(operations, [_do_block(
        f"DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY[{names}] LOOP IF EXISTS (SELECT FROM pg_roles WHERE "
        "rolname = r) AND NOT EXISTS (SELECT FROM pg_shdepend d JOIN pg_roles x ON x.oid = d.refobjid WHERE "
        "x.rolname = r) THEN EXECUTE format('DROP ROLE %I', r); END IF; END LOOP; END")])
