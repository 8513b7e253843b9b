"""Symlinks and NATS links: ``ln -s`` makes object or bucket links, links read as symlinks.

``symlink(parent, name, target)`` resolves ``target`` the way the kernel would resolve it
from ``parent`` (relative to the link's directory, or absolute under the mount point):

- an existing, uploaded object: an object link (``options.link = {bucket, name}``);
- an object link: a link to *its* target (the Go client's rule: no link to a link);
- a bucket's directory: a bucket link (``{bucket}``);
- anything else (a plain directory, a plain symlink, nothing at all, a path outside the
  mount, a file not uploaded yet): the plain symlink object of ``names``.

A link made here also carries objfs's attribute headers and ``Objfs-Symlink`` with the target
text exactly as given, so ``readlink`` returns what ``symlink`` got, as POSIX says, and
``tar``/``cp -a`` round-trip it. A link written by another client reads as the relative path
from the link to what it designates: the object's path, or the bucket's directory. A link to
another bucket goes up to the all-buckets root (``../other/...``); on a ``--bucket`` mount
that path resolves when each bucket is mounted on a directory named after it, side by side.
The target need not exist: a link whose target is gone reads as a dangling symlink.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import stat
from collections.abc import Awaitable, Callable

from objfs.bridge import TrioStore
from objfs.fs.coherence import Coherence
from objfs.fs.errors import FsError
from objfs.fs.inodes import ROOT_INO, InodeTable, Kind, Node
from objfs.fs.naming import check_symlink_target, in_bucket, new_attrs, object_name, touch
from objfs.fs.posix_attrs import attrs_to_headers, symlink_target
from objfs.fs.values import Caller
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import Link
from objfs.store.errors import InvalidLink, NotFound, StoreError

log = logging.getLogger(__name__)

PlainSymlink = Callable[[int, str, str, Caller], Awaitable[Node]]


class Links:
    """``ln -s`` and ``readlink`` (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        root: Node,
        watcher: Watcher,
        coherence: Coherence,
        plain_symlink: PlainSymlink,
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.root = root
        self.watcher = watcher
        self.coherence = coherence
        self.plain_symlink = plain_symlink
        """``Names.symlink``: the plain symlink object, where no NATS link can designate."""

    async def symlink(self, parent_ino: int, name: str, target: str, caller: Caller) -> Node:
        check_symlink_target(target)
        parent = await self.coherence.directory(parent_ino)
        link = await self._link_for(await self._resolve(parent, target))
        if link is None or self.table.child(parent, name) is not None:
            return await self.plain_symlink(parent_ino, name, target, caller)
        bucket = in_bucket(parent)
        full = object_name(parent, name, limit=self.options.max_name_bytes)
        attrs = new_attrs(stat.S_IFLNK, 0o777, Caller(caller.uid, caller.gid, 0), parent)
        async with self.watcher.hold(bucket):
            try:
                if link.name is None:
                    info = await self.store.add_bucket_link(bucket, full, link.bucket)
                else:
                    info = await self.store.add_link(bucket, full, link.bucket, link.name)
            except (InvalidLink, NotFound) as e:
                # The target changed under us (deleted, or became a link): keep the path.
                log.info("ln -s %s: no NATS link (%s); a plain symlink instead", target, e)
                return await self.plain_symlink(parent_ino, name, target, caller)
            meta = info.meta
            meta.headers = attrs_to_headers(attrs, info.headers, symlink=target)
            try:
                info = await self.store.update_meta(bucket, full, meta)
            except StoreError as e:  # the link stands; readlink shows its relative path
                log.warning("link %s made, but its attributes were not stored: %s", full, e)
            node = self.table.new(Kind.SYMLINK, parent, name, attrs, info=info)
        node.symlink = symlink_target(info)  # None if the headers were not stored
        self.table.ref(node)
        touch(parent)
        return node

    async def _resolve(self, parent: Node, target: str) -> Node | None:
        """The node ``target`` designates from directory ``parent`` (None: not in this mount).

        Intermediate symlinks are not followed (the link would then depend on them).
        """
        if target.startswith("/"):
            mp = str(self.options.mountpoint).rstrip("/")
            if target != mp and not target.startswith(mp + "/"):
                return None
            node, rest = self.root, target[len(mp) :]
        else:
            node, rest = parent, target
        for part in rest.split("/"):
            if part in ("", "."):
                continue
            if not node.is_dir:
                return None
            if part == "..":
                if node.ino == ROOT_INO:
                    return None  # above the mount
                node = self.table.get(node.parent)
                continue
            await self.coherence.ensure_loaded(node)
            child = self.table.child(node, part)
            if child is None and node is self.root and self.coherence.multi_bucket:
                await self.coherence.reload_buckets()  # a bucket made by another client
                child = self.table.child(node, part)
            if child is None:
                return None
            node = child
        return node

    async def _link_for(self, node: Node | None) -> Link | None:
        """The NATS link that designates ``node``, if one can."""
        if node is None or node.bucket is None:
            return None
        if node.is_bucket_root:
            return Link(node.bucket)
        if node.kind is Kind.SYMLINK and node.info is not None and node.info.link is not None:
            return node.info.link  # never a link to a link: to what that link designates
        if node.kind is Kind.FILE and node.info is not None:
            return Link(node.bucket, node.info.name)
        return None

    # -- reading -------------------------------------------------------------------------------
    def readlink(self, ino: int) -> str:
        node = self.table.get(ino)
        if node.kind is not Kind.SYMLINK:
            raise FsError(errno.EINVAL)
        if node.symlink is not None:
            return node.symlink
        if node.info is not None and node.info.link is not None:
            return self.link_text(node)
        raise FsError(errno.EINVAL)

    def link_text(self, node: Node) -> str:
        """Relative path from a link written elsewhere to what it designates."""
        assert node.info is not None and node.info.link is not None
        link = node.info.link
        here = posixpath.dirname(node.path)
        if link.bucket == node.bucket:
            return posixpath.relpath(link.name or ".", here or ".")
        # Another bucket: reachable from the all-buckets root, one level above this bucket.
        up = "../" * (len(here.split("/")) + 1 if here else 1)
        return up + link.bucket + ("" if link.name is None else "/" + link.name)

    def symlink_size(self, node: Node) -> int:
        """``st_size`` of a symlink: the length of what readlink returns."""
        if node.symlink is None and node.info is not None and node.info.link is not None:
            return len(self.link_text(node).encode("utf-8", "surrogateescape"))
        return node.size
