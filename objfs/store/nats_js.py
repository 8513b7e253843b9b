"""The JetStream requests the NATS backend needs, on bare nats-py core NATS, with objfs errors.

Why not nats-py's JetStream helpers: its ordered consumer answers flow control from a polling
loop (stalls), its direct get raises generic errors, and none of it does ADR-31 batch direct
gets. This module speaks the JetStream JSON API directly (stream CRUD, publish with acks,
direct get, batch direct get, ephemeral ordered push consumers) and turns every failure into an
``objfs.store.errors`` class, so ``nats_store`` contains object-store logic only. What it
shares with the lean reader of ``nats_bulk`` (consumer configuration, ack subjects, statuses
and their errors) is in ``nats_protocol``.

Everything here uses one timeout (the store's), so a silent server costs at most that long.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID

from objfs.store import errors
from objfs.store.deadline import within
from objfs.store.nats_protocol import (
    API,
    CONSUMER_GONE,
    DESCRIPTION,
    FLOW_CONTROL,
    LAST_CONSUMER,
    NO_RESPONDERS,
    SEQUENCE,
    STALLED,
    STATUS,
    NoMessage,
    WrongLastSequence,
    ack_tokens,
    batch_end_error,
    consumer_create,
    consumer_delete,
    push_consumer_config,
    push_status_error,
    raise_api_error,
)
from objfs.store.nats_retry import NoResponders, attempt_timeout, retry
from objfs.store.nats_subjects import bucket_of_stream, stream_of_subject
from objfs.store.wire import parse_mtime

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
_NUID = NUID()


@contextlib.contextmanager
def mapped(
    what: str,
    *,
    no_responders: type[errors.StoreError] = errors.Unavailable,
    nobody: str = "no responders",
) -> Iterator[None]:
    """Turn nats-py and asyncio exceptions raised inside the block into objfs errors.

    ``no_responders``: what "nobody listens on that subject" means here. For a publish or
    direct get on a bucket's own subjects it is NotFound (the stream does not exist); for an
    API request it means JetStream is off (Unavailable), which ``nobody`` then says.
    """
    try:
        yield
    except errors.StoreError:
        raise
    except nats.errors.NoRespondersError:
        raise no_responders(f"{what}: {nobody}") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise errors.Timeout(f"{what}: timed out") from None
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionDrainingError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.NoServersError,
        ConnectionError,
    ) as e:
        raise errors.Unavailable(f"{what}: {type(e).__name__}: {e}") from None
    except nats.errors.MaxPayloadError as e:
        raise errors.StoreError(f"{what}: {e}") from None


@dataclass(slots=True)
class StoredMsg:
    """One message as a direct get or a consumer delivers it."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]
    timestamp_ns: int = 0
    pending: int = 0
    """Consumer deliveries only: messages still to come (0 at the end of a snapshot)."""


def _api_answer(msg: Msg, subject: str) -> dict[str, Any]:
    try:
        resp = json.loads(msg.data)
    except ValueError:
        raise errors.StoreError(f"{subject}: bad JSON answer") from None
    if not isinstance(resp, dict):
        raise errors.StoreError(f"{subject}: answer is not a JSON object")
    if "error" in resp:
        raise_api_error(resp["error"], subject)
    return resp


