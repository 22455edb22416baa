"""Finding the machine's PostgreSQL server programs (``initdb``, ``pg_ctl``, ``postgres``) and the
layout of that install: its version, share and library directories, its extensions."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dbkit.errors import MissingDependency

PG_PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


def _has_programs(d: Path) -> bool:
    return all(os.access(d / p, os.X_OK) for p in PG_PROGRAMS)


def _version_key(d: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", d.parent.name)) or (0,)


def find_bindir(explicit: Path | None = None) -> Path:
    """Where ``initdb``/``pg_ctl``/``postgres`` live.

    Order: ``explicit`` (DBKIT_PG_BINDIR), ``pg_config --bindir``, the
    programs on PATH (symlinks resolved), the newest ``/usr/lib/postgresql/*/bin``.
    """
    if explicit is not None:
        if _has_programs(explicit):
            return explicit
        raise MissingDependency(f"DBKIT_PG_BINDIR={explicit} does not contain {', '.join(PG_PROGRAMS)}",
                                hint="point it at the server's bin directory, e.g. /usr/lib/postgresql/15/bin")
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    candidates.extend(sorted(DEBIAN_PG_ROOT.glob("*/bin"), key=_version_key, reverse=True))
    for d in candidates:
        if _has_programs(d):
            return d
    raise MissingDependency(
        "no PostgreSQL server programs (initdb, pg_ctl, postgres) found on PATH, via pg_config "
        "or under /usr/lib/postgresql/*/bin",
        hint="install them with 'apt-get install postgresql-15' (or set DBKIT_PG_BINDIR)",
    )


@dataclass(frozen=True)
class ServerLayout:
    bindir: Path
    major: int
    version: str
    sharedir: Path
    pkglibdir: Path

    def has_extension(self, name: str) -> bool:
        return (self.sharedir / "extension" / f"{name}.control").is_file()


def server_layout(bindir: Path) -> ServerLayout:
    """Version and install directories of the server whose programs are in ``bindir``."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or not m:
        raise MissingDependency(f"{bindir / 'postgres'} --version failed: {out.stderr.strip() or out.stdout.strip()}")
    major = int(m.group(1))
    sharedir = pkglibdir = None
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        res = subprocess.run([str(pg_config), "--sharedir", "--pkglibdir"], capture_output=True, text=True)
        if res.returncode == 0 and len(res.stdout.split()) == 2:
            sharedir, pkglibdir = (Path(p) for p in res.stdout.split())
    if sharedir is None:
        debian_share = Path(f"/usr/share/postgresql/{major}")
        sharedir = debian_share if debian_share.is_dir() else bindir.parent / "share" / "postgresql"
        pkglibdir = bindir.parent / "lib"
    return ServerLayout(bindir, major, m.group(0), sharedir, pkglibdir)
