"""TimescaleDB compression, backup/restore and continuous-aggregate benchmark on the embedded dev cluster.
Prints figures; never part of the tests.  Needs TimescaleDB's community edition (compression, aggregates).

Set-up (one run, one fresh database ``dbkit_ts_bench`` on the dev cluster, dropped at the end unless --keep):
the reference schema migrated to head, then the medium profile's ``tenants`` and ``events`` seeded with
``dbkit.seed`` (800,000 events over 30 days, 1-day chunks), then ``VACUUM ANALYZE``.  ``app.events`` has
row-level security (enabled and forced), which TimescaleDB refuses to compress ("compression cannot be used
on table with row security") or aggregate continuously: this scratch database DISABLES (and un-forces) RLS
on it; nothing else changes (same table, chunks, index ``(tenant_id, time DESC)``).  The other tables are
empty but ``tenants`` (100 rows), so the database is the hypertable.

Measured, first with every chunk uncompressed, then with every chunk compressed (in the same run):

1. compression: ``compress_chunk`` of every chunk (``segment_by = tenant_id``, ``order_by = time DESC``),
   wall time and rows/s; ratio from ``hypertable_compression_stats`` (before / after bytes) and
   ``hypertable_size`` before / after;
2. backup: ``pg_dump -Fc -Z0 > /dev/null`` (the ceiling) and ``dbkit backup --to file://`` (zstd): wall,
   pg_dump's raw bytes and the stored bytes (from the manifest), and how the manifest counted events;
3. restore: ``dbkit restore`` (streamed, sha256, row check, migrate check) into a new database vs plain
   ``pg_restore`` from a local file with TimescaleDB's pre/post restore steps;
4. a continuous aggregate over all events (per tenant, kind and hour: count, avg, max), created WITH NO
   DATA and refreshed over everything (``refresh_continuous_aggregate(…, NULL, NULL)``); baseline: the
   same GROUP BY written into a plain table (``CREATE TABLE … AS``).

    .venv/bin/python bench/timescale_bench.py [--scale 1.0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dbkit import _db as db
from dbkit._dev import DevCluster, provision
from dbkit.config import load_settings
from dbkit.migrate import _runner as runner
from dbkit.seed import _engine as engine

REPO = Path(__file__).resolve().parents[1]
DB = "dbkit_ts_bench"
DBKIT = [sys.executable, "-m", "dbkit"]
MB = 1_000_000
COMPRESS = ("ALTER TABLE app.events SET (timescaledb.compress, timescaledb.compress_segmentby = 'tenant_id', "
            "timescaledb.compress_orderby = 'time DESC')")
STATS = ("SELECT before_compression_total_bytes, after_compression_total_bytes "
         "FROM hypertable_compression_stats('app.events')")
AGGREGATE = ("SELECT tenant_id, kind, time_bucket(INTERVAL '1 hour', time) AS bucket, count(*) AS n, "
             "avg(value) AS mean, max(value) AS peak FROM app.events GROUP BY tenant_id, kind, bucket")


def timed(conn, statement: str) -> float:
    t0 = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - t0


def run(cmd, *, env=None, shell=False) -> float:
    """Wall seconds of one command; exits with its stderr on failure."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed: "
                         f"{res.stderr.decode()[-800:]}")
    return wall


def prepare(scale: float):
    base = load_settings(cwd=REPO)
    url = provision(DevCluster.from_settings(base), ()).url
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    settings = load_settings({"database_url": url.with_dbname(DB).raw, "env": "test"}, cwd=REPO)
    runner.upgrade(settings)
    with db.connect(settings.database_url, autocommit=True) as conn:
        if conn.execute("SHOW timescaledb.license").fetchone()[0] != "timescale":
            raise SystemExit("needs TimescaleDB's community edition (timescaledb.license = timescale): run "
                             "scripts/bootstrap with DBKIT_TIMESCALEDB_SOURCE")
    engine.run(settings, profile="medium", scale=scale, seed=0, only=["tenants", "events"], defer_indexes=True,
               truncate=True)
    with db.connect(settings.database_url, autocommit=True) as conn:
        # the bench copy only: TimescaleDB compresses and aggregates no table with row-level security
        conn.execute("ALTER TABLE app.events NO FORCE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE app.events DISABLE ROW LEVEL SECURITY")
        conn.execute("VACUUM ANALYZE")
    return settings


