"""One row per staff user (the JWT's sub): protected per user, not per tenant."""

from dbkit.seed import seeder


@seeder("user_preferences", columns=("user_id", "tenant_org_id", "locale", "notify_whatsapp", "updated_at"),
        depends_on=("tenants",), rows={"tiny": 12, "small": 200, "medium": 10_000, "large": 100_000})
def user_preferences(ctx):
    tenant_ids = ctx.ids("tenants")
    for tenant_id, updated in zip(ctx.spread(tenant_ids, ctx.rows), ctx.times(ctx.rows), strict=True):
        yield ctx.uuid(), tenant_id, ctx.rng.choice(("en", "ar")), ctx.rng.random() < 0.7, updated
