"""The pytest plugin, tested with pytester on a tiny example project with a leaky policy."""

import re
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parent / "examples" / "leaky"
REPO = Path(__file__).resolve().parents[1]


def test_matrix_catches_a_leaky_policy(pytester: pytest.Pytester, dbkit_server, monkeypatch):
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    shutil.copytree(REPO / "sql", pytester.path / "sql")
    monkeypatch.setenv("DBKIT_TEST_SERVER_URL", dbkit_server.url("postgres").raw)
    for name in ("DATABASE_URL", "DBKIT_ENV", "DBKIT_PROJECT_DIR"):
        monkeypatch.delenv(name, raising=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests/test_rls.py")
    out = result.stdout.str()
    result.assert_outcomes(failed=2, passed=11)
    assert "test_rls_matrix[enforce-SELECT]" in out and "test_rls_matrix[readonly-SELECT]" in out
    assert re.search(r"app_rls as tenant A saw \d+ rows of other tenants in notes", out)
    assert re.search(r"app_readonly as tenant A saw \d+ rows of other tenants in notes", out)
    assert "app_rls with no tenant set saw 30 rows in notes; expected 0" in out


def test_as_role_fixture(as_role, dbkit_settings):
    """as_role gives a connection of that role with the claims, rolled back afterwards."""
    with as_role("bypass") as conn:
        tenants = [r[0] for r in conn.execute("SELECT id FROM app.tenants ORDER BY id")]
        total = conn.execute("SELECT count(*) FROM app.documents").fetchone()[0]
        assert conn.execute("SELECT current_user").fetchone()[0] == dbkit_settings.role_bypass[0]
    assert len(tenants) >= 2 and total > 0
    with as_role("enforce", tenant=tenants[0]) as conn:
        seen = conn.execute("SELECT DISTINCT tenant_id FROM app.documents").fetchall()
        assert seen == [(tenants[0],)]
        conn.execute("DELETE FROM app.documents")
    with as_role("bypass") as conn:  # the delete above was rolled back
        assert conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == total
    with as_role("owner", tenant=tenants[0]) as conn:  # NOLOGIN: entered with SET ROLE; FORCE RLS applies
        assert conn.execute("SELECT current_user").fetchone()[0] == dbkit_settings.role_owner
        assert conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == 0
