"""What backup and restore share: errors, pg_dump/pg_restore programs and their libpq environment,
the storage of a URI, the stream pumps, decryption identities, decompression."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dbkit._urls import DbUrl, first_line, parse_database_url
from dbkit.errors import ConfigError, DbkitError, MissingDependency, OperationFailed

CHUNK = 1 << 20
#: zstd's job size for multi-threaded compression (bounds its buffers; see _Pump)
ZSTD_JOB_SIZE = 2 << 20
MAGIC = b"PGDMP"


class BackupFailed(OperationFailed):
    """pg_dump, the compression or encryption, or the storage failed; nothing complete was written."""


class RestoreFailed(OperationFailed):
    """The restore failed or its checks did; the new database was dropped, the existing one untouched."""


def find_program(settings, name: str) -> str:
    """``pg_dump``/``pg_restore`` of the newest local PostgreSQL (server bin dir first, then PATH)."""
    from dbkit._dev import find_bindir

    with contextlib.suppress(DbkitError):
        candidate = find_bindir(settings.pg_bindir) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise MissingDependency(f"{name} was not found", hint="install the PostgreSQL client: apt-get install "
                                "postgresql-client (its major version must not be older than the server)")
    return found


def _major(version_text: str) -> int:
    m = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def _libpq_env(url: DbUrl) -> Iterator[tuple[str, dict[str, str]]]:
    """(conninfo without the password, environment for pg_dump/pg_restore/pg_dumpall).

    The child sees the libpq environment dbkit's own connections honour (PGPASSWORD, PGPASSFILE,
    PGSSL*, PGSERVICE, ...); a password in the URL (userinfo or ``?password=``) travels as PGPASSWORD in
    the child's environment only: never on its command line (``ps``) and never in a file, so nothing
    secret is left on disk whatever happens to dbkit (``kill -9`` included).  ``/proc/<pid>/environ``
    is readable by the same user only.
    """
    env = dict(os.environ)
    password = url.password
    bare = url.without_password()
    query = dict(bare.query)
    if "password" in query:  # postgresql://u@h/db?password=... : same treatment
        from urllib.parse import urlencode, urlsplit, urlunsplit

        password = password if password is not None else query["password"]
        parts = urlsplit(bare.raw)
        rest = [(k, v) for k, v in bare.query if k != "password"]
        bare = parse_database_url(urlunsplit(parts._replace(query=urlencode(rest))))
    if password is not None:
        env["PGPASSWORD"] = password
    yield bare.conninfo, env


def storage_for(settings, uri: str | None = None, **s3_extra):
    """The Storage for ``uri`` (or DBKIT_BACKUP_URI; relative paths are under the project).

    ``s3_extra``: per-backup S3 options (``sse``, ``kms_key_id``, ``storage_class``, ``tags``).
    """
    from dbkit.backup._storage_uri import S3Options, open_storage

    options = S3Options(endpoint_url=settings.s3_endpoint, region=settings.s3_region,
                        access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                        addressing_style=settings.s3_addressing_style,
                        **{k: v for k, v in s3_extra.items() if v})
    return open_storage(uri or settings.backup_uri, s3=options, base=settings.project_dir,
                        variable="--to" if uri else "DBKIT_BACKUP_URI")


def _drain(pipe) -> Callable[[], bytes]:
    """Read a child's ``pipe`` to its end in a thread of its own (the child never blocks on a full pipe);
    the function returned waits for that thread (30 s at most) and gives what was read."""
    chunks: list[bytes] = []
    thread = threading.Thread(target=lambda: chunks.append(pipe.read()), daemon=True)
    thread.start()

    def result() -> bytes:
        thread.join(timeout=30)
        return b"".join(chunks)

    return result


class _Pump(io.RawIOBase):
    """A readable stream over pg_dump's stdout that compresses on the way and counts raw bytes."""

    def __init__(self, source, compression: str, level: int | None) -> None:
        self.source, self.raw_bytes, self.head = source, 0, b""
        self.progress: Callable[[int], None] | None = None
        self._buf = bytearray()
        self._eof = False
        if compression == "zstd":
            import zstandard

            # multi-threaded, with small jobs: zstd's default job size at level 3 costs ~65 MiB of buffers
            # (measured: bench/backup_rss.py); 2 MiB jobs cost ~19 MiB at the same speed and ratio
            params = zstandard.ZstdCompressionParameters.from_level(level or 3, threads=-1, job_size=ZSTD_JOB_SIZE)
            self._c = zstandard.ZstdCompressor(compression_params=params).compressobj()
        elif compression == "gzip":
            self._c = zlib.compressobj(level if level is not None else 6, zlib.DEFLATED, 31)
        else:
            self._c = None

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._eof:
            chunk = self.source.read(CHUNK)
            if not chunk:
                self._eof = True
                if self._c is not None:
                    self._buf += self._c.flush()
                break
            if len(self.head) < len(MAGIC):
                self.head += chunk[: len(MAGIC) - len(self.head)]
            self.raw_bytes += len(chunk)
            if self.progress is not None:
                self.progress(self.raw_bytes)
            self._buf += self._c.compress(chunk) if self._c is not None else chunk

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


