"""Events (the TimescaleDB hypertable): per-tenant time series over the window ending at the
anchor, with a daily pattern plus noise, so rows land in many daily chunks."""

import math

from dbkit.seed import seeder

KINDS = ("api.request", "embedding.query", "document.view", "login")


@seeder("events", columns=("tenant_id", "time", "kind", "value", "payload"), depends_on=("tenants",),
        rows={"tiny": 240, "small": 20_000, "medium": 800_000, "large": 10_000_000})
def events(ctx):
    tenant_ids = ctx.ids("tenants")
    noise = ctx.np.normal(0.0, 5.0, ctx.rows)
    kinds = ctx.rng.choices(KINDS, weights=(60, 25, 10, 5), k=ctx.rows)
    for i, (tenant_id, t) in enumerate(zip(ctx.spread(tenant_ids, ctx.rows), ctx.times(ctx.rows), strict=True)):
        hour = t.hour + t.minute / 60
        value = round(50.0 + 30.0 * math.sin((hour - 6.0) / 24.0 * 2.0 * math.pi) + float(noise[i]), 3)
        payload = {"status": 500} if i % 97 == 0 else None
        yield tenant_id, t, kinds[i], value, payload