def null_batches(settings, env: dict, work: Path) -> None:
    """The seeded events as they are: compressed, then backed up (refused where TimescaleDB cannot restore
    compressed batches whose column is entirely NULL: payload is NULL in 96 of 97 rows); then decompressed
    and payload NULL -> '{}' (the bench copy only), so that every later figure restores."""
    with db.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(COMPRESS)
        seconds = timed(conn, "SELECT count(compress_chunk(c)) FROM show_chunks('app.events') c")
        before, after = conn.execute(STATS).fetchone()
        print(f"as seeded (payload NULL in 96 of 97 rows): compress_chunk of every chunk {seconds:.1f} s, ratio "
              f"{before / after:.1f}x ({before / MB:,.1f} -> {after / MB:,.1f} MB)")
        res = subprocess.run([*DBKIT, "backup", "--to", f"file://{work}/as-seeded"], env=env, capture_output=True,
                             text=True)
        print(f"  dbkit backup: {'stored' if res.returncode == 0 else 'REFUSED: ' + res.stderr.strip().splitlines()[0]}")
        conn.execute("SELECT count(decompress_chunk(c)) FROM show_chunks('app.events') c")
        conn.execute("ALTER TABLE app.events SET (timescaledb.compress = false)")
        t0 = time.perf_counter()
        conn.execute("UPDATE app.events SET payload = '{}' WHERE payload IS NULL")
        conn.execute("VACUUM FULL ANALYZE app.events")
        print(f"  then decompressed, payload NULL -> '{{}}' on the bench copy and VACUUM FULL "
              f"({time.perf_counter() - t0:.1f} s): every figure below is of this data")


def sizes(conn) -> tuple[int, int, int]:
    """(rows, chunks, hypertable_size bytes) of app.events."""
    rows = conn.execute("SELECT count(*) FROM app.events").fetchone()[0]
    chunks = conn.execute("SELECT count(*) FROM show_chunks('app.events')").fetchone()[0]
    size = conn.execute("SELECT hypertable_size('app.events')").fetchone()[0]
    return rows, chunks, size


