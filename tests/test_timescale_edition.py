"""Which TimescaleDB edition the tests run on: the files say it, the server agrees, and the community
edition's features really work here (CI builds it from the vendored source: .ci/run)."""

import psycopg
import pytest

from tests.conftest import timescale_edition


def test_the_server_reports_the_installed_edition(pg_url):
    with psycopg.connect(pg_url.conninfo) as conn:
        license_ = conn.execute("SHOW timescaledb.license").fetchone()[0]
    assert license_ == {"community": "timescale", "apache": "apache"}[timescale_edition()]


@pytest.mark.community
def test_compression_works_on_the_community_edition(pg_url):
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings (time timestamptz NOT NULL, sensor int NOT NULL, value float8)")
        conn.execute("SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'))")
        conn.execute("INSERT INTO readings SELECT t, (random() * 10)::int, random() "
                     "FROM generate_series(now() - INTERVAL '5 days', now(), INTERVAL '1 minute') t")
        conn.execute("ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor')")
        before = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        compressed = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c").fetchone()[0]
        assert compressed >= 5
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == before
        stats = conn.execute("SELECT number_compressed_chunks FROM hypertable_compression_stats('readings')")
        assert stats.fetchone()[0] == compressed
