"""A lean NATS protocol reader for bulk chunk transfers (batch direct gets, push consumers).

Why: reading an object through nats-py costs more Python CPU than the server spends sending it.
nats-py reads the socket into an asyncio ``StreamReader`` (copy), its parser appends to a
bytearray (copy) and deletes consumed bytes from its front (a memmove per message), builds a
``Msg`` with a header dict for every chunk, and hands each to a subscription task through a
queue. On a two-core machine shared with nats-server that receive path, not the server, set
the read rate (see BENCHMARKS.md). This module is part of the NATS backend and speaks the
client protocol itself, for one job only:

- its own TCP connection, read with ``asyncio.BufferedProtocol``: the kernel copies straight
  into one preallocated buffer, frames are parsed in place in the protocol callback (no task,
  no queue), and each payload is copied out once, as the ``bytes`` the store hands on;
- ``HMSG``/``MSG`` frames: ``find(b"\\r\\n")`` on the control line, only ``Nats-Sequence`` or
  the status code read from the header block (no header dict), ``PING`` answered with ``PONG``;
- batch direct get requests (``{"seq", "batch", "next_by_subj"}`` to
  ``$JS.API.DIRECT.GET.<stream>``, each answered by its messages and a ``204 EOB`` status) on
  one wildcard reply subscription, so a reader can keep several batches in flight;
- deliveries of an ephemeral push consumer the store creates (``PushRead``): the stream
  sequence read from the ``$JS.ACK`` reply subject, flow-control requests answered at once
  unless the reader is behind (then the answer is the credit that lets the server go on).
  It cost nats-server less CPU than batch direct gets, so a large ``read_stream`` uses it;
- chunks hashed as they are copied out, while still in the CPU cache (``HashChain``).

It connects with the options the main connection uses (``nats_auth``): user/password, token,
an nkey seed or credentials file (the server's nonce signed), TLS with a custom CA and client
certificate, TLS first, the inbox and JetStream API prefixes. The receive buffer stays the
same under TLS (asyncio's SSL transport feeds a buffered protocol). Credentials the server
refuses raise ``Unsupported`` and the store keeps using nats-py for reads. Errors are objfs
errors: a lost connection is Unavailable, a batch that does not end within the timeout is
Timeout, a status is the error ``nats_protocol`` says it is (the same as on nats-py's path).
Nothing here verifies chunks against a layout: the caller does (sequence and size of every
chunk), so a missing chunk is Corrupt, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
from typing import Any, cast

from nats.nuid import NUID

from objfs.options import ConnectOptions
from objfs.store import errors
from objfs.store.deadline import within
from objfs.store.nats_auth import CredentialsError, connect_fields, signs, tls_context
from objfs.store.nats_protocol import (
    API,
    FLOW_CONTROL,
    STALLED,
    ack_tokens,
    batch_end_error,
    push_status_error,
)

log = logging.getLogger(__name__)

BUFFER = 4 << 20
"""Initial receive buffer: several chunks per socket read; it grows for bigger frames."""

MIN_READ = 512 << 10
"""Compact (or grow) the buffer when less than this is free after the unparsed bytes."""

SEQ = b"Nats-Sequence: "
STALLED_HEADER = STALLED.encode() + b": "
CRLF = b"\r\n"

MALLOC_MMAP_THRESHOLD = 4 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20
"""glibc malloc settings applied once, when the first bulk connection opens (see tune_malloc)."""

_malloc_tuned = False


def tune_malloc() -> bool:
    """Keep chunk-sized allocations on the malloc heap instead of fresh pages (glibc only).

    Every chunk becomes a ``bytes`` of 128 KiB and a little more: at or above glibc's default
    ``M_MMAP_THRESHOLD`` (128 KiB). glibc then either maps each one fresh or, once its dynamic
    threshold has risen, trims the heap top back to the OS after every freed batch; either way
    every chunk lands on new pages, and the page faults (kernel time, in the reading thread,
    holding the GIL) measured 0.07 s of CPU per 256 MiB: a third of the lean reader's cost.
    Fixed thresholds (mmap above 4 MiB, trim above 64 MiB) let freed chunks be reused. This is
    process-wide; objfs owns its process (the mount daemon, the CLI), and the price is up to
    64 MiB of freed heap kept instead of returned to the OS. Returns whether it was applied.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    ok = bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD))
    ok = bool(mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)) and ok
    log.debug("malloc thresholds set: %s", ok)
    return ok


