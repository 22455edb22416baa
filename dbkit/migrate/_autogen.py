"""What ``alembic revision --autogenerate`` (and ``dbkit migrate new --autogenerate``) is configured
with: which schemas it compares, how it renders pgvector types, which reflected objects it ignores,
and what dbkit adds to a generated revision.

:func:`autogenerate_options` is given to ``context.configure`` online and offline;
:func:`autogenerate_online_options` adds what needs the database (the default schema, and what TimescaleDB
creates by itself: chunks and their indexes, compressed and materialization hypertables, continuous
aggregates' views, a hypertable's default indexes; never compared, wherever they live).

What a generated revision gets beyond Alembic's diff (:func:`revision_directives`, Alembic's
``process_revision_directives`` hook):

* the configured schema as a name: ``schema = settings.schema`` (``settings = dbkit.migrate.settings()``),
  ``schema=schema`` and ``f'{schema}.tenants.id'``, like the hand-written revisions, so the revision
  follows ``DBKIT_SCHEMA``; a model table without a schema in a project whose schema is the database's
  default one (``public``) is written with ``schema=schema`` too;
* for every new table of the configured schema that has the RLS model's owner column (``tenant_id``,
  or ``user_id`` when rows are owned per user; ``[tool.dbkit.rls]`` ``owner`` / ``tenant_column`` /
  ``user_column``, also per table under ``[tool.dbkit.rls.tables.<table>]``): ``op.enable_rls`` (forced)
  and per-command policies on the model's predicate, frozen as SQL text in the revision (SELECT for the
  enforce and read-only roles; INSERT/UPDATE/DELETE for the enforce roles, unless the role model makes
  the table read-only);
* for every new table of the configured schema: the role model's table privileges per kind
  (``op.grant``; the bypass and read-only kinds under ``if settings.role_<kind>:``, as they are optional),
  and USAGE on a serial column's sequence to the kinds that may INSERT; role names are the settings'
  tuples (``settings.role_enforce``), like the hand-written revisions;
* indexes on a pgvector column (HNSW, IVFFlat) as ``op.create_vector_index``, and other new indexes of
  existing tables as ``op.create_index_concurrently``, last in the upgrade (they run outside the
  revision's transaction);
* the downgrade undoes all of it, last first (revoke, drop_policy, disable_rls before drop_table).

``alembic check`` / ``dbkit migrate check`` still report exactly Alembic's differences.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dbkit.errors import ConfigError, UsageError

#: the policies of a tenant table: command -> (kinds the policy is for, has USING, has WITH CHECK)
POLICIES = {
    "SELECT": ("(settings.role_enforce, settings.role_readonly)", True, False),
    "INSERT": ("settings.role_enforce", False, True),
    "UPDATE": ("settings.role_enforce", True, True),
    "DELETE": ("settings.role_enforce", True, False),
}
#: what pgvector's operator classes default to for each of its types (an index that names none)
VECTOR_DEFAULT_OPS = {"VECTOR": "vector_l2_ops", "HALFVEC": "halfvec_l2_ops", "SPARSEVEC": "sparsevec_l2_ops",
                      "BIT": "bit_hamming_ops"}
CONCURRENT_NOTE = ("dbkit: the indexes below are built CONCURRENTLY, outside the revision's transaction\n"
                   "(what comes before is committed first; keep them in a revision of their own if that matters)")
_TEXT_TYPES = ("text", "varchar", "character varying", "char", "character", "bpchar", "citext")


# --------------------------------------------------------------------- what autogenerate compares

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
        autogen_context.imports.add(f"from pgvector.sqlalchemy import {type(obj).__name__}")
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


def autogenerate_options(settings) -> dict[str, Any]:
    """``context.configure`` keywords for autogenerate that need no connection."""
    skip = (settings.version_table_schema, settings.version_table)
    return dict(
        include_schemas=True,
        include_name=include_name({settings.schema}, version_table=skip),
        compare_type=True,
        render_item=render_item,
        process_revision_directives=revision_directives(settings),
    )


def autogenerate_online_options(settings, connection) -> dict[str, Any]:
    """``context.configure`` keywords for autogenerate read from the database."""
    from dbkit.migrate._ops_timescale import timescale_internals

    default = connection.dialect.default_schema_name
    indexes, internals = timescale_internals(connection)
    skip = (settings.version_table_schema, settings.version_table)
    return dict(include_name=include_name({settings.schema}, default_schema=default, version_table=skip,
                                          ignore=internals),
                include_object=make_include_object(indexes, internals, default_schema=default))


# --------------------------------------------------------------------- what a generated revision gets

def revision_directives(settings):
    """Alembic's ``process_revision_directives``: dbkit's additions to each generated revision (see the
    module's docstring).  A revision with no operation is left alone."""

    def process(context, revision, directives) -> None:
        from dbkit.migrate._autogen_render import Body, reverse

        schema = settings.schema
        for script in directives:
            for up, down in zip(script.upgrade_ops_list, script.downgrade_ops_list):
                if not up.ops or any(isinstance(op, Body) for op in up.ops):
                    continue
                original = list(up.ops)
                if schema == getattr(context.dialect, "default_schema_name", None):
                    for op in original:
                        _fill_schema(op, schema)
                rendered = Planner(settings, context).plan(original)
                up.ops[:] = [Body(original, rendered, schema)]
                down.ops[:] = [Body(list(down.ops), reverse(rendered), schema)]

    return process


def _fill_schema(op, schema: str) -> None:
    """An operation on a model table without a schema, in a project whose schema is the default one:
    written with the schema (``schema=schema``), so it does not depend on the search_path."""
    if getattr(op, "schema", False) is None:
        op.schema = schema
    for sub in getattr(op, "ops", ()):
        _fill_schema(sub, schema)


class Planner:
    """What dbkit adds for the settings' RLS model and role model, operation by operation."""

    def __init__(self, settings, context) -> None:
        from dbkit import rls, roles

        self.context, self.schema = context, settings.schema
        self.claims = rls.claims(settings)
        self.roles = roles.model(settings)
        self.kinds = tuple(roles.TABLE_GRANTS)
        from dbkit.rls._scoped import shared_tables

        self.shared = shared_tables(settings)
        self.rls_config: Mapping[str, Any] = settings.rls  # [tool.dbkit.rls]: a table (config.py), {} when absent

    # ---- the whole upgrade
    def plan(self, ops: list) -> list:
        from alembic.operations import ops as alembic_ops

        from dbkit.migrate._autogen_render import Comment

        new_tables = {(op.schema, op.table_name) for op in ops if isinstance(op, alembic_ops.CreateTableOp)}
        out: list = []
        deferred: list = []
        for op in ops:
            if isinstance(op, alembic_ops.CreateTableOp):
                out.append(op)
                if op.schema == self.schema:
                    out.extend(self.protect(op))
            elif isinstance(op, alembic_ops.ModifyTableOps):
                kept = []
                for sub in op.ops:
                    built = self.index(sub, (op.schema, op.table_name) in new_tables)
                    (deferred if built is not None else kept).append(built if built is not None else sub)
                if kept:
                    out.append(alembic_ops.ModifyTableOps(op.table_name, kept, schema=op.schema))
            else:
                built = self.index(op, (getattr(op, "schema", None), getattr(op, "table_name", None)) in new_tables)
                (deferred if built is not None else out).append(built if built is not None else op)
        if deferred:
            out.append(Comment(CONCURRENT_NOTE))
            out.extend(deferred)
        return out

    def _schema(self, schema: str | None):
        from dbkit.migrate._autogen_render import Code

        return Code("schema") if schema == self.schema else schema

    # ---- a new table: RLS, policies, grants
    def protect(self, op) -> list:
        """RLS and policies when the table is owned per tenant/user (the model's owner column), then the
        role model's grants."""
        from sqlalchemy import Column

        from dbkit.migrate._autogen_render import Code, Comment, pair

        table = op.table_name
        columns = {c.name: c for c in op.columns if isinstance(c, Column)}
        schema = self._schema(op.schema)
        out: list = []
        if self.claims.uses_rls and (op.schema, table) in self.shared:
            out.append(Comment(f"dbkit: {table} is a shared table ([tool.dbkit.rls] shared_tables): no row-level "
                               "security;\nevery tenant reads it, the role model grants the application SELECT only"))
        elif self.claims.uses_rls:
            owner, column = self.owner_column(table)
            if column in columns:
                match = f"{_ident(column)} = {self._predicate(owner, table, columns[column])}"
                out.append(pair("enable_rls", [table], {"schema": schema}, "disable_rls"))
                read_only = table in self.roles.read_only_tables
                for command, (roles, using, check) in POLICIES.items():
                    if read_only and command != "SELECT":
                        continue
                    name = f"{table}_{owner}_{command.lower()}"
                    kwargs: dict[str, Any] = dict(schema=schema, command=command, roles=Code(roles))
                    if using:
                        kwargs["using"] = match
                    if check:
                        kwargs["with_check"] = match
                    out.append(pair("create_policy", [name, table], kwargs, "drop_policy", [name, table],
                                    {"schema": schema}))
            else:
                out.append(Comment(f"dbkit: {table} has no {column} column, so no row-level security is generated\n"
                                   "for it: `dbkit rls audit` reports it until it has policies"))
        # the bypass and read-only kinds are optional: their grants go under `if settings.role_<kind>:`
        guards = {kind: None if kind == "enforce" else f"settings.role_{kind}" for kind in self.kinds}
        for kind in self.kinds:
            privileges = list(self.roles.table_privileges(kind, table))
            out.append(pair("grant", [privileges, table], dict(schema=schema, roles=Code(f"settings.role_{kind}")),
                            "revoke", guard=guards[kind]))
        for column in _serial_columns(columns.values()):  # INSERT draws from the column's sequence
            sequence = f"{table}_{column.name}_seq"
            if len(sequence.encode()) > 63:
                out.append(Comment(f"dbkit: grant USAGE on the sequence of {table}.{column.name} to the roles that "
                                   "insert (its name is too long to guess)"))
                continue
            for kind in self.kinds:
                if "INSERT" in self.roles.table_privileges(kind, table):
                    out.append(pair("grant", [["USAGE"], sequence], dict(
                        schema=schema, object_type="SEQUENCE", roles=Code(f"settings.role_{kind}")),
                        "revoke", guard=guards[kind]))
        return out

    def owner_column(self, table: str) -> tuple[str, str]:
        """(owner, column) of ``table``: ``[tool.dbkit.rls.tables.<table>]``, then ``[tool.dbkit.rls]``, then
        the RLS model's default owner and ``<owner>_id``."""
        tables = self.rls_config.get("tables")
        conf = tables.get(table) if isinstance(tables, Mapping) else None
        conf = conf if isinstance(conf, Mapping) else {}
        where = f"[tool.dbkit.rls.tables.{table}]" if "owner" in conf else "[tool.dbkit.rls]"
        owner = conf.get("owner") or self.rls_config.get("owner") or self.claims.default_owner
        if owner not in self.claims.owners():
            raise ConfigError(f"{where} owner", f"is {owner!r}, which the RLS model ({self.claims.describe()}) "
                              f"cannot express (it can: {', '.join(self.claims.owners())})", example='owner = "user"')
        key = f"{owner}_column"
        column = conf.get(key) or self.rls_config.get(key) or f"{owner}_id"
        if not isinstance(column, str):
            raise ConfigError(f"[tool.dbkit.rls] {key}", "is not a column name", example=f'{key} = "{owner}_id"')
        return owner, column

    def _predicate(self, owner: str, table: str, column) -> str:
        cast = _pg_cast(column.type)
        try:
            return self.claims.predicate(owner, cast)
        except ValueError as exc:
            raise UsageError(f"the models' {self.schema}.{table}.{column.name} ({cast}) cannot be compared with "
                             f"the RLS claim: {exc}",
                             hint="give the owner column a plain type (uuid, bigint, text)") from None

    # ---- indexes
    def index(self, op, new_table: bool):
        """``op.create_vector_index`` for an index on a pgvector column, ``op.create_index_concurrently``
        for another new index of an existing table; None: Alembic's own operation stays."""
        from alembic.operations import ops as alembic_ops

        if not isinstance(op, alembic_ops.CreateIndexOp) or op.index_name is None:
            return None
        return self._vector_index(op) or (None if new_table else self._concurrent_index(op))

    def _vector_index(self, op):
        from dbkit.migrate._autogen_render import pair
        from dbkit.migrate._ops_common import VECTOR_METHODS

        kw = dict(op.kw)
        using = kw.get("postgresql_using")
        if len(op.columns) != 1 or using not in VECTOR_METHODS:
            return None
        if set(kw) - {"postgresql_using", "postgresql_ops", "postgresql_with"}:
            return None
        column = self._column(op, op.columns[0])
        kind = type(getattr(column, "type", None))
        if column is None or not kind.__module__.startswith("pgvector.") or kind.__name__ not in VECTOR_DEFAULT_OPS:
            return None
        name, schema = str(op.index_name), self._schema(op.schema)
        kwargs: dict[str, Any] = dict(schema=schema, method=using,
                                      ops=(kw.get("postgresql_ops") or {}).get(column.name)
                                      or VECTOR_DEFAULT_OPS[kind.__name__])
        if kw.get("postgresql_with"):
            kwargs["with_"] = dict(kw["postgresql_with"])
        kwargs["index_name"] = name
        return pair("create_vector_index", [op.table_name, column.name], kwargs, "drop_index_concurrently",
                    [name], {"schema": schema})

    def _concurrent_index(self, op):
        from sqlalchemy import Column
        from sqlalchemy.sql.elements import TextClause

        from dbkit.migrate._autogen_render import pair

        kw = dict(op.kw)
        if set(kw) - {"postgresql_using", "postgresql_ops", "postgresql_with", "postgresql_where"}:
            return None
        columns = []
        for col in op.columns:
            if isinstance(col, Column) and col.name.isidentifier():
                columns.append(col.name)
            elif isinstance(col, str) and col.isidentifier():
                columns.append(col)
            elif isinstance(col, TextClause):
                columns.append(col.text)
            else:
                return None
        where = kw.get("postgresql_where")
        if where is not None and not isinstance(where, (str, TextClause)):
            return None
        name, schema = str(op.index_name), self._schema(op.schema)
        kwargs: dict[str, Any] = dict(schema=schema)
        if op.unique:
            kwargs["unique"] = True
        for arg, key in (("using", "postgresql_using"), ("ops", "postgresql_ops"), ("with_", "postgresql_with")):
            if kw.get(key):
                kwargs[arg] = kw[key] if arg == "using" else dict(kw[key])
        if where is not None:
            kwargs["where"] = where.text if isinstance(where, TextClause) else where
        return pair("create_index_concurrently", [name, op.table_name, columns], kwargs,
                    "drop_index_concurrently", [name], {"schema": schema})

    def _column(self, op, expr):
        """The model's Column behind an index expression (a Column, or a name looked up in the models)."""
        from sqlalchemy import Column

        if isinstance(expr, Column):
            return expr
        if not isinstance(expr, str):
            return None
        metadata = self.context.opts.get("target_metadata")
        tables = [table for meta in (metadata if isinstance(metadata, (list, tuple)) else [metadata])
                  if meta is not None for table in meta.tables.values()]
        return next((table.c[expr] for table in tables
                     if table.name == op.table_name and table.schema in (op.schema, None) and expr in table.c), None)


def _serial_columns(columns) -> list:
    """The model columns PostgreSQL creates as serial (a sequence of their own, named <table>_<column>_seq):
    the table's autoincrement column without an identity, a default or a server default."""
    return [column for column in columns if getattr(getattr(column, "table", None), "autoincrement_column", None)
            is column and column.identity is None and column.default is None and column.server_default is None]


def _ident(name: str) -> str:
    """``name`` as PostgreSQL reads it (quoted when it must be: capitals, reserved words such as user)."""
    from sqlalchemy.dialects import postgresql

    from dbkit.migrate._ops_common import quote_name

    return quote_name(postgresql.dialect(), name)


def _pg_cast(type_) -> str | None:
    """The SQL type a policy casts the claim to for a column of ``type_`` (None: text)."""
    from sqlalchemy.dialects import postgresql

    sql = type_.compile(dialect=postgresql.dialect()).lower()
    base = re.sub(r"\([^)]*\)", "", sql).strip()
    return None if base in _TEXT_TYPES else base
