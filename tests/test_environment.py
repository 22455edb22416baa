"""DBKIT_ENV=prod requirements and direct connections (DIRECT_DATABASE_URL, PgBouncer ports)."""

import logging
from pathlib import Path

import pytest

from dbkit import _lifecycle as lifecycle
from dbkit import _target as target
from dbkit.config import load_settings
from dbkit.errors import Refused

PASSWORDS = {"DBKIT_PASSWORD_APP_RLS": "a", "DBKIT_PASSWORD_APP_FULL": "b", "DBKIT_PASSWORD_APP_READONLY": "c"}


def prod(tmp_path: Path, **env):
    return load_settings(environ={"DBKIT_ENV": "prod", **env}, cwd=tmp_path)


@pytest.mark.unit
def test_prod_requirements(tmp_path):
    bad = prod(tmp_path, DATABASE_URL="postgresql://app:pw@db.internal/app")
    problems = bad.environment_problems()
    assert any("DATABASE_URL must use TLS" in p and "app:***@db.internal" in p for p in problems)
    assert any("DBKIT_BACKUP_URI=backups is on this machine" in p for p in problems)
    assert any(p.startswith("DBKIT_PASSWORD_APP_RLS is not set") for p in problems)
    good = prod(tmp_path, DATABASE_URL="postgresql://app:pw@db.internal/app?sslmode=verify-full",
                DBKIT_BACKUP_URI="s3://backups/prod", **PASSWORDS)
    assert good.environment_problems() == []
    local = prod(tmp_path, DATABASE_URL="postgresql://app@127.0.0.1/app", DBKIT_BACKUP_URI="s3://b/p", **PASSWORDS)
    assert local.environment_problems() == []  # TLS is required for remote hosts only
    assert load_settings(environ={"DBKIT_ENV": "staging"}, cwd=tmp_path).environment_problems() == []
    with pytest.raises(Refused, match="prune --apply is refused: DBKIT_ENV=prod requirements are not met"):
        bad.require_environment("prune --apply")


@pytest.mark.unit
def test_direct_url_and_pgbouncer_warning(tmp_path, caplog):
    pooled = load_settings(environ={"DATABASE_URL": "postgresql://app@127.0.0.1:6432/app"}, cwd=tmp_path)
    with caplog.at_level(logging.WARNING, logger="dbkit"):
        assert target.resolve_url(pooled, direct=True).port == 6432
    assert "usually PgBouncer" in caplog.text and "DIRECT_DATABASE_URL" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dbkit"):
        assert target.resolve_url(pooled).port == 6432  # the application's own URL: no warning
    assert caplog.text == ""
    direct = load_settings(environ={"DATABASE_URL": "postgresql://app@127.0.0.1:6432/app",
                                    "DIRECT_DATABASE_URL": "postgresql://app@127.0.0.1:5432/app"}, cwd=tmp_path)
    assert target.resolve_url(direct, direct=True).port == 5432 and target.resolve_url(direct).port == 6432


@pytest.mark.integration
def test_destructive_commands_blocked_in_prod(dbkit_db, tmp_path):
    from migrate_helpers import settings_for

    from dbkit.migrate import _runner as runner

    settings = settings_for(dbkit_db, DBKIT_ENV="prod", DBKIT_BACKUP_URI=str(tmp_path))
    with pytest.raises(Refused, match="downgrading is refused: DBKIT_ENV=prod requirements are not met"):
        runner.downgrade(settings, "-1", allow_prod=True)
    with pytest.raises(Refused, match="restore --swap is refused"):
        lifecycle.restore(settings, "latest", swap=True, yes=True)
    assert runner.status(settings).current == ["0006"]
