"""Name rules shared by every store backend, so both refuse exactly the same names.

Bucket names follow ADR-20 (``[A-Za-z0-9_-]+``). Object names are any non-empty string, but the
meta subject carries the base64url-encoded name and must fit the server's control line: a
2,900-byte name worked on nats-server 2.15, 3,100 bytes timed out and 5,000 bytes closed the
connection. objfs caps names at ``MAX_NAME_BYTES`` UTF-8 bytes, well below that, and answers
ENAMETOOLONG above it.
"""

from __future__ import annotations

import base64
import re

from objfs.store.errors import InvalidName, NameTooLong

MAX_NAME_BYTES = 2048
"""Longest object name (UTF-8 bytes) objfs accepts; also the filesystem's PATH limit."""

MAX_BUCKET_NAME = 200
_BUCKET_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def check_bucket(name: str) -> str:
    """Return ``name`` if it is a valid bucket name, else raise InvalidName."""
    if not isinstance(name, str) or not _BUCKET_RE.match(name):
        raise InvalidName(f"invalid bucket name {name!r}: use letters, digits, '_' and '-'")
    if len(name) > MAX_BUCKET_NAME:
        raise NameTooLong(f"bucket name longer than {MAX_BUCKET_NAME} characters")
    return name


def check_object(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise InvalidName/NameTooLong."""
    if not isinstance(name, str) or name == "":
        raise InvalidName("object name must be a non-empty string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidName(f"object name is not valid UTF-8: {e}") from None
    if size > MAX_NAME_BYTES:
        raise NameTooLong(f"object name is {size} bytes; the limit is {MAX_NAME_BYTES}")
    return name


def encode_name(name: str) -> str:
    """ADR-20's encoding of an object name in its meta subject: padded base64url."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def decode_name(token: str) -> str:
    """Inverse of encode_name (tolerates missing padding, as some clients omit it)."""
    pad = "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(token + pad).decode("utf-8")
