"""`dbkit reset`: drop, recreate, migrate, seed; refused where it could hurt."""

import pytest
from migrate_helpers import q, settings_for

from dbkit._reset import is_local, reset
from dbkit._urls import parse_database_url
from dbkit.errors import Refused

pytestmark = pytest.mark.integration


def test_reset_rebuilds_only_this_database(dbkit_db, migrated_template):
    other = dbkit_db.with_dbname(dbkit_db.dbname + "_other")
    q(dbkit_db.with_dbname("postgres"), f'CREATE DATABASE "{other.dbname}" TEMPLATE "{migrated_template}"')
    try:
        q(dbkit_db, "CREATE TABLE app.stray (id int)")
        q(other, "CREATE TABLE app.keep_me (id int)")
        result = reset(settings_for(dbkit_db), profile="tiny", seed=3)
        assert result.migrated_to == ["0006"] and result.seeded_rows > 0
        assert q(dbkit_db, "SELECT to_regclass('app.stray')") == [(None,)]
        assert q(dbkit_db, "SELECT count(*) FROM app.tenants") == [(3,)]
        assert q(other, "SELECT to_regclass('app.keep_me') IS NOT NULL") == [(True,)]
    finally:
        q(dbkit_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{other.dbname}" WITH (FORCE)')


def test_reset_refusals(dbkit_db):
    settings = settings_for(dbkit_db, DBKIT_ENV="staging")
    with pytest.raises(Refused, match="reset is refused: DBKIT_ENV=staging"):
        reset(settings)
    with pytest.raises(Refused, match=f"needs the database name confirmed.*--yes-i-know {dbkit_db.dbname}"):
        reset(settings, force=True, confirmed_name="wrong")
    prod = settings_for(dbkit_db, DBKIT_ENV="prod")  # prod: its requirements come first, even with --force
    with pytest.raises(Refused, match="reset is refused: DBKIT_ENV=prod requirements are not met"):
        reset(prod, force=True, confirmed_name=dbkit_db.dbname)
    assert q(dbkit_db, "SELECT count(*) FROM dbkit.alembic_version") == [(1,)]  # untouched


def test_reset_cli_refuses_prod_with_a_one_liner(dbkit_db, dbkit_cli):
    res = dbkit_cli("reset", env={"DATABASE_URL": dbkit_db.raw, "DBKIT_ENV": "prod"})
    assert res.returncode == 5 and res.stderr.startswith("dbkit: error: reset is refused: DBKIT_ENV=prod")
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.unit
def test_local_hosts():
    assert is_local(parse_database_url("postgresql://u@127.0.0.1/db"))
    assert is_local(parse_database_url("postgresql://u@localhost:5432/db"))
    assert is_local(parse_database_url("postgresql:///db?host=/var/run/postgresql"))
    assert not is_local(parse_database_url("postgresql://u@db.internal/db"))
    assert not is_local(parse_database_url("postgresql://u@127.0.0.1,db.internal/db"))
