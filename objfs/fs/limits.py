"""The largest file objfs stores, checked by every operation that can grow one."""

from __future__ import annotations

import errno

from objfs.fs.errors import FsError

MAX_FILE_SIZE = 1 << 40
"""Largest file objfs stores (1 TiB): truncate or write past it is EFBIG. The object store's
own bound is far above (2^32 chunks of the bucket's chunk size); this one keeps a single
object's upload, and its spool file on the local disk (ext4 allows 16 TiB), within reason."""


def check_size(size: int) -> None:
    """EFBIG if a file would grow past ``MAX_FILE_SIZE``."""
    if size > MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"files are at most {MAX_FILE_SIZE} bytes")
