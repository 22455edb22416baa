"""The escalation checks of the RLS matrix (:mod:`dbkit.testing._matrix`): what the enforce role must never be
able to do (switch roles, grant itself the owner role, turn RLS off, touch policies, read pg_authid, read around
the policies, TRUNCATE a table or create a trigger on it, replace a function the table calls), FORCE applying
to the owner, and the paths around a table's policies: a hypertable's chunks, the table behind a scoped view."""

from __future__ import annotations

from dbkit.rls._functions import called_functions
from dbkit.roles._sql import quote_ident as _quote
from dbkit.testing._matrix import DENIED, Table, _as, _attempt, ident


def escalation_failures(enforce_conn, admin, tables: list[Table], settings) -> list[str]:
    """What the enforce role must never be able to do, and FORCE applying to the owner."""
    out: list[str] = []
    role = enforce_conn.info.user
    probe = next((t for t in tables if not t.is_view), None)
    attempts = [(f"SET ROLE {ident(name)}", f"SET ROLE to the bypass role {name}") for name in settings.role_bypass]
    attempts += [(f"SET ROLE {ident(settings.role_owner)}", "SET ROLE to the owner role"),
                 (f"GRANT {ident(settings.role_owner)} TO {ident(role)}", "grant itself the owner role"),
                 ("SELECT rolpassword FROM pg_authid LIMIT 1", "read pg_authid")]
    if probe is not None:
        attempts += [
            (f"ALTER TABLE {probe.qualified} DISABLE ROW LEVEL SECURITY", f"disable RLS on {probe.name}"),
            (f"ALTER TABLE {probe.qualified} NO FORCE ROW LEVEL SECURITY", f"un-force RLS on {probe.name}"),
            (f"CREATE POLICY dbkit_escalation ON {probe.qualified} USING (true)", f"create a policy on {probe.name}"),
        ]
        policy = admin.execute("SELECT policyname FROM pg_policies WHERE schemaname = %s AND tablename = %s LIMIT 1",
                               (probe.schema, probe.name)).fetchone()
        if policy:
            attempts.append((f"DROP POLICY {ident(policy[0])} ON {probe.qualified}", f"drop a policy on {probe.name}"))
    first = probe.tenants[0] if probe and probe.tenants else None
    for sql, what in attempts:
        with _as(enforce_conn, first, settings, probe.owner if probe else "tenant"):
            state, _ = _attempt(enforce_conn, sql)
        if state != DENIED:
            out.append(f"{role} could {what} ({'succeeded' if state is None else 'SQLSTATE ' + state}); "
                       "expected permission denied")
    for t in tables:
        if t.is_view:
            out += _view_source_failures(enforce_conn, admin, t, settings)
            continue
        with _as(enforce_conn, t.tenants[0] if t.tenants else None, settings, t.owner):
            enforce_conn.execute("SET LOCAL row_security = off")
            state, _ = _attempt(enforce_conn, f"SELECT 1 FROM {t.qualified} LIMIT 1")
        if state != DENIED:
            out.append(f"{role} read {t.name} around its policies with row_security = off "
                       f"({'succeeded' if state is None else 'SQLSTATE ' + state})")
        for sql, what in ((f"TRUNCATE {t.qualified}", "truncate"),
                          (f"CREATE TRIGGER dbkit_escalation BEFORE UPDATE ON {t.qualified} FOR EACH ROW "
                           "EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()", "create a trigger on")):
            with _as(enforce_conn, t.tenants[0] if t.tenants else None, settings, t.owner):
                enforce_conn.execute("SET LOCAL lock_timeout = '5s'")  # granted, it waits for the table's lock
                state, _ = _attempt(enforce_conn, sql)
            if state != DENIED:
                out.append(f"{role} could {what} {t.name}, which row-level security does not filter "
                           f"({'succeeded' if state is None else 'SQLSTATE ' + state}); expected permission denied")
        for function in called_functions(admin, t.regclass):  # COMMENT ON, like CREATE OR REPLACE, needs the owner
            with _as(enforce_conn, t.tenants[0] if t.tenants else None, settings, t.owner):
                state, _ = _attempt(enforce_conn, f"COMMENT ON FUNCTION {function} IS NULL")
            if state != DENIED:
                out.append(f"{role} could replace {function}, which {t.name} calls in a policy, trigger, constraint, "
                           f"default or index ({'succeeded' if state is None else 'SQLSTATE ' + state}); expected "
                           "permission denied: the table's owner should own it")
        forced = admin.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass(%s)",
                               (t.regclass,)).fetchone()[0]
        with _as(admin, t.tenants[0] if t.tenants else None, settings, t.owner):
            admin.execute(f"SET LOCAL ROLE {_quote(settings.role_owner)}")
            owner_sees = admin.execute(f"SELECT count(*) FROM {t.qualified}", ()).fetchone()[0]
        if not forced or (t.counts.get("*") and owner_sees == t.counts["*"]):
            out.append(f"the owner {settings.role_owner} is not subject to RLS on {t.name} "
                       f"(FORCE {'on' if forced else 'off'}, sees {owner_sees} of {t.counts.get('*')} rows)")
        out += _chunk_failures(enforce_conn, admin, t, settings)
    return out


