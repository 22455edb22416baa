"""TimescaleDB operations (issue 13, item 2): compression, compression/retention/reorder policies, continuous
aggregates and their refresh policies, user-defined jobs.  The SQL each writes offline, their reverses, and
real revisions run by dbkit's runner on the community edition: up, down, up again; the policies and jobs a
revision adds (as the owner role) are accepted and do their work when run."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from migrate_helpers import make_project, q, revision, settings_for

import dbkit.migrate._ops as ops
from dbkit.migrate import _runner as runner
from dbkit.migrate._runner import MigrationFailed


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
        sql = offline(lambda op: op.disable_compression("events", schema="app"))
        assert sql.startswith(
            "SELECT decompress_chunk((quote_ident(chunk_schema) || '.' || quote_ident(chunk_name))::regclass) "
            "FROM timescaledb_information.chunks WHERE hypertable_schema = 'app' AND hypertable_name = 'events' "
            "AND is_compressed; DO $dbkit$ BEGIN IF EXISTS (")
        assert ("WHERE h.hypertable_schema = 'app' AND h.hypertable_name = 'events' AND h.compression_enabled AND "
                "s.compress_interval_length IS NOT NULL) THEN ALTER TABLE app.events "
                "SET (timescaledb.compress_chunk_time_interval = '0'); END IF; END $dbkit$; "
                "ALTER TABLE app.events SET (timescaledb.compress = false);") in sql
        sql = offline(lambda op: op.disable_compression("hypertable_x", schema="hypertable_s"))
        assert "WHERE hypertable_schema = 'hypertable_s' AND hypertable_name = 'hypertable_x' AND is_compressed" in sql
        assert "WHERE h.hypertable_schema = 'hypertable_s' AND h.hypertable_name = 'hypertable_x' AND" in sql
        sql = offline(lambda op: op.disable_compression("events", decompress=False))
        assert "decompress_chunk" not in sql and "WHERE h.hypertable_schema = current_schema() AND" in sql
        assert sql.endswith("ALTER TABLE events SET (timescaledb.compress = false);")

    def test_policies(self):
        assert offline(lambda op: op.add_compression_policy("events", compress_after="7 days", schema="app")) == (
            "SELECT add_compression_policy('app.events', compress_after => INTERVAL '7 days');")
        assert offline(lambda op: op.add_compression_policy("m", compress_after=86400, if_not_exists=True,
                                                            schedule_interval=timedelta(hours=6))) == (
            "SELECT add_compression_policy('m', compress_after => 86400, if_not_exists => true, "
            "schedule_interval => INTERVAL '21600 seconds');")
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
                                  "timescaledb_information.jobs WHERE proc_schema = 'app' AND proc_name = 'tick' "
                                  "AND config ->> 'dbkit_job' = 'ticker' LOOP PERFORM delete_job(j);")
        assert "RAISE EXCEPTION USING MESSAGE = 'no TimescaleDB job named ''ticker'' to delete'" in by_name
        by_config = offline(lambda op: op.delete_job("tick", config={"tag": "$dbkit$"}, if_exists=True))
        assert by_config.startswith("DO $dbkit1$ ") and by_config.endswith(" $dbkit1$;")
        assert "AND config = '{\"tag\": \"$dbkit$\"}'::jsonb LOOP" in by_config and "RAISE" not in by_config
        assert ("WHERE to_regproc(quote_ident(proc_schema) || '.' || quote_ident(proc_name)) = to_regproc('tick') "
                "AND config") in by_config
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

    def test_the_edition_preflight_knows_every_timescaledb_operation(self):
        """The migrate preflight refuses these on an Apache server: its list must name each one."""
        from dbkit.migrate import _ops_cagg, _ops_timescale
        from dbkit.migrate._edition import COMMUNITY_OPS

        registered = {name for module in (_ops_timescale, _ops_cagg) for cls in vars(module).values()
                      if isinstance(cls, type) and cls.__module__ == module.__name__
                      for name in vars(cls) if name in dir(Operations) and not name.startswith("_")}
        assert len(registered) == 14 and registered == set(COMMUNITY_OPS)

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
        (lambda: ops.AddJobOp("tick", "1 hour", config={"at": object()}), r"a job's config must be JSON"),
        (lambda: ops.AddRetentionPolicyOp("t", "1 day", schedule_interval=""), r"schedule_interval must be an"),
        (lambda: ops.AddReorderPolicyOp("t", "i", initial_start=[]), r"initial_start must be a datetime"),
    ])
    def test_bad_input_is_one_line_naming_it(self, make, message):
        with pytest.raises(ValueError, match=message) as err:
            make()
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------- real revisions, community edition

READINGS = """
op.execute('CREATE SCHEMA IF NOT EXISTS app')
op.execute('CREATE TABLE app.readings ("time" timestamptz NOT NULL, sensor int NOT NULL, value float8 NOT NULL)')
op.create_hypertable('readings', 'time', schema='app', chunk_interval='1 day')
op.execute('CREATE INDEX readings_sensor_time_idx ON app.readings (sensor, "time" DESC)')
op.execute("INSERT INTO app.readings SELECT t, s, 1 FROM generate_series(now() - interval '20 days', now(), "
           "interval '1 hour') t, generate_series(1, 3) s")
