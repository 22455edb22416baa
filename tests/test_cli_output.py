"""What the commands print for people (plain lines and tables, not a TTY), against a real seeded
database and a real backup location: the describe functions of dbkit/cli/ fed with the library's
typed results (and the dict that backup verify still returns)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def test_human_output_of_every_read_command(dbkit_seeded_db, dbkit_cli, tmp_path):
    from migrate_helpers import REPO

    env = {"DATABASE_URL": dbkit_seeded_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": f"file://{tmp_path}/b"}

    def out(*args: str, code: int = 0) -> str:
        res = dbkit_cli(*args, env=env)
        assert res.returncode == code, (args, res.stderr)
        return res.stdout

    applied = out("roles", "apply").splitlines()
    assert applied[-1].startswith("roles match the role model")
    assert all(re.match(r"(created|altered|password set|tenant isolation|warning): ", ln) for ln in applied[:-1])
    assert out("roles", "apply").splitlines()[-1] == "roles match the role model (nothing to change)"

    listed = out("roles", "list").splitlines()
    assert listed[0].split() == ["kind", "role", "exists", "login", "bypassrls", "superuser", "member", "of",
                                 "password"]
    # with timescaledb the owner has LOGIN (TimescaleDB's jobs run as it) and never a password
    assert listed[1].split()[:6] == ["owner", "app_owner", "yes", "yes", "no", "no"]
    assert listed[3].split()[:5] == ["bypass", "app_full", "yes", "yes", "yes"]

    checked = out("roles", "check").splitlines()
    assert re.fullmatch(r"0 error\(s\), \d+ warning\(s\): roles and grants match the declared state", checked[-1])
    assert all(ln.startswith("warn: ") for ln in checked[:-1])

    assert re.fullmatch(r"\d+ tables checked in app .*: 0 errors, 0 warnings\n", out("rls", "audit"))

    history = out("migrate", "history").splitlines()
    assert history[0].split() == ["revision", "down", "applied", "message"]
    assert history[1].split()[:3] == ["0001", "base", "yes"] and history[-1].startswith("0006 (head)  0005  yes ")

    status = out("seed", "status")
    assert re.search(r"^tenants +3$", status, re.M) and "\n\nrecent runs\nrun  finished" in status
    assert re.search(r"^1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +0 +tiny +1\.0 +0\.0 +\d+$", status, re.M)

    assert out("backup", "list").endswith(": none yet (`dbkit backup` writes one)\n")
    made = [out("backup"), out("backup", "--compress", "gzip")]
    ids = [re.match(r"backup (\S+): [\d.]+ KiB dumped, [\d.]+ KiB stored \((zstd|gzip)\) in [\d.]+ s; "
                    r"sha256 [0-9a-f]{16}…$", m).group(1) for m in made]
    listed = out("backup", "list").splitlines()
    assert listed[0].endswith("(2 complete)") and listed[1].split()[:3] == ["id", "finished", "(UTC)"]
    assert [ln.split()[0] for ln in listed[2:]] == ids[::-1] and all(ln.endswith(" complete") for ln in listed[2:])
    assert out("backup", "verify") == f"backup {ids[1]}: sha256 ok\n"
    assert out("backup", "prune", "--keep-last", "1").splitlines() == [
        f"keep    {ids[1]}  (last)", f"would delete {ids[0]}", "dry run: pass --apply to delete"]

    health = out("check")
    assert health.startswith("Settings\nsetting ") and "\n\nHealth\ncheck " in health
    assert re.search(r"^extension timescaledb +ok +installed [\d.]+; preloaded$", health, re.M)
    assert re.search(r"^migrations +ok +database at 0006, your migrations \(migrations\) at 0006$", health, re.M)
    assert re.search(r"^timescaledb +ok +2\.19\.3, (community|apache) edition; 0 jobs, 0 failed$", health, re.M)
    assert re.search(rf"^backups +ok +newest {ids[1]} is 0\.0 h old \(limit 26 h\), 2 complete, "
                     r"last attempt complete$", health, re.M)
    assert health.endswith("\n\nstatus: healthy\n")
