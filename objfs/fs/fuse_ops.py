"""The pyfuse3 adapter: arguments in, errno out. The only fs module that imports pyfuse3.

Every handler decodes names (bytes -> str, UTF-8 with surrogateescape so odd bytes reach the
core, which answers EINVAL), calls ``Filesystem`` and copies the result into pyfuse3's types.
``FsError`` and ``StoreError`` become ``FUSEError(errno)``; any other exception is logged and
answered with EIO, because pyfuse3 only catches ``FUSEError`` and anything else would end its
main loop (the mount).

Invalidation requests from the core are carried out by ``_invalidate``, which the core's
``run_background`` worker calls, never a request handler (``invalidate_entry`` deadlocks
there). ``invalidate_inode`` can block on page writeback, so it runs in a worker thread.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from objfs.fs.core import Filesystem
from objfs.fs.errors import FsError
from objfs.fs.inodes import Node
from objfs.fs.invalidation import InvalidateEntry, InvalidateInode, Request
from objfs.fs.values import Caller, SetAttr, Stat
from objfs.store.errors import Corrupt, StoreError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[Concatenate["FuseOperations", P], Coroutine[Any, Any, R]]

DOTS = 2
"""Readdir offsets taken by "." and ".." before the directory's own entries."""
READDIR_BATCH = 512
"""Entries offered per readdir call (one call fills at most a few dozen into the buffer)."""


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _caller(ctx: Any) -> Caller:
    return Caller(ctx.uid, ctx.gid, ctx.umask, ctx.pid)


def errnos(fn: Handler[P, R]) -> Handler[P, R]:
    """Answer FsError/StoreError with their errno and anything unexpected with EIO."""

    @functools.wraps(fn)
    async def wrapper(self: FuseOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        failed = True
        try:
            result = await fn(self, *args, **kwargs)
            failed = False
            return result
        except pyfuse3.FUSEError:
            raise
        except (FsError, StoreError) as e:
            # A damaged object (missing chunks, a wrong digest) is the operator's to know.
            report = log.error if isinstance(e, Corrupt) else log.debug
            report("%s%r: %s", fn.__name__, args[:3], e)
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[:3])
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:  # requests and latency per operation (objfs status, metrics)
            self.fs.stats.op(fn.__name__, time.perf_counter() - started, failed)

    return wrapper


def entry_attributes(st: Stat) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = st.ino
    attr.generation = 0
    attr.entry_timeout = st.entry_timeout
    attr.attr_timeout = st.attr_timeout
    attr.st_mode = st.mode
    attr.st_nlink = st.nlink
    attr.st_uid = st.uid
    attr.st_gid = st.gid
    attr.st_rdev = st.rdev
    attr.st_size = st.size
    attr.st_blksize = st.blksize
    attr.st_blocks = st.blocks
    attr.st_atime_ns = st.atime_ns
    attr.st_mtime_ns = st.mtime_ns
    attr.st_ctime_ns = st.ctime_ns
    return attr


