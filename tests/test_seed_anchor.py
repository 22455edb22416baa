"""Seeded time series end at an anchor: "now" (the start of today, UTC) by default, fixed by
``--anchor``/DBKIT_SEED_ANCHOR; the same seed and anchor write the same rows, another anchor
shifts every timestamp by exactly the difference."""

import json
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from migrate_helpers import REPO, q, settings_for

from dbkit.errors import ConfigError, Refused
from dbkit.seed import _engine as engine
from dbkit.seed._context import default_anchor, format_anchor, parse_anchor

pytestmark = pytest.mark.integration

TABLES = ["tenants", "users", "documents", "document_chunks", "events", "audit_log"]
TIME_COLUMNS = {"tenants": "created_at", "users": "created_at", "documents": "created_at", "events": "time",
                "audit_log": "at"}


def _md5(url, table):
    return q(url, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM app.{table} t")[0][0]


def _rows(url, table):
    """Every row of ``table`` as Python values, with the name of each column."""
    with psycopg.connect(url.conninfo) as conn:
        cur = conn.execute(f"SELECT * FROM app.{table}")
        return [d.name for d in cur.description], cur.fetchall()


@pytest.fixture
def twin(migrated_url, migrated_template):
    """A second fresh database at head, beside ``migrated_url``."""
    other = migrated_url.with_dbname(migrated_url.dbname + "_twin")
    q(migrated_url.with_dbname("postgres"), f'CREATE DATABASE "{other.dbname}" TEMPLATE "{migrated_template}"')
    yield other
    q(migrated_url.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{other.dbname}" WITH (FORCE)')


def _env(url):
    return {"DATABASE_URL": url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}


@pytest.mark.unit
def test_anchor_values_are_read_as_utc():
    assert parse_anchor("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)  # a date: midnight UTC
    assert parse_anchor("2026-03-01T12:30") == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)  # no zone: UTC
    assert parse_anchor("2026-03-01T12:30+02:00") == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    assert parse_anchor("2026-03-01T12:30+02:00").tzinfo is UTC
    assert parse_anchor(datetime(2026, 3, 1, 1, tzinfo=timezone(timedelta(hours=5)))) == datetime(
        2026, 2, 28, 20, tzinfo=UTC)
    assert default_anchor(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert default_anchor(datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == datetime(
        2026, 3, 2, tzinfo=UTC)  # the day in UTC, not in the local zone
    assert format_anchor(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01"
    assert format_anchor(datetime(2026, 3, 1, 12, 30, tzinfo=UTC)) == "2026-03-01T12:30:00+00:00"
    for shown in ("2026-03-01", "2026-03-01T12:30:00+00:00"):
        assert format_anchor(parse_anchor(shown)) == shown  # what is printed is what --anchor takes back
    with pytest.raises(ConfigError, match=r"^--anchor is 'yesterday', not an ISO date or timestamp; .*"
                                          r"example: --anchor 2026-01-01"):
        parse_anchor("yesterday")
    with pytest.raises(ConfigError, match=r"^DBKIT_SEED_ANCHOR is '2026-13-01'.*example: DBKIT_SEED_ANCHOR=2026-01-01"):
        parse_anchor("2026-13-01", variable="DBKIT_SEED_ANCHOR")


def test_same_seed_and_anchor_write_the_same_bytes(migrated_url, twin):
    first = engine.run(settings_for(migrated_url), profile="tiny", seed=5, anchor="2026-05-17T08:00:00")
    second = engine.run(settings_for(twin, DBKIT_SEED_ANCHOR="2026-05-17T08:00:00Z"), profile="tiny", seed=5)
    assert first.anchor == second.anchor == datetime(2026, 5, 17, 8, tzinfo=UTC)
    assert [t.checksum for t in first.tables] == [t.checksum for t in second.tables]
    for table in TABLES:
        assert _md5(migrated_url, table) == _md5(twin, table), table
    newest = q(migrated_url, "SELECT max(time) FROM app.events")[0][0]
    assert timedelta(0) < datetime(2026, 5, 17, 8, tzinfo=UTC) - newest <= timedelta(hours=3)  # close to it


def test_another_anchor_shifts_every_timestamp_by_the_difference(migrated_url, twin):
    delta = timedelta(days=41, hours=7, minutes=13, seconds=5)
    engine.run(settings_for(migrated_url), profile="tiny", seed=6, anchor="2026-01-01")
    later = (datetime(2026, 1, 1, tzinfo=UTC) + delta).isoformat()
    engine.run(settings_for(twin), profile="tiny", seed=6, anchor=later)
    for table in TABLES:
        names, before = _rows(migrated_url, table)
        names_after, after = _rows(twin, table)
        assert names == names_after
        at = names.index(TIME_COLUMNS[table]) if table in TIME_COLUMNS else None
        shifted = [tuple(v + delta if i == at else v for i, v in enumerate(row)) for row in before]
        assert sorted(shifted, key=repr) == sorted(after, key=repr), table
        assert len(after) > 0


def test_default_anchor_is_today_so_retention_keeps_the_rows(migrated_url):
    result = engine.run(settings_for(migrated_url), profile="tiny", seed=7)
    assert result.anchor == default_anchor(result.anchor) and result.anchor.tzinfo is UTC
    # relative to the server's clock, in days: the newest event is from the last day-ish, none in the future
    age_newest, age_oldest = q(migrated_url, "SELECT extract(epoch FROM now() - max(time)) / 86400, "
                                             "extract(epoch FROM now() - min(time)) / 86400 FROM app.events")[0]
    assert 0 < age_newest < 2
    assert age_oldest < 40  # a 90-day retention policy keeps every seeded event
    for table, column in TIME_COLUMNS.items():
        assert q(migrated_url, f"SELECT max({column}) < now() FROM app.{table}") == [(True,)], table
    # the run records the anchor it used, and seed status returns it, in UTC whatever the session's TimeZone
    q(migrated_url, f'ALTER DATABASE "{migrated_url.dbname}" SET timezone = \'Asia/Kolkata\'')
    [run] = engine.status(settings_for(migrated_url)).runs
    assert run.anchor == result.anchor and run.anchor.utcoffset() == timedelta(0)


def test_cli_records_and_reuses_the_anchor(migrated_url, dbkit_cli):
    env = _env(migrated_url)
    first = dbkit_cli("seed", "--profile", "tiny", "--seed", "3", "--anchor", "2026-02-03T04:05:06", "--json",
                      env=env)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["status"] == "seeded" and data["anchor"] == "2026-02-03T04:05:06+00:00"
    assert "--anchor 2026-02-03T04:05:06+00:00 writes the same rows again" in data["message"]
    st = json.loads(dbkit_cli("seed", "status", "--json", env=env).stdout)
    assert st["runs"][0]["anchor"].startswith("2026-02-03")
    assert datetime.fromisoformat(st["runs"][0]["anchor"]) == datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    human = dbkit_cli("seed", "status", env=env)
    assert "time series end at 2026-02-03T04:05:06+00:00 (--anchor 2026-02-03T04:05:06+00:00)" in human.stdout
    # the same anchor again: nothing to do; the default anchor accepts rows of an earlier "now"
    again = json.loads(dbkit_cli("seed", "--profile", "tiny", "--seed", "3", "--anchor", "2026-02-03T04:05:06Z",
                                 "--json", env=env).stdout)
    assert again["status"] == "noop" and again["anchor"] == "2026-02-03T04:05:06+00:00"
    default = json.loads(dbkit_cli("seed", "--profile", "tiny", "--seed", "3", "--json", env=env).stdout)
    assert default["status"] == "noop" and default["anchor"] == "2026-02-03T04:05:06+00:00"
    # another fixed anchor would write other rows: refused, one line, nothing changed
    before = _md5(migrated_url, "events")
    other = dbkit_cli("seed", "--profile", "tiny", "--seed", "3", "--anchor", "2026-02-04", env=env)
    assert other.returncode == 5, other.stderr
    assert other.stderr.startswith("dbkit: error: the tables hold seed 3's rows for anchor "
                                   "2026-02-03T04:05:06+00:00, not for anchor 2026-02-04")
    assert "--truncate" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert _md5(migrated_url, "events") == before
    with pytest.raises(Refused, match="not for anchor 2026-02-04"):
        engine.run(settings_for(migrated_url, DBKIT_SEED_ANCHOR="2026-02-04"), profile="tiny", seed=3)
    reloaded = engine.run(settings_for(migrated_url), profile="tiny", seed=3, anchor="2026-02-04", truncate=True)
    assert reloaded.status == "seeded" and format_anchor(reloaded.anchor) == "2026-02-04"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", ""])
def test_bad_anchor_is_one_line_and_exit_2(migrated_url, dbkit_cli, value):
    env = _env(migrated_url)
    res = dbkit_cli("seed", "--profile", "tiny", "--anchor", value, env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("dbkit: error: --anchor is ") and "example: --anchor 2026-01-01" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert q(migrated_url, "SELECT count(*) FROM app.tenants") == [(0,)]
    if not value:
        return  # an empty variable is an unset one (the default anchor), as for every setting
    from_env = dbkit_cli("seed", "--profile", "tiny", env={**env, "DBKIT_SEED_ANCHOR": value})
    assert from_env.returncode == 2 and "DBKIT_SEED_ANCHOR" in from_env.stderr, from_env.stderr
    assert len(from_env.stderr.strip().splitlines()) == 1
    assert q(migrated_url, "SELECT count(*) FROM app.tenants") == [(0,)]


def test_reset_takes_the_anchor_and_refuses_a_bad_one_before_dropping(dbkit_db, dbkit_cli):
    env = _env(dbkit_db)
    q(dbkit_db, "CREATE TABLE app.keep_me (id int)")
    bad = dbkit_cli("reset", "--profile", "tiny", "--anchor", "soon", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("dbkit: error: --anchor is 'soon'"), bad.stderr
    assert q(dbkit_db, "SELECT to_regclass('app.keep_me') IS NOT NULL") == [(True,)]  # not dropped
    good = dbkit_cli("reset", "--profile", "tiny", "--anchor", "2026-04-01", "--json", env=env)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["anchor"] == "2026-04-01"
    assert q(dbkit_db, "SELECT max(time) < '2026-04-01' AND max(time) > '2026-03-31' FROM app.events") == [(True,)]
    assert q(dbkit_db, "SELECT anchor FROM dbkit.seed_runs") == [(datetime(2026, 4, 1, tzinfo=UTC),)]


def test_runs_recorded_before_the_anchor_was_kept(migrated_url):
    """A dbkit.seed_runs table from before: status reads it (anchor None); the next run adds the column."""
    q(migrated_url, "CREATE SCHEMA IF NOT EXISTS dbkit")
    q(migrated_url, "CREATE TABLE dbkit.seed_runs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                    "started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL DEFAULT now(), "
                    "seed bigint NOT NULL, profile text NOT NULL, scale double precision NOT NULL, "
                    "tenant_skew double precision NOT NULL, tables jsonb NOT NULL, versions jsonb NOT NULL)")
    q(migrated_url, f'ALTER TABLE dbkit.seed_runs OWNER TO "{settings_for(migrated_url).role_owner}"')
    q(migrated_url, "INSERT INTO dbkit.seed_runs (started_at, seed, profile, scale, tenant_skew, tables, versions) "
                    "VALUES (now(), 1, 'tiny', 1, 0, '{}', '{}')")
    [old] = engine.status(settings_for(migrated_url)).runs
    assert old.anchor is None and old.as_dict()["anchor"] is None
    engine.run(settings_for(migrated_url), profile="tiny", seed=1, anchor="2026-06-01", truncate=True)
    new, old = engine.status(settings_for(migrated_url)).runs
    assert new.anchor == datetime(2026, 6, 1, tzinfo=UTC) and old.anchor is None
