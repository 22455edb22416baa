"""``dbkit rls audit``: read the catalog and report what row-level security leaves open.

:func:`audit` does two sweeps and returns an :class:`AuditReport` of :class:`Finding`
objects.  Any finding, warn included, makes the report not :attr:`~AuditReport.clean`
(the CLI exits 1).

**Tables of the audited schemas** (``DBKIT_SCHEMA`` by default): every ordinary and
partitioned table must have RLS enabled and forced, with policies that do something.

**Every relation in every schema** (TimescaleDB's internal ones included; only
``pg_catalog``, ``information_schema`` and relations that belong to an extension are
skipped) against every *non-bypass login role*: a role that can log in and is not a
superuser, has no BYPASSRLS and cannot become such a role.  A relation such a role can
SELECT/INSERT/UPDATE/DELETE (table or column privileges, its own, inherited or PUBLIC's,
with USAGE on the schema) must be protected by RLS: a table or partition with RLS enabled,
or a view with ``security_invoker`` (whose base tables are then checked on their own).
Roles that hold the relation owner's rights are trusted like the owner (they could disable
RLS) and are not reported here; for the enforce role that membership is itself an error.

Finding codes (severity):

* ``table_without_rls`` (error): RLS not enabled and no policies on the table;
* ``policy_without_rls`` (error): policies exist but RLS is disabled, so they do nothing
  (reported instead of ``table_without_rls`` for that table);
* ``rls_not_forced`` (warn): RLS enabled but not FORCEd, so the table owner bypasses it;
* ``rls_without_policy`` (warn): RLS enabled with no policy: every row is denied;
* ``permissive_true_policy`` (error): a PERMISSIVE policy whose USING or WITH CHECK is ``true``;
* ``reachable_without_rls`` (error): a non-bypass login role can read or change a table,
  partition, TimescaleDB chunk, materialized view or foreign table that RLS does not
  protect (chunks of one hypertable are reported together);
* ``view_bypasses_rls`` (error): a non-bypass login role can use a view that runs with its
  owner's rights (no ``security_invoker``), so the caller's policies do not apply;
* ``statistics_visible`` (error): a non-bypass login role cannot reach a relation without RLS
  but holds SELECT on it and can read ``pg_stats``: the column statistics show its values
  (the usual case: chunks, which copy the hypertable's grants);
* ``chunks_exposed`` (error): TimescaleDB creates the chunks of an RLS-protected hypertable in
  a schema a non-bypass login role may use (``_timescaledb_internal`` by default); each new chunk
  copies the hypertable's grants without its RLS;
* ``enforce_role_privileged`` (error, role-level): the enforce role is superuser, BYPASSRLS,
  a member of such a role, or owns tables in the audited schemas (directly or through
  role membership);
* ``enforce_role_missing`` (error, role-level): the enforce role does not exist;
* ``schema_missing`` (error): an audited schema does not exist (a typo would otherwise audit clean).

``dbkit roles apply`` (and every ``dbkit migrate``) closes the chunk and statistics paths
(:mod:`dbkit.rls.isolation`).  Nothing here prints; psycopg is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

    from dbkit.config import Settings

__all__ = ["CODES", "Finding", "AuditReport", "audit"]

ERROR, WARN = "error", "warn"

#: code -> severity, in report order
CODES: dict[str, str] = {
    "enforce_role_missing": ERROR,
    "enforce_role_privileged": ERROR,
    "schema_missing": ERROR,
    "table_without_rls": ERROR,
    "policy_without_rls": ERROR,
    "reachable_without_rls": ERROR,
    "view_bypasses_rls": ERROR,
    "statistics_visible": ERROR,
    "chunks_exposed": ERROR,
    "permissive_true_policy": ERROR,
    "rls_not_forced": WARN,
    "rls_without_policy": WARN,
}
_ORDER = {code: i for i, code in enumerate(CODES)}


@dataclass(frozen=True)
class Finding:
    """One problem: ``table`` is None for role- and schema-level findings."""

    code: str
    schema: str | None
    table: str | None
    message: str
    fix: str
    role: str | None = None

    @property
    def severity(self) -> str:
        return CODES[self.code]

    @property
    def target(self) -> str:
        """``app.users``, ``role app_rls`` or ``schema app``."""
        if self.table is not None:
            return f"{self.schema}.{self.table}"
        if self.role is not None:
            return f"role {self.role}"
        return f"schema {self.schema}"

    def line(self) -> str:
        """One line for humans: ``error table_without_rls app.t: message; fix: …``."""
        return f"{self.severity} {self.code} {self.target}: {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "schema": self.schema, "table": self.table,
                "role": self.role, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class AuditReport:
    schemas: tuple[str, ...]
    role: str
    tables_checked: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    #: relations of every schema checked against the non-bypass login roles
    relations_checked: int = 0
    #: the non-bypass login roles those relations were checked against
    login_roles: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """True when there is no finding at all (a warn counts)."""
        return not self.findings

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARN for f in self.findings)

    def summary(self) -> dict[str, Any]:
        return {"schemas": list(self.schemas), "enforce_role": self.role, "tables_checked": self.tables_checked,
                "relations_checked": self.relations_checked, "login_roles": list(self.login_roles),
                "errors": self.errors, "warnings": self.warnings, "clean": self.clean}

    def summary_line(self) -> str:
        roles = ", ".join(self.login_roles) or "none"
        return (f"{self.tables_checked} tables checked in {', '.join(self.schemas)} (enforce role {self.role}); "
                f"{self.relations_checked} relations in every schema checked against the non-bypass login roles "
                f"({roles}): {self.errors} errors, {self.warnings} warnings")

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "findings": [f.as_dict() for f in self.findings]}


_ROLE_SQL = """
SELECT r.rolsuper, r.rolbypassrls,
       ARRAY(SELECT b.rolname FROM pg_roles b WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> r.oid
             AND pg_has_role(r.oid, b.oid, 'MEMBER') ORDER BY 1),
       ARRAY(SELECT n.nspname || '.' || c.relname
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
               AND pg_has_role(r.oid, c.relowner, 'USAGE')
             ORDER BY 1)