def backup_and_restore(settings, work: Path, label: str, env: dict) -> dict:
    """pg_dump to /dev/null, dbkit backup to a file target, dbkit restore and pg_restore; figures."""
    from dbkit.backup._pipeline import find_program

    url = settings.database_url
    pg_dump, pg_restore = find_program(settings, "pg_dump"), find_program(settings, "pg_restore")
    out: dict = {}
    out["dump_s"] = run(f'"{pg_dump}" -Fc -Z0 --dbname="{url.conninfo}" > /dev/null', shell=True)
    target = work / label
    out["backup_s"] = run([*DBKIT, "backup", "--to", f"file://{target}"], env=env)
    (manifest_file,) = target.glob("*/manifest.json")
    manifest = json.loads(manifest_file.read_text())
    out["raw"], out["stored"] = manifest["raw_bytes"], manifest["stored_bytes"]
    events = next(t for t in manifest["tables"] if t["schema"] == "app" and t["name"] == "events")
    out["counted"] = f"exact {events['rows']:,}" if "rows" in events else f"estimate {events['rows_estimate']:,}"
    raw_file = work / f"{label}.pgdump"
    run([pg_dump, "-Fc", "-Z0", f"--dbname={url.conninfo}", "-f", str(raw_file)])
    names = (f"{DB}_r_dbkit", f"{DB}_r_pg")
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{names[1]}" TEMPLATE template0')
    out["restore_s"] = run([*DBKIT, "restore", "latest", "--from", f"file://{target}", "--into", names[0]], env=env)
    restored = url.with_dbname(names[1])
    t0 = time.perf_counter()
    with db.connect(restored, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("SELECT timescaledb_pre_restore()")
    res = subprocess.run([pg_restore, f"--dbname={restored.conninfo}", str(raw_file)], capture_output=True)
    with db.connect(restored, autocommit=True) as conn:
        conn.execute("SELECT timescaledb_post_restore()")
    out["pg_restore_s"] = time.perf_counter() - t0
    with db.connect(url.with_dbname(names[0]), autocommit=True) as conn:
        restored_rows = conn.execute("SELECT count(*) FROM app.events").fetchone()[0]
        compressed = conn.execute("SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM "
                                  "timescaledb_information.chunks WHERE hypertable_name = 'events'").fetchone()
    out["restored"] = f"{restored_rows:,} rows, {compressed[0]}/{compressed[1]} chunks compressed"
    if res.returncode != 0:
        out["restored"] += f"; pg_restore exit {res.returncode}"
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raw_file.unlink()
    return out


def aggregate(conn) -> tuple[float, float, int]:
    """(refresh s, plain GROUP BY into a table s, aggregate rows)."""
    conn.execute("DROP MATERIALIZED VIEW IF EXISTS app.events_hourly")
    conn.execute("DROP TABLE IF EXISTS app.events_hourly_plain")
    conn.execute(f"CREATE MATERIALIZED VIEW app.events_hourly WITH (timescaledb.continuous) AS {AGGREGATE} "
                 "WITH NO DATA")
    refresh = timed(conn, "CALL refresh_continuous_aggregate('app.events_hourly', NULL, NULL)")
    plain = timed(conn, f"CREATE TABLE app.events_hourly_plain AS {AGGREGATE}")
    n = conn.execute("SELECT count(*) FROM app.events_hourly").fetchone()[0]
    assert n == conn.execute("SELECT count(*) FROM app.events_hourly_plain").fetchone()[0]
    conn.execute("DROP MATERIALIZED VIEW app.events_hourly")
    conn.execute("DROP TABLE app.events_hourly_plain")
    return refresh, plain, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Scale of the medium profile (1.0: 800k events).")
    parser.add_argument("--keep", action="store_true", help="Keep the bench database afterwards.")
    args = parser.parse_args()
    t_setup = time.perf_counter()
    settings = prepare(args.scale)
    url = settings.database_url
    print(f"set-up {time.perf_counter() - t_setup:.1f} s; app.events: RLS DISABLED on the bench copy (TimescaleDB "
          "compresses and aggregates no table with row security); same table, chunks and index otherwise")
    work = Path(tempfile.mkdtemp(prefix="dbkit-ts-bench-"))
    env = {**os.environ, "DATABASE_URL": url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}
    results: dict = {}
    try:
        null_batches(settings, env, work)
        with db.connect(url, autocommit=True) as conn:
            conn.execute("SET statement_timeout = 0")
            rows, chunks, plain_size = sizes(conn)
            print(f"events: {rows:,} rows in {chunks} chunks, hypertable_size {plain_size / MB:,.1f} MB")
            results["uncompressed"] = backup_and_restore(settings, work, "uncompressed", env)
            results["uncompressed"].update(zip(("refresh_s", "plain_s", "groups"), aggregate(conn)))
            conn.execute(COMPRESS)
            compress_s = timed(conn, "SELECT count(compress_chunk(c)) FROM show_chunks('app.events') c")
            before, after = conn.execute(STATS).fetchone()
            conn.execute("VACUUM ANALYZE")
            _, _, compressed_size = sizes(conn)
            print(f"compress_chunk of all {chunks} chunks: {compress_s:.1f} s ({rows / compress_s:,.0f} rows/s); "
                  f"ratio {before / after:.1f}x ({before / MB:,.1f} -> {after / MB:,.1f} MB, "
                  f"hypertable_compression_stats); hypertable_size {plain_size / MB:,.1f} -> "
                  f"{compressed_size / MB:,.1f} MB ({plain_size / compressed_size:.1f}x)")
            results["compressed"] = backup_and_restore(settings, work, "compressed", env)
            results["compressed"].update(zip(("refresh_s", "plain_s", "groups"), aggregate(conn)))
        u, c = results["uncompressed"], results["compressed"]
        print(f"\n{'':46} {'uncompressed':>16} {'compressed':>16} {'c / u':>7}")
        lines = [("pg_dump -Fc -Z0 > /dev/null, wall s", "dump_s", ".1f"),
                 ("dbkit backup --to file:// (zstd), wall s", "backup_s", ".1f"),
                 ("pg_dump raw bytes, MB", "raw", ",.1f"), ("stored bytes (zstd), MB", "stored", ",.1f"),
                 ("dbkit restore (verified), wall s", "restore_s", ".1f"),
                 ("pg_restore from a local file, wall s", "pg_restore_s", ".1f"),
                 ("refresh of the continuous aggregate, s", "refresh_s", ".2f"),
                 ("baseline: the same GROUP BY into a table, s", "plain_s", ".2f")]
        for label, key, fmt in lines:
            scale = MB if key in ("raw", "stored") else 1
            print(f"{label:46} {u[key] / scale:>16{fmt}} {c[key] / scale:>16{fmt}} {c[key] / u[key]:>7.2f}")
        for label, key in (("manifest's count of app.events", "counted"), ("restored (dbkit restore)", "restored")):
            print(f"{label:46} {u[key]:>16} | {c[key]}")
        print(f"aggregate rows (tenant, kind, hour): {u['groups']:,}; refresh vs plain GROUP BY: uncompressed "
              f"{u['refresh_s'] / u['plain_s']:.2f}x, compressed {c['refresh_s'] / c['plain_s']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
