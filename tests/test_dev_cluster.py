"""The embedded dev cluster, against the machine's real PostgreSQL binaries."""

import os
import signal
import socket
import time
from pathlib import Path

import psycopg
import pytest

from dbkit._dev import DevCluster, find_bindir, provision
from dbkit.errors import DevClusterError, MissingDependency

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(shared_tmp: Path):
    c = DevCluster(shared_tmp / "dev", extra_conf=("fsync = off",))
    yield c
    c.down(purge=True)


def query(url: str, sql: str):
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchone()[0]


def test_up_status_down_and_idempotence(cluster: DevCluster):
    before = cluster.status()
    assert not before.running and not before.initialized and before.url is None

    first = cluster.up()
    assert first.running and first.initialized and first.pid
    assert any("initialized a new PostgreSQL" in n for n in first.notes)
    assert first.url == f"postgresql://postgres@127.0.0.1:{first.port}/dbkit"
    assert query(cluster.url("postgres"), "SELECT 1") == 1
    # loopback only, socket in the cluster's own run dir
    assert query(cluster.url("postgres"), "SHOW listen_addresses") == "127.0.0.1"
    assert query(cluster.url("postgres"), "SHOW unix_socket_directories") == str(cluster.socket_dir)
    assert (cluster.socket_dir / f".s.PGSQL.{first.port}").exists()

    again = cluster.up()  # idempotent: same server, no restart
    assert again.running and again.pid == first.pid and again.port == first.port and not again.notes

    stopped = cluster.down()
    assert not stopped.running and stopped.initialized
    assert cluster.down().running is False  # stopping a stopped cluster is fine

    restarted = cluster.up()  # same port is remembered across restarts
    assert restarted.running and restarted.port == first.port and restarted.pid != first.pid


def test_runs_as_postgres_user_when_root(cluster: DevCluster):
    status = cluster.up()
    owner = Path(f"/proc/{status.pid}").stat().st_uid
    if os.geteuid() == 0:
        import pwd

        assert owner == pwd.getpwnam("postgres").pw_uid
    else:
        assert owner == os.geteuid()


def test_timescaledb_is_preloaded_when_installed(cluster: DevCluster):
    cluster.up()
    assert "timescaledb" in query(cluster.url("postgres"), "SHOW shared_preload_libraries")


def test_provision_creates_database_and_extensions_once(cluster: DevCluster):
    first = provision(cluster, ("vector", "pgcrypto"))
    assert first.database_created and set(first.extensions_created) == {"vector", "pgcrypto"}
    assert query(first.url.conninfo, "SELECT count(*) FROM pg_extension WHERE extname IN ('vector','pgcrypto')") == 2
    second = provision(cluster, ("vector", "pgcrypto"))
    assert not second.database_created and second.extensions_created == ()


def test_crashed_server_is_recovered(cluster: DevCluster):
    status = cluster.up()
    os.kill(status.pid, signal.SIGKILL)
    for _ in range(100):  # wait for the postmaster to disappear
        if not Path(f"/proc/{status.pid}").exists() or b"postgres" not in Path(f"/proc/{status.pid}/cmdline").read_bytes():
            break
        time.sleep(0.05)
    crashed = cluster.status()
    assert not crashed.running
    recovered = cluster.up()
    assert recovered.running and recovered.pid != status.pid
    assert query(cluster.url("postgres"), "SELECT 2") == 2


def test_stale_pid_file_pointing_at_another_process(cluster: DevCluster):
    cluster.up()
    cluster.down()
    # A pid file left by a crash whose pid now belongs to some other live process (pid 1).
    pidfile = cluster.data_dir / "postmaster.pid"
    pidfile.write_text(f"1\n{cluster.data_dir}\n0\n5432\n\n\n")
    status = cluster.status()
    assert not status.running
    assert any("stale postmaster.pid" in n for n in status.notes)
    up = cluster.up()
    assert up.running and "removed a stale postmaster.pid" in up.notes


def test_fixed_port_in_use_is_a_clear_error(shared_tmp: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        c = DevCluster(shared_tmp / "busy", port=busy)
        with pytest.raises(DevClusterError, match=f"port {busy} on 127.0.0.1 is already in use.*DBKIT_DEV_PORT"):
            c.up()
        assert not c.status().running


def test_purge_removes_data(cluster: DevCluster):
    cluster.up()
    cluster.down(purge=True)
    assert not cluster.data_dir.exists()
    assert not cluster.status().initialized


def test_missing_binaries_name_the_package(tmp_path: Path):
    with pytest.raises(MissingDependency, match="DBKIT_PG_BINDIR=.* does not contain initdb"):
        find_bindir(tmp_path)


def test_missing_binaries_everywhere(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("dbkit._dev_binaries.DEBIAN_PG_ROOT", tmp_path / "nothing")
    with pytest.raises(MissingDependency) as err:
        find_bindir()
    assert "apt-get install postgresql-15" in str(err.value)


def test_dev_psql_d_keeps_the_clusters_host_and_port(cluster: DevCluster, dbkit_cli):
    status = cluster.up()
    env = {"DBKIT_DEV_DIR": str(cluster.base_dir), "DBKIT_EXTENSIONS": ""}
    sql = "SELECT current_database() || ' ' || inet_server_port()"
    for args in (("-d", "postgres"), ("-dpostgres",), ("--dbname=postgres",), ("--dbname", "postgres")):
        res = dbkit_cli("dev", "psql", *args, "-At", "-c", sql, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"postgres {status.port}"
    res = dbkit_cli("dev", "psql", "-At", "-c", sql, env=env)  # no -d: the dev database
    assert res.returncode == 0 and res.stdout.strip() == f"dbkit {status.port}", res.stderr
    bad = dbkit_cli("dev", "psql", "-d", "x" * 64, "-c", "SELECT 1", env=env)
    assert bad.returncode == 2 and "-d is 64 bytes long" in bad.stderr
