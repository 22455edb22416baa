"""The functions' part of ``dbkit rls audit``: SECURITY DEFINER functions that read RLS tables unfiltered,
LEAKPROOF functions the planner may run before the policies, functions of RLS tables a login role can replace, and
triggers of RLS tables that NOTIFY (see :mod:`dbkit.rls._audit` for the finding codes)."""

from __future__ import annotations

import re

from dbkit._urls import few
from dbkit.rls._audit import Finding

# The SECURITY DEFINER functions of every schema (not an extension's): each runs as its owner.
_DEFINERS_CTE = """
definers AS (
  SELECT p.oid, p.proname, p.proowner, p.proacl, p.pronamespace, n.nspname,
         CASE WHEN p.prosqlbody IS NULL THEN p.prosrc ELSE pg_get_function_sqlbody(p.oid) END AS body
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.prosecdef AND p.prokind IN ('f', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
)"""

# Those a login role may call (not as the owner's member), with the RLS tables their owner reads unfiltered:
# every one for a superuser or BYPASSRLS owner, the unforced ones it owns otherwise.
_DEFINERS_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s)),
rls AS (SELECT c.relname, format('%%I.%%I', n.nspname, c.relname) AS name, n.nspname, c.relforcerowsecurity,
               c.relowner
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relrowsecurity AND c.relkind IN ('r', 'p')),
""" + _DEFINERS_CTE + """
SELECT p.nspname, format('%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid)),
       format('%%I.%%I(%%s)', p.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       o.rolname, o.rolsuper OR o.rolbypassrls, p.body, l.rolname,
       ARRAY(SELECT a.grantee = 0 FROM aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a
             WHERE a.privilege_type = 'EXECUTE' AND (a.grantee = 0 OR pg_has_role(l.oid, a.grantee, 'MEMBER'))),
       ARRAY(SELECT ARRAY[r.relname, r.name, r.nspname] FROM rls r
             WHERE o.rolsuper OR o.rolbypassrls
                OR (NOT r.relforcerowsecurity AND pg_has_role(o.oid, r.relowner, 'USAGE'))
             ORDER BY r.name)
FROM definers p JOIN pg_roles o ON o.oid = p.proowner CROSS JOIN logins l
WHERE has_function_privilege(l.oid, p.oid, 'EXECUTE') AND has_schema_privilege(l.oid, p.pronamespace, 'USAGE')
  AND NOT pg_has_role(l.oid, p.proowner, 'MEMBER')
ORDER BY 1, 2, 7
"""

_DYNAMIC = re.compile(r"\bEXECUTE\b", re.IGNORECASE)


def definer_findings(conn, logins: list[int], shared: frozenset[tuple[str, str]]) -> tuple[int, list[Finding]]:
    """``(SECURITY DEFINER functions checked, findings)``: those that read RLS tables as an owner the policies do
    not filter, so that whoever may call one reads (or changes) every tenant's rows through it.  A table counts
    as read when its name is in the function's source; a superuser or BYPASSRLS owner's dynamic SQL (EXECUTE)
    counts as reading any."""
    checked = conn.execute("WITH " + _DEFINERS_CTE + " SELECT count(*) FROM definers").fetchone()[0]
    if not logins or not checked:
        return checked, []
    findings = []
    for schema, function, qualified, owner, bypass, body, role, grants, tables in conn.execute(
            _DEFINERS_SQL, {"logins": logins}):
        read = [name for relname, name, nspname in tables if (nspname, relname) not in shared and re.search(
            rf'(?<![\w$"]){re.escape(relname)}(?![\w$"])|"{re.escape(relname)}"', body, re.IGNORECASE)]
        dynamic = bypass and _DYNAMIC.search(body) is not None
        if not read and not dynamic:
            continue
        why = "a superuser or BYPASSRLS role" if bypass else "their owner, with row-level security not forced"
        what = f"reads {', '.join(read[:3])}{f' and {len(read) - 3} more' if len(read) > 3 else ''}" if read \
            else "runs SQL built at run time (EXECUTE)"
        grantee = ", ".join((["PUBLIC"] if any(grants) else []) + ([role] if not all(grants) else []))
        findings.append(Finding(
            "definer_bypasses_rls", schema, function,
            f"{role} can execute this SECURITY DEFINER function, which {what} as {owner}, {why}: row-level "
            "security does not filter what it reads, so it can return or change every tenant's rows",
            f"ALTER FUNCTION {qualified} SECURITY INVOKER, or make its owner a role the policies apply to (the "
            f"owner role, with FORCE ROW LEVEL SECURITY), or REVOKE EXECUTE ON FUNCTION {qualified} FROM {grantee}",
            role=role))
    return checked, findings


# Triggers of RLS tables whose function sends NOTIFY: a notification reaches every session that listens on the
# channel, whatever its role and claims.
_NOTIFY_TRIGGERS_SQL = """
SELECT n.nspname, c.relname, t.tgname, format('%I.%I', pn.nspname, p.proname), p.prosrc
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND c.relrowsecurity AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""
_NOTIFY = re.compile(r"\bpg_notify\s*\(|\bNOTIFY\s", re.IGNORECASE)
# a bare wake-up carries nothing of a row: pg_notify('channel', '') or NOTIFY channel;
_BARE_NOTIFY = re.compile(r"\bpg_notify\s*\(\s*'[^']*'\s*,\s*''\s*\)|\bNOTIFY\s+\w+\s*(;|$)",
                          re.IGNORECASE | re.MULTILINE)


def notify_findings(conn) -> list[Finding]:
    """Triggers of RLS tables that send a payload with NOTIFY (LISTEN needs no privilege: every role that can
    connect may listen, the application's own role included)."""
    findings = []
    for schema, table, trigger, function, body in conn.execute(_NOTIFY_TRIGGERS_SQL):
        if len(_NOTIFY.findall(body)) <= len(_BARE_NOTIFY.findall(body)):
            continue
        findings.append(Finding(
            "notify_from_rls_table", schema, table,
            f"trigger {trigger} runs {function}, which sends a NOTIFY payload: PostgreSQL delivers it to every "
            "session that listens on the channel, whatever its role and claims, so what it carries of the rows "
            "(their ids at least) reaches every tenant's sessions",
            "send a bare wake-up (pg_notify('channel', '')) and let the listener re-read through RLS, or keep the "
            "payload free of tenant data"))
    return findings


# LEAKPROOF functions of the database (not pg_catalog's or an extension's) that a non-bypass login role may run.
_LEAKPROOF_SQL = """
SELECT n.nspname, format('%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid)),
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       ARRAY(SELECT l.rolname FROM pg_roles l WHERE l.oid = ANY(%(logins)s)
             AND has_function_privilege(l.oid, p.oid, 'EXECUTE') ORDER BY 1)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proleakproof AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""


def leakproof_findings(conn, logins: list[int]) -> list[Finding]:
    """LEAKPROOF lets the planner run a function on rows before the policies filter them (so that an index can
    serve it): whatever the function lets out of its arguments (an error, a notice) shows other tenants' values."""
    return [Finding(
        "leakproof_function", schema, function,
        f"{qualified} is LEAKPROOF: the planner may run it on rows before row-level security filters them, so what "
        f"it lets out of its arguments (an error, a notice, a log line) shows other tenants' values to "
        f"{', '.join(roles)}",
        f"ALTER FUNCTION {qualified} NOT LEAKPROOF (as a superuser), unless it can neither fail nor report on its "
        "arguments") for schema, function, qualified, roles in conn.execute(_LEAKPROOF_SQL, {"logins": logins})
        if roles]


# What of a table with RLS calls a function: its policies, triggers, constraints, column defaults and generated
# columns, index expressions; through an operator, the operator's function.  Each decides which rows a tenant sees or
# runs on every tenant's rows, and whoever owns the function can replace it (CREATE OR REPLACE FUNCTION) without any
# privilege on the table.
_CALLS_CTE = """
users AS (
  SELECT p.polrelid AS relid, format('policy %%I', p.polname) AS what, d.refclassid, d.refobjid
  FROM pg_policy p JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
  UNION ALL
  SELECT t.tgrelid, format('trigger %%I', t.tgname), 'pg_proc'::regclass, t.tgfoid
  FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
  SELECT c.conrelid, format('constraint %%I', c.conname), d.refclassid, d.refobjid
  FROM pg_constraint c JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = c.oid
  WHERE c.conrelid <> 0
  UNION ALL
  SELECT a.adrelid, format('the default of column %%I', att.attname), d.refclassid, d.refobjid
  FROM pg_attrdef a JOIN pg_attribute att ON att.attrelid = a.adrelid AND att.attnum = a.adnum
  JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid
  UNION ALL
  SELECT i.indrelid, format('index %%I', ic.relname), d.refclassid, d.refobjid
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
),
calls AS (
  SELECT relid, what, refobjid AS fn FROM users WHERE refclassid = 'pg_proc'::regclass
  UNION
  SELECT u.relid, u.what, o.oprcode FROM users u JOIN pg_operator o ON o.oid = u.refobjid
  WHERE u.refclassid = 'pg_operator'::regclass
)"""
_FUNCTION = "format('%%I.%%I(%%s)', pn.nspname, p.proname, pg_get_function_identity_arguments(p.oid))"
_REPLACEABLE_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s)),
rls AS (SELECT c.oid, n.nspname, c.relname, c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relrowsecurity AND c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
""" + _CALLS_CTE + """
SELECT r.nspname, r.relname, c.what, pn.nspname,
       format('%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid)), """ + _FUNCTION + """,
       pg_get_userbyid(p.proowner), pg_get_userbyid(r.relowner), l.rolname
FROM calls c JOIN rls r ON r.oid = c.relid JOIN pg_proc p ON p.oid = c.fn
JOIN pg_namespace pn ON pn.oid = p.pronamespace
JOIN logins l ON pg_has_role(l.oid, p.proowner, 'MEMBER')
WHERE NOT pg_has_role(l.oid, r.relowner, 'MEMBER')
ORDER BY 6, 9, 1, 2, 3
"""
_CALLED_SQL = "WITH " + _CALLS_CTE + " SELECT DISTINCT " + _FUNCTION + """
FROM calls c JOIN pg_proc p ON p.oid = c.fn JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE c.relid = %(rel)s::regclass AND pn.nspname <> 'pg_catalog' ORDER BY 1"""


def called_functions(conn, regclass: str) -> list[str]:
    """``schema.name(argument types)`` of the functions (outside ``pg_catalog``) that a table's policies, triggers,
    constraints, defaults, generated columns and indexes call, directly or through an operator."""
    return [r[0] for r in conn.execute(_CALLED_SQL, {"rel": regclass})]


def replaceable_findings(conn, logins: list[int]) -> list[Finding]:
    """Functions that tables with RLS call, owned by a non-bypass login role (or a role it is a member of) that
    does not hold the table owner's rights: the role replaces the function, and with it which rows the policy lets
    through or what the trigger, default or constraint does with every tenant's rows (as whoever writes them),
    without any privilege on the table; a trigger created while the role held TRIGGER stays after the REVOKE.
    One finding per function and role (``target``: the function), naming every use.  Functions that those
    functions call are not followed (PL/pgSQL records no dependencies)."""
    uses: dict[tuple, list[str]] = {}
    for schema, table, what, fschema, fname, function, owner, table_owner, role in conn.execute(
            _REPLACEABLE_SQL, {"logins": logins}):
        uses.setdefault((fschema, fname, function, owner, role, table_owner), []).append(f"{what} of {schema}.{table}")
    findings = []
    for (fschema, fname, function, owner, role, table_owner), calls in uses.items():
        policy = [c.startswith("policy ") for c in calls]
        effects = [e for e, hit in (("which rows every tenant sees", any(policy)),
                                    ("what is done with every tenant's rows, as whoever writes them",
                                     not all(policy))) if hit]
        findings.append(Finding(
            "replaceable_function", fschema, fname,
            f"{few(calls, sep=', ')} call{'s' if len(calls) == 1 else ''} {function}, owned by {owner}: {role} can "
            f"replace that function (CREATE OR REPLACE FUNCTION) and with it {' and '.join(effects)}",
            f"ALTER FUNCTION {function} OWNER TO {table_owner}", role=role))
    return findings
