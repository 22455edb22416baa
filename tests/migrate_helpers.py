"""Helpers for the migration tests: settings for a test database and throw-away projects."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import psycopg

from dbkit.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def settings_for(url, project: Path = REPO, **env: str) -> Settings:
    """Settings for ``url`` (a DbUrl) and the project in ``project``."""
    environ = {"DATABASE_URL": url.raw, "DBKIT_ENV": "test", **env}
    return load_settings(environ=environ, cwd=project)


def make_project(root: Path, revisions: dict[str, str], *, pyproject_extra: str = "") -> Path:
    """A minimal project: pyproject, sql/roles (copied), migrations/env.py and the given revisions.

    ``revisions`` maps a file name (``0001_a.py``) to the body of its upgrade/downgrade
    functions, written as a full module body (``revision``/``down_revision`` included).
    """
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'sample'\n\n[tool.dbkit]\nextensions = ['vector', 'timescaledb', 'pgcrypto']\n"
        + pyproject_extra
    )
    shutil.copytree(REPO / "sql", root / "sql")
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(
        "from dbkit.migrate.env import run\n\nrun(target_metadata=None)\n"
    )
    shutil.copy(REPO / "migrations" / "script.py.mako", root / "migrations" / "script.py.mako")
    shutil.copy(REPO / "alembic.ini", root / "alembic.ini")
    for name, body in revisions.items():
        (versions / name).write_text(textwrap.dedent(body).lstrip())
    return root


def revision(rev: str, down: str | None, upgrade: str, downgrade: str = "pass", doc: str = "sample") -> str:
    """Source of a revision module."""
    return (
        f'"""{doc}\n\nRevision ID: {rev}\n"""\n\nfrom alembic import op\n\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
        f"def downgrade() -> None:\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
    )


def q(url, sql: str, params=None):
    """Run one statement on ``url`` (autocommit); rows when it returns any, else None."""
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def copy_reference_project(target: Path) -> Path:
    """A copy of this repository's project files (pyproject, migrations, seeds, sql) to change in a test."""
    for folder in ("migrations", "seeds", "sql"):
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target
