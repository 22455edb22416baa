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
