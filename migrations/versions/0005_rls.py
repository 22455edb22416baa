"""row-level security: ENABLE + FORCE on every tenant table, per-command policies

Policies are keyed on current_setting('<tenant claim>', true): unset (NULL) or
empty means no rows (fail closed).  The setting is wrapped in a sub-select so
PostgreSQL evaluates it once per query, not once per row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from alembic import op

import dbkit.migrate

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# table -> column holding the tenant id
TENANT_TABLES = {
    "tenants": "id",
    "users": "tenant_id",
    "documents": "tenant_id",
    "document_chunks": "tenant_id",
    "events": "tenant_id",
    "audit_log": "tenant_id",
}


def _policies(settings):
    claim = f"(SELECT NULLIF(current_setting('{settings.tenant_claim}', true), '')::uuid)"
    enforce, readonly = list(settings.role_enforce), list(settings.role_readonly)
    # the role model's read-only tables ([tool.dbkit.roles]): the application only reads them
    read_only = dbkit.migrate.role_model().read_only_tables
    for table, column in TENANT_TABLES.items():
        match = f"{column} = {claim}"
        yield dict(policy_name=f"{table}_tenant_select", table_name=table, command="SELECT",
                   roles=enforce + readonly, using=match)
        if table in read_only:
            continue
        yield dict(policy_name=f"{table}_tenant_insert", table_name=table, command="INSERT",
                   roles=enforce, with_check=match)
        yield dict(policy_name=f"{table}_tenant_update", table_name=table, command="UPDATE",
                   roles=enforce, using=match, with_check=match)
        yield dict(policy_name=f"{table}_tenant_delete", table_name=table, command="DELETE",
                   roles=enforce, using=match)


def upgrade() -> None:
    settings = dbkit.migrate.settings()
    for table in TENANT_TABLES:
        op.enable_rls(table, schema=settings.schema, force=True)
    for policy in _policies(settings):
        op.create_policy(schema=settings.schema, **policy)


def downgrade() -> None:
    settings = dbkit.migrate.settings()
    for policy in _policies(settings):
        op.drop_policy(policy["policy_name"], policy["table_name"], schema=settings.schema)
    for table in TENANT_TABLES:
        op.disable_rls(table, schema=settings.schema, force=True)
