"""A password written in a revision's SQL never reaches what dbkit prints: the one-line failure (which quotes the
failing statement), the `--json` result, the log lines (a blocking session's query) and the rehearse report
(which may be posted on a pull request)."""

from __future__ import annotations

import json
import logging

import pytest
from migrate_helpers import make_project, revision, settings_for

from dbkit.migrate import _rehearse as rh
from dbkit.migrate._rehearse_report import markdown
from dbkit.migrate._session import Blocker

SECRET = "hunter2-in-a-revision"
BAD_ROLE = f"CREATE ROLE secrets_t LOGIN PASSWORD '{SECRET}' NO_SUCH_OPTION"


@pytest.mark.integration
def test_a_failing_statement_with_a_password_is_quoted_masked(tmp_path, pg_url, dbkit_cli):
    make_project(tmp_path, {"0001_role.py": revision("0001", None, f"op.execute({BAD_ROLE!r})", doc="bad role")})
    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(tmp_path)}
    res = dbkit_cli("migrate", env=env)
    assert res.returncode == 1
    assert "statement: CREATE ROLE secrets_t LOGIN PASSWORD '***' NO_SUCH_OPTION" in res.stderr
    assert SECRET not in res.stdout + res.stderr
    res = dbkit_cli("migrate", "--json", env=env)
    assert res.returncode == 1 and SECRET not in res.stdout + res.stderr


def test_a_blocking_sessions_query_is_described_masked():
    blocker = Blocker(4242, "app", "idle in transaction", 12.0, f"ALTER ROLE app_rls PASSWORD '{SECRET}'")
    assert blocker.describe() == "pid 4242 (app, idle in transaction for 12s: \"ALTER ROLE app_rls PASSWORD '***'\")"


def test_log_lines_are_masked():
    """What dbkit's log handler writes (its formatter; the handler keeps the stderr it was made with)."""
    from dbkit.cli._common import setup_logging

    setup_logging(logging.WARNING)
    record = logging.getLogger("dbkit.test").makeRecord(
        "dbkit.test", logging.WARNING, __file__, 1, "waiting for %s and postgresql://app:%s@db/app",
        (f"ALTER ROLE x PASSWORD '{SECRET}'", SECRET), None)
    line = setup_logging.handler.format(record)
    assert SECRET not in line and "PASSWORD '***'" in line and "postgresql://app:***@db/app" in line
    assert line.startswith("dbkit: waiting for ALTER ROLE x")


@pytest.mark.integration
def test_the_rehearse_report_quotes_statements_masked(tmp_path, dbkit_seeded_db):
    from migrate_helpers import copy_reference_project

    project = copy_reference_project(tmp_path)
    (project / "migrations" / "versions" / "0007_role.py").write_text(revision("0007", "0006", f"""
        op.execute_unfiltered("CREATE ROLE rehearse_secret_t LOGIN PASSWORD '{SECRET}'")
        op.execute_unfiltered("DROP ROLE rehearse_secret_t")
    """, doc="a password in a traced statement"))
    (project / "migrations" / "versions" / "0008_role.py").write_text(revision(
        "0008", "0007", f"op.execute(\"ALTER ROLE app_readonly PASSWORD '{SECRET}'\")", doc="fails as the owner"))
    report = rh.rehearse(settings_for(dbkit_seeded_db, project), min_size=0, max_lock=3600.0)
    assert "statement: ALTER ROLE app_readonly PASSWORD '***'" in report.failed
    traced = [st.sql for run in report.revisions for st in run.statements]
    assert "CREATE ROLE rehearse_secret_t LOGIN PASSWORD '***'" in traced
    out = json.dumps(report.as_dict()) + markdown(report)
    assert SECRET not in out and "PASSWORD '***'" in out
