"""Output for the CLI: rich tables on a terminal, plain aligned lines otherwise, JSON on request.

Only the CLI calls these; the library returns data and never prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["is_tty", "table", "emit_json", "line", "error_line"]


def is_tty() -> bool:
    return sys.stdout.isatty()


def line(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def error_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


_STYLE = {"ok": "green", "healthy": "green", "running": "green", "warn": "yellow", "degraded": "yellow",
          "fail": "red", "unhealthy": "red", "stopped": "yellow"}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    """A table: rich with colours on a TTY, plain space-aligned columns elsewhere (CI logs, pipes)."""
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left", show_edge=False)
        for h in headers:
            t.add_column(h)
        for row in cells:
            t.add_row(*(f"[{_STYLE[c]}]{c}[/]" if c in _STYLE else c.replace("[", r"\[") for c in row))
        Console().print(t)
        return
    if title:
        line(title)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
