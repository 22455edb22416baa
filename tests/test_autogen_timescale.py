"""Autogenerate and ``dbkit migrate check`` ignore what TimescaleDB creates by itself (issue 13, item 5): after a
revision that uses every TimescaleDB operation, and after the policies ran (compressed chunks, a materialized
aggregate), the models still match: no materialization hypertable, compressed chunk table, chunk, chunk index,
aggregate view or internal view shows up as a difference, even when the chunks live in the application's schema."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from conftest import clean_env
from migrate_helpers import copy_reference_project, q, revision, settings_for

from dbkit.migrate import _runner as runner

pytestmark = [pytest.mark.community, pytest.mark.integration]

# appended to the reference project's migrations/models.py
READINGS = '''

readings = Table(
    "readings", metadata,  # a TimescaleDB hypertable on "time", compressed, with policies and an aggregate
    Column("time", DateTime(timezone=True), nullable=False),
    Column("sensor", Integer, nullable=False),
    Column("value", Double, nullable=False),
    Index("readings_sensor_time_idx", "sensor", text('"time" DESC')),
)

# a continuous aggregate declared to query it (a view: autogenerate must not create it as a table)
readings_hourly = Table(
    "readings_hourly", metadata,
    Column("hour", DateTime(timezone=True)),
    Column("sensor", Integer),
    Column("avg", Double),
)
'''

UPGRADE = """
s = 'app'
op.create_table('readings', sa.Column('time', sa.DateTime(timezone=True), nullable=False),
                sa.Column('sensor', sa.Integer(), nullable=False), sa.Column('value', sa.Double(), nullable=False),
                schema=s)
op.execute(f"SELECT create_hypertable('{s}.readings', 'time', chunk_time_interval => INTERVAL '1 day', "
           f"associated_schema_name => '{CHUNKS}')")
op.create_index('readings_sensor_time_idx', 'readings', ['sensor', sa.text('"time" DESC')], schema=s)
op.execute(f"INSERT INTO {s}.readings SELECT t, g, 1 FROM generate_series(now() - interval '12 days', now(), "
           "interval '1 hour') t, generate_series(1, 3) g")
op.enable_compression('readings', schema=s, segment_by=['sensor'], order_by=['time DESC'])
op.add_compression_policy('readings', compress_after='2 days', schema=s)
op.add_retention_policy('readings', drop_after='30 days', schema=s)
op.add_reorder_policy('readings', 'readings_sensor_time_idx', schema=s)
op.create_continuous_aggregate('readings_hourly', f"SELECT time_bucket('1 hour', time) AS hour, sensor, "
                               f"avg(value) AS avg FROM {s}.readings GROUP BY 1, 2", schema=s, with_data=True)
op.create_continuous_aggregate('readings_daily', f"SELECT time_bucket('1 day', hour) AS day, sensor, "
                               f"avg(avg) AS avg FROM {s}.readings_hourly GROUP BY 1, 2", schema=s,
                               materialized_only=False)
op.add_refresh_policy('readings_daily', start_offset=None, end_offset='1 hour', schedule_interval='1 hour', schema=s)
op.execute(f"CREATE PROCEDURE {s}.noop(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$")
op.add_job('noop', '1 day', schema=s, config={'n': 1}, job_name='noop')
"""

DOWNGRADE = """
s = 'app'
op.delete_job('noop', schema=s, job_name='noop')
op.execute(f'DROP PROCEDURE {s}.noop')
op.remove_refresh_policy('readings_daily', schema=s)
op.drop_continuous_aggregate('readings_daily', schema=s)
op.drop_continuous_aggregate('readings_hourly', schema=s)
op.remove_reorder_policy('readings', schema=s)
op.remove_retention_policy('readings', schema=s)
op.remove_compression_policy('readings', schema=s)
op.disable_compression('readings', schema=s)
op.drop_table('readings', schema=s)
"""


def _project(tmp_path, chunks: str):
    project = copy_reference_project(tmp_path / "proj")
    models = project / "migrations" / "models.py"
    models.write_text(models.read_text() + READINGS)
    text = revision("0007", "0006", UPGRADE, DOWNGRADE, doc="readings: every TimescaleDB operation")
    text = text.replace("from alembic import op\n", f"import sqlalchemy as sa\nfrom alembic import op\n\nCHUNKS = {chunks!r}\n")
    (project / "migrations" / "versions" / "0007_readings.py").write_text(text)
    return project


def _run_jobs(url) -> None:
    """Run every policy and job once (the test server has no background workers), as the owner role."""
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        conn.execute("SET ROLE app_owner")
        ids = [r[0] for r in conn.execute("SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 "
                                          "ORDER BY job_id")]
        for job_id in ids:
            conn.execute("CALL run_job(%s)", (job_id,))


@pytest.mark.parametrize("chunks", ["_timescaledb_internal", "app"])
def test_check_is_clean_after_every_timescaledb_operation(tmp_path, pg_url, chunks):
    settings = settings_for(pg_url, _project(tmp_path, chunks))
    runner.upgrade(settings)
    _run_jobs(pg_url)
    internals = dict(q(pg_url, """
        SELECT 'compressed chunks', count(*) FROM timescaledb_information.chunks WHERE is_compressed
        UNION ALL SELECT 'chunks in app', count(*) FROM timescaledb_information.chunks WHERE chunk_schema = 'app'
        UNION ALL SELECT 'aggregates', count(*) FROM timescaledb_information.continuous_aggregates
        UNION ALL SELECT 'materialized rows', count(*) FROM app.readings_hourly"""))
    assert internals["compressed chunks"] >= 8 and internals["aggregates"] == 2 and internals["materialized rows"] > 0
    assert (internals["chunks in app"] > 0) == (chunks == "app")

    result = runner.check(settings)
    assert result.clean, result.as_dict()
    assert result.schema_diffs == []

    # plain autogenerate writes an empty revision too
    res = subprocess.run([sys.executable, "-m", "dbkit", "migrate", "new", "-m", "nothing", "--autogenerate"],
                         cwd=tmp_path / "proj", capture_output=True, text=True, timeout=180, check=False,
                         env=clean_env(DATABASE_URL=pg_url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(tmp_path / "proj")))
    assert res.returncode == 0, res.stderr
    [path] = (tmp_path / "proj" / "migrations" / "versions").glob("*_nothing.py")
    body = path.read_text()
    assert "op.create_table" not in body and "op.drop_table" not in body and "op.drop_index" not in body, body
    assert "op.create_index" not in body, body


def test_a_model_difference_is_still_reported(tmp_path, pg_url):
    """The filter hides TimescaleDB's objects, not the application's: a missing column of the hypertable shows."""
    project = _project(tmp_path, "app")
    settings = settings_for(pg_url, project)
    runner.upgrade(settings)
    models = project / "migrations" / "models.py"
    models.write_text(models.read_text().replace('    Column("value", Double, nullable=False),\n    Index("readings',
                                                 '    Column("value", Double, nullable=False),\n'
                                                 '    Column("unit", Text),\n    Index("readings'))
    diffs = runner.check(settings).schema_diffs
    assert len(diffs) == 1 and "add_column" in diffs[0] and "unit" in diffs[0], diffs

