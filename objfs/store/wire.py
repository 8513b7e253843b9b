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
import json.scanner
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from objfs.store.api import Link, ObjectInfo
from objfs.store.errors import Corrupt
from objfs.store.names import decode_name

if TYPE_CHECKING:
    from objfs.store.nats_js import StoredMsg

DIGEST_PREFIX = "SHA-256="

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_EPOCH = datetime.datetime(1970, 1, 1)
_FRACTION_SCALE: tuple[int, ...] = tuple(10 ** (9 - digits) for digits in range(10))
"""Nanoseconds per unit of a fraction of seconds with that many digits."""
_SECONDS: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:SS`` -> seconds since the epoch (-1: not a valid date), for the fast
path of ``parse_mtime``: objects written in the same second (a bulk upload) share it."""
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed: make_scanner takes a context
)
"""The JSON decoder's scanner (C), called without ``json.loads``'s wrapping (see _load)."""
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
    # Once per object in a watch snapshot. The form objfs and nats.go write (UTC, ``Z``, a
    # fraction of up to 9 digits) through the C ISO parser: 2.4x faster than the general
    # path below, which takes the rest (and an invalid day, which it accepts).
    if (
        isinstance(text, str)
        and len(text) > 20
        and text[19] == "."
        and text[-1] == "Z"
        and text[10] == "T"
    ):
        frac = text[20:-1]
        if len(frac) <= 9 and frac.isdigit() and text[:4] >= "1970":
            whole = text[:19]
            secs = _SECONDS.get(whole)
            if secs is None:
                try:
                    d = datetime.datetime.fromisoformat(whole) - _EPOCH
                except ValueError:
                    secs = -1
                else:
                    secs = d.days * 86400 + d.seconds
                if len(_SECONDS) >= 4096:
                    _SECONDS.clear()
                _SECONDS[whole] = secs
            if secs >= 0:
                return secs * 1_000_000_000 + int(frac) * _FRACTION_SCALE[len(frac)]
    m = _RFC3339.match(text)
    if m is None:
        return None
    # calendar.timegm's arithmetic inlined (the same result, a day past the month's end
    # included), groups read once (a third of the cost).
    y, mo, d_, h, mi, sec, frac_, _, sign, oh, om = m.groups()
    year = int(y)
    if year < 1970:
        return None  # Go's zero time: the writer did not store a time
    days = datetime.date(year, int(mo), 1).toordinal() - _EPOCH_ORDINAL + int(d_) - 1
    secs = ((days * 24 + int(h)) * 60 + int(mi)) * 60 + int(sec)
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs -= offset if sign == "+" else -offset
    return secs * 1_000_000_000 + (int(frac_.ljust(9, "0")) if frac_ else 0)


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


def _load(data: bytes) -> Any:
    """``json.loads(data)``, a third of its cost for the payloads writers produce (UTF-8, no
    surrounding whitespace): the scanner called directly. Anything else, and every error,
    goes through ``json.loads`` itself, so what is accepted and what fails is unchanged."""
    try:
        text = data.decode("utf-8")
        doc, end = _scan(text, 0)
        if end == len(text):
            return doc
    except (UnicodeDecodeError, StopIteration, ValueError):
        pass
    return json.loads(data)


def decode_info(
    data: bytes, *, bucket: str, revision: int = 0, timestamp_ns: int = 0, subject: str = ""
) -> ObjectInfo:
    """Parse a meta payload; ``timestamp_ns`` (the message's time) stands in for a missing
    mtime. Corrupt if the payload is not an ADR-20 ObjectInfo; the error names the object
    its ``subject`` is for, so a log line says which object is damaged.

    Once per object in a watch snapshot (100,000 at a mount of a big bucket): the optional
    parts are only looked into when present, and ObjectInfo is built positionally (a third
    of the keyword call's cost)."""
    try:
        doc = _load(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ValueError("no name")
        get = doc.get
        link = None
        chunk_size = None
        options = get("options")
        if options and isinstance(options, dict):
            link_doc = options.get("link")
            if isinstance(link_doc, dict) and link_doc.get("bucket"):
                link = Link(str(link_doc["bucket"]), link_doc.get("name") or None)
            chunk_size = options.get("max_chunk_size")
        headers_doc = get("headers")
        headers = (
            {
                str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
                for k, v in headers_doc.items()
            }
            if headers_doc
            else {}
        )
        metadata_doc = get("metadata")
        metadata = {str(k): str(v) for k, v in metadata_doc.items()} if metadata_doc else {}
        mtime = parse_mtime(get("mtime"))
        # The fields in ObjectInfo's order: bucket, name, nuid, size, chunks, digest,
        # mtime_ns, deleted, description, headers, metadata, link, chunk_size, revision.
        return ObjectInfo(
            str(get("bucket") or bucket),
            doc["name"],
            str(get("nuid") or ""),
            int(get("size") or 0),
            int(get("chunks") or 0),
            str(get("digest") or ""),
            mtime if mtime is not None else timestamp_ns,
            bool(get("deleted", False)),
            str(get("description") or ""),
            headers,
            metadata,
            link,
            int(chunk_size) if chunk_size else None,
            revision,
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
