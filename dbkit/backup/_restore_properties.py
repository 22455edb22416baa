"""The database's own properties in a backup (owner, ACL, comment, ALTER DATABASE/ROLE … SET), read from
the archive's TOC and applied to the restored database under its new name."""

from __future__ import annotations

import re
import subprocess

from dbkit._urls import first_line
from dbkit.backup._common import RestoreFailed, _drain, _feed, find_program


def _database_properties(settings, storage, manifest) -> list[str]:
    """The database-level statements of the archive: owner, COMMENT, ACL (GRANT/REVOKE ... ON DATABASE),
    ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET, as ``pg_restore --create`` would run them.

    pg_dump puts them in every custom-format archive (DATABASE, COMMENT, ACL and DATABASE PROPERTIES
    entries); ``pg_restore --create`` emits them for the archive's own database name, so they are read
    here (schema-only, a schema filter that matches nothing: the TOC alone, pg_restore stops reading
    after it) and re-applied to the new database by :func:`_apply_database_properties`.
    """
    import secrets

    pg_restore = find_program(settings, "pg_restore")
    args = [pg_restore, "--create", "--schema-only", "-n", f"dbkit_no_such_schema_{secrets.token_hex(6)}",
            "--file=-"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errs = _drain(proc.stdout), _drain(proc.stderr)
    rc = _feed(settings, storage, manifest, proc)  # pg_restore reads the TOC and stops: all it needs
    if rc != 0:
        raise RestoreFailed("pg_restore could not read the database properties of the backup: "
                            f"{first_line(errs().decode(errors='replace'), 'no message')}")
    return _property_statements(out().decode())


def _property_statements(script: str) -> list[str]:
    """Statements of a ``pg_restore --create`` script that set database properties (no CREATE DATABASE,
    no psql meta-commands, no session SETs)."""
    statements, current = [], []
    for line in script.splitlines():
        if not current and (not line.strip() or line.startswith(("--", "\\", "SET ", "SELECT pg_catalog.set_config"))):
            continue
        current.append(line)
        text = "\n".join(current)
        if text.rstrip().endswith(";") and text.count("'") % 2 == 0:
            statements.append(text.strip())
            current = []
    keep = re.compile(r"(ALTER DATABASE|COMMENT ON DATABASE|GRANT|REVOKE|ALTER ROLE|SECURITY LABEL)\b", re.I)
    return [st for st in statements if keep.match(st) and " DATABASE " in st.upper()]


def _apply_database_properties(admin, statements: list[str], old_name: str, new_name: str) -> None:
    """Run the archive's database-level statements against ``new_name`` (the name is rewritten)."""
    from psycopg import sql

    new = sql.Identifier(new_name).as_string(admin)
    name = re.compile(r'(\b(?:ALTER|ON|IN) DATABASE )(?:"' + re.escape(old_name.replace('"', '""')) + '"|'
                      + re.escape(old_name) + r")(?=[\s;]|$)")
    for statement in statements:
        renamed = name.sub(lambda m: m.group(1) + new, statement, count=1)
        try:
            admin.execute(renamed)
        except Exception as exc:  # noqa: BLE001 - psycopg's errors: the database is dropped, one line
            raise RestoreFailed(f"could not give the restored database its properties ({renamed.splitlines()[0][:80]}"
                                f"): {first_line(str(exc), type(exc).__name__)}; the new database was dropped",
                                hint="create the roles the backup refers to (`dbkit roles apply` or restore "
                                     "--globals), then restore again") from None
