"""Seed data for notes, written by `dbkit init`: `dbkit seed` loads it with binary COPY.

Rows belong to five tenants (random ids, the same for the same --seed), so the RLS matrix of
tests/test_rls.py compares one tenant's rows with another's.
Same --seed (and DBKIT_SEED_ANCHOR), same rows.  Add one module per table here; a seeder names
the tables it depends on (depends_on=(...)) and reads their rows with ctx.ids()/ctx.fetch().
"""

from dbkit.seed import seeder


@seeder("notes", columns=("id", "tenant_id", "title", "body", "created_at"),
        rows={"tiny": 40, "small": 400, "medium": 40_000, "large": 400_000})
def notes(ctx):
    titles, bodies = ctx.pool("sentence", 200), ctx.pool("paragraph", 200)
    tenants = [ctx.uuid() for _ in range(5)]
    for tenant_id, created in zip(ctx.spread(tenants, ctx.rows), ctx.times(ctx.rows), strict=True):
        yield ctx.uuid(), tenant_id, ctx.rng.choice(titles), ctx.rng.choice(bodies), created
