"""Seed definitions: the ``@seeder`` decorator, discovery of ``seeds/*.py``, dependency order.

A seeder is one short function per table::

    from dbkit.seed import seeder

    @seeder("users", columns=("id", "tenant_id", "email", "name"), depends_on=("tenants",),
            rows={"tiny": 10, "small": 200, "medium": 20_000, "large": 200_000})
    def users(ctx):
        for tenant_id in ctx.spread(ctx.ids("tenants"), ctx.rows):
            yield (ctx.uuid(), tenant_id, ..., ...)

It yields tuples in ``columns`` order; the engine streams them into the table
with binary COPY.  ``rows`` gives the row count per profile (``--scale``
multiplies it).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dbkit.errors import ConfigError, DbkitError

PROFILES = ("tiny", "small", "medium", "large")
_MODULE_PREFIX = "dbkit_seeds_"


@dataclass(frozen=True)
class Seeder:
    table: str
    columns: tuple[str, ...]
    depends_on: tuple[str, ...]
    rows: Mapping[str, int]
    fn: Callable[..., Iterable[tuple]]
    module: str = ""

    @property
    def name(self) -> str:
        """``seeds/users.py:users`` for project seeders, ``module.function`` otherwise."""
        if self.module.startswith(_MODULE_PREFIX):
            return f"seeds/{self.module[len(_MODULE_PREFIX):]}.py:{self.fn.__name__}"
        return f"{self.module}.{self.fn.__name__}" if self.module else self.fn.__name__

    def count(self, profile: str, scale: float = 1.0) -> int:
        if profile not in self.rows:
            raise ConfigError("--profile", f"{profile!r} has no row count in seeder {self.name}",
                              example=f"rows={{'{profile}': 100, ...}}")
        return max(1, round(self.rows[profile] * scale)) if self.rows[profile] else 0


@dataclass
class Registry:
    seeders: dict[str, Seeder] = field(default_factory=dict)

    def add(self, s: Seeder) -> None:
        if s.table in self.seeders:
            raise ConfigError(f"seeder {s.name}", f"seeds table {s.table!r}, already seeded by "
                              f"{self.seeders[s.table].name}", example="one seeder per table")
        self.seeders[s.table] = s

    def __getitem__(self, table: str) -> Seeder:
        return self.seeders[table]

    def __contains__(self, table: str) -> bool:
        return table in self.seeders


_current = Registry()


def seeder(table: str, *, columns: Iterable[str], rows: Mapping[str, int], depends_on: Iterable[str] = ()):
    """Register the decorated generator as the seeder of ``table``."""
    unknown = set(rows) - set(PROFILES)
    if unknown:
        raise ValueError(f"unknown profile(s) {sorted(unknown)}; profiles are {', '.join(PROFILES)}")

    def register(fn):
        _current.add(Seeder(table, tuple(columns), tuple(depends_on), dict(rows), fn,
                            module=getattr(fn, "__module__", "")))
        return fn

    return register


def load_seeders(directory: Path) -> Registry:
    """Import every ``*.py`` in ``directory`` (name order, ``_``-prefixed skipped) into a fresh registry."""
    global _current
    if not directory.is_dir():
        raise ConfigError(str(directory), "does not exist", purpose="holds the seed definitions",
                          example="seeds/users.py with an @seeder function")
    previous, _current = _current, Registry()
    try:
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            name = f"{_MODULE_PREFIX}{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except DbkitError:
                raise
            except Exception as exc:
                raise DbkitError(f"seed module {path.name} failed to import: {type(exc).__name__}: {exc}") from exc
        return _current
    finally:
        _current = previous


def dependency_order(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Tables ordered so that each comes after everything it depends on (stable: name order
    among equals).  A cycle is a ConfigError naming the tables in it."""
    from graphlib import CycleError, TopologicalSorter

    sorter = TopologicalSorter({t: set(d) & set(deps) for t, d in deps.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = sorted(set(exc.args[1]))
        raise ConfigError("seed dependencies", f"form a cycle among {', '.join(cycle)}",
                          example="depends_on must not loop") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order
