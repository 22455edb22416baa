"""Alembic environment, written by `dbkit init`.

dbkit's rails are one import and one call: ``from dbkit.migrate.env import run`` and
``run(target_metadata=...)``.  They give plain `alembic …` and `dbkit migrate` the same
advisory lock, timeouts, extension and role preflight, ``SET ROLE`` to the owner role and
revision checksums.  The database URL comes from dbkit's settings (DATABASE_URL, or the
embedded dev cluster in dev), never from alembic.ini.
"""

import importlib.util
from pathlib import Path

from dbkit.migrate.env import run

# models.py beside this file (what autogenerate and `dbkit migrate check` compare the database with),
# loaded afresh on every run
_spec = importlib.util.spec_from_file_location("dbkit_project_models", Path(__file__).with_name("models.py"))
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)

run(target_metadata=models.metadata)