op.execute('CREATE TABLE app.ticks (job_id int, n int, note text)')
op.execute("CREATE PROCEDURE app.tick(job_id int, config jsonb) LANGUAGE sql AS "
           "$$ INSERT INTO app.ticks VALUES (job_id, (config ->> 'n')::int, config ->> 'note') $$")
"""
DAILY = ("SELECT time_bucket('1 day', time) AS day, sensor, count(*) AS n, avg(value) AS avg "
         "FROM app.readings GROUP BY 1, 2")
#: revision -> (upgrade, downgrade): one operation (or pair) each
STEPS = {
    "0001": (READINGS, "op.execute('DROP SCHEMA app CASCADE')"),
    "0002": ("op.enable_compression('readings', schema='app', segment_by=['sensor'], order_by=['time DESC'], "
             "chunk_interval='2 days')", "op.disable_compression('readings', schema='app')"),
    "0003": ("op.add_compression_policy('readings', compress_after='2 days', schema='app')",
             "op.remove_compression_policy('readings', schema='app')"),
    "0004": ("op.add_retention_policy('readings', drop_after='10 days', schema='app')",
             "op.remove_retention_policy('readings', schema='app')"),
    "0005": ("op.add_reorder_policy('readings', 'readings_sensor_time_idx', schema='app')",
             "op.remove_reorder_policy('readings', schema='app')"),
    "0006": (f"op.create_continuous_aggregate('readings_daily', \"{DAILY}\", schema='app')\n"
             "op.add_refresh_policy('readings_daily', start_offset=None, end_offset='1 hour', "
             "schedule_interval='1 hour', schema='app')",
             "op.remove_refresh_policy('readings_daily', schema='app')\n"
             "op.drop_continuous_aggregate('readings_daily', schema='app')"),
    "0007": ("op.add_job('tick', '1 hour', schema='app', config={'n': 7, 'note': \"it's :late\"}, job_name='ticker')\n"
             "op.add_job('tick', '1 day', schema='app', config={'n': 8})",
             "op.delete_job('tick', schema='app', config={'n': 8})\n"
             "op.delete_job('tick', schema='app', job_name='ticker')"),
}


def _project(tmp_path, steps=STEPS):
    revisions, down = {}, None
    for rev, (up, back) in steps.items():
        revisions[f"{rev}_step.py"] = revision(rev, down, up, back, doc=f"step {rev}")
        down = rev
    return make_project(tmp_path, revisions)


def _jobs(url) -> dict[str, tuple]:
    """What each of the project's jobs is, by a readable key: (job id, owner, config)."""
    rows = q(url, "SELECT job_id, proc_name, coalesce(hypertable_name, ''), owner, config "
                  "FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id")
    out = {}
    for job_id, proc, table, owner, config in rows:
        key = f"{proc}:{config.get('n')}" if proc == "tick" else f"{proc}:{table}"
        out[key] = (job_id, owner, config)
    return out


