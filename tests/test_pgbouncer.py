"""Scoped sessions behind a real PgBouncer in transaction pooling mode (Debian's pgbouncer package).

Many clients, each scoped to its own tenant, run interleaved transactions through a pool smaller
than the number of clients: server connections are shared between tenants all the time.  No client
may ever see another tenant's rows, and no claim may survive into a later transaction.
"""

import os
import random
import socket
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import PGBOUNCER, start_pgbouncer
from migrate_helpers import settings_for

from dbkit.rls import scoped
from dbkit.seed import _engine as engine

pytestmark = pytest.mark.integration



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer(dbkit_server, shared_tmp: Path):
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.fail("pgbouncer is not installed: run scripts/bootstrap (it installs Debian's pgbouncer)")
    port = _free_port()
    (shared_tmp / "userlist.txt").write_text('"app_rls" ""\n')
    (shared_tmp / "pgbouncer.ini").write_text(f"""
[databases]
* = host={dbkit_server.host} port={dbkit_server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {shared_tmp}/userlist.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = {shared_tmp}/pgbouncer.log
pidfile = {shared_tmp}/pgbouncer.pid
""")
    proc = start_pgbouncer(shared_tmp / "pgbouncer.ini", port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tenants_never_leak_through_transaction_pooling(dbkit_db, pgbouncer):
    engine.run(settings_for(dbkit_db), profile="tiny", scale=4, seed=11)  # 12 tenants
    with psycopg.connect(dbkit_db.conninfo) as admin:
        expected = dict(admin.execute("SELECT tenant_id::text, count(*) FROM app.documents GROUP BY 1").fetchall())
    tenants = sorted(expected)
    assert len(tenants) >= 10
    url = f"postgresql://app_rls@127.0.0.1:{pgbouncer}/{dbkit_db.dbname}"
    failures: list[str] = []
    backends: set[int] = set()

    def client(tenant: str, seed: int) -> None:
        rng = random.Random(seed)
        # transaction pooling: no server-side prepared statements
        with psycopg.connect(url, prepare_threshold=None, autocommit=True) as conn:
            for _ in range(25):
                with scoped(conn, tenant_id=tenant, user_id=f"user-of-{tenant[:8]}"):
                    conn.execute("SELECT pg_sleep(%s)", (rng.random() / 200,))
                    seen = dict(conn.execute(
                        "SELECT tenant_id::text, count(*) FROM app.documents GROUP BY 1").fetchall())
                    claim, pid = conn.execute(
                        "SELECT current_setting('app.tenant_id'), pg_backend_pid()").fetchone()
                    backends.add(pid)
                    if set(seen) - {tenant} or seen.get(tenant, 0) != expected[tenant] or claim != tenant:
                        failures.append(f"client of {tenant[:8]} saw {seen} with claim {claim}")
                # a statement outside any scope: a fresh transaction, maybe on another server connection
                leaked = conn.execute("SELECT current_setting('app.tenant_id', true), "
                                      "(SELECT count(*) FROM app.documents)").fetchone()
                if leaked[0] not in (None, "") or leaked[1] != 0:
                    failures.append(f"after the scope of {tenant[:8]}: claim {leaked[0]!r}, {leaked[1]} rows visible")

    threads = [threading.Thread(target=client, args=(t, i)) for i, t in enumerate(tenants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, "\n".join(failures[:10])
    assert 1 < len(backends) <= 3, "clients shared a pool of at most 3 server connections"
