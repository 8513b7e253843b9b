"""Where ADR-20 keeps a bucket on the server: its stream and its meta and chunk subjects.

One place for the names, because the store, its read path and its watches all address the
same stream and subjects, and other clients (nats.go, nats.js) must find them there too.
"""

from __future__ import annotations

from objfs.store.names import encode_name


def bucket_stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{encode_name(name)}"


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"
