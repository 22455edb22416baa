"""`restore --globals`: roles the dump refers to come back from the backup's globals.sql
(pg_dumpall --globals-only), statement by statement as PostgreSQL's scanner splits them (a ";" at
the end of a line inside a string literal is not the end of a statement)."""

from __future__ import annotations

import uuid

from migrate_helpers import q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit.backup import _pipeline as pipeline


def test_restore_with_globals_recreates_a_missing_role(dbkit_seeded_db, tmp_path):
    role = f"dbkit_glb_{uuid.uuid4().hex[:8]}"
    q(dbkit_seeded_db, f"CREATE ROLE {role} NOLOGIN CONNECTION LIMIT 3; COMMENT ON ROLE {role} IS 'a;\nb -- c';"
                       f" GRANT SELECT ON app.users TO {role}")
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "b"))
    manifest = pipeline.backup(settings, include_globals=True)
    assert role in manifest.roles
    q(dbkit_seeded_db, f"REVOKE ALL ON app.users FROM {role}; DROP ROLE {role}")
    result = None
    try:
        result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_g", with_globals=True)
        assert q(dbkit_seeded_db, "SELECT rolconnlimit, shobj_description(oid, 'pg_authid') FROM pg_roles "
                                  "WHERE rolname = %s", (role,)) == [(3, "a;\nb -- c")]
        restored = dbkit_seeded_db.with_dbname(result.database)
        assert q(restored, "SELECT has_table_privilege(%s, 'app.users', 'SELECT')", (role,)) == [(True,)]
    finally:
        if result is not None:
            q(dbkit_seeded_db, f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')
        if q(dbkit_seeded_db, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
            q(dbkit_seeded_db, f"REVOKE ALL ON app.users FROM {role}; DROP ROLE {role}")