class Unsupported(Exception):
    """The lean connection cannot be used with these options (credentials refused, a nonce
    and no seed): reads stay on nats-py's connection."""


class HashChain:
    """A running hash over a read's chunks, fed as they arrive when they arrive in order.

    Hashing a chunk the moment it is copied out of the receive buffer finds it in the CPU
    cache; hashed later, after the rest of a 16 MiB read-ahead window went through, it
    measured 0.27 s instead of 0.18 s of CPU per 256 MiB. ``next`` is the index of the next
    chunk to hash: the receive path hashes chunk ``next`` only, so anything that arrives out
    of order (a batch cut short and continued later) is left to the reader, which hashes
    every chunk at or past ``next`` in order before handing it on (``catch_up``).
    """

    __slots__ = ("next", "sha")

    def __init__(self, sha: Any) -> None:
        self.sha = sha
        self.next = 0

    def catch_up(self, first: int, chunks: list[bytes]) -> None:
        """Hash what the receive path did not, of chunks ``first``.. (in order)."""
        start = self.next - first
        if start < len(chunks):
            for c in chunks[max(0, start) :]:
                self.sha.update(c)
            self.next = first + len(chunks)


class Batch:
    """One outstanding batch direct get: the chunks it delivered, in order, until its EOB."""

    __slots__ = ("chain", "datas", "done", "error", "first", "seqs", "what")

    def __init__(
        self, done: asyncio.Future[None], what: str, chain: HashChain | None, first: int
    ) -> None:
        self.seqs: list[int] = []
        self.datas: list[bytes] = []
        self.done = done
        self.error: errors.StoreError | None = None
        self.what = what
        self.chain = chain
        self.first = first


