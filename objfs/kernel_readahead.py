"""The kernel's readahead for the mount: raise the FUSE device's ``read_ahead_kb`` to 1 MiB.

Why: the kernel gives a new FUSE mount the default 128 KiB readahead (libfuse's
``max_readahead`` can only lower it), so a sequential reader's data arrives in 128-256 KiB
requests however large its reads are, each a round trip through /dev/fuse and a request
handler. With 1 MiB the kernel asks in up to 1 MiB requests (libfuse negotiates
``max_pages`` 256), which measured about a fifth less daemon CPU per byte on a cold read
(BENCHMARKS.md). The setting lives in sysfs (``/sys/class/bdi/MAJOR:MINOR``) and only root
may write it: for anyone else the mount keeps the kernel's default, which is only slower.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
BDI = Path("/sys/class/bdi")


def raise_readahead(dev: int, kib: int = READ_AHEAD_KB, root: Path = BDI) -> bool:
    """Raise the readahead of the mount on device ``dev`` to ``kib``; whether it is now."""
    path = root / f"{os.major(dev)}:{os.minor(dev)}" / "read_ahead_kb"
    try:
        if int(path.read_text().strip() or 0) >= kib:
            return True
        path.write_text(f"{kib}\n")
        return True
    except (OSError, ValueError) as e:
        log.debug("kernel readahead of the mount stays at its default (%s: %s)", path, e)
        return False
