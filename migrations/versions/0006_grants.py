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


def _grants(settings, model):
    """What the role model (dbkit.roles) grants each kind: schema USAGE, then per-table privileges."""
    return model.grants(TABLES, settings.schema)


def upgrade() -> None:
    for grant in _grants(dbkit.migrate.settings(), dbkit.migrate.role_model()):
        op.grant(**grant)


def downgrade() -> None:
    for grant in _grants(dbkit.migrate.settings(), dbkit.migrate.role_model()):
        op.revoke(**grant)
