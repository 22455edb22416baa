"""Tenant-scoped views: the isolation mode for what cannot have row-level security (a hypertable with
compression, a continuous aggregate).  See ``op.create_scoped_view``.

A view counts as scoped only when it is *exactly* what the operation builds from the configured RLS
model: ``security_barrier``, ``SELECT *`` from one relation, ``WHERE <owner column> = <the model's
predicate>``, and ``WITH CASCADED CHECK OPTION`` when it can be written through.  The comparison is
PostgreSQL's own: a temporary view is built the same way in a rolled-back transaction and the two
``pg_get_viewdef`` texts must be equal, so a view with a looser, different or extra filter is not one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dbkit.roles._sql import quote_ident as _quote

_CANDIDATES_SQL = """
SELECT c.oid, n.nspname, c.relname,
       COALESCE(c.reloptions && ARRAY['check_option=cascaded', 'check_option=local'], false) AS checked,
       pg_relation_is_updatable(c.oid, false) <> 0 AS updatable,
       (SELECT array_agg(DISTINCT d.refobjid) FROM pg_rewrite r JOIN pg_depend d
          ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
        WHERE r.ev_class = c.oid AND d.refobjid <> c.oid) AS sources
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND c.reloptions && ARRAY['security_barrier=true', 'security_barrier=on', 'security_barrier=1',
                                               'security_barrier=yes']
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 2, 3
"""


@dataclass(frozen=True)
class ScopedView:
    """A view built by ``op.create_scoped_view`` from the configured model."""

    schema: str
    name: str
    source_schema: str
    source: str
    column: str
    owner: str  # "tenant" | "user"
    updatable: bool  # has WITH CHECK OPTION (a view that can be written through must have it)


def owner_and_column(settings, table: str, default_owner: str | None = None) -> tuple[str, str]:
    """Whose rows ``table`` holds ("tenant" or "user") and in which column: ``[tool.dbkit.rls.tables.<table>]``,
    then ``[tool.dbkit.rls]``, then the RLS model's default owner and ``<owner>_id``."""
    from dbkit.errors import ConfigError
    from dbkit.rls._claims import claims

    rls: Mapping[str, Any] = settings.rls or {}
    conf = rls.get("tables", {}).get(table, {})
    model = claims(settings)
    owner = conf.get("owner") or default_owner or rls.get("owner") or model.default_owner
    if owner not in model.owners():
        raise ConfigError("[tool.dbkit.rls] owner", f"is {owner!r}, which the RLS model ({model.describe()}) "
                          f"cannot express (it can: {', '.join(model.owners()) or 'nothing'})",
                          example='owner = "user"')
    column = conf.get(f"{owner}_column") or rls.get(f"{owner}_column") or f"{owner}_id"
    return owner, column


def shared_tables(settings) -> frozenset[tuple[str, str]]:
    """``[tool.dbkit.rls] shared_tables``: the (schema, table) of the tables that hold no tenant's rows (plans,
    countries), which every tenant may read and none may change; a bare name is in ``DBKIT_SCHEMA``."""
    from dbkit.errors import ConfigError

    value = (getattr(settings, "rls", None) or {}).get("shared_tables", [])
    if not isinstance(value, list) or not all(isinstance(t, str) and re.fullmatch(r"[^.]+(\.[^.]+)?", t)
                                              for t in value):
        raise ConfigError("[tool.dbkit.rls] shared_tables", "is not a list of table names (table or schema.table)",
                          example='shared_tables = ["plans", "reference.countries"]')
    return frozenset(tuple(t.split(".")) if "." in t else (settings.schema, t) for t in value)


#: the tables of functions reviewed as safe, with an example entry each (for the error that names a bad one)
REVIEWED_FUNCTIONS = {
    "definer_functions": '"private.user_teams(user_id uuid)" = "returns the teams of the claimed user only"',
    "leakproof_functions": '"app.same_tenant(uuid, uuid)" = "compares two uuids: cannot fail, reports nothing"',
    "replaceable_functions": '"auth.uid()" = "owned by our platform auth service, trusted like the table owner"',
    "search_path_functions": '"extensions.on_ddl()" = "an event trigger function: no role can call it"',
}


def reviewed_functions(settings, table: str) -> dict[str, str]:
    """``[tool.dbkit.rls.<table>]``: functions reviewed as safe, named as ``dbkit rls audit`` names them, each with
    the reason: ``definer_functions`` (SECURITY DEFINER functions that filter by the claims themselves) or
    ``leakproof_functions`` (LEAKPROOF functions that can neither fail nor report on their arguments),
    ``replaceable_functions`` (functions RLS tables call whose owner the project trusts like the table owner) or
    ``search_path_functions`` (SECURITY DEFINER functions a platform owns whose lookups cannot be pinned)."""
    from dbkit.errors import ConfigError

    value = (getattr(settings, "rls", None) or {}).get(table, {})
    if not isinstance(value, Mapping) or not all(isinstance(r, str) and r.strip() for r in value.values()):
        raise ConfigError(f"[tool.dbkit.rls.{table}]", "is not a table of function = \"reason\" (every "
                          "function needs the reason it is safe)", example=REVIEWED_FUNCTIONS[table])
    return dict(value)


def scoped_view_sql(quote, view: str, source: str, schema: str | None, column: str, predicate: str,
                    updatable: bool, source_schema: str | None = None) -> str:
    """The one definition of a scoped view (the operation and the audit's comparison build it here)."""
    def name(n: str, s: str | None) -> str:
        return f"{quote(s)}.{quote(n)}" if s else quote(n)

    stmt = (f"CREATE VIEW {name(view, schema)} WITH (security_barrier) AS SELECT * FROM "
            f"{name(source, source_schema or schema)} WHERE {quote(column)} = {predicate}")
    return stmt + (" WITH CASCADED CHECK OPTION" if updatable else "")


def scoped_views(conn, settings) -> list[ScopedView]:
    """Every view in the database that is exactly a scoped view of the configured model."""
    from psycopg import errors

    from dbkit.rls._claims import claims

    model = claims(settings)
    if not model.uses_rls:
        return []
    found = []
    for oid, schema, name, checked, updatable, sources in conn.execute(_CANDIDATES_SQL).fetchall():
        if not sources or len(sources) != 1 or (updatable and not checked):  # writable: the check option is a must
            continue
        src_schema, src = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                                       "ON n.oid = c.relnamespace WHERE c.oid = %s", (sources[0],)).fetchone()
        actual = conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0]
        for owner in model.owners():
            try:
                owner, column = owner_and_column(settings, name, owner)
            except Exception:  # noqa: BLE001 - a config the model cannot express: not this owner
                continue
            typ = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s AND attname = %s "
                "AND NOT attisdropped", (sources[0], column)).fetchone()
            if typ is None:
                continue
            try:
                predicate = model.predicate(owner, typ[0])
            except ValueError:
                continue
            probe = scoped_view_sql(_quote, "dbkit_scoped_probe", src, None, column, predicate, checked,
                                    source_schema=src_schema).replace("CREATE VIEW ", "CREATE TEMP VIEW ", 1)
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(probe)
                    expected = conn.execute("SELECT pg_get_viewdef('pg_temp.dbkit_scoped_probe'::regclass)"
                                            ).fetchone()[0]
            except errors.Error:
                continue
            if expected == actual:
                found.append(ScopedView(schema, name, src_schema, src, column, owner, bool(checked)))
                break
    return found
