"""Object names -> directory tree: which names become which nodes.

Directories come from '/' in object names; ``a/b/`` (a trailing slash) is the marker object of
an otherwise empty directory. Names that cannot be a path — an empty component, ``.``,
``..``, a leading '/', a component over 255 bytes — are skipped. When object ``a`` and object
``a/x`` both exist the directory wins and the file ``a`` is shadowed. Both cases are counted
and logged once per name: a bucket full of odd names must never break a listing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.posix_attrs import Attrs, Defaults, attrs_from_info, special_type, symlink_target
from objfs.store.api import ObjectInfo

log = logging.getLogger(__name__)

NAME_MAX = 255
"""Longest path component in bytes (statfs f_namemax; lookup/create answer ENAMETOOLONG)."""


def split_name(name: str) -> tuple[list[str], bool] | None:
    """Components of object ``name`` and whether it is a directory marker; None if unusable."""
    marker = name.endswith("/")
    body = name[:-1] if marker else name
    if not body or body.startswith("/") or "\0" in body:
        return None
    parts = body.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return None
        # At most 4 bytes a character: a short component needs no encoding to be measured.
        if len(part) > NAME_MAX // 4 and len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            return None
    return parts, marker


def kind_of(info: ObjectInfo) -> Kind:
    if info.name.endswith("/"):
        return Kind.DIR
    if not info.headers and info.link is None:
        return Kind.FILE  # no header that could make it a symlink or a special file
    if info.link is not None or symlink_target(info) is not None:
        return Kind.SYMLINK
    special = special_type(info)
    return Kind.FILE if special is None else Kind(special)


@dataclass
class Skipped:
    """Names the tree does not show, each logged once."""

    invalid: set[str] = field(default_factory=set)
    shadowed: set[str] = field(default_factory=set)

    def report_invalid(self, name: str) -> None:
        if name not in self.invalid:
            self.invalid.add(name)
            log.warning("object %r cannot be shown as a path; skipped", name)

    def report_shadowed(self, name: str) -> None:
        if name not in self.shadowed:
            self.shadowed.add(name)
            log.warning("object %r is shadowed by a directory of the same name; skipped", name)


class Tree:
    """Adds and removes objects of a bucket to/from the inode table."""

    def __init__(self, table: InodeTable, defaults: Defaults) -> None:
        self.table = table
        self.defaults = defaults
        self.skipped = Skipped()

    def attrs_for(self, info: ObjectInfo | None, kind: Kind) -> Attrs:
        return attrs_from_info(info, kind.value, self.defaults, time.time_ns())

    def new_dir(self, parent: Node, name: str, info: ObjectInfo | None = None) -> Node:
        return self.table.new(Kind.DIR, parent, name, self.attrs_for(info, Kind.DIR), info=info)

    def new_bucket_dir(self, root: Node, name: str) -> Node:
        """The directory of bucket ``name`` at the all-buckets ``root`` (loaded on first use)."""
        return self.table.new(
            Kind.DIR, root, name, self.attrs_for(None, Kind.DIR), bucket=name, path=""
        )

    def find(self, root: Node, name: str) -> Node | None:
        """The node object ``name`` is shown as, if it is shown (markers find their dir)."""
        split = split_name(name)
        if split is None:
            return None
        node: Node | None = root
        for part in split[0]:
            assert node is not None
            node = self.table.child(node, part)
            if node is None:
                return None
        return node

    def set_info(self, node: Node, info: ObjectInfo) -> None:
        """Point ``node`` at a (new version of its) object and refresh its attributes."""
        kind = Kind.DIR if node.is_dir else kind_of(info)
        node.kind = kind
        node.info = info
        node.attrs = self.attrs_for(info, kind)
        node.symlink = symlink_target(info) if kind is Kind.SYMLINK else None

    def add_all(self, root: Node, infos: Iterable[ObjectInfo]) -> None:
        """``add`` every object of ``infos`` (a bucket's first snapshot, into an empty
        ``root``: nothing to compare with, nothing to invalidate)."""
        add = self.add
        for info in infos:
            add(root, info)

    def add(self, root: Node, info: ObjectInfo) -> Node | None:
        """Show ``info`` below bucket root ``root``; returns its node (None if skipped)."""
        split = split_name(info.name)
        if split is None:
            self.skipped.report_invalid(info.name)
            return None
        parts, marker = split
        directory = root
        for part in parts[:-1]:
            child = self.table.child(directory, part)
            if child is None:
                child = self.new_dir(directory, part)
            elif not child.is_dir:
                child = self._replace_with_dir(directory, child)
            directory = child
        last = parts[-1]
        existing = self.table.child(directory, last)
        if marker:
            if existing is None:
                return self.new_dir(directory, last, info)
            if not existing.is_dir:
                existing = self._replace_with_dir(directory, existing)
            self.set_info(existing, info)
            return existing
        if existing is not None and existing.is_dir:
            self.skipped.report_shadowed(info.name)
            return None
        if existing is None:
            kind = kind_of(info)
            node = self.table.new(kind, directory, last, self.attrs_for(info, kind), info=info)
            node.symlink = symlink_target(info) if kind is Kind.SYMLINK else None
            return node
        self.set_info(existing, info)
        return existing

    def _replace_with_dir(self, parent: Node, file_node: Node) -> Node:
        if file_node.info is not None:
            self.skipped.report_shadowed(file_node.info.name)
        self.table.detach(file_node)
        return self.new_dir(parent, file_node.name)

    def prune(self, directory: Node) -> list[Node]:
        """Remove empty implicit directories from ``directory`` upwards; returns them."""
        removed: list[Node] = []
        node: Node | None = directory
        while (
            node is not None
            and node.is_dir
            and not node.is_bucket_root
            and node.info is None
            and not node.children
            and node.attached
        ):
            parent = self.table.find(node.parent)
            self.table.detach(node)
            removed.append(node)
            node = parent
        return removed
