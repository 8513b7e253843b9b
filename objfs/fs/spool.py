"""The write spool: one local file per inode being written, shared by all its handles.

Writes land in a file under the spool directory, never in memory, so a file of any size is
written with bounded memory; the upload then streams the file to the store. Writing into an
existing object first copies its content into the spool (copy on write), so partial
overwrites, appends and truncates all work; a truncate to zero skips the copy. The spool file
is named (not anonymous) so that a failed upload leaves something the user can recover, and
carries a sidecar record (``spool_record``) saying what it is for, so that a later mount can
store it if this one dies (``recovery``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import trio

from objfs.bridge import TrioStore
from objfs.fs import spool_record
from objfs.fs.spool_record import SpoolRecord
from objfs.store.api import ObjectInfo
from objfs.store.errors import Corrupt, NotFound

log = logging.getLogger(__name__)

RECORD_BEFORE_UPLOAD = 1 << 20
"""Spools of at least this many bytes get their sidecar before the upload starts (so a mount
killed during a long upload leaves a record the next mount acts on); smaller ones only if the
upload fails. A record costs four metadata operations (0.15-0.6 ms measured on ext4 here, as
much as a small file's whole put): too much for every small close, nothing next to the put of
a MiB. A small file whose mount dies during its upload is kept in the spool and reported."""


class Spool:
    """Local content of one inode while it is being written.

    ``base`` is the object the content starts from (None: a new, empty file). Until
    ``filled``, the file does not hold that content yet and ``size`` is the base's size.
    ``lock`` serialises writes, truncates, fills, reads and uploads (an upload reads the file
    from a worker thread, across many awaits), and is also taken by a rename or an xattr
    update of the node, which must not run under its upload. ``dirty``, ``base``,
    ``last_error`` and ``record`` change only under it (or on a new spool no other task can
    see yet).
    """

    def __init__(self, directory: Path, base: ObjectInfo | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="objfs-", suffix=".spool", dir=directory)
        self.path = Path(name)
        # Unbuffered: each write the kernel hands over is in the page cache when it is
        # answered, so a killed daemon leaves it in the spool file (a buffer would lose it).
        self.file: BinaryIO = os.fdopen(fd, "r+b", buffering=0)
        self.base = base
        self.filled = base is None or base.size == 0
        self._size = base.size if base is not None and not self.filled else 0
        self.dirty = False
        self.lock = trio.Lock()
        self.last_error: str | None = None
        self.record: SpoolRecord | None = None
        """The sidecar (None: no upload started yet); ``_recorded``: it is on disk."""
        self._recorded = False

    def mark_complete(self, record: SpoolRecord) -> None:
        """Before an upload: the content is a version to store (the sidecar says so; written
        now for a large spool, see ``RECORD_BEFORE_UPLOAD``, else if the upload fails)."""
        self.record = record
        if self._size >= RECORD_BEFORE_UPLOAD:
            self._recorded = True  # first: a write that fails half-way is still cleaned up
            spool_record.write(self.path, record)

    def make_durable(self) -> None:
        """After a failed upload: fsync the content and its record (survives a power loss)."""
        if self.record is None:
            return
        os.fsync(self.file.fileno())
        self.record.synced = True
        self._recorded = True  # first: a write that fails half-way is still cleaned up
        spool_record.write(self.path, self.record, sync=True)

    def _changing(self) -> None:
        """A write after a complete record: a crash from now on leaves a half-written file."""
        if self.record is not None and self.record.complete:
            self.record.complete = False
            self.record.synced = False
            if self._recorded:
                spool_record.write(self.path, self.record)

    @property
    def size(self) -> int:
        return self._size

    async def fill(self, store: TrioStore) -> None:
        """Copy the base object's content into the file (once, before the first change).

        The copy is made at the first change, not at open (``touch`` and editors open files
        for writing without writing). If another client replaced or deleted the object since
        the open, its chunks may be gone: the change then starts from the object's newest
        version (empty if it was deleted), as if the file had been opened after that change,
        and a warning says so. Failing the write would lose the writer's data.
        """
        if self.filled:
            return
        assert self.base is not None
        try:
            await self._copy(store, self.base)
        except (Corrupt, NotFound) as e:
            base = self.base
            try:
                current: ObjectInfo | None = await store.info(base.bucket, base.name)
            except NotFound:
                current = None
            if current is not None and current.nuid == base.nuid:
                raise  # the same version, damaged: the write fails (EIO)
            log.warning(
                "%s/%s was %s elsewhere before its first change here (%s); the change "
                "applies to the newest version",
                base.bucket,
                base.name,
                "replaced" if current is not None else "deleted",
                e,
            )
            self.base = current
            if current is None:
                self.file.seek(0)
                self.file.truncate(0)
            else:
                await self._copy(store, current)
        self._size = self.file.tell()
        self.filled = True

    async def _copy(self, store: TrioStore, info: ObjectInfo) -> None:
        self.file.seek(0)
        self.file.truncate(0)
        async for batch in store.read_stream(info):
            for chunk in batch:
                self._write_all(chunk)

    async def write(self, store: TrioStore, offset: int, data: bytes) -> int:
        async with self.lock:
            await self.fill(store)
            self._changing()
            self.file.seek(offset)
            self._write_all(data)
            self._size = max(self._size, offset + len(data))
            self.dirty = True
            return len(data)

    async def truncate(self, store: TrioStore, size: int) -> None:
        async with self.lock:
            if size == 0:
                # Nothing of the base survives: no need to copy it first.
                self.filled = True
            else:
                await self.fill(store)
            self._changing()
            self.file.truncate(size)
            self._size = size
            self.dirty = True

    def _write_all(self, data: bytes) -> None:
        """An unbuffered write may be short (a signal, a full disk: then the next one
        raises): write on until all of ``data`` is in."""
        view = memoryview(data)
        while view:
            view = view[self.file.write(view) :]

    async def read(self, offset: int, size: int) -> bytes | None:
        """Bytes from the file; only valid once ``filled``. None: the spool was closed while
        this waited for the lock (its content stored by the upload that held it)."""
        async with self.lock:
            if self.file.closed:
                return None
            self.file.seek(offset)
            return self.file.read(max(0, min(size, self._size - offset)))

    def rewind(self) -> BinaryIO:
        """The file positioned at its start, flushed, for an upload to read."""
        self.file.flush()
        self.file.seek(0)
        return self.file

    def close(self, *, delete: bool = True) -> None:
        try:
            self.file.close()
        finally:
            if delete:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                if self._recorded:  # most spools never write one: no unlinks to fail
                    spool_record.remove(self.path)
