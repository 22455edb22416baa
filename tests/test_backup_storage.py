"""dbkit.backup._storage: one Storage interface, a local and an S3 backend.

The S3 backend is tested against a real S3 HTTP endpoint on loopback (moto's
ThreadedMotoServer), never against mocks of the wire protocol.  moto enforces S3's
5 MiB minimum for every part but the last, so multipart tests use 5 MiB parts.
The S3 writer uploads through obstore in background (Rust) threads, so a test that looks
for the multipart upload of a running writer waits for it to appear.  Network failures are real:
a loopback proxy in front of moto (FaultProxy) drops connections or answers S3 errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbkit.backup import _storage_base
from dbkit.backup._storage import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    UPLOAD_CONCURRENCY,
    LocalStorage,
    ObjectInfo,
    ObjectNotFound,
    S3Options,
    S3Storage,
    Storage,
    StorageConfigError,
    StorageError,
    choose_part_size,
    max_stream_size,
    open_storage,
    parse_storage_uri,
    upload_memory_bound,
)
from dbkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PART = 5 * MIB
from conftest import ACCESS_KEY, REGION, SECRET_KEY  # noqa: E402  (the moto server fixtures live in conftest)

# --------------------------------------------------------------------- fixtures

def s3_options(endpoint: str, **kw) -> S3Options:
    base = dict(endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    return S3Options(**{**base, **kw})


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    name = request.getfixturevalue("bucket")
    return open_storage(f"s3://{name}/backups/prod", s3=s3_options(endpoint), part_size=PART)


def multipart_uploads(admin, bucket_name: str) -> list[dict]:
    return admin.list_multipart_uploads(Bucket=bucket_name).get("Uploads", [])


def leftovers(storage: Storage, admin=None) -> list:
    """Everything a writer may have left behind: temp files / in-progress multipart uploads."""
    if isinstance(storage, S3Storage):
        return multipart_uploads(admin, storage.bucket)
    return [p for p in storage.root.rglob("*") if p.is_file()] if storage.root.exists() else []


def data_stream(size: int, chunk: int = 777_777, seed: int = 1) -> Iterator[bytes]:
    rng = random.Random(seed)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield rng.randbytes(n)
        sent += n


def eventually(check, timeout: float = 20.0):
    """``check()``'s first truthy result, polling: the S3 writer works in background threads."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def one_line_without_secret(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    assert SECRET_KEY not in text and "wrong-secret" not in text
    return text


# --------------------------------------------------------------------- both backends

@pytest.mark.integration
def test_round_trip_of_a_multipart_stream(storage: Storage, request: pytest.FixtureRequest):
    size = 12 * MIB + 123  # three parts of 5, 5 and 2 MiB on S3
    sha = hashlib.sha256()
    with storage.open_write("20260101T000000Z/dump.pgdump", expected_size=size,
                            metadata={"backup-id": "20260101T000000Z"}) as writer:
        for chunk in data_stream(size):
            writer.write(chunk)
            sha.update(chunk)
            assert not storage.exists("20260101T000000Z/dump.pgdump")  # nothing visible before commit
            assert storage.list() == []
        assert writer.bytes_written == size
    info = writer.info
    assert isinstance(info, ObjectInfo) and info.key == "20260101T000000Z/dump.pgdump" and info.size == size
    assert storage.exists("20260101T000000Z/dump.pgdump")
    [listed] = storage.list()
    assert listed.key == "20260101T000000Z/dump.pgdump" and listed.size == size
    assert listed.modified.tzinfo is not None and abs(datetime.now(UTC) - listed.modified) < timedelta(minutes=5)

    read_sha = hashlib.sha256()
    with storage.open_read("20260101T000000Z/dump.pgdump") as fh:
        first = fh.read(10)
        assert len(first) == 10
        read_sha.update(first)
        while chunk := fh.read(MIB):
            assert len(chunk) <= MIB
            read_sha.update(chunk)
    assert read_sha.hexdigest() == sha.hexdigest()
    assert storage.list_incomplete_uploads() == []
    if isinstance(storage, S3Storage):
        admin = request.getfixturevalue("s3_admin")
        head = admin.head_object(Bucket=storage.bucket, Key="backups/prod/20260101T000000Z/dump.pgdump")
        assert head["ETag"].strip('"').endswith("-3")  # really a multipart upload of three parts
        assert head["Metadata"] == {"backup-id": "20260101T000000Z"}
        assert multipart_uploads(admin, storage.bucket) == []


