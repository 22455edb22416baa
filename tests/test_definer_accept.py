"""``[tool.dbkit.rls.definer_functions]``: a SECURITY DEFINER function reviewed as safe (it filters by the claims
itself, the usual helper that keeps a policy from recursing) is accepted by the audit, named as the finding names
it, with the reason; every other one is still a finding."""

from __future__ import annotations

import dataclasses
import json

import pytest
from migrate_helpers import copy_reference_project, q, settings_for
from test_autogen import _settings
from test_tenant_isolation import login, tenants

from dbkit.errors import ConfigError
from dbkit.rls import scoped
from dbkit.rls._audit import audit

pytestmark = pytest.mark.integration

SAFE = "app.my_document_ids()"
REASON = "returns the ids of the claimed tenant's documents only"


def _accepting(settings, functions: dict[str, str]):
    return dataclasses.replace(settings, rls={**settings.rls, "definer_functions": functions})


def test_a_reviewed_definer_function_is_accepted_and_no_other(dbkit_server, dbkit_seeded_db, dbkit_cli):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a = tenants(url)[0]
    # run as the superuser (it reads unfiltered), but it filters by the claim itself
    q(url, "CREATE FUNCTION app.my_document_ids() RETURNS SETOF uuid LANGUAGE sql STABLE SECURITY DEFINER "
           "SET search_path = '' AS $$SELECT id FROM app.documents WHERE tenant_id = "
           "NULLIF(current_setting('app.tenant_id', true), '')::uuid$$")
    with login(dbkit_server, url, settings, "enforce") as conn, scoped(conn, tenant_id=tenant_a):
        mine = conn.execute("SELECT count(*) FROM app.documents").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM app.my_document_ids()").fetchone()[0] == mine > 0
    hits = [f for f in audit(settings).findings if f.code == "definer_bypasses_rls"]
    assert {f.target for f in hits} == {SAFE} and "app_rls" in {f.role for f in hits}  # the name for the setting

    report = audit(_accepting(settings, {SAFE: REASON}))
    assert report.clean and report.accepted == (SAFE,), [f.line() for f in report.findings]
    assert report.summary()["accepted"] == [SAFE]
    assert report.summary_line().endswith(f"0 errors, 0 warnings; accepted as reviewed "
                                          f"([tool.dbkit.rls.definer_functions]): {SAFE}")

    # a second function is not accepted by the first one's entry, nor by a near miss of its name
    q(url, "CREATE FUNCTION app.all_documents() RETURNS SETOF app.documents LANGUAGE sql SECURITY DEFINER "
           "AS 'SELECT * FROM app.documents'")
    report = audit(_accepting(settings, {SAFE: REASON, "app.all_documents": "typo: no argument list"}))
    assert {f.target for f in report.findings} == {"app.all_documents()"} and report.accepted == (SAFE,)

    # from the project's pyproject, through the CLI
    project = copy_reference_project(dbkit_cli.cwd)
    with (project / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.dbkit.rls.definer_functions]\n"{SAFE}" = "{REASON}"\n')
    done = dbkit_cli("rls", "audit", "--json", env={"DATABASE_URL": url.raw, "DBKIT_ENV": "test"})
    out = json.loads(done.stdout)
    assert done.returncode == 1 and {f["table"] for f in out["findings"]} == {"all_documents()"}, done.stderr
    assert out["summary"]["accepted"] == [SAFE]
    q(url, "DROP FUNCTION app.all_documents()")
    done = dbkit_cli("rls", "audit", env={"DATABASE_URL": url.raw, "DBKIT_ENV": "test"})
    assert done.returncode == 0 and f"accepted as reviewed ([tool.dbkit.rls.definer_functions]): {SAFE}" in done.stdout


@pytest.mark.unit
@pytest.mark.parametrize("value", ['["app.f()"]', '{ "app.f()" = "" }', '{ "app.f()" = 1 }'])
def test_a_definer_function_without_a_reason_is_one_config_error(tmp_path, value):
    from dbkit.rls._scoped import reviewed_functions

    settings = _settings(tmp_path, f"[tool.dbkit.rls]\ndefiner_functions = {value}\n")
    with pytest.raises(ConfigError, match=r"definer_functions\] is not a table of function = \"reason\""):
        reviewed_functions(settings, "definer_functions")


def test_a_reviewed_leakproof_function_is_accepted_and_no_other(dbkit_server, dbkit_seeded_db, dbkit_cli):
    """``[tool.dbkit.rls.leakproof_functions]``: a LEAKPROOF function reviewed as unable to fail or report on its
    arguments (so an index serves it under RLS) no longer keeps the audit from passing; another one still does."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    safe, leaky = "public.same_text(text, text)", "public.shout(text)"
    q(url, "CREATE FUNCTION public.same_text(text, text) RETURNS bool LANGUAGE sql IMMUTABLE LEAKPROOF "
           "AS 'SELECT $1 = $2'")  # only a superuser may do this
    hits = [f for f in audit(settings).findings if f.code == "leakproof_function"]
    assert [f.target for f in hits] == [safe] and "app_rls" in hits[0].message

    def accepting(functions: dict[str, str]):
        return dataclasses.replace(settings, rls={**settings.rls, "leakproof_functions": functions})

    report = audit(accepting({safe: "compares two texts: cannot fail, reports nothing"}))
    assert report.clean and report.accepted_leakproof == (safe,) and report.accepted == ()
    assert report.summary()["accepted"] == [safe]
    assert report.summary_line().endswith(f"0 errors, 0 warnings; accepted as reviewed "
                                          f"([tool.dbkit.rls.leakproof_functions]): {safe}")

    # the entry accepts that function only (not another LEAKPROOF one, not a SECURITY DEFINER one of that name)
    q(url, "CREATE FUNCTION public.shout(text) RETURNS bool LANGUAGE plpgsql LEAKPROOF AS "
           "$$BEGIN RAISE NOTICE '%', $1; RETURN true; END$$")
    report = audit(accepting({safe: "compares two texts", "public.shout": "typo: no argument list"}))
    assert [(f.code, f.target) for f in report.findings] == [("leakproof_function", leaky)]
    report = audit(dataclasses.replace(settings, rls={**settings.rls, "definer_functions": {safe: "wrong table"}}))
    assert {f.target for f in report.findings if f.code == "leakproof_function"} == {safe, leaky}
    q(url, "DROP FUNCTION public.shout(text)")

    # from the project's pyproject, through the CLI
    project = copy_reference_project(dbkit_cli.cwd)
    with (project / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.dbkit.rls.leakproof_functions]\n"{safe}" = "compares two texts: cannot fail"\n')
    done = dbkit_cli("rls", "audit", env={"DATABASE_URL": url.raw, "DBKIT_ENV": "test"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"accepted as reviewed ([tool.dbkit.rls.leakproof_functions]): {safe}" in done.stdout


@pytest.mark.unit
def test_a_leakproof_function_without_a_reason_is_one_config_error(tmp_path):
    from dbkit.rls._scoped import reviewed_functions

    settings = _settings(tmp_path, '[tool.dbkit.rls]\nleakproof_functions = { "app.f()" = "" }\n')
    with pytest.raises(ConfigError, match=r"\[tool\.dbkit\.rls\.leakproof_functions\] is not a table of function = "
                                          r"\"reason\""):
        reviewed_functions(settings, "leakproof_functions")
