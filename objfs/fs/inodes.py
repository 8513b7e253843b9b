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
import errno
import itertools
import logging
import operator
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from objfs.fs.errors import FsError
from objfs.fs.posix_attrs import SPECIAL_TYPES, Attrs
from objfs.store.api import ObjectInfo

if TYPE_CHECKING:
    from objfs.fs.spool import Spool

log = logging.getLogger(__name__)

ROOT_INO = 1


class Kind(enum.Enum):
    DIR = stat.S_IFDIR
    FILE = stat.S_IFREG
    SYMLINK = stat.S_IFLNK
    FIFO = stat.S_IFIFO
    SOCKET = stat.S_IFSOCK
    CHAR = stat.S_IFCHR
    BLOCK = stat.S_IFBLK

    @property
    def special(self) -> bool:
        """A fifo, socket or device node: an empty object, opened by the kernel itself."""
        return self.value in SPECIAL_TYPES


@dataclass(eq=False, slots=True)
class FileState:
    """The per-inode state of open files and writes, owned by ``files.Files``.

    Written only by ``Files`` and ``HandleTable`` (and ``names.Names``: unlink hands a
    still-open file's object over to ``delete_on_close``, a rename over it to
    ``purge_on_close``); the watcher reads it to know that
    a node is being written here and appends to ``remote``. All of it changes only between
    awaits of one trio task (no preemption), except the spool's content, see ``spool.lock``.
    """

    spool: Spool | None = None
    """The local content while the inode is written (shared by all its handles)."""
    writers: int = 0
    """Open writable handles (``HandleTable``)."""
    handles: int = 0
    """Open handles of any mode (``HandleTable``); a node with handles stays in the table."""
    cached_nuid: str | None = None
    """The nuid whose pages the kernel may hold for this inode (keep_cache is safe if equal)."""
    delete_on_close: ObjectInfo | None = None
    """The object of a file unlinked while open here: deleted at its last close."""
    purge_on_close: ObjectInfo | None = None
    """The object of a file replaced by a rename while open here: its name is the renamed
    file's now, its chunks are purged at its last close (its readers read on until then)."""
    remote: list[ObjectInfo] = field(default_factory=list)
    """Versions the watch delivered while this mount was writing the node (``watcher``)."""


@dataclass(frozen=True, slots=True)
class Listing:
    """A directory's children sorted by readdir id, valid while ``key`` is unchanged."""

    key: tuple[int, int]
    ids: list[int]
    names: list[str]


