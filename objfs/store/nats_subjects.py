"""Where ADR-20 keeps a bucket on the server: its stream and its meta and chunk subjects.

One place for the names, because the store, its read path and its watches all address the
same stream and subjects, and other clients (nats.go, nats.js) must find them there too.
"""

from __future__ import annotations

from objfs.store.names import encode_name

STREAM_PREFIX = "OBJ_"


def bucket_stream(bucket: str) -> str:
    return f"{STREAM_PREFIX}{bucket}"


def bucket_of_stream(stream: str) -> str:
    """The bucket a stream holds; empty if it is not an object store's stream."""
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else ""


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{encode_name(name)}"


def meta_filter(bucket: str) -> str:
    """Every meta subject of the bucket."""
    return f"$O.{bucket}.M.>"


def chunk_filter(bucket: str) -> str:
    """Every chunk subject of the bucket."""
    return f"$O.{bucket}.C.>"


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


def stream_of_subject(subject: str) -> str:
    """The stream of a bucket's chunk or meta subject (``$O.<bucket>.<C|M>...``)."""
    return bucket_stream(subject.split(".", 2)[1])
