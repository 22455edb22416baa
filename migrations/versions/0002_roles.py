"""roles: owner, enforce, bypass, readonly from the role model

Idempotent (creates missing roles, corrects drifted attributes); role names
come from the settings (DBKIT_ROLE_*), the rest from [tool.dbkit.roles] and the
optional files in sql/roles/; no password is ever in the generated SQL.

Downgrade keeps the roles: they belong to the whole cluster (every database on
it may use them) and own dbkit's bookkeeping schema.  Drop them deliberately
with op.drop_roles() (which drops only roles nothing depends on).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.apply_roles()


def downgrade() -> None:
    pass  # roles are cluster-wide: see the docstring
