"""The inode table: inode number -> node, and the parent/child links between nodes.

Owns inode numbering, lookup counts and stable readdir offsets; knows nothing about the
store. A node stays in the table while it is in the tree or while the kernel still holds a
lookup reference (or a handle is open), so an inode number never changes meaning while the
kernel may use it.

Readdir offsets: every child of a directory gets an id from a per-directory counter when it is
attached, and children are kept in attach order, so "entries after id N" stays well defined
while entries come and go (pyfuse3 requires a stable ``start_id``).
"""

from __future__ import annotations

import bisect
import enum
import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from objfs.fs.errors import FsError
from objfs.fs.posix_attrs import Attrs
from objfs.store.api import ObjectInfo

if TYPE_CHECKING:
    from objfs.fs.spool import Spool

log = logging.getLogger(__name__)

ROOT_INO = 1


class Kind(enum.Enum):
    DIR = stat.S_IFDIR
    FILE = stat.S_IFREG
    SYMLINK = stat.S_IFLNK


@dataclass(eq=False, slots=True)
class Node:
    """One file, directory or symlink (or bucket directory) as the kernel sees it."""

    ino: int
    kind: Kind
    name: str
    parent: int
    bucket: str | None
    """The bucket this node lives in; None only for the all-buckets root."""
    path: str
    """Object-name path inside the bucket ("" for a bucket's root directory)."""
    attrs: Attrs
    info: ObjectInfo | None = None
    """The object (a directory's marker object) behind this node; None if there is none."""
    symlink: str | None = None
    children: dict[str, int] | None = None
    child_ids: dict[str, int] | None = None
    next_child_id: int = 1
    lookups: int = 0
    attached: bool = True
    spool: Spool | None = None
    writers: int = 0
    handles: int = 0
    cached_nuid: str | None = None
    """The nuid whose pages the kernel may hold for this inode (keep_cache is safe if equal)."""
    loaded: bool = True
    """False for a bucket directory whose contents have not been loaded yet."""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def is_bucket_root(self) -> bool:
        return self.is_dir and self.bucket is not None and self.path == ""

    @property
    def object_name(self) -> str:
        """The object name this node is stored under (a directory's marker ends with '/')."""
        return self.path + "/" if self.is_dir else self.path

    @property
    def size(self) -> int:
        if self.spool is not None:
            return self.spool.size
        if self.kind is Kind.SYMLINK:
            return len((self.symlink or "").encode("utf-8", "surrogateescape"))
        if self.info is not None and not self.is_dir:
            return self.info.size
        return 0


def child_path(parent: Node, name: str) -> str:
    return f"{parent.path}/{name}" if parent.path else name


