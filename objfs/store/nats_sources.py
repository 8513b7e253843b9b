"""Where the NATS read path gets its chunks: one small interface over the two connections.

A batch direct get can go out on the lean reader's connection (``nats_bulk.BulkConnection``)
or on nats-py's (``nats_js.BatchGetter``). ``nats_reads`` pipelines requests and checks what
comes back without knowing which: it asks a ``ChunkSource`` for chunks and later awaits the
``PendingChunks`` it got. Both connections end a batch, and map its statuses to errors, by the
rules of ``nats_protocol``, so the same server answer is the same error on either.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from nats.aio.msg import Msg

from objfs.store import errors
from objfs.store.nats_bulk import Batch, BulkConnection, HashChain
from objfs.store.nats_js import BatchGetter
from objfs.store.nats_protocol import SEQUENCE


class PendingChunks(Protocol):
    """One batch direct get in flight."""

    async def result(self) -> tuple[list[int], list[bytes]]:
        """(stream sequences, payloads) of the batch's chunks; objfs errors."""
        ...

    def cancel(self) -> None:
        """The reader gave up on the batch: whatever still arrives for it is dropped."""
        ...


class ChunkSource(Protocol):
    """Sends batch direct gets of a subject's messages from a stream sequence on."""

    async def request(
        self, stream: str, seq: int, count: int, subject: str, chain: HashChain | None, first: int
    ) -> PendingChunks:
        """Ask for ``count`` messages of ``subject`` from ``seq`` now; await them later.

        ``chain``/``first``: a source that can hash chunks as they arrive in order does so
        (``first`` is the read's index of the batch's first chunk); others leave it."""
        ...


class BulkSource:
    """Batch direct gets on the lean reader's connection."""

    def __init__(self, conn: BulkConnection) -> None:
        self.conn = conn

    async def request(
        self, stream: str, seq: int, count: int, subject: str, chain: HashChain | None, first: int
    ) -> PendingChunks:
        return _BulkPending(
            self.conn, self.conn.request(stream, seq, count, subject, chain=chain, first=first)
        )


class _BulkPending:
    __slots__ = ("_batch", "_conn")

    def __init__(self, conn: BulkConnection, batch: Batch) -> None:
        self._conn = conn
        self._batch = batch

    async def result(self) -> tuple[list[int], list[bytes]]:
        try:
            batch = await self._conn.wait(self._batch)
        except errors.Timeout:
            # A silent server: start the next read on a fresh connection (nats-py may have
            # moved to another server meanwhile).
            self._conn.close()
            raise
        return batch.seqs, batch.datas

    def cancel(self) -> None:
        self._conn.forget(self._batch)


class NatsPySource:
    """Batch direct gets on nats-py's connection (TLS, creds, or no lean connection)."""

    def __init__(self, getter: BatchGetter) -> None:
        self.getter = getter

    async def request(
        self, stream: str, seq: int, count: int, subject: str, chain: HashChain | None, first: int
    ) -> PendingChunks:
        return _NatsPyPending(await self.getter.request(stream, seq, count, subject))


class _NatsPyPending:
    __slots__ = ("_fut",)

    def __init__(self, fut: asyncio.Future[list[Msg]]) -> None:
        self._fut = fut

    async def result(self) -> tuple[list[int], list[bytes]]:
        msgs = await self._fut
        seqs = [int(m.headers.get(SEQUENCE, 0)) if m.headers else 0 for m in msgs]
        return seqs, [m.data for m in msgs]

    def cancel(self) -> None:
        self._fut.cancel()
