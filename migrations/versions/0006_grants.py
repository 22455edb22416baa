"""grants for the role model: enforce DML, readonly SELECT, bypass DML; owner owns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from alembic import op

import dbkit.migrate

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("tenants", "users", "documents", "document_chunks", "events", "audit_log")
DML = ["SELECT", "INSERT", "UPDATE", "DELETE"]


def _grants(settings):
    s = settings.schema
    yield dict(privileges=["USAGE"], target=s, object_type="SCHEMA",
               roles=[settings.role_enforce, settings.role_bypass, settings.role_readonly])
    for table in TABLES:
        enforce_privs = ["SELECT"] if table == "tenants" else DML
        yield dict(privileges=enforce_privs, target=table, schema=s, roles=[settings.role_enforce])
        yield dict(privileges=DML, target=table, schema=s, roles=[settings.role_bypass])
        yield dict(privileges=["SELECT"], target=table, schema=s, roles=[settings.role_readonly])


def upgrade() -> None:
    for grant in _grants(dbkit.migrate.settings()):
        op.grant(**grant)


def downgrade() -> None:
    for grant in _grants(dbkit.migrate.settings()):
        op.revoke(**grant)
