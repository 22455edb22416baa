"""What autogenerate compares (:mod:`dbkit.migrate._autogen`): the application's schemas only, never Alembic's
version table nor what TimescaleDB creates by itself; and how it renders pgvector types."""

from __future__ import annotations


def version_table(settings) -> tuple[str, str]:
    """Alembic's version table, (schema, name): never compared."""
    return settings.version_table_schema, settings.version_table


def include_name(schemas: set[str], *, default_schema: str | None = None,
                 version_table: tuple[str, str] | None = None, ignore: set[tuple[str, str]] = frozenset()):
    """Autogenerate looks only at the application's schemas (not public, TimescaleDB's or dbkit's, unless
    one of them is the application's), never at Alembic's version table nor at the (schema, table) pairs of
    ``ignore`` (TimescaleDB's own tables).  Alembic names the connection's default schema None:
    ``default_schema`` says which one that is."""

    def _include(name, type_, parent_names) -> bool:
        if type_ == "schema":
            return (default_schema if name is None else name) in schemas
        if type_ == "table":
            schema = parent_names.get("schema_name")
            key = ((default_schema if schema is None else schema), name)
            return key != version_table and key not in ignore
        return True

    return _include


def render_item(type_, obj, autogen_context):
    """Render pgvector types as ``VECTOR(dim=384)`` with ``from pgvector.sqlalchemy import VECTOR``,
    so generated revisions import what they use."""
    if type_ == "type" and type(obj).__module__.startswith("pgvector."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from pgvector.sqlalchemy import {name}")
        return repr(obj)
    return False


def make_include_object(timescale_indexes: set[tuple[str, str]], internals: set[tuple[str, str]] = frozenset(),
                        *, default_schema: str | None = None):
    """Leave out TimescaleDB's own indexes of a hypertable (when the models have no index of that name), and its
    internal tables and aggregate views also when a model declares one (to query an aggregate, say)."""

    def _include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "table":
            return (obj.schema or default_schema, name) not in internals
        if type_ == "index" and reflected and compare_to is None:
            schema = getattr(getattr(obj, "table", None), "schema", None)
            return (schema or default_schema, name) not in timescale_indexes
        return True

    return _include
