"""DBKIT_ENV=prod: a downgrade is refused the same way through `dbkit migrate down` and plain `alembic`.

The roles get names of their own (DBKIT_ROLE_*): prod sets the LOGIN roles' passwords, and
roles are shared by the whole test cluster.
"""

import os
import subprocess
import sys
import uuid

import pytest
from migrate_helpers import REPO, q, settings_for

from dbkit.errors import Refused
from dbkit.migrate import _runner as runner

pytestmark = pytest.mark.integration


@pytest.fixture
def prod(pg_url):
    """(environment for a subprocess, Settings) of a prod deploy whose prod requirements are met."""
    tag = uuid.uuid4().hex[:8]
    roles = {kind: f"prodt_{tag}_{kind}" for kind in ("owner", "enforce", "bypass", "readonly")}
    extra = {f"DBKIT_ROLE_{kind.upper()}": name for kind, name in roles.items()}
    extra.update({f"DBKIT_PASSWORD_{roles[k].upper()}": f"pw-{k}-{tag}" for k in ("enforce", "bypass", "readonly")})
    extra["DBKIT_BACKUP_URI"] = "s3://dbkit-prod-test/backups"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBKIT_", "DATABASE_URL"))}
    env.update(DATABASE_URL=pg_url.raw, DBKIT_ENV="prod", **extra)
    settings = settings_for(pg_url, **{**extra, "DBKIT_ENV": "prod"})
    yield env, settings
    for name in roles.values():
        q(pg_url, f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                  f"EXECUTE 'DROP OWNED BY {name} CASCADE'; EXECUTE 'DROP ROLE {name}'; END IF; END $$")


def _alembic(env, *args):
    return subprocess.run([sys.executable, "-m", "alembic", "-c", "alembic.ini", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _version(pg_url):
    return q(pg_url, "SELECT version_num FROM dbkit.alembic_version")


def test_plain_alembic_downgrade_is_refused_in_prod(prod, pg_url):
    env, settings = prod
    runner.upgrade(settings)  # upgrading in prod is fine
    assert _version(pg_url) == [("0006",)]
    res = _alembic(env, "downgrade", "-1")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    refusal = [line for line in res.stdout.splitlines() if "refused" in line]
    assert len(refusal) == 1, res.stdout
    assert refusal[0].startswith("FAILED: downgrading is refused when DBKIT_ENV=prod")
    assert "-x allow_prod=1" in refusal[0] and "--allow-prod" in refusal[0]
    assert _version(pg_url) == [("0006",)], "nothing was downgraded"
    assert q(pg_url, "SELECT count(*) FROM pg_policies WHERE schemaname = 'app'")[0][0] > 0

    allowed = _alembic(env, "-x", "allow_prod=1", "downgrade", "-1")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert _version(pg_url) == [("0005",)]


def test_dbkit_downgrade_refused_in_prod_unless_allowed(prod, pg_url):
    _, settings = prod
    runner.upgrade(settings)
    with pytest.raises(Refused, match="downgrading is refused when DBKIT_ENV=prod"):
        runner.downgrade(settings, "-1")
    assert _version(pg_url) == [("0006",)]
    result = runner.downgrade(settings, "-1", allow_prod=True)
    assert [r.revision for r in result.applied] == ["0006"] and result.after == ["0005"]


def test_plain_alembic_upgrade_in_prod_is_not_refused_and_errors_are_one_line(prod, pg_url):
    env, _ = prod
    res = _alembic(env, "upgrade", "head")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _version(pg_url) == [("0006",)]
    # a dbkit error under plain alembic is one line, not a traceback
    bad = _alembic({**env, "DBKIT_EXTENSIONS": "vector,no_such_extension"}, "upgrade", "head")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr + bad.stdout
    assert [line for line in bad.stdout.splitlines() if line.startswith("FAILED:")] == [
        line for line in bad.stdout.splitlines() if "no_such_extension" in line]
    assert "the PostgreSQL extension 'no_such_extension' is not installed" in bad.stdout
