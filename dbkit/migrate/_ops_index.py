"""Index builds outside the revision's transaction (CONCURRENTLY), vector indexes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations

from dbkit.migrate._ops_common import VECTOR_METHODS, _execute, _kept, _q, _qualified


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
        self.unique, self.using, self.ops, self.with_, self.where = (unique, using, dict(ops or {}), dict(with_ or {}),
                                                                     where)

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
        return _kept(self.create, f"cannot reverse drop_index_concurrently({self.index_name!r}) without its definition")


def index_sql(operations, op: CreateIndexConcurrentlyOp) -> str:
    """The ``CREATE INDEX CONCURRENTLY`` statement for ``op``."""
    cols = []
    for col in op.columns:
        name, _, rest = col.partition(" ")
        is_plain = name.isidentifier() and (not rest or rest.upper() in (
            "ASC", "DESC", "DESC NULLS LAST", "ASC NULLS FIRST", "NULLS FIRST", "NULLS LAST"))
        opclass = op.ops.get(col) or op.ops.get(name)
        parts = [_q(operations, name), opclass, rest] if is_plain else [f"({col})", opclass]
        cols.append(" ".join(p for p in parts if p))
    stmt = (f"CREATE {'UNIQUE ' if op.unique else ''}INDEX CONCURRENTLY IF NOT EXISTS "
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
            _execute(operations,
                     f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(operations, op.index_name, op.schema)}")
        _execute(operations, index_sql(operations, op))  # colons in expressions/WHERE are SQL


@Operations.implementation_for(DropIndexConcurrentlyOp)
def _drop_index_concurrently(operations, op: DropIndexConcurrentlyOp) -> None:
    with operations.migration_context.autocommit_block():
        _execute(operations, f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(operations, op.index_name, op.schema)}")


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
