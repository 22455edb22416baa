"""Alembic environment for the reference schema.

Everything lives in dbkit.migrate.env so that plain `alembic upgrade head` and
`dbkit migrate` share the same safety rails (advisory lock, timeouts, extension
preflight, SET ROLE owner, checksums).  The URL comes from dbkit's settings
(DATABASE_URL, or the embedded dev cluster in dev), never from alembic.ini.
"""

import importlib.util
from pathlib import Path

from dbkit.migrate.env import run

# models.py beside this file, loaded afresh on every run (no stale sys.modules entry)
_spec = importlib.util.spec_from_file_location("dbkit_project_models", Path(__file__).with_name("models.py"))
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)

run(target_metadata=models.metadata)
