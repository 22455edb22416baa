"""Handing the application schema's objects over to the owner role (dbkit/roles/_handover.py): the step that
adopting a database another tool migrated needs, also when that tool connected as the bootstrap superuser, for
which PostgreSQL refuses ``REASSIGN OWNED``."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from migrate_helpers import q, settings_for

from dbkit import roles
from dbkit.errors import ConfigError, MissingDependency
from dbkit.roles._handover import hand_over, plan
from dbkit.testing.plugin import Server

LEGACY_OBJECTS = """
CREATE TABLE {s}.users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text, embedding vector(3));
CREATE TABLE {s}.events (id serial, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE {s}.events_2026 PARTITION OF {s}.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE VIEW {s}.user_emails AS SELECT email FROM {s}.users;
CREATE MATERIALIZED VIEW {s}.user_count AS SELECT count(*) AS n FROM {s}.users;
CREATE SEQUENCE {s}.invoice_numbers;
CREATE TYPE {s}.mood AS ENUM ('ok', 'meh');
CREATE DOMAIN {s}.email AS text CHECK (VALUE LIKE '%@%');
CREATE FUNCTION {s}.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE PROCEDURE {s}.tidy() LANGUAGE sql AS $$ SELECT 1 $$;
CREATE TABLE {s}.alembic_version (version_num varchar(32) PRIMARY KEY);
"""
HANDED = [  # (kind, name) in the order of hand_over: tables, sequences, views, materialized views, types, routines
    ("TABLE", "events"), ("TABLE", "events_2026"), ("TABLE", "users"), ("SEQUENCE", "invoice_numbers"),
    ("VIEW", "user_emails"), ("MATERIALIZED VIEW", "user_count"), ("DOMAIN", "email"), ("TYPE", "mood"),
    ("PROCEDURE", "tidy()"), ("FUNCTION", "touch()"),
]


@pytest.fixture
def model_roles(pg_url):
    """Role names of this test's own (roles are cluster-wide), dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"owner": f"handover_{tag}_owner", "enforce": f"handover_{tag}_app", "legacy": f"handover_{tag}_legacy"}
    yield names
    for name in names.values():
        q(pg_url, f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                  f"EXECUTE 'DROP OWNED BY {name} CASCADE'; EXECUTE 'DROP ROLE {name}'; END IF; END $$")


def _settings(pg_url, tmp_path, names, schema="public", url=None):
    (tmp_path / "pyproject.toml").write_text(
        f"[project]\nname = 'legacy'\n\n[tool.dbkit]\nextensions = ['vector']\nschema = '{schema}'\n"
        f"version_table_schema = '{schema}'\nrls_model = 'none'\nrole_bypass = 'none'\nrole_readonly = 'none'\n")
    return settings_for(url or pg_url, tmp_path, DBKIT_ROLE_OWNER=names["owner"],
                        DBKIT_ROLE_ENFORCE=names["enforce"], **{f"DBKIT_PASSWORD_{names['enforce'].upper()}": "fake"})


def _owners(pg_url, schema):
    rows = q(pg_url, "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                     "WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i') "
                     "UNION ALL SELECT t.typname, pg_get_userbyid(t.typowner) FROM pg_type t "
                     "WHERE t.typnamespace = %s::regnamespace AND t.typtype IN ('e', 'd') "
                     "UNION ALL SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p "
                     "WHERE p.pronamespace = %s::regnamespace", (schema, schema, schema))
    return dict(rows)


@pytest.mark.integration
def test_objects_of_the_bootstrap_superuser_are_handed_over_where_reassign_is_refused(pg_url, tmp_path, model_roles):
    q(pg_url, LEGACY_OBJECTS.format(s="public"))
    settings = _settings(pg_url, tmp_path, model_roles)
    owner = model_roles["owner"]
    with pytest.raises(ConfigError, match="DBKIT_ROLE_OWNER") as refused:
        plan(settings)
    assert "roles apply" in str(refused.value)
    roles.apply(settings)
    bootstrap = q(pg_url, "SELECT rolname FROM pg_roles WHERE oid = 10")[0][0]
    if pg_url.user == bootstrap:  # the test server's superuser is the bootstrap one: REASSIGN is refused
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match="required by the database system"):
            q(pg_url, f"REASSIGN OWNED BY {bootstrap} TO {owner}")

    planned = plan(settings)
    assert [(h.kind, h.name.removeprefix("public.")) for h in planned] == HANDED
    assert {h.previous_owner for h in planned} == {pg_url.user}
    assert planned[2].statement == f"ALTER TABLE public.users OWNER TO {owner}"
    assert _owners(pg_url, "public")["users"] == pg_url.user  # a plan changes nothing

    assert hand_over(settings) == planned
    owners = _owners(pg_url, "public")
    for name in ("users", "users_id_seq", "users_pkey", "events", "events_id_seq", "events_2026", "user_emails",
                 "user_count", "invoice_numbers", "mood", "email", "touch", "tidy"):
        assert owners[name] == owner, name  # the identity and serial sequences and the index followed their table
    assert owners["alembic_version"] == pg_url.user  # Alembic's bookkeeping, as `roles check` leaves it
    assert owners["vector_in"] == pg_url.user  # an extension's objects stay the extension's
    assert hand_over(settings) == []  # idempotent
    assert not [d for d in roles.check(settings) if d.what.startswith("owner of")]
    # the owner role can now change what the old tool made, as dbkit's revisions do (SET ROLE owner)
    q(pg_url, f"SET ROLE {owner}; ALTER TABLE public.users ADD COLUMN name text; GRANT SELECT ON public.users "
              f"TO {model_roles['enforce']}; RESET ROLE")


