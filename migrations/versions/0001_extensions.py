"""extensions: vector, timescaledb, pgcrypto

Created by the connecting role (dbkit switches away from the owner role for
these statements): pgvector is not a trusted extension.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EXTENSIONS = ("vector", "timescaledb", "pgcrypto")


def upgrade() -> None:
    for name in EXTENSIONS:
        op.create_extension(name)


def downgrade() -> None:
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
