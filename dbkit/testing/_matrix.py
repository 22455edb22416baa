"""The RLS matrix, pytest-free: for every table with row-level security, every role kind
and every command, check what the role really sees and may change.

Each check runs in a transaction that is always rolled back, so one seeded database
serves the whole matrix.  Errors are classified by SQLSTATE (42501 = insufficient
privilege, which PostgreSQL also uses for a row rejected by a policy), never by text.

Expectations (defaults; per-table overrides in ``[tool.dbkit.rls.tables.<table>]``):

=========  ===================================================================
enforce    with tenant A: sees exactly A's rows; may write A's rows; writing a row for
           tenant B is rejected; UPDATE/DELETE of B's rows affect 0 rows; moving a row
           from A to B is rejected.  Without a tenant: sees 0 rows, cannot write.
bypass     sees every tenant's rows and may write them.
readonly   with tenant A: sees exactly A's rows; every write is permission denied.
=========  ===================================================================

Rows are owned per tenant or per user, as the RLS model says (``dbkit.rls.Claims``: a tenant
claim, or JSON claims with a user key such as ``sub`` and maybe a tenant key); "tenant A" above
is then "user A", and the claims are set the way the model sets them.  ``[tool.dbkit.rls]``::

    owner = "user"             # default: per user for a JWT model without a tenant key, else per tenant
    tenant_column = "tenant_id"
    user_column = "user_id"

    [tool.dbkit.rls.tables.tenants]
    tenant_column = "id"       # or owner = "user" / user_column = "owner_id" for one table
    readonly_denied = ["SELECT"]

``<kind>_denied = ["INSERT", ...]``: commands that kind may not run on that table at all (42501).
The role model's read-only tables (``[tool.dbkit.roles] read_only_tables``) deny the enforce role
INSERT/UPDATE/DELETE, and ``[tool.dbkit.roles.<kind>] tables`` what it leaves out, without saying it
again here.  With ``DBKIT_RLS_MODEL=none`` there is no matrix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dbkit.roles._sql import quote_ident

KINDS = ("enforce", "bypass", "readonly")
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")
CASES = [(k, c) for k in KINDS for c in COMMANDS]
DENIED = "42501"
REFERENCED = "23503"


@dataclass
class Table:
    schema: str
    name: str
    tenant_column: str  # the owner column (a tenant's or a user's id, see ``owner``)
    columns: list[tuple[str, str]]  # insertable (name, type) pairs
    denied: dict[str, set[str]] = field(default_factory=dict)
    tenants: list[Any] = field(default_factory=list)  # owner values with rows, most rows first
    owner: str = "tenant"  # "tenant" | "user": what the claims name
    is_view: bool = False  # a tenant-scoped view (op.create_scoped_view): its check option rejects with 44000
    source: tuple[str, str] | None = None  # a view's (schema, relation)
    updatable: bool = True  # False: a view PostgreSQL cannot write through (a real-time aggregate's)
    counts: dict[Any, int] = field(default_factory=dict)
    sample: dict[Any, list[str | None]] = field(default_factory=dict)  # one row per tenant, as text

    @property
    def qualified(self) -> str:
        """The quoted name, for statements run with parameters (see :func:`ident`)."""
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def regclass(self) -> str:
        """The quoted name as a parameter's value (``to_regclass(%s)``)."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


def ident(name: str) -> str:
    """``name`` quoted for a statement that runs with parameters, as every statement of the matrix does (``()``
    when it has none): psycopg then reads a bare ``%`` as a placeholder, so it is doubled."""
    return quote_ident(name).replace("%", "%%")


