"""What is in a backup location: complete backups (list, show), unfinished attempts, GFS pruning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from dbkit.backup import _retention as retention
from dbkit.backup._common import stale_after, storage_for
from dbkit.backup._manifest import MANIFEST_NAME, Manifest, ManifestError, is_backup_id, parse_backup_id
from dbkit.errors import DbkitError


@dataclass(frozen=True)
class Unfinished:
    """A backup attempt without a manifest: its folder (the backup id) and its last sign of life (the
    newest object's modification time or the newest activity of an unfinished upload)."""

    id: str
    last_seen: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "modified": self.last_seen}


@dataclass(frozen=True)
class Unreadable:
    """A backup folder whose manifest could not be read, and why."""

    id: str
    error: str


@dataclass(frozen=True)
class Scan:
    """What a backup location holds: complete backups (manifests, newest first), attempts without a
    manifest (newest first) and manifests that could not be read.

    An attempt without a manifest is a folder with committed objects but no manifest.json, or one
    that only has an unfinished write (an S3 multipart upload, a local ``.partial-`` file): a backup
    that failed, was killed, or is still running.
    """

    complete: tuple[Manifest, ...]
    incomplete: tuple[Unfinished, ...]
    unreadable: tuple[Unreadable, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``dbkit backup list --json``."""
        return {"backups": [m.to_dict() for m in self.complete],
                "incomplete": [u.as_dict() for u in self.incomplete],
                "unreadable": [asdict(u) for u in self.unreadable]}

    def unfinished_after_newest(self) -> list[Unfinished]:
        """Attempts without a manifest that started after the newest complete backup (ids carry their
        start time, to the second) or wrote after it finished, newest first."""
        if not self.complete:
            return list(self.incomplete)
        # every id here is a backup id: Manifest checks its own, scan() keeps only backup-id folders
        newest = self.complete[0]
        started = parse_backup_id(newest.id)
        return [u for u in self.incomplete if u.last_seen > newest.finished_at or parse_backup_id(u.id) > started]


@dataclass(frozen=True)
class Kept:
    """A backup that prune keeps, and the rules that keep it (last, daily, weekly, monthly, ...)."""

    id: str
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class PruneResult:
    """What prune keeps and deletes (or, with ``applied``, deleted): complete backups, folders of
    unfinished backups idle for longer than ``stale_after`` (DBKIT_BACKUP_STALE_AFTER as written) and the
    unfinished uploads (object keys) aborted with them; ``unreadable``: manifests it could not read
    (those backups are left alone)."""

    applied: bool
    keep: tuple[Kept, ...]
    delete: tuple[str, ...]
    incomplete_removed: tuple[str, ...]
    stale_uploads_aborted: tuple[str, ...]
    unreadable: tuple[Unreadable, ...]
    stale_after: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``dbkit backup prune --json`` (``unreadable`` as [id, error] pairs)."""
        return {"applied": self.applied, "keep": [k.as_dict() for k in self.keep], "delete": list(self.delete),
                "incomplete_removed": list(self.incomplete_removed),
                "stale_uploads_aborted": list(self.stale_uploads_aborted),
                "unreadable": [[u.id, u.error] for u in self.unreadable], "stale_after": self.stale_after}


def scan(settings, uri: str | None = None, storage=None, *, uploads: bool = True) -> Scan:
    """``uploads``: also look for unfinished writes (S3: ListMultipartUploads, which a read-only
    restore role may not be allowed; not needed to list or restore complete backups)."""
    storage = storage or storage_for(settings, uri)
    folders: dict[str, list] = {}
    for obj in storage.list():
        folder, _, name = obj.key.partition("/")
        if name and is_backup_id(folder):
            folders.setdefault(folder, []).append(obj)
    activity: dict[str, list[datetime]] = {}
    for up in storage.list_incomplete_uploads() if uploads else ():
        folder, _, name = up.key.partition("/")
        if name and is_backup_id(folder) and up.last_activity is not None:
            activity.setdefault(folder, []).append(up.last_activity)
    complete, incomplete, unreadable = [], [], []
    for folder in sorted(set(folders) | set(activity)):
        objects = folders.get(folder, [])
        if not any(o.key == f"{folder}/{MANIFEST_NAME}" for o in objects):
            incomplete.append(Unfinished(folder, max([o.modified for o in objects] + activity.get(folder, []))))
            continue
        try:
            with storage.open_read(f"{folder}/{MANIFEST_NAME}") as fh:
                complete.append(Manifest.from_json(fh.read(), backup_id=folder))
        except ManifestError as exc:
            unreadable.append(Unreadable(folder, exc.message))
    complete.sort(key=lambda m: (m.finished_at, m.id), reverse=True)  # "latest" is by manifest time
    return Scan(tuple(complete), tuple(sorted(incomplete, key=lambda u: (u.id, u.last_seen), reverse=True)),
                tuple(sorted(unreadable, key=lambda u: (u.id, u.error), reverse=True)))


def list_backups(settings, uri: str | None = None) -> list:
    """Complete backups (those with a manifest), newest first."""
    return list(scan(settings, uri, uploads=False).complete)


def _leftovers(storage, found: Scan, now: datetime, min_age) -> tuple[list[str], list]:
    """(folders without a manifest, unfinished uploads) whose last sign of life is older than ``min_age``."""
    folders = retention.incomplete_to_remove([(u.id, u.last_seen) for u in found.incomplete], now, min_age)
    uploads = storage.list_incomplete_uploads(older_than=now - min_age)
    return folders, uploads


def _remove_leftovers(storage, folders: list[str], uploads: list) -> None:
    for up in uploads:  # S3 multipart uploads / local .partial- files (never younger than the cutoff)
        storage.abort_upload(up)
    _delete_backups(storage, folders)


def _delete_backups(storage, backup_ids) -> None:
    for backup_id in backup_ids:
        keys = [o.key for o in storage.list(f"{backup_id}/")]
        # the manifest goes first: a half-deleted backup must never look complete
        for key in sorted(keys, key=lambda k: not k.endswith("/manifest.json")):
            storage.delete(key)


def prune(settings, *, uri: str | None = None, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
          keep_monthly: int = 0, min_keep: int = 1, apply: bool = False, now: datetime | None = None) -> PruneResult:
    """Choose which complete backups to keep (restic-style rules; the newest always stays) and, with
    ``apply``, delete the others and the leftovers of unfinished backups (folders without a manifest,
    S3 multipart uploads, local ``.partial-`` files) whose last sign of life is older than
    DBKIT_BACKUP_STALE_AFTER (a backup that may still be running is never touched)."""
    if apply:
        settings.require_environment("prune --apply")
    now = now or datetime.now(UTC)
    min_age = stale_after(settings)
    storage = storage_for(settings, uri)
    found = scan(settings, uri, storage)
    plan = retention.choose([retention.BackupRef(m.id, m.finished_at) for m in found.complete],
                            keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                            keep_monthly=keep_monthly, min_keep=min_keep, now=now)
    leftovers, stale = _leftovers(storage, found, now, min_age)
    if apply:
        _delete_backups(storage, plan.delete)
        _remove_leftovers(storage, leftovers, stale)
    return PruneResult(applied=apply, keep=tuple(Kept(i, tuple(r)) for i, r in plan.keep), delete=tuple(plan.delete),
                       incomplete_removed=tuple(leftovers), stale_uploads_aborted=tuple(u.key for u in stale),
                       unreadable=found.unreadable, stale_after=str(settings.backup_stale_after))


def show(settings, backup_id: str, uri: str | None = None):
    backups = list_backups(settings, uri)
    if not backups:
        raise DbkitError(f"no complete backup in {storage_for(settings, uri).uri}",
                         hint="run `dbkit backup` first (a backup without manifest.json does not count)")
    found = backups[0] if backup_id == "latest" else next((m for m in backups if m.id == backup_id), None)
    if found is not None:
        return found
    raise DbkitError(f"backup {backup_id} not found (or incomplete) in {storage_for(settings, uri).uri}",
                     hint="`dbkit backup list` shows the complete ones")


def _clean_after_backup(settings, storage) -> None:
    """After a successful backup: remove leftovers of crashed ones older than DBKIT_BACKUP_STALE_AFTER.
    A failure here is logged, never fails the backup that just succeeded."""
    import logging

    log = logging.getLogger("dbkit")
    try:
        folders, uploads = _leftovers(storage, scan(settings, storage=storage), datetime.now(UTC),
                                      stale_after(settings))
        _remove_leftovers(storage, folders, uploads)
    except DbkitError as exc:
        log.warning("backup done, but removing leftovers of unfinished backups failed: %s", exc.message)
        return
    if folders or uploads:
        log.info("removed leftovers of unfinished backups: %s", ", ".join([*folders, *(u.key for u in uploads)]))
