"""Everyday tools on a real mount: cp -p, rsync -a, tar (with symlinks), git.

These are what users actually run, and each leans on a different part of POSIX: cp -p and
rsync -a set mode and mtime after writing, tar creates symlinks (dangling ones too) and
restores modes, git writes through temp files, renames, locks and executable bits. Each check
is repeated after a remount, so the answer comes from the store.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import data, sh
from mounting import Mount

MTIME = 1_234_567_890  # 2009-02-13, whole seconds: every tool keeps at least that precision


def make_tree(root: Path) -> None:
    """A small tree: files of several sizes and modes, a subdirectory, symlinks."""
    (root / "sub/deeper").mkdir(parents=True)
    (root / "small.txt").write_bytes(b"small\n")
    (root / "sub/big.bin").write_bytes(data(300_000, 9))
    (root / "sub/deeper/empty").write_bytes(b"")
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.chmod(root / "small.txt", 0o600)
    os.symlink("small.txt", root / "link-to-small")
    os.symlink("sub/deeper", root / "link-to-dir")
    os.symlink("does/not/exist", root / "dangling")
    for path in [root / "small.txt", root / "sub/big.bin", root / "run.sh"]:
        os.utime(path, (MTIME, MTIME))


def assert_same_tree(a: Path, b: Path, *, check_mtime: bool = True) -> None:
    """Same names, types, contents, modes, symlink targets (and file mtimes)."""
    names_a = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    names_b = sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    assert names_a == names_b
    for rel in names_a:
        pa, pb = a / rel, b / rel
        sa, sb = os.lstat(pa), os.lstat(pb)
        assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), rel
        if stat.S_ISLNK(sa.st_mode):
            assert os.readlink(pa) == os.readlink(pb), rel
            continue
        assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), rel
        if stat.S_ISREG(sa.st_mode):
            assert pa.read_bytes() == pb.read_bytes(), rel
            if check_mtime:
                assert int(sa.st_mtime) == int(sb.st_mtime), rel


def test_cp_p_keeps_mode_and_mtime(mount: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(data(5000))
    os.chmod(src / "f", 0o604)
    os.utime(src / "f", (MTIME, MTIME))
    sh("cp", "-p", src / "f", mount.mountpoint / "f")
    mount.remount()
    st = os.stat(mount.mountpoint / "f")
    assert stat.S_IMODE(st.st_mode) == 0o604
    assert int(st.st_mtime) == MTIME
    sh("cmp", src / "f", mount.mountpoint / "f")


def test_rsync_a_round_trip(mount: Mount, tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (Debian package: rsync; scripts/setup installs it)")
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = mount.mountpoint / "copy"
    sh("rsync", "-a", f"{src}/", f"{dst}/")
    assert_same_tree(src, dst)
    mount.remount()
    assert_same_tree(src, dst)
    # Sizes and mtimes survived exactly: a second rsync finds nothing to transfer.
    changes = sh("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/")
    assert changes.strip() == ""


def test_tar_create_and_extract_across_the_mount(mount: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    mnt = mount.mountpoint
    # An archive written onto the mount, then extracted into the mount.
    sh("tar", "-C", src, "-cf", mnt / "tree.tar", ".")
    (mnt / "x").mkdir()
    sh("tar", "-C", mnt / "x", "-xpf", mnt / "tree.tar")
    assert_same_tree(src, mnt / "x")
    mount.remount()
    assert_same_tree(src, mnt / "x")
    # And back out: archive the mounted tree, extract it locally.
    out = tmp_path / "out"
    out.mkdir()
    sh("tar", "-C", mnt / "x", "-cf", tmp_path / "back.tar", ".")
    sh("tar", "-C", out, "-xpf", tmp_path / "back.tar")
    assert_same_tree(src, out)


def git(*args: str | Path, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    r = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"git {args}: {r.stderr}"
    return r.stdout


def test_git_clone_into_the_mount(mount: Mount, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "README").write_text("hello\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    (repo / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(repo / "tool.sh", 0o755)
    os.symlink("README", repo / "readme-link")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "two", cwd=repo)
    (repo / "src").mkdir()
    (repo / "src/data.bin").write_bytes(data(200_000, 5))
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "three", cwd=repo)

    clone = mount.mountpoint / "clone"
    git("clone", "-q", repo, clone, cwd=tmp_path)
    for remount in (False, True):
        if remount:
            mount.remount()
        assert git("status", "--porcelain", cwd=clone) == ""
        log = git("log", "--format=%s", cwd=clone).split()
        assert log == ["three", "two", "one"]
        assert os.readlink(clone / "readme-link") == "README"
        assert os.stat(clone / "tool.sh").st_mode & 0o111
        assert (clone / "src/data.bin").read_bytes() == data(200_000, 5)
        git("fsck", "--no-progress", cwd=clone)
