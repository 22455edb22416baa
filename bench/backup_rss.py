"""Peak RSS of ``dbkit backup`` on a TimescaleDB database with many chunks.  Prints figures; never a test.

Builds (in a throw-away cluster of its own, or in ``--database-url``) a hypertable with ``--chunks``
one-hour chunks and about ``--mb`` MB of rows, then runs ``dbkit backup`` to file:// and to S3 (moto's
server) and samples, every 20 ms, the RSS of each process of the tree separately: dbkit (Python) and
pg_dump.  Also prints wait4's ru_maxrss (what ``/usr/bin/time -v`` reports: the largest single process
of the tree, pg_dump included; on Linux it also carries this script's own RSS at fork time over exec,
about 60 MiB here, so the per-process samples are the figures to read).

Measured (2 cores, PostgreSQL 15, TimescaleDB 2.19, a 441 MB database with 3,000 one-hour chunks):
dbkit's own process peaked at 115-128 MiB to S3 (moto) and 70 MiB to file:// with zstd (before 2 MiB zstd
jobs: 199 and 134 MiB), 96-105 MiB to S3 uncompressed; pg_dump itself 33 MiB.
S3 uploads through obstore instead of boto3's s3transfer (`--chunks 1000 --mb 150`, a 194 MB database,
three runs each): dbkit's process 121-122 MiB to S3 with zstd (128-129 before), 94-100 MiB uncompressed
(96-104 before), 76-78 MiB to file:// (unchanged).

    .venv/bin/python bench/backup_rss.py [--chunks 3000] [--mb 300] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DBKIT = [sys.executable, "-m", "dbkit"]
MIB = 1 << 20


def build(url, chunks: int, mb: int) -> int:
    import psycopg

    rows = mb * 1_000_000 // 340  # ~340 bytes per row on disk with 3,000 one-hour chunks (row, index, chunk overhead)
    with psycopg.connect(url.with_dbname("postgres").conninfo, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS rss_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE rss_bench")
    with psycopg.connect(url.with_dbname("rss_bench").conninfo, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE TABLE metrics (time timestamptz NOT NULL, device int NOT NULL, value double precision, "
                     "note text)")
        conn.execute("SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 hour')")
        conn.execute("CREATE INDEX ON metrics (device, time DESC)")
        step = chunks * 3600.0 / rows
        conn.execute(f"INSERT INTO metrics SELECT timestamptz '2025-01-01' + (g * {step}) * interval '1 second', "
                     f"g % 100, random(), md5(g::text) FROM generate_series(0, {rows - 1}) g")
        conn.execute("VACUUM ANALYZE metrics")
        n_chunks = conn.execute("SELECT count(*) FROM show_chunks('metrics')").fetchone()[0]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    print(f"database rss_bench: {size / 1e6:,.0f} MB, {n_chunks} chunks, {rows:,} rows")
    return size


def sample(root: int, peaks: dict[str, float], stop: threading.Event) -> None:
    import psutil

    try:
        top = psutil.Process(root)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                name = "dbkit (python)" if p.pid == root else p.name()
                peaks[name] = max(peaks.get(name, 0), p.memory_info().rss / MIB)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)


def measure(label: str, cmd: list[str], env: dict[str, str]) -> None:
    peaks: dict[str, float] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = threading.Thread(target=sample, args=(proc.pid, peaks, stop), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed: {proc.stderr.read().decode()[-500:]}")
    per = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items()))
    print(f"{label:28} {time.perf_counter() - t0:6.1f} s  wait4 maxrss {usage.ru_maxrss / 1024:5.0f} MiB  "
          f"peaks MiB: {per}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=3000)
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--database-url", help="a superuser URL of a server with TimescaleDB (default: own cluster)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from dbkit._dev import DevCluster
    from dbkit._urls import parse_database_url

    base = cluster = None
    if args.database_url:
        url = parse_database_url(args.database_url)
    else:
        base = Path(tempfile.mkdtemp(prefix="dbkit-rss-", dir="/tmp"))
        base.chmod(0o755)
        cluster = DevCluster(base, extra_conf=("fsync = off", "timescaledb.max_background_workers = 0",
                                               "max_locks_per_transaction = 1024"))
        status = cluster.up()
        url = parse_database_url(f"postgresql://postgres@127.0.0.1:{status.port}/postgres")
    work = Path(tempfile.mkdtemp(prefix="dbkit-rss-work-"))
    moto = None
    try:
        build(url, args.chunks, args.mb)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench-secret")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="rss")
                break
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.1)
        env = {**os.environ, "DATABASE_URL": url.with_dbname("rss_bench").raw, "DBKIT_ENV": "test",
               "DBKIT_PROJECT_DIR": str(work), "S3_ENDPOINT": f"http://127.0.0.1:{port}", "S3_ACCESS_KEY": "bench",
               "S3_SECRET_KEY": "bench-secret", "S3_REGION": "us-east-1"}
        pg_dump = shutil.which("pg_dump") or "pg_dump"
        from dbkit.backup._pipeline import find_program
        from dbkit.config import load_settings

        pg_dump = find_program(load_settings(cwd=REPO), "pg_dump")
        measure("pg_dump -Fc -Z0 > /dev/null", [pg_dump, "-Fc", "-Z0", "--no-sync", "-f", "/dev/null",
                                               f"--dbname={url.with_dbname('rss_bench').conninfo}"], env)
        measure("dbkit backup --to file://", [*DBKIT, "backup", "--to", f"file://{work}/b"], env)
        measure("dbkit backup --to s3://", [*DBKIT, "backup", "--to", "s3://rss/b"], env)
        measure("dbkit backup s3 --compress none", [*DBKIT, "backup", "--to", "s3://rss/c", "--compress", "none"], env)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(work, ignore_errors=True)
        if cluster is not None and not args.keep:
            cluster.down(purge=True)
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
