"""CleanMateX's tables as SQLAlchemy models: what `dbkit migrate new --autogenerate` and `dbkit migrate check`
compare the database with.  Row-level security, policies and grants are not models: they live in the
revisions (versions/0001_initial.py).

Supabase style: the tables are in `public`; every row belongs to a tenant organisation (`tenant_org_id`, the
JWT claim of the same name), and `user_preferences` to one user (the JWT `sub`).  Child tables reference
their parent together with `tenant_org_id`, so a row can never point into another tenant.
"""

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

# No schema: the tables are in public, the database's default schema, which is how PostgreSQL reports the
# targets of their foreign keys too (a MetaData(schema="public") would name them and differ from the database).
metadata = MetaData()


def _created_at() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()"))


tenants = Table(
    "tenants", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", Text, nullable=False),
    Column("slug", Text, nullable=False),
    Column("plan", Text, nullable=False, server_default=text("'starter'")),
    _created_at(),
    UniqueConstraint("slug", name="tenants_slug_key"),
)

customers = Table(
    "customers", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_org_id", UUID, ForeignKey("tenants.id", name="customers_tenant_org_id_fkey", ondelete="CASCADE"),
           nullable=False),
    Column("name", Text, nullable=False),
    Column("phone", Text, nullable=False),
    Column("email", Text),
    _created_at(),
    UniqueConstraint("tenant_org_id", "id", name="customers_tenant_org_id_id_key"),
    Index("customers_tenant_created_idx", "tenant_org_id", text("created_at DESC")),
)

orders = Table(
    "orders", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_org_id", UUID, nullable=False),
    Column("customer_id", UUID, nullable=False),
    Column("order_no", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'received'")),
    Column("total", Numeric(12, 3), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    ForeignKeyConstraint(["tenant_org_id", "customer_id"], ["customers.tenant_org_id",
                                                            "customers.id"],
                         name="orders_customer_fkey", ondelete="CASCADE"),
    UniqueConstraint("tenant_org_id", "order_no", name="orders_tenant_org_id_order_no_key"),
    UniqueConstraint("tenant_org_id", "id", name="orders_tenant_org_id_id_key"),
    CheckConstraint("status IN ('received', 'processing', 'ready', 'delivered', 'cancelled')",
                    name="orders_status_check"),
    Index("orders_tenant_placed_idx", "tenant_org_id", text("placed_at DESC")),
)

order_items = Table(
    "order_items", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_org_id", UUID, nullable=False),
    Column("order_id", UUID, nullable=False),
    Column("service", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(10, 3), nullable=False),
    ForeignKeyConstraint(["tenant_org_id", "order_id"], ["orders.tenant_org_id", "orders.id"],
                         name="order_items_order_fkey", ondelete="CASCADE"),
    CheckConstraint("quantity > 0", name="order_items_quantity_check"),
    Index("order_items_order_idx", "tenant_org_id", "order_id"),
)

user_preferences = Table(
    "user_preferences", metadata,
    Column("user_id", UUID, primary_key=True),  # the JWT's sub (Supabase's auth.users.id)
    Column("tenant_org_id", UUID, ForeignKey("tenants.id", name="user_preferences_tenant_org_id_fkey", ondelete="CASCADE"),
           nullable=False),
    Column("locale", Text, nullable=False, server_default=text("'en'")),
    Column("notify_whatsapp", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
