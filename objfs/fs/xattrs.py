"""Extended attribute names and values: how object and bucket metadata read as ``user.*`` xattrs.

Pure naming and encoding (no store calls); ``objfs.fs.xattr_ops`` does the calls. The mapping,
which docs/semantics.md repeats for users:

- ``user.description``: the object's (or bucket's) description.
- ``user.header.<Name>``: object header ``<Name>``. A header holding exactly one value that is
  not itself a JSON array of strings reads as that value; any other header (several values,
  none, or one that looks like a JSON array) reads as a JSON array of strings, e.g.
  ``["a","b"]``. Setting parses the same way, so every header round-trips exactly.
- ``user.<key>``: metadata key ``<key>``. ``user.meta.<key>`` names any key explicitly; keys
  that would collide with the names above (``description``, ``header.*``, ``meta.*``,
  ``objfs``, ``objfs.*``) are listed that way.
- ``user.objfs.<fact>``: read-only facts (digest, nuid, chunk count, ...; bucket status and
  configuration on a bucket's directory). They are not listed, so that ``cp -a``, ``rsync -X``
  and ``tar --xattrs`` never copy them into places where setting them fails; setting one
  answers EPERM, except ``user.objfs.sealed`` on a bucket directory, which seals the bucket.
- objfs's own POSIX headers (``Objfs-Mode``, ...; see ``posix_attrs``) are neither listed nor
  readable as ``user.header.*``, and setting or removing them answers EPERM.

Errnos follow ext4: ENODATA for a missing name, EOPNOTSUPP for the ``trusted.``,
``security.``, ``system.`` (and any unknown) namespaces, E2BIG for a value over
``VALUE_MAX``, ENOSPC when an object's metadata would exceed ``META_MAX`` in all, EINVAL for
a value that is not UTF-8 (the store keeps strings). ERANGE for a short buffer is pyfuse3's.
"""

from __future__ import annotations

import dataclasses
import errno
import json
from dataclasses import dataclass
from typing import Literal

from objfs.fs.errors import FsError
from objfs.fs.posix_attrs import OUR_HEADERS
from objfs.store.api import BucketConfig, BucketStatus, ObjectInfo, ObjectMeta

USER = "user."
DESCRIPTION = "user.description"
HEADER_PREFIX = "user.header."
META_PREFIX = "user.meta."
FACT_PREFIX = "user.objfs."
SEAL = "user.objfs.sealed"

VALUE_MAX = 64 * 1024
"""Largest value (bytes): Linux's own XATTR_SIZE_MAX, so E2BIG matches what the kernel says."""
META_MAX = 256 * 1024
"""Largest description + headers + metadata of one object or bucket, in bytes (ENOSPC above):
an object's meta travels as one NATS message, which must stay well under max_payload (1 MiB)."""

Kind = Literal["description", "header", "meta", "fact"]

_OURS = frozenset(h.lower() for h in OUR_HEADERS)
_RESERVED = ("description", "header.", "meta.", "objfs.")


@dataclass(frozen=True, slots=True)
class XName:
    """A parsed xattr name: which part of the metadata it addresses."""

    kind: Kind
    key: str = ""


def parse(name: str) -> XName:
    """Parse an xattr name; EOPNOTSUPP outside ``user.``, EINVAL for an empty key."""
    if not name.startswith(USER):
        raise FsError(errno.EOPNOTSUPP, f"xattr namespace of {name!r} is not supported")
    if any("\udc80" <= c <= "\udcff" for c in name):  # undecodable bytes (surrogateescape)
        raise FsError(errno.EINVAL, "xattr name is not UTF-8")
    if name == DESCRIPTION:
        return XName("description")
    prefixes: tuple[tuple[str, Kind], ...] = (
        (HEADER_PREFIX, "header"),
        (META_PREFIX, "meta"),
        (FACT_PREFIX, "fact"),
    )
    for prefix, kind in prefixes:
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not key:
                raise FsError(errno.EINVAL, f"empty key in xattr name {name!r}")
            return XName(kind, key)
    key = name[len(USER) :]
    if not key:
        raise FsError(errno.EINVAL, "empty xattr name")
    if key == "objfs":
        return XName("fact", "")
    return XName("meta", key)


def is_our_header(name: str) -> bool:
    return name.lower() in _OURS


def meta_name(key: str) -> str:
    """The name metadata key ``key`` is listed under."""
    if key == "objfs" or key.startswith(_RESERVED):
        return META_PREFIX + key
    return USER + key


def _listable(name: str) -> bool:
    # listxattr separates names with NUL; Linux caps a name at 255 bytes.
    return "\0" not in name and len(name.encode("utf-8", "surrogatepass")) <= 255


def names(meta: ObjectMeta, *, headers: bool = True) -> list[str]:
    """Every listed xattr name of ``meta`` (objfs's own headers left out)."""
    out: list[str] = []
    if meta.description:
        out.append(DESCRIPTION)
    if headers:
        out.extend(HEADER_PREFIX + h for h in meta.headers if not is_our_header(h))
    out.extend(meta_name(k) for k in meta.metadata)
    return [n for n in out if _listable(n)]


