"""Attributes: ``stat`` of a node, ``setattr`` (persisted as object headers), and ``statfs``.

Attributes live in the node (``Node.attrs``) and travel as ``Objfs-*`` headers of its object
(``posix_attrs``). A change is stored with one ``update_meta`` (no data copied), except for
a file being written here: its pending upload carries them. A size change is a truncate of
the file's spool (``files.Files``). atime is kept in memory only.

Entry and attribute timeouts are ``options.attr_timeout`` (``--attr-timeout``, default 1 s):
short, because another client's change must become visible soon even if an invalidation is
lost (the queue is bounded), and not zero, because every ``stat`` of a tool like ``ls -l`` or
``rsync`` would otherwise be a kernel round trip. The watcher's invalidations are what make
the view fresh in practice.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from objfs.bridge import TrioStore
from objfs.fs.attr_flush import DeferredAttrs
from objfs.fs.errors import FsError
from objfs.fs.files import Files
from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.limits import check_size
from objfs.fs.posix_attrs import attrs_to_headers
from objfs.fs.tree import NAME_MAX
from objfs.fs.values import SetAttr, Stat, StatFs
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import AccountUsage, BucketStatus, ObjectMeta
from objfs.store.errors import StoreError

log = logging.getLogger(__name__)

UNLIMITED_BYTES = 1 << 50
"""Free space statfs reports when neither the buckets nor the account have a limit and the
server is not objfs's own (1 PiB: "plenty"; a remote server's max_file_store is not told to
its clients)."""
UNLIMITED_FILES = 1 << 32


def nlink(node: Node) -> int:
    """``st_nlink``: a directory has ``.``, its entry and each subdirectory's ``..``; a file
    one name (objfs has no hard links); either none once removed (still open)."""
    if not node.attached:
        return 0
    return 2 + node.subdirs if node.is_dir else 1


class Attributes:
    """stat, setattr and statfs (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        watcher: Watcher,
        files: Files,
        symlink_size: Callable[[Node], int],
        note_status: Callable[[BucketStatus], None],
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.watcher = watcher
        self.files = files
        self.symlink_size = symlink_size
        """``Links.symlink_size``: a symlink's size is the length of what readlink returns."""
        self.note_status = note_status
        """``WriteGuard.note_status``: every bucket status read tells whether it is sealed."""
        self.deferred = DeferredAttrs(self.persist)
        """Attribute changes of stored files, stored shortly after and merged (attr_flush)."""

    def stat(self, node: Node) -> Stat:
        # Called once per entry of every readdir (readdirplus): positional, attributes read
        # once (a warm ``ls -l`` of a big directory is mostly this).
        size = self.symlink_size(node) if node.kind is Kind.SYMLINK else node.size
        a = node.attrs
        timeout = self.options.attr_timeout
        return Stat(
            node.ino, a.mode, nlink(node), a.uid, a.gid, a.rdev, size,
            self.options.chunk_size, (size + 511) // 512,
            a.atime_ns, a.mtime_ns, a.ctime_ns, timeout, timeout,
        )  # fmt: skip

    async def setattr(self, ino: int, changes: SetAttr) -> Node:
        node = self.table.get(ino)
        if changes.only_atime:
            if changes.atime_ns is not None:
                node.attrs.atime_ns = changes.atime_ns  # atime is not persisted
            # Any setattr is a change of the inode, even one of nothing (chown(f, -1, -1)):
            # ctime moves, in memory only (semantics.md). The kernel sends its own ctime only
            # with the writeback cache.
            node.attrs.ctime_ns = changes.ctime_ns or time.time_ns()
            return node
        now = time.time_ns()
        if changes.size is not None:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if node.kind is not Kind.FILE:
                raise FsError(errno.EINVAL)
            check_size(changes.size)
            await self.files.truncate(node, changes.size)
            node.attrs.mtime_ns = now
        if changes.mode is not None:
            node.attrs.mode = stat.S_IFMT(node.attrs.mode) | (changes.mode & 0o7777)
        if changes.uid is not None:
            node.attrs.uid = changes.uid
        if changes.gid is not None:
            node.attrs.gid = changes.gid
        if changes.atime_ns is not None:
            node.attrs.atime_ns = changes.atime_ns
        if changes.mtime_ns is not None:
            node.attrs.mtime_ns = changes.mtime_ns
        node.attrs.ctime_ns = now
        if node.spool is not None and node.spool.dirty:
            if node.file.writers == 0:
                await self.files.upload(node)  # a truncate of a file nobody has open
            return node  # otherwise the attributes travel with the pending upload
        if changes.size is None or node.spool is None:
            deferred = changes.size is None and node.kind is Kind.FILE and node.info is not None
            if not (deferred and self.deferred.mark(node)):  # see attr_flush
                await self.persist(node)
        return node

    async def persist(self, node: Node) -> None:
        """Store ``node``'s attributes as headers: update_meta, no data copied."""
        if node.bucket is None or node.is_bucket_root:
            return  # the root and bucket directories have no object to carry them
        if node.info is None and not node.is_dir:
            return  # a file not uploaded yet: its upload carries them
        async with self.watcher.hold(node.bucket):
            if node.info is None:
                headers = attrs_to_headers(node.attrs)
                info = await self.store.put(
                    node.bucket, node.object_name, b"", meta=ObjectMeta(headers=headers)
                )
            else:
                meta = node.info.meta
                meta.headers = attrs_to_headers(node.attrs, node.info.headers, symlink=node.symlink)
                info = await self.store.update_meta(node.bucket, node.info.name, meta)
            node.info = info

    async def statfs(self) -> StatFs:
        if self.options.bucket is not None:
            statuses = [await self.store.bucket_status(self.options.bucket)]
        else:
            statuses = await self.store.list_buckets()
        for status in statuses:
            self.note_status(status)
        used = sum(s.size for s in statuses)
        limits = [s.config.max_bytes for s in statuses]
        if limits and all(m > 0 for m in limits):
            total = sum(limits)
        else:  # the account's limit bounds the buckets (and every other stream it holds)
            try:
                account = await self.store.account_usage()
            except StoreError as e:  # e.g. a user allowed the streams but not $JS.API.INFO
                log.debug("account info: %s", e)
                account = AccountUsage(used, None)
            total = account_total(used, account, self.options.server_store)
        bsize = self.options.chunk_size
        free = max(0, total - used) // bsize
        files = sum(s.objects for s in statuses)
        return StatFs(
            bsize=bsize,
            frsize=bsize,
            blocks=total // bsize,
            bfree=free,
            bavail=free,
            files=files + UNLIMITED_FILES,
            ffree=UNLIMITED_FILES,
            favail=UNLIMITED_FILES,
            namemax=NAME_MAX,
        )


def account_total(used: int, account: AccountUsage, server_store: Path | None = None) -> int:
    """The size df shows for buckets without limits: what the account may still store (its
    limit less what its other streams use) on top of ``used``. With no account limit, the
    free space of the disk under ``server_store`` (the embedded server's JetStream store,
    whose disk is what runs out) or, for a remote server, ``UNLIMITED_BYTES`` more (its own
    limit is not told to its clients)."""
    if account.limit is not None:
        return used + max(0, account.limit - account.used)
    if server_store is not None:
        try:
            disk = os.statvfs(server_store)
        except OSError as e:  # removed under a running server: say "unknown", as remote
            log.debug("statvfs %s: %s", server_store, e)
        else:
            return used + disk.f_bavail * disk.f_frsize
    return used + UNLIMITED_BYTES
