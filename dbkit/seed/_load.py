"""Loading: the project's ``seeds/*.sql`` files, and each seeder's rows with binary COPY."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from dbkit.errors import DbkitError, OperationFailed
from dbkit.seed._catalog import _column_oids, _qualified
from dbkit.seed._context import FakerPools, SeedContext
from dbkit.seed._runs import TableResult

BATCH = 10_000
Progress = Callable[[str, int, int], None]


class SeederFailed(OperationFailed):
    """A seeder raised, or the data it produced could not be loaded."""


def _register_types(conn) -> None:
    """pgvector's binary dumpers (numpy arrays -> vector) when the extension is there."""
    if conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone():
        from pgvector.psycopg import register_vector

        register_vector(conn)


def _apply_sql_file(conn, path: Path) -> None:
    try:
        with conn.transaction():
            conn.execute(path.read_text())
    except Exception as exc:
        primary = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        raise SeederFailed(f"seeds/{path.name} failed: {primary}; nothing was written (the run was rolled back)") \
            from exc


def _load(conn, seeder, tr: TableResult, schema: str, seed: int, profile: str, pools: FakerPools,
          tenant_skew: float, anchor: datetime, progress: Progress | None) -> None:
    from psycopg import sql

    oids = _column_oids(conn, schema, seeder.table, seeder.columns)
    ctx = SeedContext(table=seeder.table, rows=tr.rows, seed=seed, profile=profile, conn=conn, schema=schema,
                      pools=pools, anchor=anchor, tenant_skew=tenant_skew)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        _qualified(schema, seeder.table), sql.SQL(", ").join(sql.Identifier(c) for c in seeder.columns))
    written = 0
    t0 = time.perf_counter()
    if progress:
        progress(seeder.table, 0, tr.rows)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived row tuples: the cyclic GC only slows the loop down
    try:
        rows = iter(seeder.fn(ctx))
        first = next(rows, None)  # runs the seeder's set-up (parent reads) before COPY holds the connection
        ctx.copying = True
        with conn.cursor().copy(stmt) as copy:
            copy.set_types(oids)
            if first is not None:
                copy.write_row(first)
                written += 1
            for row in rows:
                copy.write_row(row)
                written += 1
                if progress and written % BATCH == 0:
                    progress(seeder.table, written, tr.rows)
    except DbkitError:
        raise
    except Exception as exc:
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        detail = f"the database rejected the rows: {primary}" if primary else f"{type(exc).__name__}: {exc}"
        raise SeederFailed(
            f"seeder {seeder.name} for {schema}.{seeder.table} failed after {written} rows: {detail}; "
            "nothing was written (the run was rolled back)") from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    tr.seconds = round(time.perf_counter() - t0, 3)
    tr.rows = written
    tr.rows_per_s = round(written / tr.seconds) if tr.seconds else 0.0
    if progress:
        progress(seeder.table, written, written)