# -- header values ----------------------------------------------------------------------------
def _json_strings(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def encode_header(values: list[str]) -> bytes:
    if len(values) == 1 and _json_strings(values[0]) is None:
        return values[0].encode("utf-8")
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_header(text: str) -> list[str]:
    values = _json_strings(text)
    return [text] if values is None else values


def decode_value(value: bytes) -> str:
    if len(value) > VALUE_MAX:
        raise FsError(errno.E2BIG, f"xattr values are limited to {VALUE_MAX} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "xattr value is not UTF-8 (the store keeps text)") from None


# -- reading, changing ------------------------------------------------------------------------
def _missing() -> FsError:
    return FsError(errno.ENODATA)


def _check_header_name(key: str) -> None:
    if is_our_header(key):
        raise FsError(errno.EPERM, f"{key} is objfs's own header: use chmod/chown/touch")
    if any(c in key for c in ": \t\r\n") or any(ord(c) < 32 for c in key):
        raise FsError(errno.EINVAL, f"not a header name: {key!r}")


def get(meta: ObjectMeta, x: XName) -> bytes:
    """The value of a description/header/meta name; ENODATA if absent (facts: see below)."""
    if x.kind == "description":
        if not meta.description:
            raise _missing()
        return meta.description.encode("utf-8")
    if x.kind == "header":
        if is_our_header(x.key) or x.key not in meta.headers:
            raise _missing()
        return encode_header(meta.headers[x.key])
    if x.kind == "meta":
        if x.key not in meta.metadata:
            raise _missing()
        return meta.metadata[x.key].encode("utf-8")
    raise _missing()


def size(meta: ObjectMeta) -> int:
    """Bytes of user-controlled metadata (what ``META_MAX`` limits)."""
    total = len(meta.description.encode("utf-8"))
    for k, vs in meta.headers.items():
        total += len(k.encode("utf-8")) + sum(len(v.encode("utf-8")) for v in vs)
    for k, v in meta.metadata.items():
        total += len(k.encode("utf-8")) + len(v.encode("utf-8"))
    return total


def with_value(meta: ObjectMeta, x: XName, value: bytes) -> ObjectMeta:
    """A copy of ``meta`` with ``x`` set to ``value`` (limits and header rules checked)."""
    text = decode_value(value)
    out = ObjectMeta(
        meta.description, {k: list(v) for k, v in meta.headers.items()}, dict(meta.metadata)
    )
    if x.kind == "description":
        out.description = text
    elif x.kind == "header":
        _check_header_name(x.key)
        out.headers[x.key] = decode_header(text)
    elif x.kind == "meta":
        out.metadata[x.key] = text
    else:
        raise FsError(errno.EPERM, "user.objfs.* attributes are read-only facts")
    if size(out) > META_MAX and size(out) > size(meta):
        raise FsError(errno.ENOSPC, f"object metadata is limited to {META_MAX} bytes in all")
    return out


def without(meta: ObjectMeta, x: XName) -> ObjectMeta:
    """A copy of ``meta`` with ``x`` removed; ENODATA if it is not there."""
    if x.kind == "fact":
        raise FsError(errno.EPERM, "user.objfs.* attributes are read-only facts")
    if x.kind == "header" and is_our_header(x.key):
        raise FsError(errno.EPERM, f"{x.key} is objfs's own header")
    get(meta, x)  # ENODATA if missing
    out = ObjectMeta(
        meta.description, {k: list(v) for k, v in meta.headers.items()}, dict(meta.metadata)
    )
    if x.kind == "description":
        out.description = ""
    elif x.kind == "header":
        del out.headers[x.key]
    else:
        del out.metadata[x.key]
    return out


# -- read-only facts --------------------------------------------------------------------------
def object_facts(bucket: str, info: ObjectInfo | None) -> dict[str, str]:
    """``user.objfs.<fact>`` values of an object (just the bucket before its first upload)."""
    facts = {"bucket": bucket}
    if info is None:
        return facts
    facts.update(
        name=info.name,
        nuid=info.nuid,
        size=str(info.size),
        chunks=str(info.chunks),
        revision=str(info.revision),
        mtime=str(info.mtime_ns),
    )
    if info.digest:
        facts["digest"] = info.digest
    if info.chunk_size is not None:
        facts["chunk_size"] = str(info.chunk_size)
    if info.link is not None:
        link = info.link
        facts["link"] = link.bucket if link.name is None else f"{link.bucket}/{link.name}"
    return facts


def _flag(value: bool) -> str:
    return "true" if value else "false"


def bucket_facts(status: BucketStatus) -> dict[str, str]:
    """``user.objfs.<fact>`` values of a bucket directory: status and configuration."""
    c = status.config
    return {
        "bucket": c.name,
        "size": str(status.size),
        "objects": str(status.objects),
        "chunk_size": str(c.chunk_size),
        "max_bytes": str(c.max_bytes),
        "replicas": str(c.replicas),
        "storage": c.storage,
        "compression": _flag(c.compression),
        "ttl": f"{c.ttl:g}",
        "sealed": _flag(status.sealed),
    }


def fact(facts: dict[str, str], x: XName) -> bytes:
    value = facts.get(x.key)
    if value is None:
        raise _missing()
    return value.encode("utf-8")


def seal_request(value: bytes) -> bool:
    """The value written to ``user.objfs.sealed``: True to seal, False to leave unsealed."""
    text = value.decode("utf-8", "replace").strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise FsError(errno.EINVAL, "user.objfs.sealed takes 1/true (seal) or 0/false")


def bucket_meta(status: BucketStatus) -> ObjectMeta:
    """A bucket's settable part (description, metadata) in the shape objects use."""
    return ObjectMeta(status.config.description, {}, dict(status.config.metadata))


def bucket_config(status: BucketStatus, meta: ObjectMeta) -> BucketConfig:
    """``status``'s configuration with description and metadata taken from ``meta``."""
    return dataclasses.replace(
        status.config, description=meta.description, metadata=dict(meta.metadata)
    )
