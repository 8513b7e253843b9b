"""POSIX behaviour through the kernel: times, ownership, permissions, rename flags, refusals.

These are the promises of docs/semantics.md that only a real mount can check: the kernel's
own handling (default_permissions, utimensat's UTIME_NOW/UTIME_OMIT, renameat2 flags) meets
objfs's answers, and what objfs stores survives a remount.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for, walkable_by_others
from mounting import Mount

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(src: Path, dst: Path, flags: int) -> None:
    rc = libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_utimens_keeps_nanoseconds_and_honours_omit(mount: Mount) -> None:
    f = mount.mountpoint / "t"
    f.write_bytes(b"x")
    atime_ns, mtime_ns = 1_600_000_000_123_456_789, 1_650_000_000_987_654_321
    os.utime(f, ns=(atime_ns, mtime_ns))
    assert os.stat(f).st_mtime_ns == mtime_ns
    # UTIME_OMIT for mtime (via touch -a): mtime must not move.
    subprocess.run(["touch", "-a", str(f)], check=True)
    assert os.stat(f).st_mtime_ns == mtime_ns
    mount.remount()
    assert os.stat(f).st_mtime_ns == mtime_ns


def test_utime_now_moves_mtime_to_now(mount: Mount) -> None:
    f = mount.mountpoint / "n"
    f.write_bytes(b"x")
    os.utime(f, ns=(0, 1_000_000_000))
    before = time.time_ns()
    os.utime(f)  # UTIME_NOW for both
    after = time.time_ns()
    assert before - 2_000_000_000 <= os.stat(f).st_mtime_ns <= after + 2_000_000_000


def test_chmod_chown_persist_and_ctime_moves(mount: Mount) -> None:
    f = mount.mountpoint / "owned"
    f.write_bytes(b"data")
    ctime0 = os.stat(f).st_ctime_ns
    time.sleep(0.01)  # a clock tick, so the ctimes differ: only their order is compared
    os.chmod(f, 0o640)
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_ctime_ns > ctime0
    mount.remount()
    st = os.stat(f)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert f.read_bytes() == b"data"


def test_new_entries_take_umask_and_move_parent_mtime(mount: Mount) -> None:
    d = mount.mountpoint / "d"
    d.mkdir(mode=0o777)
    old = os.umask(0o027)
    try:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o777 & ~0o022
        parent_mtime = os.stat(d).st_mtime_ns
        time.sleep(0.01)  # a clock tick between the changes: only mtime order is compared
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640
        assert os.stat(d).st_mtime_ns > parent_mtime
        parent_mtime = os.stat(d).st_mtime_ns
        time.sleep(0.01)  # (the same)
        os.unlink(d / "f")
        assert os.stat(d).st_mtime_ns > parent_mtime
    finally:
        os.umask(old)


def test_rename_noreplace_and_exchange(mount: Mount) -> None:
    a, b = mount.mountpoint / "a", mount.mountpoint / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    with pytest.raises(OSError) as e:
        renameat2(a, b, RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    with pytest.raises(OSError) as e:
        renameat2(a, b, RENAME_EXCHANGE)
    assert e.value.errno == errno.EINVAL
    renameat2(a, mount.mountpoint / "c", RENAME_NOREPLACE)
    assert (mount.mountpoint / "c").read_bytes() == b"A"
    assert not a.exists()


def test_refused_node_types(mount: Mount) -> None:
    f = mount.mountpoint / "f"
    f.write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.link(f, mount.mountpoint / "hard")
    assert e.value.errno == errno.EPERM
    os.mknod(mount.mountpoint / "reg", stat.S_IFREG | 0o600)
    assert stat.S_ISREG(os.stat(mount.mountpoint / "reg").st_mode)
    assert sorted(os.listdir(mount.mountpoint)) == ["f", "reg"]


def test_statfs_and_name_limits(mount: Mount) -> None:
    sv = os.statvfs(mount.mountpoint)
    assert sv.f_namemax == 255
    assert sv.f_bsize > 0 and sv.f_blocks >= sv.f_bfree >= sv.f_bavail
    ok = mount.mountpoint / ("n" * 255)
    ok.write_bytes(b"1")
    assert ok.read_bytes() == b"1"
    with pytest.raises(OSError) as e:
        (mount.mountpoint / ("n" * 256)).write_bytes(b"1")
    assert e.value.errno == errno.ENAMETOOLONG


def test_statfs_reports_bucket_usage(mount: Mount) -> None:
    before = os.statvfs(mount.mountpoint)
    (mount.mountpoint / "big").write_bytes(os.urandom(3 << 20))
    used_before = (before.f_blocks - before.f_bfree) * before.f_frsize

    def grown() -> bool:
        after = os.statvfs(mount.mountpoint)
        return (after.f_blocks - after.f_bfree) * after.f_frsize - used_before >= 3 << 20

    wait_for(grown, f"statfs usage growing by 3 MiB from {used_before}")


def _as_user(uid: int, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``uid`` (and gid) in a child; its stdout is the answer."""
    pre = f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); os.umask(0o022)\n"
    return subprocess.run(
        [sys.executable, "-c", pre + code], capture_output=True, text=True, timeout=120
    )


