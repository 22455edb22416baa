"""``[tool.dbkit]`` in the project's ``pyproject.toml``: created, merged into an existing file (its content and
comments kept), or replaced (``--force``) without touching the tables around it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dbkit.errors import UsageError

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")


def _strip_dbkit_tables(text: str) -> str:
    """``text`` without its ``[tool.dbkit]`` and ``[tool.dbkit.*]`` tables, with the comment lines right above
    each (the comments right above the next other table stay with that one)."""
    lines = text.splitlines(keepends=True)
    keep = [True] * len(lines)
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        name = m["name"].replace(" ", "").replace('"', "") if m else ""
        if name == "tool.dbkit" or name.startswith("tool.dbkit."):
            end = i + 1
            while end < len(lines) and not _HEADER.match(lines[end]):
                end += 1
            stop = end
            if end < len(lines):  # leave the comments that introduce the next table to it
                while stop > i + 1 and lines[stop - 1].lstrip().startswith("#"):
                    stop -= 1
            start = i
            while start > 0 and keep[start - 1] and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            for j in range(start, stop):
                keep[j] = False
            i = end
        else:
            i += 1
    return "".join(line for line, k in zip(lines, keep, strict=True) if k)


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """``key = 'theirs' (not 'ours')`` for each setting an existing ``[tool.dbkit]`` resolves otherwise."""
    from dbkit.config import FIELDS_BY_NAME

    def norm(value: Any) -> str:
        text = ",".join(str(v).strip() for v in value) if isinstance(value, list | tuple) else str(value or "")
        return "none" if text.strip().lower() in ("", "none") else text.strip()

    have = {key: norm(theirs.get(key, theirs.get(key.replace("_", "-"), FIELDS_BY_NAME[key].default))) for key in ours}
    return [f"{key} = {have[key]!r} (not {norm(value)!r})" for key, value in ours.items() if have[key] != norm(value)]


def pyproject_text(path: Path, section: str, new_file: str, force: bool) -> tuple[str | None, str, str]:
    """(new content or None, action, reason) for ``pyproject.toml``."""
    import tomllib

    if not path.exists():
        return new_file, "written", ""
    try:
        text = path.read_text(encoding="utf-8")
        theirs = tomllib.loads(text).get("tool", {}).get("dbkit")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as TOML ({exc}); fix it first, then run dbkit init again") from None
    has = theirs is not None
    if has and not force:
        differ = _differences(theirs, tomllib.loads(section)["tool"]["dbkit"]) if isinstance(theirs, dict) else []
        if differ:
            return None, "skipped", (f"it has [tool.dbkit] already, which says {', '.join(differ)}: the other files "
                                     "follow the options; --force replaces it")
        return None, "skipped", "it has [tool.dbkit] already (--force replaces it)"
    base = _strip_dbkit_tables(text) if has else text
    base = base.rstrip() + "\n\n" if base.strip() else ""
    merged = base + section
    try:
        tool = tomllib.loads(merged).get("tool", {})
    except tomllib.TOMLDecodeError:
        tool = None
    if tool is None or tomllib.loads(section)["tool"]["dbkit"] != tool.get("dbkit"):
        raise UsageError(f"{path} defines tool.dbkit in a form dbkit init cannot merge (dotted keys or an inline "
                         "table); move it into a [tool.dbkit] table or remove it, then run dbkit init again")
    return merged, "overwritten" if has else "merged", ""
