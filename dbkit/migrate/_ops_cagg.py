"""TimescaleDB continuous aggregates, their refresh policies, and user-defined jobs (community edition).

Like the policies (:mod:`dbkit.migrate._ops_timescale`), refresh policies and jobs run as their owner,
the role the revision runs as (the owner role, which has LOGIN with the timescaledb extension).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from alembic.operations import MigrateOperation, Operations

from dbkit.migrate._ops_common import (
    _bool,
    _call,
    _do_block,
    _execute,
    _interval,
    _kept,
    _literal,
    _qualified,
    _regclass,
    _start,
)

#: the key of a job's config that holds the name dbkit finds it by (``op.add_job(..., job_name=…)``)
JOB_NAME_KEY = "dbkit_job"


@Operations.register_operation("create_continuous_aggregate")
class CreateContinuousAggregateOp(MigrateOperation):
    """``CREATE MATERIALIZED VIEW … WITH (timescaledb.continuous) AS <select_sql>``.

    ``select_sql`` is the aggregate's query (a ``time_bucket`` over a hypertable, grouped by it);
    ``materialized_only=True`` (the default) answers from the materialized data only, False adds the rows
    not yet materialized (real time).

    ``with_data=False`` (the default) creates it ``WITH NO DATA`` in the revision's transaction, like
    any DDL: a failure rolls it back, and a refresh policy (:class:`AddRefreshPolicyOp`) fills it.
    ``with_data=True`` materializes every existing row while creating it, which TimescaleDB does only
    outside a transaction block (it commits between its steps): it then runs in an autocommit block
    like ``op.create_index_concurrently`` (what came before in the revision is committed first;
    dbkit's migration lock stays held), and a continuous aggregate of the same name left by an earlier
    run that failed half-way is dropped and created again.

    Example::

        op.create_continuous_aggregate(
            "events_daily",
            "SELECT time_bucket('1 day', time) AS day, tenant_id, count(*) AS n "
            "FROM app.events GROUP BY 1, 2", schema="app")
    """

    def __init__(self, view_name: str, select_sql: str, schema: str | None = None, materialized_only: bool = True,
                 with_data: bool = False) -> None:
        select = select_sql.strip().rstrip(";").rstrip() if isinstance(select_sql, str) else ""
        if not select:
            raise ValueError(f"continuous aggregate {view_name!r}: select_sql must be the aggregate's query "
                             "(SELECT time_bucket(...) ... GROUP BY ...)")
        self.view_name, self.select_sql, self.schema = view_name, select, schema
        self.materialized_only, self.with_data = materialized_only, with_data

    @classmethod
    def create_continuous_aggregate(cls, operations, view_name: str, select_sql: str, schema: str | None = None,
                                    materialized_only: bool = True, with_data: bool = False):
        return operations.invoke(cls(view_name, select_sql, schema, materialized_only, with_data))

    def reverse(self) -> DropContinuousAggregateOp:
        return DropContinuousAggregateOp(self.view_name, self.schema, create=self)


@Operations.register_operation("drop_continuous_aggregate")
class DropContinuousAggregateOp(MigrateOperation):
    """``DROP MATERIALIZED VIEW IF EXISTS`` a continuous aggregate (its refresh policy and materialized data
    go with it); ``cascade=True`` drops dependent objects too.

    Example::

        op.drop_continuous_aggregate("events_daily", schema="app")
    """

    def __init__(self, view_name: str, schema: str | None = None, if_exists: bool = True, cascade: bool = False,
                 create: CreateContinuousAggregateOp | None = None) -> None:
        self.view_name, self.schema, self.if_exists, self.cascade, self.create = (view_name, schema, if_exists,
                                                                                  cascade, create)

    @classmethod
    def drop_continuous_aggregate(cls, operations, view_name: str, schema: str | None = None, if_exists: bool = True,
                                  cascade: bool = False):
        return operations.invoke(cls(view_name, schema, if_exists, cascade))

    def reverse(self) -> CreateContinuousAggregateOp:
        return _kept(self.create, f"cannot reverse drop_continuous_aggregate({self.view_name!r}) without its query: "
                                  "write op.create_continuous_aggregate(...) in the downgrade")


def continuous_aggregate_sql(operations, op: CreateContinuousAggregateOp) -> str:
    options = f"timescaledb.continuous, timescaledb.materialized_only = {'true' if op.materialized_only else 'false'}"
    return (f"CREATE MATERIALIZED VIEW {_qualified(operations, op.view_name, op.schema)} WITH ({options}) AS\n"
            f"{op.select_sql}\nWITH {'DATA' if op.with_data else 'NO DATA'}")


def _continuous_aggregate_exists(operations, name: str, schema: str | None) -> bool:
    return operations.migration_context.connection.exec_driver_sql(
        "SELECT 1 FROM timescaledb_information.continuous_aggregates "
        "WHERE view_schema = COALESCE(%(schema)s, current_schema()) AND view_name = %(name)s",
        {"name": name, "schema": schema}).first() is not None


@Operations.implementation_for(CreateContinuousAggregateOp)
def _create_continuous_aggregate(operations, op: CreateContinuousAggregateOp) -> None:
    if not op.with_data:  # TimescaleDB allows WITH NO DATA in a transaction block: stays atomic
        _execute(operations, continuous_aggregate_sql(operations, op))
        return
    ctx = operations.migration_context
    with ctx.autocommit_block():
        if not ctx.as_sql and _continuous_aggregate_exists(operations, op.view_name, op.schema):
            # left by an earlier run of this revision that failed (the revision is not recorded as applied)
            _execute(operations, f"DROP MATERIALIZED VIEW {_qualified(operations, op.view_name, op.schema)}")
        _execute(operations, continuous_aggregate_sql(operations, op))


@Operations.implementation_for(DropContinuousAggregateOp)
def _drop_continuous_aggregate(operations, op: DropContinuousAggregateOp) -> None:
    _execute(operations, f"DROP MATERIALIZED VIEW {'IF EXISTS ' if op.if_exists else ''}"
                         f"{_qualified(operations, op.view_name, op.schema)}{' CASCADE' if op.cascade else ''}")


@Operations.register_operation("add_refresh_policy")
class AddRefreshPolicyOp(MigrateOperation):
    """A refresh policy of a continuous aggregate (``add_continuous_aggregate_policy``): every
    ``schedule_interval``, materialize the buckets between ``start_offset`` and ``end_offset`` ago
    (intervals, or integers for integer time; ``start_offset=None``: from the earliest data).

    Example::

        op.add_refresh_policy("events_daily", start_offset="3 days", end_offset="1 hour",
                              schedule_interval="1 hour", schema="app")
    """

    def __init__(self, view_name: str, start_offset, end_offset, schedule_interval, schema: str | None = None,
                 if_not_exists: bool = False, initial_start=None) -> None:
        self.view_name, self.start_offset, self.end_offset = view_name, start_offset, end_offset
        self.schedule_interval, self.schema = schedule_interval, schema
        self.if_not_exists, self.initial_start = if_not_exists, initial_start
        self.arguments()

    @classmethod
    def add_refresh_policy(cls, operations, view_name: str, start_offset, end_offset, schedule_interval,
                           schema: str | None = None, if_not_exists: bool = False, initial_start=None):
        return operations.invoke(cls(view_name, start_offset, end_offset, schedule_interval, schema, if_not_exists,
                                     initial_start))

    def reverse(self) -> RemoveRefreshPolicyOp:
        return RemoveRefreshPolicyOp(self.view_name, self.schema, add=self)

    def arguments(self) -> dict[str, str | None]:
        """The named arguments of ``add_continuous_aggregate_policy`` (checked when the operation is made)."""
        return dict(start_offset=_interval(self.start_offset, "start_offset", allow_none=True),
                    end_offset=_interval(self.end_offset, "end_offset", allow_none=True),
                    schedule_interval=_interval(self.schedule_interval, "schedule_interval"),
                    if_not_exists=_bool(self.if_not_exists), initial_start=_start(self.initial_start))


@Operations.register_operation("remove_refresh_policy")
class RemoveRefreshPolicyOp(MigrateOperation):
    """Remove the refresh policy of a continuous aggregate (``if_exists=True`` by default).

    Example::

        op.remove_refresh_policy("events_daily", schema="app")
    """

    def __init__(self, view_name: str, schema: str | None = None, if_exists: bool = True,
                 add: AddRefreshPolicyOp | None = None) -> None:
        self.view_name, self.schema, self.if_exists, self.add = view_name, schema, if_exists, add

    @classmethod
    def remove_refresh_policy(cls, operations, view_name: str, schema: str | None = None, if_exists: bool = True):
        return operations.invoke(cls(view_name, schema, if_exists))

    def reverse(self) -> AddRefreshPolicyOp:
        return _kept(self.add, f"cannot reverse remove_refresh_policy({self.view_name!r}) without the policy it "
                               "removes: write op.add_refresh_policy(...) in the downgrade")


@Operations.implementation_for(AddRefreshPolicyOp)
def _add_refresh_policy(operations, op: AddRefreshPolicyOp) -> None:
    _execute(operations, _call("add_continuous_aggregate_policy", _regclass(operations, op.view_name, op.schema),
                               **op.arguments()))


@Operations.implementation_for(RemoveRefreshPolicyOp)
def _remove_refresh_policy(operations, op: RemoveRefreshPolicyOp) -> None:
    _execute(operations, _call("remove_continuous_aggregate_policy",
                               _regclass(operations, op.view_name, op.schema), if_exists=_bool(op.if_exists)))


# --------------------------------------------------------------------- user-defined jobs

def _job_config(config: Mapping[str, Any] | None, job_name: str | None) -> dict[str, Any] | None:
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"a job's config must be a mapping (a JSON object), not {type(config).__name__}")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a job's config must be JSON (strings, numbers, booleans, lists, mappings): {exc}") from None
    if job_name is None:
        return None if config is None else dict(config)
    if not isinstance(job_name, str) or not job_name.strip():
        raise ValueError(f"job_name must be a non-empty string, not {job_name!r}")
    if config is not None and JOB_NAME_KEY in config:
        raise ValueError(f"the job's config has a {JOB_NAME_KEY!r} key: it holds job_name, pass job_name= instead")
    return {**(config or {}), JOB_NAME_KEY: job_name}


def _proc(proc: str) -> str:
    if not isinstance(proc, str) or not proc.strip() or "." in proc:
        raise ValueError(f"proc must be a procedure's name without its schema (pass schema=...), not {proc!r}")
    return proc


@Operations.register_operation("add_job")
class AddJobOp(MigrateOperation):
    """A user-defined job (``add_job``): TimescaleDB calls the procedure ``proc(job_id int, config jsonb)``
    every ``schedule_interval``, as the role that added it (the owner role).

    A job is known by an id that differs from one database to the next, so dbkit finds it again
    (:class:`DeleteJobOp`, the downgrade) by what the revision said: with ``job_name``, by that name,
    which is stored in the job's config under ``"dbkit_job"`` (the procedure sees it; the job may change
    the rest of its config); without, by its procedure and its exact config.  Give ``job_name`` to
    jobs that alter their own config, and keep names unique.

    Example::

        op.add_job("purge_exports", "1 day", schema="app", config={"keep": "30 days"}, job_name="purge_exports")
    """

    def __init__(self, proc: str, schedule_interval, config: Mapping[str, Any] | None = None, initial_start=None,
                 job_name: str | None = None, schema: str | None = None, scheduled: bool = True) -> None:
        _interval(schedule_interval, "schedule_interval")
        _start(initial_start)
        self.proc, self.schedule_interval, self.initial_start = _proc(proc), schedule_interval, initial_start
        self.config, self.job_name, self.schema, self.scheduled = _job_config(config, None), job_name, schema, scheduled
        _job_config(config, job_name)

    @classmethod
    def add_job(cls, operations, proc: str, schedule_interval, config: Mapping[str, Any] | None = None,
                initial_start=None, job_name: str | None = None, schema: str | None = None, scheduled: bool = True):
        return operations.invoke(cls(proc, schedule_interval, config, initial_start, job_name, schema, scheduled))

    def reverse(self) -> DeleteJobOp:
        return DeleteJobOp(self.proc, self.config, self.schema, self.job_name, add=self)


@Operations.register_operation("delete_job")
class DeleteJobOp(MigrateOperation):
    """Delete the user-defined job(s) :class:`AddJobOp` added with these arguments: by ``job_name`` when
    given, else by the procedure and its exact ``config``.  Finding none is an error unless
    ``if_exists=True``.

    Example::

        op.delete_job("purge_exports", schema="app", job_name="purge_exports")
    """

    def __init__(self, proc: str, config: Mapping[str, Any] | None = None, schema: str | None = None,
                 job_name: str | None = None, if_exists: bool = False, add: AddJobOp | None = None) -> None:
        self.proc, self.config, self.schema, self.job_name = _proc(proc), _job_config(config, None), schema, job_name
        self.if_exists, self.add = if_exists, add
        _job_config(config, job_name)

    @classmethod
    def delete_job(cls, operations, proc: str, config: Mapping[str, Any] | None = None, schema: str | None = None,
                   job_name: str | None = None, if_exists: bool = False):
        return operations.invoke(cls(proc, config, schema, job_name, if_exists))

    def reverse(self) -> AddJobOp:
        return _kept(self.add, f"cannot reverse delete_job({self.proc!r}) without its schedule: write op.add_job(...) "
                               "in the downgrade")


def _jsonb(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else f"{_literal(json.dumps(value, sort_keys=True))}::jsonb"


@Operations.implementation_for(AddJobOp)
def _add_job(operations, op: AddJobOp) -> None:
    proc = f"{_regclass(operations, op.proc, op.schema)}::regproc"
    _execute(operations, _call(
        "add_job", proc, _interval(op.schedule_interval, "schedule_interval"),
        config=_jsonb(_job_config(op.config, op.job_name)),
        initial_start=_start(op.initial_start), scheduled=None if op.scheduled else "false"))


@Operations.implementation_for(DeleteJobOp)
def _delete_job(operations, op: DeleteJobOp) -> None:
    if op.schema:  # by name: also when the procedure was dropped first
        where = f"proc_schema = {_literal(op.schema)} AND proc_name = {_literal(op.proc)}"
    else:  # the procedure the search_path finds, as add_job did
        where = (f"to_regproc(quote_ident(proc_schema) || '.' || quote_ident(proc_name)) = "
                 f"to_regproc({_regclass(operations, op.proc, None)})")
    if op.job_name is not None:
        where += f" AND config ->> {_literal(JOB_NAME_KEY)} = {_literal(op.job_name)}"
        what = f"named {op.job_name!r}"
    else:
        config = _jsonb(op.config)
        where += f" AND config = {config}" if config else " AND config IS NULL"
        what = f"of {op.proc} with config {json.dumps(op.config, sort_keys=True)}"
    raise_ = "" if op.if_exists else (
        f" IF n = 0 THEN RAISE EXCEPTION USING MESSAGE = {_literal(f'no TimescaleDB job {what} to delete')}, "
        f"HINT = {_literal('delete_job finds a job by job_name, else by its procedure and exact config')}; END IF;")
    _execute(operations, _do_block(
        "DECLARE j int; n int := 0; BEGIN FOR j IN SELECT job_id FROM timescaledb_information.jobs "
        f"WHERE {where} LOOP PERFORM delete_job(j); n := n + 1; END LOOP;{raise_} END"))