def test_allow_other_with_permission_checks(mounts) -> None:  # type: ignore[no-untyped-def]
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")  # CI and developer machines run as root
    m = mounts("--allow-other")
    with walkable_by_others(m.mountpoint):
        _check_other_user(m)


def _check_other_user(m: Mount) -> None:
    os.chmod(m.mountpoint, 0o777)
    mine = m.mountpoint / "root-only"
    mine.write_bytes(b"secret")
    os.chmod(mine, 0o600)
    nobody = 65534
    r = _as_user(
        nobody,
        f"p={str(m.mountpoint)!r}\n"
        "open(p + '/theirs', 'w').write('hi')\n"
        "st = os.stat(p + '/theirs')\n"
        "print(st.st_uid, st.st_gid, oct(st.st_mode & 0o777))\n"
        "try:\n"
        "    open(p + '/root-only').read()\n"
        "    print('read')\n"
        "except PermissionError:\n"
        "    print('EACCES')\n"
        "try:\n"
        "    os.chmod(p + '/root-only', 0o777)\n"
        "    print('chmod')\n"
        "except PermissionError:\n"
        "    print('EPERM')\n",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == [f"{nobody} {nobody} 0o644", "EACCES", "EPERM"]
    m.remount()
    st = os.stat(m.mountpoint / "theirs")
    assert (st.st_uid, st.st_gid) == (nobody, nobody)
    assert (m.mountpoint / "theirs").read_text() == "hi"


def test_ls_a_shows_dot_entries(mount: Mount) -> None:
    d = mount.mountpoint / "d"
    d.mkdir()
    for i in range(600):  # more than one readdir batch
        (d / f"f{i:03}").write_bytes(b"")
    for where in (mount.mountpoint, d):
        out = subprocess.run(
            ["ls", "-a", "-1", str(where)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        names = out.stdout.split()
        assert names[:2] == [".", ".."]
        assert names[2:] == sorted(os.listdir(where))
    assert len(os.listdir(d)) == 600
    st_dot, st_dotdot = os.stat(d / "."), os.stat(d / "..")
    assert st_dot.st_ino == os.stat(d).st_ino
    assert st_dotdot.st_ino == os.stat(mount.mountpoint).st_ino


def test_unlinked_while_open_reads_on(mounts) -> None:  # type: ignore[no-untyped-def]
    a = mounts()
    data = os.urandom(3 * 128 * 1024 + 11)
    (a.mountpoint / "tmpfile").write_bytes(data)
    b = mounts()  # a second mount: nothing of the file is in its caches
    with open(b.mountpoint / "tmpfile", "rb") as f:
        head = f.read(10)
        os.unlink(b.mountpoint / "tmpfile")
        assert not (b.mountpoint / "tmpfile").exists()
        assert head + f.read() == data
    # Deleted at the last close, seen elsewhere.
    wait_for(lambda: not (a.mountpoint / "tmpfile").exists(), "the delete at the last close")
