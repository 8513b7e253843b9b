"""Large files through a real mount: written with early publishing (chunks sent while the file
is written), read back with the growing readahead and the streaming read, by the mount after a
remount and by nats-py; a read with seeks gets the same bytes; the kernel's readahead for the
mount is raised where the process may (root)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from helpers import data, sh
from mounting import Mount
from test_nats_client import adr20_digest, with_store

SIZE = 24 * 1024 * 1024 + 5
"""Over both thresholds: early publishing (4 MiB) and the streaming read (16 MiB)."""


def test_large_file_written_and_read_sequentially_and_with_seeks(
    mount: Mount, tmp_path: Path
) -> None:
    content = data(SIZE, seed=12)
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    big = mount.mountpoint / "big.bin"
    sh("dd", f"if={src}", f"of={big}", "bs=1M", "conv=fsync", "status=none")

    async def get(store: Any) -> tuple[int, str, str]:
        result = await store.get("big.bin")
        return len(result.data), hashlib.sha256(result.data).hexdigest(), result.info.digest

    size, sha, digest = with_store(mount.server_url, str(mount.bucket), get)
    assert (size, sha, digest) == (SIZE, hashlib.sha256(content).hexdigest(), adr20_digest(content))
    mount.remount()  # the reads below come from the store, not from this mount's spool or pages
    out = tmp_path / "out.bin"
    sh("dd", f"if={big}", f"of={out}", "bs=1M", "status=none")
    assert out.read_bytes() == content
    mount.remount()
    fd = os.open(big, os.O_RDONLY)
    try:
        got = [os.pread(fd, 1 << 20, 0), os.pread(fd, 1 << 20, 1 << 20)]  # sequential start
        got.append(os.pread(fd, 4096, 20 * (1 << 20) + 7))  # a seek far ahead
        got.append(os.pread(fd, 4096, 3 * (1 << 20) + 1))  # and back
    finally:
        os.close(fd)
    want = [content[0 : 1 << 20], content[1 << 20 : 2 << 20]]
    want += [content[20 * (1 << 20) + 7 :][:4096], content[3 * (1 << 20) + 1 :][:4096]]
    assert got == want
    if os.geteuid() == 0:
        st = os.stat(mount.mountpoint)
        knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
        assert knob.read_text().strip() == "1024"
