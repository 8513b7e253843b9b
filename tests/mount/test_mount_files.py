"""Ordinary file operations on a real mount: bytes, attributes, directories, partial writes.

Each test works in a fresh bucket mounted at ``mount.mountpoint``. Content is compared with
``cmp`` or hashes, errors by errno; where persistence matters, the test remounts the bucket so
the answer comes from the store, not from the mount's memory or the kernel's page cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path

import pytest
from helpers import CHUNK, data, sh
from mounting import Mount, MountFactory

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 10 * 1024 * 1024 + 3]


def test_cp_then_cmp_sizes(mount: Mount, tmp_path: Path) -> None:
    mnt = mount.mountpoint
    src = tmp_path / "src"
    src.mkdir()
    for size in SIZES:
        (src / f"f{size}").write_bytes(data(size, seed=size))
        sh("cp", src / f"f{size}", mnt / f"f{size}")
        sh("cmp", src / f"f{size}", mnt / f"f{size}")
        assert os.stat(mnt / f"f{size}").st_size == size
    mount.remount()
    for size in SIZES:
        assert os.stat(mnt / f"f{size}").st_size == size
        sh("cmp", src / f"f{size}", mnt / f"f{size}")


def test_ls_l_and_stat(mount: Mount) -> None:
    mnt = mount.mountpoint
    f = mnt / "file.txt"
    f.write_bytes(b"hello world\n")
    os.chmod(f, 0o640)
    (mnt / "dir").mkdir()
    when = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds
    os.utime(f, ns=(when, when))

    listing = sh("ls", "-l", mnt)
    lines = {line.split()[-1]: line.split() for line in listing.splitlines()[1:]}
    assert set(lines) == {"file.txt", "dir"}
    assert lines["file.txt"][0].startswith("-rw-r-----")
    assert lines["file.txt"][4] == "12"
    assert lines["dir"][0].startswith("d")

    for remount in (False, True):  # as written, then as stored
        if remount:
            mount.remount()
        st = os.stat(f)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_uid == os.getuid()
        assert st.st_gid == os.getgid()
        assert st.st_size == 12
        assert st.st_mtime_ns // 1_000_000_000 == when // 1_000_000_000
        assert stat.S_ISDIR(os.stat(mnt / "dir").st_mode)


def test_new_file_mtime_is_now(mount: Mount) -> None:
    before = time.time()
    (mount.mountpoint / "new").write_bytes(b"x")
    mtime = os.stat(mount.mountpoint / "new").st_mtime
    assert before - 2 <= mtime <= time.time() + 2


def test_mv_files_and_directories(mount: Mount) -> None:
    mnt = mount.mountpoint
    sh("mkdir", "-p", mnt / "d/sub/deeper")
    (mnt / "d/a").write_bytes(data(1000, 1))
    (mnt / "d/sub/b").write_bytes(data(CHUNK + 5, 2))
    (mnt / "d/sub/deeper/c").write_bytes(b"c")
    sh("mv", mnt / "d", mnt / "e")
    assert not (mnt / "d").exists()
    sh("mv", mnt / "e/a", mnt / "e/sub/a2")
    for remount in (False, True):
        if remount:
            mount.remount()
        assert sorted(os.listdir(mnt)) == ["e"]
        assert sorted(os.listdir(mnt / "e")) == ["sub"]
        assert sorted(os.listdir(mnt / "e/sub")) == ["a2", "b", "deeper"]
        assert (mnt / "e/sub/a2").read_bytes() == data(1000, 1)
        assert (mnt / "e/sub/b").read_bytes() == data(CHUNK + 5, 2)
        assert (mnt / "e/sub/deeper/c").read_bytes() == b"c"


def test_mv_replaces_existing_file(mount: Mount) -> None:
    mnt = mount.mountpoint
    (mnt / "a").write_bytes(b"new")
    (mnt / "b").write_bytes(b"old content")
    os.rename(mnt / "a", mnt / "b")
    assert sorted(os.listdir(mnt)) == ["b"]
    assert (mnt / "b").read_bytes() == b"new"


def test_rm_r_and_mkdir_p(mount: Mount) -> None:
    mnt = mount.mountpoint
    sh("mkdir", "-p", mnt / "x/y/z")
    assert stat.S_ISDIR(os.stat(mnt / "x/y/z").st_mode)
    (mnt / "x/y/f").write_bytes(b"1")
    (mnt / "x/y/z/g").write_bytes(b"2")
    (mnt / "keep").write_bytes(b"3")
    mount.remount()  # empty and non-empty directories persist
    assert stat.S_ISDIR(os.stat(mnt / "x/y/z").st_mode)
    sh("rm", "-r", mnt / "x")
    assert sorted(os.listdir(mnt)) == ["keep"]
    mount.remount()
    assert sorted(os.listdir(mnt)) == ["keep"]


def test_empty_directory_persists(mount: Mount) -> None:
    (mount.mountpoint / "empty").mkdir()
    mount.remount()
    assert os.listdir(mount.mountpoint / "empty") == []
    os.rmdir(mount.mountpoint / "empty")
    assert os.listdir(mount.mountpoint) == []


def test_rmdir_non_empty_is_enotempty(mount: Mount) -> None:
    mnt = mount.mountpoint
    (mnt / "d").mkdir()
    (mnt / "d/f").write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "d")
    assert e.value.errno == errno.ENOTEMPTY
    assert (mnt / "d/f").read_bytes() == b"x"


def test_dd_notrunc_seek_into_existing_file(mount: Mount, tmp_path: Path) -> None:
    mnt = mount.mountpoint
    original = data(3 * CHUNK + 100, 7)
    (mnt / "f").write_bytes(original)
    patch = data(8192, 8)
    (tmp_path / "patch").write_bytes(patch)
    # Block 31 of 4 KiB starts 4 KiB before the first chunk boundary: the patch spans two chunks.
    sh("dd", f"if={tmp_path / 'patch'}", f"of={mnt / 'f'}", "bs=4096", "seek=31", "conv=notrunc")
    at = 31 * 4096
    expected = original[:at] + patch + original[at + len(patch) :]
    assert (mnt / "f").read_bytes() == expected
    mount.remount()
    assert hashlib.sha256((mnt / "f").read_bytes()).digest() == hashlib.sha256(expected).digest()


def test_append(mount: Mount) -> None:
    mnt = mount.mountpoint
    sh("sh", "-c", f"printf abc > '{mnt}/log'")
    sh("sh", "-c", f"printf def >> '{mnt}/log'")
    big = data(CHUNK + 10, 3)
    with open(mnt / "log", "ab") as f:
        f.write(big)
    assert (mnt / "log").read_bytes() == b"abcdef" + big
    mount.remount()
    assert (mnt / "log").read_bytes() == b"abcdef" + big


def test_truncate_down_and_up(mount: Mount) -> None:
    mnt = mount.mountpoint
    original = data(2 * CHUNK + 7, 4)
    (mnt / "t").write_bytes(original)
    os.truncate(mnt / "t", CHUNK + 3)
    assert os.stat(mnt / "t").st_size == CHUNK + 3
    assert (mnt / "t").read_bytes() == original[: CHUNK + 3]
    sh("truncate", "-s", "10", mnt / "t")
    assert (mnt / "t").read_bytes() == original[:10]
    sh("truncate", "-s", str(CHUNK * 2), mnt / "t")
    expected = original[:10] + b"\0" * (CHUNK * 2 - 10)
    assert os.stat(mnt / "t").st_size == CHUNK * 2
    assert (mnt / "t").read_bytes() == expected
    mount.remount()
    assert (mnt / "t").read_bytes() == expected
    with open(mnt / "t", "r+b") as f:
        f.truncate(0)
    assert os.stat(mnt / "t").st_size == 0


def test_editor_pattern(mount: Mount) -> None:
    """Write a temp file, fsync, rename over the original: as vim, emacs and most tools save."""
    mnt = mount.mountpoint
    (mnt / "doc.txt").write_bytes(b"version 1\n")
    old_ino = os.stat(mnt / "doc.txt").st_ino
    tmp = mnt / ".doc.txt.swp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"version 2, longer\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    new_ino = os.stat(tmp).st_ino
    os.rename(tmp, mnt / "doc.txt")
    assert os.listdir(mnt) == ["doc.txt"]
    assert (mnt / "doc.txt").read_bytes() == b"version 2, longer\n"
    st = os.stat(mnt / "doc.txt")
    assert st.st_ino == new_ino != old_ino
    assert st.st_size == len(b"version 2, longer\n")
    mount.remount()
    assert os.listdir(mnt) == ["doc.txt"]
    assert (mnt / "doc.txt").read_bytes() == b"version 2, longer\n"


def test_read_only_mount_is_erofs(mounts: MountFactory) -> None:
    rw = mounts()
    (rw.mountpoint / "f").write_bytes(b"content")
    ro = mounts("--read-only", create=False)
    assert (ro.mountpoint / "f").read_bytes() == b"content"
    for attempt in (
        lambda: (ro.mountpoint / "f").write_bytes(b"x"),
        lambda: (ro.mountpoint / "new").write_bytes(b"x"),
        lambda: os.mkdir(ro.mountpoint / "d"),
        lambda: os.unlink(ro.mountpoint / "f"),
    ):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert (rw.mountpoint / "f").read_bytes() == b"content"


def test_own_writes_log_no_conflicts(mount: Mount) -> None:
    """Writing and overwriting many files alone must not be reported as "changed elsewhere"."""
    for round_ in range(2):
        for i in range(40):
            (mount.mountpoint / f"w{i}").write_bytes(f"{round_}-{i}".encode() * 100)
    assert (mount.mountpoint / "w7").read_bytes() == b"1-7" * 100
    assert "changed elsewhere" not in mount.stderr()
