"""Tenants: a company name and a unique slug each.

Every column is given explicitly (no now() defaults), so the contents are the same in every database."""

from dbkit.seed import seeder


@seeder("tenants", columns=("id", "slug", "name", "created_at"),
        rows={"tiny": 3, "small": 5, "medium": 50, "large": 200})
def tenants(ctx):
    companies = ctx.pool("company", 500)
    for i, created in enumerate(ctx.times(ctx.rows)):
        yield ctx.uuid(), f"tenant-{i + 1:04d}", ctx.rng.choice(companies), created
