"""Row-level security overhead benchmark on the embedded dev cluster.  Prints figures; never part of the tests.

What it measures: the cost of letting RLS do the tenant filtering, per query, against the same
query with an explicit ``WHERE tenant_id = %s`` run by a role that bypasses RLS.

Set-up (one run, one fresh database ``dbkit_rls_bench`` on the dev cluster, dropped at the end):
the reference schema migrated to head, then ``app.events`` (the TimescaleDB hypertable, index
``(tenant_id, time DESC)``, RLS forced) loaded with ``dbkit.seed`` -- medium profile at scale 2:
100 tenants, 1.6M events, spread uniformly -- then ``VACUUM ANALYZE`` (what autovacuum would do
after a bulk load; doing it now keeps it from starting in the middle of the measurements).

Query shapes, each run ``--iterations`` times (default 1000) on keys sampled with
``random.Random(0)`` (a tenant, and an exact ``(tenant, time)`` pair of one of its rows):

1. point lookup:  ``SELECT * FROM app.events WHERE time = $t``             (+ ``tenant_id = $1``)
2. latest 50:     ``... WHERE time <= $t ORDER BY time DESC LIMIT 50``     (+ ``tenant_id = $1``)
3. count:         ``SELECT count(*) FROM app.events``                       (+ ``WHERE tenant_id = $1``)

each three ways, on persistent connections, as server-side prepared statements:

a. enforce: the enforce role (``app_rls``), claims set per transaction with
   ``dbkit.rls.scoped(conn, tenant_id=...)``, NO tenant filter in the query: the policy
   ``tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)`` filters;
b. bypass: the bypass role (``app_full``, BYPASSRLS) with the explicit tenant filter (``+ ...``
   above), also inside a transaction;
c. naive: as (a), after the superuser replaced the events SELECT policy with the naive form
   ``tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid`` (no sub-select);
   the original policy is restored afterwards;
d. view: the isolation mode for hypertables with compression or continuous aggregates: the enforce
   role queries ``app.events_scoped``, a tenant-scoped view (``op.create_scoped_view``: security_barrier,
   the same predicate as the policy, WITH CASCADED CHECK OPTION) owned by a role that RLS does not
   apply to, so the view's filter does the tenant filtering instead of the policy.

The latency is ``time.perf_counter()`` around ``execute() + fetchall()`` of the query only
(BEGIN, the claims and COMMIT are outside it, and equal for both roles but for the claims
call); p50 and p95 in milliseconds.  A second table shows the whole transaction (BEGIN,
claims, query, COMMIT) for (a) and (b).  Target: enforce p50 <= 1.15 x bypass p50 per shape.
Then EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF) of the count shape as the enforce role, under
the real and under the naive policy: which scans were used.

    .venv/bin/python bench/rls_bench.py [--iterations 1000] [--warmup 50] [--scale 2.0] [--keep]

About 25 s on a 2-core machine (most of it the load and the VACUUM).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import resource
import statistics
import time
from datetime import timedelta
from pathlib import Path

from dbkit import _db as db
from dbkit._dev import DevCluster, provision
from dbkit._urls import parse_database_url
from dbkit.config import load_settings
from dbkit.migrate import _runner as runner
from dbkit.rls import scoped
from dbkit.seed import _engine as engine

BENCH_DB = "dbkit_rls_bench"
REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.15
POLICY = "events_tenant_select"

# shape -> (query for the enforce role: RLS filters, query for the bypass role: explicit filter,
#           which sampled values the enforce query binds)
SHAPES = {
    "point lookup (tenant, time)": (
        "SELECT * FROM app.events WHERE time = %s",
        "SELECT * FROM app.events WHERE tenant_id = %s AND time = %s",
        "time",
    ),
    "latest 50 by time": (
        "SELECT * FROM app.events WHERE time <= %s ORDER BY time DESC LIMIT 50",
        "SELECT * FROM app.events WHERE tenant_id = %s AND time <= %s ORDER BY time DESC LIMIT 50",
        "time",
    ),
    "count per tenant": (
        "SELECT count(*) FROM app.events",
        "SELECT count(*) FROM app.events WHERE tenant_id = %s",
        "",
    ),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[min(len(s), max(1, math.ceil(q / 100 * len(s)))) - 1]


def fresh_database(base_settings):
    """Drop/create the bench database on the dev cluster, migrate it; (settings, superuser url)."""
    cluster = DevCluster.from_settings(base_settings)
    url = provision(cluster, ()).url
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    bench_url = url.with_dbname(BENCH_DB)
    settings = load_settings({"database_url": bench_url.raw, "env": "test"}, cwd=REPO)
    runner.upgrade(settings)
    return settings, bench_url


def drop_database(url) -> None:
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def as_role(url, role: str):
    """The same server and database, logging in as ``role`` (trust authentication on the dev cluster)."""
    host = url.hosts[0] if url.hosts else "127.0.0.1"
    return parse_database_url(f"postgresql://{role}@{host}:{url.port}/{url.dbname}")


def load(settings, super_url, scale: float) -> tuple[int, int]:
    print(f"== load: medium profile x {scale:g}, tenants + events, --defer-indexes ==")
    t0 = time.perf_counter()
    result = engine.run(settings, profile="medium", scale=scale, seed=0, only=["tenants", "events"],
                        tenant_skew=0, defer_indexes=True, truncate=True)
    load_s = time.perf_counter() - t0
    rows = {t.table: t.rows for t in result.tables}
    t0 = time.perf_counter()
    with db.connect(super_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE app.tenants")
        conn.execute("VACUUM ANALYZE app.events")
        chunks = conn.execute("SELECT count(*) FROM timescaledb_information.chunks "
                              "WHERE hypertable_schema = 'app' AND hypertable_name = 'events'").fetchone()[0]
        per = conn.execute("SELECT min(n), max(n) FROM (SELECT count(*) n FROM app.events GROUP BY tenant_id) s"
                           ).fetchone()
    print(f"{rows['tenants']:,} tenants, {rows['events']:,} events in {chunks} daily chunks "
          f"({per[0]:,}..{per[1]:,} rows per tenant); seed {load_s:.1f} s (incl. index rebuild), "
          f"VACUUM ANALYZE {time.perf_counter() - t0:.1f} s")
    return rows["tenants"], rows["events"]


def sample_keys(super_url, n: int) -> list[tuple]:
    """``n`` deterministic (tenant_id, time) pairs, each an existing row of that tenant."""
    rng = random.Random(0)
    with db.connect(super_url, autocommit=True) as conn:
        bounds = conn.execute("SELECT tenant_id, min(time), max(time) FROM app.events "
                              "GROUP BY tenant_id ORDER BY tenant_id").fetchall()
        picks = []
        for _ in range(n):
            tenant, lo, hi = bounds[rng.randrange(len(bounds))]
            picks.append((tenant, lo + timedelta(seconds=rng.uniform(0, (hi - lo).total_seconds()))))
        rows = conn.execute(
            "SELECT k.t, e.time FROM unnest(%s::uuid[], %s::timestamptz[]) WITH ORDINALITY AS k(t, ts, i) "
            "CROSS JOIN LATERAL (SELECT time FROM app.events WHERE tenant_id = k.t AND time <= k.ts "
            "ORDER BY time DESC LIMIT 1) e ORDER BY k.i",
            ([p[0] for p in picks], [p[1] for p in picks]),
        ).fetchall()
    assert len(rows) == n, (len(rows), n)
    return rows


def run_enforce(conn, sql: str, binds: str, key, claim: str) -> tuple[float, float, int]:
    tenant, ts = key
    params = (ts,) if binds == "time" else ()
    t0 = time.perf_counter()
    with scoped(conn, tenant_id=tenant, tenant_claim=claim):
        q0 = time.perf_counter()
        rows = conn.execute(sql, params, prepare=True).fetchall()
        q1 = time.perf_counter()
    t1 = time.perf_counter()
    return (q1 - q0) * 1000, (t1 - t0) * 1000, len(rows) if binds else rows[0][0]


def run_bypass(conn, sql: str, binds: str, key) -> tuple[float, float, int]:
    tenant, ts = key
    params = (tenant, ts) if binds == "time" else (tenant,)
    t0 = time.perf_counter()
    with conn.transaction():
        q0 = time.perf_counter()
        rows = conn.execute(sql, params, prepare=True).fetchall()
        q1 = time.perf_counter()
    t1 = time.perf_counter()
    return (q1 - q0) * 1000, (t1 - t0) * 1000, len(rows) if binds else rows[0][0]


def measure(fns: dict, keys: list, warmup: list) -> dict[str, tuple[list[float], list[float], list[int]]]:
    """Run every way of ``fns`` on each key in turn, rotating which goes first, so that no way
    always meets the pages the other just read (shared_buffers is smaller than the table)."""
    names = list(fns)
    for key in warmup:
        for name in names:
            fns[name](key)
    out = {name: ([], [], []) for name in names}
    for i, key in enumerate(keys):
        for name in names[i % len(names):] + names[:i % len(names)]:
            q, w, c = fns[name](key)
            out[name][0].append(q)
            out[name][1].append(w)
            out[name][2].append(c)
    return out


@contextlib.contextmanager
def naive_policy(super_url, claim: str):
    """Replace the events SELECT policy by the naive form (no sub-select); restore the original after."""
    with db.connect(super_url, autocommit=True) as conn:
        roles, qual = conn.execute(
            "SELECT array_to_string(roles, ', '), qual FROM pg_policies "
            "WHERE schemaname = 'app' AND tablename = 'events' AND policyname = %s", (POLICY,)).fetchone()
        naive = f"tenant_id = NULLIF(current_setting('{claim}', true), '')::uuid"
        with conn.transaction():
            conn.execute(f"DROP POLICY {POLICY} ON app.events")
            conn.execute(f"CREATE POLICY {POLICY} ON app.events AS PERMISSIVE FOR SELECT TO {roles} USING ({naive})")
        try:
            yield qual
        finally:
            with conn.transaction():
                conn.execute(f"DROP POLICY {POLICY} ON app.events")
                conn.execute(f"CREATE POLICY {POLICY} ON app.events AS PERMISSIVE FOR SELECT TO {roles} "
                             f"USING ({qual})")


@contextlib.contextmanager
def scoped_view(super_url, settings):
    """``app.events_scoped``: the scoped view of the isolation mode, owned by the superuser (RLS does not
    apply to its owner, as it does not to a hypertable without RLS), SELECT granted to the enforce role."""
    from dbkit.rls import claims
    from dbkit.rls._scoped import _quote, scoped_view_sql

    predicate = claims(settings).predicate("tenant", "uuid")
    with db.connect(super_url, autocommit=True) as conn:
        conn.execute(scoped_view_sql(_quote, "events_scoped", "events", "app", "tenant_id", predicate, True))
        conn.execute(f'GRANT SELECT ON app.events_scoped TO "{settings.role_enforce[0]}"')
        conn.execute("ANALYZE app.events")
        try:
            yield
        finally:
            conn.execute("DROP VIEW app.events_scoped")


def plan_cache(conn) -> dict[str, tuple[int, int]]:
    """This connection's prepared statements: statement -> (generic plans, custom plans) used."""
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
        "WHERE statement NOT LIKE '%%set_config%%'")}


