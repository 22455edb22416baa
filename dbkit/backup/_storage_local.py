"""The local-disk backend: a temp file next to the final name, fsync, then an atomic rename."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from dbkit.backup._storage_base import (
    PARTIAL,
    READ_BUFFER,
    IncompleteUpload,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageConfigError,
    StorageError,
    Writer,
    _check_key,
    _check_metadata,
    _check_prefix,
    _cutoff,
)


class _LocalWriter(Writer):
    def __init__(self, storage: LocalStorage, key: str) -> None:
        super().__init__(key)
        self._storage = storage
        self.final = storage._path(key)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.temp = self.final.with_name(f"{self.final.name}{PARTIAL}{secrets.token_hex(6)}")
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise storage._error(exc, "write", key) from None
        self._fh: io.BufferedWriter | None = os.fdopen(fd, "wb", buffering=READ_BUFFER)

    def _write(self, view: memoryview) -> None:
        try:
            self._fh.write(view)  # type: ignore[union-attr]
        except OSError as exc:
            raise self._storage._error(exc, "write", self.key) from None

    def _commit(self) -> ObjectInfo:
        fh, self._fh = self._fh, None
        try:
            fh.flush()  # type: ignore[union-attr]
            os.fsync(fh.fileno())  # type: ignore[union-attr]
            fh.close()  # type: ignore[union-attr]
            os.replace(self.temp, self.final)
        except OSError as exc:
            with contextlib.suppress(OSError):  # closing flushes again, and fails the same way (disk full)
                fh.close()  # type: ignore[union-attr]
            raise self._storage._error(exc, "commit", self.key) from None
        with contextlib.suppress(OSError):  # the rename is durable once its directory is synced too
            fd = os.open(self.final.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        st = self.final.stat()
        return ObjectInfo(self.key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _abort(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):
                fh.close()
        try:
            self.temp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._storage._error(exc, "discard", self.key) from None


class LocalStorage(Storage):
    """Backups in a directory.  Files are created 0600 (a dump holds every tenant's data)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def _error(self, exc: OSError, action: str, key: str | None = None) -> StorageError:
        where = f"{self.uri}/{key}" if key else self.uri
        reason = exc.strerror or type(exc).__name__
        return StorageError(f"cannot {action} {where}: {reason}")

    def open_write(self, key: str, *, expected_size: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Writer:
        _check_metadata(metadata)
        return _LocalWriter(self, key)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.uri}/{key} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"{self.uri}/{key} is a directory, not a stored object") from None
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def _walk(self, prefix: str):
        """(key, size, modification time) of every regular file whose key starts with ``prefix``, temp files
        included."""
        start = self.root.joinpath(*prefix.split("/")[:-1])
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                if os.path.isfile(path):
                    yield key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = _check_prefix(prefix)
        try:
            found = [ObjectInfo(key, size, modified) for key, size, modified in self._walk(prefix)
                     if PARTIAL not in key]
        except OSError as exc:
            raise self._error(exc, "list") from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._remove(self._path(key), key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_incomplete_uploads(self, older_than: datetime | timedelta | None = None) -> list[IncompleteUpload]:
        cutoff = _cutoff(older_than)
        return [IncompleteUpload(key.rsplit(PARTIAL, 1)[0], key, modified, size, modified)
                for key, size, modified in self._walk("") if PARTIAL in key and (cutoff is None or modified < cutoff)]

    def abort_upload(self, upload: IncompleteUpload) -> None:
        path = self.root.joinpath(*upload.upload_id.split("/"))
        if PARTIAL not in path.name or self.root not in path.parents:
            raise ValueError(f"not a temp file of this storage: {upload.upload_id!r}")
        self._remove(path, upload.upload_id)

    def _remove(self, path: Path, key: str) -> None:
        """Delete the file (missing: no error) and the directories that leaves empty (never the root)."""
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, "delete", key) from None
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, "create") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageConfigError(f"{self.uri} is not writable by this user")