def discover(admin, settings, schemas: list[str] | None = None) -> list[Table]:
    """Tables with RLS enabled in ``schemas``, with two tenants' data sampled (as a superuser)."""
    from dbkit import roles

    if settings.rls_model == "none":  # no RLS model: nothing to check (the audit says RLS is not used)
        return []
    schemas = schemas or [settings.schema]
    config = (settings.rls or {}).get("tables", {})
    model = roles.model(settings)  # read-only tables and per-kind table privileges deny commands
    rows = [(schema, name, schema, name) for schema, name in admin.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND n.nspname = ANY(%s) ORDER BY 1, 2",
        (schemas,)).fetchall()]
    from dbkit.rls._scoped import owner_and_column, scoped_views, shared_tables  # scoped views: like RLS tables

    rows = [r for r in rows if (r[0], r[1]) not in shared_tables(settings)]  # no tenant's rows to compare
    views = {(v.schema, v.name): v for v in scoped_views(admin, settings) if v.schema in schemas}
    rows += [(v.schema, v.name, v.source_schema, v.source) for v in views.values()]
    tables = []
    for schema, name, source_schema, source in rows:
        conf = config.get(name, {})
        source_rel = f"{ident(source_schema)}.{ident(source)}"  # rows are sampled there: a view filters by claims
        view = views.get((schema, name))
        owner, column = (view.owner, view.column) if view is not None else owner_and_column(settings, name)
        # insertable columns: not generated, not always-identity, not a defaulted primary key (unless it is the
        # owner column itself, e.g. users.id owned by its own id: a row must be written with the claimed id)
        cols = admin.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "AND a.attgenerated = '' AND a.attidentity <> 'a' AND NOT (a.atthasdef AND a.attname <> %s AND a.attnum "
            "= ANY(SELECT unnest(i.indkey) FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary)) "
            "ORDER BY a.attnum", (f"{quote_ident(source_schema)}.{quote_ident(source)}", column)).fetchall()
        denied = {k: {c.upper() for c in conf.get(f"{k}_denied", [])} for k in KINDS}
        for k in KINDS:  # what the role model does not grant the kind on this table is denied
            denied[k] |= set(COMMANDS) - set(model.table_privileges(k, name))
        t = Table(schema, name, column, cols, denied, owner=owner, is_view=view is not None,
                  source=(source_schema, source) if view is not None else None,
                  updatable=view.updatable if view is not None else True)
        tc = ident(t.tenant_column)
        for tenant, n in admin.execute(
                f"SELECT {tc}::text, count(*) FROM {source_rel} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2", ()):
            t.tenants.append(tenant)
            t.counts[tenant] = n
            col_list = ", ".join(f"{ident(c)}::text" for c, _ in cols)
            t.sample[tenant] = list(admin.execute(
                f"SELECT {col_list} FROM {source_rel} WHERE {tc}::text = %s LIMIT 1", (tenant,)).fetchone())
        t.counts["*"] = admin.execute(f"SELECT count(*) FROM {source_rel}", ()).fetchone()[0]
        tables.append(t)
    return tables


@contextlib.contextmanager
def _as(conn, tenant: Any, settings, owner: str = "tenant") -> Iterator[Any]:
    """A transaction with the claims of ``tenant`` (a user when ``owner`` is "user") that is always
    rolled back; the claims are set the way the RLS model sets them."""
    from dbkit.rls import claims

    model = claims(settings)
    value = None if tenant is None else str(tenant)
    params = model.parameters(tenant=value if owner == "tenant" else None, user=value if owner == "user" else None)
    with conn.transaction(force_rollback=True):
        if params:
            conn.execute(model.set_sql(), params)
        yield conn


def _attempt(conn, sql: str, params=()) -> tuple[str | None, int]:
    """Run ``sql`` in a savepoint; (SQLSTATE or None, rowcount)."""
    try:
        with conn.transaction():
            cur = conn.execute(sql, params)
            return None, cur.rowcount
    except Exception as exc:  # noqa: BLE001 - classified by SQLSTATE below
        state = getattr(exc, "sqlstate", None)
        if state is None:
            raise
        return state, -1


def _insert_sql(t: Table) -> str:
    cols = ", ".join(ident(c) for c, _ in t.columns)
    vals = ", ".join(f"%s::{typ}" for _, typ in t.columns)
    return f"INSERT INTO {t.qualified} ({cols}) VALUES ({vals})"


def _row_for(t: Table, source_tenant: Any, tenant: Any) -> list[str | None]:
    row = list(t.sample[source_tenant])
    names = [c for c, _ in t.columns]
    if t.tenant_column in names:
        row[names.index(t.tenant_column)] = tenant
    return row


