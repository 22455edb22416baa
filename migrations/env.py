"""Alembic environment for the reference schema.

Everything lives in dbkit.migrate.env so that plain `alembic upgrade head` and
`dbkit migrate` share the same safety rails (advisory lock, timeouts, extension
preflight, SET ROLE owner, checksums).  The URL comes from dbkit's settings
(DATABASE_URL, or the embedded dev cluster in dev), never from alembic.ini.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import metadata  # noqa: E402

from dbkit.migrate.env import run  # noqa: E402

run(target_metadata=metadata)
