"""The every-schema sweep of ``dbkit rls audit``: every relation in every schema against every
non-bypass login role (see :mod:`dbkit.rls._audit` for the finding codes; the functions' checks are in
:mod:`dbkit.rls._functions`)."""

from __future__ import annotations

from collections.abc import Sequence

from dbkit.rls._audit import Finding
from dbkit.rls._functions import definer_findings, leakproof_findings, replaceable_findings
from dbkit.rls._isolation import CHUNK_SCHEMA, timescaledb_installed
from dbkit.rls._search_path import search_path_findings
from dbkit.roles._model import DML

# ----------------------------------------------------------------------------- every relation, every login role

_LOGINS_SQL = """
SELECT r.oid, r.rolname FROM pg_roles r
WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls
  AND NOT (r.rolcreaterole AND current_setting('server_version_num')::int < 160000)  -- grants itself any role
  AND NOT EXISTS (SELECT FROM pg_roles b WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> r.oid
                  AND pg_has_role(r.oid, b.oid, 'MEMBER'))
ORDER BY r.rolname
"""

_RELS_CTE = """
rels AS (
  SELECT c.oid, c.relnamespace, n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relowner, c.relacl,
         c.relispartition,
         COALESCE(c.reloptions && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1',
                                        'security_invoker=yes'], false) AS invoker
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
    AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
)"""

# One row per (relation, login role) where the role holds SELECT/INSERT/UPDATE/DELETE, or TRUNCATE/REFERENCES/
# TRIGGER (which row-level security does not filter), on it: table or column privileges; its own, through any role
# it is a member of, or PUBLIC's; without the owner's rights.
_REACH_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s)),
""" + _RELS_CTE + """,
grants AS (
  SELECT r.oid AS relid, a.grantee, a.privilege_type
  FROM rels r, aclexplode(COALESCE(r.relacl, acldefault('r', r.relowner))) a
  WHERE a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')
  UNION
  SELECT r.oid, a.grantee, a.privilege_type
  FROM rels r JOIN pg_attribute att ON att.attrelid = r.oid AND att.attnum > 0 AND NOT att.attisdropped
       AND att.attacl IS NOT NULL, aclexplode(att.attacl) a
  WHERE a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
)
SELECT r.nspname, r.relname, r.relkind, r.relrowsecurity, r.invoker, l.rolname,
       array_agg(DISTINCT g.privilege_type) AS privileges,
       bool_and(g.grantee = 0) AS only_public,
       EXISTS (SELECT FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
               WHERE n.oid = r.relnamespace AND a.privilege_type = 'USAGE'
                 AND (a.grantee = 0 OR pg_has_role(l.oid, a.grantee, 'MEMBER'))) AS schema_usage,
       has_table_privilege(l.oid, 'pg_catalog.pg_stats', 'SELECT') AS reads_stats,
       pg_get_userbyid(r.relowner) AS owner,
       (SELECT format('%%I.%%I', pn.nspname, p.relname) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE i.inhrelid = r.oid AND NOT r.relispartition LIMIT 1) AS inherits_from,
       array_agg(DISTINCT g.privilege_type) FILTER (WHERE g.grantee = 0) AS public_privileges
FROM grants g JOIN rels r ON r.oid = g.relid
JOIN logins l ON g.grantee = 0 OR pg_has_role(l.oid, g.grantee, 'MEMBER')
WHERE NOT pg_has_role(l.oid, r.relowner, 'MEMBER')
GROUP BY r.oid, r.nspname, r.relname, r.relkind, r.relrowsecurity, r.invoker, r.relnamespace, r.relowner,
         r.relispartition, l.oid, l.rolname
