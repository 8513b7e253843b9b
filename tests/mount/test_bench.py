"""``scripts/bench --mount --quick`` runs end to end: every row measured (on tiny sizes), the
JSON written with the figures and ratios. Only that it works: no figure is judged here (speed
lives in BENCHMARKS.md, measured by hand, never in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mounting import REPO
from realenv import fuse_available, need


def test_bench_mount_quick_measures_every_row(tmp_path: Path) -> None:
    need(fuse_available(), "FUSE is not available (/dev/fuse and fusermount3)")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "benchmarks.bench", "--mount", "--quick", "--repeat", "1"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    want = {"m_write", "m_put", "m_cold", "m_raw", "m_warm", "tmpfs_read", "m_cp_in"}
    want |= {"natspy_small_put", "m_cp_out", "m_tar", "m_rand", "direct_get", "m_ls_cold"}
    want |= {"m_write_tls", "m_cold_tls", "m_raw_tls", "m_ls_warm", "natspy_list", "tmpfs_ls"}
    assert want <= set(data["results"]), sorted(want - set(data["results"]))
    assert all(r["seconds"] > 0 and r["bytes"] > 0 for r in data["results"].values())
    assert {"m_rss_copy", "m_rss_streams", "change_latency", "scale"} <= set(data["figures"])
    assert {r["target"] for r in data["ratios"]} >= {"cold read / raw read ceiling"}
    assert not data["skipped"], data["skipped"]
