"""Backup/restore benchmark on the embedded dev cluster.  Prints figures; never part of the tests.

For each size (default 1 GB; `--sizes 1,4` also checks that memory stays flat at 4x), in one run:

a. raw ``pg_dump -Fc -Z0 > /dev/null``: the ceiling;
b. the common recipe ``pg_dump -Fc > file && gzip file && upload`` (boto3 upload_file to moto);
c. ``dbkit backup --to file://...`` and ``--to s3://...`` (moto's server on loopback);
d. ``dbkit restore`` (from the file target) vs ``pg_restore`` from a local dump file.

Wall time, MB/s (of pg_dump's raw output), peak RSS of the measured process tree (wait4), temporary
disk bytes, ratios.  Targets: dbkit backup <= 1.15x raw; >= 1.5x faster than the recipe; peak RSS
<= 200 MB and flat (+-20%) between sizes; 0 temp bytes; restore <= 1.2x pg_restore.

    .venv/bin/python bench/backup_bench.py [--sizes 1] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
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
DB = "dbkit_backup_bench"
DBKIT = [sys.executable, "-m", "dbkit"]
MB = 1_000_000


def run(cmd, *, env=None, stdout=subprocess.DEVNULL, shell=False) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the process tree) of one command; raises on failure."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, shell=shell)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed: "
                         f"{proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def prepare(size_gb: float):
    base = load_settings(cwd=REPO)
    url = provision(DevCluster.from_settings(base), ()).url
    with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    settings = load_settings({"database_url": url.with_dbname(DB).raw, "env": "test"}, cwd=REPO)
    runner.upgrade(settings)
    # events: about 125 bytes per row on disk with its indexes -> 8M rows per GB
    scale = size_gb * 8_000_000 / 800_000
    engine.run(settings, profile="medium", scale=scale, only=["tenants", "events"], defer_indexes=True, truncate=True)
    with db.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return settings, size


def moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench-secret")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="dbkit-bench")
            break
        except Exception:  # noqa: BLE001 - server still starting
            time.sleep(0.1)
    return proc, endpoint


def bench(size_gb: float, results: dict) -> None:
    from dbkit.backup._pipeline import find_program

    # seed in a child process: this process must stay small, or its children's peak RSS (which
    # includes memory shared at fork time) would be inflated by the seeding
    subprocess.run([sys.executable, __file__, "--prepare", str(size_gb)], check=True)
    base = load_settings(cwd=REPO)
    url = DevCluster.from_settings(base).url(DB)
    from dbkit._urls import parse_database_url

    settings = load_settings({"database_url": url, "env": "test"}, cwd=REPO)
    with db.connect(parse_database_url(url), autocommit=True) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    url = settings.database_url
    pg_dump, pg_restore = find_program(settings, "pg_dump"), find_program(settings, "pg_restore")
    print(f"\n== database {size / MB:,.0f} MB (pg_database_size) ==")
    server, endpoint = moto()
    work = Path(tempfile.mkdtemp(prefix="dbkit-bench-"))
    env = {**os.environ, "DATABASE_URL": url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "S3_ENDPOINT": endpoint, "S3_ACCESS_KEY": "bench", "S3_SECRET_KEY": "bench-secret", "S3_REGION": "us-east-1"}
    try:
        raw_file = work / "raw.pgdump"
        wall_raw, rss_raw = run(f'"{pg_dump}" -Fc -Z0 --dbname="{url.conninfo}" > /dev/null', shell=True)
        subprocess.run([pg_dump, "-Fc", "-Z0", f"--dbname={url.conninfo}", "-f", str(raw_file)], check=True)
        raw_bytes = raw_file.stat().st_size
        rows = [("a. pg_dump -Fc -Z0 > /dev/null (ceiling)", wall_raw, rss_raw, 0)]

        recipe_dir = work / "recipe"
        recipe_dir.mkdir()
        recipe = (f'"{pg_dump}" -Fc --dbname="{url.conninfo}" > {recipe_dir}/db.pgdump && gzip -f {recipe_dir}/db.pgdump '
                  f'&& {sys.executable} -c "import boto3,sys; boto3.client(\'s3\', endpoint_url=\'{endpoint}\', '
                  f'region_name=\'us-east-1\', aws_access_key_id=\'bench\', aws_secret_access_key=\'bench-secret\')'
                  f'.upload_file(\'{recipe_dir}/db.pgdump.gz\', \'dbkit-bench\', \'recipe/db.pgdump.gz\')"')
        wall_recipe, rss_recipe = run(recipe, shell=True)
        temp_recipe = (recipe_dir / "db.pgdump.gz").stat().st_size  # at least; the plain dump existed first
        rows.append(("b. pg_dump > file && gzip && upload (recipe)", wall_recipe, rss_recipe, temp_recipe))

        tmpdir = work / "tmp"
        tmpdir.mkdir()
        env_tmp = {**env, "TMPDIR": str(tmpdir)}
        wall_file, rss_file = run([*DBKIT, "backup", "--to", f"file://{work}/target"], env=env_tmp)
        wall_s3, rss_s3 = run([*DBKIT, "backup", "--to", "s3://dbkit-bench/dbkit"], env=env_tmp)
        temp_dbkit = sum(p.stat().st_size for p in tmpdir.rglob("*") if p.is_file())
        rows.append(("c. dbkit backup --to file://", wall_file, rss_file, temp_dbkit))
        rows.append(("c. dbkit backup --to s3:// (moto)", wall_s3, rss_s3, temp_dbkit))

        print(f"{'backup':48} {'wall s':>7} {'MB/s':>7} {'peak RSS MiB':>13} {'temp MB':>8} {'x raw':>6}")
        for label, wall, rss, temp in rows:
            print(f"{label:48} {wall:7.1f} {raw_bytes / MB / wall:7.0f} {rss:13.0f} {temp / MB:8.0f} "
                  f"{wall / wall_raw:6.2f}")
        print(f"dbkit (file) vs raw: {wall_file / wall_raw:.2f}x (target <= 1.15); vs recipe: "
              f"{wall_recipe / wall_file:.2f}x faster (target >= 1.5); temp bytes {temp_dbkit} (target 0)")

        with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
            for name in ("bench_r_dbkit", "bench_r_pg"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute('CREATE DATABASE "bench_r_pg" TEMPLATE template0')
        target = url.with_dbname("bench_r_pg")
        with db.connect(target, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
        t0 = time.perf_counter()
        subprocess.run([pg_restore, f"--dbname={target.conninfo}", str(raw_file)], capture_output=True)
        with db.connect(target, autocommit=True) as conn:
            conn.execute("SELECT timescaledb_post_restore()")
        wall_pg_restore = time.perf_counter() - t0
        wall_restore, rss_restore = run([*DBKIT, "restore", "latest", "--from", f"file://{work}/target",
                                         "--into", "bench_r_dbkit"], env=env)
        print(f"{'restore':48} {'wall s':>7}")
        print(f"{'pg_restore from a local file':48} {wall_pg_restore:7.1f}")
        print(f"{'dbkit restore (file target, streamed, verified)':48} {wall_restore:7.1f}  peak RSS {rss_restore:.0f} MiB")
        print(f"dbkit restore vs pg_restore: {wall_restore / wall_pg_restore:.2f}x (target <= 1.2; dbkit also "
              "checks the sha256, row counts and `migrate check`)")
        results[size_gb] = {"rss_file": rss_file, "rss_s3": rss_s3}
        with db.connect(url.with_dbname("postgres"), autocommit=True) as conn:
            for name in ("bench_r_dbkit", "bench_r_pg"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1", help="Comma-separated database sizes in GB (e.g. 1,4).")
    parser.add_argument("--keep", action="store_true", help="Keep the bench database afterwards.")
    parser.add_argument("--prepare", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    results: dict = {}
    for size in [float(x) for x in args.sizes.split(",")]:
        bench(size, results)
    if len(results) > 1:
        sizes = sorted(results)
        small, big = results[sizes[0]], results[sizes[-1]]
        for key in ("rss_file", "rss_s3"):
            print(f"peak RSS {key[4:]}: {small[key]:.0f} MiB at {sizes[0]:g} GB vs {big[key]:.0f} MiB at "
                  f"{sizes[-1]:g} GB ({big[key] / small[key] - 1:+.0%}; target within +-20%)")
    if not args.keep:
        base = load_settings(cwd=REPO)
        url = DevCluster.from_settings(base).url("postgres")
        from dbkit._urls import parse_database_url

        with db.connect(parse_database_url(url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
