"""Store errors: one small hierarchy, each class carrying the errno the filesystem answers.

The filesystem layer turns any StoreError into its ``errno`` without knowing which backend
raised it, so backends must raise these classes (never nats or asyncio exceptions).
"""

from __future__ import annotations

import errno


class StoreError(Exception):
    """Base of every error a store raises; ``errno`` is what a filesystem call returns."""

    errno: int = errno.EIO


class NotFound(StoreError):
    """The bucket or object does not exist (or is deleted)."""

    errno = errno.ENOENT


class Exists(StoreError):
    """The bucket or object already exists and the call refuses to replace it."""

    errno = errno.EEXIST


class NotEmpty(StoreError):
    """A bucket (or directory) still holds objects."""

    errno = errno.ENOTEMPTY


class ReadOnly(StoreError):
    """The bucket is sealed, or the store was opened read-only."""

    errno = errno.EROFS


class NoSpace(StoreError):
    """The bucket's limits (max_bytes, account storage) refuse more data."""

    errno = errno.ENOSPC


class InvalidName(StoreError):
    """A bucket or object name the wire format cannot carry."""

    errno = errno.EINVAL


class NameTooLong(InvalidName):
    """An object name longer than the store's limit."""

    errno = errno.ENAMETOOLONG


class InvalidLink(StoreError):
    """A link to a link, to a deleted object, or another link the rules forbid."""

    errno = errno.EINVAL


class Unavailable(StoreError):
    """The server cannot be reached or did not answer in time."""

    errno = errno.EIO


class Timeout(Unavailable):
    """A request to the server timed out."""

    errno = errno.ETIMEDOUT


class Corrupt(StoreError):
    """An object's chunks are missing, short, or do not match its digest."""

    errno = errno.EIO
