"""Name rules shared by every store backend, so both refuse exactly the same names.

Bucket names follow ADR-20 (``[A-Za-z0-9_-]+``). Object names are any non-empty string, but the
meta subject carries the base64url-encoded name (4/3 larger) and must fit the server's
control line (``max_control_line``, 4 KiB by default): on a default nats-server 2.15 a
2,900-byte name worked, 3,100 bytes timed out and 5,000 bytes closed the connection.

objfs's own server (``objfs.server``, also the test suite's) raises ``max_control_line`` to
``CONTROL_LINE`` so names up to ``MAX_NAME_BYTES`` (PATH_MAX, 4,096 bytes: any path the kernel
can hand over) fit with room for the subject's prefix and the reply subject. On any other
server objfs keeps names within ``SAFE_NAME_BYTES`` (``safe_name_limit``), which fits the
default control line. Longer names get ENAMETOOLONG, before anything is sent.
"""

from __future__ import annotations

import base64
import re

from objfs.store.errors import InvalidName, NameTooLong

MAX_NAME_BYTES = 4096
"""Longest object name (UTF-8 bytes) objfs accepts, on a server that allows it."""
SAFE_NAME_BYTES = 2048
"""Longest object name on a server with the default ``max_control_line``."""
CONTROL_LINE = 16384
"""``max_control_line`` of objfs's own server: a ``MAX_NAME_BYTES`` name's meta subject
(about 5.5 KB) with its reply subject, twice over."""
EMBEDDED_SERVER_NAME = "objfs-embedded"
"""``server_name`` of objfs's own server, which is how a client recognises it."""


def safe_name_limit(server_name: str | None) -> int:
    """The longest object name the server named ``server_name`` (its INFO) takes."""
    return MAX_NAME_BYTES if server_name == EMBEDDED_SERVER_NAME else SAFE_NAME_BYTES

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
