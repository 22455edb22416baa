"""Orders and their items: each order belongs to a customer of the same tenant, each item to its order."""

from decimal import Decimal

from dbkit.seed import seeder

STATUSES = ("received", "processing", "ready", "delivered", "cancelled")
SERVICES = {"wash_fold": Decimal("0.500"), "dry_clean": Decimal("1.800"), "iron": Decimal("0.300"),
            "carpet": Decimal("6.000")}


@seeder("orders", columns=("id", "tenant_org_id", "customer_id", "order_no", "status", "total", "placed_at"),
        depends_on=("customers",), rows={"tiny": 40, "small": 5_000, "medium": 300_000, "large": 3_000_000})
def orders(ctx):
    customers = ctx.fetch("customers", "tenant_org_id", "id")
    picks = ctx.sample(range(len(customers)), ctx.rows)
    for i, (pick, placed) in enumerate(zip(picks, ctx.times(ctx.rows), strict=True)):
        tenant_id, customer_id = customers[pick]
        total = Decimal(ctx.rng.randrange(300, 60000)) / 1000
        yield ctx.uuid(), tenant_id, customer_id, f"ORD-{i + 1:07d}", ctx.rng.choice(STATUSES), total, placed


@seeder("order_items", columns=("id", "tenant_org_id", "order_id", "service", "quantity", "unit_price"),
        depends_on=("orders",), rows={"tiny": 80, "small": 12_000, "medium": 750_000, "large": 7_500_000})
def order_items(ctx):
    orders = ctx.fetch("orders", "tenant_org_id", "id")
    services = sorted(SERVICES)
    for pick in ctx.sample(range(len(orders)), ctx.rows):
        tenant_id, order_id = orders[pick]
        service = ctx.rng.choice(services)
        yield ctx.uuid(), tenant_id, order_id, service, ctx.rng.randrange(1, 12), SERVICES[service]