@pytest.mark.integration
def test_small_and_empty_objects(storage: Storage, request: pytest.FixtureRequest):
    with storage.open_write("m/manifest.json") as writer:
        writer.write(b'{"ok": true}\n')
    with storage.open_write("m/empty") as writer:
        pass
    with storage.open_read("m/manifest.json") as fh:
        assert json.loads(fh.read()) == {"ok": True}
    with storage.open_read("m/empty") as fh:
        assert fh.read() == b""
    assert [(o.key, o.size) for o in storage.list()] == [("m/empty", 0), ("m/manifest.json", 13)]
    if isinstance(storage, S3Storage):  # a stream smaller than one part is one PutObject
        admin = request.getfixturevalue("s3_admin")
        head = admin.head_object(Bucket=storage.bucket, Key="backups/prod/m/manifest.json")
        assert "-" not in head["ETag"]


@pytest.mark.integration
def test_abort_leaves_nothing(storage: Storage, request: pytest.FixtureRequest):
    admin = request.getfixturevalue("s3_admin") if isinstance(storage, S3Storage) else None
    writer = storage.open_write("x/dump")
    for chunk in data_stream(11 * MIB):
        writer.write(chunk)
    # S3: the multipart upload (started in the background); local: the temp file
    assert len(eventually(lambda: leftovers(storage, admin))) == 1
    writer.abort()
    writer.abort()  # idempotent
    assert not storage.exists("x/dump")
    assert storage.list() == [] and storage.list_incomplete_uploads() == []
    assert leftovers(storage, admin) == []
    with pytest.raises(ValueError, match="aborted"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="aborted"):
        writer.commit()


@pytest.mark.integration
def test_exception_inside_with_aborts(storage: Storage, request: pytest.FixtureRequest):
    admin = request.getfixturevalue("s3_admin") if isinstance(storage, S3Storage) else None
    with pytest.raises(RuntimeError, match="pg_dump died"):
        with storage.open_write("x/dump") as writer:
            for chunk in data_stream(6 * MIB):
                writer.write(chunk)
            raise RuntimeError("pg_dump died")
    assert writer.state == "aborted"
    assert not storage.exists("x/dump") and storage.list() == []
    assert leftovers(storage, admin) == []


@pytest.mark.integration
def test_overwrite_is_atomic(storage: Storage):
    with storage.open_write("k") as writer:
        writer.write(b"old")
    writer = storage.open_write("k")
    writer.write(b"new content")
    with storage.open_read("k") as fh:
        assert fh.read() == b"old"  # the old object stays until commit
    writer.commit()
    with storage.open_read("k") as fh:
        assert fh.read() == b"new content"


@pytest.mark.integration
def test_list_delete_exists(storage: Storage):
    for key in ("b/1", "a/2", "a/1", "top", "ab/x"):
        with storage.open_write(key) as writer:
            writer.write(key.encode())
    assert [o.key for o in storage.list()] == ["a/1", "a/2", "ab/x", "b/1", "top"]
    assert [o.key for o in storage.list("a/")] == ["a/1", "a/2"]
    assert [o.key for o in storage.list("a")] == ["a/1", "a/2", "ab/x"]  # a prefix, not a directory
    assert storage.list("nothing/") == []
    assert {o.key: o.size for o in storage.list()}["top"] == 3
    assert storage.exists("a/1") and not storage.exists("a/3") and not storage.exists("a")
    storage.delete("a/1")
    storage.delete("a/1")  # deleting a missing key is fine
    assert not storage.exists("a/1")
    assert [o.key for o in storage.list("a/")] == ["a/2"]
    with pytest.raises(ObjectNotFound, match="a/1 does not exist"):
        storage.open_read("a/1")
    for bad in ("", "/abs", "../up", "a//b", "a/./b", "x.partial-123"):
        with pytest.raises(ValueError):
            storage.open_write(bad)


@pytest.mark.integration
def test_incomplete_uploads_are_listed_and_aborted(storage: Storage, request: pytest.FixtureRequest):
    admin = request.getfixturevalue("s3_admin") if isinstance(storage, S3Storage) else None
    with storage.open_write("done") as writer:
        writer.write(b"complete")
    crashed = storage.open_write("20260101T000000Z/dump.pgdump")  # a writer that never commits (a crash)
    for chunk in data_stream(6 * MIB):
        crashed.write(chunk)
    if admin is not None:  # an upload outside this storage's prefix is not ours
        admin.create_multipart_upload(Bucket=storage.bucket, Key="elsewhere/dump")

    future = datetime.now(UTC) + timedelta(minutes=1)
    [upload] = eventually(storage.list_incomplete_uploads)  # S3: started once the first part is read
    assert upload.key == "20260101T000000Z/dump.pgdump" and upload.upload_id
    ident = lambda ups: [(u.key, u.upload_id) for u in ups]  # noqa: E731 - parts may land meanwhile (S3)
    assert ident(storage.list_incomplete_uploads(older_than=future)) == ident([upload])
    assert upload.last_activity is not None
    assert [o.key for o in storage.list()] == ["done"]  # the unfinished write is not an object
    if isinstance(storage, LocalStorage):  # just started: too young to be a leftover
        assert storage.list_incomplete_uploads(older_than=timedelta(hours=1)) == []
        assert 0 < upload.size <= 6 * MIB

    assert storage.abort_incomplete_uploads(older_than=future) == 1
    assert storage.list_incomplete_uploads() == []
    crashed.abort()  # the writer notices nothing is left to discard
    assert [o.key for o in storage.list()] == ["done"]
    if admin is not None:
        assert [u["Key"] for u in multipart_uploads(admin, storage.bucket)] == ["elsewhere/dump"]
    else:
        assert [p.name for p in leftovers(storage)] == ["done"]


