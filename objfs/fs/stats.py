"""What a mount has done, counted where it happens: read by ``objfs status`` and the metrics.

One ``Stats`` per filesystem, handed to the components that own the numbers (the chunk cache
counts hits and misses, ``files`` registers each upload, the bucket watch each live event, the
FUSE adapter each request); ``objfs.status`` and ``objfs.metrics`` only read it. It holds
plain counters and no locks: they are changed on the trio thread, except an upload's ``done``
(advanced by the store's put on the asyncio thread as it reads the spool file) and read from
the status task or the metrics server's thread; single int and float stores are atomic in
CPython and a reader taking a copy of a dict (``dict(...)``, ``list(...)``) cannot see it
half-changed, which is all a report needs.

Upload progress is the position of the store's put in the spool file: ``Progress`` wraps the
file it reads and counts the bytes, so it moves as the chunks go out, at no cost to the put.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, cast

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
"""Upper bounds (seconds) of the request latency histogram (Prometheus ``le`` buckets)."""

log = logging.getLogger("objfs.fs.upload")

RECENT_ERRORS = 20
"""Warnings and errors kept for ``objfs status`` (the newest)."""


@dataclass(slots=True)
class Upload:
    """One upload in flight: ``done`` of ``size`` bytes handed to the store so far."""

    path: str
    size: int
    started: float = field(default_factory=time.time)
    done: int = 0

    def rate(self, now: float | None = None) -> float:
        """Bytes per second since it started."""
        elapsed = (now or time.time()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


class Progress:
    """A spool file as a put reads it, counting the bytes into ``upload.done``.

    Only ``read`` is used by the store (``api.pieces``); everything else is the file's.
    """

    def __init__(self, file: BinaryIO, upload: Upload) -> None:
        self._file = file
        self._upload = upload

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self._upload.done += len(data)
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)

    def as_file(self) -> BinaryIO:
        # A put reads its source with read() only (api.pieces), which this provides.
        return cast(BinaryIO, self)


@dataclass(slots=True)
class OpStats:
    """Requests of one FUSE operation: count, failures, latency (sum and histogram)."""

    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def copy(self) -> OpStats:
        return OpStats(self.count, self.errors, self.seconds, list(self.buckets))


class Stats:
    """The counters of one mount (see the module docstring)."""

    def __init__(self) -> None:
        self.started = time.time()
        # chunk cache (ChunkCache): chunks served from memory or fetched
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_bytes: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """(bytes held, capacity): set by the cache."""
        # data through the mount (the FUSE adapter)
        self.bytes_read = 0
        self.bytes_written = 0
        self.ops: dict[str, OpStats] = {}
        # uploads (Files.upload)
        self.uploading: dict[int, Upload] = {}
        self.uploads_done = 0
        self.uploads_failed = 0
        self.bytes_uploaded = 0
        self.pending: Callable[[], list[tuple[str, int]]] = list
        """Files with changes not yet uploaded (path, size): set by the filesystem."""
        self.on_upload: Callable[[], None] = lambda: None
        """Called when an upload starts or ends (the systemd STATUS= line follows it)."""
        # the bucket watches (BucketWatch.follow): live changes applied, their delay
        self.watch_events = 0
        self.watch_lag = 0.0
        """Seconds between the last live change's store time and its arrival here."""
        self.recent_errors: collections.deque[str] = collections.deque(maxlen=RECENT_ERRORS)
        self._ids = itertools.count()

    # -- recording ----------------------------------------------------------------------------
    def op(self, name: str, seconds: float, failed: bool) -> None:
        op = self.ops.get(name)
        if op is None:
            op = self.ops[name] = OpStats()
        op.count += 1
        op.errors += failed
        op.seconds += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                op.buckets[i] += 1
                break

    @contextmanager
    def upload(self, path: str, size: int) -> Iterator[Upload]:
        """Register an upload for its duration; counted done unless it raises."""
        key = next(self._ids)
        upload = self.uploading[key] = Upload(path, size)
        log.info("uploading %s (%s)", path, size_text(size))
        self.on_upload()
        try:
            yield upload
        except BaseException:
            self.uploads_failed += 1
            raise
        else:
            self.uploads_done += 1
            self.bytes_uploaded += upload.done
            elapsed = time.time() - upload.started
            log.info(
                "uploaded %s: %s in %.2fs (%s/s)",
                path,
                size_text(upload.done),
                elapsed,
                size_text(int(upload.rate())),
            )
        finally:
            del self.uploading[key]
            self.on_upload()

    def watched(self, mtime_ns: int) -> None:
        """A live change stamped ``mtime_ns`` by its writer was applied."""
        self.watch_events += 1
        if mtime_ns > 0:
            self.watch_lag = max(0.0, time.time() - mtime_ns / 1e9)

    # -- reading ------------------------------------------------------------------------------
    def uploads(self) -> list[Upload]:
        return list(self.uploading.values())

    def status_line(self) -> str:
        """The systemd STATUS= text: what is waiting to be uploaded."""
        waiting = {path: size for path, size in self.pending()}
        for u in self.uploads():
            waiting[u.path] = u.size
        if not waiting:
            return "idle, nothing to upload"
        total = sum(waiting.values())
        n = len(waiting)
        return f"{n} upload{'s' if n != 1 else ''} pending, {size_text(total)}"


class RecentErrors(logging.Handler):
    """Keeps the newest warnings and errors of the mount's log in ``Stats.recent_errors``."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(logging.WARNING)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            message = (record.getMessage().splitlines() or [""])[0]
            self.stats.recent_errors.append(f"{stamp} {record.levelname.lower()}: {message}")
        except Exception:
            self.handleError(record)


def size_text(n: float) -> str:
    """``n`` bytes for people: 512 B, 3.2 KiB, 41 MiB, 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