ORDER BY 1, 2, 6
"""

_COUNT_RELS_SQL = "WITH " + _RELS_CTE + " SELECT count(*) FROM rels"

#: table privileges whose statements row-level security does not filter, and what each opens
_UNFILTERED = {
    "TRUNCATE": "TRUNCATE empties it, every tenant's rows, without looking at a policy",
    "REFERENCES": "a foreign key from a table of its own is checked without row-level security: it tells which "
                  "keys other tenants have, and blocks their deletes",
    "TRIGGER": "a trigger it creates on it runs on every tenant's writes, sees their rows and may change them",
}
_PRIVILEGES = DML + tuple(_UNFILTERED)

_KIND_WORDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "f": "foreign table", "v": "view"}


def reachability(conn, scoped: frozenset[tuple[str, str]] = frozenset(),
                 shared: frozenset[tuple[str, str]] = frozenset()) -> tuple[tuple[str, ...], int, int, list[Finding]]:
    """``(login roles checked, relations checked, SECURITY DEFINER functions checked, findings)`` of the
    every-schema sweep.  ``scoped``: the (schema, view) of the tenant-scoped views (:mod:`dbkit.rls._scoped`),
    which filter by the claims; ``shared``: the (schema, table) of the shared tables, which hold no tenant's rows
    (reading them is no finding, changing them is)."""
    logins = conn.execute(_LOGINS_SQL).fetchall()
    relations = conn.execute(_COUNT_RELS_SQL).fetchone()[0]
    functions, findings = definer_findings(conn, [oid for oid, _ in logins], shared)
    if not logins:
        return (), relations, functions, findings
    findings += _all_data_findings(conn, [oid for oid, _ in logins])
    findings += leakproof_findings(conn, [oid for oid, _ in logins])
    findings += replaceable_findings(conn, [oid for oid, _ in logins])
    findings += search_path_findings(conn, [oid for oid, _ in logins])
    hypertables = {r[0] for r in conn.execute(
        "SELECT format('%I.%I', schema_name, table_name) FROM _timescaledb_catalog.hypertable")} \
        if timescaledb_installed(conn) else set()
    rows = conn.execute(_REACH_SQL, {"logins": [oid for oid, _ in logins]}).fetchall()
    # chunks of one hypertable, for one role and one finding code, are reported together
    groups: dict[tuple[str, str, str], list[tuple]] = {}
    for row in rows:
        schema, rel, kind, rls, invoker, role, privs, only_public, usage, stats, owner, parent, public = row
        privs = sorted(privs, key=_PRIVILEGES.index)
        if kind == "v":
            privs = [p for p in privs if p in DML]
            if privs and not invoker and usage and (schema, rel) not in scoped:
                findings.append(_view_finding(schema, rel, role, privs, only_public, owner))
            continue
        if rls:  # a table or partition whose policies apply when it is named directly, but not to every statement
            unfiltered = [p for p in privs if p in _UNFILTERED]
            if unfiltered and usage:
                findings.append(_unfiltered_finding(schema, rel, role, unfiltered, public or ()))
            continue
        if (schema, rel) in shared:
            writes = [p for p in privs if p not in ("SELECT", "REFERENCES")]
            if writes and usage:
                findings.append(_shared_finding(schema, rel, role, writes, public or ()))
            continue
        if usage:
            code = "reachable_without_rls"
        elif "SELECT" in privs and stats and kind in ("r", "p", "m"):
            code = "statistics_visible"
        else:
            continue
        if parent in hypertables:
            groups.setdefault((code, parent, role), []).append(row)
            continue
        findings.append(_relation_finding(code, schema, rel, kind, role, privs, only_public, None, 1))
    hyper = _hypertable_findings(conn, [oid for oid, _ in logins])
    covered = {(f.code, f"{f.schema}.{f.table}", f.role) for f in hyper}
    findings.extend(hyper)
    for (code, parent, role), members in groups.items():
        if code == "statistics_visible" and (code, parent, role) in covered:
            continue
        schema, rel, kind, *_ = members[0]
        privs = sorted({p for m in members for p in m[6]}, key=_PRIVILEGES.index)
        only_public = all(m[7] for m in members)
        findings.append(_relation_finding(code, schema, rel, kind, role, privs, only_public, parent, len(members)))
    return tuple(name for _, name in logins), relations, functions, findings


# Login roles that hold pg_read_all_data / pg_write_all_data: every relation and schema, whatever the grants.
_ALL_DATA_SQL = """
SELECT l.rolname, p.rolname FROM pg_roles l CROSS JOIN pg_roles p
WHERE l.oid = ANY(%(logins)s) AND p.rolname IN ('pg_read_all_data', 'pg_write_all_data')
  AND pg_has_role(l.oid, p.oid, 'MEMBER')
