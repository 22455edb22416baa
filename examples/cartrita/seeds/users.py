"""Users of the assistant and their conversations (`dbkit seed`: binary COPY, the same rows for the same seed)."""

from dbkit.seed import seeder


@seeder("users", columns=("id", "email", "display_name", "created_at"),
        rows={"tiny": 6, "small": 200, "medium": 20_000, "large": 200_000})
def users(ctx):
    names = ctx.pool("name", 2000)
    for n, created in enumerate(ctx.times(ctx.rows)):
        yield ctx.uuid(), f"user{n}@example.com", ctx.rng.choice(names), created


@seeder("conversations", columns=("id", "user_id", "title", "created_at"), depends_on=("users",),
        rows={"tiny": 18, "small": 1_000, "medium": 100_000, "large": 1_000_000})
def conversations(ctx):
    user_ids = ctx.ids("users")
    titles = ctx.pool("catch_phrase", 1000)
    for user_id, created in zip(ctx.spread(user_ids, ctx.rows), ctx.times(ctx.rows), strict=True):
        yield ctx.uuid(), user_id, ctx.rng.choice(titles), created
