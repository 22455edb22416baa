"""Alembic environment of the orchestrator, with dbkit's rails (adopted from `alembic init`'s env.py, which is
kept in legacy/env.py).

`alembic upgrade head`, `alembic revision --autogenerate -m "…"` and `dbkit migrate` all run through here:
advisory lock, timeouts, the extension and role preflight, SET ROLE cartrita_owner, revision checksums.  The
database comes from DATABASE_URL (or the embedded dev cluster), never from alembic.ini; the version table stays
plain Alembic's public.alembic_version ([tool.dbkit] version_table_schema = "public").
"""

from dbkit.migrate.env import run

from cartrita.models import metadata

run(target_metadata=metadata)
