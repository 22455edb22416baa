"""Life-Buddy's accounts: one row per user; ``id`` is the ``sub`` claim of the user's JWTs.

tiny has 6 users, so the RLS matrix of tests/ compares one user's rows with another's in every table.
Same --seed (and DBKIT_SEED_ANCHOR), same rows.
"""

from dbkit.seed import seeder


@seeder("users", columns=("id", "email", "display_name", "created_at"),
        rows={"tiny": 6, "small": 200, "medium": 20_000, "large": 200_000})
def users(ctx):
    names = ctx.pool("name", 500)
    for i, created in enumerate(ctx.times(ctx.rows)):
        yield ctx.uuid(), f"user{i + 1}@lifebuddy.example", ctx.rng.choice(names), created