def _state(url) -> dict:
    """Which of the steps' objects exist."""
    if not q(url, "SELECT to_regclass('app.readings')")[0][0]:
        return {}
    compression = q(url, "SELECT segmentby, orderby, compress_interval_length FROM "
                         "timescaledb_information.hypertable_compression_settings s JOIN timescaledb_information.hypertables "
                         "h ON h.hypertable_name = 'readings' AND h.compression_enabled "
                         "WHERE hypertable = 'app.readings'::regclass")
    interval = q(url, "SELECT compress_interval_length FROM timescaledb_information.hypertable_compression_settings "
                      "WHERE hypertable = 'app.readings'::regclass")
    return {"compression": compression[0] if compression else None, "interval": interval[0][0],
            "aggregate": q(url, "SELECT materialized_only FROM timescaledb_information.continuous_aggregates "
                                "WHERE view_schema = 'app' AND view_name = 'readings_daily'"),
            "jobs": sorted(_jobs(url))}


HEAD_JOBS = sorted(["policy_compression:readings", "policy_retention:readings", "policy_reorder:readings",
                    "policy_refresh_continuous_aggregate:_materialized_hypertable_3", "tick:7", "tick:8"])


@pytest.mark.community
@pytest.mark.integration
def test_every_operation_round_trips_up_down_up(tmp_path, pg_url):
    settings = settings_for(pg_url, _project(tmp_path))
    runner.upgrade(settings)
    head = _state(pg_url)
    assert head["compression"] == ("sensor", '"time" DESC', "2 days")
    assert head["aggregate"] == [(True,)]
    assert [k.split(":")[0] for k in head["jobs"]] == [k.split(":")[0] for k in HEAD_JOBS]
    jobs = _jobs(pg_url)
    assert {owner for _, owner, _ in jobs.values()} == {"app_owner"}, "added by revisions running as the owner"
    assert jobs["tick:7"][2] == {"n": 7, "note": "it's :late", "dbkit_job": "ticker"}
    states = {"0007": head}
    for rev in ("0006", "0005", "0004", "0003", "0002", "0001"):
        runner.downgrade(settings, "-1")
        states[rev] = _state(pg_url)
    assert len(states["0006"]["jobs"]) == 4 and "tick:7" not in states["0006"]["jobs"]
    assert states["0005"]["aggregate"] == [] and len(states["0005"]["jobs"]) == 3
    assert sorted(k.split(":")[0] for k in states["0004"]["jobs"]) == ["policy_compression", "policy_retention"]
    assert [k.split(":")[0] for k in states["0003"]["jobs"]] == ["policy_compression"]
    assert states["0002"]["jobs"] == [] and states["0002"]["compression"] is not None
    assert states["0001"]["compression"] is None and states["0001"]["jobs"] == []
    assert states["0001"]["interval"] is None, "disable_compression resets compress_chunk_time_interval"
    runner.downgrade(settings, "base")
    runner.upgrade(settings)
    again = _state(pg_url)
    assert again["compression"] == head["compression"] and again["aggregate"] == head["aggregate"]
    assert [k.split(":")[0] for k in again["jobs"]] == [k.split(":")[0] for k in head["jobs"]]
    assert runner.status(settings).current == ["0007"]


def _run_as_owner(url, job_id: int) -> None:
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        conn.execute("SET ROLE app_owner")
        conn.execute("CALL run_job(%s)", (job_id,))


