"""Where settings come from on disk: .env files (python-dotenv's syntax), ``[tool.dbkit]`` and the project
directory; and the README's table of them."""

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


def settings_table(fields: Iterable[Any]) -> str:
    """The README's settings table of ``fields`` (dbkit.config.FIELDS)."""
    from dbkit._config_types import _printable

    lines = ["| Variable | `[tool.dbkit]` key | Default | What it is for |", "|---|---|---|---|"]
    for f in fields:
        default = "unset" if f.default in (None, ()) else f"`{_printable(f.default)}`"
        purpose = (f.purpose[0].upper() + f.purpose[1:]).replace("<", "\\<")
        lines.append(f"| `{f.env}` | `{f.name}` | {default} | {purpose} |")
    return "\n".join(lines)


def describe_settings(settings: Any, fields: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(variable, printable value, source) for the role passwords and every setting of ``fields``, secrets
    masked (``Settings.describe``)."""
    from dbkit._config_types import _printable
    from dbkit._urls import DbUrl

    rows = [(variable, "***" if value else "(empty)", settings.sources.get(variable, "env"))
            for variable, value in sorted(settings.passwords.items())]
    for f in fields:
        value = getattr(settings, f.name)
        if value is None:
            text = "(embedded dev cluster)" if f.name == "database_url" and settings.env == "dev" else "(unset)"
        elif isinstance(value, DbUrl):
            text = value.masked
        elif f.secret:
            text = "***"
        else:
            text = _printable(value) or "(none)"
        rows.append((f.env, text, settings.sources.get(f.name, "default")))
    return rows


def _label(f, source: str) -> str:
    """The setting ``f`` (a :class:`dbkit.config.Field`) as the user wrote it where the value came from."""
    if source == "pyproject":
        return f"[tool.dbkit] {f.name}"
    return f"{f.env} (from {source})" if source.startswith(".env") else f.env


def _problem(f, error: Mapping[str, Any], source: str) -> ConfigError:
    """The one line of a pydantic error of setting ``f`` (a secret's value is never quoted)."""
    problem = error["ctx"]["problem"] if error["type"] == "dbkit" else (
        f"is not valid ({error['msg']})" if f.secret else f"is {error['input']!r}, not valid ({error['msg']})")
    return ConfigError(_label(f, source), problem, purpose=f.purpose, example=f.example)
