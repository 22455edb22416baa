"""Output for the CLI: rich tables on a terminal, plain aligned lines otherwise, JSON on request.

Only the CLI calls these; the library returns data and never prints.  A command hands its result to
:func:`show` with a function that describes it for people (lines and :class:`Table` blocks); with
``--json`` the result's own ``as_dict()``/``to_dict()`` is printed instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any


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


@dataclasses.dataclass(frozen=True)
class Table:
    """A table block for :func:`show`: printed with :func:`table`."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str | None = None


def jsonable(result: Any) -> Any:
    """The JSON form of a library result: its ``as_dict()`` or ``to_dict()``, a dataclass's fields,
    lists of those; anything else (dicts, strings, numbers) as it is."""
    for method in ("as_dict", "to_dict"):
        if callable(getattr(result, method, None)):
            return getattr(result, method)()
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, list | tuple):
        return [jsonable(item) for item in result]
    return result


def show(result: Any, human: Callable[[Any], Iterable[str | Table]], *, as_json: bool = False,
         json_data: Any = None) -> None:
    """Print ``result``: JSON (``json_data`` when given, else :func:`jsonable` of it) with ``--json``,
    otherwise the lines and tables that ``human(result)`` yields."""
    if as_json:
        emit_json(jsonable(result) if json_data is None else json_data)
        return
    for block in human(result):
        if isinstance(block, Table):
            table(block.headers, block.rows, title=block.title)
        else:
            line(block)
