"""readings_hourly: a continuous aggregate per organisation, sensor and metric, behind a scoped view

What the dashboards read: one row per hour, organisation, sensor and metric (samples, avg, min, max).
Materialized only (TimescaleDB's default): the dashboards read what the policy has materialized, and
the live panels read readings_scoped for the last hour.
Refreshed every 30 minutes over the last 3 days (up to an hour ago); kept for a year, longer than the
raw readings (90 days).  Like the hypertable, the aggregate is granted to no application role; the API
and Grafana read ``readings_hourly_scoped`` (read-only: ``read_only_tables``).

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

SCHEMA = "rtpm"
GRANTED = ("readings_hourly", "readings_hourly_scoped")  # readings_hourly: the worker only

HOURLY = """
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, org_id, sensor_id, metric,
       count(*) AS samples, avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value
FROM rtpm.readings
GROUP BY bucket, org_id, sensor_id, metric
"""


def upgrade() -> None:
    # WITH NO DATA: the refresh policy (or `dbkit seed`) fills it
    op.create_continuous_aggregate("readings_hourly", HOURLY, schema=SCHEMA)
    op.add_refresh_policy("readings_hourly", start_offset="3 days", end_offset="1 hour",
                          schedule_interval="30 minutes", schema=SCHEMA)
    op.add_retention_policy("readings_hourly", drop_after="365 days", schema=SCHEMA)
    # a materialized-only aggregate reads one table, so PostgreSQL counts the view as updatable: it gets the
    # check option like any scoped view (no role may write it anyway: read_only_tables, bypass SELECT only)
    op.create_scoped_view("readings_hourly_scoped", "readings_hourly", schema=SCHEMA, column="org_id")
    for grant in dbkit.migrate.role_model().grants(GRANTED, SCHEMA):
        op.grant(**grant)


def downgrade() -> None:
    op.drop_scoped_view("readings_hourly_scoped", schema=SCHEMA)
    op.remove_retention_policy("readings_hourly", schema=SCHEMA)
    op.remove_refresh_policy("readings_hourly", schema=SCHEMA)
    op.drop_continuous_aggregate("readings_hourly", schema=SCHEMA)
