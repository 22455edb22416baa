"""notes with RLS, and one policy that leaks: SELECT USING (true)

Revision ID: 0001
"""

from alembic import op

import dbkit.migrate

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = dbkit.migrate.settings()
    op.apply_roles()
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.execute("CREATE TABLE app.notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
               "tenant_id uuid NOT NULL, body text NOT NULL)")
    op.enable_rls("notes", schema="app")
    claim = f"tenant_id = (SELECT NULLIF(current_setting('{s.tenant_claim}', true), '')::uuid)"
    roles = [s.role_enforce, s.role_readonly]
    op.create_policy("notes_select", "notes", schema="app", command="SELECT", roles=roles,
                     using="true")  # the leak the RLS matrix must catch
    op.create_policy("notes_insert", "notes", schema="app", command="INSERT", roles=[s.role_enforce],
                     with_check=claim)
    op.create_policy("notes_update", "notes", schema="app", command="UPDATE", roles=[s.role_enforce],
                     using=claim, with_check=claim)
    op.create_policy("notes_delete", "notes", schema="app", command="DELETE", roles=[s.role_enforce], using=claim)
    op.grant(["USAGE"], "app", object_type="SCHEMA", roles=[s.role_enforce, s.role_bypass, s.role_readonly])
    op.grant(["SELECT", "INSERT", "UPDATE", "DELETE"], "notes", schema="app", roles=[s.role_enforce, s.role_bypass])
    op.grant(["SELECT"], "notes", schema="app", roles=[s.role_readonly])


def downgrade() -> None:
    op.execute("DROP SCHEMA app CASCADE")