class FuseOperations(pyfuse3.Operations):
    """pyfuse3's view of a ``Filesystem``."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs
        self.initialized = False
        """Set by the kernel's INIT (``init``). Before it the kernel caches nothing of this
        mount, and it answers notifications with ENOSYS, which pyfuse3's notify thread logs
        as a traceback (an all-buckets mount saw another client delete a bucket while it
        started): invalidations until then are dropped."""
        fs.invalidator = self._invalidate

    def init(self) -> None:
        # Called by libfuse's INIT handler, which replies to the kernel as soon as this
        # returns, before any trio task can queue a notification.
        self.initialized = True

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        return entry_attributes(self.fs.stat(node))

    async def _invalidate(self, request: Request) -> None:
        if not self.initialized:
            log.debug("invalidation %r before the kernel's INIT: nothing cached, dropped", request)
            return
        try:
            if isinstance(request, InvalidateEntry):
                pyfuse3.invalidate_entry_async(
                    request.parent,
                    request.name.encode("utf-8", "surrogateescape"),
                    request.deleted,
                    ignore_enoent=True,
                )
            elif isinstance(request, InvalidateInode):
                await trio.to_thread.run_sync(
                    pyfuse3.invalidate_inode, request.ino, request.attr_only
                )
        except (FileNotFoundError, OSError) as e:
            log.debug("invalidation %r: %s", request, e)  # the kernel forgot it already

    # -- names and attributes ------------------------------------------------------------------
    @errnos
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        node = await self.fs.lookup(parent_inode, _name(name), _caller(ctx))
        return self._attr(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.fs.forget(list(inode_list))
        except Exception:
            log.exception("forget failed")  # must never raise

    @errnos
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attr(self.fs.getattr(inode))

    @errnos
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        changes = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        node = await self.fs.setattr(inode, changes, fh, _caller(ctx))
        return self._attr(node)

    @errnos
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.fs.readlink(inode).encode("utf-8", "surrogateescape")

    @errnos
    async def opendir(self, inode: int, ctx: Any) -> int:
        await self.fs.directory(inode)
        return inode

    @errnos
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        # "." and ".." come first, at offsets 1 and 2 (the kernel does not make them up, and
        # takes no lookup reference on them); the core's entry ids follow, shifted by 2.
        dots = self.fs.dots(fh)
        if dots is not None:
            for offset, dot, node in ((1, b".", dots[0]), (2, b"..", dots[1])):
                if start_id < offset and not pyfuse3.readdir_reply(
                    token, dot, self._attr(node), offset
                ):
                    return
        # A batch: the kernel asks again from the last offset until a reply is empty.
        entries = await self.fs.readdir(fh, max(0, start_id - DOTS), limit=READDIR_BATCH)
        for cid, node in entries:
            name = node.name.encode("utf-8", "surrogateescape")
            if not pyfuse3.readdir_reply(token, name, self._attr(node), cid + DOTS):
                break
            self.fs.ref(node)  # readdirplus: each returned entry is one lookup

    @errnos
    async def releasedir(self, fh: int) -> None:
        return None

    @errnos
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @errnos
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = await self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = s.bsize, s.frsize
        out.f_blocks, out.f_bfree, out.f_bavail = s.blocks, s.bfree, s.bavail
        out.f_files, out.f_ffree, out.f_favail = s.files, s.ffree, s.favail
        out.f_namemax = s.namemax
        return out

    # -- names ---------------------------------------------------------------------------------
    @errnos
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self._attr(await self.fs.mkdir(parent_inode, _name(name), mode, _caller(ctx)))

    @errnos
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.rmdir(parent_inode, _name(name), _caller(ctx))

    @errnos
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.unlink(parent_inode, _name(name), _caller(ctx))

    @errnos
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.fs.rename(
            parent_inode_old,
            _name(name_old),
            parent_inode_new,
            _name(name_new),
            noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
            exchange=bool(flags & pyfuse3.RENAME_EXCHANGE),
            caller=_caller(ctx),
        )

    @errnos
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        node = await self.fs.symlink(parent_inode, _name(name), _name(target), _caller(ctx))
        return self._attr(node)

    @errnos
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self._attr(
            await self.fs.link(inode, new_parent_inode, _name(new_name), _caller(ctx))
        )

    @errnos
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        node = await self.fs.mknod(parent_inode, _name(name), mode, rdev, _caller(ctx))
        return self._attr(node)

    # -- files ---------------------------------------------------------------------------------
    @errnos
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        handle, keep_cache = await self.fs.open(inode, flags, _caller(ctx))
        return pyfuse3.FileInfo(fh=handle.fh, keep_cache=keep_cache)

    @errnos
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        handle, node = await self.fs.create(parent_inode, _name(name), mode, flags, _caller(ctx))
        return pyfuse3.FileInfo(fh=handle.fh), self._attr(node)

    @errnos
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.fs.read(fh, off, size)

    @errnos
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @errnos
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @errnos
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh, datasync)

    @errnos
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    # -- extended attributes (pyfuse3 answers size probes and ERANGE itself) -------------------
    @errnos
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return await self.fs.getxattr(inode, _name(name))

    @errnos
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [n.encode("utf-8", "surrogateescape") for n in await self.fs.listxattr(inode)]

    @errnos
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.fs.setxattr(inode, _name(name), value)

    @errnos
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.removexattr(inode, _name(name))
