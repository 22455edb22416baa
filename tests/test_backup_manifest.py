"""Backup ids and manifest.json: format, round trip, validation and the secret guard."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbkit.backup._manifest import (
    FORMAT_VERSION,
    Encryption,
    Manifest,
    ManifestError,
    TableInfo,
    is_backup_id,
    looks_secret,
    new_backup_id,
    object_name,
    parse_backup_id,
)
from dbkit.errors import ConfigError, DbkitError

pytestmark = pytest.mark.unit

BID = "20261121T230501Z-3f9a"
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SHA = "ab" * 32
T0 = datetime(2026, 11, 21, 23, 5, 1, 123456, tzinfo=UTC)


def make(**over):
    fields = dict(
        id=BID, database="app", server_version="16.4", pg_dump_version="16.4",
        extensions={"vector": "0.8.0", "timescaledb": "2.17.2", "pgcrypto": "1.3"},
        alembic_revision="0007_events", dbkit_version="0.1.0",
        started_at=T0, finished_at=T0 + timedelta(seconds=42, microseconds=500000),
        raw_bytes=10_000, stored_bytes=4_321, sha256=SHA, object="dump.pgdump.zst.age",
        compression="zstd", compression_level=3,
        encryption=Encryption(recipients=(RECIPIENT,)),
        tables=[TableInfo("app", "tenants", 10), TableInfo("app", "events", None)],
    )
    fields.update(over)
    return Manifest(**fields)


def doc(**over):
    d = json.loads(make().to_json())
    for k, v in over.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


# -- backup ids ---------------------------------------------------------------------------------------------


def test_new_backup_id_is_utc_timestamp_and_random_hex():
    bid = new_backup_id(datetime(2026, 11, 22, 0, 5, 1, tzinfo=timezone(timedelta(hours=1))))
    assert bid.startswith("20261121T230501Z-") and len(bid) == len(BID)
    assert is_backup_id(bid)
    assert parse_backup_id(bid) == datetime(2026, 11, 21, 23, 5, 1, tzinfo=UTC)
    assert len({new_backup_id(T0) for _ in range(50)}) > 1  # the random part varies


def test_new_backup_id_refuses_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        new_backup_id(datetime(2026, 1, 1))


# the latest start leaves room for the largest delta before year 10000 (datetime's end)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9988, 1, 1), timezones=st.just(UTC)),
       st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=4000)))
def test_ids_sort_like_their_start_times(a, delta):
    b = a + delta
    first, second = new_backup_id(a), new_backup_id(b)
    assert first < second
    assert parse_backup_id(first) == a.replace(microsecond=0)


@pytest.mark.parametrize("text", ["", "foo", "20261121T230501Z", "20261121T230501Z-3F9A", "20261321T230501Z-3f9a",
                                  "20261121T230501-3f9a", "20261121T230501Z-3f9a0", " 20261121T230501Z-3f9a"])
def test_parse_backup_id_refuses_other_names(text):
    assert not is_backup_id(text)
    with pytest.raises(ConfigError, match="backup id .* is malformed.*example: 20261121T230501Z-3f9a"):
        parse_backup_id(text)


# -- object names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression, encrypted, name", [
    ("zstd", True, "dump.pgdump.zst.age"), ("zstd", False, "dump.pgdump.zst"),
    ("gzip", True, "dump.pgdump.gz.age"), ("gzip", False, "dump.pgdump.gz"),
    ("none", True, "dump.pgdump.age"), ("none", False, "dump.pgdump"),
])
def test_object_name(compression, encrypted, name):
    assert object_name(compression, encrypted) == name


def test_object_name_refuses_unknown_compression():
    with pytest.raises(ConfigError, match="compression must be one of zstd, gzip, none, got 'xz'"):
        object_name("xz", False)


# -- round trip ---------------------------------------------------------------------------------------------


def test_round_trip_and_stable_bytes():
    m = make(sse="aws:kms", storage_class="STANDARD_IA", tags={"team": "core", "env": "prod"})
    data = m.to_json()
    back = Manifest.from_json(data, backup_id=BID)
    assert back == m
    assert back.to_json() == data
    assert data.endswith(b"}\n") and b'\n  "id": ' in data  # indent 2
    d = json.loads(data)
    assert list(d)[:3] == ["format_version", "id", "database"]
    assert d["format_version"] == FORMAT_VERSION == 1
    assert d["started_at"] == "2026-11-21T23:05:01.123456Z"
    assert d["duration_s"] == 42.5
    assert d["encryption"] == {"format": "age", "recipients": [RECIPIENT]}
    assert d["tables"][1] == {"schema": "app", "name": "events", "rows_estimate": None}
    assert list(d["tags"]) == ["env", "team"]


def test_json_shapes_are_accepted_and_times_normalised_to_utc():
    plus2 = timezone(timedelta(hours=2))
    m = make(encryption={"format": "age", "recipients": [RECIPIENT]},
             tables=[{"schema": "app", "name": "users", "rows_estimate": 5}],
             started_at=T0.astimezone(plus2), finished_at=T0.astimezone(plus2))
    assert m.encryption == Encryption(recipients=(RECIPIENT,))
    assert m.tables == (TableInfo("app", "users", 5),)
    assert m.started_at.tzinfo is UTC and m.duration_s == 0.0


def test_default_compression_level_is_recorded_as_null():
    m = make(compression="gzip", compression_level=None, object="dump.pgdump.gz.age")
    assert json.loads(m.to_json())["compression_level"] is None
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(ManifestError, match="field 'compression_level' must be null without compression, got 3"):
        make(compression="none", object="dump.pgdump.age")


def test_unencrypted_uncompressed_and_unknown_keys_ignored():
    m = make(object="dump.pgdump", compression="none", compression_level=None, encryption=None,
             stored_bytes=10_000, alembic_revision=None)
    d = json.loads(m.to_json())
    d["added_by_a_later_dbkit"] = {"x": 1}
    assert Manifest.from_json(json.dumps(d)) == m


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(str.strip)


@given(
    database=names, ext=st.dictionaries(names, st.text(max_size=10), max_size=4),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    took=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2)),
    raw=st.integers(0, 2**50), stored=st.integers(0, 2**50),
    compression=st.sampled_from(["zstd", "gzip", "none"]), encrypted=st.booleans(),
    tables=st.lists(st.builds(TableInfo, names, names, st.none() | st.integers(0, 10**12)), max_size=5),
)
def test_round_trip_property(database, ext, start, took, raw, stored, compression, encrypted, tables):
    level = {"zstd": 19, "gzip": 6, "none": None}[compression]
    if compression == "none" and not encrypted:
        stored = raw
    m = make(database=database, extensions=ext, started_at=start, finished_at=start + took,
             raw_bytes=raw, stored_bytes=stored, compression=compression, compression_level=level,
             object=object_name(compression, encrypted),
             encryption=Encryption(recipients=(RECIPIENT,)) if encrypted else None, tables=tables)
    data = m.to_json()
    assert Manifest.from_json(data) == m
    assert Manifest.from_json(data).to_json() == data


# -- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("over, message", [
    ({"sha256": "xyz"}, "field 'sha256' must be 64 lowercase hex digits"),
    ({"sha256": ...}, "field 'sha256' is missing"),
    ({"raw_bytes": -1}, "field 'raw_bytes' must be an integer >= 0"),
    ({"raw_bytes": "12"}, "field 'raw_bytes' must be an integer >= 0, got '12'"),
    ({"stored_bytes": True}, "field 'stored_bytes' must be an integer >= 0"),
    ({"started_at": "yesterday"}, "field 'started_at' is not an ISO 8601 time"),
    ({"started_at": "2026-11-21T23:05:01"}, "field 'started_at' has no time zone"),
    ({"finished_at": "2026-11-20T00:00:00Z"}, "field 'finished_at' .* is before started_at"),
    ({"compression": "xz"}, "field 'compression' must be one of zstd, gzip, none"),
    ({"compression_level": 99}, "field 'compression_level' must be 1..22 for zstd, got 99"),
    ({"object": "../../etc/passwd"}, "field 'object' is '../../etc/passwd', expected 'dump.pgdump.zst.age'"),
    ({"object": "dump.pgdump.zst"}, "field 'object' .*expected 'dump.pgdump.zst.age'"),
    ({"encryption": {"format": "gpg", "recipients": [RECIPIENT]}}, "field 'encryption.format' must be 'age'"),
    ({"encryption": {"format": "age", "recipients": []}},
     "field 'encryption.recipients' must list at least one age recipient"),
    ({"encryption": {"format": "age", "recipients": ["bob"]}}, r"field 'encryption.recipients\[0\]' must be an age "),
    ({"encryption": {"format": "age", "recipients": [RECIPIENT], "passphrase": "x"}},
     r"field 'encryption' has unexpected keys \['passphrase'\]"),
    ({"extensions": ["vector"]}, "field 'extensions' must be an object of strings"),
    ({"tables": [{"name": "t"}]}, r"field 'tables\[0\]' must have 'schema', 'name'"),
    ({"tables": [{"schema": "app", "name": "t", "rows_estimate": -1}]},
     r"field 'tables\[0\].rows_estimate' must be an integer >= 0, got -1"),
    ({"tables": [{"schema": "app", "name": "t", "rows_estimate": 1.5}]},
     r"field 'tables\[0\].rows_estimate' must be an integer >= 0, got 1.5"),
    ({"compression_level": "fast"}, "field 'compression_level' must be an integer >= 1, got 'fast'"),
    ({"database": ""}, "field 'database' must be a non-empty string"),
    ({"duration_s": -3}, "field 'duration_s' must be a number of seconds >= 0"),
    ({"sse": "rot13"}, "field 'sse' must be null or one of AES256"),
    ({"storage_class": "cheap please"}, "field 'storage_class' must be null or an S3 storage class"),
])
def test_validation_names_backup_and_field(over, message):
    with pytest.raises(ManifestError, match=f"^manifest of backup {BID}: {message}") as info:
        Manifest.from_json(doc(**over))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, DbkitError) and info.value.exit_code == 1


def test_stored_bytes_must_equal_raw_bytes_when_stored_as_is():
    with pytest.raises(ManifestError, match="'stored_bytes' .* must equal raw_bytes"):
        make(object="dump.pgdump", compression="none", compression_level=None, encryption=None)


@pytest.mark.parametrize("data, message", [
    (b"\xff\xfe", "manifest of backup 20261121T230501Z-3f9a is not UTF-8 text: not a dbkit manifest"),
    (b"{not json", "is not valid JSON .*line 1 column 2.*not a dbkit manifest"),
    (b"[1, 2]", "is a JSON list, not an object: not a dbkit manifest"),
    (b'{"name": "my-app", "version": "1.0.0"}', "has no 'format_version': not a dbkit manifest"),
    (b'{"format_version": 1, "format_version": 1}', "duplicate key 'format_version'"),
    (b'{"format_version": NaN}', "NaN is not a JSON number"),
    (b'{"format_version": "1"}', "field 'format_version' must be a positive integer"),
])
def test_foreign_or_malformed_files(data, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(data, backup_id=BID)


def test_future_format_version_is_refused_clearly():
    data = doc(format_version=2, some_new_field="x")
    with pytest.raises(ManifestError, match=(
            f"manifest of backup {BID} has format_version 2, but this dbkit reads only up to 1; upgrade dbkit")):
        Manifest.from_json(data)


def test_manifest_in_another_backups_folder_is_refused():
    other = "20261122T000000Z-0000"
    with pytest.raises(ManifestError, match=f"manifest of backup {other}: field 'id' is '{BID}', but the manifest "
                                            f"is in backup {other}'s folder"):
        Manifest.from_json(make().to_json(), backup_id=other)


def test_unknown_id_is_not_echoed_as_backup_name():
    with pytest.raises(ManifestError, match="^manifest: field 'id' must be a backup id like"):
        Manifest.from_json(doc(id="../x"))


# -- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [
    IDENTITY,
    IDENTITY.lower(),
    "AGE-PLUGIN-YUBIKEY-1QQQQQQ",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
])
def test_identity_as_recipient_is_refused_and_never_echoed(secret):
    with pytest.raises(ManifestError, match=r"'encryption.recipients\[1\]' is an age identity or private key") as i:
        make(encryption=Encryption(recipients=(RECIPIENT, secret)))
    assert secret not in str(i.value) and "GFPYY" not in str(i.value)
    with pytest.raises(ManifestError) as i:
        Manifest.from_json(doc(encryption={"format": "age", "recipients": [secret]}))
    assert secret not in str(i.value)


def test_secret_anywhere_is_refused():
    with pytest.raises(ManifestError, match=r"field 'tags.note' looks like a secret") as info:
        make(tags={"note": f"key is {IDENTITY}"})
    assert IDENTITY not in str(info.value)
    with pytest.raises(ManifestError, match="field 'database' looks like a secret"):
        Manifest.from_json(doc(database=IDENTITY))
    with pytest.raises(ManifestError, match="has a tag named 'Secret-Key'; tags are stored in clear"):
        make(tags={"Secret-Key": "hunter2"})


def test_ssh_public_key_recipients_are_accepted():
    ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx2yRG8K6JHkq0TgH4mEYtG8VS5JhD4Mx8kGUkE8W9h ops@example.com"
    m = make(encryption=Encryption(recipients=(RECIPIENT, ssh)))
    assert Manifest.from_json(m.to_json()) == m


def test_looks_secret():
    assert looks_secret(IDENTITY) and not looks_secret(RECIPIENT) and not looks_secret("secret")