def _view_source_failures(enforce_conn, admin, t: Table, settings) -> list[str]:
    """A scoped view's table is granted to no application role: reading or changing it (or its chunks)
    directly must be refused."""
    schema, source = t.source
    rel = f"{ident(schema)}.{ident(source)}"
    out = []
    for verb, sql in (("read", f"SELECT 1 FROM {rel} LIMIT 1"), ("delete from", f"DELETE FROM {rel}")):
        with _as(enforce_conn, t.tenants[0] if t.tenants else None, settings, t.owner):
            state, _ = _attempt(enforce_conn, sql)
        if state != DENIED and not (verb != "read" and not t.updatable and state == "55000"):
            out.append(f"{enforce_conn.info.user} could {verb} {schema}.{source}, the table behind the scoped view "
                       f"{t.name}, directly ({'succeeded' if state is None else 'SQLSTATE ' + state}); expected "
                       "permission denied: grant the view, not the table")
    base = Table(schema, source, t.tenant_column, t.columns, tenants=t.tenants, owner=t.owner)
    return out + _chunk_failures(enforce_conn, admin, base, settings)


def _chunk_failures(enforce_conn, admin, t: Table, settings) -> list[str]:
    """A hypertable's chunks are tables of their own without its RLS: reading or deleting one
    directly, as the enforce role with tenant A's claims, must be refused or reach no row."""
    if not admin.execute("SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL").fetchone()[0]:
        return []
    chunks = [r[0] for r in admin.execute(
        "SELECT format('%%I.%%I', c.schema_name, c.table_name) FROM _timescaledb_catalog.chunk c "
        "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
        "WHERE h.schema_name = %s AND h.table_name = %s AND NOT c.dropped ORDER BY c.id", (t.schema, t.name))]
    out = []
    tenant = t.tenants[0] if t.tenants else None
    for chunk in chunks:
        rel = chunk.replace("%", "%%")  # already quoted (format's %I), run with a parameter
        for verb, sql in (("read", f"SELECT 1 FROM {rel} WHERE {ident(t.tenant_column)}::text <> %s"),
                          ("delete from", f"DELETE FROM {rel} WHERE {ident(t.tenant_column)}::text <> %s")):
            with _as(enforce_conn, tenant, settings, t.owner):
                state, rows = _attempt(enforce_conn, sql, ("" if tenant is None else str(tenant),))
            if state is None and rows > 0:
                out.append(f"{enforce_conn.info.user} could {verb} {rows} rows of other tenants in chunk {chunk} "
                           f"of {t.name} directly (chunks do not inherit RLS); run `dbkit roles apply`")
            elif state not in (None, DENIED):
                out.append(f"{enforce_conn.info.user} {verb} chunk {chunk} of {t.name}: SQLSTATE {state}, expected "
                           "permission denied")
    return out

