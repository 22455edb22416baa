"""The role-level part of ``dbkit rls audit``: what makes the enforce role or a read-only role escape row-level
security (``enforce_role_privileged``, ``readonly_role_privileged``, ``enforce_role_missing``; see
:mod:`dbkit.rls._audit` for the finding codes)."""

from __future__ import annotations

from collections.abc import Iterable

from dbkit.rls._audit import Finding

ROLE_SQL = """
SELECT r.rolsuper, r.rolbypassrls,
       r.rolcreaterole AND current_setting('server_version_num')::int < 160000, r.rolreplication,
       ARRAY(SELECT b.rolname FROM pg_roles b WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> r.oid
             AND pg_has_role(r.oid, b.oid, 'MEMBER') ORDER BY 1),
       ARRAY(SELECT n.nspname || '.' || c.relname
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
               AND pg_has_role(r.oid, c.relowner, 'USAGE')
             ORDER BY 1)
FROM pg_roles r WHERE r.rolname = %(role)s
"""


def role_findings(role: str, row: tuple | None, kind: str = "enforce") -> Iterable[Finding]:
    code = "readonly_role_privileged" if kind == "read-only" else "enforce_role_privileged"
    if row is None:
        yield Finding("enforce_role_missing", None, None, f"the enforce role {role} does not exist",
                      "run `dbkit roles apply` (or `dbkit migrate`, whose preflight applies the role model), or fix "
                      "DBKIT_ROLE_ENFORCE", role=role)
        return

    def finding(problem: str, fix: str) -> Finding:
        return Finding(code, None, None, f"the {kind} role {role} {problem}", fix, role=role)

    superuser, bypassrls, createrole, replication, powerful, owned = row
    if powerful and not superuser:
        yield finding(f"is a member of {', '.join(powerful)} (superuser or BYPASSRLS): it can SET ROLE around RLS",
                      f"REVOKE {powerful[0]} FROM {role}")
    if superuser:
        yield finding("is a superuser: RLS never applies to it", f"ALTER ROLE {role} NOSUPERUSER")
    if bypassrls:
        yield finding("has BYPASSRLS: RLS never applies to it", f"ALTER ROLE {role} NOBYPASSRLS")
    if createrole and not superuser:
        yield finding("has CREATEROLE: up to PostgreSQL 15 it may grant itself any role but a superuser, the owner "
                      "role or a BYPASSRLS role among them, and SET ROLE around RLS", f"ALTER ROLE {role} NOCREATEROLE")
    if replication and not superuser:
        yield finding("has REPLICATION: where pg_hba.conf allows it a replication connection it may stream the "
                      "server's WAL or take a base backup, every tenant's rows of every database, which row-level "
                      "security never sees",
                      f"ALTER ROLE {role} NOREPLICATION (a standby connects as a role of its own)")
    if owned and not superuser:  # a superuser "owns" everything: already reported
        shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
        yield finding(f"owns (directly or through membership) {len(owned)} tables: {shown}; an owner can disable RLS "
                      "and bypasses it unless forced",
                      f"make the owner role (DBKIT_ROLE_OWNER) own them and revoke its membership from {role}")
