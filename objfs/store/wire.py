"""ADR-20's ObjectInfo JSON, the digest string and the mtime format: a pure codec, no nats.

Kept apart from the NATS backend so the wire format can be read, tested and reused (by tools,
by interop tests) without a server. Field names and omissions follow nats.go's ``ObjectInfo``
JSON tags, so the Go client, the ``nats`` CLI and nats-py all read what objfs writes:

    {"name", "description"?, "headers"?, "metadata"?, "options"?: {"link"?: {"bucket",
     "name"?}, "max_chunk_size"?}, "bucket", "nuid", "size", "mtime", "chunks", "digest"?,
     "deleted"?}

``mtime`` is written as Go's RFC3339Nano in UTC. Readers must be lenient: nats.go stores the
zero time (``0001-01-01T00:00:00Z``) and uses the message timestamp instead, nats-py writes
``isoformat()`` with a ``+00:00`` offset (and an empty string on delete).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from typing import TYPE_CHECKING, Any

from objfs.store.api import Link, ObjectInfo
from objfs.store.errors import Corrupt
from objfs.store.names import decode_name

if TYPE_CHECKING:
    from objfs.store.nats_js import StoredMsg

DIGEST_PREFIX = "SHA-256="

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


def format_digest(sha256: bytes) -> str:
    """``SHA-256=`` + padded base64url, as nats.go writes it."""
    return DIGEST_PREFIX + base64.urlsafe_b64encode(sha256).decode("ascii")


def parse_digest(digest: str) -> bytes | None:
    """The raw hash of a digest string (either case of the prefix, padding optional)."""
    if not digest or not digest.upper().startswith(DIGEST_PREFIX):
        return None
    token = digest[len(DIGEST_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None


def format_mtime(ns: int) -> str:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped, ``Z`` suffix."""
    secs, frac = divmod(ns, 1_000_000_000)
    y, mo, d, h, mi, s = _gmtime(secs)
    base = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def _gmtime(secs: int) -> tuple[int, int, int, int, int, int]:
    import time

    t = time.gmtime(secs)
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec


def parse_mtime(text: str | None) -> int | None:
    """Nanoseconds since the epoch, or None for an empty, zero (year < 1970) or bad time."""
    if not text:
        return None
    m = _RFC3339.match(text)
    if m is None:
        return None
    # Once per object in a watch snapshot: calendar.timegm's arithmetic inlined (the same
    # result, a day past the month's end included), groups read once (a third of the cost).
    y, mo, d, h, mi, sec, frac, _, sign, oh, om = m.groups()
    year = int(y)
    if year < 1970:
        return None  # Go's zero time: the writer did not store a time
    days = datetime.date(year, int(mo), 1).toordinal() - _EPOCH_ORDINAL + int(d) - 1
    secs = ((days * 24 + int(h)) * 60 + int(mi)) * 60 + int(sec)
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs -= offset if sign == "+" else -offset
    return secs * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def encode_info(info: ObjectInfo) -> bytes:
    """The meta message payload for ``info`` (``revision`` is the stream's, not written)."""
    doc: dict[str, Any] = {"name": info.name}
    if info.description:
        doc["description"] = info.description
    if info.headers:
        doc["headers"] = {k: list(v) for k, v in info.headers.items()}
    if info.metadata:
        doc["metadata"] = dict(info.metadata)
    options: dict[str, Any] = {}
    if info.link is not None:
        link: dict[str, str] = {"bucket": info.link.bucket}
        if info.link.name is not None:
            link["name"] = info.link.name
        options["link"] = link
    if info.chunk_size:
        options["max_chunk_size"] = info.chunk_size
    if options:
        doc["options"] = options
    doc["bucket"] = info.bucket
    doc["nuid"] = info.nuid
    doc["size"] = info.size
    doc["mtime"] = format_mtime(info.mtime_ns)
    doc["chunks"] = info.chunks
    if info.digest:
        doc["digest"] = info.digest
    if info.deleted:
        doc["deleted"] = True
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_info(
    data: bytes, *, bucket: str, revision: int = 0, timestamp_ns: int = 0, subject: str = ""
) -> ObjectInfo:
    """Parse a meta payload; ``timestamp_ns`` (the message's time) stands in for a missing
    mtime. Corrupt if the payload is not an ADR-20 ObjectInfo; the error names the object
    its ``subject`` is for, so a log line says which object is damaged."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ValueError("no name")
        options = doc.get("options") or {}
        link_doc = options.get("link") if isinstance(options, dict) else None
        link = None
        if isinstance(link_doc, dict) and link_doc.get("bucket"):
            link = Link(str(link_doc["bucket"]), link_doc.get("name") or None)
        headers = {
            str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
            for k, v in (doc.get("headers") or {}).items()
        }
        chunk_size = options.get("max_chunk_size") if isinstance(options, dict) else None
        mtime = parse_mtime(doc.get("mtime"))
        return ObjectInfo(
            bucket=str(doc.get("bucket") or bucket),
            name=doc["name"],
            nuid=str(doc.get("nuid") or ""),
            size=int(doc.get("size") or 0),
            chunks=int(doc.get("chunks") or 0),
            digest=str(doc.get("digest") or ""),
            mtime_ns=mtime if mtime is not None else timestamp_ns,
            deleted=bool(doc.get("deleted", False)),
            description=str(doc.get("description") or ""),
            headers=headers,
            metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
            link=link,
            chunk_size=int(chunk_size) if chunk_size else None,
            revision=revision,
        )
    except (ValueError, TypeError, AttributeError) as e:
        where = _subject_name(subject)
        raise Corrupt(f"bad object meta{where} in bucket {bucket!r}: {e}") from None


def _subject_name(subject: str) -> str:
    """`` of object 'name'`` for a meta subject ``$O.<bucket>.M.<base64 name>`` ("" if not)."""
    token = subject.rsplit(".", 1)[-1] if ".M." in subject else ""
    try:
        return f" of object {decode_name(token)!r}" if token else ""
    except (ValueError, UnicodeDecodeError):
        return f" of subject {subject!r}"


def decode_stored(bucket: str, m: StoredMsg) -> ObjectInfo:
    """A meta message as a direct get or a consumer delivered it: revision and time from it."""
    return decode_info(
        m.data, bucket=bucket, revision=m.seq, timestamp_ns=m.timestamp_ns, subject=m.subject
    )
