"""The embedded development cluster: a private PostgreSQL under ``.dbkit/``.

Built with the machine's own PostgreSQL server programs, listening on
127.0.0.1 only (a free port chosen once and remembered), its unix socket in
``.dbkit/run``, its log in ``.dbkit/log``.  When the caller is root the server
runs as the ``postgres`` OS user, because PostgreSQL refuses to run as root.
TimescaleDB is preloaded when it is installed.  Authentication is ``trust``
on loopback: this cluster is for development and tests only.

No printing here: functions return :class:`ClusterStatus` and raise
:class:`~dbkit.errors.DevClusterError` / :class:`~dbkit.errors.MissingDependency`.

Finding the server programs and their layout is :mod:`dbkit._dev_binaries`; the cluster's lifecycle
(:class:`DevCluster`: initdb, configure, pg_ctl start/stop, :class:`ClusterStatus`) and provisioning are here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dbkit import _db as db
from dbkit._dev_binaries import ServerLayout, _has_programs, find_bindir, server_layout
from dbkit._urls import DbUrl, parse_database_url
from dbkit.errors import DevClusterError, MissingDependency

__all__ = ["DevCluster", "Provisioned", "find_bindir", "provision", "server_layout"]

SUPERUSER = "postgres"
SERVER_OS_USER = "postgres"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


# --------------------------------------------------------------------- status

@dataclass(frozen=True)
class ClusterStatus:
    running: bool
    base_dir: str
    data_dir: str
    socket_dir: str
    log_file: str
    port: int | None
    pid: int | None
    url: str | None
    version: str | None
    initialized: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {**asdict(self), "notes": list(self.notes)}


def _pid_is_postgres(pid: int) -> bool:
    """True when ``pid`` is alive and is a PostgreSQL server process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:  # pragma: no cover - /proc/*/cmdline is world-readable on Linux
        return True
    argv0 = cmdline.split(b"\0", 1)[0]
    return os.path.basename(argv0).startswith((b"postgres", b"postmaster"))


