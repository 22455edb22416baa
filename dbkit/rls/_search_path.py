"""``definer_search_path`` of ``dbkit rls audit``: SECURITY DEFINER functions whose names a caller can redirect.

A function without ``SET search_path`` looks names up in the caller's search_path, and even with one PostgreSQL
searches ``pg_temp`` first for tables and views unless the setting lists it last.  So a login role that may
create temporary objects (every role may, by default) puts a view of its own in place of a table the function
names without a schema: a ``security_invoker`` view then reads as the function's owner, every tenant's rows
when row-level security does not filter that owner.  A role that may create objects in a schema can do the same
with a function or an operator, which then runs as the owner.  PL/pgSQL and SQL-language functions are read with
PostgreSQL's own parser (libpg_query, through pglast); SQL-standard bodies (``BEGIN ATOMIC``) are bound when
created and are safe; names in dynamic SQL (``EXECUTE``) are not seen.
"""

from __future__ import annotations

from dbkit.rls._audit import Finding
from dbkit.rls._functions import _DEFINERS_CTE

_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s)),
rls AS (SELECT c.relowner, c.relforcerowsecurity FROM pg_class c WHERE c.relrowsecurity AND c.relkind IN ('r', 'p')),
""" + _DEFINERS_CTE + """
SELECT p.nspname, format('%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid)),
       format('%%I.%%I(%%s)', p.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), o.rolname, l.rolname,
       lg.lanname, pp.prosrc, CASE WHEN lg.lanname = 'plpgsql' THEN pg_get_functiondef(p.oid) END,
       (SELECT option_value FROM pg_options_to_table(pp.proconfig) WHERE option_name = 'search_path'),
       ARRAY(SELECT n.nspname FROM pg_namespace n WHERE has_schema_privilege(l.oid, n.oid, 'CREATE')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
             ORDER BY 1),
       has_database_privilege(l.oid, current_database(), 'TEMP'),
       o.rolsuper OR o.rolbypassrls
         OR EXISTS (SELECT FROM rls r WHERE NOT r.relforcerowsecurity AND pg_has_role(o.oid, r.relowner, 'USAGE')),
       o.rolsuper OR o.rolbypassrls OR EXISTS (SELECT FROM rls r WHERE pg_has_role(o.oid, r.relowner, 'USAGE'))
FROM definers p JOIN pg_proc pp ON pp.oid = p.oid JOIN pg_language lg ON lg.oid = pp.prolang
JOIN pg_roles o ON o.oid = p.proowner CROSS JOIN logins l
WHERE pp.prosqlbody IS NULL AND lg.lanname IN ('sql', 'plpgsql')
  AND has_function_privilege(l.oid, p.oid, 'EXECUTE') AND has_schema_privilege(l.oid, p.pronamespace, 'USAGE')
  AND NOT pg_has_role(l.oid, p.proowner, 'MEMBER')
  AND NOT EXISTS (SELECT FROM rls r WHERE pg_has_role(l.oid, r.relowner, 'USAGE'))  -- trusted like the owner
ORDER BY 1, 2, 5
"""


def _schemas(setting: str | None) -> list[str] | None:
    """``'app, "$user", pg_temp'`` -> ``['app', '$user', 'pg_temp']``; None when the function sets none."""
    if setting is None:
        return None
    return [part.strip().strip('"') for part in setting.split(",") if part.strip().strip('"')]


def _queries(tree):
    """The SQL of every expression and statement of a PL/pgSQL function (pglast's JSON of its parse tree)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "PLpgSQL_expr":
                yield value.get("query", ""), value.get("parseMode", 0)
            else:
                yield from _queries(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _queries(value)


def unqualified_relations(language: str, source: str, definition: str | None) -> set[str] | None:
    """Tables and views a SQL or PL/pgSQL function names without a schema (common table expressions aside);
    None when its source cannot be parsed."""
    from pglast import parse_plpgsql, parse_sql
    from pglast.parser import ParseError
    from pglast.visitors import Visitor

    class Names(Visitor):
        def __init__(self):
            self.relations: set[str] = set()
            self.ctes: set[str] = set()

        def visit_RangeVar(self, ancestors, node):
            if node.schemaname is None:
                self.relations.add(node.relname)

        def visit_CommonTableExpr(self, ancestors, node):
            self.ctes.add(node.ctename)

    names = Names()
    try:
        if language == "sql":
            texts = [source]
        else:  # parse modes: 0 a statement, 2 an expression, 3-5 an assignment (target := expression)
            texts = [q if mode == 0 else "SELECT " + (q.split(":=", 1)[-1] if mode >= 3 else q)
                     for q, mode in _queries(parse_plpgsql(definition))]
        for text in texts:
            names(parse_sql(text))
    except ParseError:
        return None
    return names.relations - names.ctes


def search_path_findings(conn, logins: list[int]) -> list[Finding]:
    """SECURITY DEFINER functions a non-bypass login role may call whose lookups it can redirect (see the
    module's docstring): a view of its own read as an owner row-level security does not filter, or a function
    or operator of its own run as an owner that could turn row-level security off."""
    findings = []
    for (schema, function, qualified, owner, role, language, source, definition, setting, creates, temp,
         unfiltered, powerful) in conn.execute(_SQL, {"logins": logins}):
        path = _schemas(setting)
        ways = []
        if powerful and creates and (path is None or set(path) & set(creates)):
            ways.append(f"{role} may create objects in schema {creates[0]}: a function or operator of its own that "
                        f"this function calls without a schema (its search_path set to {creates[0]} first) runs "
                        f"as {owner}, who {'bypasses' if unfiltered else 'could turn off'} row-level security")
        if temp and unfiltered and not (path and path[-1] == "pg_temp"):
            names = unqualified_relations(language, source, definition)
            if names is None or names:
                shown = ", ".join(sorted(names)[:3]) if names else "tables (its source could not be parsed)"
                ways.append(f"it names {shown} without a schema, and {role} may create a temporary view of that "
                            "name, which PostgreSQL searches first: the function reads what the view shows as "
                            f"{owner}, whom row-level security does not filter (a security_invoker view sees every "
                            "tenant's rows)")
        if ways:
            where = "sets no search_path" if path is None else f"sets search_path = {setting}"
            findings.append(Finding(
                "definer_search_path", schema, function,
                f"{qualified} is SECURITY DEFINER and {where}: " + "; ".join(ways),
                f"ALTER FUNCTION {qualified} SET search_path = {schema}, pg_temp (schemas only trusted roles may "
                "create in, pg_temp last), or qualify every name it uses with its schema", role=role))
    return findings
