"""The write spool: one local file per inode being written, shared by all its handles.

Writes land in a file under the spool directory, never in memory, so a file of any size is
written with bounded memory; the upload then streams the file to the store. Writing into an
existing object first copies its content into the spool (copy on write), so partial
overwrites, appends and truncates all work; a truncate to zero skips the copy. The spool file
is named (not anonymous) so that a failed upload leaves something the user can recover.
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
from objfs.store.api import ObjectInfo
from objfs.store.errors import Corrupt, NotFound

log = logging.getLogger(__name__)


class Spool:
    """Local content of one inode while it is being written.

    ``base`` is the object the content starts from (None: a new, empty file). Until
    ``filled``, the file does not hold that content yet and ``size`` is the base's size.
    ``lock`` serialises writes, truncates, fills, reads and uploads (an upload reads the file
    from a worker thread, across many awaits), and is also taken by a rename or an xattr
    update of the node, which must not run under its upload. ``dirty``, ``base`` and
    ``last_error`` change only under it (or on a new spool no other task can see yet).
    """

    def __init__(self, directory: Path, base: ObjectInfo | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="objfs-", suffix=".spool", dir=directory)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "r+b")
        self.base = base
        self.filled = base is None or base.size == 0
        self._size = base.size if base is not None and not self.filled else 0
        self.dirty = False
        self.lock = trio.Lock()
        self.last_error: str | None = None

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
                self.file.write(chunk)

    async def write(self, store: TrioStore, offset: int, data: bytes) -> int:
        async with self.lock:
            await self.fill(store)
            self.file.seek(offset)
            self.file.write(data)
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
            self.file.truncate(size)
            self._size = size
            self.dirty = True

    async def read(self, offset: int, size: int) -> bytes:
        """Bytes from the file; only valid once ``filled``."""
        async with self.lock:
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
