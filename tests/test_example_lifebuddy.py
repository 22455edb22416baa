"""examples/lifebuddy end to end (issue 14): Life-Buddy's cognitive engine on pgvector, every user-owned
table protected per user by the JWT `sub`, the engine as cognitive_engine_rls and its trusted jobs as
cognitive_engine_full, passwords from POSTGRES_USER_RLS_PASS / POSTGRES_USER_FULL_PASS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util

from example_harness import example_env  # noqa: F401  (the fixture)

from dbkit.config import load_settings
from dbkit.errors import DbkitError

RLS_PASS = "fake-rls-test-password"  # examples/lifebuddy/tests/fake_values.txt
FULL_PASS = "fake-full-test-password"


def _engine(app, **env: str):
    """The example's engine/db.py (loaded from the copy under a name of its own) and the example's settings
    in the environment of its commands (plus ``env``)."""
    spec = importlib.util.spec_from_file_location("lifebuddy_engine_db", app.root / "engine" / "db.py")
    db = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(db)
    return db, load_settings(environ=app.environ(**env), cwd=app.root)


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` was made from ``password``."""
    method, params, keys = verifier.split("$")
    iterations, salt = params.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and base64.b64decode(keys.split(":")[0]) == hashlib.sha256(client_key).digest()


def test_lifebuddy_end_to_end(example_env):  # noqa: F811
    app = example_env("lifebuddy")
    app.lifecycle()

    # the audit covers the four user-owned tables, as the enforce role of the example
    audit = app.roles_and_rls()
    assert "4 tables checked in app (enforce role cognitive_engine_rls)" in audit and "0 errors" in audit, audit
    roles = dict(app.sql("SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
                         (["cognitive_engine_rls", "cognitive_engine_full"],)))
    assert roles == {"cognitive_engine_rls": False, "cognitive_engine_full": True}
    owner = app.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'app'")
    assert owner == [("lifebuddy_owner",)]
    assert app.sql("SELECT indexdef FROM pg_indexes WHERE indexname = 'memories_embedding_hnsw_idx'")[0][0].count(
        "hnsw (embedding vector_cosine_ops)") == 1

    # the retention of the README: a dry run keeps the backup just made
    out = app.run("backup", "prune", "--from", f"s3://{app.bucket}/lifebuddy", "--keep-daily", "7", "--keep-weekly",
                  "4", "--keep-monthly", "6")
    assert out.stdout.startswith("keep ") and "daily" in out.stdout and "\ndelete" not in out.stdout, out.stdout

    # the engine logs in as cognitive_engine_rls with the password of .env.test, and one user's similarity
    # search, through dbkit.rls.scoped(conn, user_id=sub), sees that user's memories only
    db, settings = _engine(app)
    memories = app.sql("SELECT user_id, id, embedding::text FROM app.memories ORDER BY user_id, id")
    alice, _, embedding = memories[0]
    bob = next(user for user, _, _ in memories if user != alice)
    query = [float(x) for x in embedding.strip("[]").split(",")]
    with db.connect(settings) as conn:
        assert conn.info.user == "cognitive_engine_rls"
        hits = db.similar_memories(conn, settings, alice, query, k=100)
        assert hits and {user for _, user, _, _ in hits} == {alice}
        assert len(hits) == sum(1 for user, _, _ in memories if user == alice)
        assert all(user == bob for _, user, _, _ in db.similar_memories(conn, settings, bob, query, k=100))
        assert db.similar_memories(conn, settings, None, query, k=100) == []
    with db.connect(settings, trusted=True) as conn:  # a trusted job sees every user's memories
        assert conn.info.user == "cognitive_engine_full"
        assert conn.execute("SELECT count(*) FROM app.memories").fetchone()[0] == len(memories)
    # the passwords dbkit set are the ones of .env.test, stored as SCRAM verifiers only (checked against the
    # verifier itself: the test server trusts local connections, so a login would prove nothing)
    for role, password in (("cognitive_engine_rls", RLS_PASS), ("cognitive_engine_full", FULL_PASS)):
        stored = app.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))[0][0]
        assert password not in stored and _scram_matches(stored, password), role

    # prod: without POSTGRES_USER_RLS_PASS / POSTGRES_USER_FULL_PASS, nothing starts (.env.test is not read
    # in prod; DBKIT_BACKUP_URI on S3 as prod wants it, so only the passwords are missing)
    prod = {"DBKIT_ENV": "prod", "DBKIT_BACKUP_URI": f"s3://{app.bucket}/lifebuddy"}
    for command in (("migrate",), ("check",)):
        out = app.run(*command, ok=False, **prod)
        assert out.returncode != 0, out.stdout
        text = out.stderr if command == ("migrate",) else out.stdout + out.stderr
        assert "POSTGRES_USER_RLS_PASS" in text and "POSTGRES_USER_FULL_PASS" in text, (command, text)
        if command == ("migrate",):
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = app.run("migrate", ok=False, POSTGRES_USER_RLS_PASS=RLS_PASS, **prod)
    assert out.returncode != 0 and "POSTGRES_USER_FULL_PASS" in out.stderr, out.stderr
    assert "POSTGRES_USER_RLS_PASS" not in out.stderr, out.stderr
    # section V's variables (declared in [tool.dbkit.variables]): one line each, the secrets never shown
    out = app.run("config", "check", ok=False, **prod)
    assert out.returncode == 2, out.stdout
    for variable in ("JWT_SECRET_KEY", "JWT_ALGORITHM", "APP_SECRET_KEY", "REDIS_HOST", "REDIS_PORT", "OLLAMA_HOST",
                     "OLLAMA_MODEL", "POSTGRES_USER_RLS_PASS"):
        assert variable in out.stdout + out.stderr, (variable, out.stdout, out.stderr)
    # ... and the engine's own startup refuses the same way, naming the variables
    _, prod_settings = _engine(app, **prod)
    try:
        db.startup(prod_settings)
    except DbkitError as exc:
        assert "POSTGRES_USER_RLS_PASS" in str(exc) and "POSTGRES_USER_FULL_PASS" in str(exc), str(exc)
    else:
        raise AssertionError("the engine started in prod without its database passwords")
    # with both passwords set, the passwords are no longer what prod lacks
    out = app.run("migrate", ok=False, POSTGRES_USER_RLS_PASS=RLS_PASS, POSTGRES_USER_FULL_PASS=FULL_PASS, **prod)
    assert "POSTGRES_USER_" not in out.stdout + out.stderr, out.stderr
