"""Grants on public.notes, proven on a real PostgreSQL by dbkit's pytest plugin
(`pip install 'dbkit[testing]'`; run with `pytest`).

The project uses no row-level security (rls_model = "none"): every role that may read the table
sees every row, so what protects the data is the role model's grants.  `as_role` logs in as the
role of a kind (enforce, bypass, readonly) inside a transaction that is always rolled back.
"""

import psycopg
import pytest


def test_table_has_no_row_level_security_and_nothing_for_public(dbkit_seeded_db, dbkit_settings):
    name = f'"{dbkit_settings.schema}".notes'
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        rls = admin.execute("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)", (name,)).fetchone()[0]
        public = admin.execute("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                               "WHERE c.oid = to_regclass(%s) AND a.grantee = 0", (name,)).fetchone()[0]
    assert rls is False
    assert public == 0, "PUBLIC holds privileges on the table"


def test_enforce_role_reads_and_writes(as_role, dbkit_settings):
    table = f'"{dbkit_settings.schema}".notes'
    with as_role("enforce") as conn:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert before > 0, "the seeds give rows"
        conn.execute(f"INSERT INTO {table} (title, body) VALUES ('hello', 'from the test')")
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == before + 1


def test_readonly_role_only_reads(as_role, dbkit_settings):
    table = f'"{dbkit_settings.schema}".notes'
    with as_role("readonly") as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {table} (title, body) VALUES ('no', 'writes')")

