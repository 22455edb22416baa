"""Goals (Cultivate -> Execute -> Contribute) and the tasks that execute them.

Every task belongs to its goal's user: it is generated from the goal's (user_id, id), which the composite
foreign key tasks_goal_fkey checks too.
"""

from dbkit.seed import seeder

STATUSES = ("cultivate", "execute", "contribute")


@seeder("goals", columns=("id", "user_id", "title", "status", "target_date", "created_at"), depends_on=("users",),
        rows={"tiny": 18, "small": 1_000, "medium": 100_000, "large": 1_000_000})
def goals(ctx):
    users = ctx.ids("users")
    titles = ctx.pool("catch_phrase", 500)
    for user_id, created in zip(ctx.spread(users, ctx.rows), ctx.times(ctx.rows), strict=True):
        target = (created + (ctx.anchor - created) * 2).date() if ctx.rng.random() < 0.7 else None
        yield ctx.uuid(), user_id, ctx.rng.choice(titles), ctx.rng.choice(STATUSES), target, created


@seeder("tasks", columns=("id", "user_id", "goal_id", "title", "due_at", "done_at", "created_at"),
        depends_on=("goals",), rows={"tiny": 48, "small": 4_000, "medium": 400_000, "large": 4_000_000})
def tasks(ctx):
    goals = ctx.fetch("goals", "id", "user_id")
    titles = ctx.pool("bs", 500)
    for (goal_id, user_id), created in zip(ctx.sample(goals, ctx.rows), ctx.times(ctx.rows), strict=True):
        due = created + (ctx.anchor - created) / 2
        done = due if ctx.rng.random() < 0.4 else None
        yield ctx.uuid(), user_id, goal_id, ctx.rng.choice(titles).capitalize(), due, done, created
