"""The parts of a backup manifest: one dumped table and how the dump is encrypted (pure data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TableInfo:
    """One dumped table (a hypertable or a partitioned table counts with its chunks/partitions).

    ``rows``: the exact row count in the dump's own snapshot (tables small enough to count cheaply),
    None when not counted.  ``rows_estimate``: the exact count when there is one, else PostgreSQL's
    estimate (TimescaleDB's ``approximate_row_count`` for hypertables); None when there is none.
    ``has_rows``: whether the table had at least one row in the dump's snapshot (None: not known,
    manifests of older dbkit versions).
    """

    schema: str
    name: str
    rows_estimate: int | None = None
    rows: int | None = None
    has_rows: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.schema, "name": self.name, "rows_estimate": self.rows_estimate}
        if self.rows is not None:
            out["rows"] = self.rows
        if self.has_rows is not None:
            out["has_rows"] = self.has_rows
        return out


@dataclass(frozen=True)
class Encryption:
    """How the dump object is encrypted: age to these recipients (public keys only)."""

    recipients: tuple[str, ...]
    format: str = "age"

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "recipients": list(self.recipients)}
