"""The JetStream protocol details objfs relies on, written once: no I/O, no nats-py.

Both read paths (nats-py's connection in ``nats_js``, the lean reader in ``nats_bulk``) and the
benchmark speak the same protocol; what they must agree on lives here, so they cannot drift:

- the configuration of an ephemeral push consumer (``push_consumer_config``);
- the ``$JS.ACK`` reply subject of a delivery and what it tells (``ack_tokens``);
- the status codes of control messages, the end-of-batch rule of ADR-31 batch direct gets
  and the error each status means (``batch_end_error``, ``push_status_error``);
- the JetStream API's error objects and their objfs error (``raise_api_error``).

Status 503 ("no responders") means the same on every path: nobody serves the stream's API,
i.e. the stream (the bucket) does not exist, so it is NotFound, as nats-py's own
``NoRespondersError`` on a direct get or a publish is (``nats_js.mapped``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn

from objfs.store import errors

API = "$JS.API"
"""The JetStream API's default subject prefix; a domain or an imported API moves it
(``objfs.options.ConnectOptions.api_prefix``), so subjects are built with the connection's."""
EVENTS = "$JS.EVENT"
"""Where JetStream publishes advisories; an account importing them may move it
(``ConnectOptions.event_prefix``; a domain does not)."""

# Status codes of JetStream control messages (a ``NATS/1.0 <code>`` header line, no payload).
FLOW_CONTROL = "100"
"""Push consumers: a flow-control request (with a reply subject) or an idle heartbeat."""
END_OF_BATCH = "204"
"""Batch direct get: every message asked for was sent."""
NO_MESSAGES = "404"
"""Batch direct get: no (more) message on the subject; also a clean end of the batch."""
CONSUMER_GONE = "409"
"""Push consumers: the consumer was deleted or replaced under the subscriber."""
NO_RESPONDERS = "503"
"""Nobody answers on the subject: the stream does not exist."""

CLEAN_ENDS = frozenset({END_OF_BATCH, NO_MESSAGES})

# Headers objfs reads.
SEQUENCE = "Nats-Sequence"
STALLED = "Nats-Consumer-Stalled"
LAST_CONSUMER = "Nats-Last-Consumer"
STATUS = "Status"
DESCRIPTION = "Description"

# JetStream error codes (nats-server's errors.json) objfs tells apart.
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_INSUFFICIENT_RESOURCES = 10023
ERR_STREAM_SEALED = 10109
ERR_NO_MESSAGE = 10037
ERR_STORE_FAILED = 10077


class NoMessage(errors.NotFound):
    """A (non-direct) message get found no such message; the stream itself exists."""


class WrongLastSequence(errors.Exists):
    """A publish's Nats-Expected-Last-Subject-Sequence did not match (someone wrote first)."""


def push_consumer_config(
    deliver_subject: str,
    filter_subject: str,
    *,
    deliver_policy: str,
    heartbeat: float,
    inactive_threshold: float,
    opt_start_seq: int | None = None,
    headers_only: bool = False,
) -> dict[str, Any]:
    """An ephemeral push consumer as objfs uses them: no acks, one delivery, state in memory,
    flow control and idle heartbeats (seconds), removed by the server after
    ``inactive_threshold`` seconds without a subscriber (if its delete is lost)."""
    config: dict[str, Any] = {
        "deliver_subject": deliver_subject,
        "filter_subject": filter_subject,
        "deliver_policy": deliver_policy,
        "ack_policy": "none",
        "max_deliver": 1,
        "flow_control": True,
        "idle_heartbeat": int(heartbeat * 1e9),
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": int(inactive_threshold * 1e9),
        "headers_only": headers_only,
    }
    if opt_start_seq is not None:
        config["opt_start_seq"] = opt_start_seq
    return config


def consumer_create(stream: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The API subject (after ``$JS.API.``) and body that create a consumer on ``stream``."""
    return f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}


def consumer_delete(stream: str, name: str, api: str = API) -> str:
    """The full subject that deletes consumer ``name`` of ``stream`` (``api``: the prefix)."""
    return f"{api}.CONSUMER.DELETE.{stream}.{name}"


class AckTokens(NamedTuple):
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int
    """Messages still to come for the consumer (0: this is the last one it has)."""


def ack_tokens(reply: bytes) -> AckTokens:
    """What a push delivery's ``$JS.ACK`` reply subject tells; ValueError if it is not one.

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``;
    v2 adds ``<domain>.<account hash>`` after ``ACK`` and a random token at the end.
    """
    t = reply.split(b".")
    off = 2 if len(t) == 9 else 4
    try:
        return AckTokens(int(t[off + 3]), int(t[off + 4]), int(t[off + 5]), int(t[off + 6]))
    except IndexError:
        raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}") from None


def batch_end_error(status: str, text: str, what: str) -> errors.StoreError | None:
    """The error a status message ending a batch direct get means; None for a clean end.

    The rule (ADR-31): any status message ends the batch; 204 (EOB) and 404 (nothing more
    on the subject) end it cleanly, 503 means the stream is gone, anything else (408, 413...)
    leaves chunks undelivered: the object cannot be read whole.
    """
    if status in CLEAN_ENDS:
        return None
    cls = errors.NotFound if status == NO_RESPONDERS else errors.Corrupt
    return cls(f"{what}: status {text}")


def push_status_error(status: str, text: str, what: str) -> errors.StoreError | None:
    """The error a push consumer's status message means; None for flow control/heartbeats."""
    if status == FLOW_CONTROL:
        return None
    if status == NO_RESPONDERS:
        return errors.NotFound(f"{what}: status {text}")
    return errors.Unavailable(f"{what}: status {text}")


def raise_api_error(err: dict[str, Any], what: str) -> NoReturn:
    """Map a JetStream API error object to the objfs error class."""
    code = err.get("code")
    err_code = err.get("err_code")
    desc = str(err.get("description", ""))
    text = f"{what}: {desc} (code {code}, err_code {err_code})"
    low = desc.lower()
    if err_code == ERR_WRONG_LAST_SEQUENCE or "wrong last sequence" in low:
        raise WrongLastSequence(text)
    if err_code == ERR_STREAM_SEALED or "sealed" in low:
        raise errors.ReadOnly(text)
    if err_code == ERR_STREAM_NOT_FOUND or (code == 404 and "stream" in low):
        raise errors.NotFound(text)
    if err_code == ERR_STREAM_NAME_IN_USE:
        raise errors.Exists(text)
    if (
        err_code == ERR_INSUFFICIENT_RESOURCES
        or "maximum bytes" in low
        or "resource" in low
        or ("storage" in low and "exceed" in low)
    ):
        raise errors.NoSpace(text)
    if err_code == ERR_NO_MESSAGE:
        raise NoMessage(text)
    if code == 404:
        raise errors.NotFound(text)
    if code == 503:
        raise errors.Unavailable(text)
    if code == 400:
        raise errors.InvalidName(text) if "name" in low else errors.StoreError(text)
    raise errors.StoreError(text)
