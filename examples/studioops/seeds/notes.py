"""Seed data for notes, written by `dbkit init`: `dbkit seed` loads it with binary COPY.

The project uses no row-level security: the rows belong to nobody in particular.
Same --seed (and DBKIT_SEED_ANCHOR), same rows.  Add one module per table here; a seeder names
the tables it depends on (depends_on=(...)) and reads their rows with ctx.ids()/ctx.fetch().
"""

from dbkit.seed import seeder


@seeder("notes", columns=("id", "title", "body", "created_at"),
        rows={"tiny": 40, "small": 400, "medium": 40_000, "large": 400_000})
def notes(ctx):
    titles, bodies = ctx.pool("sentence", 200), ctx.pool("paragraph", 200)
    for created in ctx.times(ctx.rows):
        yield ctx.uuid(), ctx.rng.choice(titles), ctx.rng.choice(bodies), created
