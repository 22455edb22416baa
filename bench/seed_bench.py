"""Seeding benchmark on the embedded dev cluster.  Prints figures; never part of the tests.

All in one run, on one cluster:

1. the medium profile end to end with --defer-indexes (>= 1M rows): wall time, load time,
   rows/s per table, index rebuild time per table, peak RSS of this process;
2. the same 50k users+documents rows through a naive SQLAlchemy ORM ``session.add()`` loop
   vs ``dbkit seed``: the ratio;
3. ``pgbench -i -s 10`` (client-side COPY of 1M rows) as the machine's COPY ceiling: dbkit's
   hypertable (events) rows/s as a fraction of pgbench's rows/s.

    .venv/bin/python bench/seed_bench.py [--profile medium] [--skip-orm] [--skip-pgbench]

Targets (2-core machine): medium load <= 30 s (index builds separate), >= 20x the ORM loop,
hypertable load >= 40% of pgbench -i rows/s.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

from dbkit import _db as db
from dbkit._dev import DevCluster, provision
from dbkit.config import load_settings
from dbkit.migrate import _runner as runner
from dbkit.seed import _engine as engine

BENCH_DB = "dbkit_bench"
REPO = Path(__file__).resolve().parents[1]


def fresh_database(base_settings) -> object:
    """Drop/create the bench database on the dev cluster, migrate it, return its settings."""
    cluster = DevCluster.from_settings(base_settings)
    url = provision(cluster, ()).url
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    settings = load_settings({"database_url": url.with_dbname(BENCH_DB).raw, "env": "test"}, cwd=REPO)
    runner.upgrade(settings)
    return settings


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_profile(settings, profile: str) -> engine.SeedResult:
    print(f"\n== 1. profile {profile}, --defer-indexes ==")
    t0 = time.perf_counter()
    result = engine.run(settings, profile=profile, seed=1, truncate=True, defer_indexes=True)
    wall = time.perf_counter() - t0
    load = sum(t.seconds for t in result.tables)
    index = sum(t.index_seconds or 0 for t in result.tables)
    print(f"{'table':18} {'rows':>10} {'load s':>8} {'rows/s':>10} {'index s':>8}")
    for t in result.tables:
        idx = "" if t.index_seconds is None else f"{t.index_seconds:8.2f}"
        print(f"{t.table:18} {t.rows:>10,} {t.seconds:8.2f} {t.rows_per_s:>10,.0f} {idx:>8}")
    total = sum(t.rows for t in result.tables)
    print(f"total {total:,} rows; load {load:.1f} s ({total / load:,.0f} rows/s); index rebuilds {index:.1f} s; "
          f"wall {wall:.1f} s (incl. checksums, truncate); peak RSS {peak_rss_mib():.0f} MiB")
    print(f"target: load <= 30 s -> {'OK' if load <= 30 else 'MISSED'}")
    return result


def bench_orm(settings, rows: int = 50_000) -> None:
    """ORM loop vs dbkit seed for the same users + documents rows."""
    from sqlalchemy import Column, DateTime, MetaData, Table, Text, create_engine, text
    from sqlalchemy.dialects.postgresql import UUID
    from sqlalchemy.orm import Session, registry

    print(f"\n== 2. {rows:,} users+documents rows: naive ORM loop vs dbkit seed ==")
    half = rows // 2
    with db.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE app.tenants, app.users, app.documents, app.document_chunks, app.events, "
                     "app.audit_log")
    # small profile: 200 users, 500 documents per 1.0 of scale
    # dbkit's bulk mode (--defer-indexes); the rebuild time counts against dbkit in the ratio
    res = engine.run(settings, profile="small", seed=2, scale=half / 200, only=["tenants", "users"],
                     defer_indexes=True)
    res2 = engine.run(settings, profile="small", seed=2, scale=half / 500, only=["documents"], defer_indexes=True)
    mine = [t for t in res.tables + res2.tables if t.table in ("users", "documents")]
    dbkit_rows = sum(t.rows for t in mine)
    dbkit_s = sum(t.seconds + (t.index_seconds or 0) for t in mine)
    sa = create_engine(settings.database_url.sqlalchemy_url)
    with sa.begin() as conn:
        users = conn.execute(text("SELECT id, tenant_id, email, name, created_at FROM app.users")).all()
        docs = conn.execute(text("SELECT id, tenant_id, author_id, title, body, created_at FROM app.documents")).all()
        conn.execute(text("TRUNCATE app.users, app.documents, app.document_chunks, app.audit_log"))
    md = MetaData(schema="app")
    users_t = Table("users", md, Column("id", UUID, primary_key=True), Column("tenant_id", UUID),
                    Column("email", Text), Column("name", Text), Column("created_at", DateTime(timezone=True)))
    docs_t = Table("documents", md, Column("id", UUID, primary_key=True), Column("tenant_id", UUID),
                   Column("author_id", UUID), Column("title", Text), Column("body", Text),
                   Column("created_at", DateTime(timezone=True)))

    class User:
        pass

    class Document:
        pass

    reg = registry()
    reg.map_imperatively(User, users_t)
    reg.map_imperatively(Document, docs_t)
    orm_s = {}
    with Session(sa) as session:
        t0 = time.perf_counter()
        for r in users:
            u = User()
            u.id, u.tenant_id, u.email, u.name, u.created_at = r
            session.add(u)
            session.flush()  # the naive loop: one INSERT round trip per object
        orm_s["users"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in docs:
            d = Document()
            d.id, d.tenant_id, d.author_id, d.title, d.body, d.created_at = r
            session.add(d)
            session.flush()
        session.commit()
        orm_s["documents"] = time.perf_counter() - t0
    orm_total = sum(orm_s.values())
    orm_rows = len(users) + len(docs)
    print(f"dbkit seed --defer-indexes: {dbkit_rows:,} rows in {dbkit_s:.2f} s incl. index/FK rebuild "
          f"({dbkit_rows / dbkit_s:,.0f} rows/s)")
    print(f"ORM loop:   {orm_rows:,} rows in {orm_total:.2f} s ({orm_rows / orm_total:,.0f} rows/s)")
    for t in mine:
        own = t.seconds + (t.index_seconds or 0)
        print(f"  {t.table:10} dbkit {own:6.2f} s  ORM {orm_s[t.table]:6.2f} s  ratio {orm_s[t.table] / own:5.1f}x")
    ratio = (orm_total / orm_rows) / (dbkit_s / dbkit_rows)
    print(f"ratio: dbkit is {ratio:.1f}x faster per row (target >= 20x) -> {'OK' if ratio >= 20 else 'MISSED'}")
    print("  (documents carry a generated tsvector column: to_tsvector() runs in the server for every row,\n"
          "   whoever inserts it; that server-side cost bounds the ratio for that table)")
    sa.dispose()


def bench_pgbench(settings, hypertable_rows_per_s: float) -> None:
    print("\n== 3. pgbench -i -s 10 (client-side COPY, 1M rows) as the COPY ceiling ==")
    cluster = DevCluster.from_settings(load_settings(cwd=REPO))
    pgbench = shutil.which("pgbench") or str(cluster.bindir / "pgbench")
    url = settings.database_url
    out = subprocess.run([pgbench, "-i", "-s", "10", "-q", url.conninfo], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"pgbench failed: {out.stderr.strip()}")
        return
    m = re.search(r"client-side generate ([\d.]+) s", out.stderr)
    gen = float(m.group(1)) if m else None
    print(out.stderr.strip().splitlines()[-1])
    if gen:
        pg_rate = 1_000_000 / gen
        print(f"pgbench -i: 1,000,000 rows in {gen:.2f} s = {pg_rate:,.0f} rows/s")
        frac = hypertable_rows_per_s / pg_rate
        print(f"dbkit events (hypertable) {hypertable_rows_per_s:,.0f} rows/s = {frac:.0%} of pgbench "
              f"(target >= 40%) -> {'OK' if frac >= 0.4 else 'MISSED'}")
    with db.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--skip-orm", action="store_true")
    parser.add_argument("--skip-pgbench", action="store_true")
    args = parser.parse_args()
    settings = fresh_database(load_settings(cwd=REPO))
    result = bench_profile(settings, args.profile)
    events = next(t for t in result.tables if t.table == "events")
    if not args.skip_orm:
        bench_orm(settings)
    if not args.skip_pgbench:
        bench_pgbench(settings, events.rows_per_s)
    print(f"\npeak RSS of the benchmark process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