FROM pg_roles r WHERE r.rolname = %(role)s
"""

# One row per table of the audited schemas.
_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_TRUE_POLICIES_SQL = """
SELECT schemaname, tablename, policyname, qual = 'true', with_check = 'true'
FROM pg_policies
WHERE schemaname = ANY(%(schemas)s) AND permissive = 'PERMISSIVE'
  AND (qual = 'true' OR with_check = 'true')
ORDER BY 1, 2, 3
"""


def audit(settings: Settings, conn: psycopg.Connection | None = None,
          schemas: Sequence[str] | None = None) -> AuditReport:
    """Audit ``schemas`` (default ``[settings.schema]``) and the enforce role.

    Opens (and closes) its own autocommit connection when ``conn`` is None;
    raises :class:`~dbkit.errors.DatabaseUnavailable` when it cannot connect.
    """
    if conn is None:
        from dbkit import db, target

        with db.connect(target.resolve_url(settings), autocommit=True,
                        connect_timeout=settings.connect_timeout) as own:
            return audit(settings, own, schemas)
    schemas = tuple(dict.fromkeys(schemas or (settings.schema,)))
    role = settings.role_enforce
    params: dict[str, Any] = {"schemas": list(schemas), "role": role}
    findings: list[Finding] = []

    existing = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(schemas)s)",
                                           params)}
    for schema in schemas:
        if schema not in existing:
            findings.append(Finding("schema_missing", schema, None, f"schema {schema} does not exist",
                                    "check the schema name (DBKIT_SCHEMA or --schema), or migrate the database"))

    row = conn.execute(_ROLE_SQL, params).fetchone()
    findings.extend(_role_findings(role, row))

    tables = conn.execute(_TABLES_SQL, params).fetchall()
    for schema, table, enabled, forced, policies in tables:
        findings.extend(_table_findings(schema, table, enabled, forced, policies))

    for schema, table, policy, qual_true, check_true in conn.execute(_TRUE_POLICIES_SQL, params):
        clause = " and ".join(c for c, bad in (("USING", qual_true), ("WITH CHECK", check_true)) if bad)
        findings.append(Finding(
            "permissive_true_policy", schema, table,
            f"permissive policy {policy} has {clause} (true): it opens the table to the roles it applies to",
            f"replace it with a tenant predicate, or DROP POLICY {policy} ON {schema}.{table}"))

    logins, relations, reach = _reachability(conn)
    findings.extend(reach)

    findings.sort(key=lambda f: (f.table is not None, f.schema or "", f.table or "", _ORDER[f.code],
                                 f.role or "", f.message))
    return AuditReport(schemas=schemas, role=role, tables_checked=len(tables), findings=tuple(findings),
                       relations_checked=relations, login_roles=logins)


def _role_findings(role: str, row: tuple | None) -> Iterable[Finding]:
    if row is None:
        yield Finding("enforce_role_missing", None, None, f"the enforce role {role} does not exist",
                      "run dbkit migrate (it creates the roles in sql/roles/) or fix DBKIT_ROLE_ENFORCE", role=role)
        return
    superuser, bypassrls, powerful, owned = row
    if powerful and not superuser:
        yield Finding("enforce_role_privileged", None, None, f"the enforce role {role} is a member of "
                      f"{', '.join(powerful)} (superuser or BYPASSRLS): it can SET ROLE around RLS",
                      f"REVOKE {powerful[0]} FROM {role}", role=role)
    if superuser:
        yield Finding("enforce_role_privileged", None, None, f"the enforce role {role} is a superuser: RLS never "
                      "applies to it", f"ALTER ROLE {role} NOSUPERUSER", role=role)
    if bypassrls:
        yield Finding("enforce_role_privileged", None, None, f"the enforce role {role} has BYPASSRLS: RLS never "
                      "applies to it", f"ALTER ROLE {role} NOBYPASSRLS", role=role)
    if owned and not superuser:  # a superuser "owns" everything: already reported
        shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
        yield Finding("enforce_role_privileged", None, None, f"the enforce role {role} owns (directly or through "
                      f"membership) {len(owned)} tables: {shown}; an owner can disable RLS and bypasses it "
                      "unless forced", "make the owner role (DBKIT_ROLE_OWNER) own them and revoke its "
                      f"membership from {role}", role=role)


def _table_findings(schema: str, table: str, enabled: bool, forced: bool, policies: int) -> Iterable[Finding]:
    name = f"{schema}.{table}"
    if not enabled and policies:
        yield Finding("policy_without_rls", schema, table,
                      f"{policies} policies but row-level security is disabled: they do nothing",
                      f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
    elif not enabled:
        yield Finding("table_without_rls", schema, table, "row-level security is not enabled",
                      f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY and add "
                      "tenant policies (op.enable_rls, op.create_policy)")
    else:
        if not forced:
            yield Finding("rls_not_forced", schema, table,
                          "row-level security is enabled but not forced: the table owner bypasses it",
                          f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
        if not policies:
            yield Finding("rls_without_policy", schema, table,
                          "row-level security is enabled but there is no policy: every row is denied",
                          f"add policies for the roles that use it (CREATE POLICY … ON {name})")


# ----------------------------------------------------------------------------- every relation, every login role

_LOGINS_SQL = """
SELECT r.oid, r.rolname FROM pg_roles r
WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls
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

