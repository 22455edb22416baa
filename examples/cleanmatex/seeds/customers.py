"""Customers of each laundry, with Omani-style phone numbers (WhatsApp is how CleanMateX reaches them)."""

from dbkit.seed import seeder


@seeder("customers", columns=("id", "tenant_org_id", "name", "phone", "email", "created_at"),
        depends_on=("tenants",), rows={"tiny": 24, "small": 2_000, "medium": 100_000, "large": 1_000_000})
def customers(ctx):
    tenant_ids = ctx.ids("tenants")
    names = ctx.pool("name", 2000)
    for i, (tenant_id, created) in enumerate(zip(ctx.spread(tenant_ids, ctx.rows), ctx.times(ctx.rows),
                                                 strict=True)):
        email = f"customer{i}@example.com" if ctx.rng.random() < 0.6 else None
        phone = f"+968{ctx.rng.randrange(90000000, 99999999)}"
        yield ctx.uuid(), tenant_id, ctx.rng.choice(names), phone, email, created
