"""What ``alembic revision --autogenerate`` (and ``dbkit migrate new --autogenerate``) is configured
with: which schemas it compares, how it renders pgvector types, which reflected objects it ignores.

:func:`autogenerate_options` is given to ``context.configure`` online and offline;
:func:`autogenerate_online_options` adds what needs the database (TimescaleDB's own indexes).
"""

from __future__ import annotations

from typing import Any


def autogenerate_options(settings) -> dict[str, Any]:
    """``context.configure`` keywords for autogenerate that need no connection."""
    return dict(
        include_schemas=True,
        include_name=include_name({settings.schema}),
        compare_type=True,
        render_item=render_item,
    )


def autogenerate_online_options(settings, connection) -> dict[str, Any]:
    """``context.configure`` keywords for autogenerate read from the database."""
    return dict(include_object=make_include_object(_timescale_index_names(connection)))


def include_name(schemas: set[str]):
    """Autogenerate looks only at the application's schemas (not public, TimescaleDB's or dbkit's)."""

    def _include(name, type_, parent_names) -> bool:
        if type_ == "schema":
            return name in schemas
        return True

    return _include


def _timescale_index_names(conn) -> set[tuple[str, str]]:
    """(schema, index) of the indexes TimescaleDB creates itself on hypertables (``<table>_<time>_idx``)."""
    exists = conn.exec_driver_sql("SELECT to_regclass('timescaledb_information.dimensions')").scalar()
    if not exists:
        return set()
    rows = conn.exec_driver_sql(
        "SELECT hypertable_schema, hypertable_name, column_name FROM timescaledb_information.dimensions"
    ).all()
    return {(s, f"{t}_{c}_idx") for s, t, c in rows}


def render_item(type_, obj, autogen_context):
    """Render pgvector types as ``VECTOR(dim=384)`` with ``from pgvector.sqlalchemy import VECTOR``,
    so generated revisions import what they use."""
    if type_ == "type" and type(obj).__module__.startswith("pgvector."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from pgvector.sqlalchemy import {name}")
        return repr(obj)
    return False


def make_include_object(timescale_indexes: set[tuple[str, str]]):
    def _include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "index" and reflected and compare_to is None:
            schema = getattr(getattr(obj, "table", None), "schema", None)
            if (schema, name) in timescale_indexes:
                return False
        return True

    return _include