# One row per (relation, login role) where the role holds SELECT/INSERT/UPDATE/DELETE on it (table or
# column privileges; its own, through any role it is a member of, or PUBLIC's), without the owner's rights.
_REACH_SQL = """
WITH logins AS (SELECT oid, rolname FROM pg_roles WHERE oid = ANY(%(logins)s)),
""" + _RELS_CTE + """,
grants AS (
  SELECT r.oid AS relid, a.grantee, a.privilege_type
  FROM rels r, aclexplode(COALESCE(r.relacl, acldefault('r', r.relowner))) a
  WHERE a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
  UNION
  SELECT r.oid, a.grantee, a.privilege_type
  FROM rels r JOIN pg_attribute att ON att.attrelid = r.oid AND att.attnum > 0 AND NOT att.attisdropped
       AND att.attacl IS NOT NULL, aclexplode(att.attacl) a
  WHERE a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE')
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
        WHERE i.inhrelid = r.oid AND NOT r.relispartition LIMIT 1) AS inherits_from
FROM grants g JOIN rels r ON r.oid = g.relid
JOIN logins l ON g.grantee = 0 OR pg_has_role(l.oid, g.grantee, 'MEMBER')
WHERE NOT pg_has_role(l.oid, r.relowner, 'MEMBER')
GROUP BY r.oid, r.nspname, r.relname, r.relkind, r.relrowsecurity, r.invoker, r.relnamespace, r.relowner,
         r.relispartition, l.oid, l.rolname
ORDER BY 1, 2, 6
"""