def explain(conn, sql: str, params: tuple, *, tenant, claim: str | None) -> str:
    """One line: which scans ``sql`` used, in a transaction with the claims (``claim``) or without."""
    block = scoped(conn, tenant_id=tenant, tenant_claim=claim) if claim else conn.transaction()
    with block:
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF, FORMAT JSON) " + sql, params).fetchone()[0][0]
    scans: dict[str, int] = {}
    conds: set[str] = set()
    initplan = False

    def walk(node):
        nonlocal initplan
        kind = node["Node Type"]
        initplan |= node.get("Parent Relationship") == "InitPlan"
        if kind.endswith("Scan") and kind != "Custom Scan":
            name = f"{kind} ({node['Index Name'].split('_chunk_', 1)[-1]})" if "Index Name" in node else kind
            scans[name] = scans.get(name, 0) + 1
            for k in ("Index Cond", "Filter"):
                if k in node:
                    conds.add(f"{k}: {node[k]}")
        elif kind == "Custom Scan":
            scans[node.get("Custom Plan Provider", kind)] = 1
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    used = ", ".join(f"{k} x{v}" for k, v in scans.items()) + (", InitPlan" if initplan else "")
    index = "index used" if any(k.startswith(("Index", "Bitmap")) for k in scans) else "NO index"
    cond = "; ".join(sorted(conds)) or "-"
    return f"{index}: {used}; {cond}; exec {plan['Execution Time']:.3f} ms, plan {plan['Planning Time']:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="measured runs per shape and way")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured runs first, per shape and way")
    parser.add_argument("--scale", type=float, default=2.0,
                        help="medium-profile scale: 50 tenants and 800k events per 1.0 (default 2.0)")
    parser.add_argument("--keep", action="store_true", help="keep the dbkit_rls_bench database afterwards")
    args = parser.parse_args()
    started = time.perf_counter()

    settings, super_url = fresh_database(load_settings(cwd=REPO))
    try:
        tenants, events = load(settings, super_url, args.scale)
        if tenants < 100 or events < 1_000_000:
            print(f"note: {tenants} tenants / {events:,} events is below the 100 tenants / 1M rows this "
                  "benchmark is meant for (raise --scale)")
        claim = settings.tenant_claim
        keys = sample_keys(super_url, args.warmup + args.iterations)
        warm, keys = keys[:args.warmup], keys[args.warmup:]
        print(f"{len(keys)} measured + {len(warm)} warm-up runs per shape and way; "
              f"{len({k[0] for k in keys})} distinct tenants sampled")
        enforce_url = as_role(super_url, settings.role_enforce[0])
        bypass_url = as_role(super_url, settings.role_bypass[0])

        res: dict[tuple[str, str], tuple] = {}
        point_rls, point_full, _ = SHAPES["point lookup (tenant, time)"]
        count_rls = SHAPES["count per tenant"][0]
        tenant, ts = keys[0]
        plans = {}
        with db.connect(enforce_url, autocommit=True) as enf, db.connect(bypass_url, autocommit=True) as byp:
            for shape, (rls_sql, full_sql, binds) in SHAPES.items():
                out = measure({"enforce": lambda k: run_enforce(enf, rls_sql, binds, k, claim),
                               "bypass": lambda k: run_bypass(byp, full_sql, binds, k)}, keys, warm)
                res[shape, "enforce"], res[shape, "bypass"] = out["enforce"], out["bypass"]
                if res[shape, "enforce"][2] != res[shape, "bypass"][2]:
                    raise SystemExit(f"{shape}: the enforce and bypass queries returned different rows")
            cache = {role: plan_cache(conn) for role, conn in (("enforce", enf), ("bypass", byp))}
            plans["count", "enforce"] = explain(enf, count_rls, (), tenant=tenant, claim=claim)
            plans["point", "enforce"] = explain(enf, point_rls, (ts,), tenant=tenant, claim=claim)
            plans["point", "bypass"] = explain(byp, point_full, (tenant, ts), tenant=None, claim=None)

        with naive_policy(super_url, claim) as original_qual:
            with db.connect(enforce_url, autocommit=True) as naive:
                for shape, (rls_sql, _, binds) in SHAPES.items():
                    way = {"naive": lambda k: run_enforce(naive, rls_sql, binds, k, claim)}
                    out = measure(way, keys, warm)
                    res[shape, "naive"] = out["naive"]
                    if res[shape, "naive"][2] != res[shape, "bypass"][2]:
                        raise SystemExit(f"{shape}: the naive-policy query returned different rows")
                plans["count", "naive"] = explain(naive, count_rls, (), tenant=tenant, claim=claim)

        with scoped_view(super_url, settings):
            with db.connect(enforce_url, autocommit=True) as view:
                for shape, (rls_sql, _, binds) in SHAPES.items():
                    view_sql = rls_sql.replace("app.events", "app.events_scoped")
                    out = measure({"view": lambda k: run_enforce(view, view_sql, binds, k, claim)}, keys, warm)
                    res[shape, "view"] = out["view"]
                    if res[shape, "view"][2] != res[shape, "bypass"][2]:
                        raise SystemExit(f"{shape}: the scoped-view query returned different rows")
                plans["count", "view"] = explain(view, count_rls.replace("app.events", "app.events_scoped"), (),
                                                 tenant=tenant, claim=claim)

        print("\n== query latency: execute + fetchall, ms (prepared statements, persistent connections) ==")
        head = (f"{'shape':28} {'rows':>7} {'enforce p50/p95':>16} {'bypass p50/p95':>16} {'naive p50/p95':>16} "
                f"{'view p50/p95':>16} {'enf/byp p50':>11} {'view/enf p50':>12}  target <= {TARGET_RATIO}")
        print(head)
        print("-" * len(head))
        missed = 0
        for shape in SHAPES:
            cells = []
            for way in ("enforce", "bypass", "naive", "view"):
                q = res[shape, way][0]
                cells.append(f"{pct(q, 50):7.3f}/{pct(q, 95):<8.3f}")
            ratio = pct(res[shape, "enforce"][0], 50) / pct(res[shape, "bypass"][0], 50)
            ok = ratio <= TARGET_RATIO
            missed += not ok
            rows = statistics.mean(res[shape, "bypass"][2])
            view_ratio = pct(res[shape, "view"][0], 50) / pct(res[shape, "enforce"][0], 50)
            print(f"{shape:28} {rows:7.0f} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {cells[3]:>16} {ratio:11.2f} "
                  f"{view_ratio:12.2f}  {'OK' if ok else 'MISSED'}")
        print("(rows: mean rows returned per query -- for the count shape, the mean count)")

        print("\n== whole transaction: BEGIN, claims (enforce only), query, COMMIT; p50/p95 ms ==")
        for shape in SHAPES:
            e, b = res[shape, "enforce"][1], res[shape, "bypass"][1]
            print(f"{shape:28} enforce {pct(e, 50):6.3f}/{pct(e, 95):<7.3f} "
                  f"bypass {pct(b, 50):6.3f}/{pct(b, 95):<7.3f} "
                  f"ratio {pct(e, 50) / pct(b, 50):.2f}")

        print("\n== plan cache after the runs: generic / custom plans per prepared statement ==")
        for role, stmts in cache.items():
            for stmt, (generic, custom) in stmts.items():
                print(f"{role:8} {generic:5} / {custom:<5} {stmt}")

        print("\n== EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF), one tenant ==")
        print(f"count, enforce role, policy USING ({original_qual})")
        print(f"  -> {plans['count', 'enforce']}")
        print(f"count, enforce role, naive  USING (tenant_id = NULLIF(current_setting('{claim}', true), '')::uuid)")
        print(f"  -> {plans['count', 'naive']}")
        print(f"count, enforce role, scoped view app.events_scoped\n  -> {plans['count', 'view']}")
        print(f"point lookup, enforce role: {plans['point', 'enforce']}")
        print(f"point lookup, bypass role:  {plans['point', 'bypass']}")
        print(f"\ntarget enforce p50 <= {TARGET_RATIO} x bypass p50: "
              f"{'met for every shape' if not missed else f'MISSED for {missed} of {len(SHAPES)} shapes'}")
    finally:
        if args.keep:
            print(f"kept database {BENCH_DB}")
        else:
            drop_database(super_url)
    print(f"total wall time {time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
