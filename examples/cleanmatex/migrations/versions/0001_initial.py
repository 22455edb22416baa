"""initial: uuid-ossp and pgcrypto, the cmx_* roles, CleanMateX's tables with RLS on the JWT claims

Started from what `dbkit init --rls jwt --jwt-tenant-key tenant_org_id --schema public …` wrote, then given
CleanMateX's tables (migrations/models.py).  Every table is ENABLEd and FORCEd; its policies compare the
owner column with a key of the JSON claims Supabase/PostgREST put in request.jwt.claims, read once per query
(a sub-select): tenant_org_id for the tenant's tables, sub for user_preferences.  An unset or empty claim is
NULL and matches no row: fail closed.  tenants is read-only for the application (trusted workers manage it).

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

import dbkit.migrate
import dbkit.rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EXTENSIONS = ("uuid-ossp", "pgcrypto")
# table -> (owner, column compared with the claim); the same as [tool.dbkit.rls] in pyproject.toml
OWNED = {
    "tenants": ("tenant", "id"),
    "customers": ("tenant", "tenant_org_id"),
    "orders": ("tenant", "tenant_org_id"),
    "order_items": ("tenant", "tenant_org_id"),
    "user_preferences": ("user", "user_id"),
}


def _id() -> sa.Column:
    return sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))


def _policies(settings):
    claims = dbkit.rls.claims(settings)
    enforce, readonly = list(settings.role_enforce), list(settings.role_readonly)
    read_only = dbkit.migrate.role_model().read_only_tables
    for table, (owner, column) in OWNED.items():
        match = f"{column} = {claims.predicate(owner, 'uuid')}"
        yield dict(policy_name=f"{table}_select", table_name=table, command="SELECT", roles=enforce + readonly,
                   using=match)
        if table in read_only:
            continue
        yield dict(policy_name=f"{table}_insert", table_name=table, command="INSERT", roles=enforce, with_check=match)
        yield dict(policy_name=f"{table}_update", table_name=table, command="UPDATE", roles=enforce, using=match,
                   with_check=match)
        yield dict(policy_name=f"{table}_delete", table_name=table, command="DELETE", roles=enforce, using=match)


def upgrade() -> None:
    settings = dbkit.migrate.settings()
    schema = settings.schema
    for name in EXTENSIONS:  # created by the connecting role: not every extension is trusted
        op.create_extension(name)
    op.apply_roles()  # the role model of [tool.dbkit] (idempotent; passwords from their variables)
    op.create_table(
        "tenants", _id(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("plan", sa.Text, nullable=False, server_default=sa.text("'starter'")),
        _at(),
        sa.UniqueConstraint("slug", name="tenants_slug_key"),
        schema=schema,
    )
    op.create_table(
        "customers", _id(),
        sa.Column("tenant_org_id", pg.UUID, sa.ForeignKey(f"{schema}.tenants.id", name="customers_tenant_org_id_fkey", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        _at(),
        sa.UniqueConstraint("tenant_org_id", "id", name="customers_tenant_org_id_id_key"),
        schema=schema,
    )
    op.create_index("customers_tenant_created_idx", "customers", ["tenant_org_id", sa.text("created_at DESC")],
                    schema=schema)
    op.create_table(
        "orders", _id(),
        sa.Column("tenant_org_id", pg.UUID, nullable=False),
        sa.Column("customer_id", pg.UUID, nullable=False),
        sa.Column("order_no", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'received'")),
        sa.Column("total", sa.Numeric(12, 3), nullable=False),
        _at("placed_at"),
        sa.ForeignKeyConstraint(["tenant_org_id", "customer_id"], [f"{schema}.customers.tenant_org_id",
                                                                   f"{schema}.customers.id"],
                                name="orders_customer_fkey", ondelete="CASCADE"),
        sa.UniqueConstraint("tenant_org_id", "order_no", name="orders_tenant_org_id_order_no_key"),
        sa.UniqueConstraint("tenant_org_id", "id", name="orders_tenant_org_id_id_key"),
        sa.CheckConstraint("status IN ('received', 'processing', 'ready', 'delivered', 'cancelled')",
                           name="orders_status_check"),
        schema=schema,
    )
    op.create_index("orders_tenant_placed_idx", "orders", ["tenant_org_id", sa.text("placed_at DESC")], schema=schema)
    op.create_table(
        "order_items", _id(),
        sa.Column("tenant_org_id", pg.UUID, nullable=False),
        sa.Column("order_id", pg.UUID, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(10, 3), nullable=False),
        sa.ForeignKeyConstraint(["tenant_org_id", "order_id"], [f"{schema}.orders.tenant_org_id",
                                                                f"{schema}.orders.id"],
                                name="order_items_order_fkey", ondelete="CASCADE"),
        sa.CheckConstraint("quantity > 0", name="order_items_quantity_check"),
        schema=schema,
    )
    op.create_index("order_items_order_idx", "order_items", ["tenant_org_id", "order_id"], schema=schema)
    op.create_table(
        "user_preferences",
        sa.Column("user_id", pg.UUID, primary_key=True),
        sa.Column("tenant_org_id", pg.UUID,
                  sa.ForeignKey(f"{schema}.tenants.id", name="user_preferences_tenant_org_id_fkey", ondelete="CASCADE"), nullable=False),
        sa.Column("locale", sa.Text, nullable=False, server_default=sa.text("'en'")),
        sa.Column("notify_whatsapp", sa.Boolean, nullable=False, server_default=sa.text("true")),
        _at("updated_at"),
        schema=schema,
    )
    for table in OWNED:
        op.enable_rls(table, schema=schema, force=True)  # FORCE: the owner role obeys it too
    for policy in _policies(settings):
        op.create_policy(schema=schema, **policy)
    for grant in dbkit.migrate.role_model().grants(OWNED, schema):
        op.grant(**grant)


def downgrade() -> None:
    schema = dbkit.migrate.settings().schema
    for table in reversed(OWNED):  # their policies and grants go with them
        op.drop_table(table, schema=schema)
    for name in reversed(EXTENSIONS):
        op.drop_extension(name)
    # the roles stay: they belong to the whole cluster (drop them deliberately with op.drop_roles())
