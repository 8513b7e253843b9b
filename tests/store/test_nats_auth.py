"""Connecting with every kind of NATS auth, on both connections, and failing in words.

Each test writes a server configuration with its own keys (``secure_nats``): TLS with a CA and
a client certificate, TLS handshake first, nkey users, an operator/account/user JWT chain for
a credentials file, a JetStream domain with an inbox prefix its permissions require, a
JetStream imported from another account under API, event and inbox prefixes, and a server
without JetStream. Reads must go through the lean reader (``bulk_in_use``) and return
the bytes written; failed first connects must name the cause and end long before the timeout
when retrying cannot help (a bound from the timeout the test passed, not from the machine's
speed). No secret may appear in a log line or an error message of these runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats_helpers import Run, bulk_in_use, read_all
from secure_nats import (
    ImportedJetStream,
    ServerWith,
    closed_port,
    make_operator,
    make_pki,
    new_nkey,
)

from objfs.options import ConnectOptions
from objfs.store import errors, nats_bulk, nats_reads, nats_watch
from objfs.store.api import BucketConfig, BucketEvent, WatchEvent
from objfs.store.nats_connect import CLOSED_AFTER_TLS, ConnectionEvents, closed_after_tls, describe
from objfs.store.nats_store import NatsObjectStore, connect
from objfs.store.nats_subjects import bucket_stream

LONG = 60.0
"""--timeout of the fail-at-once tests: a connect that retried would take all of it."""


@pytest.fixture
def secrets(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Secrets the test uses; none may appear in any log record of the test."""
    caplog.set_level(logging.DEBUG)
    found: list[str] = []
    yield found
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in found:
        assert secret not in text, f"secret {secret[:4]}... in the log"


async def roundtrip(store: NatsObjectStore, bucket: str, size: int = 3 << 20) -> None:
    """Write, then read back through the lean reader (batch gets and a push read)."""
    data = os.urandom(size)
    await store.create_bucket(BucketConfig(bucket, storage="memory"))
    info = await store.put(bucket, "obj", data)
    layout = await store.layout(info)
    assert b"".join(await store.read_chunks(layout, 0, layout.chunks)) == data
    out = bytearray()
    async for batch in store.read_stream(info):
        for chunk in batch:
            out += chunk
    assert bytes(out) == data
    assert bulk_in_use(store)


async def refused(options: ConnectOptions) -> tuple[str, float]:
    """The error message of a connect that must fail, and how long it took."""
    start = time.monotonic()
    with pytest.raises(errors.Unavailable) as e:
        store = await connect(options)
        await store.close()
    return str(e.value), time.monotonic() - start


# -- TLS -------------------------------------------------------------------------------------


async def test_mutual_tls_on_both_connections(
    run: Run[None], server_with: ServerWith, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    srv = server_with(pki.server_tls(verify=True))
    options = ConnectOptions(
        servers=[srv.url], tls_ca=str(pki.ca), tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key), timeout=10,
    )  # fmt: skip

    async def body() -> None:
        store = await connect(options)
        try:
            await roundtrip(store, "tls")
            bulk = store.reader._bulk
            assert bulk is not None and bulk._transport is not None
            assert bulk._transport.get_extra_info("ssl_object") is not None  # really TLS
        finally:
            await store.close()
        # Without the client certificate the server refuses the handshake.
        message, _ = await refused(
            ConnectOptions(servers=[srv.url], tls_ca=str(pki.ca), timeout=LONG)
        )
        assert "TLS handshake failed" in message and "client certificate" in message, message

    await run(body)


