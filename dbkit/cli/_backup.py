"""`dbkit backup` (and its list/show/verify/prune) and `dbkit restore` (dbkit.backup._pipeline).

The renderers read the library's typed results (``Scan``, ``PruneResult``, ``Manifest``, ``RestoreResult``,
``VerifyResult``).  Restores go through :mod:`dbkit._lifecycle` (roles from the role model, the migration check).
"""

from __future__ import annotations

import contextlib
import time

import click

from dbkit import _render as render
from dbkit._render import Table
from dbkit._urls import clip
from dbkit.cli._common import State, check_db_name, from_option, json_option, pass_state, text_problem
from dbkit.errors import ConfigError


def check_backup_uri(option: str, uri: str | None, settings) -> None:
    """Parse --from/--to here, so a bad value is reported under the option the user typed."""
    from dbkit.backup._storage import parse_storage_uri

    if uri is None:
        return
    example = f"{option} s3://bucket/prefix (or file:///srv/backups, or a path)"
    shown = repr(clip(uri))
    if problem := text_problem(uri):
        raise ConfigError(option, problem, example=example)
    if any(not ch.isprintable() for ch in uri):
        raise ConfigError(option, f"is {shown}, which contains a control character", example=example)
    if len(uri.encode()) > 4096:
        raise ConfigError(option, f"is {len(uri.encode())} bytes long ({shown}); paths are at most 4096",
                          example=example)
    parse_storage_uri(uri, base=settings.project_dir, variable=option)


def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for tag in tags:
        key, eq, value = tag.partition("=")
        if not eq or not key:
            raise ConfigError("--tag", f"is {tag!r}, not key=value", example="--tag env=prod")
        out[key] = value
    return out


def _bytes_progress(label: str):
    """(callback, bar): a rich bytes + MB/s bar on a TTY, plain lines elsewhere."""
    if not render.is_tty():  # CI logs: a plain line every 256 MiB
        step = 256 * 1024 * 1024
        seen = {"next": step, "t0": time.perf_counter()}

        def plain(done: int) -> None:
            if done >= seen["next"]:
                seen["next"] += step
                rate = done / max(time.perf_counter() - seen["t0"], 1e-6) / 1e6
                render.error_line(f"dbkit: {label}: {done / 2**20:,.0f} MiB ({rate:,.0f} MB/s)")

        return plain, None
    from rich.progress import DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    bar = Progress(TextColumn(label), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn())
    task = bar.add_task(label, total=None)
    return (lambda done: bar.update(task, completed=done)), bar


_LEVELS = {"zstd": (1, 22), "gzip": (0, 9)}


def _check_level(compress: str, level: int | None) -> None:
    if level is None:
        return
    if compress not in _LEVELS:
        raise ConfigError("--level", f"is {level}, but --compress {compress} has no levels",
                          example="--compress zstd --level 3 (or drop --level)")
    low, high = _LEVELS[compress]
    if not low <= level <= high:
        raise ConfigError("--level", f"is {level}; --compress {compress} takes {low} to {high}",
                          example=f"--level {3 if compress == 'zstd' else 6}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _describe_backup(m):
    yield (f"backup {m.id}: {_size(m.raw_bytes)} dumped, {_size(m.stored_bytes)} stored "
           f"({m.compression}{', age' if m.encryption else ''}) in {m.duration_s:.1f} s; sha256 {m.sha256[:16]}…")


@click.group(invoke_without_command=True)
@click.option("--to", "to", metavar="URI",
              help="s3://bucket/prefix, file:///path or a path (default DBKIT_BACKUP_URI).")
@click.option("--compress", type=click.Choice(["zstd", "gzip", "none"]), default="zstd", show_default=True)
@click.option("--level", type=int, help="Compression level (zstd 1-22, gzip 0-9).")
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="AGE_RECIPIENT",
              help="Encrypt to this age public key (repeatable; also DBKIT_AGE_RECIPIENTS).")
