"""POSIX conformance through the kernel, as root and as other users, against a local directory.

Each scenario of ``conformance_cases`` runs in a child process as a given uid, once in a
local directory under ``tmp_path`` (the reference: the machine's own filesystem) and once in
an objfs ``--allow-other`` mount, in the same test; the two answers must be equal. What a
local filesystem cannot be compared on (objfs's size limit, what other NATS clients see, a
remount) is checked against objfs's documented values.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import walkable_by_others
from mounting import Mount
from test_nats_client import with_store

from objfs.fs.limits import MAX_FILE_SIZE

CASES = Path(__file__).with_name("conformance_cases.py")
NOBODY = 65534
OTHER = 54321
"""A uid (and gid) no account has: the rules must not depend on /etc/passwd."""


def run_case(case: str, root: Path, uid: int = 0, gid: int | None = None) -> Any:
    gid = uid if gid is None else gid
    r = subprocess.run(
        [sys.executable, str(CASES), case, str(root), str(uid), str(gid)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"{case} as {uid} in {root}:\n{r.stderr}"
    return json.loads(r.stdout)


def compare(case: str, local: Path, mounted: Path, uid: int = 0) -> Any:
    want = run_case(case, local, uid)
    got = run_case(case, mounted, uid)
    for w, g in zip(want, got, strict=False):
        assert g == w, f"{case} as uid {uid}: objfs {g} where the local directory gives {w}"
    assert len(got) == len(want)
    return got


@pytest.fixture
def shared(mounts, tmp_path: Path) -> Iterator[tuple[Mount, Path]]:  # type: ignore[no-untyped-def]
    """An ``--allow-other`` mount and a local reference directory, both open to every user."""
    if os.getuid() != 0:
        pytest.skip("needs root to act as other users")  # CI and the dev machines run as root
    m = mounts("--allow-other")
    local = tmp_path / "local"
    local.mkdir()
    for d in (local, m.mountpoint):
        os.chmod(d, 0o777)
    with walkable_by_others(m.mountpoint):
        yield m, local


@pytest.mark.parametrize("uid", [0, NOBODY, OTHER])
def test_special_files(shared: tuple[Mount, Path], uid: int) -> None:
    m, local = shared
    got = compare("special_files", local, m.mountpoint, uid)
    made = dict((row[0], row[1]) for row in got[:4])
    assert made["mkfifo"] == "ok" and made["bind"] == "ok"
    assert made["chr"] == ("ok" if uid == 0 else "EPERM")
    assert ["fifo open w", "ENXIO"] in got


def test_special_files_persist_and_are_plain_objects_elsewhere(
    shared: tuple[Mount, Path],
    mounts,  # type: ignore[no-untyped-def]
) -> None:
    m, _ = shared
    root = m.mountpoint
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "tty", stat.S_IFCHR | 0o640, os.makedev(4, 1))
    os.mknod(root / "disk", stat.S_IFBLK | 0o660, os.makedev(8, 1))
    m.remount()
    other = mounts()
    for where in (root, other.mountpoint):
        assert stat.S_ISFIFO(os.stat(where / "fifo").st_mode)
        st = os.stat(where / "tty")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(4, 1)
        assert stat.S_IMODE(st.st_mode) == 0o640
        st = os.stat(where / "disk")
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 1)

    async def get_info(store: Any) -> Any:
        return await store.get_info("tty")

    info = with_store(m.server_url, str(m.bucket), get_info)  # nats-py, not objfs
    assert info.size == 0
    headers = info.headers
    assert headers["Objfs-Mode"] == [f"{stat.S_IFCHR | 0o640:o}"]
    assert headers["Objfs-Rdev"] == [str(os.makedev(4, 1))]


def test_tar_and_rsync_of_a_tree_with_a_fifo_and_a_socket(shared: tuple[Mount, Path]) -> None:
    m, local = shared
    src = local / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data")
    os.mkfifo(src / "d" / "fifo", 0o600)
    bind = "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])"
    r = subprocess.run(
        [sys.executable, "-c", bind, str(src / "d" / "sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    tarball = local / "t.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tarball), "."], check=True, timeout=120)
    for tool, dest in (
        (["tar", "-C", str(m.mountpoint / "x"), "-xpf", str(tarball)], m.mountpoint / "x"),
        (["rsync", "-a", f"{src}/", f"{m.mountpoint / 'r'}/"], m.mountpoint / "r"),
    ):
        if tool[0] == "tar":
            dest.mkdir()
        r = subprocess.run(tool, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{tool[0]}: {r.stderr}"
        assert stat.S_ISFIFO(os.lstat(dest / "d" / "fifo").st_mode)
        if tool[0] == "rsync":  # GNU tar leaves sockets out of archives ("socket ignored")
            assert stat.S_ISSOCK(os.lstat(dest / "d" / "sock").st_mode)
        assert (dest / "d" / "f").read_bytes() == b"data"


@pytest.mark.parametrize("uid", [0, NOBODY])
def test_link_counts(shared: tuple[Mount, Path], uid: int) -> None:
    m, local = shared
    got = compare("link_counts", local, m.mountpoint, uid)
    assert got[0] == ["start", 5, 2, 1] and ["fstat unlinked", 0] in got


def test_hard_links_are_eperm(shared: tuple[Mount, Path]) -> None:
    m, _ = shared
    (m.mountpoint / "f").write_bytes(b"f")
    with pytest.raises(OSError) as e:
        os.link(m.mountpoint / "f", m.mountpoint / "g")
    assert e.value.errno == errno.EPERM


@pytest.mark.parametrize("uid", [0, NOBODY])
def test_names(shared: tuple[Mount, Path], uid: int) -> None:
    m, local = shared
    want = run_case("names", local, uid)
    got = run_case("names", m.mountpoint, uid)
    # Linux filesystems take any bytes; objfs's names are UTF-8 (object names are strings).
    assert want[-1] == ["bad utf-8", "ok"] and got[-1] == ["bad utf-8", "EINVAL"]
    assert got[:-1] == want[:-1]
    assert got[4][1] > 3800  # close to PATH_MAX


@pytest.mark.parametrize("uid", [0, NOBODY])
def test_times(shared: tuple[Mount, Path], uid: int) -> None:
    m, local = shared
    got = compare("times", local, m.mountpoint, uid)
    assert got[0] == ["create", [[True, True]]]


def test_permission_rules_across_users(shared: tuple[Mount, Path]) -> None:
    m, local = shared
    steps = [("setup_shared", 0), ("first_user", NOBODY), ("second_user", OTHER), ("root_after", 0)]
    for case, uid in steps:
        want = run_case(case, local, uid)
        got = run_case(case, m.mountpoint, uid)
        assert got == want, f"{case} as {uid}: objfs {got}, local {want}"
        if case == "second_user":
            assert got[0] == ["unlink other's", "EPERM"]
        if case == "first_user":
            assert got[0] == ["chmod not owner", "EPERM"]


def test_file_size_limit_is_efbig(mount: Mount) -> None:
    f = mount.mountpoint / "f"
    f.write_bytes(b"abc")
    with pytest.raises(OSError) as e:
        os.truncate(f, MAX_FILE_SIZE + 1)
    assert e.value.errno == errno.EFBIG
    fd = os.open(f, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, MAX_FILE_SIZE + 1)
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", MAX_FILE_SIZE)
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert f.read_bytes() == b"abc"
    assert os.statvfs(mount.mountpoint).f_bsize > 0
