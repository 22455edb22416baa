"""`dbkit migrate rehearse` benchmark on the embedded dev cluster.  Prints figures; never part of the tests.

Set-up (one fresh database ``dbkit_rehearse_bench``, dropped at the end unless --keep): the reference
schema migrated to head, then seeded with the medium profile (tenants, users, documents, audit_log and
the events hypertable: 800k events, 50k documents, 50k audit rows at --scale 1; document_chunks and
its HNSW build are left out: no bench revision touches them), ``--defer-indexes``, ``VACUUM ANALYZE``.
A copy of this repository's project gets six revisions on top of head (0006):

    0007  ALTER TABLE app.audit_log ADD COLUMN note text                       (safe)
    0008  CREATE INDEX audit_log_action_idx ON app.audit_log (action)         (flagged: SHARE + scan)
    0009  ALTER TABLE app.documents ADD COLUMN r float8 DEFAULT random()      (flagged: rewrite)
    0010  ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL        (flagged: scan under ACCESS EXCLUSIVE)
    0011  op.create_index_concurrently documents (created_at)                 (safe)
    0012  CREATE INDEX events_kind_idx ON app.events (kind)                   (flagged: SHARE on every chunk)

Measured, --rounds times each, interleaved:

1. tracer overhead: a plain ``dbkit migrate`` (:func:`dbkit.migrate._runner.upgrade`) of the six revisions
   on a fresh ``CREATE DATABASE … TEMPLATE`` copy (the copy not timed) against the run part of
   :func:`dbkit.migrate._rehearse.rehearse` (same revisions, same kind of copy, tracer on).
   Target: traced / plain <= 1.2 (medians);
2. copy time: the rehearsal's clone against ``dbkit restore`` (:func:`dbkit._lifecycle.restore`) of a
   backup of the same database (a file:// backup in a temporary directory, made once, not timed);
3. the application's view (run before 2): one rehearsal with ``--load 4`` (4 clients as the enforce role): p50 / p99
   and the longest operation, without the migration (baseline, 3 s) and during each revision.

    .venv/bin/python bench/rehearse_bench.py [--scale 1.0] [--rounds 3] [--load 4] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dbkit import _db as db
from dbkit._dev import DevCluster, provision
from dbkit.config import load_settings
from dbkit.migrate import _rehearse as rh
from dbkit.migrate import _runner as runner
from dbkit.seed import _engine as engine

BENCH_DB = "dbkit_rehearse_bench"
REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.2

REVISIONS = [
    ("0007", "op.execute('ALTER TABLE app.audit_log ADD COLUMN note text')"),
    ("0008", "op.execute('CREATE INDEX audit_log_action_idx ON app.audit_log (action)')"),
    ("0009", "op.execute('ALTER TABLE app.documents ADD COLUMN r float8 DEFAULT random()')"),
    ("0010", "op.execute('ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL')"),
    ("0011", "op.create_index_concurrently('documents_created_idx', 'documents', ['created_at'], schema='app')"),
    ("0012", "op.execute('CREATE INDEX events_kind_idx ON app.events (kind)')"),
]


def project(root: Path) -> Path:
    import sys

    sys.path.insert(0, str(REPO))
    from tests.migrate_helpers import copy_reference_project, revision

    copy_reference_project(root)
    down = "0006"
    for rev, body in REVISIONS:
        (root / "migrations" / "versions" / f"{rev}_bench.py").write_text(revision(rev, down, body, doc=f"bench {rev}"))
        down = rev
    return root


def admin(url):
    return db.connect(url.with_dbname("postgres"), autocommit=True)


def fresh(url, scale: float):
    with admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    bench_url = url.with_dbname(BENCH_DB)
    settings = load_settings({"database_url": bench_url.raw, "env": "test"}, cwd=REPO)
    runner.upgrade(settings)
    t0 = time.perf_counter()
    result = engine.run(settings, profile="medium", scale=scale, seed=0, defer_indexes=True, truncate=True,
                        only=["tenants", "users", "documents", "audit_log", "events"])
    with db.connect(bench_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    rows = sum(t.rows for t in result.tables)
    print(f"seeded {rows:,} rows in {time.perf_counter() - t0:.1f}s (with VACUUM ANALYZE); database {size}")
    return bench_url


def plain_run(settings, url) -> float:
    """runner.upgrade of the bench revisions on a fresh TEMPLATE copy (the copy is not timed)."""
    from psycopg import errors

    name = f"{BENCH_DB}_plain"
    with admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for _ in range(20):
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{BENCH_DB}"')
                break
            except errors.ObjectInUse:
                who = conn.execute("SELECT pid, usename, application_name, backend_type, state, left(query, 60) "
                                   "FROM pg_stat_activity WHERE datname = %s", (BENCH_DB,)).fetchall()
                print(f"(waiting: {who})")
                time.sleep(0.5)
    try:
        copy = load_settings({"database_url": url.with_dbname(name).raw, "env": "test"}, cwd=settings.project_dir)
        t0 = time.perf_counter()
        runner.upgrade(copy)
        return time.perf_counter() - t0
    finally:
        with admin(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restore_time(settings, url, backups: Path) -> tuple[float, float]:
    """(seconds of dbkit restore of a backup of the bench database, seconds of the backup, not part of it)."""
    from dbkit import _lifecycle as lifecycle
    from dbkit.backup import _pipeline as pipeline

    with_backup = load_settings({"database_url": url.raw, "env": "test", "backup_uri": str(backups)},
                                cwd=settings.project_dir)
    t0 = time.perf_counter()
    pipeline.backup(with_backup)
    backup_s = time.perf_counter() - t0
    name = f"{BENCH_DB}_restored"
    t0 = time.perf_counter()
    try:
        lifecycle.restore(with_backup, "latest", into=name)
        return time.perf_counter() - t0, backup_s
    finally:
        with admin(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="medium-profile scale (default 1.0: 800k events)")
    parser.add_argument("--rounds", type=int, default=3, help="plain and traced runs each, interleaved")
    parser.add_argument("--load", type=int, default=4, help="clients of the --load run (0: skip it)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database afterwards")
    args = parser.parse_args()
    started = time.perf_counter()
    base = load_settings(cwd=REPO)
    url = provision(DevCluster.from_settings(base), ()).url
    bench_url = fresh(url, args.scale)
    try:
        with tempfile.TemporaryDirectory(prefix="dbkit-rehearse-bench-") as tmp:
            root = project(Path(tmp) / "project")
            settings = load_settings({"database_url": bench_url.raw, "env": "test"}, cwd=root)
            plain, traced, copies, own = [], [], [], []
            report = None
            for i in range(args.rounds):
                plain.append(plain_run(settings, url))
                report = rh.rehearse(settings, min_size=rh.parse_size("1MB"))
                traced.append(report.run_s)
                copies.append(report.copy_s)
                own.append(report.trace_s)
                print(f"round {i + 1}: plain {plain[-1]:.2f}s, traced {traced[-1]:.2f}s (of which the tracer's own "
                      f"queries {own[-1]:.3f}s), clone {copies[-1]:.2f}s")
            p, t = statistics.median(plain), statistics.median(traced)
            print(f"\n== 1. tracer overhead ({len(REVISIONS)} revisions, medians of {args.rounds}) ==")
            print(f"plain dbkit migrate {p:.2f}s, rehearse run {t:.2f}s: {t / p:.2f}x "
                  f"(target <= {TARGET_RATIO}: {'met' if t / p <= TARGET_RATIO else 'NOT met'}); "
                  f"min {min(plain):.2f}s vs {min(traced):.2f}s: {min(traced) / min(plain):.2f}x; the tracer's own "
                  f"queries {statistics.median(own):.3f}s = {statistics.median(own) / p:.1%} of the plain run")
            print("per revision (last rehearsal): " + ", ".join(f"{r.revision} {r.duration_s:.2f}s"
                                                                 for r in report.revisions))
            print("verdict (last rehearsal, --min-size 1MB):")
            for f in report.findings:
                print(f"  {f.rule:7} {f.revision} {f.relation} {f.mode}: {f.figures}")
            if args.load:
                loaded = rh.rehearse(settings, min_size=rh.parse_size("1MB"), load=args.load, baseline_s=3.0)
                print(f"\n== 3. the application's view: --load {args.load} ==")
                print(f"{'window':10} {'ops':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'longest s':>9}")
                for w in loaded.load:
                    print(f"{w.label:10} {w.ops:6} {w.errors:6} {w.p50_ms or 0:8.2f} {w.p99_ms or 0:8.2f} "
                          f"{w.longest_stall_s or 0:9.3f}")
                for e in loaded.load_errors:
                    print(f"load error: {e}")
            restore_s, backup_s = restore_time(settings, bench_url, Path(tmp) / "backups")
            print("\n== 2. copy ==")
            print(f"clone (CREATE DATABASE … TEMPLATE) median {statistics.median(copies):.2f}s; dbkit restore "
                  f"{restore_s:.2f}s (the backup itself took {backup_s:.2f}s)")
    finally:
        if not args.keep:
            with admin(url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
