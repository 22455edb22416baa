"""readings: compression after 7 days, retention of 90 days (TimescaleDB community edition)

Compressed batches are segmented by organisation and sensor (what every query filters on) and ordered
by metric and time.  Both policies run as the owner role (rtpm_owner, which has LOGIN and no password).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "rtpm"


def upgrade() -> None:
    op.enable_compression("readings", schema=SCHEMA, segment_by=["org_id", "sensor_id"],
                          order_by=["metric", "time DESC"])
    op.add_compression_policy("readings", compress_after="7 days", schema=SCHEMA)
    op.add_retention_policy("readings", drop_after="90 days", schema=SCHEMA)


def downgrade() -> None:
    op.remove_retention_policy("readings", schema=SCHEMA)
    op.remove_compression_policy("readings", schema=SCHEMA)
    op.disable_compression("readings", schema=SCHEMA)  # decompresses compressed chunks first
