"""TimescaleDB compression, and the policies TimescaleDB runs on a hypertable: compression, retention, reorder.

These need TimescaleDB's community edition (``SHOW timescaledb.license`` is ``timescale``); the Apache
edition refuses them.  They run in the revision's transaction: a failure rolls all of it back.

TimescaleDB runs a policy as the hypertable's owner and refuses to add one for an owner that cannot log
in; with the ``timescaledb`` extension configured, dbkit's role model gives the owner role LOGIN and never
a password (see :mod:`dbkit.roles`), and revisions run as that role, so the policies they add are accepted
and run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alembic.operations import MigrateOperation, Operations

from dbkit.migrate._ops_common import (
    _bool,
    _call,
    _do_block,
    _execute,
    _interval,
    _kept,
    _literal,
    _q,
    _qualified,
    _regclass,
    _schedule,
    _start,
)

_ORDER = re.compile(r"((ASC|DESC)(\s+|$))?(NULLS\s+(FIRST|LAST))?", re.IGNORECASE)


def _name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: each item must be a column name, not {name!r}")
    return name.strip()


def _order_parts(item: str) -> tuple[str, str]:
    """``"time desc"`` -> ``("time", "DESC")``: a column, then ASC/DESC and NULLS FIRST/LAST."""
    name, _, rest = (item.strip() if isinstance(item, str) else "").partition(" ")
    if not _ORDER.fullmatch(rest.strip()):
        raise ValueError(f"order_by item {item!r} must be a column name, optionally followed by ASC or DESC "
                         "and NULLS FIRST or NULLS LAST (e.g. 'time DESC')")
    return _name(name, "order_by"), " ".join(rest.upper().split())


def _order_item(operations, item: str) -> str:
    name, rest = _order_parts(item)
    return _q(operations, name) + (f" {rest}" if rest else "")


@Operations.register_operation("enable_compression")
class EnableCompressionOp(MigrateOperation):
    """Enable TimescaleDB compression on a hypertable (``ALTER TABLE … SET (timescaledb.compress, …)``).

    ``segment_by``: columns whose rows are compressed together (the ones queries filter on, e.g. a
    tenant or device); ``order_by``: the order inside a compressed batch (``["time DESC"]``);
    ``chunk_interval``: chunks are merged up to this interval as they are compressed.  None leaves a
    setting to TimescaleDB (it chooses segment-by/order-by from the indexes); ``[]`` says "none".
    Chunks are compressed by a compression policy (:class:`AddCompressionPolicyOp`) or ``compress_chunk``.

    Example::

        op.enable_compression("events", schema="app", segment_by=["tenant_id"], order_by=["time DESC"])
    """

    def __init__(self, table_name: str, schema: str | None = None, segment_by: Sequence[str] | None = None,
                 order_by: Sequence[str] | None = None, chunk_interval=None) -> None:
        for what, value in (("segment_by", segment_by), ("order_by", order_by)):
            if isinstance(value, str):
                raise ValueError(f"{what} must be a list of columns ([{value!r}]), not a string")
        self.table_name, self.schema, self.chunk_interval = table_name, schema, chunk_interval
        self.segment_by = None if segment_by is None else tuple(_name(c, "segment_by") for c in segment_by)
        self.order_by = None if order_by is None else tuple(order_by)
        for item in self.order_by or ():
            _order_parts(item)
        if chunk_interval is not None:
            _interval(chunk_interval, "chunk_interval")

    @classmethod
    def enable_compression(cls, operations, table_name: str, schema: str | None = None,
                           segment_by: Sequence[str] | None = None, order_by: Sequence[str] | None = None,
                           chunk_interval=None):
        return operations.invoke(cls(table_name, schema, segment_by, order_by, chunk_interval))

    def reverse(self) -> DisableCompressionOp:
        return DisableCompressionOp(self.table_name, self.schema, enable=self)


@Operations.register_operation("disable_compression")
class DisableCompressionOp(MigrateOperation):
    """Disable compression on a hypertable.

    TimescaleDB refuses while a chunk is compressed, so by default (``decompress=True``) every compressed
    chunk is decompressed first, in the same transaction: this rewrites those chunks' rows and needs the
    disk space of the uncompressed data (``decompress=False`` leaves the refusal to TimescaleDB).  Remove
    the compression policy first (:class:`RemoveCompressionPolicyOp`; a downgrade does, as it was added
    after compression was enabled).

    Example::

        op.disable_compression("events", schema="app")
    """

    def __init__(self, table_name: str, schema: str | None = None, decompress: bool = True,
                 enable: EnableCompressionOp | None = None) -> None:
        self.table_name, self.schema, self.decompress, self.enable = table_name, schema, decompress, enable

    @classmethod
    def disable_compression(cls, operations, table_name: str, schema: str | None = None, decompress: bool = True):
        return operations.invoke(cls(table_name, schema, decompress))

    def reverse(self) -> EnableCompressionOp:
        return _kept(self.enable, f"cannot reverse disable_compression({self.table_name!r}) without its settings: "
                                  "write op.enable_compression(...) in the downgrade")


@Operations.implementation_for(EnableCompressionOp)
def _enable_compression(operations, op: EnableCompressionOp) -> None:
    options = ["timescaledb.compress"]
    if op.segment_by is not None:
        columns = ", ".join(_q(operations, c) for c in op.segment_by)
        options.append(f"timescaledb.compress_segmentby = {_literal(columns)}")
    if op.order_by is not None:
        items = ", ".join(_order_item(operations, c) for c in op.order_by)
        options.append(f"timescaledb.compress_orderby = {_literal(items)}")
    if op.chunk_interval is not None:
        interval = _interval(op.chunk_interval, "chunk_interval")
        value = interval.removeprefix("INTERVAL ") if interval.startswith("INTERVAL ") else _literal(interval)
        options.append(f"timescaledb.compress_chunk_time_interval = {value}")
    _execute(operations, f"ALTER TABLE {_qualified(operations, op.table_name, op.schema)} SET ({', '.join(options)})")


@Operations.implementation_for(DisableCompressionOp)
def _disable_compression(operations, op: DisableCompressionOp) -> None:
    rel = _qualified(operations, op.table_name, op.schema)

    def which(prefix: str = "") -> str:
        return (f"{prefix}hypertable_schema = {_literal(op.schema) if op.schema else 'current_schema()'} "
                f"AND {prefix}hypertable_name = {_literal(op.table_name)}")

    if op.decompress:
        _execute(operations, "SELECT decompress_chunk((quote_ident(chunk_schema) || '.' || quote_ident(chunk_name))"
                             f"::regclass) FROM timescaledb_information.chunks WHERE {which()} AND is_compressed")
    # TimescaleDB keeps compress_chunk_time_interval on the time dimension when compression is disabled: reset it
    # first (setting it while compression is enabled), so that enabling compression again starts afresh
    _execute(operations, _do_block(
        "BEGIN IF EXISTS (SELECT FROM timescaledb_information.hypertables h "
        "JOIN timescaledb_information.hypertable_compression_settings s "
        "ON s.hypertable = (quote_ident(h.hypertable_schema) || '.' || quote_ident(h.hypertable_name))::regclass "
        f"WHERE {which('h.')} AND h.compression_enabled "
        f"AND s.compress_interval_length IS NOT NULL) THEN ALTER TABLE {rel} "
        "SET (timescaledb.compress_chunk_time_interval = '0'); END IF; END"))
    _execute(operations, f"ALTER TABLE {rel} SET (timescaledb.compress = false)")


# --------------------------------------------------------------------- policies on a hypertable

class _AddPolicy(MigrateOperation):
    """What the three ``add_*_policy`` operations share: a relation, ``if_not_exists``, a reverse; each one's
    ``arguments()`` (positional, named) also check its values when it is made."""

    function = ""

    def reverse(self):
        return _REMOVE[type(self)](self.table_name, self.schema, add=self)


class _RemovePolicy(MigrateOperation):
    """``remove_*_policy(relation, if_exists => …)``; its reverse is the policy it removes, when known."""

    function = ""

    def __init__(self, table_name: str, schema: str | None = None, if_exists: bool = True,
                 add: _AddPolicy | None = None) -> None:
        self.table_name, self.schema, self.if_exists, self.add = table_name, schema, if_exists, add

    def reverse(self) -> _AddPolicy:
        return _kept(self.add, f"cannot reverse {self.function}({self.table_name!r}) without the policy it removes: "
                               f"write op.{self.function.replace('remove_', 'add_')}(...) in the downgrade")


@Operations.register_operation("add_compression_policy")
class AddCompressionPolicyOp(_AddPolicy):
    """A policy that compresses the chunks of a hypertable once they are older than ``compress_after``
    (an interval such as ``"7 days"``, or an integer for integer time).  Enable compression first.

    Example::

        op.add_compression_policy("events", compress_after="7 days", schema="app")
    """

    function = "add_compression_policy"

    def __init__(self, table_name: str, compress_after, schema: str | None = None, if_not_exists: bool = False,
                 schedule_interval=None, initial_start=None) -> None:
        self.table_name, self.compress_after, self.schema = table_name, compress_after, schema
        self.if_not_exists, self.schedule_interval, self.initial_start = if_not_exists, schedule_interval, initial_start
        self.arguments()

    @classmethod
    def add_compression_policy(cls, operations, table_name: str, compress_after, schema: str | None = None,
                               if_not_exists: bool = False, schedule_interval=None, initial_start=None):
        return operations.invoke(cls(table_name, compress_after, schema, if_not_exists, schedule_interval,
                                     initial_start))

    def arguments(self):
        return [], dict(compress_after=_interval(self.compress_after, "compress_after"),
                        if_not_exists=_bool(self.if_not_exists),
                        schedule_interval=_schedule(self.schedule_interval), initial_start=_start(self.initial_start))


@Operations.register_operation("remove_compression_policy")
class RemoveCompressionPolicyOp(_RemovePolicy):
    """Remove a hypertable's compression policy (``if_exists=True`` by default).  Chunks stay compressed.

    Example::

        op.remove_compression_policy("events", schema="app")
    """

    function = "remove_compression_policy"

    @classmethod
    def remove_compression_policy(cls, operations, table_name: str, schema: str | None = None,
                                  if_exists: bool = True):
        return operations.invoke(cls(table_name, schema, if_exists))


@Operations.register_operation("add_retention_policy")
class AddRetentionPolicyOp(_AddPolicy):
    """A policy that drops the chunks of a hypertable (or continuous aggregate) whose data is older than
    ``drop_after`` (an interval, or an integer for integer time).

    Example::

        op.add_retention_policy("events", drop_after="90 days", schema="app")
    """

    function = "add_retention_policy"

    def __init__(self, table_name: str, drop_after, schema: str | None = None, if_not_exists: bool = False,
                 schedule_interval=None, initial_start=None) -> None:
        self.table_name, self.drop_after, self.schema = table_name, drop_after, schema
        self.if_not_exists, self.schedule_interval, self.initial_start = if_not_exists, schedule_interval, initial_start
        self.arguments()

    @classmethod
    def add_retention_policy(cls, operations, table_name: str, drop_after, schema: str | None = None,
                             if_not_exists: bool = False, schedule_interval=None, initial_start=None):
        return operations.invoke(cls(table_name, drop_after, schema, if_not_exists, schedule_interval, initial_start))

    def arguments(self):
        return [], dict(drop_after=_interval(self.drop_after, "drop_after"), if_not_exists=_bool(self.if_not_exists),
                        schedule_interval=_schedule(self.schedule_interval), initial_start=_start(self.initial_start))


@Operations.register_operation("remove_retention_policy")
class RemoveRetentionPolicyOp(_RemovePolicy):
    """Remove a retention policy (``if_exists=True`` by default).

    Example::

        op.remove_retention_policy("events", schema="app")
    """

    function = "remove_retention_policy"

    @classmethod
    def remove_retention_policy(cls, operations, table_name: str, schema: str | None = None, if_exists: bool = True):
        return operations.invoke(cls(table_name, schema, if_exists))


@Operations.register_operation("add_reorder_policy")
class AddReorderPolicyOp(_AddPolicy):
    """A policy that rewrites older chunks in the order of ``index_name`` (an index of the hypertable, named
    without its schema), like ``CLUSTER`` but chunk by chunk.

    Example::

        op.add_reorder_policy("events", "events_tenant_time_idx", schema="app")
    """

    function = "add_reorder_policy"

    def __init__(self, table_name: str, index_name: str, schema: str | None = None, if_not_exists: bool = False,
                 initial_start=None) -> None:
        if not isinstance(index_name, str) or not index_name or "." in index_name:
            raise ValueError(f"index_name must be the name of an index of {table_name!r} without its schema "
                             f"(it is the hypertable's), not {index_name!r}")
        self.table_name, self.index_name, self.schema = table_name, index_name, schema
        self.if_not_exists, self.initial_start = if_not_exists, initial_start
        self.arguments()

    @classmethod
    def add_reorder_policy(cls, operations, table_name: str, index_name: str, schema: str | None = None,
                           if_not_exists: bool = False, initial_start=None):
        return operations.invoke(cls(table_name, index_name, schema, if_not_exists, initial_start))

    def arguments(self):
        return [_literal(self.index_name)], dict(if_not_exists=_bool(self.if_not_exists),
                                                 initial_start=_start(self.initial_start))


@Operations.register_operation("remove_reorder_policy")
class RemoveReorderPolicyOp(_RemovePolicy):
    """Remove a reorder policy (``if_exists=True`` by default).

    Example::

        op.remove_reorder_policy("events", schema="app")
    """

    function = "remove_reorder_policy"

    @classmethod
    def remove_reorder_policy(cls, operations, table_name: str, schema: str | None = None, if_exists: bool = True):
        return operations.invoke(cls(table_name, schema, if_exists))


_REMOVE = {AddCompressionPolicyOp: RemoveCompressionPolicyOp, AddRetentionPolicyOp: RemoveRetentionPolicyOp,
           AddReorderPolicyOp: RemoveReorderPolicyOp}


@Operations.implementation_for(_AddPolicy)
def _add_policy(operations, op: _AddPolicy) -> None:
    args, named = op.arguments()
    _execute(operations, _call(op.function, _regclass(operations, op.table_name, op.schema), *args, **named))


@Operations.implementation_for(_RemovePolicy)
def _remove_policy(operations, op: _RemovePolicy) -> None:
    _execute(operations, _call(op.function, _regclass(operations, op.table_name, op.schema),
                               if_exists=_bool(op.if_exists)))


# --------------------------------------------------------------------- what TimescaleDB creates by itself

#: what TimescaleDB creates by itself, wherever it put it: chunks (compressed ones too; in the hypertable's
#: associated schema, which may be the application's), compressed and materialization hypertables, and each
#: continuous aggregate's views (the one it is queried by, and its internal partial and direct views)
_INTERNALS_SQL = """
SELECT schema_name, table_name FROM _timescaledb_catalog.chunk
UNION SELECT schema_name, table_name FROM _timescaledb_catalog.hypertable
      WHERE id IN (SELECT compressed_hypertable_id FROM _timescaledb_catalog.hypertable)
