"""readings: the telemetry hypertable, read and written through a tenant-scoped view

``rtpm.readings`` is a hypertable (1-day chunks).  It gets no row-level security: TimescaleDB refuses
compression (0003) and continuous aggregates (0004) on tables with RLS.  Instead, dbkit's isolation
mode: the hypertable is granted to no application role (``[tool.dbkit.roles.enforce] tables =
{ readings = [] }``, the same for Grafana); the API and Grafana use ``readings_scoped``, a
security-barrier view filtered on the claim with a check option (a row of another organisation is
rejected, SQLSTATE 44000).  ``dbkit rls audit`` accepts exactly that view and nothing looser.

A reading's sensor belongs to the reading's organisation: the foreign key is (org_id, sensor_id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

import dbkit.migrate

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "rtpm"
GRANTED = ("readings", "readings_scoped")  # readings: the worker only (the role model says so)


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org_id", pg.UUID, nullable=False),
        sa.Column("sensor_id", pg.UUID, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["org_id", "sensor_id"], [f"{SCHEMA}.sensors.org_id", f"{SCHEMA}.sensors.id"],
                                name="readings_sensor_fkey", ondelete="CASCADE"),
        schema=SCHEMA,
    )
    op.create_hypertable("readings", "time", schema=SCHEMA, chunk_interval="1 day")
    op.create_index("readings_org_sensor_time_idx", "readings", ["org_id", "sensor_id", sa.text("time DESC")],
                    schema=SCHEMA)
    op.create_scoped_view("readings_scoped", "readings", schema=SCHEMA, column="org_id")
    for grant in dbkit.migrate.role_model().grants(GRANTED, SCHEMA):
        op.grant(**grant)


def downgrade() -> None:
    op.drop_scoped_view("readings_scoped", schema=SCHEMA)
    op.drop_table("readings", schema=SCHEMA)  # a hypertable: its chunks go with it
