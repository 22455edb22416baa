"""`migrate check` says plainly what it compared: CheckResult.compared_schema and summary()."""

import pytest
from migrate_helpers import make_project, revision, settings_for

from dbkit.migrate import _runner as runner
from dbkit.migrate._runner import NOT_COMPARED_NO_METADATA, NOT_COMPARED_PENDING, CheckResult, Drift, Revision


def _rev(rev="0002"):
    return Revision(rev, "0001", "add things", f"/x/{rev}_add.py")


@pytest.mark.unit
def test_summary_when_the_schema_was_not_compared():
    result = CheckResult(pending=[], schema_diffs=None, edited=[], schema_not_compared=NOT_COMPARED_NO_METADATA)
    assert result.clean and not result.compared_schema
    assert result.summary() == ("clean: no pending revisions, no edited revisions; "
                                "schema not compared (env.py gives no target_metadata)")
    assert result.as_dict()["compared_schema"] is False
    assert result.as_dict()["schema_not_compared"] == NOT_COMPARED_NO_METADATA


@pytest.mark.unit
def test_summary_when_compared_and_clean_or_not():
    clean = CheckResult(pending=[], schema_diffs=[], edited=[])
    assert clean.compared_schema and clean.clean
    assert clean.summary() == "clean: no pending revisions, no edited revisions; schema matches the models"
    dirty = CheckResult(pending=[], schema_diffs=["add_column a", "add_column b"],
                        edited=[Drift("0001", "versions/0001_t.py", "a" * 64, None)])
    assert not dirty.clean
    assert dirty.summary() == ("migrate check failed: no pending revisions, 1 revision file edited or deleted "
                               "after being applied; schema differs from the models in 2 places")


@pytest.mark.unit
def test_summary_with_pending_revisions_does_not_claim_the_schema_matches():
    result = CheckResult(pending=[_rev("0002"), _rev("0003")], schema_diffs=None, edited=[],
                         schema_not_compared=NOT_COMPARED_PENDING)
    assert not result.clean and not result.compared_schema
    assert result.summary() == ("migrate check failed: 2 pending revisions, no edited revisions; "
                                f"schema not compared ({NOT_COMPARED_PENDING})")
    assert "matches" not in result.summary()


@pytest.mark.integration
def test_check_reports_what_it_compared(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_t.py": revision("0001", None, "op.execute('SELECT 1')")})
    settings = settings_for(pg_url, project)  # its env.py passes target_metadata=None
    before = runner.check(settings)
    assert not before.compared_schema and before.schema_not_compared == NOT_COMPARED_PENDING
    assert before.summary().startswith("migrate check failed: 1 pending revision, no edited revisions;")
    runner.upgrade(settings)
    after = runner.check(settings)
    assert after.clean and not after.compared_schema and after.schema_diffs is None
    assert after.summary() == ("clean: no pending revisions, no edited revisions; "
                               "schema not compared (env.py gives no target_metadata)")


@pytest.mark.integration
def test_check_compares_the_reference_schema(pg_url):
    settings = settings_for(pg_url)
    runner.upgrade(settings)
    result = runner.check(settings)
    assert result.compared_schema and result.schema_not_compared is None
    assert result.summary() == "clean: no pending revisions, no edited revisions; schema matches the models"
