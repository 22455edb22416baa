"""Candlefish RTPM's seed data: organisations, their sensors and 30 days of readings.

`dbkit seed` loads it with binary COPY as the worker role (rtpm_worker), then refreshes the continuous
aggregate readings_hourly over the seeded rows; `dbkit seed --compress` also runs the compression policy,
so chunks older than 7 days are compressed, as in a database that has been running for a while.
Readings end just before the anchor (the start of today, UTC, or --anchor), so the 90-day retention
policy keeps them all.  Same --seed and anchor, same rows.
"""

from dbkit.seed import seeder

PLANS = ("free", "team", "enterprise")
# what each kind of sensor reports: metric -> (typical value, spread)
METRICS = {
    "host": {"cpu_pct": (35.0, 20.0), "mem_pct": (60.0, 15.0)},
    "service": {"latency_ms": (120.0, 60.0), "requests_per_s": (250.0, 120.0)},
    "database": {"connections": (40.0, 15.0), "latency_ms": (8.0, 4.0)},
    "queue": {"depth": (500.0, 400.0)},
}
KINDS = tuple(METRICS)


@seeder("orgs", columns=("id", "slug", "name", "plan", "created_at"),
        rows={"tiny": 3, "small": 10, "medium": 50, "large": 200})
def orgs(ctx):
    names = ctx.pool("company", 500)
    for i, created in enumerate(ctx.times(ctx.rows)):
        name = ctx.rng.choice(names)
        slug = "-".join(name.lower().replace(",", "").split())[:40] + f"-{i}"
        yield ctx.uuid(), slug, name, ctx.rng.choice(PLANS), created


@seeder("sensors", columns=("id", "org_id", "name", "kind", "location", "created_at"), depends_on=("orgs",),
        rows={"tiny": 12, "small": 200, "medium": 2_000, "large": 10_000})
def sensors(ctx):
    org_ids = ctx.ids("orgs")
    cities = ctx.pool("city", 100)
    for i, (org_id, created) in enumerate(zip(ctx.spread(org_ids, ctx.rows), ctx.times(ctx.rows), strict=True)):
        kind = KINDS[i % len(KINDS)]
        yield ctx.uuid(), org_id, f"{kind}-{i:05d}", kind, ctx.rng.choice(cities), created


@seeder("readings", columns=("time", "org_id", "sensor_id", "metric", "value"), depends_on=("sensors",),
        rows={"tiny": 3_000, "small": 300_000, "medium": 3_000_000, "large": 30_000_000})
def readings(ctx):
    sensors = ctx.fetch("sensors", "org_id", "id", "kind")
    picks = ctx.sample(range(len(sensors)), ctx.rows)  # indexes: a sensor row is a tuple
    for when, pick in zip(ctx.times(ctx.rows), picks, strict=True):
        org_id, sensor_id, kind = sensors[pick]
        metric = ctx.rng.choice(tuple(METRICS[kind]))
        typical, spread = METRICS[kind][metric]
        yield when, org_id, sensor_id, metric, round(max(0.0, ctx.rng.gauss(typical, spread)), 3)
