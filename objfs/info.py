"""``objfs info FILE``: the object behind a file, read through the mount's extended attributes.

Everything comes from ``getxattr`` on FILE (``user.objfs.*`` facts, ``user.header.*``,
``user.description`` and metadata; see ``objfs.fs.xattrs``), so it works on any objfs mount,
whoever runs it and however it was started, with no socket and no store connection. The
facts are not listed by ``listxattr`` (so that ``cp -a`` does not copy them): they are asked
for by name. A file that is not on an objfs mount is a one-line error. A symlink shows its
target only: Linux lets no one read a symlink's ``user.*`` attributes, so its object facts
(an object link's ``link`` among them) do not reach this command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from objfs import mountinfo
from objfs.fs import xattrs
from objfs.fs.stats import size_text

OBJECT_FACTS = ("bucket", "name", "nuid", "size", "chunks", "chunk_size", "digest", "revision")
OBJECT_FACTS_MORE = ("mtime", "link")
BUCKET_FACTS = (
    "objects",
    "max_bytes",
    "replicas",
    "storage",
    "compression",
    "ttl",
    "sealed",
)
_NUMBERS = frozenset(
    {"size", "chunks", "chunk_size", "revision", "objects", "max_bytes", "replicas"}
)


class InfoError(Exception):
    """The one-line reason there is nothing to show."""


def _get(path: Path, name: str) -> str | None:
    try:
        value = os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
    return value.decode("utf-8", "replace")


def facts(path: Path) -> dict[str, Any]:
    """The object (or bucket directory) facts of ``path`` on an objfs mount."""
    where = mountinfo.containing(mountinfo.absolute(path))
    if not os.path.lexists(path):
        raise InfoError(f"{path}: no such file or directory")
    if where is None or where.fstype != mountinfo.OBJFS_TYPE:
        raise InfoError(f"{path} is not on an objfs mount")
    out: dict[str, Any] = {"path": str(path), "mount": where.path}
    if os.path.islink(path):
        # Linux gives nobody a symlink's user.* attributes (ENODATA without asking objfs):
        # its target is what can be shown.
        out["symlink"] = os.readlink(path)
    names = ("bucket", *OBJECT_FACTS[1:], *OBJECT_FACTS_MORE, *BUCKET_FACTS)
    for fact in dict.fromkeys(names):
        value = _get(path, xattrs.FACT_PREFIX + fact)
        if value is None:
            continue
        if fact in _NUMBERS:
            out[fact] = int(value)
        elif fact == "mtime":
            out["mtime_ns"] = int(value)
        elif fact in ("compression", "sealed"):
            out[fact] = value == "true"
        elif fact == "ttl":
            out[fact] = float(value)
        else:
            out[fact] = value
    description = _get(path, xattrs.DESCRIPTION)
    if description:
        out["description"] = description
    headers: dict[str, list[str]] = {}
    metadata: dict[str, str] = {}
    listed: list[str] = []
    with contextlib.suppress(OSError):
        listed = os.listxattr(path, follow_symlinks=False)
    for name in listed:
        value = _get(path, name)
        if value is None or name == xattrs.DESCRIPTION:
            continue
        if name.startswith(xattrs.HEADER_PREFIX):
            headers[name[len(xattrs.HEADER_PREFIX) :]] = xattrs.decode_header(value)
        elif name.startswith(xattrs.META_PREFIX):
            metadata[name[len(xattrs.META_PREFIX) :]] = value
        elif name.startswith(xattrs.USER):
            metadata[name[len(xattrs.USER) :]] = value
    out["headers"] = headers
    out["metadata"] = metadata
    return out


def format_info(info: dict[str, Any]) -> str:
    lines: list[str] = []

    def row(name: str, value: object) -> None:
        lines.append(f"{name:<12} {value}")

    row("file", info["path"])
    for key in ("symlink", "bucket", "name", "nuid", "digest", "revision", "link", "description"):
        if key in info:
            row(key, info[key])
    if "symlink" in info and "nuid" not in info:
        row("object", "not shown (Linux gives no extended attributes of a symlink)")
    elif "nuid" not in info and "objects" not in info:
        row("object", "none (a directory, or a file not uploaded yet)")
    if "size" in info:
        row("size", f"{info['size']} ({size_text(info['size'])})")
    for key in ("chunks", "chunk_size", *BUCKET_FACTS):
        if key in info:
            row(key.replace("_", " "), info[key])
    if "mtime_ns" in info:
        ns = info["mtime_ns"]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000))
        row("mtime", f"{stamp}.{ns % 1_000_000_000:09d} UTC")
    for name, values in info["headers"].items():
        row("header", f"{name}: {', '.join(values)}")
    for key, value in info["metadata"].items():
        row("metadata", f"{key}={value}")
    return "\n".join(lines)


def main(path: Path, *, as_json: bool) -> int:
    try:
        info = facts(path)
    except InfoError as e:
        print(f"objfs: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if as_json else format_info(info))
    return 0
