"""Crash recovery: store what dead mounts left in their spool directories.

A mount that is killed, or whose machine goes down, leaves its spool directory behind with
files whose close failed (the server was down) or never finished. A later mount of the same
store finds such directories (``spool_dir.claimed``: their owner no longer holds the lock) and,
for each spool file, reads its sidecar (``spool_record``) and decides:

- **store it**: the record is complete (a close, fsync or unmount meant this content), its
  data can be trusted (synced, or written on this boot: a killed process leaves its writes in
  the page cache) and the object was not changed meanwhile by someone else: its current
  version is still the one the spool started from (same nuid; for a new file: no live object).
  The put is conditional on the revision just read (``if_revision``), so a change racing with
  recovery turns it into a conflict instead of being overwritten.
- **conflict**: the object was changed (or deleted) meanwhile. Theirs stays; ours is stored
  beside it as ``NAME.objfs-conflict-<host>-<UTC time>``, created only if that name is free,
  and reported in the log. Stored in the bucket rather than kept in the spool because that is
  where the user (and every other client) looks, next to the file it belongs to, it survives
  the loss of this machine's disk, and the spool can then be emptied; nothing is overwritten
  (``if_revision=0``) and nothing is deleted.
- **keep it**: the record is missing or not complete (the file was still being written), the
  data may be torn (not synced, from before a reboot), or it is for a bucket this mount does
  not serve: the file stays in the spool and the log names it. An empty incomplete file holds
  nothing and is removed.

A spool file (and its record) is removed only after the store acknowledged the put. A
directory is removed once it holds no spool file. A store error stops the recovery of that
directory (its files stay for the next mount). Directories of another store (``origin``) are
left alone and named in the log.

When: in the background right after the mount is ready (``mount``), not before: recovery may
upload many MiBs, and the mount must not wait for it; the conditional put makes a user's own
write of the same name meanwhile win (ours becomes the conflict copy).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from pathlib import Path

import trio

from objfs.bridge import TrioStore
from objfs.fs import spool_dir, spool_record
from objfs.fs.spool_record import SpoolRecord, boot_id
from objfs.store.api import ObjectInfo
from objfs.store.errors import Exists, NotFound, StoreError
from objfs.store.wire import format_digest

log = logging.getLogger(__name__)

SPOOL_GLOB = spool_dir.SPOOL_FILES
CONFLICT = ".objfs-conflict-"


class Recovery:
    """One pass over the spool base of a mount (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        base: Path,
        own: Path,
        origin: str,
        *,
        bucket: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.store = store
        self.base = base
        self.own = own
        self.origin = origin
        self.bucket = bucket
        """The mount's bucket (None: every bucket)."""
        self.chunk_size = chunk_size
        self.stored: list[tuple[str, str, int]] = []
        """``(bucket, name, bytes)`` stored under their own name."""
        self.conflicts: list[tuple[str, str, str]] = []
        """``(bucket, name, conflict_name)``."""
        self.kept: list[tuple[Path, str]] = []
        """``(spool_file, reason)`` left in the spool."""

    async def run(self) -> Recovery:
        """One pass; store errors are logged (the files they concern stay), not raised."""
        with spool_dir.claimed(self.base, self.own) as directories:
            for directory in directories:
                theirs = spool_dir.origin(directory)
                if theirs is not None and theirs != self.origin:
                    log.warning(
                        "%s holds files of a mount of another store (%s); a mount of that "
                        "store will upload them",
                        directory,
                        theirs,
                    )
                    continue
                try:
                    await self._directory(directory)
                except StoreError as e:
                    log.error(
                        "recovery of %s stopped (%s); its files stay for the next mount",
                        directory,
                        e,
                    )
        return self

    async def _directory(self, directory: Path) -> None:
        for path in sorted(directory.glob(SPOOL_GLOB)):
            await self._file(path)
        for orphan in directory.glob(SPOOL_GLOB + spool_record.SUFFIX):
            if not orphan.with_suffix("").exists():  # a record whose data is gone
                orphan.unlink(missing_ok=True)
        if not any(directory.glob(SPOOL_GLOB)):
            spool_dir.remove(directory)
            log.info("recovered %s; removed it", directory)
        else:
            log.warning(
                "%s keeps file(s) objfs could not store; copy back what you need and delete "
                "the directory",
                directory,
            )

    async def _file(self, path: Path) -> None:
        record = spool_record.read(path)
        size = path.stat().st_size
        reason = self._untrusted(record, size)
        if reason is not None:
            if size == 0 and (record is None or not record.complete):
                self._drop(path)  # nothing was written: nothing to keep
                return
            self._keep(path, record, reason)
            return
        assert record is not None
        if self.bucket is not None and record.bucket != self.bucket:
            self._keep(path, record, f"for bucket {record.bucket}, not this mount's")
            return
        try:
            await self._store(path, record, size)
        except NotFound as e:  # its bucket is gone (or never existed on this store)
            self._keep(path, record, f"cannot store it: {e}")

    async def _store(self, path: Path, record: SpoolRecord, size: int) -> None:
        current = await self._current(record.bucket, record.name)
        if current is not None and current.digest == await trio.to_thread.run_sync(_digest, path):
            # Its put did land (the mount died before it heard the ack): nothing to do.
            log.info("%s: %s/%s is stored already", path, record.bucket, record.name)
            self._drop(path)
            return
        expected = self._unchanged(record, current)
        if expected is not None:
            try:
                await self._put(path, record, record.name, expected)
            except Exists:
                pass  # changed while we looked: a conflict after all
            else:
                self.stored.append((record.bucket, record.name, size))
                log.warning(
                    "recovered %s/%s (%d bytes) from %s, left by a mount that ended before "
                    "storing it",
                    record.bucket,
                    record.name,
                    size,
                    path,
                )
                self._drop(path)
                return
        await self._conflict(path, record, size)

    @staticmethod
    def _untrusted(record: SpoolRecord | None, size: int) -> str | None:
        if record is None:
            return "no record: it was being written or uploaded when its mount ended"
        if not record.complete:
            return "it was still being written when its mount ended"
        if not record.synced and record.boot_id != boot_id():
            return "written before a reboot and not synced: it may be torn"
        if size != record.size:
            return f"it holds {size} bytes, its record says {record.size}"
        return None

    async def _current(self, bucket: str, name: str) -> ObjectInfo | None:
        try:
            return await self.store.info(bucket, name)
        except NotFound:
            return None

    @staticmethod
    def _unchanged(record: SpoolRecord, current: ObjectInfo | None) -> int | None:
        """The revision to put over if nobody else changed the object, else None."""
        if record.base is None:
            return 0 if current is None else None
        if current is None or current.deleted or current.nuid != record.base.nuid:
            return None
        return current.revision

    async def _put(self, path: Path, record: SpoolRecord, name: str, if_revision: int) -> None:
        with open(path, "rb") as source:
            await self.store.put(
                record.bucket,
                name,
                source,
                meta=record.meta,
                chunk_size=self.chunk_size,
                if_revision=if_revision,
            )

    async def _conflict(self, path: Path, record: SpoolRecord, size: int) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        first = f"{record.name}{CONFLICT}{socket.gethostname()}-{stamp}"
        for attempt in range(100):
            name = first if attempt == 0 else f"{first}-{attempt}"
            try:
                await self._put(path, record, name, 0)
            except Exists:
                continue
            self.conflicts.append((record.bucket, record.name, name))
            log.warning(
                "%s/%s was changed elsewhere after a mount that ended failed to store it: "
                "kept its version (%d bytes) as %s/%s",
                record.bucket,
                record.name,
                size,
                record.bucket,
                name,
            )
            self._drop(path)
            return
        self._keep(path, record, "no free conflict name")

    def _keep(self, path: Path, record: SpoolRecord | None, reason: str) -> None:
        self.kept.append((path, reason))
        what = f"{record.bucket}/{record.name}" if record is not None else "unknown object"
        log.warning("%s (%s) kept, not stored: %s", path, what, reason)

    @staticmethod
    def _drop(path: Path) -> None:
        path.unlink(missing_ok=True)
        spool_record.remove(path)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return format_digest(sha.digest())