@pytest.mark.integration
def test_writer_is_a_file_like_target(storage: Storage):
    import io
    import shutil

    with storage.open_write("copied") as writer:
        shutil.copyfileobj(io.BytesIO(b"abc"), writer)
        writer.write(memoryview(b"de"))
        writer.write(bytearray(b"f"))
        with pytest.raises(TypeError):
            writer.write("text")  # type: ignore[arg-type]
    with storage.open_read("copied") as fh:
        assert fh.read() == b"abcdef"


# --------------------------------------------------------------------- local backend

@pytest.mark.unit
def test_local_writes_a_hidden_temp_file_then_renames(tmp_path: Path):
    store = LocalStorage(tmp_path / "backups")
    writer = store.open_write("2026/01/dump")
    writer.write(b"x" * 1000)
    writer.flush()
    assert writer.temp.parent == tmp_path / "backups/2026/01"  # directories made as needed
    assert ".partial-" in writer.temp.name and writer.temp.exists()
    assert not (tmp_path / "backups/2026/01/dump").exists()
    assert store.list() == []
    info = writer.commit()
    final = tmp_path / "backups/2026/01/dump"
    assert final.read_bytes() == b"x" * 1000 and not writer.temp.exists()
    assert stat.S_IMODE(final.stat().st_mode) == 0o600  # a dump holds every tenant's data
    assert info == ObjectInfo("2026/01/dump", 1000, info.modified)
    assert store.uri == (tmp_path / "backups").as_uri()
    store.delete("2026/01/dump")
    assert not (tmp_path / "backups/2026").exists() and (tmp_path / "backups").is_dir()  # empty dirs pruned


@pytest.mark.unit
def test_local_memory_stays_bounded(tmp_path: Path):
    store = LocalStorage(tmp_path)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    tracemalloc.start()
    try:
        with store.open_write("big") as writer:
            for _ in range(50):
                writer.write(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big").stat().st_size == 50 * MIB
    assert peak < 3 * MIB, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.unit
def test_local_errors_are_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("not a directory")
    store = LocalStorage(tmp_path / "file")
    with pytest.raises(StorageError, match=r"^cannot write file://.*/file/k: ") as err:
        store.open_write("k")
    assert "\n" not in str(err.value)
    with pytest.raises(ObjectNotFound):
        LocalStorage(tmp_path).open_read("missing")
    LocalStorage(tmp_path / "new").check()
    assert (tmp_path / "new").is_dir()


# --------------------------------------------------------------------- S3 specifics

@pytest.mark.integration
@pytest.mark.parametrize("size", [1000, 11 * MIB], ids=["put", "multipart"])
def test_s3_sse_storage_class_tags_and_metadata(s3_endpoint, s3_admin, bucket, size):
    options = s3_options(s3_endpoint, sse="AES256", storage_class="STANDARD_IA",
                         tags={"team": "db", "note": "a b=c+d/e:f@g"})
    store = open_storage(f"s3://{bucket}/p", s3=options, part_size=PART)
    with store.open_write("obj", metadata={"dbkit-version": "0.1.0"}) as writer:
        for chunk in data_stream(size):
            writer.write(chunk)
    head = s3_admin.head_object(Bucket=bucket, Key="p/obj")
    assert head["ContentLength"] == size
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"] == {"dbkit-version": "0.1.0"}
    tags = s3_admin.get_object_tagging(Bucket=bucket, Key="p/obj")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "db", "note": "a b=c+d/e:f@g"}


@pytest.mark.integration
def test_s3_sse_kms_key_is_passed(s3_endpoint, s3_admin, bucket):
    options = s3_options(s3_endpoint, sse="aws:kms", kms_key_id="alias/dbkit-backups")
    store = open_storage(f"s3://{bucket}", s3=options, part_size=PART)
    with store.open_write("obj") as writer:
        writer.write(b"secret rows")
    head = s3_admin.head_object(Bucket=bucket, Key="obj")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/dbkit-backups")
    assert store.uri == f"s3://{bucket}"