@pytest.mark.community
@pytest.mark.integration
def test_policies_and_jobs_added_by_revisions_run_as_the_owner(tmp_path, pg_url):
    settings = settings_for(pg_url, _project(tmp_path))
    runner.upgrade(settings)
    assert q(pg_url, "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = 'app_owner'") == [
        (True, True)], "TimescaleDB needs the owner to have LOGIN; dbkit gives it no password"
    jobs = {k.split(":")[0] + (":" + k.split(":")[1] if k.startswith("tick") else ""): v[0]
            for k, v in _jobs(pg_url).items()}
    rows = q(pg_url, "SELECT count(*) FROM app.readings")[0][0]
    chunks = q(pg_url, "SELECT count(*) FROM show_chunks('app.readings')")[0][0]

    _run_as_owner(pg_url, jobs["policy_refresh_continuous_aggregate"])
    materialized = q(pg_url, "SELECT sum(n), count(DISTINCT day) FROM app.readings_daily")[0]
    assert materialized[1] >= 19, "the aggregate was materialized (up to end_offset)"
    assert materialized[0] == q(pg_url, "SELECT count(*) FROM app.readings WHERE time < "
                                        "(SELECT max(day) + interval '1 day' FROM app.readings_daily)")[0][0]

    _run_as_owner(pg_url, jobs["policy_compression"])
    compressed = q(pg_url, "SELECT count(*) FROM timescaledb_information.chunks "
                           "WHERE hypertable_name = 'readings' AND is_compressed")[0][0]
    assert compressed >= 8, "18 day chunks older than 2 days, merged in twos (chunk_interval='2 days')"
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' "
                     "AND NOT is_compressed AND range_end < now() - interval '3 days'") == [(0,)]
    assert q(pg_url, "SELECT count(*) FROM app.readings")[0][0] == rows

    _run_as_owner(pg_url, jobs["policy_reorder"])  # reorders a chunk not yet compressed (the newest ones are kept)

    old = q(pg_url, "SELECT count(*) FROM app.readings WHERE time < now() - interval '10 days'")[0][0]
    assert old > 0
    _run_as_owner(pg_url, jobs["policy_retention"])
    assert q(pg_url, "SELECT count(*) FROM show_chunks('app.readings')")[0][0] < chunks
    assert q(pg_url, "SELECT count(*) FROM app.readings WHERE time < now() - interval '11 days'")[0][0] == 0

    _run_as_owner(pg_url, jobs["tick:7"])
    _run_as_owner(pg_url, jobs["tick:8"])
    assert q(pg_url, "SELECT job_id, n, note FROM app.ticks ORDER BY n") == [
        (jobs["tick:7"], 7, "it's :late"), (jobs["tick:8"], 8, None)]

    # the downgrade decompresses what the policy compressed before disabling compression: no row is lost
    left = q(pg_url, "SELECT count(*) FROM app.readings")[0][0]
    runner.downgrade(settings, "0001")
    assert q(pg_url, "SELECT count(*) FROM app.readings")[0][0] == left
    assert q(pg_url, "SELECT compression_enabled FROM timescaledb_information.hypertables") == [(False,)]


def _offline_downgrade(settings, target: str) -> str:
    from alembic import command

    from dbkit.migrate._runner_state import alembic_config

    buf = io.StringIO()
    command.downgrade(alembic_config(settings, output=buf), target, sql=True)
    return buf.getvalue()


@pytest.mark.community
@pytest.mark.integration
def test_offline_script_of_every_operation(tmp_path, pg_url):
    settings = settings_for(pg_url, _project(tmp_path))
    sql = runner.offline_sql(settings, None, "0007")
    assert "SELECT add_compression_policy('app.readings', compress_after => INTERVAL '2 days');" in sql
    assert "config => '{\"dbkit_job\": \"ticker\", \"n\": 7, \"note\": \"it''s :late\"}'::jsonb);" in sql
    assert "WITH NO DATA;" in sql
    down = _offline_downgrade(settings, "0007:0001")
    assert "AND config ->> 'dbkit_job' = 'ticker' LOOP PERFORM delete_job(j);" in down
    assert down.index("remove_continuous_aggregate_policy") < down.index("DROP MATERIALIZED VIEW IF EXISTS")


LOCK_HELD = ("op.execute(\"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted "
             "AND pid = pg_backend_pid()) THEN RAISE EXCEPTION 'the migration lock was released'; END IF; END $$\")")


