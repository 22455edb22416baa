"""A backup whose last bytes are damaged is the corrupt-backup error (RestoreFailed, one line), not a
ZstdError: real backups, real pg_restore, the real CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
from migrate_helpers import REPO, q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


def damage_tail(path, n: int = 24) -> None:
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(b ^ 0x5A for b in data[-n:])
    path.write_bytes(bytes(data))


def reseal(backup_dir, obj) -> None:
    """Make the manifest's checksum match the damaged object: only decompression can notice now."""
    data = obj.read_bytes()
    doc = json.loads((backup_dir / "manifest.json").read_text())
    doc.update(sha256=hashlib.sha256(data).hexdigest(), stored_bytes=len(data))
    (backup_dir / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
@pytest.mark.parametrize("resealed", [False, True])
def test_damaged_end_of_dump_is_the_corrupt_backup_error(dbkit_seeded_db, tmp_path, compression, resealed):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    manifest = pipeline.backup(settings, compression=compression)
    obj = tmp_path / manifest.id / manifest.object
    damage_tail(obj)
    if resealed:
        reseal(tmp_path / manifest.id, obj)
    target = f"{dbkit_seeded_db.dbname}_dmg"
    expected = "is corrupt: its " if resealed else "corrupt"
    with pytest.raises(pipeline.RestoreFailed, match=expected) as err:
        lifecycle.restore(settings, "latest", into=target)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(pipeline.RestoreFailed, match=expected):
        lifecycle.verify(settings, "latest")
    assert q(dbkit_seeded_db.with_dbname("postgres"), "SELECT count(*) FROM pg_database WHERE datname = %s",
             (target,)) == [(0,)]


def test_truncated_zstd_dump_via_the_cli(dbkit_seeded_db, tmp_path, dbkit_cli):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    manifest = pipeline.backup(settings)
    obj = tmp_path / manifest.id / manifest.object
    damage_tail(obj, 200)
    reseal(tmp_path / manifest.id, obj)
    env = {"DATABASE_URL": dbkit_seeded_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": str(tmp_path)}
    for args in (["restore", "latest", "--into", f"{dbkit_seeded_db.dbname}_dmg2"], ["backup", "verify"]):
        res = dbkit_cli(*args, env=env)
        assert res.returncode == 1
        [line] = res.stderr.strip().splitlines()
        assert "unexpected error" not in line and "ZstdError" not in line
        assert line.startswith(f"dbkit: error: the backup {manifest.id} is corrupt: its zstd stream is damaged")
