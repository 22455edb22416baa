from dbkit.seed import seeder


@seeder("notes", columns=("tenant_id", "body"), rows={"tiny": 30, "small": 300, "medium": 3000, "large": 30000})
def notes(ctx):
    tenants = [ctx.uuid() for _ in range(3)]
    for tenant_id in ctx.spread(tenants, ctx.rows):
        yield tenant_id, ctx.rng.choice(["hello", "world", "secret"])
