"""initial: extensions, roles, schema rtpm, orgs and sensors with row-level security per organisation

Started from what `dbkit init` wrote (extensions pgcrypto and timescaledb, the role model, schema rtpm,
literal policies on the claim rtpm.org_id), with Candlefish's first two tables instead of the example one:

- ``orgs``: one row per organisation; the API reads its own (read-only for it: ``read_only_tables``),
  the worker manages them.  A row belongs to itself (``[tool.dbkit.rls.tables.orgs] tenant_column = "id"``).
- ``sensors``: what sends readings (hosts, services, queues), per organisation.

RLS is ENABLEd and FORCEd on both; each policy compares the owner column with the claim, read once per
query (a sub-select).  Unset or empty, the claim is NULL and matches no row: fail closed.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

import dbkit.migrate

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "rtpm"
EXTENSIONS = ("pgcrypto", "timescaledb")
CLAIM = "(SELECT NULLIF(current_setting('rtpm.org_id', true), '')::uuid)"
API, GRAFANA = ["rtpm_api"], ["rtpm_api", "rtpm_grafana"]
POLICIES = {
    "orgs": [  # read-only for the API: no write policy (and no write grant)
        dict(policy_name="orgs_own_select", command="SELECT", roles=GRAFANA, using=f"id = {CLAIM}"),
    ],
    "sensors": [
        dict(policy_name="sensors_org_select", command="SELECT", roles=GRAFANA, using=f"org_id = {CLAIM}"),
        dict(policy_name="sensors_org_insert", command="INSERT", roles=API, with_check=f"org_id = {CLAIM}"),
        dict(policy_name="sensors_org_update", command="UPDATE", roles=API, using=f"org_id = {CLAIM}",
             with_check=f"org_id = {CLAIM}"),
        dict(policy_name="sensors_org_delete", command="DELETE", roles=API, using=f"org_id = {CLAIM}"),
    ],
}


def upgrade() -> None:
    for name in EXTENSIONS:  # created by the connecting role: not every extension is trusted
        op.create_extension(name)
    op.apply_roles()  # the role model of [tool.dbkit] (idempotent; passwords from their variables)
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    op.create_table(
        "orgs",
        sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("slug", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("plan", sa.Text, nullable=False, server_default="free"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("plan IN ('free', 'team', 'enterprise')", name="orgs_plan_check"),
        schema=SCHEMA,
    )
    op.create_table(
        "sensors",
        sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("org_id", pg.UUID, sa.ForeignKey(f"{SCHEMA}.orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("location", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("org_id", "id", name="sensors_org_id_id_key"),  # readings reference (org, sensor)
        schema=SCHEMA,
    )
    for table, policies in POLICIES.items():
        op.enable_rls(table, schema=SCHEMA, force=True)  # FORCE: the owner role obeys it too
        for policy in policies:
            op.create_policy(table_name=table, schema=SCHEMA, **policy)
    for grant in dbkit.migrate.role_model().grants(POLICIES, SCHEMA):
        op.grant(**grant)


def downgrade() -> None:
    op.drop_table("sensors", schema=SCHEMA)  # its policies and grants go with it
    op.drop_table("orgs", schema=SCHEMA)
    op.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}"')  # only if empty
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
    # the roles stay: they belong to the whole cluster (drop them deliberately with op.drop_roles())