ORDER BY 1, 2
"""
_UNPROTECTED_SQL = "WITH " + _RELS_CTE + " SELECT count(*) FROM rels WHERE NOT relrowsecurity AND relkind <> 'v'"
_UNPROTECTED_CHUNKS_SQL = "WITH " + _RELS_CTE + """
SELECT count(*) FROM rels JOIN _timescaledb_catalog.chunk ch ON ch.schema_name = rels.nspname
  AND ch.table_name = rels.relname WHERE NOT rels.relrowsecurity"""


def _all_data_findings(conn, logins: list[int]) -> list[Finding]:
    """A role that holds PostgreSQL's pg_read_all_data (pg_write_all_data) reads (changes) every relation and may
    use every schema whatever their grants: row-level security still filters the tables that have it, not the
    others, TimescaleDB chunks in a schema no role may use included."""
    members = conn.execute(_ALL_DATA_SQL, {"logins": logins}).fetchall()
    unprotected = conn.execute(_UNPROTECTED_SQL).fetchone()[0] if members else 0
    if not unprotected:
        return []
    chunks = conn.execute(_UNPROTECTED_CHUNKS_SQL).fetchone()[0] if timescaledb_installed(conn) else 0
    of_them = f", {chunks} of them TimescaleDB chunks" if chunks else ""
    return [Finding(
        "all_data_role", None, None,
        f"{role} is a member of {predefined}: it may {'read' if predefined == 'pg_read_all_data' else 'change'} "
        f"every table and use every schema whatever their grants; row-level security still filters the tables "
        f"that have it, but not the {unprotected} relations without it{of_them}, which hold every tenant's rows",
        f"REVOKE {predefined} FROM {role} (or from the role it inherits it through), and grant it the tables it "
        "needs", role=role) for role, predefined in members]


def _view_finding(schema: str, view: str, role: str, privs: list[str], only_public: bool, owner: str) -> Finding:
    name = f"{schema}.{view}"
    return Finding(
        "view_bypasses_rls", schema, view,
        f"{role} can {'/'.join(privs)} through this view, which runs with the rights of its owner {owner} "
        "(no security_invoker): row-level security is checked as the owner, not as the caller",
        f"ALTER VIEW {name} SET (security_invoker = true), or REVOKE ALL ON {name} FROM "
        f"{'PUBLIC' if only_public else role}", role=role)


def _revokes(schema: str, rel: str, role: str, privs: list[str], public: Sequence[str]) -> str:
    """``REVOKE … FROM PUBLIC; REVOKE … FROM role``: PUBLIC's grants from PUBLIC, the others from the role."""
    return "; ".join(f"REVOKE {', '.join(granted)} ON {schema}.{rel} FROM {grantee}" for grantee, granted in (
        ("PUBLIC", [p for p in privs if p in public]), (role, [p for p in privs if p not in public])) if granted)


def _shared_finding(schema: str, rel: str, role: str, writes: list[str], public: Sequence[str]) -> Finding:
    return Finding(
        "reachable_without_rls", schema, rel,
        f"{role} can {'/'.join(writes)} this shared table ([tool.dbkit.rls] shared_tables), which has no row-level "
        "security: every tenant reads it, so one tenant's change reaches them all",
        f"{_revokes(schema, rel, role, writes, public)} (the role model grants only SELECT on a shared table: "
        "`dbkit roles check` lists what differs)", role=role)


def _unfiltered_finding(schema: str, rel: str, role: str, privs: list[str], public: Sequence[str]) -> Finding:
    return Finding(
        "privilege_bypasses_rls", schema, rel,
        f"{role} holds {', '.join(privs)} on this table, which row-level security does not filter: "
        + "; ".join(_UNFILTERED[p] for p in privs),
        f"{_revokes(schema, rel, role, privs, public)} (the application needs only {'/'.join(DML)}, which the "
        "policies filter)" + ("; drop the triggers it created" if "TRIGGER" in privs else ""), role=role)


