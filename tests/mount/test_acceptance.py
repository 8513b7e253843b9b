"""Acceptance: everyday user flows on a real mount, checked through a second mount.

Each test runs a tool the way a user would (rsync's default temp-file-and-rename, git commit
and gc, cp -r and tar of many small files, dd into the middle of and past the end of a file,
sed -i) and then reads the result through another mount of the same bucket, so the answer
comes from the store, not from the writer's own cache.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import data, eventually, sh
from mounting import MountFactory


def need_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed")


def test_rsync_default_mode_replaces_changed_file(mounts: MountFactory, tmp_path: Path) -> None:
    """rsync without --inplace writes .name.XXXXXX, then renames it over the old file."""
    need_tool("rsync")
    a, b = mounts(), mounts()
    src = tmp_path / "src.bin"
    body = bytearray(data(3 * 128 * 1024 + 7, 1))
    src.write_bytes(body)
    os.chmod(src, 0o640)
    sh("rsync", "-a", src, a.mountpoint / "f.bin")
    body[200_000:200_010] = b"X" * 10
    src.write_bytes(body)
    os.chmod(src, 0o640)
    sh("rsync", "-a", "-c", "--no-whole-file", src, a.mountpoint / "f.bin")
    assert [p.name for p in a.mountpoint.iterdir()] == ["f.bin"]  # no temp file left

    def same() -> None:
        assert (b.mountpoint / "f.bin").read_bytes() == bytes(body)
        assert stat.S_IMODE(os.stat(b.mountpoint / "f.bin").st_mode) == 0o640

    eventually(same, "f.bin in the other mount")


def test_git_commit_and_gc_inside_the_mount(mounts: MountFactory, tmp_path: Path) -> None:
    need_tool("git")
    a, b = mounts(), mounts()
    origin = tmp_path / "origin"
    git = ["git", "-c", "user.email=qa@example.com", "-c", "user.name=qa"]
    sh("git", "init", "-q", origin)
    for i in range(5):
        (origin / f"file{i % 2}.txt").write_text(f"line {i}\n" * (i + 1))
        sh(*git, "-C", origin, "add", "-A")
        sh(*git, "-C", origin, "commit", "-qm", f"c{i}")
    work = a.mountpoint / "clone"
    sh("git", "clone", "-q", origin, work)
    (work / "file0.txt").write_text("changed in the mount\n")
    sh(*git, "-C", work, "commit", "-qam", "in mount")
    sh(*git, "-C", work, "gc", "-q")
    sh("git", "-C", work, "fsck", "--strict")
    assert sh("git", "-C", work, "status", "--porcelain") == ""
    other = b.mountpoint / "clone"
    safe = ["git", "-c", "safe.directory=*", "-C", other]

    def seen() -> None:
        r = subprocess.run(
            [*map(str, safe), "log", "-1", "--format=%s"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.stdout.strip() == "in mount", r.stderr

    eventually(seen, "the commit in the other mount")
    sh(*safe, "fsck", "--strict")
    assert (other / "file0.txt").read_text() == "changed in the mount\n"


def test_many_small_files_cp_r_and_tar(mounts: MountFactory, tmp_path: Path) -> None:
    need_tool("tar")
    a, b = mounts(), mounts()
    src = tmp_path / "tree"
    for i in range(300):
        d = src / f"d{i % 10}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(data(i * 13 % 3000, i))
        os.utime(d / f"f{i}", (1_500_000_000 + i, 1_500_000_000 + i))
    sh("cp", "-r", src, a.mountpoint / "cpr")
    (a.mountpoint / "tarx").mkdir()
    tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE)
    untar = subprocess.run(
        ["tar", "-C", str(a.mountpoint / "tarx"), "-xf", "-"],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tar.wait() == 0 and untar.returncode == 0, untar.stderr

    def same() -> None:
        for name in ("cpr", "tarx"):
            r = subprocess.run(
                ["diff", "-r", str(src), str(b.mountpoint / name)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.returncode == 0, r.stdout + r.stderr

    eventually(same, "both trees in the other mount")
    st = os.stat(b.mountpoint / "tarx/d7/e1/f37")
    assert int(st.st_mtime) == 1_500_000_037


def test_dd_seek_into_middle_and_past_eof(mounts: MountFactory, tmp_path: Path) -> None:
    a, b = mounts(), mounts()
    ref = bytearray(data(1_000_003, 2))
    (a.mountpoint / "f").write_bytes(ref)
    patch = tmp_path / "patch"
    patch.write_bytes(data(3000, 3))
    sh(
        "dd",
        f"if={patch}",
        f"of={a.mountpoint / 'f'}",
        "bs=1000",
        "seek=500",
        "conv=notrunc",
        "status=none",
    )
    ref[500_000:503_000] = patch.read_bytes()
    sh("dd", f"if={patch}", f"of={a.mountpoint / 'sparse'}", "bs=1M", "seek=3", "status=none")
    sparse = bytes(3 * 1024 * 1024) + patch.read_bytes()
    assert (a.mountpoint / "f").read_bytes() == bytes(ref)
    assert (a.mountpoint / "sparse").read_bytes() == sparse

    def same() -> None:
        assert (b.mountpoint / "f").read_bytes() == bytes(ref)
        assert (b.mountpoint / "sparse").read_bytes() == sparse

    eventually(same, "f and sparse in the other mount")


def test_sed_i_and_append_keep_mode(mounts: MountFactory) -> None:
    a, b = mounts(), mounts()
    f = a.mountpoint / "conf.txt"
    f.write_text("alpha\nbeta\ngamma\n")
    os.chmod(f, 0o640)
    sh("sed", "-i", "s/beta/BETA/", f)
    with open(f, "a") as out:
        out.write("delta\n")

    def same() -> None:
        g = b.mountpoint / "conf.txt"
        assert g.read_text() == "alpha\nBETA\ngamma\ndelta\n"
        assert stat.S_IMODE(os.stat(g).st_mode) == 0o640
        assert sorted(p.name for p in b.mountpoint.iterdir()) == ["conf.txt"]

    eventually(same, "conf.txt in the other mount")
