"""Unknown or empty revisions are usage errors (exit 2, one line), for the CLI and for library callers."""

from __future__ import annotations

import pytest
from migrate_helpers import REPO, settings_for

from dbkit.errors import UsageError
from dbkit.migrate import _runner as runner


@pytest.mark.parametrize("args", [("migrate", "--to", "nosuch"), ("migrate", "sql", "--to", "nosuch"),
                                  ("migrate", "sql", "--from", "nosuch", "--to", "head"),
                                  ("migrate", "down", "nosuch", "--yes")])
def test_unknown_revision_is_a_usage_error(migrated_url, dbkit_cli, args):
    done = dbkit_cli(*args, env={"DATABASE_URL": migrated_url.raw, "DBKIT_ENV": "test",
                                 "DBKIT_PROJECT_DIR": str(REPO)})
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "dbkit migrate history" in lines[0], lines
    assert "rolled back" not in lines[0] and "Traceback" not in done.stderr
    assert runner.status(settings_for(migrated_url)).at_head  # nothing changed


@pytest.mark.parametrize("call", [lambda s: runner.upgrade(s, ""), lambda s: runner.upgrade(s, "  "),
                                  lambda s: runner.downgrade(s, ""), lambda s: runner.offline_sql(s, to_rev=""),
                                  lambda s: runner.offline_sql(s, from_rev=" ")])
def test_empty_revision_from_the_library_is_a_usage_error(migrated_url, call):
    with pytest.raises(UsageError) as info:
        call(settings_for(migrated_url))
    assert info.value.exit_code == 2 and "empty" in str(info.value)


def test_a_revision_with_a_blank_docstring_is_listed_with_an_empty_message(tmp_path, pg_url, dbkit_cli):
    """Alembic accepts a revision whose docstring is only blanks; history and status list it (no IndexError)."""
    from migrate_helpers import make_project, revision

    source = revision("0001", None, "pass").replace('"""sample\n\nRevision ID: 0001\n"""', '"""   """', 1)
    assert source.startswith('"""   """')
    project = make_project(tmp_path, {"0001_blank.py": source})
    settings = settings_for(pg_url, project)
    assert [(r.revision, r.message) for r in runner.history(settings)] == [("0001", "")]
    assert [r.revision for r in runner.status(settings).pending] == ["0001"]
    shown = dbkit_cli("migrate", "history", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test",
                                                 "DBKIT_PROJECT_DIR": str(project)})
    assert shown.returncode == 0 and "0001" in shown.stdout, shown.stderr
