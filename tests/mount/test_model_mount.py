"""Reference-model test through the kernel: random operations on a mount and a local directory.

The core's model test (tests/fs/test_model.py) checks ``Filesystem`` against plain dicts; this
one checks the whole stack (kernel, pyfuse3 adapter, core, NATS) against the best model of a
POSIX filesystem there is, a local directory on the test machine. hypothesis draws short
sequences of operations on a tiny namespace (three names, depth <= 2, so that they collide):
write, append, truncate, mkdir, rmdir, unlink, rename, symlink, mkfifo, chmod. Each runs on
both; after every step the errno (or success) of the operation and the whole tree must be
equal: entry types, permission bits, link counts, file bytes, symlink targets. After the
examples the mount is remounted and must show the last example's tree from the store alone.

Size: ``MAX_EXAMPLES`` examples of at most ``MAX_STEPS`` steps (about 10 s here, within the
suite's budget). Long runs: ``OBJFS_MOUNT_MODEL_EXAMPLES=500 OBJFS_MOUNT_MODEL_STEPS=60``. A
failure prints the shrunk operation list, which reads as a script.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mounting import Mount

MAX_EXAMPLES = int(os.environ.get("OBJFS_MOUNT_MODEL_EXAMPLES", "50"))
MAX_STEPS = int(os.environ.get("OBJFS_MOUNT_MODEL_STEPS", "25"))

NAMES = ("a", "b", "c")
OUTSIDE = "/nonexistent-objfs-model-test/x"
"""An absolute target (tar and git make those) that does not exist: following it fails alike."""
paths = st.one_of(
    st.sampled_from(NAMES), st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)).map("/".join)
)
data = st.binary(max_size=64)
ops = st.one_of(
    st.tuples(st.just("write"), paths, data),
    st.tuples(st.just("append"), paths, data),
    st.tuples(st.just("truncate"), paths, st.integers(0, 80)),
    st.tuples(st.just("mkdir"), paths),
    st.tuples(st.just("rmdir"), paths),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("rename"), paths, paths),
    # Targets that cannot lead out of the two trees: operations follow symlinks, and one to
    # "/etc" or ".." let the local run create, rename and chmod real files outside them.
    st.tuples(st.just("symlink"), st.sampled_from(("a", "b/c", "nowhere/x", OUTSIDE)), paths),
    st.tuples(st.just("mkfifo"), paths),
    st.tuples(st.just("chmod"), paths, st.sampled_from((0o600, 0o644, 0o755, 0o1777))),
)


def apply(root: Path, op: tuple[Any, ...]) -> str:
    """Run ``op`` below ``root``; ``"ok"`` or the errno name."""
    kind, *args = op
    p = root / args[-1] if kind in ("symlink",) else root / args[0]
    try:
        if kind in ("write", "append"):
            # O_NONBLOCK: a fifo without a reader is ENXIO, not a writer blocked forever.
            how = os.O_APPEND if kind == "append" else os.O_TRUNC
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | how, 0o666)
            try:
                os.write(fd, args[1])
            finally:
                os.close(fd)
        elif kind == "truncate":
            os.truncate(p, args[1])
        elif kind == "mkdir":
            os.mkdir(p)
        elif kind == "rmdir":
            os.rmdir(p)
        elif kind == "unlink":
            os.unlink(p)
        elif kind == "rename":
            os.rename(p, root / args[1])
        elif kind == "symlink":
            os.symlink(args[0], p)
        elif kind == "mkfifo":
            os.mkfifo(p)
        elif kind == "chmod":
            os.chmod(p, args[1])
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))


def tree(root: Path) -> dict[str, Any]:
    """Everything a program sees below ``root`` (no times: those differ between the two)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            entry: list[Any] = [stat.S_IFMT(st_.st_mode), oct(stat.S_IMODE(st_.st_mode))]
            if stat.S_ISREG(st_.st_mode):
                entry += [st_.st_nlink, p.read_bytes()]
            elif stat.S_ISDIR(st_.st_mode):
                entry += [st_.st_nlink]
            elif stat.S_ISLNK(st_.st_mode):
                entry = [stat.S_IFLNK, os.readlink(p)]  # a symlink's own mode is not portable
            out[str(p.relative_to(root))] = entry
    return out


def clear(root: Path) -> None:
    for entry in list(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def test_mount_matches_a_local_directory(mount: Mount, tmp_path: Path) -> None:
    assert not os.path.exists(os.path.dirname(OUTSIDE))
    local = tmp_path / "local"
    local.mkdir()
    mnt = mount.mountpoint
    old_umask = os.umask(0o022)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(st.lists(ops, max_size=MAX_STEPS))
    def run(steps: list[tuple[Any, ...]]) -> None:
        clear(local)
        clear(mnt)
        for i, op in enumerate(steps):
            want, got = apply(local, op), apply(mnt, op)
            assert got == want, f"step {i} {op}: objfs {got}, local {want}; ops={steps[: i + 1]}"
            assert tree(mnt) == tree(local), f"after step {i} {op}; ops={steps[: i + 1]}"

    try:
        run()
        want = tree(local)
        mount.remount()
        assert tree(mnt) == want
    finally:
        os.umask(old_umask)
