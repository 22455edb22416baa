"""The library returns typed results (frozen dataclasses); their ``as_dict()`` is the ``--json`` the CLI prints,
in the same shape as when they were dicts: health's report, seed status, backup scan and prune, dev up.

Each test makes a real call (a real seeded database, a real backup location on disk), checks the types of
the result's fields, the ``as_dict()`` keys (in order) and value types, and that the CLI's ``--json`` is that
``as_dict()``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from datetime import datetime

import pytest
from migrate_helpers import REPO, settings_for

from dbkit import _health as health
from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


def _as_json(value):
    """What ``--json`` prints for a value (render.emit_json: default=str), read back."""
    return json.loads(json.dumps(value, default=str))


def _frozen(result) -> None:
    assert dataclasses.is_dataclass(result) and result.__dataclass_params__.frozen, type(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, dataclasses.fields(result)[0].name, None)


def _cli_env(url, backups) -> dict[str, str]:
    return {"DATABASE_URL": url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
            "DBKIT_BACKUP_URI": f"file://{backups}"}


def _leftovers(backups) -> tuple[str, str, str]:
    """An attempt without a manifest newer than every backup, an old one, and an unreadable manifest."""
    newer, old, bad = "29990101T000000Z-dead", "20200101T000000Z-beef", "20210101T000000Z-0bad"
    for name in (newer, old):
        (backups / name).mkdir()
        (backups / name / "dump.pgdump.zst").write_bytes(b"partial")
    os.utime(backups / old / "dump.pgdump.zst", (1e9, 1e9))
    (backups / bad).mkdir()
    (backups / bad / "manifest.json").write_text("{not json")
    return newer, old, bad


SERVICE_KEYS = {
    "environment": ["status", "env", "problems"],
    "database": ["status", "url", "embedded", "connect_ms", "latency_ms", "server_version", "server_version_num",
                 "database", "user"],
    "extensions": ["status", "timescaledb_preloaded", "items"],
    "connections": ["status", "used", "max_connections"],
    "migrations": ["status", "current", "head", "pending", "schema_diffs", "edited", "check_ms", "version_table", "migrations_dir"],
    "timescaledb": ["status", "edition", "version", "jobs"],
    "storage": ["status", "target", "latency_ms"],
}


def test_check_report_is_typed_and_prints_the_same_json(dbkit_seeded_db, dbkit_cli, tmp_path):
    backups = tmp_path / "b"
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{backups}")
    made = pipeline.backup(settings)
    newer, _, _ = _leftovers(backups)

    report = health.check(settings)
    _frozen(report)
    assert all(isinstance(s, health.Setting) for s in report.settings)
    types = {"environment": health.Environment, "database": health.Database, "extensions": health.Extensions,
             "connections": health.Connections, "migrations": health.Migrations, "roles": health.Roles,
             "rls": health.Rls, "timescaledb": health.Timescale, "storage": health.Storage, "backups": health.Backups}
    assert list(report.services) == list(types)
    for name, svc in report.services.items():
        assert type(svc) is types[name], name
        _frozen(svc)
    db = report.services["database"]
    assert isinstance(db.server_version_num, int) and db.embedded is False and db.database == dbkit_seeded_db.dbname
    ext = report.services["extensions"]
    assert [i.name for i in ext.items] == list(settings.extensions) and isinstance(ext.items[0], health.Extension)
    assert report.services["migrations"].current == ("0006",) and report.services["rls"].tables_checked == 6
    bk = report.services["backups"]
    assert (bk.status, bk.latest, bk.unfinished, bk.complete, bk.incomplete) == ("warn", made.id, newer, 1, 2)
    assert bk.last_status.startswith(f"incomplete ({newer}, started ") and bk.latest_bytes == made.stored_bytes

    data = report.as_dict()
    assert list(data) == ["status", "timestamp", "version", "settings", "services"]
    assert all(list(s) == ["variable", "value", "source"] and all(isinstance(v, str) for v in s.values())
               for s in data["settings"])
    services = data["services"]
    for name, keys in SERVICE_KEYS.items():
        assert list(services[name]) == keys, name
    assert list(services["roles"])[:3] == ["status", "errors", "warnings"]
    assert list(services["rls"])[:4] == ["status", "tables_checked", "errors", "warnings"]
    assert list(services["extensions"]["items"][0]) == ["name", "available", "installed", "status"]
    assert list(services["backups"]) == ["status", "complete", "incomplete", "max_age_hours", "unfinished",
                                         "unfinished_age_hours", "unfinished_idle_hours", "last_status", "latest",
                                         "latest_age_hours", "latest_bytes", "hint"]
    for key in ("problems", "current", "head", "pending", "schema_diffs", "edited"):
        svc = "environment" if key == "problems" else "migrations"
        assert isinstance(services[svc][key], list), key
    assert isinstance(services["rls"]["errors"], list) and isinstance(services["extensions"]["items"][0], dict)
    assert _as_json(data) == data  # plain JSON types only

    printed = dbkit_cli("check", "--json", env=_cli_env(dbkit_seeded_db, backups))
    not_ok = {n: (s.status, getattr(s, "error", None), s.hint) for n, s in report.services.items() if s.status != "ok"}
    assert printed.returncode == report.exit_code == 1, (printed.stderr, printed.stdout[-2000:], not_ok)
    cli = json.loads(printed.stdout)
    assert list(cli) == list(data) and cli["settings"] == data["settings"]
    assert {n: list(s) for n, s in cli["services"].items()} == {n: list(s) for n, s in services.items()}
    assert cli["services"]["extensions"] == services["extensions"] and cli["services"]["rls"] == services["rls"]

    text = health.prometheus(report)
    assert "dbkit_backup_unfinished_age_seconds " in text and "dbkit_connections_max " in text
    assert 'dbkit_service_status{service="backups"} 1.0' in text


def test_check_with_a_newest_complete_backup_keeps_its_key_order(dbkit_seeded_db, tmp_path):
    backups = tmp_path / "b"
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{backups}")
    pipeline.backup(settings)
    data = health.check(settings, max_backup_age_hours=1e-9).as_dict()["services"]["backups"]
    assert list(data) == ["status", "complete", "incomplete", "max_age_hours", "latest", "latest_age_hours",
                          "latest_bytes", "last_status", "hint"]
    assert data["status"] == "warn" and data["last_status"] == "complete" and " h old (limit " in data["hint"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_of_an_unreachable_database_keeps_its_shape(tmp_path, dbkit_cli):
    from dbkit.config import load_settings

    env = {"DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{_closed_port()}/app",
           "DBKIT_BACKUP_URI": f"file://{tmp_path}/b"}
    report = health.check(load_settings(environ=env, cwd=tmp_path))
    assert report.status == "unhealthy" and type(report.services["database"]) is health.Database
    data = report.as_dict()["services"]
    assert list(data["database"]) == ["status", "url", "embedded", "error", "hint"]
    assert "pw" not in data["database"]["url"]
    for name in ("extensions", "connections", "roles", "migrations", "rls"):
        assert type(report.services[name]) is health.Service
        assert data[name] == {"status": "fail", "error": "not checked: the database is unreachable"}
    assert list(data["backups"]) == ["status", "complete", "incomplete", "max_age_hours", "hint"]
    printed = json.loads(dbkit_cli("check", "--json", env=env).stdout)["services"]
    assert {n: list(s) for n, s in printed.items()} == {n: list(s) for n, s in data.items()}
    assert health.prometheus(report).count("dbkit_service_status{") == 9


def test_scan_and_prune_are_typed_and_print_the_same_json(dbkit_seeded_db, dbkit_cli, tmp_path):
    backups = tmp_path / "b"
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{backups}")
    first, second = pipeline.backup(settings), pipeline.backup(settings, compression="gzip")
    newer, old, bad = _leftovers(backups)
    env = _cli_env(dbkit_seeded_db, backups)

    found = pipeline.scan(settings)
    _frozen(found)
    assert [m.id for m in found.complete] == [second.id, first.id]
    assert [(type(u).__name__, u.id) for u in found.incomplete] == [("Unfinished", newer), ("Unfinished", old)]
    assert all(isinstance(u.last_seen, datetime) and u.last_seen.tzinfo for u in found.incomplete)
    [unreadable] = found.unreadable
    assert type(unreadable).__name__ == "Unreadable" and unreadable.id == bad and isinstance(unreadable.error, str)
    assert [u.id for u in found.unfinished_after_newest()] == [newer]
    listed = found.as_dict()
    assert list(listed) == ["backups", "incomplete", "unreadable"]
    assert [b["id"] for b in listed["backups"]] == [second.id, first.id]
    assert listed["incomplete"][0] == {"id": newer, "modified": found.incomplete[0].last_seen}
    assert listed["unreadable"] == [{"id": bad, "error": unreadable.error}]
    printed = dbkit_cli("backup", "list", "--json", env=env)
    assert printed.returncode == 0 and json.loads(printed.stdout) == _as_json(listed)

    plan = pipeline.prune(settings, keep_last=1)
    _frozen(plan)
    assert (plan.applied, plan.delete, plan.incomplete_removed, plan.stale_uploads_aborted, plan.stale_after) == (
        False, (first.id,), (old,), (), "6h")
    assert [(k.id, k.reasons) for k in plan.keep] == [(second.id, ("last",))] and plan.unreadable == (unreadable,)
    data = plan.as_dict()
    assert data == {"applied": False, "keep": [{"id": second.id, "reasons": ["last"]}], "delete": [first.id],
                    "incomplete_removed": [old], "stale_uploads_aborted": [], "unreadable": [[bad, unreadable.error]],
                    "stale_after": "6h"}
    assert list(data) == ["applied", "keep", "delete", "incomplete_removed", "stale_uploads_aborted", "unreadable",
                          "stale_after"]
    printed = dbkit_cli("backup", "prune", "--keep-last", "1", "--json", env=env)
    assert printed.returncode == 0 and json.loads(printed.stdout) == data
    applied = dbkit_cli("backup", "prune", "--keep-last", "1", "--apply", "--json", env=env)
    assert applied.returncode == 0 and json.loads(applied.stdout) == {**data, "applied": True}
    assert [m.id for m in pipeline.list_backups(settings)] == [second.id]


def test_seed_status_is_typed_and_prints_the_same_json(dbkit_seeded_db, dbkit_cli, tmp_path):
    from dbkit.seed import _engine as engine

    status = engine.status(settings_for(dbkit_seeded_db))
    _frozen(status)
    assert status.tables["tenants"] == 3 and all(isinstance(n, int) for n in status.tables.values())
    [run] = status.runs
    _frozen(run)
    assert isinstance(run, engine.SeedRun) and isinstance(run.finished_at, datetime)
    assert (run.id, run.seed, run.profile, run.scale, run.tenant_skew) == (1, 0, "tiny", 1.0, 0.0)
    assert run.rows == sum(t["rows"] for t in run.tables.values()) > 0 and run.tables["tenants"]["rows"] == 3
    data = status.as_dict()
    assert list(data) == ["tables", "runs"] and list(data["tables"]) == list(status.tables)
    assert list(data["runs"][0]) == ["id", "started_at", "finished_at", "seed", "profile", "scale", "tenant_skew",
                                     "tables", "versions", "anchor"]
    assert isinstance(data["runs"][0]["versions"], dict) and isinstance(data["runs"][0]["tables"], dict)
    printed = dbkit_cli("seed", "status", "--json", env=_cli_env(dbkit_seeded_db, tmp_path / "b"))
    assert printed.returncode == 0 and json.loads(printed.stdout) == _as_json(data)