async def test_tls_first(run: Run[None], server_with: ServerWith, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    srv = server_with(pki.server_tls(verify=False, handshake_first=True), tls_first=True)

    async def body() -> None:
        store = await connect(
            ConnectOptions(servers=[srv.url], tls_ca=str(pki.ca), tls_first=True, timeout=10)
        )
        try:
            await roundtrip(store, "tlsfirst")
        finally:
            await store.close()

    await run(body)


async def test_tls_failures_name_the_cause(
    run: Run[None], server_with: ServerWith, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other")
    localhost_only = make_pki(tmp_path / "named", server_names=("localhost",))
    srv = server_with(pki.server_tls(verify=False))
    named = server_with(localhost_only.server_tls(verify=False))

    async def body() -> None:
        message, _ = await refused(
            ConnectOptions(servers=[srv.url], tls_ca=str(other.ca), timeout=LONG)
        )
        assert "TLS handshake failed" in message and "certificate" in message, message
        message, _ = await refused(
            ConnectOptions(servers=[named.url], tls_ca=str(localhost_only.ca), timeout=LONG)
        )
        assert "TLS handshake failed" in message, message
        assert "mismatch" in message, message

    await run(body)


# -- nkeys and credentials ---------------------------------------------------------------------


async def test_nkey_seed_file(
    run: Run[None], server_with: ServerWith, tmp_path: Path, secrets: list[str]
) -> None:
    user = new_nkey()
    intruder = new_nkey()
    secrets += [user.seed.decode(), intruder.seed.decode()]
    srv = server_with(f'authorization {{ users: [ {{ nkey: "{user.public}" }} ] }}')
    seed = user.write(tmp_path / "user.nk")

    async def body() -> None:
        store = await connect(ConnectOptions(servers=[srv.url], nkey=str(seed), timeout=10))
        try:
            await roundtrip(store, "nkey")
        finally:
            await store.close()
        wrong = intruder.write(tmp_path / "intruder.nk")
        message, took = await refused(
            ConnectOptions(servers=[srv.url], nkey=str(wrong), timeout=LONG)
        )
        assert "authorization violation" in message and took < LONG, (message, took)

    await run(body)


async def test_credentials_file(
    run: Run[None], server_with: ServerWith, tmp_path: Path, secrets: list[str]
) -> None:
    """Decentralized auth: an operator, an account with JetStream, a user's creds file."""
    op = make_operator(tmp_path / "op")
    secrets.append(op.user.seed.decode())
    srv = server_with(op.config)

    async def body() -> None:
        store = await connect(ConnectOptions(servers=[srv.url], creds=str(op.creds), timeout=10))
        try:
            await roundtrip(store, "creds")
        finally:
            await store.close()
        # Seen by a client that is not objfs: nats-py with the same file.
        nc = await nats.connect(srv.url, user_credentials=str(op.creds))
        try:
            msg = await nc.request("$JS.API.STREAM.INFO.OBJ_creds", b"", timeout=10)
            assert b'"OBJ_creds"' in msg.data
        finally:
            await nc.close()
        message, took = await refused(ConnectOptions(servers=[srv.url], timeout=LONG))
        assert "authorization violation" in message and took < LONG, (message, took)

    await run(body)


# -- fail fast, in words -----------------------------------------------------------------------


async def test_wrong_credentials_fail_at_once(
    run: Run[None], server_with: ServerWith, secrets: list[str]
) -> None:
    secrets += ["t0ken-right", "t0ken-wrong", "pa55-right", "pa55-wrong"]
    tok = server_with('authorization { token: "t0ken-right" }')
    pw = server_with('authorization { user: "reader", password: "pa55-right" }')

    async def body() -> None:
        for options in (
            ConnectOptions(servers=[tok.url], token="t0ken-wrong", timeout=LONG),
            ConnectOptions(servers=[tok.url], timeout=LONG),
            ConnectOptions(servers=[pw.url], user="reader", password="pa55-wrong", timeout=LONG),
            ConnectOptions(
                servers=[f"nats://reader:pa55-wrong@{pw.host}:{pw.port}"], timeout=LONG
            ),
        ):
            message, took = await refused(options)
            assert "authorization violation" in message, message
            assert took < LONG, f"took {took:.1f}s: retried instead of failing at once"
            for secret in secrets:
                assert secret not in message, message
        store = await connect(ConnectOptions(servers=[tok.url], token="t0ken-right"))
        try:
            await roundtrip(store, "tok", 300 << 10)
        finally:
            await store.close()

    await run(body)


async def test_refused_ports_one_pass_then_fail(run: Run[None]) -> None:
    servers = [f"nats://127.0.0.1:{closed_port()}", f"nats://127.0.0.1:{closed_port()}"]

    async def body() -> None:
        message, took = await refused(ConnectOptions(servers=servers, timeout=LONG))
        assert "connection refused" in message, message
        assert took < LONG, f"took {took:.1f}s: not one pass over the servers"
        assert all(s in message for s in servers), message

    await run(body)


async def test_silent_server_fails_within_the_timeout(run: Run[None]) -> None:
    """A port that accepts but never greets: the connect ends at --timeout, not later."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"nats://127.0.0.1:{listener.getsockname()[1]}"
        timeout = 2.0

        async def body() -> None:
            message, took = await refused(ConnectOptions(servers=[url], timeout=timeout))
            assert url in message, message
            assert took < timeout + 30, took  # a hang guard only: the count below is the check

        await run(body)
        # One pass: the server was tried once (it was tried twice, 2 x timeout + 1, before).
        # Each attempt is a completed TCP handshake waiting in the listen backlog.
        listener.setblocking(False)
        attempts = []
        with contextlib.suppress(BlockingIOError):
            while True:
                attempts.append(listener.accept()[0])
        for conn in attempts:
            conn.close()
        assert len(attempts) == 1, f"{len(attempts)} connection attempts"


async def test_unknown_url_scheme(run: Run[None]) -> None:
    async def body() -> None:
        message, _ = await refused(ConnectOptions(servers=["http://127.0.0.1:4222"]))
        assert "unknown URL scheme 'http'" in message, message

    await run(body)


async def test_server_without_jetstream(run: Run[None], server_with: ServerWith) -> None:
    srv = server_with("", jetstream=False)

    async def body() -> None:
        store = await connect(ConnectOptions(servers=[srv.url], timeout=5))
        try:
            with pytest.raises(errors.Unavailable, match="JetStream is not enabled"):
                await store.list_buckets()
        finally:
            await store.close()

    await run(body)


# -- JetStream domain, API and inbox prefixes --------------------------------------------------


async def test_domain_and_inbox_prefix_on_both_connections(
    run: Run[None], server_with: ServerWith, tmp_path: Path
) -> None:
    """The user may only subscribe under its own inbox prefix (as accounts that share a
    server are set up), and JetStream lives in domain ``hub``: both connections must use
    both, or reads fail (nats-py) or leave the lean reader (bulk_in_use)."""
    store_dir = tmp_path / "js"
    srv = server_with(
        f'jetstream {{ store_dir: "{store_dir}", domain: "hub" }}\n'
        'authorization { users: [ { user: "app", password: "pw", permissions: {\n'
        '  publish: ">", subscribe: { allow: ["_APP.>", "$JS.EVENT.>"] } } } ] }'
    )
    options = ConnectOptions(
        servers=[srv.url], user="app", password="pw", js_domain="hub", inbox_prefix="_APP",
        timeout=10,
    )  # fmt: skip
    assert options.api_prefix == "$JS.hub.API"

    async def body() -> None:
        store = await connect(options)
        try:
            await roundtrip(store, "dom")
            assert store.reader._bulk is not None
            assert store.reader._bulk._prefix.startswith(b"_APP.")
        finally:
            await store.close()
        # The bucket is there, seen through the domain's API by nats-py itself.
        nc = await nats.connect(srv.url, user="app", password="pw", inbox_prefix="_APP")
        try:
            msg = await nc.request("$JS.hub.API.STREAM.INFO.OBJ_dom", b"", timeout=10)
            assert b'"OBJ_dom"' in msg.data
        finally:
            await nc.close()

    await run(body)


ERR_JS_NOT_ENABLED_FOR_ACCOUNT = 10039


async def no_plain_jetstream(app: nats.NATS, xa: ImportedJetStream) -> None:
    """For APP's user plain ``$JS.API`` reaches no JetStream (the server itself answers that
    the account has none, or nobody does); the imported prefix reaches account JS's."""
    try:
        msg = await app.request("$JS.API.INFO", b"", timeout=10)
    except nats.errors.NoRespondersError:
        pass
    else:
        err = json.loads(msg.data).get("error") or {}
        assert err.get("err_code") == ERR_JS_NOT_ENABLED_FOR_ACCOUNT, msg.data
    info = json.loads((await app.request(f"{xa.api_prefix}.INFO", b"", timeout=10)).data)
    assert "error" not in info and "limits" in info, info


async def next_within(events: AsyncIterator[Any], seconds: float = LONG) -> Any:
    return await asyncio.wait_for(events.__anext__(), seconds)


async def test_jetstream_imported_from_another_account(
    run: Run[None], server_with: ServerWith, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Account APP has no JetStream; it imports account JS's under ``JS.acc.API``, its
    advisories under ``JS.acc.EVENT`` and the deliveries to its push consumers under
    ``_INBOX_APP`` (``ImportedJetStream``). Through APP's user objfs creates a bucket, writes
    and reads back a small object (batch direct gets of the lean reader) and a large one (a
    push consumer delivering to the lean reader, flow control answered across the import),
    watches the bucket (its snapshot through the lean reader) and sees another client's
    write, and hears of new buckets from the advisories alone (the re-list is an hour off).
    Reads must stay on the lean reader: nats-py's read path is made to fail if used."""
    xa = ImportedJetStream()
    srv = server_with(xa.config)
    monkeypatch.setattr(nats_reads, "PUSH_MIN_BYTES", 4 << 20)  # the large read is a push read
    monkeypatch.setattr(nats_watch, "BULK_SNAPSHOT_MIN", 0)  # this small bucket's snapshot too
    monkeypatch.setattr(nats_watch, "BUCKET_RESYNC", 3600.0)  # only an advisory is in time
    options = ConnectOptions(
        servers=[srv.url], user=xa.app_user, password=xa.app_password,
        js_api_prefix=xa.api_prefix, js_event_prefix=xa.event_prefix,
        inbox_prefix=xa.inbox_prefix, timeout=10,
    )  # fmt: skip
    small, large = os.urandom(1000), os.urandom(9 << 20)
    other = f"{bucket_name}-js"[:64]

    async def body() -> None:
        app = await nats.connect(
            srv.url, user=xa.app_user, password=xa.app_password, inbox_prefix=xa.inbox_prefix
        )
        owner = await nats.connect(srv.url, user=xa.js_user, password=xa.js_password)
        plain_events: list[str] = []

        async def on_plain(msg: Any) -> None:
            plain_events.append(msg.subject)

        await app.subscribe(f"$JS.EVENT.{nats_watch.BUCKET_ADVISORIES}", cb=on_plain)
        await no_plain_jetstream(app, xa)
        store = await connect(options)
        buckets = store.watch_buckets()
        try:
            # The bucket list: empty, then a bucket objfs creates, heard of by its advisory.
            assert await next_within(buckets) == BucketEvent("snapshot_end")
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            assert await next_within(buckets) == BucketEvent("put", bucket_name)

            bulk = await store.reader.bulk_conn()
            assert bulk is not None, "no lean reader"

            async def no_nats_py() -> Any:
                raise AssertionError("a read went through nats-py, not the lean reader")

            store.reader._batch_getter = no_nats_py  # type: ignore[method-assign]
            requests: list[str] = []
            pushes: list[nats_bulk.PushRead] = []
            replies: list[bytes] = []
            plain_request, plain_push, plain_reply = bulk.request, bulk.push_read, bulk._reply

            def request(stream: str, *args: Any, **kw: Any) -> nats_bulk.Batch:
                requests.append(stream)
                return plain_request(stream, *args, **kw)

            def push_read(**kw: Any) -> nats_bulk.PushRead:
                pushes.append(plain_push(**kw))
                return pushes[-1]

            def reply(subject: bytes) -> None:
                replies.append(subject)
                plain_reply(subject)

            bulk.request = request  # type: ignore[method-assign]
            bulk.push_read = push_read  # type: ignore[method-assign]
            bulk._reply = reply  # type: ignore[method-assign]

            small_info = await store.put(bucket_name, "small", small)
            # The stream is there, in account JS: a direct get under the imported prefix
            # finds its first message; under plain $JS.API nobody answers APP's user.
            get = json.dumps({"seq": 1}).encode()
            stream = bucket_stream(bucket_name)
            msg = await app.request(f"{xa.api_prefix}.DIRECT.GET.{stream}", get, timeout=10)
            assert msg.data == small, msg
            with pytest.raises(nats.errors.NoRespondersError):
                await app.request(f"$JS.API.DIRECT.GET.{stream}", get, timeout=10)
            layout = await store.layout(small_info)
            assert b"".join(await store.read_chunks(layout, 0, layout.chunks)) == small
            assert await read_all(store, small_info) == small
            assert requests and not pushes, (requests, pushes)

            large_info = await store.put(bucket_name, "large", large)
            requests.clear()
            assert await read_all(store, large_info) == large
            # One push read on the same connection: none of it by batches, none on a new
            # lean connection after this one failed.
            assert store.reader._bulk is bulk and bulk.is_open, "the lean connection failed"
            assert len(pushes) == 1 and not requests, "the large read left the push consumer"
            # The server asked for flow control (its window is smaller than the object) and
            # went on: the answers crossed to account JS.
            assert any(r.startswith(b"$JS.FC.") for r in replies), replies

            # The bucket's watch: the snapshot through the lean reader, then a write by a
            # client of account JS (nats-py's object store, plain $JS.API there).
            snapshots: list[int | None] = []
            bulk_snapshot = store.watcher.bulk_snapshot

            async def recorded(*args: Any) -> int | None:
                snapshots.append(await bulk_snapshot(*args))
                return snapshots[-1]

            store.watcher.bulk_snapshot = recorded  # type: ignore[method-assign]
            events = store.watch(bucket_name)
            try:
                seen: dict[str, WatchEvent] = {}
                while (e := await next_within(events)).kind != "snapshot_end":
                    assert e.info is not None
                    seen[e.info.name] = e
                assert sorted(seen) == ["large", "small"], seen
                assert snapshots and snapshots[0] is not None, "no lean snapshot"
                obs = await owner.jetstream().object_store(bucket_name)
                await obs.put("from-js", b"written in account JS")
                e = await next_within(events)
                assert e.kind == "put" and e.info is not None and e.info.name == "from-js", e
            finally:
                await events.aclose()

            # What objfs wrote is account JS's, byte for byte.
            assert bytes((await obs.get("large")).data) == large
            # A bucket another client creates in account JS: heard of by its advisory too.
            await owner.jetstream().create_object_store(other)
            assert await next_within(buckets) == BucketEvent("put", other)
            await store.delete_bucket(other)
            assert await next_within(buckets) == BucketEvent("delete", other)
            await store.delete_bucket(bucket_name)
            msg = await owner.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=10)
            assert json.loads(msg.data)["error"]["code"] == 404, msg.data
        finally:
            await buckets.aclose()
            await store.close()
            await owner.close()
            await app.close()
        assert not plain_events, plain_events  # APP hears of streams on the prefix only

    await run(body)


async def test_url_credentials_are_not_in_messages(run: Run[None], secrets: list[str]) -> None:
    secrets.append("hunter2-secret")
    url = f"nats://admin:hunter2-secret@127.0.0.1:{closed_port()}"

    async def body() -> None:
        message, _ = await refused(ConnectOptions(servers=[url], timeout=LONG))
        assert "hunter2-secret" not in message and "connection refused" in message, message
        assert "hunter2-secret" not in repr(ConnectOptions(servers=[url], password="x"))

    await run(body)



async def test_an_auth_error_stays_the_cause(run: Run[None]) -> None:
    """nats-py may report the reset of the connection the server closed after refusing us,
    before the connect is stopped: the message must still say why (seen in a loaded run)."""

    async def body() -> None:
        events = ConnectionEvents(first_pass=3)
        await events.error(nats.errors.Error("nats: 'Authorization Violation'"))
        assert events.gave_up.is_set()
        await events.error(ConnectionResetError(104, "Connection reset by peer"))
        assert events.refused is not None and "Authorization" in str(events.refused)
        assert describe(events.refused).startswith("authorization violation")

    await run(body)


def test_a_tls_refusal_seen_as_a_broken_pipe_names_the_client_certificate() -> None:
    """With TLS 1.3 a server's refusal of a missing client certificate reaches the client as
    the alert or, if it wrote its CONNECT first, as a broken pipe (seen in CI): both must
    name the missing certificate, and a broken pipe anywhere else must not."""
    tls = ConnectOptions(servers=["nats://127.0.0.1:4222"], tls_ca="ca.pem")
    plain = ConnectOptions(servers=["nats://127.0.0.1:4222"])
    with_cert = ConnectOptions(
        servers=["tls://127.0.0.1:4222"], tls_cert="c.pem", tls_key="k.pem"
    )  # fmt: skip
    pipe = BrokenPipeError(32, "Broken pipe")
    assert closed_after_tls(pipe, tls) and "--tls-cert" in CLOSED_AFTER_TLS
    assert closed_after_tls(ConnectionResetError(104, "reset"), tls)
    assert closed_after_tls(pipe, ConnectOptions(servers=["tls://127.0.0.1:4222"]))
    assert not closed_after_tls(pipe, plain)
    assert not closed_after_tls(pipe, with_cert)
    assert not closed_after_tls(ConnectionRefusedError(111, "refused"), tls)