class InodeTable:
    """Every node the filesystem knows, by inode number."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._next = ROOT_INO + 1

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def next_ino(self) -> int:
        """The number the next new node will get (nodes at or above it are newer)."""
        return self._next

    def nodes(self) -> list[Node]:
        """Every node (a snapshot list, safe to iterate while the table changes)."""
        return list(self._nodes.values())

    def __contains__(self, ino: int) -> bool:
        return ino in self._nodes

    def add_root(self, node: Node) -> Node:
        node.ino = ROOT_INO
        self._nodes[ROOT_INO] = node
        return node

    def new(
        self,
        kind: Kind,
        parent: Node,
        name: str,
        attrs: Attrs,
        *,
        info: ObjectInfo | None = None,
        bucket: str | None = None,
        path: str | None = None,
    ) -> Node:
        """Create a node and attach it as ``parent``'s child ``name``."""
        node = Node(
            ino=self._next,
            kind=kind,
            name=name,
            parent=parent.ino,
            bucket=parent.bucket if bucket is None else bucket,
            path=child_path(parent, name) if path is None else path,
            attrs=attrs,
            info=info,
        )
        if kind is Kind.DIR:
            node.children, node.child_ids = {}, {}
        self._next += 1
        self._nodes[node.ino] = node
        self.attach(parent, node)
        return node

    def get(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise FsError(2, f"no inode {ino}")  # ENOENT
        return node

    def find(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def child(self, parent: Node, name: str) -> Node | None:
        if parent.children is None:
            return None
        ino = parent.children.get(name)
        return None if ino is None else self._nodes.get(ino)

    def attach(self, parent: Node, node: Node) -> None:
        assert parent.children is not None and parent.child_ids is not None
        node.parent = parent.ino
        node.attached = True
        parent.children[node.name] = node.ino
        parent.child_ids[node.name] = parent.next_child_id
        parent.next_child_id += 1
        self._nodes[node.ino] = node

    def detach(self, node: Node) -> None:
        """Take ``node`` (and anything below it) out of the tree; drop unreferenced ones."""
        self._unhook(node)
        self._orphan(node)

    def _unhook(self, node: Node) -> None:
        """Remove ``node``'s entry from its parent (if that entry is still this node)."""
        parent = self._nodes.get(node.parent)
        if parent is None or parent.children is None or parent.child_ids is None:
            return
        if parent.children.get(node.name) == node.ino:
            del parent.children[node.name]
            del parent.child_ids[node.name]

    def _orphan(self, node: Node) -> None:
        node.attached = False
        if node.children:
            for ino in list(node.children.values()):
                child = self._nodes.get(ino)
                if child is not None:
                    self._orphan(child)
            node.children.clear()
            assert node.child_ids is not None
            node.child_ids.clear()
        self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        if not node.attached and node.lookups <= 0 and node.handles <= 0 and node.ino != ROOT_INO:
            self._nodes.pop(node.ino, None)

    def ref(self, node: Node) -> None:
        """The kernel learnt about ``node`` (lookup, create, or a readdirplus entry)."""
        node.lookups += 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references; never raises (pyfuse3's rule)."""
        node = self._nodes.get(ino)
        if node is None:
            log.debug("forget of unknown inode %d", ino)
            return
        node.lookups = max(0, node.lookups - count)
        self.maybe_drop(node)

    def entries(self, directory: Node, start_id: int) -> Iterator[tuple[int, Node]]:
        """Children of ``directory`` whose readdir id is greater than ``start_id``, in order.

        A listing comes in many readdir calls (a few dozen entries each): each call bisects a
        sorted snapshot of the ids instead of scanning from the start (which made ``ls`` of
        100,000 entries quadratic). The snapshot is valid while ``next_child_id`` and the
        number of children are unchanged (an attach moves the first, a detach the second).
        """
        if directory.children is None or directory.child_ids is None:
            return
        key = (directory.next_child_id, len(directory.child_ids))
        cached = directory.extra.get("listing")
        if not (isinstance(cached, tuple) and cached[0] == key):
            items = sorted(directory.child_ids.items(), key=lambda kv: kv[1])
            cached = (key, [cid for _, cid in items], [name for name, _ in items])
            directory.extra["listing"] = cached
        _, cids, names = cached
        for i in range(bisect.bisect_right(cids, start_id), len(cids)):
            node = self.child(directory, names[i])
            if node is not None:
                yield cids[i], node

    def walk(self, node: Node) -> Iterator[Node]:
        """``node`` and every node below it."""
        yield node
        for ino in list((node.children or {}).values()):
            child = self._nodes.get(ino)
            if child is not None:
                yield from self.walk(child)

    def move(self, node: Node, new_parent: Node, new_name: str) -> None:
        """Re-attach ``node`` as ``new_parent``'s child ``new_name`` and fix paths below it."""
        self._unhook(node)
        node.name = new_name
        self.attach(new_parent, node)
        self._repath(node, child_path(new_parent, new_name), new_parent.bucket)

    def _repath(self, node: Node, path: str, bucket: str | None) -> None:
        node.path = path
        node.bucket = bucket
        for ino in list((node.children or {}).values()):
            child = self._nodes.get(ino)
            if child is not None:
                self._repath(child, f"{path}/{child.name}", bucket)
