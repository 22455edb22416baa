"""Scoped sessions: claims per transaction, nothing left behind, no injection, no leaks."""

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbkit.rls import scoped, scoped_session
from dbkit.testing import connect_as

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tenants(dbkit_rls_db):
    with psycopg.connect(dbkit_rls_db.conninfo) as admin:
        rows = admin.execute("SELECT tenant_id::text, count(*) FROM app.documents GROUP BY 1 ORDER BY 1").fetchall()
    return dict(rows)


@pytest.fixture
def app_conn(dbkit_server, dbkit_rls_db, dbkit_settings):
    with connect_as(dbkit_server, dbkit_rls_db, dbkit_settings, "enforce") as conn:
        yield conn


def claim(conn):
    return conn.execute("SELECT current_setting('app.tenant_id', true), current_setting('app.user_id', true)").fetchone()


def test_scoped_sets_claims_for_one_transaction_only(app_conn, tenants):
    tenant = next(iter(tenants))
    with scoped(app_conn, tenant_id=tenant, user_id="u-1"):
        assert claim(app_conn) == (tenant, "u-1")
        assert app_conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == tenants[tenant]
    app_conn.rollback()
    assert claim(app_conn)[0] in (None, "")  # nothing left on the connection
    assert app_conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == 0
    app_conn.rollback()


def test_scoped_refuses_to_nest_inside_a_transaction(app_conn):
    app_conn.execute("SELECT 1")  # opens a transaction (autocommit is off)
    with pytest.raises(RuntimeError, match="must start its own transaction"), scoped(app_conn, tenant_id="x"):
        pass
    app_conn.rollback()


def test_scoped_with_role_and_rollback_on_error(dbkit_rls_db, tenants):
    tenant = next(iter(tenants))
    with psycopg.connect(dbkit_rls_db.conninfo) as conn:
        with pytest.raises(ZeroDivisionError), scoped(conn, tenant_id=tenant, role="app_rls"):
            assert conn.execute("SELECT current_user").fetchone()[0] == "app_rls"
            1 / 0
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
        assert claim(conn)[0] in (None, "")


def test_sqlalchemy_session_variant(dbkit_server, dbkit_rls_db, tenants):
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    url = dbkit_server.url(dbkit_rls_db.dbname, user="app_rls")
    engine = create_engine(url.sqlalchemy_url)
    tenant = next(iter(tenants))
    with Session(engine) as session:
        with scoped_session(session, tenant_id=tenant):
            n = session.execute(text("SELECT count(*) FROM app.documents")).scalar()
        assert n == tenants[tenant]
        assert session.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar() in (None, "")
        session.rollback()
    engine.dispose()


def test_sqlalchemy_session_variant_enters_a_role_whose_name_needs_quoting(dbkit_rls_db, tenants):
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    role = "App %rls:x"  # capitals, a space, a % and a colon: quoted, and read by SQLAlchemy as neither
    with psycopg.connect(dbkit_rls_db.conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" IN ROLE app_rls')
    engine = create_engine(dbkit_rls_db.sqlalchemy_url)
    tenant = next(iter(tenants))
    try:
        with Session(engine) as session:
            with scoped_session(session, tenant_id=tenant, role=role):
                assert session.execute(text("SELECT current_user")).scalar() == role
                assert session.execute(text("SELECT count(*) FROM app.documents")).scalar() == tenants[tenant]
    finally:
        engine.dispose()
        with psycopg.connect(dbkit_rls_db.conninfo, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')


claims = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["' OR 1=1 --", "'; DROP TABLE app.documents; --", "00000000-0000-0000-0000-000000000000",
                     "NULL", "", " ", "\\x00", "ᚠᛇᚻ᛫ᛒᛦᚦ", "x" * 10_000]),
    st.uuids().map(str),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=claims, use_known=st.booleans())
def test_arbitrary_claims_never_expose_another_tenant(app_conn, tenants, value, use_known):
    if use_known:
        value = list(tenants)[len(value) % len(tenants)]
    value = value.replace("\x00", "")  # PostgreSQL text cannot hold NUL; psycopg refuses it client-side
    try:
        with scoped(app_conn, tenant_id=value):
            rows = app_conn.execute("SELECT tenant_id::text, count(*) FROM app.documents GROUP BY 1").fetchall()
    except psycopg.errors.InvalidTextRepresentation:  # not a uuid: a clean error (22P02), no rows
        app_conn.rollback()
        return
    seen = dict(rows)
    assert set(seen) <= {value}, f"claim {value!r} exposed tenants {set(seen) - {value}}"
    assert seen.get(value, 0) == tenants.get(value, 0)
    assert app_conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == 0  # and nothing lingers
    app_conn.rollback()
