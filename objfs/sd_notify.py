"""systemd's notification protocol: READY=1, STATUS=, STOPPING=1 and the watchdog.

Under ``Type=notify`` systemd starts the units that depend on a mount only once it says
READY=1, and shows its STATUS= line in ``systemctl status``. The protocol is one datagram of
``KEY=VALUE`` lines sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
names Linux's abstract namespace); written here in a few lines instead of depending on
libsystemd's Python bindings, which need a C build and add nothing to a datagram.

``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are taken out of the environment
when read (as ``sd_notify(unset_environment=1)`` does), so the embedded nats-server and other
children cannot notify on objfs's behalf. Sending never raises: a service manager that went
away must not take the mount with it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

import trio

log = logging.getLogger(__name__)


class Notifier:
    """Notifications to the service manager; does nothing when not started by one."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval: float | None = None
        """Seconds between watchdog pings (half of WATCHDOG_USEC), or None for no watchdog."""
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        """One datagram of ``KEY=VALUE`` lines; a failure is logged, never raised."""
        if not self._address:
            return
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self._address)
                s.sendall(message)
        except OSError as e:
            log.debug("systemd notification %r not sent: %s", message, e)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(self) -> None:
        """Ping the watchdog for as long as the trio loop runs (run it in the mount's nursery).

        A loop that stops answering (a hang) stops the pings, and systemd restarts the unit.
        """
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
