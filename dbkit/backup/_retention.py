"""Which backups ``dbkit backup prune`` keeps (pure: no I/O).

The policy is restic's and borg's: ``keep_last`` keeps the N most recent backups;
``keep_daily``/``keep_weekly``/``keep_monthly`` keep the newest backup of each of
the last D days / W ISO weeks / M months *that have backups* (a day without a
backup does not use up one of the D), counted in UTC.  One backup may satisfy
several rules; every reason is reported.  Everything else is deleted.

Safety rules, whatever the parameters: the newest complete backup is never
deleted, nor is a backup that finished after ``now`` (a clock is off somewhere);
all-zero or negative parameters are refused.

Only complete backups (with a manifest) are passed to :func:`choose`; folders
without one are leftovers of failed or running backups, handled by
:func:`incomplete_to_remove`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dbkit.backup._manifest_check import is_backup_id, parse_backup_id, require_aware
from dbkit.errors import ConfigError

PRUNE_EXAMPLE = "dbkit backup prune --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6"


@dataclass(frozen=True)
class BackupRef:
    """A complete backup: its id and when it finished (aware)."""

    id: str
    finished_at: datetime


@dataclass(frozen=True)
class Plan:
    """``keep``: (id, reasons) newest first; ``delete``: ids newest first."""

    keep: list[tuple[str, tuple[str, ...]]]
    delete: list[str]

    @property
    def kept_ids(self) -> list[str]:
        return [backup_id for backup_id, _ in self.keep]


def _check_counts(counts: dict[str, object]) -> None:
    for name, value in counts.items():
        option = f"--keep-{name}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(option, f"must be a whole number, got {value!r}", example=PRUNE_EXAMPLE)
        if value < 0:
            raise ConfigError(option, f"must be 0 or more, got {value}", example=PRUNE_EXAMPLE)
    if not any(counts.values()):
        raise ConfigError("prune", "needs at least one --keep-* option (--keep-last, --keep-daily, --keep-weekly, "
                          "--keep-monthly) above 0; with none, it would delete every backup", example=PRUNE_EXAMPLE)


def choose(backups: Iterable[BackupRef], *, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
           keep_monthly: int = 0, min_keep: int = 1, now: datetime) -> Plan:
    """Split complete backups into kept (with reasons) and deleted, both newest first.

    Reasons: ``"last"``, ``"daily 2026-11-21"``, ``"weekly 2026-W47"``, ``"monthly 2026-11"``,
    ``"newest"`` (kept by the safety rule alone), ``"min-keep"`` (the floor: the ``min_keep``
    newest are always kept), ``"finished after now"``.
    Raises :class:`ConfigError` for negative or all-zero counts, ``ValueError`` for duplicate ids
    or naive datetimes.
    """
    remaining = {"last": keep_last, "daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    _check_counts(remaining)
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
        raise ConfigError("--min-keep", f"must be 1 or more, got {min_keep!r}", example="--min-keep 3")
    now = require_aware(now, "now")
    refs = list(backups)
    seen: set[str] = set()
    for ref in refs:
        if ref.id in seen:
            raise ValueError(f"backup {ref.id} is listed twice")
        seen.add(ref.id)
    ordered = sorted(((ref.id, require_aware(ref.finished_at, f"finished_at of backup {ref.id}")) for ref in refs),
                     key=lambda item: (item[1], item[0]), reverse=True)

    # label -> strftime of its bucket (ISO year and week for weekly); "last": one bucket per backup
    formats = {"last": None, "daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m"}
    last_bucket: dict[str, str] = {}

    keep: list[tuple[str, tuple[str, ...]]] = []
    delete: list[str] = []
    for index, (backup_id, finished) in enumerate(ordered):
        reasons: list[str] = []
        for label, bucket_format in formats.items():
            if remaining[label] <= 0:
                continue
            bucket = finished.strftime(bucket_format) if bucket_format else backup_id
            if bucket != last_bucket.get(label):  # newest first: the first one seen is its bucket's newest
                last_bucket[label] = bucket
                remaining[label] -= 1
                reasons.append(f"{label} {bucket}" if bucket_format else label)
        if index == 0 and not reasons:
            reasons.append("newest")
        if index < min_keep and not reasons:
            reasons.append("min-keep")
        if finished > now:
            reasons.append("finished after now")
        if reasons:
            keep.append((backup_id, tuple(reasons)))
        else:
            delete.append(backup_id)
    return Plan(keep=keep, delete=delete)


def incomplete_to_remove(prefixes: Iterable[tuple[str, datetime]], now: datetime,
                         min_age: timedelta = timedelta(days=1)) -> list[str]:
    """Backup folders without a manifest that are old enough to be leftovers, newest first.

    ``prefixes`` are (folder name, last modified time of its newest object).  A folder is
    removed only when its name is a backup id (other folders are not dbkit's) and both its
    last write and the start time in its id are more than ``min_age`` before ``now``, so a
    backup still being written is never touched.
    """
    now = require_aware(now, "now")
    if not isinstance(min_age, timedelta) or min_age < timedelta(0):
        raise ValueError(f"min_age must be a timedelta >= 0, got {min_age!r}")
    latest: dict[str, datetime] = {}
    for backup_id, last_modified in prefixes:
        if not is_backup_id(backup_id):
            continue
        when = max(require_aware(last_modified, f"last_modified of {backup_id}"), parse_backup_id(backup_id))
        latest[backup_id] = max(when, latest.get(backup_id, when))
    old = [(when, backup_id) for backup_id, when in latest.items() if now - when > min_age]
    return [backup_id for _, backup_id in sorted(old, reverse=True)]
