"""File data operations of the core: open, create, read, write, flush, fsync, release, upload.

Writes go to the inode's spool (shared by all its handles); the spool is uploaded with one
``store.put`` (streamed from the spool file, in chunks) when the last writer closes, or on
fsync. A failed upload answers EIO (ENOSPC/EROFS when the store says so) and keeps the spool:
``upload_retry`` tries again in the background, so do the next close or fsync and
``Filesystem.shutdown``; before each upload the spool's sidecar records what it is for, so
that ``recovery`` can store it if the mount dies first. Reads come from the
spool while the inode has local content, otherwise through the chunk cache.

``Files`` owns each node's ``FileState`` (``Node.file``: spool, handle counts, the cached
version, the object to delete at the last close, remote versions held while writing).

Concurrency (trio: one task runs at a time, switching only at an await):

- ``spool.lock`` serialises everything that reads or changes a spool's file across awaits:
  writes, truncates, fills and uploads (an upload reads the file from a worker thread), and
  renames and xattr updates of a node with a spool (``names``, ``xattr_ops``), which must
  not run under an upload that would publish the old name or meta.
- ``upload`` re-checks ``spool.dirty`` after taking the lock: another close may have
  uploaded meanwhile. It re-checks ``node.attached`` after the put: an unlink during the
  put's awaits detached the node, and the object just stored is retracted.
- ``Node.file.spool`` itself is set and cleared without an await in between the check and
  the change (``_spool``, ``release``); ``unlink`` clears it under the spool's lock.
- The kernel never calls release while other requests on the same handle run, and flush
  and release of one handle come in order; other handles of the node may run at once.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from objfs.bridge import TrioStore
from objfs.fs.chunk_cache import ChunkCache
from objfs.fs.errors import FsError
from objfs.fs.handles import Handle, HandleTable
from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.limits import check_size
from objfs.fs.naming import display_path, in_bucket, new_attrs, object_name, touch
from objfs.fs.permissions import may_open
from objfs.fs.posix_attrs import Attrs, attrs_to_headers
from objfs.fs.spool import Spool
from objfs.fs.spool_record import SpoolRecord
from objfs.fs.stats import Progress, Stats
from objfs.fs.streaming_upload import EarlyUploads
from objfs.fs.upload_retry import PendingUpload, UploadRetry
from objfs.fs.values import Caller
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import ObjectInfo, ObjectMeta
from objfs.store.errors import Exists, NoSpace, NotFound, ReadOnly, StoreError

log = logging.getLogger(__name__)

Failure = tuple[str, str, str]
"""An upload that failed at shutdown: ``(path, spool_file, error_message)``."""


class Files:
    """Open files and their data (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        handles: HandleTable,
        cache: ChunkCache,
        spool_dir: Path,
        watcher: Watcher,
        directory: Callable[[int], Awaitable[Node]],
        stats: Stats,
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.handles = handles
        self.cache = cache
        self.spool_dir = spool_dir
        self.watcher = watcher
        self.directory = directory
        """``Coherence.directory``: a directory by inode, its bucket loaded."""
        self.stats = stats
        self.retry = UploadRetry(self.upload, self.settle, self._display)
        self.early = EarlyUploads(store, options.chunk_size, stats, self._display)
        """Streaming puts of files written sequentially (see ``streaming_upload``)."""

    def pending_uploads(self) -> list[PendingUpload]:
        """Failed uploads waiting for their retry: ``(path, bytes, attempts, last_error)``."""
        return self.retry.pending()

    # -- opening -------------------------------------------------------------------------------
    async def open(self, ino: int, flags: int, caller: Caller | None = None) -> tuple[Handle, bool]:
        """Open inode ``ino``; returns the handle and whether the kernel may keep its cache."""
        node = self.table.get(ino)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.SYMLINK:
            raise FsError(errno.ELOOP)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        keep_cache = node.info is not None and node.file.cached_nuid == node.info.nuid
        if writable:
            self._spool(node)
        handle = self.handles.open(node, writable)
        handle.info = node.info
        try:
            if writable and flags & os.O_TRUNC:
                # Also of an empty file: open(2) marks mtime and ctime for update either way.
                await self.truncate(node, 0)
                node.attrs.mtime_ns = node.attrs.ctime_ns = time.time_ns()
        except BaseException:
            await self.release(handle.fh)
            raise
        if node.info is not None and node.spool is None:
            node.file.cached_nuid = node.info.nuid
        return handle, keep_cache

    def _spool(self, node: Node) -> Spool:
        spool = node.file.spool
        if spool is None:
            spool = node.file.spool = Spool(self.spool_dir, node.info)
        return spool

    def made_meanwhile(self, parent_ino: int, name: str, flags: int, caller: Caller) -> Node | None:
        """The file a create without O_EXCL is to open instead, if the name is one now: made
        meanwhile by another client, shown by the watch after the kernel's lookup found
        nothing. open(2) then opens it (checking what it would: EACCES), never EEXIST."""
        parent = self.table.find(parent_ino)
        existing = self.table.child(parent, name) if parent is not None else None
        if existing is None or existing.kind is not Kind.FILE or flags & os.O_EXCL:
            return None
        a = existing.attrs
        if not may_open(a.mode, a.uid, a.gid, caller, flags):
            raise FsError(errno.EACCES)
        return existing

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, caller: Caller
    ) -> tuple[Handle, Node]:
        """Create and open a new regular file (visible here at once, uploaded on close)."""
        parent = await self.directory(parent_ino)
        bucket = in_bucket(parent)
        full = object_name(parent, name, limit=self.options.max_name_bytes)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        attrs = new_attrs(stat.S_IFREG, mode, caller, parent)
        # Held until the node exists: the watch's report of the claim must find it.
        async with self.watcher.hold(bucket):
            info = await self._claim(bucket, full, attrs) if flags & os.O_EXCL else None
            node = self.table.new(Kind.FILE, parent, name, attrs, info=info)
        spool = self._spool(node)
        spool.dirty = True  # even an empty new file must reach the store
        handle = self.handles.open(node, True)
        self.table.ref(node)
        touch(parent)
        return handle, node

    async def _claim(self, bucket: str, full: str, attrs: Attrs) -> ObjectInfo:
        """O_EXCL across clients: store an empty object at create time, on condition that the
        name is free on the server (the close later replaces it with the data as usual)."""
        try:
            return await self.store.put(
                bucket,
                full,
                b"",
                meta=ObjectMeta(headers=attrs_to_headers(attrs)),
                chunk_size=self.options.chunk_size,
                if_revision=0,  # the name must be free: the server decides the race
            )
        except Exists:
            raise FsError(errno.EEXIST, f"{full}: created by another client") from None

    # -- data ----------------------------------------------------------------------------------
    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self.handles.get(fh)
        node = handle.node
        spool = node.spool
        if spool is not None and spool.filled:
            data = await spool.read(offset, size)
            if data is not None:
                return data
            # Closed while this waited behind the upload of the last close: read anew.
            return await self.read(fh, offset, size)
        if spool is not None:
            info = spool.base
        else:
            info = handle.info if handle.info is not None else node.info  # see handles.py
        if info is None:
            return b""
        try:
            return await self.cache.read(info, offset, size)
        except StoreError as e:
            if node.info is None or node.info.nuid != info.nuid or not node.attached:
                # Replaced or deleted elsewhere since this handle opened, and its chunks
                # are gone: never mix in the new version's bytes.
                raise FsError(errno.ESTALE, f"{node.path}: the version opened is gone") from e
            raise

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handles.get(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        check_size(offset + len(data))
        spool = self._spool(node)
        written = await spool.write(self.store, offset, data)
        node.attrs.mtime_ns = node.attrs.ctime_ns = time.time_ns()
        await self.early.wrote(node, spool, offset, spool.size, data)
        return written

    async def truncate(self, node: Node, size: int) -> None:
        self.early.discard(node)
        await self._spool(node).truncate(self.store, size)

    # -- closing -------------------------------------------------------------------------------
    async def flush(self, fh: int) -> None:
        """close(2) of one descriptor: upload if this handle is the inode's last writer."""
        handle = self.handles.get(fh)
        node = handle.node
        if handle.writable and node.file.writers == 1:
            await self.upload(node)

    async def fsync(self, fh: int, datasync: bool = False) -> None:
        await self.upload(self.handles.get(fh).node)

    async def release(self, fh: int) -> None:
        handle = self.handles.close(fh)
        node = handle.node
        try:
            if handle.writable and node.file.writers == 0:
                await self.upload(node)
        finally:
            self.settle(node)
            if node.file.handles == 0:
                await self._gone_at_last_close(node)
            self.table.maybe_drop(node)

    def settle(self, node: Node) -> None:
        """Drop ``node``'s spool once nothing needs it: a clean one is no longer needed; a
        dirty one (failed upload) is kept for the retry; an unlinked file's spool lives until
        its last reader is gone."""
        spool = node.spool
        if spool is not None and node.file.writers == 0:
            done = node.file.handles == 0 if not node.attached else not spool.dirty
            if done:
                self.early.discard(node)
                spool.close()
                node.file.spool = None
                self.watcher.local_done(node)  # a remote change held while writing
        self.table.maybe_drop(node)

    async def _gone_at_last_close(self, node: Node) -> None:
        """What an unlink or a rename over ``node`` left for its last close: the delete of
        its object, or the purge of the chunks its readers were still reading."""
        unlinked, node.file.delete_on_close = node.file.delete_on_close, None
        if unlinked is not None:
            await self._retract(unlinked)
        replaced, node.file.purge_on_close = node.file.purge_on_close, None
        if replaced is not None:
            try:
                await self.store.purge(replaced.bucket, replaced.nuid)
            except StoreError as e:  # a leak, never a loss: nothing refers to them
                log.warning("chunks of replaced %s kept: %s", replaced.name, e)

    async def _retract(self, info: ObjectInfo) -> None:
        """Delete ``info``'s object for a file unlinked here, unless it was replaced since.

        Used when the delete had to come after the unlink: the file was open (its readers
        read on until the last close), or an upload ran (its put came after the unlink's
        delete and brought the name back).
        """
        bucket = info.bucket
        async with self.watcher.hold(bucket):
            try:
                current = await self.store.info(bucket, info.name)
                if current.nuid == info.nuid:
                    tomb = await self.store.delete(bucket, info.name)
                    self.watcher.removed(bucket, info.name, tomb.revision)
            except NotFound:
                pass
            except StoreError as e:
                log.warning("%s was deleted while uploading; removing the upload: %s", info.name, e)

    async def upload(self, node: Node) -> None:
        """Store the spool's content as the node's object (if it changed); EIO on failure."""
        spool = self._unstored(node)
        if spool is None:
            return
        async with spool.lock:
            if not spool.dirty:
                return  # another task uploaded it while we waited
            old = node.info
            meta = old.meta if old is not None else ObjectMeta()
            meta.headers = attrs_to_headers(node.attrs, old.headers if old is not None else None)
            bucket = node.bucket  # a node never changes bucket (a rename across them is EXDEV)
            assert bucket is not None
            try:
                await spool.fill(self.store)
                spool.mark_complete(SpoolRecord.of(bucket, node.path, old, meta, spool.size))
                # An early upload counts itself in flight (streaming_upload).
                info = await self.early.finish(node, spool, meta)
                if info is None:
                    with self.stats.upload(self._display(node), spool.size) as progress:
                        info = await self.store.put(
                            bucket,
                            node.path,
                            Progress(spool.rewind(), progress).as_file(),
                            meta=meta,
                            chunk_size=self.options.chunk_size,
                        )
            except StoreError as e:
                spool.last_error = f"{type(e).__name__}: {e}"
                self._kept(node, spool)
                code = e.errno if isinstance(e, NoSpace | ReadOnly) else errno.EIO
                raise FsError(code, spool.last_error) from e
            except OSError as e:
                spool.last_error = f"spool file: {e}"
                self._kept(node, spool)
                raise FsError(errno.EIO, spool.last_error) from e
            if not node.attached:
                await self._retract(info)
                return
            spool.dirty = False
            spool.last_error = None
            self.retry.stored(node)
            spool.base = info
            node.info = info
            self.watcher.uploaded(node, info)
            # The kernel's pages were written through and match the object just stored.
            node.file.cached_nuid = info.nuid
            for h in self.handles.of(node):
                h.info = info  # readers here saw these bytes through the spool already
            if old is not None and old.nuid != info.nuid:
                self.cache.forget(old.bucket, old.nuid)

    def _kept(self, node: Node, spool: Spool) -> None:
        """An upload failed: make the spool survive a crash, and retry it in the background."""
        try:
            spool.make_durable()
        except OSError as e:
            log.error("%s: cannot sync the spool file %s: %s", node.path, spool.path, e)
        self.retry.failed(node, spool.last_error or "", str(spool.path))

    @staticmethod
    def _unstored(node: Node) -> Spool | None:
        """``node``'s spool if it holds changes to upload under a name."""
        spool = node.spool
        if spool is None or not spool.dirty or not node.attached or node.bucket is None:
            return None
        return spool

    # -- unmount -------------------------------------------------------------------------------
    async def shutdown(self) -> list[Failure]:
        """Upload what is still dirty, drop every spool, carry out pending deletes.

        Returns the uploads that failed (their spool files are kept).
        """
        failures: list[Failure] = []
        for node in [n for n in self.table.nodes() if n.spool is not None]:
            spool = node.spool
            assert spool is not None
            if spool.dirty and node.attached:
                if node.file.writers > 0:
                    # Unmounted under a writer (SIGTERM during a copy): what it wrote so far is
                    # stored, as a close would; the user must know the file may be partial.
                    log.warning(
                        "%s was still open for writing at unmount: storing the %d bytes "
                        "written so far (the writer may not have finished)",
                        self._display(node),
                        spool.size,
                    )
                try:
                    await self.upload(node)
                except (FsError, StoreError) as e:
                    failures.append(
                        (self._display(node), str(spool.path), spool.last_error or str(e))
                    )
                    spool.close(delete=False)
                    node.file.spool = None
                    continue
            self.early.discard(node)
            spool.close()
            node.file.spool = None
        for node in self.table.nodes():  # unlinked or replaced while open, open at unmount
            await self._gone_at_last_close(node)
        return failures

    def _display(self, node: Node) -> str:
        return display_path(node, multi_bucket=self.options.bucket is None)