class PushRead:
    """Deliveries of an ephemeral push consumer to the bulk connection, for one read.

    The store creates the consumer (on its main connection) with this read's ``subject`` as
    deliver subject. The receive path appends each chunk with its stream sequence (from the
    ``$JS.ACK`` reply subject) and answers flow-control requests at once, unless more than
    ``limit`` bytes wait for the reader: then the answer waits until the reader has taken
    them (``take``), which stops the server (flow control as credit, so memory stays bounded).
    """

    __slots__ = (
        "_conn",
        "buffered",
        "chain",
        "datas",
        "delivered",
        "ended",
        "error",
        "first",
        "held",
        "limit",
        "seqs",
        "sid",
        "stamps",
        "subject",
        "subjects",
        "waiting",
        "wake_bytes",
        "what",
    )

    def __init__(
        self,
        conn: BulkConnection,
        subject: bytes,
        sid: bytes,
        chain: HashChain | None,
        first: int,
        limit: int,
        stamped: bool = False,
    ) -> None:
        self._conn = conn
        self.subject = subject
        self.sid = sid
        self.chain = chain
        self.first = first  # the read's index of the next chunk to arrive
        self.limit = limit
        self.seqs: list[int] = []
        self.datas: list[bytes] = []
        self.stamps: list[int] | None = [] if stamped else None
        """``stamped``: each message's time (ns) from its ack subject, as ``seqs``."""
        self.subjects: list[bytes] | None = [] if stamped else None
        """``stamped``: each message's subject, as ``seqs``."""
        self.buffered = 0
        self.held: list[bytes] = []
        self.ended = False  # the server said nothing more is pending
        self.delivered = 0
        """The consumer sequence of the last delivery: each next one is this + 1, or a
        message was lost on the way (the read fails rather than silently missing it)."""
        self.error: errors.StoreError | None = None
        self.waiting: asyncio.Future[None] | None = None
        self.wake_bytes = min(limit // 4, 2 << 20)
        self.what = f"push read on {subject.decode()}"

    def _wake(self) -> None:
        # Wake the reader per couple of MiB, not per chunk: one event-loop round per chunk
        # would cost more than the chunk's parsing.
        if (
            self.waiting is not None
            and not self.waiting.done()
            and (self.buffered >= self.wake_bytes or self.ended or self.error is not None)
        ):
            self.waiting.set_result(None)

    async def take(self, timeout: float) -> tuple[list[int], list[bytes], bool]:
        """What arrived so far (waiting up to ``timeout`` for at least one chunk): sequences,
        payloads, and whether the server has nothing more pending. Timeout on silence."""
        if self.buffered < self.wake_bytes and not self.ended and self.error is None:
            self.waiting = asyncio.get_running_loop().create_future()
            try:
                await within(self.waiting, timeout)
            except TimeoutError:
                if not self.datas:
                    raise errors.Timeout(f"{self.what}: nothing for {timeout}s") from None
            finally:
                self.waiting = None
        if self.error is not None and not self.datas:
            raise self.error
        seqs, datas = self.seqs, self.datas
        self.seqs, self.datas = [], []
        self.buffered = 0
        held, self.held = self.held, []
        for reply in held:  # the credit the server waited for
            self._conn._reply(reply)
        return seqs, datas, self.ended and not self.datas

    async def take_stamped(
        self, timeout: float
    ) -> tuple[list[int], list[int], list[bytes], list[bytes], bool]:
        """``take`` of a ``stamped`` read: sequences, times, subjects, payloads, ended."""
        assert self.stamps is not None and self.subjects is not None, "not a stamped read"
        seqs, datas, ended = await self.take(timeout)
        stamps, subjects = self.stamps[: len(seqs)], self.subjects[: len(seqs)]
        del self.stamps[: len(seqs)], self.subjects[: len(seqs)]
        return seqs, stamps, subjects, datas, ended

    def close(self) -> None:
        if self._conn._pushes.pop(self.sid, None) is not None:
            self._conn._reply_raw(b"UNSUB " + self.sid + CRLF)


class _Protocol(asyncio.BufferedProtocol):
    """Feeds the connection's parser from one reusable buffer."""

    def __init__(self, conn: BulkConnection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection's transports are Transports; the base signature names the base.
        self.conn._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn._get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.conn._end += nbytes
        self.conn._parse()

    def eof_received(self) -> bool:
        return False  # close the transport: the server hung up

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(exc)


class BulkConnection:
    """One lean client connection, reading batch direct gets. Use ``open``; asyncio only."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self._pos = 0  # first unparsed byte
        self._end = 0  # end of received bytes
        self._need = 0  # bytes the frame at _pos needs in all (0: unknown / fits)
        self._prefix = b""
        self._api = f"{API}.DIRECT.GET.".encode()
        self._reqs: dict[bytes, Batch] = {}
        self._pushes: dict[bytes, PushRead] = {}
        self._next = 0
        self._closed = False
        self._why = ""
        self._info: asyncio.Future[dict[str, Any]] | None = None
        self._pongs: list[asyncio.Future[None]] = []
        self.server_info: dict[str, Any] = {}

    # -- connecting --------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        auth: ConnectOptions | None = None,
        timeout: float = 5.0,
        name: str = "objfs-bulk",
        secure: bool = False,
    ) -> BulkConnection:
        """Connect, authenticate and subscribe to the reply inbox, with the connection options
        nats-py's connection uses (``nats_auth``): TLS when the server requires it, the URL
        says ``tls://`` (``secure``) or the options ask for it first, and a signed nonce for
        an nkey or credentials file.

        Unavailable if the server cannot be reached or refuses us in time; Unsupported if it
        wants a signed nonce and the options hold no seed to sign it with.
        """
        tune_malloc()
        auth = auth or ConnectOptions()
        self = cls(timeout)
        self._api = (auth.api_prefix + ".DIRECT.GET.").encode()
        loop = asyncio.get_running_loop()
        self._info = loop.create_future()
        protocol = _Protocol(self)
        try:
            tls = tls_context(auth) if auth.tls_first else None
            await within(
                loop.create_connection(
                    lambda: protocol, host, port, ssl=tls, server_hostname=host if tls else None
                ),
                timeout,
            )
            info = await within(asyncio.shield(self._info), timeout)
            self.server_info = info
            secured = tls is not None
            # As nats-py decides (its connection and this one must agree): the server's word or
            # a tls:// URL, not merely a CA given for a server that speaks plain TCP.
            if not secured and (info.get("tls_required") or secure):
                assert self._transport is not None
                secured = True
                self._transport = cast(
                    asyncio.Transport,
                    await within(
                        loop.start_tls(
                            self._transport, protocol, tls_context(auth), server_hostname=host
                        ),
                        timeout,
                    ),
                )
            if (
                info.get("nonce")
                and info.get("auth_required")
                and not (auth.user or auth.token or signs(auth))
            ):
                raise Unsupported("the server wants a signed nonce and no seed was given")
            connect: dict[str, Any] = {
                "verbose": False,
                "pedantic": False,
                "tls_required": secured,
                "name": name,
                "lang": "python3",
                "version": "objfs-bulk",
                "protocol": 1,
                "headers": True,
                "no_responders": True,
                "echo": False,
                **connect_fields(auth, info),
            }
            self._prefix = f"{auth.inbox}.{NUID().next().decode()}.".encode()
            pong = loop.create_future()
            self._pongs.append(pong)
            self._write(
                b"CONNECT "
                + json.dumps(connect, separators=(",", ":")).encode()
                + b"\r\nPING\r\nSUB "
                + self._prefix
                + b"* 1\r\n"
            )
            await within(asyncio.shield(pong), timeout)
        except Unsupported:
            self.close()
            raise
        except errors.StoreError:
            self.close()
            raise
        except CredentialsError as e:
            self.close()
            raise Unsupported(str(e)) from None
        except (TimeoutError, OSError) as e:
            self.close()
            raise errors.Unavailable(f"bulk connection to {host}:{port}: {e!r}") from None
        return self

    @property
    def is_open(self) -> bool:
        return not self._closed

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._lost(None, "closed")

    # -- requests ----------------------------------------------------------------------------
    def request(
        self,
        stream: str,
        seq: int,
        count: int,
        subject: str,
        *,
        max_bytes: int = 0,
        chain: HashChain | None = None,
        first: int = 0,
    ) -> Batch:
        """Send one batch direct get now; ``wait`` for its messages.

        The server may end a batch early (``max_bytes``, or its own limit on what it queues
        for one client): the caller asks again for the rest. With ``chain``, chunks are hashed
        on arrival when they are next in order (``first``: the read's index of the batch's
        first chunk)."""
        what = f"batch get {subject} from {seq}"
        if self._closed:
            raise errors.Unavailable(f"{what}: bulk connection closed ({self._why})")
        token = str(self._next).encode()
        self._next += 1
        reply = self._prefix + token
        batch = Batch(asyncio.get_running_loop().create_future(), what, chain, first)
        self._reqs[reply] = batch
        req: dict[str, Any] = {"seq": seq, "batch": count, "next_by_subj": subject}
        if max_bytes:
            req["max_bytes"] = max_bytes
        body = json.dumps(req).encode()
        self._write(
            b"PUB "
            + self._api
            + stream.encode()
            + b" "
            + reply
            + b" "
            + str(len(body)).encode()
            + CRLF
            + body
            + CRLF
        )
        return batch

    async def wait(self, batch: Batch, timeout: float | None = None) -> Batch:
        """The batch once its end-of-batch status came; objfs errors otherwise."""
        try:
            await within(asyncio.shield(batch.done), timeout or self.timeout)
        except TimeoutError:
            raise errors.Timeout(f"{batch.what}: timed out") from None
        finally:
            self.forget(batch)
        if batch.error is not None:
            raise batch.error
        return batch

    def push_read(
        self,
        *,
        chain: HashChain | None = None,
        first: int = 0,
        limit: int = 16 << 20,
        stamped: bool = False,
    ) -> PushRead:
        """A deliver subject on this connection for a push consumer the caller creates
        (``stamped``: keep each message's time and subject too, see ``take_stamped``)."""
        if self._closed:
            raise errors.Unavailable(f"bulk connection closed ({self._why})")
        # Deliveries keep the chunk's own subject: they are told apart by subscription id.
        # The deliver subject has one token more than the batch replies' wildcard, so that
        # subscription does not receive them a second time.
        token = str(self._next).encode()
        self._next += 1
        subject = self._prefix + b"p." + token
        sid = b"p" + token
        push = PushRead(self, subject, sid, chain, first, limit, stamped)
        self._pushes[sid] = push
        self._write(b"SUB " + subject + b" " + sid + CRLF)
        return push

    def _reply_raw(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _reply(self, subject: bytes) -> None:
        """An empty message to ``subject`` (a flow-control answer)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"PUB " + subject + b" 0\r\n\r\n")

    def forget(self, batch: Batch) -> None:
        """Stop collecting for ``batch`` (cancelled reader): later messages are dropped."""
        for reply, b in list(self._reqs.items()):
            if b is batch:
                del self._reqs[reply]
                break

    # -- transport plumbing ------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise errors.Unavailable(f"bulk connection closed ({self._why or 'not open'})")
        self._transport.write(data)

    def _get_buffer(self) -> memoryview:
        free = len(self._buf) - self._end
        if free < MIN_READ or free < self._need - (self._end - self._pos):
            self._compact()
        return self._view[self._end :]

    def _compact(self) -> None:
        """Move the unparsed bytes to the front; grow if the frame being read needs it."""
        pos, end = self._pos, self._end
        left = end - pos
        size = len(self._buf)
        want = max(self._need, left) + MIN_READ
        if want > size:
            # A new buffer: the old one may still be exported (the transport's view of it).
            new = bytearray(max(size * 2, want))
            new[:left] = self._view[pos:end]
            self._buf, self._view = new, memoryview(new)
        elif pos:
            # Same-length slice assignment: allowed while the buffer is exported.
            self._buf[:left] = self._view[pos:end]
        self._pos, self._end = 0, left

    def _parse(self) -> None:
        """Handle every complete frame in the buffer; stop at the first incomplete one."""
        buf, view = self._buf, self._view
        pos, end = self._pos, self._end
        while pos < end:
            i = buf.find(CRLF, pos, end)
            if i < 0:
                break
            op = buf[pos]
            if op == 72 or op == 77:  # HMSG / MSG
                line = bytes(view[pos:i]).split()
                body = i + 2
                if op == 72:
                    hlen, tlen = int(line[-2]), int(line[-1])
                else:
                    hlen, tlen = 0, int(line[-1])
                stop = body + tlen
                if stop + 2 > end:
                    self._need = stop + 2 - pos
                    break
                self._need = 0
                batch = self._reqs.get(line[1])
                if batch is not None:
                    self._message(batch, buf, view, body, body + hlen, stop)
                else:
                    push = self._pushes.get(line[2])
                    if push is not None:
                        reply = line[3] if len(line) == (6 if op == 72 else 5) else b""
                        self._delivery(push, line[1], reply, buf, view, body, body + hlen, stop)
                pos = stop + 2
                continue
            if op == 80:  # PING / PONG
                if buf[pos + 1] == 73:
                    if self._transport is not None and not self._transport.is_closing():
                        self._transport.write(b"PONG\r\n")
                elif self._pongs:
                    fut = self._pongs.pop(0)
                    if not fut.done():
                        fut.set_result(None)
            elif op == 73:  # INFO
                self._on_info(bytes(view[pos + 5 : i]))
            elif op == 45:  # -ERR
                self._on_error(bytes(view[pos:i]).decode(errors="replace"))
            # +OK and anything unknown: nothing to do.
            pos = i + 2
        self._pos, self._end = (0, 0) if pos == end else (pos, end)

    def _message(
        self, batch: Batch, buf: bytearray, view: memoryview, body: int, hend: int, stop: int
    ) -> None:
        """One message for ``batch``: a chunk, or the status that ends the batch."""
        if body != hend and buf[body + 8] == 32:  # "NATS/1.0 <code>": a status message
            text = bytes(view[body + 9 : buf.find(CRLF, body, hend)]).decode(errors="replace")
            batch.error = batch_end_error(text[:3], text, batch.what)
            if not batch.done.done():
                batch.done.set_result(None)
            return
        k = buf.find(SEQ, body, hend)
        seq = int(buf[k + 15 : buf.find(CRLF, k, hend)]) if k >= 0 else 0
        data = bytes(view[hend:stop])
        chain = batch.chain
        if chain is not None and chain.next == batch.first + len(batch.datas):
            chain.sha.update(data)  # still in the CPU cache (see HashChain)
            chain.next += 1
        batch.seqs.append(seq)
        batch.datas.append(data)

    def _delivery(
        self,
        push: PushRead,
        subject: bytes,
        reply: bytes,
        buf: bytearray,
        view: memoryview,
        body: int,
        hend: int,
        stop: int,
    ) -> None:
        """One push-consumer message: a chunk, a flow-control request or a heartbeat."""
        if body != hend and buf[body + 8] == 32:  # a status: 100 (flow control, heartbeat)
            code = bytes(view[body + 9 : body + 12]).decode(errors="replace")
            if code == FLOW_CONTROL:
                if reply:  # flow-control request: answer now, or when the reader caught up
                    if push.buffered > push.limit:
                        push.held.append(reply)
                    else:
                        self._reply(reply)
                k = buf.find(STALLED_HEADER, body, hend)
                if k >= 0:
                    self._reply(bytes(view[k + len(STALLED_HEADER) : buf.find(CRLF, k, hend)]))
            else:
                text = bytes(view[body + 9 : buf.find(CRLF, body, hend)]).decode(errors="replace")
                push.error = push_status_error(code, text, push.what)
                push._wake()
            return
        try:
            ack = ack_tokens(reply)
            seq, pending, stamp = ack.stream_seq, ack.pending, ack.timestamp_ns
        except ValueError:
            seq, pending, stamp = 0, 0, 0  # not a JetStream delivery: the reader's check fails it
        else:
            if ack.consumer_seq != push.delivered + 1 and push.error is None:
                push.error = errors.Unavailable(
                    f"{push.what}: delivery {push.delivered + 1} lost (got {ack.consumer_seq})"
                )
            push.delivered = ack.consumer_seq
        data = bytes(view[hend:stop])
        chain = push.chain
        if chain is not None and chain.next == push.first:
            chain.sha.update(data)  # still in the CPU cache (see HashChain)
            chain.next += 1
        push.first += 1
        push.seqs.append(seq)
        push.datas.append(data)
        if push.stamps is not None and push.subjects is not None:
            push.stamps.append(stamp)
            push.subjects.append(subject)
        push.buffered += stop - hend
        if pending == 0:
            push.ended = True
        push._wake()

    def _on_info(self, data: bytes) -> None:
        try:
            info = json.loads(data)
        except ValueError:
            info = {}
        if self._info is not None and not self._info.done():
            self._info.set_result(info)

    def _on_error(self, text: str) -> None:
        log.debug("bulk connection: %s", text)
        self._why = text
        if "authorization" in text.lower() or "authentication" in text.lower():
            exc: Exception = Unsupported(f"server refused the credentials: {text}")
        else:
            exc = errors.Unavailable(f"server error: {text}")
        for fut in [*self._pongs, self._info]:
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def _lost(self, exc: Exception | None, why: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._why = self._why or why or (repr(exc) if exc else "connection closed by the server")
        err = errors.Unavailable(f"bulk connection lost: {self._why}")
        for batch in self._reqs.values():
            if not batch.done.done():
                batch.error = errors.Unavailable(f"{batch.what}: {err}")
                batch.done.set_result(None)
        self._reqs.clear()
        for push in self._pushes.values():
            push.error = errors.Unavailable(f"{push.what}: {err}")
            push._wake()
        self._pushes.clear()
        for fut in [*self._pongs, self._info]:
            if fut is not None and not fut.done():
                fut.set_exception(err)
                # Nobody may be waiting on it (a lost connection after the handshake).
                fut.add_done_callback(_consume)
        self._pongs.clear()


def _consume(fut: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        fut.exception()
