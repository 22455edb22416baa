"""``dbkit rls audit``: read the catalog and report what row-level security leaves open.

:func:`audit` does two sweeps and returns an :class:`AuditReport` of :class:`Finding`
objects.  Any finding, warn included, makes the report not :attr:`~AuditReport.clean`
(the CLI exits 1).

**Tables of the audited schemas** (``DBKIT_SCHEMA`` by default): every ordinary and
partitioned table must have RLS enabled and forced, with policies that do something, except the
*shared tables* (``[tool.dbkit.rls] shared_tables``: no tenant's rows, such as plans or countries),
which every non-bypass login role may read, with or without RLS, and none may change.

**Every relation and SECURITY DEFINER function in every schema** (TimescaleDB's internal
ones included; only ``pg_catalog``, ``information_schema`` and objects that belong to an
extension are skipped) against every *non-bypass login role*: a role that can log in and is not a
superuser, has no BYPASSRLS and cannot become such a role (a member of one, or up to PostgreSQL 15 a CREATEROLE
role, which grants itself any non-superuser role, can).  A relation such a role can
SELECT/INSERT/UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER (table or column privileges, its own, inherited or PUBLIC's,
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
* ``permissive_true_policy`` (error): a PERMISSIVE policy whose USING or WITH CHECK is ``true``
  (a FOR SELECT one on a shared table is accepted);
* ``reachable_without_rls`` (error): a non-bypass login role can read or change a table,
  partition, TimescaleDB chunk, materialized view or foreign table that RLS does not
  protect (chunks of one hypertable are reported together), or change a shared table;
* ``privilege_bypasses_rls`` (error): a non-bypass login role holds TRUNCATE, REFERENCES or
  TRIGGER on a table with RLS: TRUNCATE empties every tenant's rows, a foreign key is checked
  without RLS (which keys other tenants have; it blocks their deletes), a trigger runs on every
  tenant's writes (``GRANT ALL`` grants all three);
* ``view_bypasses_rls`` (error): a non-bypass login role can use a view that runs with its
  owner's rights (no ``security_invoker``), so the caller's policies do not apply — unless the
  view is exactly a tenant-scoped view of the configured model (``op.create_scoped_view``:
  ``security_barrier``, the model's predicate, the check option), the isolation mode for
  hypertables with compression and for continuous aggregates; a table without RLS that only such
  views read (and no non-bypass role reaches directly) is then not ``table_without_rls``;
* ``statistics_visible`` (error): a non-bypass login role cannot reach a relation without RLS
  but holds SELECT on it and can read ``pg_stats``: the column statistics show its values
  (the usual case: chunks, which copy the hypertable's grants);
* ``definer_bypasses_rls`` (error): a non-bypass login role can execute a SECURITY DEFINER function
  (``target`` is ``schema.name(argument types)``) that reads an RLS table, named in its source, as an
  owner the policies do not filter: a superuser or BYPASSRLS role, or the table's owner when RLS is not
  forced; a superuser or BYPASSRLS owner's dynamic SQL (``EXECUTE``) counts as reading any table.
  A function reviewed as safe (it filters by the claims itself) is accepted by naming it, as the
  finding does, in ``[tool.dbkit.rls.definer_functions]`` with the reason (:attr:`AuditReport.accepted`);
* ``definer_search_path`` (error): a non-bypass login role can execute a SECURITY DEFINER function (SQL or
  PL/pgSQL, not ``BEGIN ATOMIC``) whose lookups it can redirect: it names a table without a schema and its
  search_path does not end with ``pg_temp`` (a temporary view of that name, which PostgreSQL searches first,
  is read as an owner RLS does not filter), or it sets no search_path (or one with a schema the role may
  create in) while the role may create objects in a schema (a function or operator of its own then runs as an
  owner who bypasses RLS or owns RLS tables); reviewing it in ``definer_functions`` does not accept this, a
  platform's function the project cannot change is accepted in ``[tool.dbkit.rls.search_path_functions]``;
* ``replaceable_function`` (error): policies, triggers, constraints, column defaults, generated columns or
  indexes of tables with RLS call a function (directly or through an operator) that a non-bypass login role
  owns, itself or through membership, without the table owner's rights (``target``: the function, one finding
  per function and role): it can replace the function, and with it which rows the policy lets through or what
  the trigger does with every tenant's rows, as whoever writes them (a trigger created while the role held
  TRIGGER stays after the REVOKE); one owned by a role the project trusts (a platform's auth service) is
  accepted in ``[tool.dbkit.rls.replaceable_functions]`` with the reason;
* ``chunks_exposed`` (error): TimescaleDB creates the chunks of an RLS-protected hypertable in
  a schema a non-bypass login role may use (``_timescaledb_internal`` by default); each new chunk
  copies the hypertable's grants without its RLS;
* ``enforce_role_privileged`` (error, role-level): the enforce role is superuser, BYPASSRLS,
  a member of such a role, owns tables in the audited schemas (directly or through
  role membership), has CREATEROLE on PostgreSQL 15 or older (it may grant itself such roles), or
  has REPLICATION (it may stream the WAL or take a base backup of the whole server);
* ``readonly_role_privileged`` (error, role-level): the same for a read-only role
  (``DBKIT_ROLE_READONLY``), which RLS filters too;
* ``all_data_role`` (error, role-level): a non-bypass login role holds pg_read_all_data or
  pg_write_all_data, so it reads (changes) every relation without RLS, TimescaleDB chunks included,
  whatever the grants and schema privileges that keep the chunks closed;
* ``notify_from_rls_table`` (warn): a trigger of a table with RLS runs a function that sends a NOTIFY
  payload (``pg_notify(channel, payload)`` or ``NOTIFY channel, payload``): every session that listens
  on the channel receives it, whatever its role and claims (a bare wake-up is accepted);
* ``leakproof_function`` (warn): a function outside ``pg_catalog`` and the extensions is LEAKPROOF and
  a non-bypass login role may run it: the planner may call it on rows before the policies filter them,
  so an error or notice about its arguments shows other tenants' values (``target`` is the function); one
  reviewed as unable to fail or report on its arguments is accepted in ``[tool.dbkit.rls.leakproof_functions]``;
* ``enforce_role_missing`` (error, role-level): the enforce role does not exist;
* ``schema_missing`` (error): an audited schema does not exist (a typo would otherwise audit clean).

``dbkit roles apply`` (and every ``dbkit migrate``) closes the chunk and statistics paths
(:mod:`dbkit.rls._isolation`).  Nothing here prints; psycopg is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

    from dbkit.config import Settings

ERROR, WARN = "error", "warn"

#: code -> severity, in report order
CODES: dict[str, str] = {
    "enforce_role_missing": ERROR,
    "enforce_role_privileged": ERROR,
    "readonly_role_privileged": ERROR,
    "all_data_role": ERROR,
    "schema_missing": ERROR,
    "table_without_rls": ERROR,
    "policy_without_rls": ERROR,
    "reachable_without_rls": ERROR,
    "privilege_bypasses_rls": ERROR,
    "view_bypasses_rls": ERROR,
    "statistics_visible": ERROR,
    "chunks_exposed": ERROR,
    "definer_bypasses_rls": ERROR,
    "replaceable_function": ERROR,
    "definer_search_path": ERROR,
    "permissive_true_policy": ERROR,
    "rls_not_forced": WARN,
    "notify_from_rls_table": WARN,
    "leakproof_function": WARN,
    "rls_without_policy": WARN,
}
_ORDER = {code: i for i, code in enumerate(CODES)}

#: finding code -> the ``[tool.dbkit.rls.<table>]`` that accepts a function reviewed as safe (by its name, as the
#: finding's ``target`` gives it, with the reason): :func:`dbkit.rls._scoped.reviewed_functions`
REVIEWED = {
    "definer_bypasses_rls": "definer_functions",
    "leakproof_function": "leakproof_functions",
    "replaceable_function": "replaceable_functions",
    "definer_search_path": "search_path_functions",
}


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
    #: SECURITY DEFINER functions of every schema checked against those roles
    functions_checked: int = 0
    #: the non-bypass login roles those relations were checked against
    login_roles: tuple[str, ...] = ()
    #: the RLS model audited against (``DBKIT_RLS_MODEL``); ``none``: RLS is not used, tables are not checked
    model: str = "tenant"
    #: the functions each ``[tool.dbkit.rls.<table>]`` of :data:`REVIEWED` accepts that would be findings
    reviewed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def accepted(self) -> tuple[str, ...]:
        """The SECURITY DEFINER functions ``[tool.dbkit.rls.definer_functions]`` accepts."""
        return self.reviewed.get("definer_functions", ())

    @property
    def accepted_leakproof(self) -> tuple[str, ...]:
        return self.reviewed.get("leakproof_functions", ())

    @property
    def accepted_replaceable(self) -> tuple[str, ...]:
        return self.reviewed.get("replaceable_functions", ())

    @property
    def rls_used(self) -> bool:
        return self.model != "none"

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
        return {"schemas": list(self.schemas), "enforce_role": self.role, "model": self.model,
                "rls_used": self.rls_used, "tables_checked": self.tables_checked,
                "relations_checked": self.relations_checked, "functions_checked": self.functions_checked,
                "login_roles": list(self.login_roles),
                "accepted": [name for table in REVIEWED.values() for name in self.reviewed.get(table, ())],
                "errors": self.errors, "warnings": self.warnings, "clean": self.clean}

    def summary_line(self) -> str:
        if not self.rls_used:
            return (f"RLS is not used (DBKIT_RLS_MODEL=none): tables in {', '.join(self.schemas)} were not checked; "
                    f"enforce role {self.role}: {self.errors} errors, {self.warnings} warnings")
        roles = ", ".join(self.login_roles) or "none"
        return (f"{self.tables_checked} tables checked in {', '.join(self.schemas)} (enforce role {self.role}); "
                f"{self.relations_checked} relations and {self.functions_checked} SECURITY DEFINER functions in every "
                "schema checked against the non-bypass login roles "
                f"({roles}): {self.errors} errors, {self.warnings} warnings"
                + "".join(f"; accepted as reviewed ([tool.dbkit.rls.{table}]): {', '.join(names)}"
                          for table in REVIEWED.values() if (names := self.reviewed.get(table))))

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "findings": [f.as_dict() for f in self.findings]}


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
SELECT schemaname, tablename, policyname, qual = 'true', with_check = 'true', cmd
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
        from dbkit import _db as db
        from dbkit import _target as target

        with db.connect(target.resolve_url(settings), autocommit=True,
                        connect_timeout=settings.connect_timeout) as own:
            return audit(settings, own, schemas)
    schemas = tuple(dict.fromkeys(schemas or (settings.schema,)))
    enforce = settings.role_enforce
    role = ", ".join(enforce)
    params: dict[str, Any] = {"schemas": list(schemas)}

    existing = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(schemas)s)",
                                           params)}
    findings = [Finding("schema_missing", schema, None, f"schema {schema} does not exist",
                        "check the schema name (DBKIT_SCHEMA or --schema), or migrate the database")
                for schema in schemas if schema not in existing]
    from dbkit.rls._role_level import ROLE_SQL, role_findings

    for name in enforce:
        findings.extend(role_findings(name, conn.execute(ROLE_SQL, {**params, "role": name}).fetchone()))
    for name in settings.role_readonly:  # subject to RLS too (dashboards, reporting): the same powers open it
        row = conn.execute(ROLE_SQL, {**params, "role": name}).fetchone()
        findings.extend(role_findings(name, row, "read-only") if row is not None else ())
    if settings.rls_model == "none":  # a single-tenant application: no table is expected to have RLS
        findings.sort(key=lambda f: (_ORDER[f.code], f.role or "", f.message))
        return AuditReport(schemas=schemas, role=role, tables_checked=0, findings=tuple(findings), model="none")

    version_table = (settings.version_table_schema, settings.version_table)  # Alembic's: no tenant rows
    tables = [t for t in conn.execute(_TABLES_SQL, params).fetchall() if (t[0], t[1]) != version_table]
    from dbkit.rls._scoped import reviewed_functions, scoped_views, shared_tables

    shared = shared_tables(settings)  # no tenant's rows: read by every tenant, without RLS or with a true SELECT
    views = scoped_views(conn, settings)
    isolated = {(v.source_schema, v.source) for v in views}  # read through scoped views, granted to no one
    for schema, table, enabled, forced, policies in tables:
        if (schema, table) in shared:
            continue  # the sweep below fails it if a non-bypass role can change it
        if not enabled and not policies and (schema, table) in isolated:
            continue  # the sweep below still fails it if a non-bypass role can reach it directly
        findings.extend(_table_findings(schema, table, enabled, forced, policies))

    for schema, table, policy, qual_true, check_true, command in conn.execute(_TRUE_POLICIES_SQL, params):
        if command == "SELECT" and (schema, table) in shared:
            continue
        clause = " and ".join(c for c, bad in (("USING", qual_true), ("WITH CHECK", check_true)) if bad)
        findings.append(Finding(
            "permissive_true_policy", schema, table,
            f"permissive policy {policy} has {clause} (true): it opens the table to the roles it applies to",
            f"replace it with a tenant predicate, or DROP POLICY {policy} ON {schema}.{table}"))

    from dbkit.rls._functions import notify_findings
    from dbkit.rls._reach import reachability

    logins, relations, functions, reach = reachability(conn, frozenset((v.schema, v.name) for v in views), shared)
    reviewed = {code: reviewed_functions(settings, table) for code, table in REVIEWED.items()}
    accepted = {REVIEWED[code]: tuple(sorted({f.target for f in reach if f.code == code and f.target in names}))
                for code, names in reviewed.items()}
    findings.extend(f for f in reach if f.target not in reviewed.get(f.code, ()))
    findings.extend(notify_findings(conn))

    findings.sort(key=lambda f: (f.table is not None, f.schema or "", f.table or "", _ORDER[f.code],
                                 f.role or "", f.message))
    return AuditReport(schemas=schemas, role=role, tables_checked=len(tables), findings=tuple(findings),
                       relations_checked=relations, functions_checked=functions, login_roles=logins,
                       model=settings.rls_model, reviewed={t: names for t, names in accepted.items() if names})


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
