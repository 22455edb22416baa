"""Where settings come from on disk: .env files (python-dotenv's syntax), ``[tool.dbkit]`` and the project
directory."""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream

from dbkit.errors import ConfigError


def parse_dotenv(text: str, *, filename: str = ".env") -> dict[str, str]:
    """A .env file's ``KEY=value`` lines (python-dotenv's syntax: ``export``, quotes, ``#`` comments;
    no ``${VAR}`` expansion). A line that is not blank, a comment or an assignment is a ConfigError
    naming the file and line."""
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error or (binding.key is not None and binding.value is None):  # "FOO" alone too
            text = binding.original.string
            line = binding.original.line + text[:len(text) - len(text.lstrip())].count("\n")  # blank lines before
            quote = re.match(r"\s*(?:export\s+)?(\w+)\s*=\s*(['\"])", text)
            if quote:
                raise ConfigError(f"{filename}:{line}", f"has an unterminated {quote[2]} quote",
                                  example=f"{quote[1]}={quote[2]}value{quote[2]}")
            raise ConfigError(f"{filename}:{line}", "is not a KEY=value line",
                              example="DATABASE_URL=postgresql://app:secret@localhost:5432/app")
        if binding.key is not None:
            values[binding.key] = binding.value
    return values


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror})") from None
    return parse_dotenv(text, filename=path.name)


def find_project_dir(start: Path, environ: Mapping[str, str]) -> Path:
    """``DBKIT_PROJECT_DIR``, else the nearest directory with a pyproject.toml, else ``start``."""
    explicit = environ.get("DBKIT_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    start = start.resolve()
    return next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), start)


def read_pyproject(project_dir: Path, fields: Mapping[str, Any], subtables: Iterable[str]) -> dict[str, Any]:
    """``[tool.dbkit]`` (``-`` in keys read as ``_``); keys that are not ``fields`` and tables that are not
    ``subtables`` are ConfigErrors."""
    path = project_dir / "pyproject.toml"
    try:
        with path.open("rb") as fh:
            section = tomllib.load(fh).get("tool", {}).get("dbkit", {})
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})") from None
    table = {key.replace("-", "_"): value for key, value in section.items()}
    for key, value in section.items():
        name = key.replace("-", "_")
        if isinstance(value, dict) and name not in subtables:
            raise ConfigError(f"[tool.dbkit.{key}]", f"in {path.name} is not a known table "
                              f"(known: {', '.join(f'[tool.dbkit.{t}]' for t in subtables)})")
        if not isinstance(value, dict) and name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"[tool.dbkit] {key}", f"in {path.name} is not a known setting (known: {known})")
    return table
