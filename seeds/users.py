"""Users: names from a Faker pool, emails unique per tenant (name + running number)."""

import re

from dbkit.seed import seeder


@seeder("users", columns=("id", "tenant_id", "email", "name", "created_at"), depends_on=("tenants",),
        rows={"tiny": 12, "small": 200, "medium": 20_000, "large": 200_000})
def users(ctx):
    tenant_ids = ctx.ids("tenants")
    slugs = dict(ctx.fetch("tenants", "id", "slug"))
    names = ctx.pool("name", 2000)
    times = ctx.times(ctx.rows)
    for i, tenant_id in enumerate(ctx.spread(tenant_ids, ctx.rows)):
        name = ctx.rng.choice(names)
        local = re.sub(r"[^a-z]+", ".", name.lower()).strip(".")
        yield ctx.uuid(), tenant_id, f"{local}.{i}@{slugs[tenant_id]}.example.com", name, times[i]
