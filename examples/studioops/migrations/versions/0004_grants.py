"""grants for studioops' roles: the API (studioops_app) and the workers read and write, reporting reads

The first revision written with dbkit after the SQL files were imported.  The old runner's tables
belonged to whoever ran it; `dbkit migrate` gave them to studioops_owner when it adopted the history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

import dbkit.migrate

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents")


def _grants():
    return dbkit.migrate.role_model().grants(TABLES, dbkit.migrate.settings().schema)


def upgrade() -> None:
    for grant in _grants():
        op.grant(**grant)


def downgrade() -> None:
    for grant in _grants():
        op.revoke(**grant)
