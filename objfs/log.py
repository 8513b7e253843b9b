"""Logging setup for the objfs command: one concise format, chosen once at start-up.

Foreground runs log to stderr with a timestamp, so a terminal or a test harness reading the
child's stderr sees what happened. Under systemd (``JOURNAL_STREAM`` names stderr's device and
inode: stderr is the journal, which stamps time and pid itself) the line carries a syslog
priority prefix instead, so ``journalctl -p warning`` works; a child that inherited the
variable with another stderr is not fooled by it. A daemonized mount has no terminal: it logs
to a file under the data directory, with full dates and the process id, since that file
outlives many mounts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FOREGROUND_FORMAT = "%(asctime)s.%(msecs)03d %(levelname).1s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(priority)s%(levelname)s %(name)s: %(message)s"

# sd-daemon(3) prefixes: journald reads "<N>" at the start of a line as its priority.
_PRIORITY = {
    logging.DEBUG: "<7>",
    logging.INFO: "<6>",
    logging.WARNING: "<4>",
    logging.ERROR: "<3>",
    logging.CRITICAL: "<2>",
}


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd set up (``JOURNAL_STREAM=dev:ino``)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(2)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def console(message: str, level: int = logging.INFO) -> None:
    """One ``objfs: ...`` line on stderr for whoever started objfs (a person, mount(8),
    systemd), with journald's priority prefix when stderr is the journal, so that a fatal
    error is seen by ``journalctl -p err``."""
    prefix = _PRIORITY.get(level, "<6>") if stderr_is_journal() else ""
    print(f"{prefix}objfs: {message}", file=sys.stderr, flush=True)


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.priority = _PRIORITY.get(record.levelno, "<6>")
        return super().format(record)


# Libraries whose INFO lines are noise for a user (pyfuse3 logs each init step at DEBUG only,
# but nats-py's reconnect chatter and trio's internals would drown objfs's own messages).
_QUIET = ("nats", "asyncio", "trio")


def level_for(verbose: int, debug: bool) -> int:
    """WARNING by default, INFO with -v, DEBUG with -vv or --debug."""
    if debug or verbose >= 2:
        return logging.DEBUG
    if verbose == 1:
        return logging.INFO
    return logging.WARNING


def setup(level: int, log_file: Path | None = None) -> None:
    """Install the one handler objfs uses (stderr, or ``log_file`` when daemonized)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
        if stderr_is_journal():
            handler.setFormatter(_JournalFormatter(JOURNAL_FORMAT))
        else:
            handler.setFormatter(logging.Formatter(FOREGROUND_FORMAT, DATE_FORMAT))
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Library debug output only when the user asked for all of it.
    lib_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in _QUIET:
        logging.getLogger(name).setLevel(lib_level)
