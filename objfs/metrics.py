"""Prometheus metrics of a mount (``--metrics-addr``), with prometheus-client.

A custom collector turns the same numbers ``objfs status`` shows (``objfs.status.collect``
and the filesystem's ``Stats``) into metric families at each scrape: nothing is counted
twice and the components keep only their plain counters. prometheus-client serves HTTP on
its own thread, while the numbers belong to the trio thread (the inode table among them),
so a scrape asks the trio thread for a snapshot (``trio.from_thread``) and formats it on its
own thread.

The address defaults to loopback: ``--metrics-addr 9150`` listens on 127.0.0.1:9150; any
other interface only when named (``0.0.0.0:9150``): the endpoint has no authentication,
and whoever reaches it learns how busy the mount is and how often it fails.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from objfs.fs.stats import LATENCY_BUCKETS, OpStats

log = logging.getLogger(__name__)

Snapshot = tuple[dict[str, Any], dict[str, OpStats]]
"""The status document and a copy of the per-operation request counts."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``PORT`` (loopback), ``HOST:PORT`` or ``[IPV6]:PORT``; ValueError with the reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not HOST:PORT or PORT: {text!r}")
    if not host:
        raise ValueError(f"no host in {text!r} (use 127.0.0.1:PORT, or just PORT)")
    with_port = Address(host, int(port_text))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"not an IP address: {host!r}") from None
    return with_port


class MountCollector(Collector):
    """The mount's numbers as metric families, from one snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        status, ops = self.snapshot()
        yield from _requests(ops)
        io = status["io"]
        yield _counter("objfs_read_bytes", "Bytes read through the mount", io["bytes_read"])
        yield _counter(
            "objfs_written_bytes", "Bytes written through the mount", io["bytes_written"]
        )
        cache = status["cache"]
        yield _counter("objfs_cache_hits", "Chunk reads served by the cache", cache["hits"])
        yield _counter("objfs_cache_misses", "Chunks fetched from the store", cache["misses"])
        yield _gauge("objfs_cache_bytes", "Bytes held by the chunk cache", cache["used"])
        yield _gauge("objfs_cache_capacity_bytes", "Chunk cache capacity", cache["capacity"])
        up = status["uploads"]
        yield _gauge(
            "objfs_uploads_pending",
            "Files with changes not uploaded yet (open, or waiting for a retry)",
            len(up["pending"]) + len(up["retrying"]),
        )
        yield _gauge(
            "objfs_uploads_retrying", "Closed files whose upload failed, to retry",
            len(up["retrying"]),
        )
        yield _gauge("objfs_uploads_in_flight", "Uploads running", len(up["in_flight"]))
        yield _gauge(
            "objfs_upload_bytes_in_flight",
            "Bytes of the running uploads handed to the store so far",
            sum(u["done"] for u in up["in_flight"]),
        )
        yield _counter("objfs_uploads", "Uploads completed", up["done"])
        yield _counter("objfs_upload_failures", "Uploads that failed", up["failed"])
        yield _counter("objfs_uploaded_bytes", "Bytes of completed uploads", up["bytes"])
        watch = status["watch"]
        yield _counter("objfs_watch_events", "Live store changes applied", watch["events"])
        yield _gauge(
            "objfs_watch_lag_seconds",
            "Delay between the last live change's store time and its arrival",
            watch["lag"],
        )
        server = status["server"]
        yield _counter(
            "objfs_reconnects", "Reconnections to the NATS server", server.get("reconnects", 0)
        )
        yield _gauge(
            "objfs_connected", "1 while connected to the NATS server", bool(server.get("connected"))
        )
        yield _gauge("objfs_start_time_seconds", "When the mount started", status["started"])


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _requests(ops: dict[str, OpStats]) -> Iterator[Metric]:
    count = CounterMetricFamily("objfs_requests", "FUSE requests", labels=["op"])
    errors = CounterMetricFamily(
        "objfs_request_errors", "FUSE requests answered with an error", labels=["op"]
    )
    latency = HistogramMetricFamily(
        "objfs_request_duration_seconds", "FUSE request latency", labels=["op"]
    )
    for op, s in sorted(ops.items()):
        count.add_metric([op], s.count)
        errors.add_metric([op], s.errors)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(LATENCY_BUCKETS, s.buckets, strict=True):
            cumulative += n
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", s.count))
        latency.add_metric([op], buckets, s.seconds)
    yield from (count, errors, latency)


class MetricsServer:
    """prometheus-client's HTTP server on its thread, for the mount's lifetime."""

    def __init__(self, address: Address, snapshot: Callable[[], Snapshot]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MountCollector(snapshot))
        self.server, self.thread = start_http_server(
            address.port, address.host, registry=registry
        )
        log.info("metrics at http://%s/metrics", address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
