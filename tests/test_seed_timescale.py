"""Seeding hypertables that have TimescaleDB policies (community edition): the rows end at the anchor ("now"),
so a 90-day retention policy keeps them all, and ``--compress`` runs the compression policy so the chunks it
would compress are compressed; continuous aggregates over the seeded tables are refreshed."""

import pytest
from migrate_helpers import q, settings_for

from dbkit.seed import _engine as engine

pytestmark = [pytest.mark.community, pytest.mark.integration]

SEEDS = '''\
from dbkit.seed import seeder


@seeder("readings", columns=("time", "sensor", "value"), rows={"tiny": 2000, "small": 2000, "medium": 2000,
                                                              "large": 2000})
def readings(ctx):
    times = ctx.times(ctx.rows)
    for i in range(ctx.rows):
        yield times[i], ctx.rng.randint(1, 5), ctx.rng.random()
'''


@pytest.fixture
def project(tmp_path, pg_url):
    (tmp_path / "pyproject.toml").write_text('[tool.dbkit]\nschema = "metrics"\nmigrate_set_role = false\n')
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "readings.py").write_text(SEEDS)
    q(pg_url, "CREATE SCHEMA metrics")
    q(pg_url, "CREATE TABLE metrics.readings (time timestamptz NOT NULL, sensor int NOT NULL, value float8)")
    q(pg_url, "SELECT create_hypertable('metrics.readings', by_range('time', INTERVAL '1 day'))")
    q(pg_url, "ALTER TABLE metrics.readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor')")
    q(pg_url, "SELECT add_compression_policy('metrics.readings', INTERVAL '7 days')")
    q(pg_url, "SELECT add_retention_policy('metrics.readings', INTERVAL '90 days')")
    q(pg_url, "CREATE MATERIALIZED VIEW metrics.readings_daily WITH (timescaledb.continuous) AS SELECT sensor, "
              "time_bucket(INTERVAL '1 day', time) AS day, count(*) AS n FROM metrics.readings GROUP BY 1, 2 "
              "WITH NO DATA")
    return settings_for(pg_url, tmp_path)


def test_seeded_rows_survive_retention_and_compress_as_the_policy_would(project, pg_url):
    result = engine.run(project, profile="tiny", seed=3, compress=True)
    total = q(pg_url, "SELECT count(*) FROM metrics.readings")[0][0]
    assert total == result.tables[0].rows == 2000
    # anchored to today: the 30-day window is inside the 90-day retention, so its job drops nothing
    (job,) = q(pg_url, "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'")[0]
    q(pg_url, f"CALL run_job({job})")
    assert q(pg_url, "SELECT count(*) FROM metrics.readings")[0][0] == total
    # --compress ran the compression policy: chunks older than 7 days are compressed, the newer ones not
    compressed = q(pg_url, "SELECT count(*) FILTER (WHERE is_compressed), count(*) FILTER (WHERE NOT is_compressed "
                           "AND range_end < now() - INTERVAL '8 days') FROM timescaledb_information.chunks "
                           "WHERE hypertable_name = 'readings'")[0]
    assert compressed[0] == result.tables[0].compressed_chunks >= 20 and compressed[1] == 0
    assert q(pg_url, "SELECT count(*) FROM metrics.readings")[0][0] == total  # compressed rows still read
    # the aggregate was refreshed over the seeded rows
    assert q(pg_url, "SELECT sum(n) FROM metrics.readings_daily")[0][0] == total


def test_without_compress_nothing_is_compressed(project, pg_url):
    result = engine.run(project, profile="tiny", seed=3)
    assert result.tables[0].compressed_chunks is None
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed")[0][0] == 0