@click.option("--sse", type=click.Choice(["AES256", "aws:kms", "aws:kms:dsse"]), help="S3 server-side encryption.")
@click.option("--kms-key-id", metavar="ID", help="KMS key for --sse aws:kms.")
@click.option("--storage-class", metavar="C", help="S3 storage class, e.g. STANDARD_IA.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="S3 object tag (repeatable).")
@click.option("--globals", "include_globals", is_flag=True,
              help="Also store pg_dumpall --globals-only --no-role-passwords as globals.sql.")
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus textfile metrics (node_exporter).")
@click.option("--create-bucket", is_flag=True,
              help="Create the S3 bucket if it is missing (MinIO/dev; in S3_REGION, via S3_ENDPOINT). "
                   "s3:// targets only.")
@json_option
@click.pass_context
def backup(ctx: click.Context, to, compress, level, encrypt_to, tags, as_json: bool, **options) -> None:
    """pg_dump streamed to S3/MinIO or disk; the manifest is written last."""
    if ctx.invoked_subcommand:
        return
    from dbkit.backup import _pipeline as pipeline

    settings = ctx.find_object(State).settings
    _check_level(compress, level)
    check_backup_uri("--to", to, settings)
    progress, bar = (None, None) if as_json else _bytes_progress("pg_dump")
    with bar or contextlib.nullcontext():
        # options: --sse, --kms-key-id, --storage-class, --globals, --metrics-file, --create-bucket, as named
        manifest = pipeline.backup(settings, to=to, compression=compress, level=level, encrypt_to=tuple(encrypt_to),
                                   tags=_parse_tags(tags), progress=progress, **options)
    render.show(manifest, _describe_backup, as_json=as_json)


def _describe_scan(scan, where: str):
    rows = [(m.id, f"{m.finished_at:%Y-%m-%d %H:%M:%S}", _size(m.stored_bytes), m.compression,
             "age" if m.encryption else "no", m.database, m.alembic_revision or "-", "complete")
            for m in scan.complete]
    rows += [(u.id, f"{u.last_seen:%Y-%m-%d %H:%M:%S}", "-", "-", "-", "-", "-", "incomplete (no manifest)")
             for u in scan.incomplete]
    rows += [(u.id, "-", "-", "-", "-", "-", "-", f"unreadable: {u.error}") for u in scan.unreadable]
    title = f"backups in {where}"
    if not rows:
        yield f"{title}: none yet (`dbkit backup` writes one)"
        return
    yield Table(["id", "finished (UTC)", "size", "compression", "encrypted", "database", "revision", "status"], rows,
                title=f"{title} ({len(scan.complete)} complete)")


@backup.command("list")
@from_option(help="Backup location (default DBKIT_BACKUP_URI).")
@json_option
@pass_state
def backup_list(state: State, source, as_json: bool) -> None:
    """Complete backups, newest first (folders without a manifest are listed as incomplete)."""
    from dbkit.backup import _pipeline as pipeline

    check_backup_uri("--from", source, state.settings)
    storage = pipeline.storage_for(state.settings, source)
    found = pipeline.scan(state.settings, source, storage)
    render.show(found, lambda scan: _describe_scan(scan, storage.uri), as_json=as_json)


@backup.command("show")
@click.argument("backup_id", default="latest")
@from_option()
@pass_state
def backup_show(state: State, backup_id: str, source) -> None:
    """The manifest of one backup (ID or latest), as JSON."""
    from dbkit.backup import _pipeline as pipeline

    check_backup_uri("--from", source, state.settings)
    render.emit_json(pipeline.show(state.settings, backup_id, source).to_dict())


def _describe_verify(result):
    line, test = f"backup {result.id}: sha256 ok", result.restore_test
    if test:
        line += f"; restore test ok ({test.tables} tables in {test.seconds} s)"
    yield line


@backup.command("verify")
@click.argument("backup_id", default="latest")
@from_option()
@click.option("--restore-test", is_flag=True, help="Also restore it into a throw-away database.")
@json_option
@pass_state
def backup_verify(state: State, backup_id: str, source, restore_test: bool, as_json: bool) -> None:
    """Download and check the sha256 (and decryption); --restore-test restores it too."""
    from dbkit import _lifecycle as lifecycle

    check_backup_uri("--from", source, state.settings)
    result = lifecycle.verify(state.settings, backup_id, source=source, restore_test=restore_test)
    render.show(result, _describe_verify, as_json=as_json)


def _describe_prune(result):
    applied = result.applied
    verb = "deleted" if applied else "would delete"
    for k in result.keep:
        yield f"keep    {k.id}  ({', '.join(k.reasons)})"
    for d in result.delete:
        yield f"{verb:7} {d}"
    for d in result.incomplete_removed:
        yield f"{verb:7} {d}  (incomplete, idle for more than {result.stale_after})"
    for u in result.stale_uploads_aborted:
        yield f"{'aborted' if applied else 'would abort'} stale upload {u}"
    if not applied:
        yield "dry run: pass --apply to delete"


@backup.command("prune")
@from_option()
@click.option("--keep-last", type=click.IntRange(min=0), default=0)
@click.option("--keep-daily", type=click.IntRange(min=0), default=0)
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0)
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0)
@click.option("--min-keep", type=int, default=1, show_default=True, help="Never keep fewer than this many.")
@click.option("--apply", "apply_", is_flag=True, help="Really delete (default: show the plan only).")
@json_option
@pass_state
def backup_prune(state: State, source, apply_, as_json, **rules) -> None:
    """Retention: keep the last N and the newest per day/week/month; dry run unless --apply."""
    from dbkit.backup import _pipeline as pipeline

    check_backup_uri("--from", source, state.settings)
    result = pipeline.prune(state.settings, uri=source, apply=apply_, **rules)  # --keep-* and --min-keep
    render.show(result, _describe_prune, as_json=as_json)


def _describe_restore(result):
    yield (f"restored backup {result.backup_id} into database {result.database} "
           f"({result.tables} tables, {result.seconds:.1f} s); sha256 verified")
    yield f"alembic revision: {result.alembic_revision or '-'}; migrate check: {result.migrate_check or '-'}"
    for warning in result.warnings:
        yield f"warning: {warning}"
    if result.swapped:
        yield f"swapped: the previous database is kept as {result.previous} (rename it back to undo)"


@click.command("restore")
@click.argument("backup_id", default="latest")
@from_option(help="Backup location (default DBKIT_BACKUP_URI).")
@click.option("--into", metavar="NEW_DB_NAME", help="Name of the new database (default <db>_restore_<time>).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="pg_restore parallel jobs; above 1 the dump is spooled to a temporary file first "
                   "(pg_restore -j needs a seekable file), otherwise it streams.")
@click.option("--globals", "with_globals", is_flag=True, help="Apply the backup's globals.sql first.")
@click.option("--swap", is_flag=True,
              help="Then rename it into place, keeping the current database as <db>_pre_restore_<time>.")
@click.option("--yes", is_flag=True, help="Confirm --swap.")
@json_option
@pass_state
def restore(state: State, backup_id, source, into, as_json, **options) -> None:
    """Restore a backup (ID or latest) into a NEW database; nothing is overwritten."""
    from dbkit import _lifecycle as lifecycle

    check_db_name("--into", into)
    check_backup_uri("--from", source, state.settings)
    # options: --jobs, --swap, --yes, --globals (with_globals), as named
    result = lifecycle.restore(state.settings, backup_id, source=source, into=into, **options)
    render.show(result, _describe_restore, as_json=as_json)