class FaultProxy:
    """A loopback HTTP proxy in front of moto that fails chosen S3 requests: real faults on the wire.

    ``fail(operation, action, nth=...)``: the ``nth`` (1-based; 0: every) request of that S3 operation gets
    ``action``: ``"drop"`` closes the connection without an answer (a network failure), a tuple
    ``(status, code, message)`` answers with that S3 error.  ``seen`` lists (operation, query) of every request.
    """

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading
        from urllib.parse import urlsplit

        self.upstream = urlsplit(upstream)
        self.rules: dict[str, tuple[object, int]] = {}
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def relay(self) -> None:
                proxy.relay(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, operation: str, action, nth: int = 0) -> None:
        self.rules[operation] = (action, nth)

    @staticmethod
    def operation(method: str, path: str) -> str:
        query = path.partition("?")[2]
        if method == "PUT":
            return "UploadPart" if "partNumber=" in query else "PutObject"
        if method == "POST":
            return "CompleteMultipartUpload" if "uploadId=" in query else "CreateMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId=" in query else "DeleteObject"
        return f"{method} {query.split('=')[0]}"

    def relay(self, handler) -> None:
        import http.client
        import socket as socketlib

        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        op = self.operation(handler.command, handler.path)
        self.seen.append((op, handler.path.partition("?")[2]))
        action, nth = self.rules.get(op, (None, 0))
        count = sum(1 for o, _ in self.seen if o == op)
        if action is not None and (nth == 0 or nth == count):
            if action == "drop":
                handler.close_connection = True
                handler.connection.shutdown(socketlib.SHUT_RDWR)
                return
            status, code, message = action
            payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                       f"<Message>{message}</Message></Error>").encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        skip = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
        conn.request(handler.command, handler.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        handler.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in skip:
                handler.send_header(k, v)
        length = resp.getheader("Content-Length") if handler.command == "HEAD" else None
        handler.send_header("Content-Length", length or str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faults(s3_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["UploadPart", "CompleteMultipartUpload"])
def test_s3_failed_upload_leaves_no_orphan_parts(faults, s3_admin, bucket, operation):
    """A network failure mid-stream (the proxy drops the connection) aborts the multipart upload."""
    store = open_storage(f"s3://{bucket}/p", s3=s3_options(faults.url, max_attempts=1), part_size=PART)
    faults.fail(operation, "drop", nth=2 if operation == "UploadPart" else 1)
    with pytest.raises(StorageError, match=rf"^cannot reach S3 at {faults.url} ") as err:
        with store.open_write("dump") as writer:
            for chunk in data_stream(12 * MIB):
                writer.write(chunk)
    one_line_without_secret(err.value)
    assert writer.state == "failed" and any(op == operation for op, _ in faults.seen)
    assert multipart_uploads(s3_admin, bucket) == []  # the parts already uploaded were discarded
    assert not store.exists("dump") and store.list() == []


@pytest.mark.integration
def test_s3_failed_part_stops_the_stream_early(faults, s3_admin, bucket):
    """A failed part is reported by a later write(), not only at commit after the whole stream."""
    store = open_storage(f"s3://{bucket}/p", s3=s3_options(faults.url, max_attempts=1), part_size=PART)
    faults.fail("UploadPart", (500, "InternalError", f"boom {SECRET_KEY}\nsecond line"))
    sent = 0
    with pytest.raises(StorageError, match=r"^cannot upload s3://.*/p/dump: S3 UploadPart failed with "
                                           r"InternalError \(boom \*\*\* second line\)") as err:
        with store.open_write("dump") as writer:
            for chunk in data_stream(200 * MIB, chunk=MIB):
                writer.write(chunk)
                sent += len(chunk)
    one_line_without_secret(err.value)
    assert sent < 100 * MIB, f"the failure surfaced only after {sent / MIB:.0f} MiB"
    assert writer.state == "failed"
    assert multipart_uploads(s3_admin, bucket) == [] and store.list() == []


@pytest.mark.integration
def test_s3_abort_is_retried_when_obstore_cannot_abort(faults, s3_admin, bucket):
    """obstore's AbortMultipartUpload fails (connection dropped): the writer finds the upload and aborts it."""
    store = open_storage(f"s3://{bucket}/p", s3=s3_options(faults.url, max_attempts=1), part_size=PART)
    faults.fail("AbortMultipartUpload", "drop", nth=1)
    writer = store.open_write("dump")
    for chunk in data_stream(11 * MIB):
        writer.write(chunk)
    [upload] = eventually(lambda: multipart_uploads(s3_admin, bucket))
    writer.abort()
    aborts = [query for op, query in faults.seen if op == "AbortMultipartUpload"]
    assert len(aborts) == 2 and all(upload["UploadId"] in q for q in aborts)  # obstore's attempt, then the writer's
    assert multipart_uploads(s3_admin, bucket) == []


@pytest.mark.integration
def test_s3_abort_that_keeps_failing_is_reported(faults, s3_admin, bucket):
    store = open_storage(f"s3://{bucket}/p", s3=s3_options(faults.url, max_attempts=1), part_size=PART)
    faults.fail("AbortMultipartUpload", "drop")
    writer = store.open_write("dump")
    for chunk in data_stream(6 * MIB):
        writer.write(chunk)
    eventually(lambda: multipart_uploads(s3_admin, bucket))
    with pytest.raises(StorageError, match=r"^cannot abort the unfinished upload of s3://.*/p/dump ") as err:
        writer.abort()
    one_line_without_secret(err.value)
    assert "AbortIncompleteMultipartUpload" in str(err.value)  # the hint
    faults.rules.clear()
    assert store.abort_incomplete_uploads(None) == 1 and multipart_uploads(s3_admin, bucket) == []


@pytest.mark.integration
def test_s3_writer_refuses_to_outgrow_its_parts(s3_endpoint, s3_admin, bucket, monkeypatch):
    """Parts have one size per writer: past MAX_PARTS of them the write fails at once, leaving nothing."""
    monkeypatch.setattr(_storage_base, "MAX_PARTS", 2)
    store = open_storage(f"s3://{bucket}/p", s3=s3_options(s3_endpoint), part_size=PART)
    with pytest.raises(StorageError, match=r"outgrew S3's 2 parts of 5 MiB at 10485761 bytes") as err:
        with store.open_write("dump") as writer:
            writer.write(b"x" * (2 * PART))
            writer.write(b"x")
    assert "larger expected_size" in str(err.value)
    assert writer.state == "failed" and writer.bytes_written == 2 * PART
    assert multipart_uploads(s3_admin, bucket) == [] and store.list() == []


@pytest.mark.integration
def test_s3_dropped_writer_does_not_leave_its_upload(s3_endpoint, s3_admin, bucket):
    import gc

    store = open_storage(f"s3://{bucket}/p", s3=s3_options(s3_endpoint), part_size=PART)
    writer = store.open_write("dump")
    for chunk in data_stream(6 * MIB):
        writer.write(chunk)
    eventually(lambda: multipart_uploads(s3_admin, bucket))
    del writer
    gc.collect()
    assert eventually(lambda: multipart_uploads(s3_admin, bucket) == [])
    assert store.list() == []


EXIT_CLIENT = """
import sys
from dbkit.backup._storage import S3Options, open_storage, MIB
endpoint, bucket, access, secret = sys.argv[1:5]
store = open_storage(f"s3://{bucket}/exit", part_size=5 * MIB,
                     s3=S3Options(endpoint_url=endpoint, region="us-east-1", access_key=access, secret_key=secret))
WRITER = store.open_write("dump")  # a module global: alive until the interpreter exits
WRITER.write(b"x" * (6 * MIB))
print("written", flush=True)
"""


@pytest.mark.integration
def test_s3_exit_without_commit_neither_hangs_nor_leaves_an_upload(s3_endpoint, s3_admin, bucket):
    result = subprocess.run([sys.executable, "-c", EXIT_CLIENT, s3_endpoint, bucket, ACCESS_KEY, SECRET_KEY],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "written\n", result.stderr[-2000:]
    assert multipart_uploads(s3_admin, bucket) == []
    assert "Contents" not in s3_admin.list_objects_v2(Bucket=bucket)


MEMORY_CLIENT = """
import sys
from pathlib import Path
from dbkit.backup._storage import S3Options, open_storage, MIB
endpoint, bucket, access, secret = sys.argv[1:5]
store = open_storage(f"s3://{bucket}/mem", part_size=5 * MIB,
                     s3=S3Options(endpoint_url=endpoint, region="us-east-1", access_key=access, secret_key=secret))
with store.open_write("warm-up") as writer:  # boto3, obstore, its runtime and HTTP client set up before measuring
    writer.write(b"x")
status = lambda: dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
kib = lambda name: int(status()[name].split()[0]) * 1024
chunk = bytes(range(256)) * 4096  # 1 MiB
Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
before = kib("VmRSS")
with store.open_write("big") as writer:
    for _ in range(50):
        writer.write(chunk[:-1] + chunk[-1:])  # a new object each time, as the pipeline's chunks are
print(kib("VmHWM") - before, writer.bytes_written)
"""


@pytest.mark.integration
def test_s3_writer_memory_stays_bounded(s3_endpoint, s3_admin, bucket):
    # The writer runs in its own process: the moto server in this one holds the whole object in memory.
    # obstore allocates outside Python (tracemalloc cannot see it): the process's peak RSS growth is measured.
    result = subprocess.run([sys.executable, "-c", MEMORY_CLIENT, s3_endpoint, bucket, ACCESS_KEY, SECRET_KEY],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    peak, written = map(int, result.stdout.split())
    assert written == 50 * MIB
    assert s3_admin.head_object(Bucket=bucket, Key="mem/big")["ContentLength"] == 50 * MIB
    # the part being filled + 2 parts uploading + the HTTP client and signing: 19 MiB
    bound = upload_memory_bound(PART)
    assert bound == (UPLOAD_CONCURRENCY + 1) * PART + 4 * MIB < 4 * PART
    assert peak < bound, f"peak RSS grew by {peak / MIB:.1f} MiB while streaming 50 MiB in 5 MiB parts"


@pytest.mark.integration
def test_s3_missing_bucket_is_one_clear_line(s3_endpoint, s3_admin):
    store = open_storage("s3://dbkit-no-such-bucket/prod", s3=s3_options(s3_endpoint), part_size=PART)
    expected = f"S3 bucket 'dbkit-no-such-bucket' does not exist at {s3_endpoint}"
    with pytest.raises(StorageConfigError) as err:
        store.check()
    assert one_line_without_secret(err.value).startswith(expected)
    assert err.value.exit_code == 2
    with pytest.raises(StorageConfigError, match="does not exist"):  # small object: PutObject at commit
        with store.open_write("manifest.json") as writer:
            writer.write(b"{}")
    with pytest.raises(StorageConfigError, match="does not exist") as err:  # big: the first full part
        with store.open_write("dump") as writer:
            for chunk in data_stream(6 * MIB):
                writer.write(chunk)
    one_line_without_secret(err.value)
    assert writer.state == "failed"
    with pytest.raises(StorageConfigError, match="does not exist"):
        store.list()


@pytest.mark.integration
def test_s3_bucket_region_is_looked_up(s3_endpoint, s3_admin):
    """Without S3_REGION on AWS, uploads go to the bucket's own region (boto3 follows redirects, obstore not)."""
    s3_admin.create_bucket(Bucket="dbkit-frankfurt", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    store = open_storage("s3://dbkit-frankfurt/p", s3=s3_options(s3_endpoint))
    assert store._bucket_region() == "eu-central-1"
    assert open_storage("s3://dbkit-no-such-bucket/p", s3=s3_options(s3_endpoint))._bucket_region() == "us-east-1"


@pytest.fixture
def moto_auth(s3_endpoint: str) -> Iterator[None]:
    """Make the moto server check credentials (it accepts any by default)."""
    def set_count(value: str) -> None:
        req = urllib.request.Request(f"{s3_endpoint}/moto-api/reset-auth", data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    set_count("0")
    try:
        yield
    finally:
        set_count("inf")


@pytest.mark.integration
def test_s3_wrong_credentials_are_one_line_without_the_secret(s3_endpoint, bucket, moto_auth):
    options = s3_options(s3_endpoint, access_key="AKIAWRONGWRONGWRONG", secret_key="wrong-secret-xyz123")
    assert "wrong-secret" not in repr(options)
    store = open_storage(f"s3://{bucket}/prod", s3=options, part_size=PART)
    with pytest.raises(StorageConfigError) as err:
        store.check()
    text = one_line_without_secret(err.value)
    assert text.startswith(f"access denied by S3 for s3://{bucket}/prod (InvalidAccessKeyId"), text
    assert "check S3_ACCESS_KEY/S3_SECRET_KEY" in text
    with pytest.raises(StorageConfigError, match="access denied") as err:
        with store.open_write("dump") as writer:
            writer.write(b"rows")
    one_line_without_secret(err.value)


@pytest.mark.integration
def test_s3_unreachable_endpoint_is_one_line():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = S3Options(endpoint_url=f"http://127.0.0.1:{port}", region=REGION, access_key=ACCESS_KEY,
                        secret_key=SECRET_KEY, max_attempts=1, connect_timeout=2)
    store = open_storage("s3://backups/prod", s3=options)
    with pytest.raises(StorageError) as err:
        store.check()
    text = one_line_without_secret(err.value)
    assert text.startswith(f"cannot reach S3 at http://127.0.0.1:{port} ")
    assert "S3_ENDPOINT" in text


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS credentials anywhere, unless the test sets some."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.mark.integration
def test_s3_credentials_from_boto3_chain(s3_endpoint, bucket, aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    store = open_storage(f"s3://{bucket}/chain", s3=S3Options(endpoint_url=s3_endpoint, region=REGION))
    with store.open_write("k") as writer:
        writer.write(b"via the environment")
    with store.open_read("k") as fh:
        assert fh.read() == b"via the environment"


@pytest.mark.integration
def test_s3_no_credentials_at_all(s3_endpoint, bucket, aws_env):
    store = open_storage(f"s3://{bucket}/chain", s3=S3Options(endpoint_url=s3_endpoint, region=REGION))
    with pytest.raises(StorageConfigError, match=r"^no S3 credentials for s3://.*; set S3_ACCESS_KEY") as err:
        store.check()
    one_line_without_secret(err.value)


# --------------------------------------------------------------------- part sizes (pure)

@pytest.mark.unit
@pytest.mark.parametrize("size, expected", [
    (None, DEFAULT_PART_SIZE),
    (0, 8 * MIB),
    (1, 8 * MIB),
    (10 * 1024 * MIB, 8 * MIB),  # 10 GiB: 1,280 parts of 8 MiB
    (100 * 1024 * MIB, 18 * MIB),  # ceil(100 GiB x 1.5 / 9000) = 17.07 MiB
    (5 * 10**12, 795 * MIB),  # 5 TB
    (10**15, MAX_PART_SIZE),  # beyond S3: capped at 5 GiB
])
def test_choose_part_size(size, expected):
    assert choose_part_size(size) == expected


@pytest.mark.unit
def test_choose_part_size_for_5_tb_fits_with_headroom():
    size = 5 * 10**12
    part = choose_part_size(size)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE and part % MIB == 0
    assert -(-size // part) <= 6_100  # ~6,000 parts of S3's 10,000
    assert max_stream_size(part) == part * MAX_PARTS >= 1.6 * size  # parts do not grow: the headroom is all


@pytest.mark.unit
@given(st.integers(min_value=0, max_value=5 * 2**40))
def test_choose_part_size_properties(size):
    part = choose_part_size(size)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE and part % MIB == 0
    assert part * 9_000 >= size * 1.5  # the planned 9,000 parts hold 1.5 x the expected size
    assert choose_part_size(size + 10 * 2**30) >= part  # monotonic


@pytest.mark.unit
def test_choose_part_size_rejects_negative():
    with pytest.raises(ValueError):
        choose_part_size(-1)


@pytest.mark.unit
def test_max_stream_size_and_memory_bound():
    assert max_stream_size(DEFAULT_PART_SIZE) == 625 * 1024 * MIB  # unknown size: 625 GiB
    assert max_stream_size(MAX_PART_SIZE) == MAX_PARTS * MAX_PART_SIZE
    assert upload_memory_bound(8 * MIB) == 28 * MIB  # 3 parts + 4 MiB for the HTTP client and signing
    assert upload_memory_bound(DEFAULT_PART_SIZE) == 196 * MIB


# --------------------------------------------------------------------- URIs and options (pure)

@pytest.mark.unit
@pytest.mark.parametrize("uri, bucket, prefix, canonical", [
    ("s3://acme-db-backups/prod", "acme-db-backups", "prod/", "s3://acme-db-backups/prod"),
    ("s3://acme-db-backups/prod/eu/", "acme-db-backups", "prod/eu/", "s3://acme-db-backups/prod/eu"),
    ("s3://acme.backups", "acme.backups", "", "s3://acme.backups"),
    ("s3://abc/", "abc", "", "s3://abc"),
])
def test_parse_s3_uris(uri, bucket, prefix, canonical):
    loc = parse_storage_uri(uri)
    assert (loc.kind, loc.bucket, loc.prefix, loc.uri) == ("s3", bucket, prefix, canonical)
    store = open_storage(uri)
    assert isinstance(store, S3Storage) and store.uri == canonical and store.prefix == prefix
    assert store._client is None and store._store is None  # no boto3 client, no obstore store, until used


@pytest.mark.unit
def test_parse_file_uris_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert parse_storage_uri("file:///var/backups/db").path == Path("/var/backups/db")
    assert parse_storage_uri("file://localhost/var/b%20x").path == Path("/var/b x")
    assert parse_storage_uri("/var/backups/").path == Path("/var/backups")
    assert parse_storage_uri("backups").path == tmp_path / "backups"  # relative: against the cwd
    assert parse_storage_uri("./a/../b").path == tmp_path / "b"
    assert parse_storage_uri("backups", base=Path("/srv/app")).path == Path("/srv/app/backups")
    assert parse_storage_uri("~/b").path == Path.home() / "b"
    store = open_storage("backups")
    assert isinstance(store, LocalStorage) and store.uri == (tmp_path / "backups").as_uri()
    assert store.uri.startswith("file:///")


@pytest.mark.unit
@pytest.mark.parametrize("uri, problem", [
    ("", "empty"),
    ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
    ("s3://ab/x", "not a valid S3 bucket name"),
    ("s3://192.168.1.1/x", "not a valid S3 bucket name"),
    ("s3://user:hunter2@bucket/x", "credentials do not belong in the URI"),
    ("s3://bucket/a//b", "empty, '.' or '..' segment"),
    ("s3://bucket/../x", "empty, '.' or '..' segment"),
    ("s3://bucket/x?versionId=1", "no ?query"),
    ("gs://bucket/x", "unsupported scheme 'gs'"),
    ("file://otherhost/x", "file URIs name a local path"),
    ("file:relative/x", "absolute path"),
])
def test_bad_uris_are_config_errors(uri, problem):
    with pytest.raises(ConfigError) as err:
        parse_storage_uri(uri, variable="--to")
    text = str(err.value)
    assert text.startswith("--to is ") and problem in text and "\n" not in text
    assert "hunter2" not in text
    assert err.value.exit_code == 2


@pytest.mark.unit
def test_s3_options_validation_and_repr():
    options = S3Options(access_key="AKIA", secret_key="very-secret", session_token="tok-secret", tags={"a": "b"})
    assert "very-secret" not in repr(options) and "tok-secret" not in repr(options)
    assert S3Options(endpoint_url="", region=" ").endpoint_url is None  # empty means unset
    cases = [
        (dict(access_key="AKIA"), "S3_SECRET_KEY is not set but S3_ACCESS_KEY is"),
        (dict(secret_key="s"), "S3_ACCESS_KEY is not set but S3_SECRET_KEY is"),
        (dict(addressing_style="dns"), "S3_ADDRESSING_STYLE"),
        (dict(sse="aes"), "S3_SSE"),
        (dict(kms_key_id="k", sse="AES256"), "S3_SSE_KMS_KEY_ID"),
        (dict(storage_class="standard ia"), "S3_STORAGE_CLASS"),
        (dict(tags={str(i): "v" for i in range(11)}), "at most 10"),
        (dict(tags={"k": "a&b"}), "invalid tag 'k'"),
        (dict(endpoint_url="minio:9000"), "not an http(s) URL"),
        (dict(endpoint_url="http://u:pw-secret@minio:9000"), "carries credentials"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            S3Options(**kwargs)
        assert "pw-secret" not in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize("uri, options, expected", [
    ("s3://acme-backups/p", dict(region="eu-central-1"),  # AWS: virtual-hosted, like boto3's auto
     {"region": "eu-central-1", "virtual_hosted_style_request": "true"}),
    ("s3://acme.backups/p", dict(region="eu-central-1"),  # a dot in the bucket would break TLS: path-style
     {"virtual_hosted_style_request": "false"}),
    ("s3://acme-backups/p", dict(endpoint_url="http://127.0.0.1:9000", addressing_style="auto", sse="aws:kms",
                                 kms_key_id="alias/k"),  # MinIO: path-style, the SSE settings passed on
     {"endpoint": "http://127.0.0.1:9000", "virtual_hosted_style_request": "false",
      "server_side_encryption": "aws:kms", "sse_kms_key_id": "alias/k"}),
    ("s3://acme-backups/p", dict(endpoint_url="http://minio:9000", addressing_style="virtual"),
     {"virtual_hosted_style_request": "true"}),
])
def test_s3_uploader_configuration(uri, options, expected):
    """The obstore store that uploads: addressing, region, endpoint, SSE (built without any request)."""
    store = open_storage(uri, s3=S3Options(access_key="AKIAEXAMPLE", secret_key="example-secret", **options))
    config = store.store.config
    assert {k: config.get(k) for k in expected} == expected
    assert "checksum_algorithm" not in config  # no checksum headers S3-compatible servers may not understand


@pytest.mark.unit
def test_s3_part_size_hook_is_validated():
    with pytest.raises(ValueError):
        S3Storage("bucket", part_size=MIB)
    assert S3Storage("bucket", "a/b/", part_size=PART).prefix == "a/b/"


@pytest.mark.unit
def test_metadata_is_validated(tmp_path: Path):
    store = LocalStorage(tmp_path)
    for bad in ({"bad key": "v"}, {"k": "naïve"}, {"k": "x" * 3000}):
        with pytest.raises(ValueError):
            store.open_write("k", metadata=bad)
