"""POSIX scenarios run in a child process, as some uid, in one directory; the answer is JSON.

test_conformance.py runs each scenario twice in the same test, in a local directory (the
reference: the test machine's disk or tmpfs) and in an objfs ``--allow-other`` mount, and
compares the two answers. A scenario records what a program could observe: errno names,
file types, permission bits, owners, link counts, and whether a time moved (never the times
themselves, which differ between the two runs).

Run as ``python conformance_cases.py CASE ROOT UID GID``: the child drops to ``UID``/``GID``
(no supplementary groups) with ``setresgid``/``setresuid`` before anything else.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Obs = list[Any]
EXCL = os.O_CREAT | os.O_EXCL | os.O_WRONLY


def attempt(fn: Callable[[], object]) -> str:
    """``"ok"`` or the errno name ``fn`` fails with."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))


def describe(path: Path | str) -> list[Any]:
    st = os.lstat(path)
    return [stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_nlink, st.st_rdev]


def owner(path: Path | str) -> list[int]:
    st = os.lstat(path)
    return [st.st_uid, st.st_gid]


def tick() -> None:
    """Let the clock move, so that "did the time move" has an answer (ns clocks, coarse
    kernel timestamps: 20 ms is far above either's granularity)."""
    time.sleep(0.02)


def moved(path: Path | str, before: os.stat_result) -> list[bool]:
    st = os.lstat(path)
    return [st.st_mtime_ns > before.st_mtime_ns, st.st_ctime_ns > before.st_ctime_ns]


def bind(path: Path) -> str:
    s = socket.socket(socket.AF_UNIX)
    try:
        return attempt(lambda: s.bind(os.fspath(path)))
    finally:
        s.close()