@pytest.mark.integration
def test_a_schema_of_its_own_is_handed_over_with_its_objects(pg_url, tmp_path, model_roles):
    legacy = model_roles["legacy"]
    q(pg_url, f"CREATE ROLE {legacy} LOGIN; CREATE SCHEMA crm AUTHORIZATION {legacy}; SET ROLE {legacy}; "
              "CREATE TABLE crm.leads (id int PRIMARY KEY); RESET ROLE")
    settings = _settings(pg_url, tmp_path, model_roles, schema="crm")
    roles.apply(settings)
    done = hand_over(settings)
    assert [(h.kind, h.name, h.previous_owner) for h in done] == [("SCHEMA", "crm", legacy),
                                                                  ("TABLE", "crm.leads", legacy)]
    assert q(pg_url, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'crm'") == \
        [(model_roles["owner"],)]
    assert _owners(pg_url, "crm") == {"leads": model_roles["owner"], "leads_pkey": model_roles["owner"]}


@pytest.mark.integration
def test_a_role_that_may_not_hand_over_changes_nothing_and_names_the_statement(pg_url, tmp_path, model_roles):
    legacy = model_roles["legacy"]
    q(pg_url, f"CREATE ROLE {legacy} LOGIN PASSWORD 'fake-legacy-password'; GRANT CREATE ON SCHEMA public TO "
              f"{legacy}; SET ROLE {legacy}; CREATE TABLE public.a (id int); RESET ROLE")
    roles.apply(_settings(pg_url, tmp_path, model_roles))
    server = Server(pg_url.hosts[0], pg_url.port, pg_url.user, pg_url.password)
    as_legacy = _settings(pg_url, tmp_path, model_roles, url=server.url(pg_url.dbname, user=legacy,
                                                                             password="fake-legacy-password"))
    with pytest.raises(MissingDependency) as refused:
        hand_over(as_legacy)
    message = str(refused.value)
    assert "\n" not in message and "may not give table public.a (owned by" in message, message
    assert f"ALTER TABLE public.a OWNER TO {model_roles['owner']}" in message
    assert _owners(pg_url, "public")["a"] == legacy  # one transaction: nothing changed