def _relation_finding(code: str, schema: str, rel: str, kind: str, role: str, privs: list[str], only_public: bool,
                      hypertable: str | None, count: int) -> Finding:
    name = f"{schema}.{rel}"
    grantee = "PUBLIC" if only_public else role
    if hypertable is not None:
        what = f"a TimescaleDB chunk of {hypertable}" if count == 1 else \
            f"one of {count} TimescaleDB chunks of {hypertable} (all reachable the same way)"
        what += ": chunks do not inherit the hypertable's row-level security"
    else:
        what = f"a {_KIND_WORDS.get(kind, 'relation')} without row-level security"
        if kind == "m":
            what = "a materialized view: row-level security cannot apply to it"
    if code == "statistics_visible":
        message = (f"{role} holds SELECT on {what}; it cannot reach its rows, but pg_stats shows the most common "
                   "values and histograms of its columns, every tenant's")
        fix = ("run `dbkit roles apply` as a superuser (revokes SELECT on pg_stats from PUBLIC), or "
               f"REVOKE SELECT ON {name} FROM {grantee}")
        return Finding(code, schema, rel, message, fix, role=role)
    message = f"{role} can {'/'.join(privs)} {what}"
    if schema == CHUNK_SCHEMA:
        fix = f"REVOKE ALL ON SCHEMA {CHUNK_SCHEMA} FROM {grantee} (no application role may use it)"
    elif hypertable is not None:
        fix = (f"run `dbkit roles apply` as a superuser: the chunks of {hypertable} move to {CHUNK_SCHEMA}, a "
               "schema no application role may use, where TimescaleDB also creates the new ones")
    elif kind == "m":
        fix = (f"REVOKE ALL ON {name} FROM {grantee}; expose it through a view with security_invoker (or a "
               "tenant filter) instead")
    else:
        fix = (f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY with tenant policies, "
               f"or REVOKE ALL ON {name} FROM {grantee}")
    return Finding(code, schema, rel, message, fix, role=role)


# RLS-protected hypertables x login roles that hold a privilege on them: where new chunks go, and pg_stats.
_HYPERTABLES_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s))
SELECT h.schema_name, h.table_name, h.associated_schema_name, l.rolname,
       EXISTS (SELECT FROM pg_namespace an, aclexplode(COALESCE(an.nspacl, acldefault('n', an.nspowner))) a
               WHERE an.nspname = h.associated_schema_name AND a.privilege_type = 'USAGE'
                 AND (a.grantee = 0 OR pg_has_role(l.oid, a.grantee, 'MEMBER'))) AS chunk_schema_usage,
       has_table_privilege(l.oid, c.oid, 'SELECT') AND has_table_privilege(l.oid, 'pg_catalog.pg_stats', 'SELECT')
FROM _timescaledb_catalog.hypertable h
JOIN pg_namespace n ON n.nspname = h.schema_name
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name
CROSS JOIN logins l
WHERE c.relrowsecurity AND NOT pg_has_role(l.oid, c.relowner, 'MEMBER')
  AND has_table_privilege(l.oid, c.oid, 'SELECT,INSERT,UPDATE,DELETE')
ORDER BY 1, 2, 4
"""


def _hypertable_findings(conn, logins: list[int]) -> list[Finding]:
    """Paths that every chunk created later will open: they copy the hypertable's grants, not its RLS."""
    if not logins or not timescaledb_installed(conn):
        return []
    findings = []
    for schema, table, chunk_schema, role, usage, stats in conn.execute(_HYPERTABLES_SQL, {"logins": logins}):
        name = f"{schema}.{table}"
        if usage:
            findings.append(Finding(
                "chunks_exposed", schema, table,
                f"TimescaleDB creates the chunks of {name} in {chunk_schema}, where {role} may look them up; each "
                "chunk copies the hypertable's grants but not its row-level security",
                f"run `dbkit roles apply` as a superuser: new and existing chunks go to {CHUNK_SCHEMA}, a schema no "
                "application role may use", role=role))
        if stats:
            findings.append(Finding(
                "statistics_visible", schema, table,
                f"{role} holds SELECT on {name}, whose chunks copy that grant without row-level security, and may "
                "read pg_stats: the column statistics of every chunk show every tenant's values",
                "run `dbkit roles apply` as a superuser (revokes SELECT on pg_stats from PUBLIC)", role=role))
    return findings
