"""Seed data for studioops' projects, quotes (plans and their items) and their documents.

Same --seed (and DBKIT_SEED_ANCHOR), same rows.  No RLS: studioops is one studio, one tenant.
"""

from decimal import Decimal

from dbkit.seed import seeder

STATUSES = ("draft", "quoted", "active", "done")
CATEGORIES = ("labor", "material", "equipment", "subcontract")
UNITS = ("hour", "unit", "m2", "day")


@seeder("projects", columns=("id", "name", "client_name", "status", "created_at", "updated_at"),
        rows={"tiny": 5, "small": 100, "medium": 10_000, "large": 100_000})
def projects(ctx):
    names, clients = ctx.pool("catch_phrase", 300), ctx.pool("company", 300)
    for created in ctx.times(ctx.rows):
        naive = created.replace(tzinfo=None)  # studioops' columns are TIMESTAMP (no time zone)
        yield ctx.uuid(), ctx.rng.choice(names), ctx.rng.choice(clients), ctx.rng.choice(STATUSES), naive, naive


@seeder("plans", columns=("id", "project_id", "version", "status", "margin_target"), depends_on=("projects",),
        rows={"tiny": 8, "small": 150, "medium": 15_000, "large": 150_000})
def plans(ctx):
    project_ids = ctx.ids("projects")
    for i, project_id in enumerate(ctx.spread(project_ids, ctx.rows)):
        yield ctx.uuid(), project_id, 1 + i % 3, ctx.rng.choice(STATUSES[:3]), Decimal(f"{ctx.rng.uniform(0.1, 0.4):.2f}")


@seeder("plan_items", columns=("id", "plan_id", "category", "title", "quantity", "unit", "unit_price"),
        depends_on=("plans",), rows={"tiny": 30, "small": 600, "medium": 60_000, "large": 600_000})
def plan_items(ctx):
    plan_ids = ctx.ids("plans")
    titles = ctx.pool("bs", 300)
    for plan_id in ctx.spread(plan_ids, ctx.rows):
        yield (ctx.uuid(), plan_id, ctx.rng.choice(CATEGORIES), ctx.rng.choice(titles)[:255],
               Decimal(ctx.rng.randint(1, 40)), ctx.rng.choice(UNITS), Decimal(f"{ctx.rng.uniform(5, 900):.2f}"))
