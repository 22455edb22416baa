"""initial: extensions pgcrypto, vector, roles, schema app, table notes with RLS per user

Written by `dbkit init` for this project's settings:
RLS model jwt (JSON claims in request.jwt.claims (user key sub)), rows owned per user (user_id).

Row-level security: notes is ENABLEd and FORCEd; its policies compare user_id with the claim in
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

SCHEMA = "app"
TABLE = "notes"
EXTENSIONS = ("pgcrypto", "vector")
# the owner column compared with the claim (dbkit.rls.Claims.predicate, RLS model jwt)
MATCH = "user_id = (SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'sub', '')::uuid)"
POLICIES = [
    dict(policy_name="notes_user_select", command="SELECT", roles=["cognitive_engine_rls"], using=MATCH),
    dict(policy_name="notes_user_insert", command="INSERT", roles=["cognitive_engine_rls"], with_check=MATCH),
    dict(
        policy_name="notes_user_update",
        command="UPDATE",
        roles=["cognitive_engine_rls"],
        using=MATCH,
        with_check=MATCH,
    ),
    dict(policy_name="notes_user_delete", command="DELETE", roles=["cognitive_engine_rls"], using=MATCH),
]

# What the role model grants (dbkit.roles.model(settings).grants): schema USAGE per kind, then the
# privileges on each table; the owner role owns the table and needs no grant.
GRANTS = [
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["cognitive_engine_rls"]),
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["cognitive_engine_full"]),
    dict(
        privileges=["SELECT", "INSERT", "UPDATE", "DELETE"],
        target=TABLE,
        schema=SCHEMA,
        roles=["cognitive_engine_rls"],
    ),
    dict(
        privileges=["SELECT", "INSERT", "UPDATE", "DELETE"],
        target=TABLE,
        schema=SCHEMA,
        roles=["cognitive_engine_full"],
    ),
]


def upgrade() -> None:
    for name in EXTENSIONS:  # created by the connecting role: not every extension is trusted
        op.create_extension(name)
    op.apply_roles()  # the role model of [tool.dbkit] (idempotent; passwords from their variables)
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    op.create_table(
        TABLE,
        sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("user_id", pg.UUID, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_index("notes_user_created_idx", TABLE, ["user_id", sa.text("created_at DESC")], schema=SCHEMA)
    op.enable_rls(TABLE, schema=SCHEMA, force=True)  # FORCE: the owner role obeys it too
    for policy in POLICIES:
        op.create_policy(table_name=TABLE, schema=SCHEMA, **policy)
    for grant in GRANTS:
        op.grant(**grant)


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)  # its policies and grants go with it
    op.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}"')  # only if empty
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
    # the roles stay: they belong to the whole cluster (drop them deliberately with op.drop_roles())