_COUNT_RELS_SQL = "WITH " + _RELS_CTE + " SELECT count(*) FROM rels"

_KIND_WORDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "f": "foreign table", "v": "view"}


def _hypertables(conn) -> set[str]:
    if not conn.execute("SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL").fetchone()[0]:
        return set()
    return {r[0] for r in conn.execute(
        "SELECT format('%I.%I', schema_name, table_name) FROM _timescaledb_catalog.hypertable")}


def _reachability(conn) -> tuple[tuple[str, ...], int, list[Finding]]:
    """``(login roles checked, relations checked, findings)`` of the every-schema sweep."""
    from dbkit.rls.isolation import CHUNK_SCHEMA

    logins = conn.execute(_LOGINS_SQL).fetchall()
    relations = conn.execute(_COUNT_RELS_SQL).fetchone()[0]
    if not logins:
        return (), relations, []
    hypertables = _hypertables(conn)
    rows = conn.execute(_REACH_SQL, {"logins": [oid for oid, _ in logins]}).fetchall()
    # chunks of one hypertable, for one role and one finding code, are reported together
    groups: dict[tuple[str, str, str], list[tuple]] = {}
    findings: list[Finding] = []
    for row in rows:
        schema, rel, kind, rls, invoker, role, privs, only_public, usage, stats, owner, parent = row
        privs = sorted(privs, key=("SELECT", "INSERT", "UPDATE", "DELETE").index)
        if kind == "v":
            if not invoker and usage:
                findings.append(_view_finding(schema, rel, role, privs, only_public, owner))
            continue
        if rls:  # a table or partition whose policies apply when it is named directly
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
        findings.append(_relation_finding(code, schema, rel, kind, role, privs, only_public, None, 1,
                                          CHUNK_SCHEMA))
    hyper = _hypertable_findings(conn, [oid for oid, _ in logins])
    covered = {(f.code, f"{f.schema}.{f.table}", f.role) for f in hyper}
    findings.extend(hyper)
    for (code, parent, role), members in groups.items():
        if code == "statistics_visible" and (code, parent, role) in covered:
            continue
        schema, rel, kind, *_ = members[0]
        privs = sorted({p for m in members for p in m[6]}, key=("SELECT", "INSERT", "UPDATE", "DELETE").index)
        only_public = all(m[7] for m in members)
        findings.append(_relation_finding(code, schema, rel, kind, role, privs, only_public, parent, len(members),
                                          CHUNK_SCHEMA))
    return tuple(name for _, name in logins), relations, findings


def _grantee(role: str, only_public: bool) -> str:
    return "PUBLIC" if only_public else role


def _view_finding(schema: str, view: str, role: str, privs: list[str], only_public: bool, owner: str) -> Finding:
    name = f"{schema}.{view}"
    return Finding(
        "view_bypasses_rls", schema, view,
        f"{role} can {'/'.join(privs)} through this view, which runs with the rights of its owner {owner} "
        "(no security_invoker): row-level security is checked as the owner, not as the caller",
        f"ALTER VIEW {name} SET (security_invoker = true), or REVOKE ALL ON {name} FROM "
        f"{_grantee(role, only_public)}", role=role)


def _relation_finding(code: str, schema: str, rel: str, kind: str, role: str, privs: list[str], only_public: bool,
                      hypertable: str | None, count: int, chunk_schema: str) -> Finding:
    name = f"{schema}.{rel}"
    grantee = _grantee(role, only_public)
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
    if schema == chunk_schema:
        fix = f"REVOKE ALL ON SCHEMA {chunk_schema} FROM {grantee} (no application role may use it)"
    elif hypertable is not None:
        fix = (f"run `dbkit roles apply` as a superuser: the chunks of {hypertable} move to {chunk_schema}, a "
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
    if not logins or not conn.execute("SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL").fetchone()[0]:
        return []
    from dbkit.rls.isolation import CHUNK_SCHEMA

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