@pytest.mark.community
@pytest.mark.integration
def test_aggregate_with_data_runs_outside_the_transaction_and_a_failed_run_is_retried_cleanly(tmp_path, pg_url):
    """CREATE … WITH DATA commits the aggregate before it materializes: a failure then leaves it behind; the
    next run drops that leftover and creates it again, with the migration lock held throughout."""
    ratio = "SELECT time_bucket('1 day', time) AS day, sum(1 / value) AS inverse FROM app.readings GROUP BY 1"
    steps = {"0001": STEPS["0001"],
             "0002": (f"op.create_continuous_aggregate('inverse', \"{ratio}\", schema='app', with_data=True)\n"
                      + LOCK_HELD, "op.drop_continuous_aggregate('inverse', schema='app')")}
    settings = settings_for(pg_url, _project(tmp_path, steps))
    runner.upgrade(settings, "0001")
    q(pg_url, "UPDATE app.readings SET value = 0 WHERE time = (SELECT max(time) FROM app.readings)")
    with pytest.raises(MigrationFailed, match="division by zero"):
        runner.upgrade(settings)
    assert runner.status(settings).current == ["0001"]
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name = 'inverse'"
             ) == [(1,)], "TimescaleDB committed the aggregate before materializing it"
    q(pg_url, "UPDATE app.readings SET value = 2 WHERE value = 0")
    runner.upgrade(settings)
    assert runner.status(settings).current == ["0002"]
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == [(1,)]
    assert q(pg_url, "SELECT count(*) FROM app.inverse")[0][0] >= 20, "materialized while created"
    runner.downgrade(settings, "0001")
    assert q(pg_url, "SELECT to_regclass('app.inverse')") == [(None,)]


@pytest.mark.community
@pytest.mark.integration
def test_aggregate_with_no_data_is_part_of_the_revisions_transaction(tmp_path, pg_url):
    steps = {"0001": STEPS["0001"],
             "0002": (STEPS["0006"][0] + "\nop.execute('SELECT 1 / 0')", STEPS["0006"][1])}
    settings = settings_for(pg_url, _project(tmp_path, steps))
    with pytest.raises(MigrationFailed, match="division by zero"):
        runner.upgrade(settings)
    assert runner.status(settings).current == ["0001"]
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == [(0,)]
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000") == [(0,)]


@pytest.mark.community
@pytest.mark.integration
def test_deleting_a_job_that_is_not_there_fails_the_downgrade(tmp_path, pg_url):
    settings = settings_for(pg_url, _project(tmp_path, {k: STEPS[k] for k in ("0001", "0002", "0003", "0004", "0005",
                                                                              "0006", "0007")}))
    runner.upgrade(settings)
    q(pg_url, "SELECT delete_job(job_id) FROM timescaledb_information.jobs WHERE config ->> 'dbkit_job' = 'ticker'")
    with pytest.raises(MigrationFailed, match="no TimescaleDB job named 'ticker' to delete"):
        runner.downgrade(settings, "0006")
    assert runner.status(settings).current == ["0007"]
    assert "tick:8" in _jobs(pg_url), "the revision's other delete was rolled back with it"


@pytest.mark.community
@pytest.mark.integration
def test_an_owner_without_login_is_refused_by_timescaledb_and_migrate_gives_it_login(tmp_path, pg_url):
    """Why the role model gives the owner LOGIN (never a password): TimescaleDB refuses a policy whose owner cannot
    log in.  A migration corrects an owner someone set NOLOGIN (its preflight applies the role model) before the
    revisions run, so the policy is accepted."""
    settings = settings_for(pg_url, _project(tmp_path, {k: STEPS[k] for k in ("0001", "0002", "0003")}))
    runner.upgrade(settings, "0002")
    q(pg_url, "ALTER ROLE app_owner NOLOGIN")
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("SET ROLE app_owner")
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as err:
            conn.execute("SELECT add_compression_policy('app.readings', compress_after => INTERVAL '2 days')")
    assert err.value.diag.message_hint == "Hypertable owner must have LOGIN permission to run background tasks."
    runner.upgrade(settings)
    assert q(pg_url, "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = 'app_owner'") == [
        (True, True)]
    assert list(_jobs(pg_url)) == ["policy_compression:readings"]


