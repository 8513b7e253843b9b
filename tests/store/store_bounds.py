"""Time bounds for the store's failure tests, derived from the store's own ``timeout``.

A failure test checks that a read ends with the right error instead of hanging. What bounds
it is objfs's ``timeout`` (each wait for the server is cut there), not the machine's speed, so
each test states how many such waits may come one after another, plus ``LOADED_SLACK`` for a
loaded machine's scheduling. A hang (a wait without a timeout) runs to pytest's limit instead
(300 s), far beyond either.

``HANG_TIMEOUT`` is the store timeout for tests whose error must come *without* waiting for
the timeout at all (a missing chunk is Corrupt at once): long, so that ending before it
proves no request waited it out, on any machine.
"""

from __future__ import annotations

import time

HANG_TIMEOUT = 60.0
LOADED_SLACK = 10.0


def assert_within(started: float, timeout: float, waits: int) -> None:
    """At most ``waits`` waits of ``timeout`` in series since ``started`` (time.monotonic)."""
    elapsed = time.monotonic() - started
    limit = waits * timeout + LOADED_SLACK
    assert elapsed < limit, f"took {elapsed:.1f}s: more than {waits} wait(s) of {timeout}s"


def assert_no_timeout_waited(started: float) -> None:
    """No request since ``started`` waited for ``HANG_TIMEOUT``."""
    elapsed = time.monotonic() - started
    assert elapsed < HANG_TIMEOUT, f"took {elapsed:.1f}s: a request waited for its timeout"