def _parse_headers(block: bytes) -> dict[str, str]:
    """A stored message's header block (``NATS/1.0`` line, ``Key: value`` lines)."""
    headers: dict[str, str] = {}
    for line in block.decode(errors="replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


def _status(msg: Msg) -> str | None:
    h = msg.headers
    return h.get(STATUS) if h else None


def _stored(msg: Msg) -> StoredMsg:
    h = msg.headers or {}
    return StoredMsg(
        subject=h.get("Nats-Subject", msg.subject),
        seq=int(h.get(SEQUENCE, 0)),
        data=msg.data,
        headers=h,
        timestamp_ns=parse_mtime(h.get("Nats-Time-Stamp")) or 0,
    )


class JetStream:
    """JSON API, publish and direct get on one connection, with one timeout."""

    def __init__(self, nc: Client, timeout: float, *, api_prefix: str = API) -> None:
        """``api_prefix``: where the JetStream API listens (``$JS.API``, a domain's
        ``$JS.<domain>.API`` or an imported prefix)."""
        self.nc = nc
        self.timeout = timeout
        self.api_prefix = api_prefix

    def _check_open(self, what: str) -> None:
        if self.nc.is_closed:
            raise errors.Unavailable(f"{what}: connection closed")

    async def api(
        self, subject: str, body: dict[str, Any] | None = None, *, gone_ok: bool = False
    ) -> dict[str, Any]:
        """One JetStream API request (``subject`` after ``$JS.API.``); its JSON answer.

        Transient failures are retried until the timeout (``nats_retry``). ``gone_ok``: a
        delete, whose repeat after a lost answer finds nothing to delete (NotFound then means
        that an earlier attempt did it: the answer is ``{}``)."""
        payload = json.dumps(body).encode() if body is not None else b""
        tries = 0

        async def attempt(seconds: float) -> dict[str, Any]:
            nonlocal tries
            tries += 1
            self._check_open(subject)
            with mapped(subject, nobody=self._no_jetstream()):
                msg = await self.nc.request(
                    f"{self.api_prefix}.{subject}", payload, timeout=seconds
                )
            try:
                return _api_answer(msg, subject)
            except errors.NotFound:
                if gone_ok and tries > 1:
                    return {}
                raise

        return await retry(subject, self.timeout, attempt)

    async def stream_exists(self, stream: str) -> None:
        """NotFound if ``stream`` surely does not exist; returns if it does or if the server
        cannot tell now (one short attempt: ``retry``'s ``settle`` after no responders)."""
        subject = f"STREAM.INFO.{stream}"
        with contextlib.suppress(errors.Unavailable):
            self._check_open(subject)
            with mapped(subject, nobody=self._no_jetstream()):
                msg = await self.nc.request(
                    f"{self.api_prefix}.{subject}", b"", timeout=attempt_timeout(self.timeout)
                )
            _api_answer(msg, subject)

    def _no_jetstream(self) -> str:
        """What nobody answering the API means: JetStream is off for us there."""
        where = "" if self.api_prefix == API else f" (API prefix {self.api_prefix})"
        return f"JetStream is not enabled on this server or account{where}"

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        """Publish into a stream and wait for the ack; the message's stream sequence.

        Retried until the timeout under one ``Nats-Msg-Id`` (``msg_id``, else a fresh one):
        a repeat of a publish that had landed is answered with its original sequence."""
        headers = dict(headers or {})
        mid = headers[MSG_ID] = msg_id or _NUID.next().decode()
        what = f"publish {subject}"
        tries = 0

        async def attempt(seconds: float) -> int:
            nonlocal tries
            tries += 1
            self._check_open(subject)
            with mapped(what, no_responders=NoResponders):
                msg = await self.nc.request(subject, payload, timeout=seconds, headers=headers)
            try:
                resp = json.loads(msg.data)
            except ValueError:
                raise errors.StoreError(f"{what}: bad ack") from None
            if "error" in resp:
                try:
                    raise_api_error(resp["error"], what)
                except WrongLastSequence:
                    # The server checks the expected sequence before duplicates: a repeat
                    # of a conditional publish that had landed is refused. It is ours if
                    # the subject's last message carries our id.
                    if tries > 1:  # (from the leader: a replica may not have it yet)
                        last = await self.leader_last(stream_of_subject(subject), subject)
                        if last is not None and last.headers.get(MSG_ID) == mid:
                            return last.seq
                    raise
            return int(resp["seq"])

        stream = stream_of_subject(subject)
        return await retry(what, self.timeout, attempt, settle=lambda: self.stream_exists(stream))

    async def _direct(self, stream: str, subject: str, payload: bytes, what: str) -> Msg:
        async def attempt(seconds: float) -> Msg:
            self._check_open(what)
            with mapped(what, no_responders=NoResponders):
                return await self.nc.request(subject, payload, timeout=seconds)

        return await retry(what, self.timeout, attempt, settle=lambda: self.stream_exists(stream))

    async def direct_last(self, stream: str, subject: str) -> StoredMsg | None:
        """The last message on ``subject`` (direct get); None if there is none."""
        what = f"get {subject}"
        direct = f"{self.api_prefix}.DIRECT.GET.{stream}.{subject}"
        msg = await self._direct(stream, direct, b"", what)
        return self._direct_answer(msg, what)

    async def direct_get(self, stream: str, req: dict[str, Any]) -> StoredMsg | None:
        """A single-message direct get (``seq``, ``next_by_subj``...); None if none."""
        what = f"get {stream} {req}"
        msg = await self._direct(
            stream, f"{self.api_prefix}.DIRECT.GET.{stream}", json.dumps(req).encode(), what
        )
        return self._direct_answer(msg, what)

    async def leader_last(self, stream: str, subject: str) -> StoredMsg | None:
        """The last message on ``subject`` as the stream's leader has it (a non-direct get:
        on a replicated stream a direct get may be answered by a replica that is behind);
        None if there is none."""
        try:
            resp = await self.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        except NoMessage:
            return None
        m = resp["message"]
        return StoredMsg(
            subject=m.get("subject", subject),
            seq=int(m["seq"]),
            data=base64.b64decode(m.get("data") or ""),
            headers=_parse_headers(base64.b64decode(m.get("hdrs") or "")),
            timestamp_ns=parse_mtime(m.get("time")) or 0,
        )

    @staticmethod
    def _direct_answer(msg: Msg, what: str) -> StoredMsg | None:
        status = _status(msg)
        if status == "404":
            return None
        if status is not None:
            desc = (msg.headers or {}).get(DESCRIPTION, "")
            raise_api_error({"code": int(status), "description": desc}, what)
        return _stored(msg)

    async def bucket_streams(self) -> list[dict[str, Any]]:
        """Stream infos of every object store bucket (one request per 256 streams)."""
        infos: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = await self.api("STREAM.LIST", {"offset": offset})
            streams = resp.get("streams") or []
            infos.extend(s for s in streams if bucket_of_stream(s["config"]["name"]))
            offset += len(streams)
            if not streams or offset >= int(resp.get("total", 0)):
                return infos

    async def purge(self, stream: str, subject: str | None = None) -> None:
        body = {"filter": subject} if subject else {}
        await self.api(f"STREAM.PURGE.{stream}", body)


class _Request:
    """One outstanding batch direct get: collects messages until its end-of-batch status."""

    __slots__ = ("done", "error", "msgs", "what")

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self.msgs: list[Msg] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self.error: errors.StoreError | None = None
        self.what = what


class BatchGetter:
    """ADR-31 batch direct gets over one wildcard reply subscription.

    Several batches can be outstanding (read_stream pipelines them); each has its own reply
    subject under the subscription's prefix. The callback only appends the message: header
    checks happen once a batch is complete, off the hot path.
    """

    def __init__(self, js: JetStream) -> None:
        self.js = js
        self._prefix = ""
        self._sub: Any = None
        self._reqs: dict[str, _Request] = {}
        self._next = 0

    async def start(self) -> BatchGetter:
        nc = self.js.nc
        self._prefix = nc.new_inbox()
        with mapped("subscribe"):
            # No byte limit: the caller's window bounds what is in flight, and a dropped
            # message would look like a missing chunk.
            self._sub = await nc.subscribe(
                self._prefix + ".*", cb=self._on_msg, pending_bytes_limit=0
            )
        return self

    async def _on_msg(self, msg: Msg) -> None:
        req = self._reqs.get(msg.subject[len(self._prefix) + 1 :])
        if req is None or req.done.done():
            return
        headers = msg.headers
        status = headers.get(STATUS) if headers and not msg.data else None
        if status is None:
            req.msgs.append(msg)
            return
        text = f"{status} {headers.get(DESCRIPTION, '')}" if headers else status
        req.error = batch_end_error(status, text, req.what)
        req.done.set_result(None)

    async def request(
        self, stream: str, seq: int, count: int, subject: str
    ) -> asyncio.Future[list[Msg]]:
        """Send one batch request; a future of its messages (raises objfs errors)."""
        token = str(self._next)
        self._next += 1
        what = f"batch get {subject} from {seq}"
        req = _Request(asyncio.get_running_loop(), what)
        self._reqs[token] = req
        body = json.dumps({"seq": seq, "batch": count, "next_by_subj": subject}).encode()
        self.js._check_open(what)
        with mapped(what):
            await self.js.nc.publish(
                f"{self.js.api_prefix}.DIRECT.GET.{stream}", body, reply=f"{self._prefix}.{token}"
            )
        return asyncio.ensure_future(self._wait(token, req, what))

    async def _wait(self, token: str, req: _Request, what: str) -> list[Msg]:
        try:
            with mapped(what):
                await within(asyncio.shield(req.done), self.js.timeout)
        finally:
            self._reqs.pop(token, None)
        if req.error is not None:
            raise req.error
        return req.msgs

    async def close(self) -> None:
        self._reqs.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


_background: set[asyncio.Future[None]] = set()
"""Fire-and-forget requests (consumer deletes), referenced until done."""


def _forgotten(task: asyncio.Future[None]) -> None:
    """Done callback of a fire-and-forget request: its failure (the connection closed just
    after a watch stopped) is nobody's to report, so it is retrieved here, not logged by
    asyncio as never retrieved; the inactive threshold removes the consumer anyway."""
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("consumer delete not sent: %s", task.exception())


async def delete_consumer_quietly(js: JetStream, stream: str, name: str | None) -> None:
    """Delete an ephemeral push consumer, fire and forget: its inactive threshold removes it
    anyway if this is lost (a lean reader's, when its read ends however it ended)."""
    if name and not js.nc.is_closed:
        with contextlib.suppress(Exception):
            await js.nc.publish(consumer_delete(stream, name, js.api_prefix), b"")


class OrderedConsumer:
    """An ephemeral ordered push consumer: in-order delivery, restarted on any gap.

    Answers flow control and stalled heartbeats at once (nats-py's helper polls). On a gap
    in consumer sequences, or silence longer than three heartbeats (a server restart drops
    the ephemeral consumer; the connection comes back, the consumer does not), it recreates
    the consumer from the last stream sequence seen + 1.
    """

    def __init__(
        self,
        js: JetStream,
        stream: str,
        filter_subject: str,
        *,
        deliver_policy: str = "last_per_subject",
        headers_only: bool = False,
        heartbeat: float = 2.0,
    ) -> None:
        self.js = js
        self.stream = stream
        self.filter_subject = filter_subject
        self.deliver_policy = deliver_policy
        self.headers_only = headers_only
        self.heartbeat = heartbeat
        self.name: str | None = None
        self.pending_at_start = 0
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self._inbox = ""
        self._last_sseq = 0
        self._next_cseq = 1

    async def start(self, *, after: int | None = None) -> int:
        """Create the consumer; messages pending for it at creation (0: nothing to deliver).

        ``after``: deliver from the stream sequence after it (what was read up to there was
        read otherwise: a watch's snapshot through the lean reader), not by the deliver
        policy; a fresh ``reset`` still uses the policy."""
        nc = self.js.nc
        self._inbox = nc.new_inbox()
        with mapped("subscribe"):
            self._sub = await nc.subscribe(self._inbox, cb=self._on_msg, pending_bytes_limit=0)
        if after is None:
            await self._create(self.deliver_policy, None)
        else:
            self._last_sseq = after
            await self._create("by_start_sequence", after + 1)
        return self.pending_at_start

    async def _create(self, policy: str, start_seq: int | None) -> None:
        config = push_consumer_config(
            self._inbox,
            self.filter_subject,
            deliver_policy=policy,
            heartbeat=self.heartbeat,
            inactive_threshold=max(30.0, 10 * self.heartbeat),
            opt_start_seq=start_seq,
            headers_only=self.headers_only,
        )
        self._next_cseq = 1
        resp = await self.js.api(*consumer_create(self.stream, config))
        self.name = resp.get("name")
        self.pending_at_start = int(resp.get("num_pending", 0))

    async def _on_msg(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    async def reset(self, *, fresh: bool = False) -> None:
        """Recreate the consumer after the last message delivered (gap, silence, restart).

        ``fresh``: start over with the original deliver policy instead (a new snapshot).
        """
        self._drop_consumer()
        # Messages of the old consumer still queued would look like a gap: discard them.
        while not self._queue.empty():
            self._queue.get_nowait()
        if fresh:
            self._last_sseq = 0
        if self._last_sseq:
            await self._create("by_start_sequence", self._last_sseq + 1)
        else:
            await self._create(self.deliver_policy, None)

    def _drop_consumer(self) -> None:
        if self.name and not self.js.nc.is_closed:
            # Fire and forget: the inactive threshold removes it anyway if this is lost.
            subject = consumer_delete(self.stream, self.name, self.js.api_prefix)
            task = asyncio.ensure_future(self.js.nc.publish(subject, b""))
            _background.add(task)
            task.add_done_callback(_forgotten)
        self.name = None

    async def next(self, timeout: float, *, hard: bool = False) -> StoredMsg | None:
        """The next message in order; None when ``timeout`` passes without any message.

        Control messages are handled here and never returned, but they count as signs of
        life: each starts the timeout again, unless ``hard`` (a listing that must end). They
        did not, and an idle watch took the server's heartbeats for silence and read its
        whole bucket again every three heartbeats. A gap triggers a reset.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                msg = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    msg = await within(self._queue.get(), left)
                except TimeoutError:
                    return None
            status = _status(msg)
            if status is not None:
                await self._control(msg, status)
                if not hard:
                    deadline = loop.time() + timeout
                continue
            if not msg.reply:
                continue
            sseq, cseq, ts, pending = ack_tokens(msg.reply.encode())
            if cseq != self._next_cseq:
                log.debug("consumer gap on %s: %d != %d", self.stream, cseq, self._next_cseq)
                await self.reset()
                continue
            self._next_cseq = cseq + 1
            self._last_sseq = sseq
            h = msg.headers or {}
            return StoredMsg(msg.subject, sseq, msg.data, h, ts, pending)

    async def _control(self, msg: Msg, status: str) -> None:
        h = msg.headers or {}
        if status == FLOW_CONTROL:
            if msg.reply:  # flow control request: answer at once
                await self.js.nc.publish(msg.reply, b"")
            stalled = h.get(STALLED)
            if stalled:
                await self.js.nc.publish(stalled, b"")
            last = h.get(LAST_CONSUMER)
            if last is not None and int(last) != self._next_cseq - 1:
                await self.reset()  # a heartbeat tells us we missed messages
        elif status == CONSUMER_GONE:
            # Consumer deleted or replaced under us (e.g. server restart): start again.
            await self.reset()
        else:
            # The lean reader's rule for the same status: 503 is the stream gone (NotFound,
            # as on every path); any other leaves messages undelivered, so start again.
            error = push_status_error(status, h.get(DESCRIPTION, ""), f"consumer on {self.stream}")
            if isinstance(error, errors.NotFound):
                raise error
            log.debug("%s; starting again", error)
            await self.reset()

    async def stop(self) -> None:
        self._drop_consumer()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def consume_snapshot(
    js: JetStream,
    stream: str,
    filter_subject: str,
    *,
    headers_only: bool = False,
    deliver_policy: str = "last_per_subject",
    on_msg: Callable[[StoredMsg], None],
) -> None:
    """Deliver every message an ordered consumer has pending at creation, then stop."""
    oc = OrderedConsumer(
        js, stream, filter_subject, deliver_policy=deliver_policy, headers_only=headers_only
    )
    try:
        if await oc.start() == 0:
            return
        while True:
            m = await oc.next(js.timeout, hard=True)
            if m is None:
                raise errors.Timeout(f"listing {filter_subject}: no message in {js.timeout}s")
            on_msg(m)
            if m.pending == 0:
                return
    finally:
        await oc.stop()


class Publisher:
    """Pipelined JetStream publishes: sent strictly in call order, acks awaited later.

    Chunk order in the stream is the object's byte order for every client, so publishes must
    reach the server in order: ``send`` writes the message before returning, and only the
    wait for its ack is deferred. Acks arrive on one wildcard reply subscription.
    """

    def __init__(self, js: JetStream) -> None:
        self.js = js
        self._prefix = ""
        self._sub: Any = None
        self._futures: dict[str, asyncio.Future[int]] = {}
        self._next = 0

    async def _ensure(self) -> None:
        if self._sub is None:
            self._prefix = self.js.nc.new_inbox()
            with mapped("subscribe"):
                self._sub = await self.js.nc.subscribe(self._prefix + ".*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._futures.pop(msg.subject[len(self._prefix) + 1 :], None)
        if fut is None or fut.done():
            return
        status = _status(msg)
        if status == NO_RESPONDERS:  # the stream does not exist (or is not loaded yet)
            fut.set_exception(NoResponders("publish: no stream for this bucket"))
            return
        try:
            resp = json.loads(msg.data)
            if "error" in resp:
                raise_api_error(resp["error"], "publish")
            fut.set_result(int(resp["seq"]))
        except errors.StoreError as e:
            fut.set_exception(e)
        except (ValueError, KeyError, TypeError):
            fut.set_exception(errors.StoreError(f"publish: bad ack {msg.data[:200]!r}"))

    async def send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[int]:
        """Publish now; a future of the stream sequence (objfs errors, Timeout if no ack)."""
        await self._ensure()
        self.js._check_open(subject)
        token = str(self._next)
        self._next += 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        # An ack that never comes (timeout, cancel) must not leave its entry behind.
        fut.add_done_callback(lambda _: self._futures.pop(token, None))
        try:
            with mapped(f"publish {subject}"):
                await self.js.nc.publish(
                    subject, payload, reply=f"{self._prefix}.{token}", headers=headers
                )
        except BaseException:
            self._futures.pop(token, None)
            raise
        return fut

    async def ack(self, fut: asyncio.Future[int], timeout: float | None = None) -> int:
        """Wait for one ack within ``timeout`` (default: the store's)."""
        try:
            with mapped("publish ack"):
                return await within(fut, timeout or self.js.timeout)
        finally:
            if not fut.done():
                fut.cancel()

    async def close(self) -> None:
        for fut in self._futures.values():
            fut.cancel()
        self._futures.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