UNION SELECT h.schema_name, h.table_name FROM _timescaledb_catalog.hypertable h
      JOIN _timescaledb_catalog.continuous_agg a ON a.mat_hypertable_id = h.id
UNION SELECT user_view_schema, user_view_name FROM _timescaledb_catalog.continuous_agg
UNION SELECT partial_view_schema, partial_view_name FROM _timescaledb_catalog.continuous_agg
UNION SELECT direct_view_schema, direct_view_name FROM _timescaledb_catalog.continuous_agg
"""


def timescale_internals(conn) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """For autogenerate and ``migrate check`` (:mod:`dbkit.migrate._autogen`), which leave these out:
    ((schema, index) of the indexes TimescaleDB creates itself on hypertables: ``<table>_<time>_idx``, and
    ``<table>_<space>_<time>_idx`` for a space dimension; (schema, table) of :data:`_INTERNALS_SQL`)."""
    if not conn.exec_driver_sql("SELECT to_regclass('_timescaledb_catalog.continuous_agg')").scalar():
        return set(), set()
    dims = conn.exec_driver_sql("SELECT hypertable_schema, hypertable_name, column_name, dimension_type "
                                "FROM timescaledb_information.dimensions ORDER BY dimension_number").all()
    indexes, times = set(), {}
    for schema, table, column, kind in dims:
        indexes.add((schema, f"{table}_{column}_idx"))
        if kind == "Time":
            times.setdefault((schema, table), column)
        elif (schema, table) in times:
            indexes.add((schema, f"{table}_{column}_{times[schema, table]}_idx"))
    return indexes, {tuple(r) for r in conn.exec_driver_sql(_INTERNALS_SQL).all()}
