"""CleanMateX's row-level security, proven on a real PostgreSQL by dbkit's pytest plugin (`pytest`).

The plugin starts a server (or uses DBKIT_TEST_SERVER_URL), migrates a database to head and seeds it (tiny
profile).  The two imported tests are the RLS matrix (cmx_app, cmx_service and cmx_readonly x SELECT/INSERT/
UPDATE/DELETE on every table: each tenant organisation sees and changes exactly its own rows, each user their
own preferences) and the escalation checks.  Below: the claims exactly as Supabase/PostgREST set them.
"""

import json
import uuid

import psycopg
import pytest

from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401


def _admin(url):
    return psycopg.connect(url.conninfo)


def _two_tenants(url):
    """The two tenants with the most orders, and their order counts (read as the superuser: no RLS)."""
    with _admin(url) as admin:
        return admin.execute("SELECT tenant_org_id, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2"
                             ).fetchall()


def _postgrest_claims(conn, **claims):
    """What PostgREST does per request: the JWT's claims as one JSON setting, local to the transaction."""
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def test_staff_user_sees_only_their_organisations_orders(as_role, dbkit_seeded_db):
    (mine, count), (other, _) = _two_tenants(dbkit_seeded_db)
    with as_role("enforce") as conn:
        _postgrest_claims(conn, sub=str(uuid.uuid4()), tenant_org_id=str(mine), role="authenticated",
                          email="staff@example.com", aud="authenticated")
        assert conn.execute("SELECT tenant_org_id, count(*) FROM orders GROUP BY 1").fetchall() == [(mine, count)]
        assert conn.execute("UPDATE orders SET status = 'ready' WHERE tenant_org_id = %s", (other,)).rowcount == 0
        assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] == 1  # its own organisation only


def test_an_order_cannot_be_written_into_another_organisation(as_role, dbkit_seeded_db):
    (mine, _), (other, _) = _two_tenants(dbkit_seeded_db)
    with _admin(dbkit_seeded_db) as admin:
        customer = admin.execute("SELECT id FROM customers WHERE tenant_org_id = %s LIMIT 1", (other,)).fetchone()[0]
    with as_role("enforce", tenant=mine) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO orders (tenant_org_id, customer_id, order_no, total) VALUES (%s, %s, 'X-1', 1)",
                     (other, customer))


def test_an_order_cannot_point_at_another_organisations_customer(as_role, dbkit_seeded_db):
    """Even the service role (BYPASSRLS) cannot: the foreign key includes tenant_org_id."""
    (mine, _), (other, _) = _two_tenants(dbkit_seeded_db)
    with _admin(dbkit_seeded_db) as admin:
        customer = admin.execute("SELECT id FROM customers WHERE tenant_org_id = %s LIMIT 1", (other,)).fetchone()[0]
    with as_role("bypass") as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO orders (tenant_org_id, customer_id, order_no, total) VALUES (%s, %s, 'X-2', 1)",
                     (mine, customer))


def test_preferences_are_per_user_even_inside_one_organisation(as_role, dbkit_seeded_db):
    with _admin(dbkit_seeded_db) as admin:
        tenant, users = admin.execute("SELECT tenant_org_id, array_agg(user_id ORDER BY user_id) FROM user_preferences "
                                      "GROUP BY 1 HAVING count(*) >= 2 ORDER BY 1 LIMIT 1").fetchone()
    with as_role("enforce") as conn:
        _postgrest_claims(conn, sub=str(users[0]), tenant_org_id=str(tenant), role="authenticated")
        assert conn.execute("SELECT user_id FROM user_preferences").fetchall() == [(users[0],)]
        assert conn.execute("UPDATE user_preferences SET locale = 'ar' WHERE user_id = %s", (users[1],)).rowcount == 0


def test_no_claims_no_rows(as_role):
    """An anonymous request (no JWT) or a token without the organisation: fail closed."""
    with as_role("enforce") as conn:
        for table in ("tenants", "customers", "orders", "order_items", "user_preferences"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        _postgrest_claims(conn, sub=str(uuid.uuid4()), role="authenticated")  # no tenant_org_id
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
