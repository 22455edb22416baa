"""TimescaleDB operations (issue 13, item 2): compression, compression/retention/reorder policies, continuous
aggregates and their refresh policies, user-defined jobs.  The SQL each writes offline, their reverses, and
real revisions run by dbkit's runner on the community edition: up, down, up again; the policies and jobs a
revision adds (as the owner role) are accepted and do their work when run."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations

import dbkit.migrate.ops as ops


def offline(fn) -> str:
    """The SQL ``fn(op)`` writes in Alembic's offline mode, configured as dbkit's env.py does."""
    buf = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buf,
                                                                      "literal_binds": True},
                                     dialect_opts={"paramstyle": "named"})
    fn(Operations(ctx))
    return " ".join(buf.getvalue().split())


# --------------------------------------------------------------------- offline SQL, reverses, bad input

@pytest.mark.unit
class TestOfflineSQL:
    def test_compression(self):
        sql = offline(lambda op: op.enable_compression("events", schema="app", segment_by=["tenant_id", "Device"],
                                                       order_by=["time desc", "id NULLS FIRST"], chunk_interval="7 days"))
        assert sql == ("ALTER TABLE app.events SET (timescaledb.compress, "
                       "timescaledb.compress_segmentby = 'tenant_id, \"Device\"', "
                       "timescaledb.compress_orderby = 'time DESC, id NULLS FIRST', "
                       "timescaledb.compress_chunk_time_interval = '7 days');")
        assert offline(lambda op: op.enable_compression("e", segment_by=[])) == (
            "ALTER TABLE e SET (timescaledb.compress, timescaledb.compress_segmentby = '');")
        assert offline(lambda op: op.disable_compression("events", schema="app")) == (
            "SELECT decompress_chunk((quote_ident(chunk_schema) || '.' || quote_ident(chunk_name))::regclass) "
            "FROM timescaledb_information.chunks WHERE hypertable_schema = 'app' AND hypertable_name = 'events' "
            "AND is_compressed; ALTER TABLE app.events SET (timescaledb.compress = false);")
        assert offline(lambda op: op.disable_compression("events", decompress=False)) == (
            "ALTER TABLE events SET (timescaledb.compress = false);")

    def test_policies(self):
        assert offline(lambda op: op.add_compression_policy("events", compress_after="7 days", schema="app")) == (
            "SELECT add_compression_policy('app.events', compress_after => INTERVAL '7 days');")
        assert offline(lambda op: op.add_compression_policy("m", compress_after=86400, if_not_exists=True,
                                                            schedule_interval=timedelta(hours=6))) == (
            "SELECT add_compression_policy('m', compress_after => 86400, if_not_exists => true, "
            "schedule_interval => INTERVAL '0 days 21600 seconds 0 microseconds');")
        assert offline(lambda op: op.remove_compression_policy("events", schema="app")) == (
            "SELECT remove_compression_policy('app.events', if_exists => true);")
        assert offline(lambda op: op.add_retention_policy("Events", drop_after="90 days", schema="app",
                                                          initial_start="2030-01-01 00:00+00")) == (
            "SELECT add_retention_policy('app.\"Events\"', drop_after => INTERVAL '90 days', "
            "initial_start => TIMESTAMPTZ '2030-01-01 00:00+00');")
        assert offline(lambda op: op.remove_retention_policy("events", if_exists=False)) == (
            "SELECT remove_retention_policy('events');")
        assert offline(lambda op: op.add_reorder_policy("events", "events_tenant_time_idx", schema="app")) == (
            "SELECT add_reorder_policy('app.events', 'events_tenant_time_idx');")
        assert offline(lambda op: op.remove_reorder_policy("events", schema="app")) == (
            "SELECT remove_reorder_policy('app.events', if_exists => true);")

    def test_continuous_aggregate_in_the_transaction_unless_it_is_created_with_data(self):
        select = "SELECT time_bucket('1 day', time) AS day, count(*) FROM app.events GROUP BY 1;"
        assert offline(lambda op: op.create_continuous_aggregate("daily", select, schema="app")) == (
            "CREATE MATERIALIZED VIEW app.daily WITH (timescaledb.continuous, timescaledb.materialized_only = true) "
            "AS SELECT time_bucket('1 day', time) AS day, count(*) FROM app.events GROUP BY 1 WITH NO DATA;")
        sql = offline(lambda op: op.create_continuous_aggregate("daily", select, schema="app", materialized_only=False,
                                                                with_data=True))
        assert sql == ("COMMIT; CREATE MATERIALIZED VIEW app.daily WITH (timescaledb.continuous, "
                       "timescaledb.materialized_only = false) AS SELECT time_bucket('1 day', time) AS day, count(*) "
                       "FROM app.events GROUP BY 1 WITH DATA; BEGIN;")
        assert offline(lambda op: op.drop_continuous_aggregate("daily", schema="app", cascade=True)) == (
            "DROP MATERIALIZED VIEW IF EXISTS app.daily CASCADE;")
        assert offline(lambda op: op.add_refresh_policy("daily", start_offset=None, end_offset="1 hour",
                                                        schedule_interval="30 minutes", schema="app")) == (
            "SELECT add_continuous_aggregate_policy('app.daily', start_offset => NULL, end_offset => INTERVAL '1 hour', "
            "schedule_interval => INTERVAL '30 minutes');")
        assert offline(lambda op: op.remove_refresh_policy("daily", schema="app")) == (
            "SELECT remove_continuous_aggregate_policy('app.daily', if_exists => true);")

    def test_jobs_quote_their_config_and_are_found_by_name_or_by_proc_and_config(self):
        config = {"note": "it's :late", "n": 1}
        assert offline(lambda op: op.add_job("tick", "1 hour", schema="app", config=config, job_name="ticker")) == (
            "SELECT add_job('app.tick'::regproc, INTERVAL '1 hour', "
            "config => '{\"dbkit_job\": \"ticker\", \"n\": 1, \"note\": \"it''s :late\"}'::jsonb);")
        assert offline(lambda op: op.add_job("tick", "1 day", initial_start="2030-01-01", scheduled=False)) == (
            "SELECT add_job('tick'::regproc, INTERVAL '1 day', initial_start => TIMESTAMPTZ '2030-01-01', "
            "scheduled => false);")
        by_name = offline(lambda op: op.delete_job("tick", schema="app", job_name="ticker"))
        assert by_name.startswith("DO $dbkit$ DECLARE j int; n int := 0; BEGIN FOR j IN SELECT job_id FROM "
                                  "timescaledb_information.jobs WHERE (quote_ident(proc_schema) || '.' || "
                                  "quote_ident(proc_name))::regproc = 'app.tick'::regproc AND config ->> 'dbkit_job' = "
                                  "'ticker' LOOP PERFORM delete_job(j);")
        assert "RAISE EXCEPTION USING MESSAGE = 'no TimescaleDB job named ''ticker'' to delete'" in by_name
        by_config = offline(lambda op: op.delete_job("tick", config={"tag": "$dbkit$"}, if_exists=True))
        assert by_config.startswith("DO $dbkit1$ ") and by_config.endswith(" $dbkit1$;")
        assert "AND config = '{\"tag\": \"$dbkit$\"}'::jsonb LOOP" in by_config and "RAISE" not in by_config
        assert "AND config IS NULL LOOP" in offline(lambda op: op.delete_job("tick"))

    def test_reverse_pairs(self):
        pairs = [
            (ops.EnableCompressionOp("t", "s", ["a"], ["time DESC"], "1 day"), ops.DisableCompressionOp),
            (ops.AddCompressionPolicyOp("t", "7 days", "s", True), ops.RemoveCompressionPolicyOp),
            (ops.AddRetentionPolicyOp("t", 30), ops.RemoveRetentionPolicyOp),
            (ops.AddReorderPolicyOp("t", "t_idx"), ops.RemoveReorderPolicyOp),
            (ops.CreateContinuousAggregateOp("v", "SELECT 1", with_data=True), ops.DropContinuousAggregateOp),
            (ops.AddRefreshPolicyOp("v", None, "1 hour", "1 hour"), ops.RemoveRefreshPolicyOp),
            (ops.AddJobOp("p", "1 hour", {"n": 1}, job_name="j"), ops.DeleteJobOp),
        ]
        for forward, reverse_cls in pairs:
            back = forward.reverse()
            assert isinstance(back, reverse_cls)
            assert vars(back.reverse()) == vars(forward)
        job = ops.AddJobOp("p", "1 hour", {"n": 1}, job_name="j").reverse()
        assert (job.proc, job.config, job.job_name) == ("p", {"n": 1}, "j")
        for hand_written, name in [(ops.DisableCompressionOp("t"), "op.enable_compression"),
                                   (ops.RemoveRetentionPolicyOp("t"), "op.add_retention_policy"),
                                   (ops.DropContinuousAggregateOp("v"), "op.create_continuous_aggregate"),
                                   (ops.RemoveRefreshPolicyOp("v"), "op.add_refresh_policy"),
                                   (ops.DeleteJobOp("p"), "op.add_job")]:
            with pytest.raises(ValueError, match=rf"cannot reverse .*write {name}\(\.\.\.\) in the downgrade"):
                hand_written.reverse()

    @pytest.mark.parametrize("make, message", [
        (lambda: ops.EnableCompressionOp("t", segment_by="tenant_id"), r"segment_by must be a list of columns"),
        (lambda: ops.EnableCompressionOp("t", order_by=["time; DROP TABLE t"]), r"order_by item .* must be a column"),
        (lambda: ops.AddCompressionPolicyOp("t", None), r"compress_after must be an interval such as '7 days'"),
        (lambda: ops.AddRetentionPolicyOp("t", True), r"drop_after must be an interval"),
        (lambda: ops.AddReorderPolicyOp("t", "app.t_idx"), r"index_name must be the name of an index of 't' without"),
        (lambda: ops.CreateContinuousAggregateOp("v", " ; "), r"select_sql must be the aggregate's query"),
        (lambda: ops.AddRefreshPolicyOp("v", "1 day", None, None), r"schedule_interval must be an interval"),
        (lambda: ops.AddJobOp("app.tick", "1 hour"), r"proc must be a procedure's name without its schema"),
        (lambda: ops.AddJobOp("tick", "1 hour", config=[1]), r"config must be a mapping"),
        (lambda: ops.AddJobOp("tick", "1 hour", config={"dbkit_job": "x"}, job_name="y"), r"pass job_name= instead"),
        (lambda: ops.AddJobOp("tick", "1 hour", initial_start=5), r"initial_start must be a datetime"),
    ])
    def test_bad_input_is_one_line_naming_it(self, make, message):
        with pytest.raises(ValueError, match=message) as err:
            op = make()
            offline(lambda o: o.invoke(op))
        assert "\n" not in str(err.value)
