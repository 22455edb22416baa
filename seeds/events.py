"""Events (the TimescaleDB hypertable): per-tenant time series over the window (``ctx.window``,
30 days) ending at the anchor (``ctx.anchor``: the start of today, UTC, unless --anchor or
DBKIT_SEED_ANCHOR fix it), so a retention policy keeps them; a daily pattern plus noise, and rows
land in many daily chunks.

Built column by column (numpy for the numbers) and zipped into rows: at hundreds of
thousands of rows the per-row Python work is what limits the load.
"""

from dbkit.seed import seeder

KINDS = ("api.request", "embedding.query", "document.view", "login")


@seeder("events", columns=("tenant_id", "time", "kind", "value", "payload"), depends_on=("tenants",),
        rows={"tiny": 240, "small": 20_000, "medium": 800_000, "large": 10_000_000})
def events(ctx):
    import numpy as np

    n = ctx.rows
    tenants = ctx.spread(ctx.ids("tenants"), n)
    times = ctx.times(n)
    kinds = ctx.sample(KINDS, n, p=(60, 25, 10, 5))
    # hour of day of each timestamp (the window is evenly spaced from the anchor backwards)
    seconds = (np.arange(n, dtype=np.float64) * (ctx.window.total_seconds() / max(n, 1))) % 86_400.0
    hours = seconds / 3600.0
    values = np.round(50.0 + 30.0 * np.sin((hours - 6.0) / 24.0 * 2.0 * np.pi) + ctx.np.normal(0.0, 5.0, n), 3)
    payloads = [{"status": 500} if i % 97 == 0 else None for i in range(n)]
    return zip(tenants, times, kinds, values.tolist(), payloads, strict=True)
