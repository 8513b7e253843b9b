"""The filesystem core's own error: an errno to answer, raised by the core, mapped by the adapter.

The core never imports pyfuse3, so it cannot raise ``pyfuse3.FUSEError``; it raises ``FsError``
(and lets ``objfs.store.errors.StoreError`` through, which also carries an errno). The adapter
in ``fuse_ops`` turns both into ``FUSEError``.
"""

from __future__ import annotations

import os


class FsError(Exception):
    """A filesystem operation failed with ``errno``."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, message or os.strerror(errno))
        self.errno = errno
