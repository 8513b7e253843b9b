"""The objfs filesystem: a core that tests drive directly, and the thin pyfuse3 adapter.

``Filesystem`` (``core``) owns the inode table, the tree built from object names, handles,
the write spool and the chunk cache; it imports neither pyfuse3 nor nats. ``FuseOperations``
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