def _port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port.  SO_REUSEADDR as PostgreSQL uses it, so a port
    whose last connections are in TIME_WAIT (a cluster just stopped) still counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevCluster:
    """A PostgreSQL cluster owned by dbkit in ``base_dir``.

    >>> c = DevCluster(Path(".dbkit"))        # doctest: +SKIP
    >>> c.up().url                             # doctest: +SKIP
    'postgresql://postgres@127.0.0.1:54329/dbkit'
    """

    def __init__(self, base_dir: Path, *, bindir: Path | None = None, port: int = 0, database: str = "dbkit",
                 extra_conf: Sequence[str] = (), start_timeout: int = 60) -> None:
        self.base_dir = Path(base_dir).absolute()
        self._bindir = bindir
        self.port_setting = port
        self.database = database
        self.extra_conf = tuple(extra_conf)
        self.start_timeout = start_timeout
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "log" / "postgresql.log"
        self.state_file = self.base_dir / "cluster.json"
        self.socket_dir = self.base_dir / "run"
        if len(str(self.socket_dir)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
            self.socket_dir = Path("/tmp") / f"dbkit-{digest}"

    @classmethod
    def from_settings(cls, settings) -> DevCluster:
        return cls(settings.dev_dir, bindir=settings.pg_bindir, port=settings.dev_port, database=settings.dev_database)

    # ---------------------------------------------------------------- helpers

    @property
    def bindir(self) -> Path:
        if self._bindir is None or not _has_programs(self._bindir):
            self._bindir = find_bindir(self._bindir)
        return self._bindir

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, args: Sequence[str], *, check: bool = True,
             timeout: float | None = None) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", SERVER_OS_USER, "--", *args] if self.as_root else list(args)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(self.base_dir), timeout=timeout, check=False,
                             env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
        if check and res.returncode != 0:
            detail = (res.stderr or res.stdout).strip().splitlines()
            raise DevClusterError(
                f"{Path(args[0]).name} failed (exit {res.returncode}): {detail[-1] if detail else 'no output'}",
                hint=f"see {self.log_file}",
            )
        return res

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _write_state(self, **values) -> None:
        state = {**self._read_state(), **values}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize up/down between processes sharing this cluster."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _pidfile(self) -> tuple[int | None, int | None]:
        """(pid, port) from postmaster.pid, or (None, None)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None, None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return -1, None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        return pid, port

    def url(self, dbname: str | None = None, port: int | None = None) -> str:
        port = port or self._read_state().get("port")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{dbname or self.database}"

    # ---------------------------------------------------------------- verbs

    def status(self) -> ClusterStatus:
        """Running or stopped, with URL, pid and port.  Never starts anything."""
        pid, port = self._pidfile()
        running = pid is not None and pid > 0 and _pid_is_postgres(pid)
        notes = []
        if pid is not None and not running:
            notes.append(f"stale postmaster.pid (pid {pid} is not a running PostgreSQL server)")
        state = self._read_state()
        port = port if running else state.get("port")
        return ClusterStatus(
            running=running, base_dir=str(self.base_dir), data_dir=str(self.data_dir), socket_dir=str(self.socket_dir),
            log_file=str(self.log_file), port=port, pid=pid if running else None,
            url=self.url(port=port) if port else None, version=state.get("version"),
            initialized=(self.data_dir / "PG_VERSION").is_file(), notes=tuple(notes))

    def up(self) -> ClusterStatus:
        """Initialize (first time) and start the cluster; wait until it accepts connections.

        Idempotent: a running cluster is left alone.  A stale ``postmaster.pid``
        (crash, reboot) is removed before starting.
        """
        with self._locked():
            current = self.status()
            if current.running:
                return current
            notes: list[str] = list(current.notes)
            layout = server_layout(self.bindir)
            self._prepare_dirs()
            if not current.initialized:
                self._initdb(layout)
                notes.append(f"initialized a new PostgreSQL {layout.major} cluster in {self.data_dir}")
            elif (self.data_dir / "postmaster.pid").exists():
                (self.data_dir / "postmaster.pid").unlink()
                notes.append("removed a stale postmaster.pid")
            self._remove_stale_socket_locks()
            port = self._choose_port()
            preload = layout.has_extension("timescaledb")
            self._write_conf(port, preload)
            self._write_state(port=port, version=layout.version, bindir=str(layout.bindir),
                              timescaledb_preloaded=preload)
            res = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                             "-w", "-t", str(self.start_timeout), "start"], check=False)
            if res.returncode != 0:
                raise DevClusterError(
                    f"the dev cluster did not start: {self._log_tail() or (res.stderr or res.stdout).strip()}",
                    hint=f"full log: {self.log_file}",
                )
            return replace(self.status(), notes=tuple(notes))

    def down(self, *, purge: bool = False) -> ClusterStatus:
        """Stop the cluster (fast shutdown, waits).  ``purge`` also deletes its files."""
        with self._locked():
            current = self.status()
            if current.running:
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60",
                           "stop"])
            elif current.initialized and (self.data_dir / "postmaster.pid").exists():
                (self.data_dir / "postmaster.pid").unlink()
            if purge:
                for p in (self.data_dir, self.base_dir / "log", self.socket_dir):
                    shutil.rmtree(p, ignore_errors=True)
                self.state_file.unlink(missing_ok=True)
        return self.status()

    def ensure_database(self) -> bool:
        """Create the database if it is missing.  Returns True when it was created."""
        from psycopg import sql

        with db.connect(parse_database_url(self.url("postgres")), autocommit=True) as conn:
            if db.database_exists(conn, self.database):
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            return True

    # ---------------------------------------------------------------- internals

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        dirs = [(self.data_dir, 0o700), (self.log_file.parent, 0o755), (self.socket_dir, 0o755)]
        for d, mode in dirs:
            d.mkdir(parents=True, exist_ok=True)
            self._give_to_server(d)
            os.chmod(d, mode)
        if self.as_root:
            res = self._run(["test", "-w", str(self.data_dir), "-a", "-w", str(self.socket_dir)], check=False)
            if res.returncode != 0:
                raise DevClusterError(
                    f"the '{SERVER_OS_USER}' OS user cannot reach {self.base_dir} (a parent directory is not "
                    "searchable by other users)",
                    hint="set DBKIT_DEV_DIR to a directory it can reach, e.g. DBKIT_DEV_DIR=/var/tmp/dbkit",
                )

    def _initdb(self, layout: ServerLayout) -> None:
        self._run([
            str(layout.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        ], timeout=300)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\n# dbkit: settings that change between starts live in dbkit.conf\n"
                     "include_if_exists = 'dbkit.conf'\n")

    def _choose_port(self) -> int:
        if self.port_setting:
            if not _port_is_free(self.port_setting):
                raise DevClusterError(f"port {self.port_setting} on 127.0.0.1 is already in use",
                                      hint="set DBKIT_DEV_PORT to a free port, or to 0 to let dbkit choose one")
            return self.port_setting
        remembered = self._read_state().get("port")
        if remembered and _port_is_free(remembered):
            return remembered
        return _free_port()

    def _write_conf(self, port: int, preload_timescaledb: bool) -> None:
        lines = [
            "# Written by dbkit on every start; edit postgresql.conf for your own settings.",
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "logging_collector = off",
        ]
        if preload_timescaledb:
            lines += ["shared_preload_libraries = 'timescaledb'", "timescaledb.telemetry_level = off"]
        conf = self.data_dir / "dbkit.conf"
        conf.write_text("\n".join([*lines, *self.extra_conf]) + "\n")
        self._give_to_server(conf)

    def _give_to_server(self, path: Path) -> None:
        """As root, hand ``path`` to the OS user the server runs as (PostgreSQL refuses to run as root)."""
        if not self.as_root:
            return
        try:
            pw = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise MissingDependency(
                f"running as root, the dev cluster needs the '{SERVER_OS_USER}' OS user, which does not exist",
                hint="install PostgreSQL's Debian package (it creates the user) or run dbkit as a normal user",
            ) from None
        os.chown(path, pw.pw_uid, pw.pw_gid)

    def _remove_stale_socket_locks(self) -> None:
        """After a crash the socket and its lock file stay behind; PostgreSQL then refuses to start
        while the dead postmaster's pid is still a zombie.  Only called when the cluster is down."""
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                pid = int(lock.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid > 0 and _pid_is_postgres(pid):
                continue
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        important = [ln for ln in lines if re.search(r"\b(FATAL|ERROR|PANIC)\b", ln)]
        return (important or lines or [""])[-1].strip()


@dataclass(frozen=True)
class Provisioned:
    status: ClusterStatus
    url: DbUrl
    database_created: bool
    extensions_created: tuple[str, ...]

    def as_dict(self) -> dict:
        """The JSON of ``dbkit dev up --json``: the cluster's status, then what provisioning did."""
        return {**self.status.as_dict(), "database": self.url.dbname, "database_created": self.database_created,
                "extensions_created": list(self.extensions_created)}


def provision(cluster: DevCluster, extensions: Sequence[str] = ()) -> Provisioned:
    """Start the cluster if needed, create its database and the given extensions.

    What every command does first when ``DATABASE_URL`` is unset in dev, and
    what ``dbkit dev up`` does.
    """
    status = cluster.up()
    created = cluster.ensure_database()
    url = parse_database_url(cluster.url(port=status.port))
    made: list[str] = []
    if extensions:
        with db.connect(url, autocommit=True) as conn:
            made = db.ensure_extensions(conn, extensions)
    return Provisioned(status, url, created, tuple(made))
