"""Autogenerate writes what dbkit's own revisions say by hand (issue 12, item 7): the configured schema as a
name, RLS and per-command policies on the RLS model's predicate for new tenant tables, the role model's
grants, and vector indexes built concurrently; the downgrade undoes it.  Each generated revision is applied
to a real PostgreSQL and proved: the audit, the enforce role's view through ``dbkit.rls.scoped`` and a
downgrade/upgrade round trip."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest
from conftest import clean_env
from migrate_helpers import copy_reference_project, make_project, q, revision, settings_for

import dbkit.rls
from dbkit import roles
from dbkit.migrate import _runner as runner
from dbkit.rls._audit import audit

TENANT_A = "00000000-0000-4000-8000-00000000000a"
TENANT_B = "00000000-0000-4000-8000-00000000000b"
USER_A = "00000000-0000-4000-8000-0000000000a1"
USER_B = "00000000-0000-4000-8000-0000000000b1"

# appended to the reference project's migrations/models.py
NOTES = '''

notes = Table(
    "notes", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("body", Text, nullable=False),
    Column("embedding", Vector(3), nullable=False),
    Index("notes_tenant_idx", "tenant_id"),
    Index("notes_embedding_hnsw_idx", "embedding", postgresql_using="hnsw",
          postgresql_with={"m": 16, "ef_construction": 64}, postgresql_ops={"embedding": "vector_cosine_ops"}),
)
Index("documents_title_idx", documents.c.title)
'''

BOOKMARKS = '''

bookmarks = Table(
    "bookmarks", metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", UUID, nullable=False),
    Column("url", Text, nullable=False),
)
'''

TENANT_PREDICATE = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
JWT_PREDICATE = "(SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'sub', '')::uuid)"


def _project_with(tmp_path, models_tail: str):
    project = copy_reference_project(tmp_path / "proj")
    models = project / "migrations" / "models.py"
    models.write_text(models.read_text() + models_tail)
    return project


def _sections(text: str) -> tuple[str, str]:
    up, _, down = text.partition("def downgrade()")
    return up, down


def _flat(text: str) -> str:
    """``text`` with every run of whitespace as one space (lines are wrapped at argument boundaries)."""
    return " ".join(text.split())


def _generate_with_cli(project, url) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "dbkit", "migrate", "new", "-m", "notes", "--autogenerate"], cwd=project,
        env=clean_env(DATABASE_URL=url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(project)),
        capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr
    [path] = [p for p in (project / "migrations" / "versions").glob("*_notes.py")]
    return path.read_text()


def _table_findings(settings, url, table: str):
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        report = audit(settings, conn)
    return [f.line() for f in report.findings if f.table == table]


def _role_drifts(settings, url, table: str):
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        drifts = roles.check(settings, conn)
    return [d for d in drifts if table in (d.object or "") or table in d.what]


def _visible(url, claims, role: str, **who) -> list[str]:
    """The owner column of every row ``role`` sees in the new table with the claims of ``who``."""
    table, column = ("app.notes", "tenant_id") if "tenant_id" in who else ("app.bookmarks", "user_id")
    with psycopg.connect(url.conninfo) as conn, dbkit.rls.scoped(conn, role=role, claims=claims, **who):
        return sorted(str(r[0]) for r in conn.execute(f"SELECT {column} FROM {table}"))


# --------------------------------------------------------------------- tenant claim, schema app

def test_new_tenant_table_gets_rls_policies_grants_and_a_concurrent_vector_index(tmp_path, pg_url):
    project = _project_with(tmp_path, NOTES)
    settings = settings_for(pg_url, project)
    runner.upgrade(settings)
    diffs = runner.check(settings).schema_diffs
    assert len(diffs) == 4, diffs  # migrate check reports Alembic's differences only, not dbkit's additions
    assert not any("rls" in d or "policy" in d or "grant" in d for d in diffs)

    text = _generate_with_cli(project, pg_url)
    up, down = _sections(text)
    assert "import dbkit.migrate" in text
    assert "settings = dbkit.migrate.settings()" in up and "schema = settings.schema" in up
    assert "schema='app'" not in text and "'app.tenants" not in text, "the schema follows DBKIT_SCHEMA"
    assert "[f'{schema}.tenants.id']" in up and "op.create_table('notes'," in up
    assert "op.enable_rls('notes', schema=schema)" in up
    for command in ("select", "insert", "update", "delete"):
        assert f"op.create_policy('notes_tenant_{command}', 'notes', schema=schema, command='{command.upper()}'" in up
    assert f'using="tenant_id = {TENANT_PREDICATE}"' in up and f'with_check="tenant_id = {TENANT_PREDICATE}"' in up
    assert "roles=(settings.role_enforce, settings.role_readonly)" in up
    assert ("op.grant(['SELECT', 'INSERT', 'UPDATE', 'DELETE'], 'notes', schema=schema, "
            "roles=settings.role_enforce)") in up
    assert "if settings.role_readonly:\n        op.grant(['SELECT'], 'notes', schema=schema" in up
    assert ("op.create_vector_index('notes', 'embedding', schema=schema, method='hnsw', ops='vector_cosine_ops',"
            in up)
    assert "with_={'m': 16, 'ef_construction': 64}, index_name='notes_embedding_hnsw_idx')" in up
    assert "op.create_index('notes_tenant_idx', 'notes', ['tenant_id'], unique=False, schema=schema)" in up
    assert "op.create_index_concurrently('documents_title_idx', 'documents', ['title'], schema=schema)" in up
    assert up.index("op.grant(") < up.index("CONCURRENTLY, outside") < up.index("op.create_vector_index(")
    order = [down.index(s) for s in ("op.drop_index_concurrently('notes_embedding_hnsw_idx', schema=schema)",
                                     "op.revoke(['SELECT', 'INSERT', 'UPDATE', 'DELETE'], 'notes'",
                                     "op.drop_policy('notes_tenant_select', 'notes', schema=schema)",
                                     "op.disable_rls('notes', schema=schema)",
                                     "op.drop_table('notes', schema=schema)")]
    assert order == sorted(order), down
    assert "op.drop_index_concurrently('documents_title_idx', schema=schema)" in down

    runner.upgrade(settings)
    assert runner.check(settings).clean
    assert _table_findings(settings, pg_url, "notes") == []
    assert _role_drifts(settings, pg_url, "notes") == []
    assert q(pg_url, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'app.notes'::regclass") \
        == [(True, True)]
    assert q(pg_url, "SELECT i.indisvalid, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                     "JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'notes_embedding_hnsw_idx'") \
        == [(True, "hnsw")]

    q(pg_url, "INSERT INTO app.tenants (id, slug, name) VALUES (%s, 'a', 'A'), (%s, 'b', 'B')", (TENANT_A, TENANT_B))
    q(pg_url, "INSERT INTO app.notes (tenant_id, body, embedding) VALUES "
              "(%(a)s, 'a1', '[1,0,0]'), (%(a)s, 'a2', '[0,1,0]'), (%(b)s, 'b1', '[0,0,1]')",
      {"a": TENANT_A, "b": TENANT_B})
    claims = dbkit.rls.claims(settings)
    assert _visible(pg_url, claims, "app_rls", tenant_id=TENANT_A) == [TENANT_A, TENANT_A]
    assert _visible(pg_url, claims, "app_rls", tenant_id=TENANT_B) == [TENANT_B]
    assert _visible(pg_url, claims, "app_readonly", tenant_id=TENANT_B) == [TENANT_B]
    with psycopg.connect(pg_url.conninfo) as conn:
        with dbkit.rls.scoped(conn, role="app_rls", claims=claims):
            assert conn.execute("SELECT count(*) FROM app.notes").fetchone()[0] == 0  # no claim: no rows
        with dbkit.rls.scoped(conn, tenant_id=TENANT_A, role="app_rls", claims=claims):
            nearest = conn.execute("SELECT body FROM app.notes ORDER BY embedding <=> '[0,0.1,1]' LIMIT 1").fetchone()
            assert nearest == ("a2",)  # the nearest of A's own rows; B's closer one stays invisible
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with dbkit.rls.scoped(conn, tenant_id=TENANT_A, role="app_rls", claims=claims):
                conn.execute("INSERT INTO app.notes (tenant_id, body, embedding) VALUES (%s, 'x', '[1,1,1]')",
                             (TENANT_B,))

    runner.downgrade(settings, "-1")
    assert q(pg_url, "SELECT to_regclass('app.notes'), to_regclass('app.documents_title_idx')") == [(None, None)]
    assert q(pg_url, "SELECT count(*) FROM pg_policies WHERE tablename = 'notes'") == [(0,)]
    runner.upgrade(settings)
    assert runner.check(settings).clean
    assert _table_findings(settings, pg_url, "notes") == []


# --------------------------------------------------------------------- JSON claims, rows owned per user

def test_jwt_model_owns_rows_per_user(tmp_path, pg_url):
    project = _project_with(tmp_path, BOOKMARKS)
    settings = settings_for(pg_url, project, DBKIT_RLS_MODEL="jwt")
    runner.upgrade(settings)
    up, down = _sections(runner.new(settings, "bookmarks", autogenerate=True).read_text())
    assert "op.enable_rls('bookmarks', schema=schema)" in up
    assert f'using="user_id = {JWT_PREDICATE}"' in up
    assert "op.create_policy('bookmarks_user_insert', 'bookmarks', schema=schema, command='INSERT'" in up
    assert "op.grant(" in up and "op.drop_policy('bookmarks_user_select', 'bookmarks', schema=schema)" in down

    runner.upgrade(settings)
    assert runner.check(settings).clean
    assert _table_findings(settings, pg_url, "bookmarks") == []
    assert _role_drifts(settings, pg_url, "bookmarks") == []
    q(pg_url, "INSERT INTO app.bookmarks (user_id, url) VALUES (%(a)s, 'https://a/1'), (%(a)s, 'https://a/2'), "
              "(%(b)s, 'https://b/1')", {"a": USER_A, "b": USER_B})
    claims = dbkit.rls.claims(settings)
    assert claims.model == "jwt"
    assert _visible(pg_url, claims, "app_rls", user_id=USER_A) == [USER_A, USER_A]
    assert _visible(pg_url, claims, "app_rls", user_id=USER_B) == [USER_B]
    with psycopg.connect(pg_url.conninfo) as conn:
        with dbkit.rls.scoped(conn, user_id=USER_A, role="app_rls", claims=claims):  # an identity column: no sequence grant needed
            conn.execute("INSERT INTO app.bookmarks (user_id, url) VALUES (%s, 'https://a/3')", (USER_A,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with dbkit.rls.scoped(conn, user_id=USER_A, role="app_rls", claims=claims):
                conn.execute("INSERT INTO app.bookmarks (user_id, url) VALUES (%s, 'https://b/2')", (USER_B,))
    runner.downgrade(settings, "-1")
    assert q(pg_url, "SELECT to_regclass('app.bookmarks')") == [(None,)]
    runner.upgrade(settings)
    assert runner.check(settings).clean


# --------------------------------------------------------------------- no RLS, schema public

PUBLIC_ENV = '''
import importlib.util
from pathlib import Path

from dbkit.migrate.env import run

_spec = importlib.util.spec_from_file_location("dbkit_autogen_models", Path(__file__).with_name("models.py"))
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)
run(target_metadata=models.metadata)
'''

PUBLIC_MODELS = '''
from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, Column, Identity, Index, Integer, MetaData, Table, Text

metadata = MetaData()

items = Table(
    "items", metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("tenant_id", BigInteger),
    Column("name", Text, nullable=False),
    Column("embedding", Vector(3)),
    Index("items_embedding_idx", "embedding", postgresql_using="hnsw"),
)

tags = Table(
    "tags", metadata,
    Column("id", Integer, primary_key=True),  # serial: INSERT needs its sequence
    Column("name", Text, nullable=False),
)
'''


def test_none_model_in_public_gets_grants_only(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_base.py": revision("0001", None, "pass", doc="base")},
                           pyproject_extra='schema = "public"\nrls_model = "none"\n')
    (project / "migrations" / "env.py").write_text(textwrap.dedent(PUBLIC_ENV).lstrip())
    (project / "migrations" / "models.py").write_text(textwrap.dedent(PUBLIC_MODELS).lstrip())
    settings = settings_for(pg_url, project)
    assert settings.schema == "public" and settings.rls_model == "none"
    runner.upgrade(settings)
    # plain alembic, same env.py: `alembic check` reports Alembic's differences, `revision` writes dbkit's
    env = clean_env(DATABASE_URL=pg_url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(project))
    alembic = [sys.executable, "-m", "alembic"]
    res = subprocess.run([*alembic, "check"], cwd=project, env=env, capture_output=True, text=True, timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "add_table" in out and "grant" not in out, out
    res = subprocess.run([*alembic, "revision", "--autogenerate", "-m", "items"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    [path] = (project / "migrations" / "versions").glob("*_items.py")
    up, down = _sections(path.read_text())
    assert "enable_rls" not in up and "create_policy" not in up and "row-level security" not in up
    assert "op.create_table('items'," in up and "schema=schema" in up, "the default schema is written out too"
    assert "op.grant(['SELECT', 'INSERT', 'UPDATE', 'DELETE'], 'items', schema=schema" in up
    assert ("op.create_vector_index('items', 'embedding', schema=schema, method='hnsw', ops='vector_l2_ops', "
            "index_name='items_embedding_idx')") in _flat(up)
    assert "op.revoke(" in down and "op.drop_table('items', schema=schema)" in down

    runner.upgrade(settings)
    assert runner.check(settings).clean, runner.check(settings).schema_diffs
    assert q(pg_url, "SELECT relrowsecurity, pg_get_userbyid(relowner) FROM pg_class "
                     "WHERE oid = 'public.items'::regclass") == [(False, "app_owner")]
    assert q(pg_url, "SELECT has_table_privilege('app_rls', 'public.items', 'INSERT'), "
                     "has_table_privilege('app_full', 'public.items', 'DELETE'), "
                     "has_table_privilege('app_readonly', 'public.items', 'SELECT'), "
                     "has_table_privilege('app_readonly', 'public.items', 'INSERT')") == [(True, True, True, False)]
    assert _role_drifts(settings, pg_url, "items") == []
    assert "op.grant(['USAGE'], 'tags_id_seq', schema=schema, object_type='SEQUENCE', roles=settings.role_enforce)" \
        in _flat(up)
    assert "'items_id_seq'" not in up, "an identity column needs no sequence grant"
    for role in ("app_rls", "app_full"):
        with psycopg.connect(pg_url.conninfo) as conn, conn.transaction():
            conn.execute(f"SET LOCAL ROLE {role}")
            conn.execute("INSERT INTO public.tags (name) VALUES ('t'); INSERT INTO public.items (name) VALUES ('i')")
    runner.downgrade(settings, "-1")
    assert q(pg_url, "SELECT to_regclass('public.items'), to_regclass('public.tags')") == [(None, None)]
    runner.upgrade(settings)
    assert runner.check(settings).clean


# --------------------------------------------------------------------- the rules, without a database

def _settings(tmp_path, pyproject_extra: str = "", **env: str):
    from dbkit.config import load_settings

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'sample'\n\n[tool.dbkit]\n" + pyproject_extra)
    return load_settings(environ={"DBKIT_ENV": "test", **env}, cwd=tmp_path)


def _protect(settings, table) -> str:
    """What dbkit adds after ``op.create_table`` for ``table``, as the revision shows it."""
    from alembic.operations import ops

    from dbkit.migrate._autogen import Planner
    from dbkit.migrate._autogen_render import Call, render_call

    lines = []
    for op in Planner(settings, None).protect(ops.CreateTableOp.from_table(table)):
        lines += render_call(op) if isinstance(op, Call) else [f"# {op.text}"]
    return _flat("\n".join(line for line in lines if line))


@pytest.mark.unit
def test_owner_column_read_only_tables_and_tables_without_an_owner(tmp_path):
    from sqlalchemy import BigInteger, Column, MetaData, Table, Text

    settings = _settings(tmp_path, '[tool.dbkit.roles]\nread_only_tables = ["orgs"]\n'
                                   '[tool.dbkit.rls.tables.orgs]\ntenant_column = "id"\n')
    meta = MetaData(schema="app")
    orgs = Table("orgs", meta, Column("id", BigInteger, primary_key=True), Column("name", Text))
    text = _protect(settings, orgs)
    assert ("op.create_policy('orgs_tenant_select', 'orgs', schema=schema, command='SELECT', "
            "roles=(settings.role_enforce, settings.role_readonly), "
            "using=\"id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::bigint)\")") in text
    assert "command='INSERT'" not in text and "command='DELETE'" not in text, "a read-only table: SELECT only"
    assert "op.grant(['SELECT'], 'orgs', schema=schema, roles=settings.role_enforce)" in text

    lookup = Table("lookup", meta, Column("code", Text, primary_key=True))
    text = _protect(settings, lookup)
    assert "enable_rls" not in text and "create_policy" not in text
    assert "# dbkit: lookup has no tenant_id column, so no row-level security is generated" in text
    assert "op.grant(['SELECT', 'INSERT', 'UPDATE', 'DELETE'], 'lookup', schema=schema" in text


@pytest.mark.unit
def test_owner_per_user_with_a_configured_column_and_a_reserved_word(tmp_path):
    from sqlalchemy import Column, MetaData, Table, Text

    settings = _settings(tmp_path, '[tool.dbkit.rls]\nowner = "user"\nuser_column = "user"\n')
    table = Table("prefs", MetaData(schema="app"), Column("user", Text, primary_key=True))
    text = _protect(settings, table)
    assert "op.create_policy('prefs_user_update', 'prefs', schema=schema, command='UPDATE'" in text
    predicate = '"user" = (SELECT NULLIF(current_setting(\'app.user_id\', true), \'\'))'
    assert f"using={predicate!r}" in text, "quoted (user is a reserved word), compared as text"


@pytest.mark.unit
def test_an_owner_the_model_cannot_express_is_one_clear_line(tmp_path):
    from sqlalchemy import Column, MetaData, Table, Text

    from dbkit.errors import ConfigError

    settings = _settings(tmp_path, '[tool.dbkit.rls]\nowner = "tenant"\n', DBKIT_RLS_MODEL="jwt")
    table = Table("t", MetaData(schema="app"), Column("tenant_id", Text, primary_key=True))
    with pytest.raises(ConfigError) as err:
        _protect(settings, table)
    assert str(err.value) == ("[tool.dbkit.rls] owner is 'tenant', which the RLS model (JSON claims in "
                              "request.jwt.claims (user key sub)) cannot express (it can: user); "
                              'example: owner = "user"')


@pytest.mark.unit
def test_include_name_knows_the_default_schema_and_skips_the_version_table():
    from dbkit.migrate._autogen import include_name

    public = include_name({"public"}, default_schema="public", version_table=("public", "alembic_version"))
    assert public(None, "schema", {}) and public("public", "schema", {})
    assert not public("dbkit", "schema", {})
    assert not public("alembic_version", "table", {"schema_name": None})
    assert public("items", "table", {"schema_name": None})
    app = include_name({"app"}, default_schema="public", version_table=("dbkit", "alembic_version"))
    assert app("app", "schema", {}) and not app(None, "schema", {})
    assert app("alembic_version", "table", {"schema_name": "app"})


@pytest.mark.unit
def test_settle_schema_writes_the_schema_as_a_name():
    from dbkit.migrate._autogen_render import settle_schema

    text = ("op.create_table('t',\nsa.Column('schema', sa.Text(), comment='app.x'),\n"
            "sa.ForeignKeyConstraint(['a'], ['app.tenants.id'], ),\nschema='app'\n)")
    assert settle_schema(text, "app") == ("op.create_table('t',\nsa.Column('schema', sa.Text(), comment='app.x'),\n"
                                          "sa.ForeignKeyConstraint(['a'], [f'{schema}.tenants.id'], ),\n"
                                          "schema=schema\n)")
    assert settle_schema("op.create_foreign_key(None, 't', 'u', ['a'], ['id'], source_schema='app', "
                         "referent_schema='other')", "app") == (
        "op.create_foreign_key(None, 't', 'u', ['a'], ['id'], source_schema=schema, referent_schema='other')")


def test_cli_refuses_an_owner_the_model_cannot_express(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_base.py": revision("0001", None, "pass", doc="base")},
                           pyproject_extra='rls_model = "jwt"\n[tool.dbkit.rls]\nowner = "tenant"\n')
    (project / "migrations" / "env.py").write_text(textwrap.dedent(PUBLIC_ENV).lstrip())
    (project / "migrations" / "models.py").write_text(
        "from sqlalchemy import Column, MetaData, Table, Text\n\nmetadata = MetaData(schema='app')\n"
        "t = Table('t', metadata, Column('tenant_id', Text, primary_key=True))\n")
    env = clean_env(DATABASE_URL=pg_url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(project))
    assert subprocess.run([sys.executable, "-m", "dbkit", "migrate"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=180, check=False).returncode == 0
    res = subprocess.run([sys.executable, "-m", "dbkit", "migrate", "new", "-m", "t", "--autogenerate"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "dbkit: error: [tool.dbkit.rls] owner is 'tenant', which the RLS model (JSON claims in request.jwt.claims "
        "(user key sub)) cannot express (it can: user); example: owner = \"user\""]
    assert not list((project / "migrations" / "versions").glob("*_t.py"))


@pytest.mark.unit
def test_names_are_quoted_as_postgresql_reads_them_in_rendered_and_run_sql():
    """Quoted when needed, with one % (the psycopg dialect's quoting doubles it, and so does text() when the
    statement runs: the revision's predicate and the operations' statements would name "a%%b")."""
    from sqlalchemy.dialects import postgresql

    from dbkit.migrate._autogen import _ident
    from dbkit.migrate._ops_common import quote_name

    assert [_ident(n) for n in ("tenant_id", "user", "Owner", "a%b")] == ["tenant_id", '"user"', '"Owner"', '"a%b"']
    for dialect in (postgresql.psycopg.dialect(), postgresql.dialect(paramstyle="named")):
        assert [quote_name(dialect, n) for n in ("app_owner", "a%b", "a%%b", 'x"y')] == [
            "app_owner", '"a%b"', '"a%%b"', '"x""y"']
