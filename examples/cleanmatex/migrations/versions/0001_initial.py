"""initial: extensions uuid-ossp, pgcrypto, roles, table notes with RLS per tenant

Written by `dbkit init` for this project's settings:
RLS model jwt (JSON claims in request.jwt.claims (user key sub, tenant key tenant_org_id)), rows owned per tenant (tenant_id).

Row-level security: notes is ENABLEd and FORCEd; its policies compare tenant_id with the claim in
request.jwt.claims, read once per query (a sub-select).  Unset or empty, the claim is NULL and
matches no row: fail closed.  The SQL is literal, computed by `dbkit init` from the RLS model.

Change the schema in new revisions (`dbkit migrate new -m "..."`), never in this one once it
has been applied: dbkit records each applied revision's checksum.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "public"
TABLE = "notes"
EXTENSIONS = ("uuid-ossp", "pgcrypto")
# the owner column compared with the claim (dbkit.rls.Claims.predicate, RLS model jwt)
MATCH = "tenant_id = (SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'tenant_org_id', '')::uuid)"
POLICIES = [
    dict(policy_name="notes_tenant_select", command="SELECT", roles=["cmx_app", "cmx_readonly"], using=MATCH),
    dict(policy_name="notes_tenant_insert", command="INSERT", roles=["cmx_app"], with_check=MATCH),
    dict(policy_name="notes_tenant_update", command="UPDATE", roles=["cmx_app"], using=MATCH, with_check=MATCH),
    dict(policy_name="notes_tenant_delete", command="DELETE", roles=["cmx_app"], using=MATCH),
]

# What the role model grants (dbkit.roles.model(settings).grants): schema USAGE per kind, then the
# privileges on each table; the owner role owns the table and needs no grant.
GRANTS = [
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["cmx_app"]),
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["cmx_service"]),
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["cmx_readonly"]),
    dict(privileges=["SELECT", "INSERT", "UPDATE", "DELETE"], target=TABLE, schema=SCHEMA, roles=["cmx_app"]),
    dict(privileges=["SELECT", "INSERT", "UPDATE", "DELETE"], target=TABLE, schema=SCHEMA, roles=["cmx_service"]),
    dict(privileges=["SELECT"], target=TABLE, schema=SCHEMA, roles=["cmx_readonly"]),
]


def upgrade() -> None:
    for name in EXTENSIONS:  # created by the connecting role: not every extension is trusted
        op.create_extension(name)
    op.apply_roles()  # the role model of [tool.dbkit] (idempotent; passwords from their variables)
    op.create_table(
        TABLE,
        sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", pg.UUID, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_index("notes_tenant_created_idx", TABLE, ["tenant_id", sa.text("created_at DESC")], schema=SCHEMA)
    op.enable_rls(TABLE, schema=SCHEMA, force=True)  # FORCE: the owner role obeys it too
    for policy in POLICIES:
        op.create_policy(table_name=TABLE, schema=SCHEMA, **policy)
    for grant in GRANTS:
        op.grant(**grant)


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)  # its policies and grants go with it
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
    # the roles stay: they belong to the whole cluster (drop them deliberately with op.drop_roles())
