"""``dbkit backup`` / ``dbkit restore``: pg_dump streamed to storage, manifest written last.

The verbs, by concern: :mod:`dbkit.backup._dump` (backup), :mod:`dbkit.backup._catalog` (list,
show, scan, prune), :mod:`dbkit.backup._restore` (restore, verify), :mod:`dbkit.backup._common`
(what they share).  This module is their one public face.

Upload path, all streaming with bounded memory, no temporary files::

    pg_dump -Fc -Z0  ->  zstd | gzip | none  ->  age (optional)  ->  sha256  ->  Storage writer

pg_dump's exit code and stderr are checked after the stream ends; an empty stream, a
stream that does not start with the custom-format magic, or any error aborts the upload
(no object, no orphan multipart parts) and writes no manifest.  The manifest is written
only after the dump object is committed, so a backup without a manifest never counts.

The connection password reaches pg_dump/pg_restore through the child's environment
(PGPASSWORD), never through the command line or a file; the child otherwise sees the same
libpq environment (PGPASSWORD, PGPASSFILE, PGSSL*, PGSERVICE, ...) as dbkit's own connections.
"""

from __future__ import annotations

from dbkit.backup._catalog import list_backups, prune, scan, show
from dbkit.backup._common import (
    BackupFailed,
    RestoreFailed,
    _libpq_env,
    find_program,
    storage_for,
)
from dbkit.backup._dump import backup
from dbkit.backup._restore import (
    RestoreHooks,
    restore,
    verify,
)
from dbkit.backup._restore_properties import _property_statements
from dbkit.errors import DbkitError

__all__ = ["BackupFailed", "RestoreFailed", "RestoreHooks", "backup", "restore", "list_backups", "scan", "show",
    "verify", "prune", "storage_for", "find_program", "DbkitError", "_libpq_env", "_property_statements"]