#: what every background job of TimescaleDB 2.19.3 fails with on PostgreSQL 15.20 (its own jobs too; run_job works)
PORTAL_BUG = 'cannot drop portal "" while it is being set up'


@pytest.mark.community
@pytest.mark.integration
def test_timescaledb_scheduler_runs_the_policies_and_jobs_as_the_owner(tmp_path, shared_tmp):
    """The end-to-end proof, on a server of its own whose TimescaleDB has background workers (the shared test
    server has none): the scheduler starts each job as its owner, the owner role, which needs LOGIN; every
    job the revisions added succeeds (``timescaledb_information.job_stats``) and did its work."""
    import time

    from dbkit._dev import DevCluster, provision

    cluster = DevCluster(shared_tmp / "bgw", extra_conf=("fsync = off", "max_worker_processes = 16",
                                                         "timescaledb.max_background_workers = 8"))
    try:
        url = provision(cluster, ("timescaledb", "vector", "pgcrypto")).url
        settings = settings_for(url, _project(tmp_path))
        # What the revisions added, before the scheduler runs any of it: a job that fails at once can leave the
        # catalog (the reorder job, when the retention job drops the chunk it works on) before it is read
        q(url, "SELECT _timescaledb_functions.stop_background_workers()")
        runner.upgrade(settings)
        jobs = _jobs(url)
        assert len(jobs) == 6, jobs
        q(url, "SELECT _timescaledb_functions.start_background_workers()")
        every = sorted([3, *(j for j, _, _ in jobs.values())])  # and TimescaleDB's own job (owned by the superuser)

        def runs() -> tuple[dict, list]:
            try:
                status = dict(q(url, "SELECT job_id, last_run_status FROM timescaledb_information.job_stats "
                                     "WHERE last_run_status IS NOT NULL"))
                return status, q(url, "SELECT job_id, sqlerrcode, err_message FROM timescaledb_information.job_errors")
            except psycopg.OperationalError:  # the server went away: skip only when a background worker crashed it
                crashed = [line for line in Path(cluster.log_file).read_text(errors="replace").splitlines()
                           if "terminated by signal" in line]
                if not crashed:
                    raise
                what = crashed[0].split("LOG:")[-1].strip()
                pytest.skip(f"a TimescaleDB background worker crashed the server ({what}): the installed TimescaleDB "
                            "build and this PostgreSQL minor release do not work together")

        def portal_bug_only(status, errors) -> bool:
            """Every job of the revisions has run, and this server's jobs fail with the portal bug: nothing they do
            can be shown here (seen: TimescaleDB's own job leaving a failed run without a message, and jobs whose
            runs the scheduler did not record, around the portal errors)."""
            ran = set(status) | {e[0] for e in errors}
            return {j for j, _, _ in jobs.values()} <= ran and PORTAL_BUG in {e[2] for e in errors}

        status, errors = runs()
        for _ in range(600):  # polls until every job has run once (bounded; no assertion on how long it took)
            if sorted(status) == every or (3 in status and {e[2] for e in errors} == {PORTAL_BUG}) \
                    or portal_bug_only(status, errors):
                break
            time.sleep(0.2)
            status, errors = runs()
        assert not [e for e in errors if e[1] == "28000" or "LOGIN" in (e[2] or "")], errors
        # seen too: the portal bug in some jobs while others never ran before the polling ended (the scheduler
        # stalls); once the bug shows, what the jobs did cannot be shown here
        if PORTAL_BUG in {e[2] for e in errors}:
            pytest.skip(f"background jobs fail on this server ({PORTAL_BUG!r}, TimescaleDB's own error): the "
                        "installed TimescaleDB build and this PostgreSQL minor release do not work together")
        assert sorted(status.items()) == [(j, "Success") for j in every], errors
        assert q(url, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed")[0][0] > 0
        assert q(url, "SELECT n, note FROM app.ticks ORDER BY n") == [(7, "it's :late"), (8, None)]
        assert q(url, "SELECT count(*) FROM app.readings WHERE time < now() - interval '11 days'") == [(0,)]
    finally:
        cluster.down(purge=True)
