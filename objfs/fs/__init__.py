"""The objfs filesystem: a core that tests drive directly, and the thin pyfuse3 adapter.

``Filesystem`` (``core``) is the core's façade: it builds the inode table, the tree built
from object names, the handle table, the chunk cache and the components that own the
operations (``guard``, ``names``, ``links``, ``files``, ``attributes``, ``xattr_ops``,
``coherence``), and delegates to them; none of it imports pyfuse3 or nats. ``FuseOperations``
(``fuse_ops``) translates pyfuse3 calls into it and errors into errnos. ``FuseOperations`` is
imported lazily so that the core can be used where pyfuse3 is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from objfs.fs.core import Filesystem
from objfs.fs.errors import FsError

if TYPE_CHECKING:
    from objfs.fs.fuse_ops import FuseOperations

__all__ = ["Filesystem", "FsError", "FuseOperations"]


def __getattr__(name: str) -> Any:
    if name == "FuseOperations":
        from objfs.fs.fuse_ops import FuseOperations

        return FuseOperations
    raise AttributeError(name)