# -- scenarios -----------------------------------------------------------------------------------
def special_files(root: Path) -> Obs:
    out: Obs = []
    os.chdir(root)  # socket paths: relative, well within sun_path's 108 bytes
    out.append(["mkfifo", attempt(lambda: os.mkfifo("fifo", 0o640))])
    out.append(["bind", bind(Path("sock"))])
    as_root = os.geteuid() == 0
    chr_dev, blk_dev = os.makedev(1, 3), os.makedev(7, 0)
    out.append(["chr", attempt(lambda: os.mknod("chr", stat.S_IFCHR | 0o600, chr_dev))])
    out.append(["blk", attempt(lambda: os.mknod("blk", stat.S_IFBLK | 0o600, blk_dev))])
    Path("file").write_bytes(b"x")
    names = ["fifo", "sock", "file"] + (["chr", "blk"] if as_root else [])
    for name in names:
        out.append([name, describe(name), os.lstat(name).st_size])
    # Nothing can be made over an existing name of any type.
    for name in names:
        out.append(["over", name, attempt(lambda n=name: os.mkfifo(n))])  # type: ignore[misc]
        out.append(["over", name, attempt(lambda n=name: os.mkdir(n))])  # type: ignore[misc]
        out.append(["over", name, attempt(lambda n=name: os.symlink("x", n))])  # type: ignore[misc]
        out.append(["over", name, attempt(lambda n=name: os.open(n, EXCL))])  # type: ignore[misc]
        out.append(["over", name, bind(Path(name))])
        # A path through a non-directory.
        out.append(["below", name, attempt(lambda n=name: os.stat(f"{n}/x"))])  # type: ignore[misc]
        out.append(["below", name, attempt(lambda n=name: os.mkdir(f"{n}/x"))])  # type: ignore[misc]
    fifo_w = os.O_WRONLY | os.O_NONBLOCK
    out.append(["fifo open w", attempt(lambda: os.close(os.open("fifo", fifo_w)))])
    # A reader, then a writer: the fifo is a pipe, bytes go through.
    r = os.open("fifo", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open("fifo", fifo_w)
    os.write(w, b"through")
    out.append(["fifo data", os.read(r, 100).decode()])
    os.close(w)
    os.close(r)
    for name in names:
        before = os.lstat(name)
        tick()
        out.append(["chmod", name, attempt(lambda n=name: os.chmod(n, 0o604))])  # type: ignore[misc]
        out.append(["after chmod", name, describe(name), moved(name, before)])
        out.append(["utime", name, attempt(lambda n=name: os.utime(n, ns=(5, 1_000_000_007)))])  # type: ignore[misc]
        out.append(["mtime", name, os.lstat(name).st_mtime_ns])
        if as_root:
            os.chown(name, 4321, 8765)
            out.append(["chown", name, owner(name)])
        before = os.lstat(name)
        tick()
        os.rename(name, name + ".moved")
        out.append(["rename", name, describe(name + ".moved"), moved(name + ".moved", before)])
    os.mkdir("sub")
    for name in names:
        os.rename(name + ".moved", f"sub/{name}")
    out.append(["listing", sorted(os.listdir("sub"))])
    for name in names:
        out.append(["unlink", name, attempt(lambda n=name: os.unlink(f"sub/{n}"))])  # type: ignore[misc]
    out.append(["rmdir", attempt(lambda: os.rmdir("sub"))])
    return out


def link_counts(root: Path) -> Obs:
    out: Obs = []
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    for sub in ("x", "y", "z"):
        (a / sub).mkdir()
    (a / "f").write_bytes(b"f")
    out.append(["start", os.stat(a).st_nlink, os.stat(b).st_nlink, os.stat(a / "f").st_nlink])
    os.rename(a / "x", b / "x")
    out.append(["moved", os.stat(a).st_nlink, os.stat(b).st_nlink])
    os.rename(a / "f", b / "f")
    out.append(["file moved", os.stat(a).st_nlink, os.stat(b).st_nlink])
    os.rmdir(a / "y")
    out.append(["rmdir", os.stat(a).st_nlink])
    fd = os.open(b / "f", os.O_RDWR)
    before = os.fstat(fd)
    tick()
    os.unlink(b / "f")
    out.append(["fstat unlinked", os.fstat(fd).st_nlink])
    out.append(["unlink moved ctime", os.fstat(fd).st_ctime_ns > before.st_ctime_ns])
    os.close(fd)
    # A file replaced by a rename while open: it reads on, its link count 0, its ctime moved.
    (b / "v1").write_bytes(b"one")
    (b / "v2").write_bytes(b"two")
    fd = os.open(b / "v2", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read it from the filesystem
    before = os.fstat(fd)
    tick()
    os.rename(b / "v1", b / "v2")
    after = os.fstat(fd)
    out.append([
        "renamed over while open", os.read(fd, 10).decode(), after.st_nlink,
        after.st_ctime_ns > before.st_ctime_ns, (b / "v2").read_bytes().decode(),
    ])  # fmt: skip
    os.close(fd)
    (a / "gone").mkdir()
    fd = os.open(a / "gone", os.O_RDONLY)
    os.rmdir(a / "gone")
    out.append(["fstat removed directory", os.fstat(fd).st_nlink])
    os.close(fd)
    out.append(["hard link refused", attempt(lambda: os.link(a / "z", b / "zz"))])
    return out


def names(root: Path) -> Obs:
    out: Obs = []
    os.chdir(root)
    out.append(["255", attempt(lambda: Path("n" * 255).write_bytes(b"1"))])
    out.append(["256", attempt(lambda: Path("n" * 256).write_bytes(b"1"))])
    out.append(["256 dir", attempt(lambda: os.mkdir("d" * 256))])
    out.append(["256 lookup", attempt(lambda: os.stat("s" * 256))])
    # A path close to PATH_MAX (4096 with its NUL) of 255-byte components.
    path = ""
    for i in range(15):
        path = f"{path}/{chr(ord('a') + i) * 255}" if path else "a" * 255
        os.mkdir(path)
    deep = f"{path}/{'f' * 200}"
    out.append(["deep len", len(deep)])
    Path(deep).write_bytes(b"deep")
    out.append(["deep", Path(deep).read_bytes().decode(), sorted(os.listdir(path))])
    out.append(["bad utf-8", attempt(lambda: Path(os.fsdecode(b"bad\xff\xfe")).write_bytes(b""))])
    return out


def setup_shared(root: Path) -> Obs:
    """As root: a sticky world-writable directory, files for the other users."""
    sticky = root / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (root / "rootfile").write_bytes(b"r")
    os.chmod(root / "rootfile", 0o666)
    for name, mode in (("suid", 0o4777), ("sgid", 0o2777), ("both", 0o6777)):
        (root / name).write_bytes(b"s")
        os.chmod(root / name, mode)
    sgid_dir = root / "sgid-dir"
    sgid_dir.mkdir()
    os.chown(sgid_dir, 0, 4242)
    os.chmod(sgid_dir, 0o2777)
    return [describe(sticky), describe(sgid_dir), owner(sgid_dir)]


def first_user(root: Path) -> Obs:
    """As a first non-root user: files in the sticky directory; what a non-owner may do."""
    out: Obs = []
    sticky = root / "sticky"
    (sticky / "mine").write_bytes(b"m")
    (sticky / "mine2").write_bytes(b"m")
    out.append(["chmod not owner", attempt(lambda: os.chmod(root / "rootfile", 0o600))])
    out.append(["chown not owner", attempt(lambda: os.chown(root / "rootfile", os.getuid(), -1))])
    out.append(["utime not owner", attempt(lambda: os.utime(root / "rootfile", (1, 1)))])
    out.append(["utime now", attempt(lambda: os.utime(root / "rootfile"))])
    for name in ("suid", "sgid", "both"):
        with open(root / name, "r+b") as f:
            f.write(b"written by another user")
        out.append(["write clears", name, describe(root / name)])
    sgid_dir = root / "sgid-dir"
    fd = os.open(sgid_dir / "newfile", os.O_CREAT | os.O_WRONLY, 0o2775)
    os.close(fd)
    os.mkdir(sgid_dir / "newdir", 0o755)
    out.append(["in sgid dir", describe(sgid_dir / "newfile"), owner(sgid_dir / "newfile")])
    out.append(["in sgid dir", describe(sgid_dir / "newdir"), owner(sgid_dir / "newdir")])
    return out


def second_user(root: Path) -> Obs:
    """As a second non-root user: the sticky bit keeps the first user's files."""
    sticky = root / "sticky"
    return [
        ["unlink other's", attempt(lambda: os.unlink(sticky / "mine"))],
        ["rename other's", attempt(lambda: os.rename(sticky / "mine", sticky / "taken"))],
        ["rename over other's", attempt(lambda: _rename_over(sticky))],
        ["make own", attempt(lambda: (sticky / "theirs").write_bytes(b"t"))],
        ["unlink own", attempt(lambda: os.unlink(sticky / "theirs"))],
        ["listing", sorted(os.listdir(sticky))],
    ]


def _rename_over(sticky: Path) -> None:
    (sticky / "other").write_bytes(b"o")
    try:
        os.rename(sticky / "other", sticky / "mine2")
    finally:
        if (sticky / "other").exists():
            os.unlink(sticky / "other")


def root_after(root: Path) -> Obs:
    """As root again: the owner of a directory may remove in it; chown clears setuid."""
    out: Obs = [["unlink in sticky", attempt(lambda: os.unlink(root / "sticky" / "mine"))]]
    for name in ("suid", "both"):
        os.chmod(root / name, 0o6755)
        os.chown(root / name, 1000, 1000)
        out.append(["chown clears", name, describe(root / name)])
    os.chmod(root / "sgid-dir", 0o2755)
    os.chown(root / "sgid-dir", 0, 0)
    out.append(["dir keeps setgid on chown", describe(root / "sgid-dir")])
    return out


def times(root: Path) -> Obs:
    """Which operations move the mtime and ctime of the entry and of its directory."""
    out: Obs = []
    d = root / "d"
    d.mkdir()
    f = d / "f"

    def step(label: str, op: Callable[[], object], *watched: Path, new: Path | None = None) -> None:
        """``new``: where the first watched entry is after ``op`` (a rename)."""
        before = [os.lstat(p) for p in watched]
        tick()
        op()
        after = [new or watched[0], *watched[1:]]
        out.append([label, [moved(p, b) for p, b in zip(after, before, strict=True)]])

    step("create", lambda: f.write_bytes(b"1"), d)
    step("write", lambda: f.write_bytes(b"22"), f, d)
    step("truncate", lambda: os.truncate(f, 1), f, d)
    e = d / "e"
    e.write_bytes(b"")
    step("O_TRUNC of an empty file", lambda: os.close(os.open(e, os.O_WRONLY | os.O_TRUNC)), e, d)
    step("chmod", lambda: os.chmod(f, 0o600), f, d)
    step("chown", lambda: os.chown(f, os.getuid(), os.getgid()), f, d)
    step("chown -1 -1", lambda: os.chown(f, -1, -1), f, d)
    step("mkdir", lambda: os.mkdir(d / "sub"), d)
    step("rename", lambda: os.rename(f, d / "sub" / "g"), f, d, d / "sub", new=d / "sub" / "g")
    step("symlink", lambda: os.symlink("target", d / "ln"), d)
    step("unlink", lambda: os.unlink(d / "ln"), d)
    step("mkfifo", lambda: os.mkfifo(d / "p"), d)
    step("rmdir", lambda: os.rmdir(d / "sub") if not os.unlink(d / "sub" / "g") else None, d)
    return out


CASES: dict[str, Callable[[Path], Obs]] = {
    fn.__name__: fn
    for fn in (
        special_files,
        link_counts,
        names,
        setup_shared,
        first_user,
        second_user,
        root_after,
        times,
    )
}


def main() -> None:
    case, root, uid, gid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if os.getuid() != uid:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    os.umask(0o022)
    print(json.dumps(CASES[case](root)))


if __name__ == "__main__":
    main()
