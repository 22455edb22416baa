"""initial: extensions pgcrypto, vector, uuid-ossp, roles, table notes

Written by `dbkit init` for this project's settings:
RLS model none (a single-tenant application: the role model's grants protect the data).

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
EXTENSIONS = ("pgcrypto", "vector", "uuid-ossp")

# What the role model grants (dbkit.roles.model(settings).grants): schema USAGE per kind, then the
# privileges on each table; the owner role owns the table and needs no grant.
GRANTS = [
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["studioops_app"]),
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["studioops_worker"]),
    dict(privileges=["USAGE"], target=SCHEMA, object_type="SCHEMA", roles=["studioops_readonly"]),
    dict(privileges=["SELECT", "INSERT", "UPDATE", "DELETE"], target=TABLE, schema=SCHEMA, roles=["studioops_app"]),
    dict(
        privileges=["SELECT", "INSERT", "UPDATE", "DELETE"],
        target=TABLE,
        schema=SCHEMA,
        roles=["studioops_worker"],
    ),
    dict(privileges=["SELECT"], target=TABLE, schema=SCHEMA, roles=["studioops_readonly"]),
]


def upgrade() -> None:
    for name in EXTENSIONS:  # created by the connecting role: not every extension is trusted
        op.create_extension(name)
    op.apply_roles()  # the role model of [tool.dbkit] (idempotent; passwords from their variables)
    op.create_table(
        TABLE,
        sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_index("notes_created_idx", TABLE, [sa.text("created_at DESC")], schema=SCHEMA)
    for grant in GRANTS:
        op.grant(**grant)


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)  # its policies and grants go with it
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
    # the roles stay: they belong to the whole cluster (drop them deliberately with op.drop_roles())
