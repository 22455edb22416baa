"""Laundry businesses (tenant organisations): each has its own customers, orders and users."""

import re

from dbkit.seed import seeder

PLANS = ("starter", "growth", "enterprise")


@seeder("tenants", columns=("id", "name", "slug", "plan", "created_at"),
        rows={"tiny": 4, "small": 20, "medium": 500, "large": 5_000})
def tenants(ctx):
    names = ctx.pool("company", 2000)
    for i, created in enumerate(ctx.times(ctx.rows)):
        name = f"{ctx.rng.choice(names)} Laundry"
        slug = f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}-{i}"
        yield ctx.uuid(), name, slug, ctx.rng.choice(PLANS), created
