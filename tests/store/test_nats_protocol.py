"""The JetStream protocol rules of objfs.store.nats_protocol, without a server.

Both read paths (nats-py's connection and the lean reader) take their status-to-error mapping
and ack-subject parsing from there; the server tests of each path are in test_nats_bulk.
"""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from objfs.store import errors
from objfs.store.nats_js import OrderedConsumer
from objfs.store.nats_protocol import (
    ack_tokens,
    batch_end_error,
    push_consumer_config,
    push_status_error,
)


@pytest.mark.parametrize("status", ["204", "404"])
def test_clean_ends_of_a_batch(status: str) -> None:
    assert batch_end_error(status, f"{status} EOB", "get") is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [("503", errors.NotFound), ("408", errors.Corrupt), ("413", errors.Corrupt)],
)
def test_status_ending_a_batch_early(status: str, cls: type[errors.StoreError]) -> None:
    err = batch_end_error(status, f"{status} Whatever", "get x")
    assert type(err) is cls
    assert str(err) == f"get x: status {status} Whatever"


def test_push_statuses() -> None:
    assert push_status_error("100", "100 FlowControl Request", "push") is None
    assert type(push_status_error("503", "503", "push")) is errors.NotFound
    assert type(push_status_error("409", "409 Consumer Deleted", "push")) is errors.Unavailable


def test_ordered_consumer_takes_the_same_rule() -> None:
    """nats-py's ordered consumer (watches, listings) maps a status as the lean reader's push
    reads do: 503 is the stream gone; another unknown status restarts the consumer."""

    async def body() -> None:
        oc = OrderedConsumer(None, "OBJ_b", "$O.b.M.>")  # type: ignore[arg-type]
        resets: list[int] = []

        async def reset() -> None:
            resets.append(1)

        oc.reset = reset  # type: ignore[method-assign]

        def status(code: str, text: str) -> Msg:
            return Msg(None, subject="_INBOX.x", headers={"Status": code, "Description": text})  # type: ignore[arg-type]

        with pytest.raises(errors.NotFound, match="No Responders"):
            await oc._control(status("503", "No Responders"), "503")
        assert resets == []
        await oc._control(status("408", "Request Timeout"), "408")
        await oc._control(status("409", "Consumer Deleted"), "409")
        assert resets == [1, 1]

    asyncio.run(body())


def test_ack_subjects_v1_and_v2() -> None:
    v1 = b"$JS.ACK.OBJ_b.cons.1.42.7.1700000000000000000.3"
    v2 = b"$JS.ACK.dom.acchash.OBJ_b.cons.1.42.7.1700000000000000000.3.rnd"
    for reply in (v1, v2):
        assert tuple(ack_tokens(reply)) == (42, 7, 1700000000000000000, 3)
    with pytest.raises(ValueError):
        ack_tokens(b"_INBOX.x")


def test_push_consumer_config() -> None:
    config = push_consumer_config(
        "_INBOX.d",
        "$O.b.C.n",
        deliver_policy="by_start_sequence",
        heartbeat=2.0,
        inactive_threshold=30.0,
        opt_start_seq=5,
    )
    assert config["idle_heartbeat"] == 2_000_000_000
    assert config["inactive_threshold"] == 30_000_000_000
    assert config["opt_start_seq"] == 5
    assert (config["ack_policy"], config["flow_control"], config["headers_only"]) == (
        "none",
        True,
        False,
    )
    assert "opt_start_seq" not in push_consumer_config(
        "d", "f", deliver_policy="all", heartbeat=1.0, inactive_threshold=30.0
    )