class Node:
    """One file, directory or symlink (or bucket directory) as the kernel sees it.

    ``ino`` and ``bucket`` are the node's identity and never change. The rest is mutable
    state in groups, each with one owner. Concurrency: trio runs one task at a time and
    switches only at an await, so an owner that reads and writes a field with no await in
    between needs no lock; where an await sits in between, the owner says what protects it.

    - place in the tree (``name``, ``parent``, ``path``, ``attached``, ``children``,
      ``child_ids``, ``next_child_id``, ``subdirs``, ``listing``) and the kernel's lookup count
      (``lookups``): ``InodeTable`` alone changes them;
    - the object it shows (``kind``, ``attrs``, ``info``, ``symlink``): ``Tree`` and the
      watcher, and the operations of this mount, which change them under ``watcher.hold`` of
      the bucket so that the watch's echo of their own store call is not applied meanwhile;
    - open files and writes (``file``): ``files.Files`` (see ``FileState``).
    """

    __slots__ = (
        "_bucket",
        "_file",
        "_ino",
        "attached",
        "attrs",
        "child_ids",
        "children",
        "info",
        "kind",
        "listing",
        "lookups",
        "name",
        "next_child_id",
        "parent",
        "path",
        "subdirs",
        "symlink",
    )

    def __init__(
        self,
        ino: int,
        kind: Kind,
        name: str,
        parent: int,
        bucket: str | None,
        path: str,
        attrs: Attrs,
        info: ObjectInfo | None = None,
    ) -> None:
        self._ino = ino
        self.kind = kind
        self.name = name
        self.parent = parent
        self._bucket = bucket
        self.path = path
        """Object-name path inside the bucket ("" for a bucket's root directory)."""
        self.attrs = attrs
        self.info: ObjectInfo | None = info
        """The object (a directory's marker object) behind this node; None if there is none."""
        self.symlink: str | None = None
        dirs = kind is Kind.DIR
        self.children: dict[str, int] | None = {} if dirs else None
        self.child_ids: dict[str, int] | None = {} if dirs else None
        self.next_child_id = 1
        self.subdirs = 0
        """How many of ``children`` are directories (``st_nlink`` is 2 + this)."""
        self.listing: Listing | None = None
        """``InodeTable.entries``' sorted snapshot of the children (a cache)."""
        self.lookups = 0
        self.attached = True
        self._file: FileState | None = None

    @property
    def file(self) -> FileState:
        """The node's open-file and write state, made on first use: most nodes of a big
        bucket are never opened (100,000 of them were 0.1 s and some 10 MiB of a load)."""
        state = self._file
        if state is None:
            state = self._file = FileState()
        return state

    @property
    def ino(self) -> int:
        return self._ino

    @property
    def bucket(self) -> str | None:
        """The bucket this node lives in; None only for the all-buckets root."""
        return self._bucket

    def __repr__(self) -> str:
        return f"Node({self._ino}, {self.kind.name}, {self.bucket}:{self.path!r})"

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
    def spool(self) -> Spool | None:
        """``file.spool``: whether (and what) this node is being written here."""
        state = self._file
        return None if state is None else state.spool

    @property
    def size(self) -> int:
        spool = self.spool
        if spool is not None:
            return spool.size
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
        assert node.ino == ROOT_INO
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
        # Positional (once per object of a snapshot): ino, kind, name, parent, bucket, path,
        # attrs, info.
        node = Node(
            self._next,
            kind,
            name,
            parent._ino,
            parent._bucket if bucket is None else bucket,
            (f"{parent.path}/{name}" if parent.path else name) if path is None else path,
            attrs,
            info,
        )
        self._next += 1
        self.attach(parent, node)  # which enters it in the table
        return node

    def get(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        return node

    def find(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def child(self, parent: Node, name: str) -> Node | None:
        if parent.children is None:
            return None
        ino = parent.children.get(name)
        return None if ino is None else self._nodes.get(ino)

    def attach(self, parent: Node, node: Node) -> None:
        # Once per object of a snapshot: the properties read once, into locals.
        children, child_ids = parent.children, parent.child_ids
        assert children is not None and child_ids is not None
        ino, name = node._ino, node.name
        node.parent = parent._ino
        node.attached = True
        old = children.get(name)
        if old != ino:
            replaced = self._nodes.get(old) if old is not None else None
            parent.subdirs += int(node.kind is Kind.DIR) - int(
                replaced is not None and replaced.kind is Kind.DIR
            )
        children[name] = ino
        child_ids[name] = parent.next_child_id
        parent.next_child_id += 1
        self._nodes[ino] = node

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
            if node.is_dir:
                parent.subdirs -= 1

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
            node.subdirs = 0
        self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        unreferenced = node.lookups <= 0 and node.file.handles <= 0
        if not node.attached and unreferenced and node.ino != ROOT_INO:
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
        listing = directory.listing
        if listing is None or listing.key != key:
            ids = list(directory.child_ids.values())
            if all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
                # In id order already (names attached once each: a first load): no sort.
                listing = Listing(key, ids, list(directory.child_ids))
            else:
                items = sorted(directory.child_ids.items(), key=operator.itemgetter(1))
                listing = Listing(key, [cid for _, cid in items], [name for name, _ in items])
            directory.listing = listing
        cids = listing.ids
        for i in range(bisect.bisect_right(cids, start_id), len(cids)):
            node = self.child(directory, listing.names[i])
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
        # A node's bucket is part of its identity: a rename across buckets is EXDEV before
        # anything moves.
        assert new_parent.bucket == node.bucket, "a node never changes bucket"
        self._unhook(node)
        node.name = new_name
        self.attach(new_parent, node)
        self._repath(node, child_path(new_parent, new_name))

    def _repath(self, node: Node, path: str) -> None:
        node.path = path
        for ino in list((node.children or {}).values()):
            child = self._nodes.get(ino)
            if child is not None:
                self._repath(child, f"{path}/{child.name}")

    # -- invariants (run after every core test; cheap enough for a debug check) ----------------
    def check_invariants(self) -> None:
        """Raise ``AssertionError`` listing every broken invariant of the table.

        Every attached node is reachable from the root and every reachable node is attached;
        a parent's entry and its child's ``name``/``parent``/``path``/``bucket`` agree; readdir
        ids are unique and below ``next_child_id``; counts are never negative (and a writer
        is a handle); a detached node stays only while the kernel or a handle holds it.
        """
        problems = self.problems()
        if problems:
            raise AssertionError("inode table invariants broken:\n  " + "\n  ".join(problems))

    def problems(self) -> list[str]:
        """The broken invariants of ``check_invariants``, one line each (empty: all hold)."""
        out: list[str] = []
        root = self._nodes.get(ROOT_INO)
        if root is None:
            return ["the root is not in the table"]
        reachable: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node.ino in reachable:
                out.append(f"{node!r} is reachable twice (a cycle or a shared child)")
                continue
            reachable.add(node.ino)
            out.extend(self._entry_problems(node, stack))
        for node in self._nodes.values():
            if node.attached and node.ino not in reachable:
                out.append(f"{node!r} is attached but not reachable from the root")
            if not node.attached and node.ino in reachable:
                out.append(f"{node!r} is reachable but marked detached")
            if node.lookups < 0 or node.file.handles < 0 or node.file.writers < 0:
                counts = (node.lookups, node.file.handles, node.file.writers)
                out.append(f"{node!r}: a negative count (lookups, handles, writers) {counts}")
            if node.file.writers > node.file.handles:
                out.append(f"{node!r} has more writers than handles")
            if not node.attached and node.lookups <= 0 and node.file.handles <= 0:
                out.append(f"{node!r} is detached and unreferenced but still in the table")
        return out

    def _entry_problems(self, parent: Node, stack: list[Node]) -> list[str]:
        """What is wrong with ``parent``'s entries; pushes its children onto ``stack``."""
        if parent.children is None or parent.child_ids is None:
            return [] if not parent.is_dir else [f"{parent!r} is a directory without children"]
        out: list[str] = []
        if set(parent.children) != set(parent.child_ids):
            out.append(f"{parent!r}: children and readdir ids name different entries")
        dirs = sum(1 for i in parent.children.values() if (c := self._nodes.get(i)) and c.is_dir)
        if parent.subdirs != dirs:
            out.append(f"{parent!r} counts {parent.subdirs} subdirectories, has {dirs}")
        ids = list(parent.child_ids.values())
        if len(set(ids)) != len(ids) or any(i >= parent.next_child_id for i in ids):
            out.append(f"{parent!r}: readdir ids repeat or reach next_child_id")
        for name, ino in parent.children.items():
            child = self._nodes.get(ino)
            if child is None:
                out.append(f"{parent!r}: entry {name!r} names inode {ino}, not in the table")
                continue
            if child.name != name or child.parent != parent.ino:
                said = f"{child.name!r} of inode {child.parent}"
                out.append(f"{child!r} is {parent!r}'s entry {name!r} but says it is {said}")
            # A bucket directory at the all-buckets root starts its bucket's paths afresh.
            bucket = parent.bucket
            want = (name, "") if bucket is None else (bucket, child_path(parent, name))
            if (child.bucket, child.path) != want:
                out.append(f"{child!r}: bucket and path do not follow from {parent!r}")
            stack.append(child)
        return out
