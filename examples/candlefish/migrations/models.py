"""SQLAlchemy models of Candlefish RTPM's tables: what `dbkit migrate new --autogenerate` and
`dbkit migrate check` compare the database with.

Tables live in the schema of the settings (DBKIT_SCHEMA or [tool.dbkit] schema: rtpm).  Row-level
security, policies, grants, the hypertable, its compression and retention, the continuous aggregate and
the tenant-scoped views are not models: they live in the revisions (versions/).  dbkit's comparison
leaves out what TimescaleDB creates by itself (chunks, the hypertable's time index, the aggregate).
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from dbkit.config import load_settings

SCHEMA = load_settings().schema

metadata = MetaData(schema=SCHEMA)

orgs = Table(
    "orgs", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("plan", Text, nullable=False, server_default="free"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("plan IN ('free', 'team', 'enterprise')", name="orgs_plan_check"),
)

sensors = Table(
    "sensors", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("org_id", UUID, ForeignKey(f"{SCHEMA}.orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("location", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("org_id", "id", name="sensors_org_id_id_key"),
)

# a hypertable (1-day chunks), compressed after 7 days, dropped after 90: see versions/0002 and 0003
readings = Table(
    "readings", metadata,
    Column("time", DateTime(timezone=True), nullable=False),
    Column("org_id", UUID, nullable=False),
    Column("sensor_id", UUID, nullable=False),
    Column("metric", Text, nullable=False),
    Column("value", Float(precision=53), nullable=False),
    ForeignKeyConstraint(["org_id", "sensor_id"], [f"{SCHEMA}.sensors.org_id", f"{SCHEMA}.sensors.id"],
                         name="readings_sensor_fkey", ondelete="CASCADE"),
    Index("readings_org_sensor_time_idx", "org_id", "sensor_id", text("time DESC")),
)