def check_case(conn, t: Table, kind: str, command: str, role: str, settings) -> list[str]:
    """Failures (human sentences) of ``role`` (of ``kind``) running ``command`` on table ``t``."""
    if t.is_view and kind == "bypass":  # bypass roles use the table itself; the view filters everyone
        return []
    if len(t.tenants) < 2:
        return [f"{t.name}: the matrix needs rows of at least two tenants (found {len(t.tenants)}); seed more"]
    a, b = t.tenants[0], t.tenants[1]
    # a row of another tenant is rejected by a policy (42501) or, through a scoped view, its check option (44000)
    rejected = {DENIED, "44000"} if t.is_view else {DENIED}
    who = t.owner  # "tenant" or "user": whose rows these are
    tc = ident(t.tenant_column)
    out: list[str] = []
    denied = command in t.denied.get(kind, set()) or (kind == "readonly" and command != "SELECT")

    def expect_rejected(state: str | None, what: str) -> None:
        if state not in rejected:
            out.append(f"{role} {what} ({'accepted' if state is None else 'SQLSTATE ' + state}); expected rejection "
                       "(42501)")

    def stmt(tenant_value: Any, move_to: Any = None) -> tuple[str, tuple]:
        if command == "UPDATE":
            target = "%s" if move_to is not None else tc
            typ = next((typ for name, typ in t.columns if name == t.tenant_column), "uuid")
            sql = f"UPDATE {t.qualified} SET {tc} = {target}::{typ} WHERE {tc}::text = %s"
            return sql, ((move_to, tenant_value) if move_to is not None else (tenant_value,))
        return f"DELETE FROM {t.qualified} WHERE {tc}::text = %s", (tenant_value,)

    if denied:
        probes = {"SELECT": (f"SELECT 1 FROM {t.qualified} LIMIT 1", ()), "INSERT": (_insert_sql(t), _row_for(t, a, a))}
        with _as(conn, a, settings, t.owner):
            state, _ = _attempt(conn, *probes.get(command, stmt(a)))
        # a view PostgreSQL cannot write through refuses every write before privileges are checked (55000)
        if state != DENIED and not (not t.updatable and command != "SELECT" and state == "55000"):
            return [(f"{role} {command} on {t.name}: expected permission denied (42501), got "
                     f"{'success' if state is None else 'SQLSTATE ' + state}")]
        return []

    if command == "SELECT":
        tenants = [(a, f"{who} A"), (None, f"no {who}")] if kind != "bypass" else [(None, f"no {who}")]
        for tenant, label in tenants:
            with _as(conn, tenant, settings, t.owner):
                seen = dict(conn.execute(f"SELECT {tc}::text, count(*) FROM {t.qualified} GROUP BY 1", ()).fetchall())
            if kind == "bypass":
                if sum(seen.values()) != t.counts["*"]:
                    out.append(f"{role} ({label}) saw {sum(seen.values())} of {t.counts['*']} rows in {t.name}")
            elif tenant is None:
                if seen:
                    out.append(f"{role} with no {who} set saw {sum(seen.values())} rows in {t.name}; expected 0")
            else:
                others = sum(n for k, n in seen.items() if k != a)
                if others:
                    out.append(f"{role} as {who} A saw {others} rows of other {who}s in {t.name}")
                if seen.get(a, 0) != t.counts[a]:
                    out.append(f"{role} as {who} A saw {seen.get(a, 0)} of {who} A's {t.counts[a]} rows in {t.name}")
        return out

    if command == "INSERT":
        own = _row_for(t, a, a)
        tenant = None if kind == "bypass" else a
        with _as(conn, tenant, settings, t.owner):
            state, _ = _attempt(conn, _insert_sql(t), own)
            if state == DENIED:  # unique/foreign-key errors come after the policy check: allowed by RLS
                label = f"{who} A" if tenant else f"no {who}"
                out.append(f"{role} as {label} could not INSERT its own row into {t.name}")
            if kind == "enforce":
                expect_rejected(_attempt(conn, _insert_sql(t), _row_for(t, a, b))[0],
                                f"as {who} A inserted a row for {who} B into {t.name}")
        if kind == "enforce":
            with _as(conn, None, settings, t.owner):
                expect_rejected(_attempt(conn, _insert_sql(t), own)[0], f"with no {who} set inserted into {t.name}")
        return out

    # 23503: a foreign key refused a DELETE of rows the policies let through (they are referenced): the rows
    # were reached, which is right for the role's own rows and a leak for another tenant's
    if kind == "bypass":
        with _as(conn, None, settings, t.owner):
            state, n = _attempt(conn, *stmt(b))
            if not (command == "DELETE" and state == REFERENCED) and (state is not None or n != t.counts[b]):
                out.append(f"{role} {command} of {who} B's rows in {t.name}: affected {n} of {t.counts[b]}"
                           + (f" (SQLSTATE {state})" if state else ""))
        return out

    def expect_no_rows(state: str | None, n: int, label: str, whose: str = "") -> None:
        if state is None and n != 0:
            out.append(f"{role} {label} {command} affected {n} rows{whose} in {t.name}; expected 0")
        elif state == REFERENCED:
            out.append(f"{role} {label} reached rows{whose} in {t.name}: its {command} was stopped only by a "
                       "foreign key (SQLSTATE 23503); expected 0 rows")

    with _as(conn, a, settings, t.owner):
        expect_no_rows(*_attempt(conn, *stmt(b)), f"as {who} A", f" of {who} B")
        state, n = _attempt(conn, *stmt(a))
        if not (command == "DELETE" and state == REFERENCED) and (state is not None or n != t.counts[a]):
            out.append(f"{role} as {who} A {command} of its own rows in {t.name} affected {n} of {t.counts[a]}"
                       + (f" (SQLSTATE {state})" if state else ""))
        if command == "UPDATE":
            state, n = _attempt(conn, *stmt(a, move_to=b))
            expect_rejected(state, f"as {who} A moved {n} rows of {t.name} to {who} B")
    with _as(conn, None, settings, t.owner):
        expect_no_rows(*_attempt(conn, *stmt(a)), f"with no {who} set")
    return out