class _HashingWriter(io.RawIOBase):
    def __init__(self, target) -> None:
        self.target, self.sha, self.bytes = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.bytes += len(data)
        self.target.write(data)
        return len(data)


def _age_recipients(recipients: tuple[str, ...]) -> list:
    if not recipients:
        return []
    import pyrage

    parsed = []
    for r in recipients:
        if r.startswith("AGE-SECRET-KEY-"):
            raise ConfigError("--encrypt-to", "was given a secret identity, not a public recipient (age1...)",
                              example="--encrypt-to age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(r))
        except Exception:  # noqa: BLE001 - pyrage raises its own RecipientError
            raise ConfigError("--encrypt-to", f"{r[:12]}... is not an age X25519 recipient",
                              example="age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p") from None
    return parsed


def stale_after(settings):
    """DBKIT_BACKUP_STALE_AFTER as a timedelta (``6h``, ``90min``, ``1d``, ``30s``, ``0``)."""
    from datetime import timedelta

    text = str(settings.backup_stale_after).strip()
    m = re.fullmatch(r"(\d+)(ms|s|min|h|d)?", text)
    if not m:
        raise ConfigError("DBKIT_BACKUP_STALE_AFTER", f"is {text!r}, not a duration", example="6h")
    unit = {"ms": 0.001, "s": 1, None: 1, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=int(m.group(1)) * unit)


class _VerifyingReader(io.RawIOBase):
    """Reads the stored object, hashing it; ``finish()`` compares with the manifest."""

    def __init__(self, fh, expected_sha: str, expected_size: int) -> None:
        self.fh, self.expected_sha, self.expected_size = fh, expected_sha, expected_size
        self.sha, self.bytes = hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.fh.read(len(b))
        if not data:
            return 0
        self.sha.update(data)
        self.bytes += len(data)
        b[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        while self.read(CHUNK):
            pass
        if self.bytes != self.expected_size or self.sha.hexdigest() != self.expected_sha:
            raise RestoreFailed(f"the stored object does not match its manifest (sha256 {self.sha.hexdigest()[:12]}"
                                f" vs {self.expected_sha[:12]}, {self.bytes} vs {self.expected_size} bytes): "
                                "the backup is corrupt or was tampered with")


def _identities(settings) -> list:
    import pyrage

    texts = []
    if settings.age_identity_file:
        path = Path(os.path.expanduser(str(settings.age_identity_file)))
        try:
            texts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
        except OSError as exc:
            raise ConfigError("DBKIT_AGE_IDENTITY_FILE", f"cannot be read ({exc.strerror})",
                              example="DBKIT_AGE_IDENTITY_FILE=/run/secrets/backup.agekey") from None
    if settings.age_identity:
        texts.append(settings.age_identity.strip())
    if not texts:
        raise ConfigError("DBKIT_AGE_IDENTITY_FILE", "is not set and the backup is encrypted",
                          purpose="points at the age secret key that decrypts backups",
                          example="DBKIT_AGE_IDENTITY_FILE=/run/secrets/backup.agekey (or DBKIT_AGE_IDENTITY)")
    try:
        return [pyrage.x25519.Identity.from_str(t) for t in texts]
    except Exception:  # noqa: BLE001
        raise ConfigError("DBKIT_AGE_IDENTITY", "does not hold a valid age identity",
                          example="AGE-SECRET-KEY-1...") from None


def _stream_dump(settings, storage, manifest, out) -> None:
    """Download -> verify sha256 -> decrypt -> decompress -> ``out``; raises if the checksum does not match."""
    with storage.open_read(f"{manifest.id}/{manifest.object}") as raw:
        verifying = _VerifyingReader(raw, manifest.sha256, manifest.stored_bytes)
        source: Any = verifying
        decrypt_thread = None
        failure: list[BaseException] = []
        if manifest.encryption:
            import pyrage

            identities = _identities(settings)
            r_fd, w_fd = os.pipe()
            reader, writer = os.fdopen(r_fd, "rb"), os.fdopen(w_fd, "wb")

            def decrypt() -> None:
                try:
                    pyrage.decrypt_io(verifying, writer, identities)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failure.append(exc)
                finally:
                    writer.close()

            decrypt_thread = threading.Thread(target=decrypt, name="dbkit-age-decrypt", daemon=True)
            decrypt_thread.start()
            source = reader
        damaged: BaseException | None = None
        try:
            _decompress(source, out, manifest.compression)
        except _Corrupt as exc:
            damaged = exc
        finally:
            if decrypt_thread is not None:
                source.close()
                decrypt_thread.join()
        if failure:
            raise RestoreFailed("the backup could not be decrypted with the configured age identity",
                                hint="check DBKIT_AGE_IDENTITY_FILE / DBKIT_AGE_IDENTITY") from failure[0]
        if damaged is not None:
            raise RestoreFailed(f"the backup {manifest.id} is corrupt: its {manifest.compression} stream is damaged "
                                f"({first_line(str(damaged), type(damaged).__name__)}) after {verifying.bytes} "
                                "stored bytes", hint="restore another backup (`dbkit backup list`)") from None
        verifying.finish()


class _Corrupt(Exception):
    """A compressed stream that cannot be decompressed (or ends early)."""


def _decompress(src, out, compression: str) -> None:
    """Decompress ``src`` into ``out``; a damaged or truncated stream raises :class:`_Corrupt` (errors
    writing to ``out``, such as a pg_restore that stopped, propagate unchanged)."""
    head = b""
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while True:
            try:
                chunk = reader.read(CHUNK)
            except zstandard.ZstdError as exc:
                raise _Corrupt(str(exc)) from None
            if not chunk:
                break
            head = head or chunk[: len(MAGIC)]
            out.write(chunk)
    elif compression == "gzip":
        d = zlib.decompressobj(31)
        while chunk := src.read(CHUNK):
            try:
                data = d.decompress(chunk)
            except zlib.error as exc:
                raise _Corrupt(str(exc)) from None
            head = head or data[: len(MAGIC)]
            out.write(data)
        if not d.eof:
            raise _Corrupt("the gzip stream ends early")
        out.write(d.flush())
    else:
        while chunk := src.read(CHUNK):
            head = head or chunk[: len(MAGIC)]
            out.write(chunk)
    if head and head != MAGIC:
        raise RestoreFailed("the decompressed backup is not a pg_dump custom-format archive")


def _feed(settings, storage, manifest, proc) -> int:
    """Stream the dump into ``proc``'s stdin and return its exit code.  The process may stop reading
    early (a broken pipe): its exit code and stderr say why, or it had all it needed."""
    try:
        _stream_dump(settings, storage, manifest, proc.stdin)
    except BrokenPipeError:
        pass
    except BaseException:
        proc.kill()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()
    return proc.wait()
