"""POSIX rules of the core, driven directly: special files, link counts, limits, ownership.

The same rules are checked through the kernel, against a local directory, in
tests/mount/test_conformance.py; these pin down what the core itself stores and answers.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
from fs_helpers import CALLER, read_file, stored, write_file

from objfs.fs.errors import FsError
from objfs.fs.inodes import ROOT_INO, Kind
from objfs.fs.limits import MAX_FILE_SIZE
from objfs.fs.values import Caller, SetAttr
from objfs.store.names import MAX_NAME_BYTES, SAFE_NAME_BYTES

SPECIAL = (
    ("fifo", stat.S_IFIFO, 0),
    ("sock", stat.S_IFSOCK, 0),
    ("chr", stat.S_IFCHR, os.makedev(1, 3)),
    ("blk", stat.S_IFBLK, os.makedev(7, 0)),
)


async def test_special_files_are_stored_with_type_and_rdev(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    for name, kind, rdev in SPECIAL:
        node = await fs.mknod(ROOT_INO, name, kind | 0o640, rdev, CALLER)
        st = fs.stat(node)
        assert (stat.S_IFMT(st.mode), stat.S_IMODE(st.mode), st.rdev) == (kind, 0o640, rdev)
        assert st.size == 0 and st.nlink == 1
        info = await mem.info(bucket_name, name)
        assert info.size == 0
        assert info.headers["Objfs-Mode"] == [f"{kind | 0o640:o}"]
        if rdev:
            assert info.headers["Objfs-Rdev"] == [str(rdev)]
        else:
            assert "Objfs-Rdev" not in info.headers
        with pytest.raises(FsError) as e:
            await fs.mknod(ROOT_INO, name, kind | 0o640, rdev, CALLER)
        assert e.value.errno == errno.EEXIST
    # chmod keeps the type; another mount of the bucket sees the same nodes.
    fifo = await fs.lookup(ROOT_INO, "fifo")
    await fs.setattr(fifo.ino, SetAttr(mode=0o600), None, CALLER)
    assert (await mem.info(bucket_name, "fifo")).headers["Objfs-Mode"] == ["10600"]
    other = await make_fs(mem, bucket_name, create=False)
    for name, kind, rdev in SPECIAL:
        node = await other.lookup(ROOT_INO, name)
        st = other.stat(node)
        assert (stat.S_IFMT(st.mode), st.rdev) == (kind, rdev)
        assert node.kind is Kind(kind)
    assert stat.S_IMODE(other.stat(await other.lookup(ROOT_INO, "fifo")).mode) == 0o600


async def test_mknod_of_an_unknown_type_is_einval(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    with pytest.raises(FsError) as e:
        await fs.mknod(ROOT_INO, "x", stat.S_IFDIR | 0o755, 0, CALLER)
    assert e.value.errno == errno.EINVAL


async def test_nlink_counts_subdirectories_and_follows_renames(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    a = await fs.mkdir(ROOT_INO, "a", 0o755, CALLER)
    b = await fs.mkdir(ROOT_INO, "b", 0o755, CALLER)
    await fs.mkdir(a.ino, "x", 0o755, CALLER)
    await fs.mkdir(a.ino, "y", 0o755, CALLER)
    await write_file(fs, "f", b"1", parent=a.ino)
    assert [fs.stat(n).nlink for n in (a, b)] == [4, 2]
    await fs.rename(a.ino, "x", b.ino, "x")
    assert [fs.stat(n).nlink for n in (a, b)] == [3, 3]
    await fs.rmdir(a.ino, "y")
    assert fs.stat(a).nlink == 2
    assert fs.stat(fs.table.get(ROOT_INO)).nlink == 4
    # A file open when unlinked: fstat shows no links.
    f = await write_file(fs, "open", b"data")
    handle, _ = await fs.open(f.ino, os.O_RDONLY)
    await fs.unlink(ROOT_INO, "open")
    assert fs.stat(f).nlink == 0
    await fs.release(handle.fh)


async def test_remote_tree_counts_subdirectories(mem, bucket_name, make_fs):
    await make_fs(mem, bucket_name)  # creates the bucket
    for name in ("d/a/1", "d/b/2", "d/c", "d/e/"):
        await mem.put(bucket_name, name, b"")
    other = await make_fs(mem, bucket_name, create=False)
    d = await other.lookup(ROOT_INO, "d")
    assert other.stat(d).nlink == 2 + 3  # a, b and e; c is a file


async def test_setgid_directory_passes_its_group_on(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    d = await fs.mkdir(ROOT_INO, "shared", 0o775, CALLER)
    await fs.setattr(d.ino, SetAttr(mode=0o2775, gid=4242), None, CALLER)
    sub = await fs.mkdir(d.ino, "sub", 0o755, CALLER)
    assert fs.stat(sub).gid == 4242 and fs.stat(sub).mode & stat.S_ISGID
    # A caller outside group 4242 (its pid has no /proc entry with it) loses setgid on a file.
    outsider = Caller(uid=1234, gid=5678, umask=0, pid=0)
    handle, f = await fs.create(d.ino, "prog", 0o2755, os.O_WRONLY | os.O_CREAT, outsider)
    await fs.release(handle.fh)
    assert fs.stat(f).gid == 4242
    assert stat.S_IMODE(fs.stat(f).mode) == 0o755
    # Root keeps it.
    root = Caller(uid=0, gid=0, umask=0)
    handle, g = await fs.create(d.ino, "rootprog", 0o2755, os.O_WRONLY | os.O_CREAT, root)
    await fs.release(handle.fh)
    assert stat.S_IMODE(fs.stat(g).mode) == 0o2755
    # Outside a setgid directory the caller's own group is used and the bit stays.
    handle, h = await fs.create(ROOT_INO, "mine", 0o2755, os.O_WRONLY | os.O_CREAT, outsider)
    await fs.release(handle.fh)
    assert (fs.stat(h).gid, stat.S_IMODE(fs.stat(h).mode)) == (5678, 0o2755)


async def test_supplementary_groups_come_from_proc(mem, bucket_name, make_fs):
    from objfs.fs.permissions import in_group, supplementary_groups

    groups = supplementary_groups(os.getpid())
    assert groups == frozenset(os.getgroups())
    me = Caller(uid=4321, gid=987653, umask=0, pid=os.getpid())
    for g in groups:
        assert in_group(me, g)
    assert not in_group(me, 987654)


async def test_size_limit_is_efbig(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    f = await write_file(fs, "f", b"abc")
    with pytest.raises(FsError) as e:
        await fs.setattr(f.ino, SetAttr(size=MAX_FILE_SIZE + 1), None, CALLER)
    assert e.value.errno == errno.EFBIG
    handle, _ = await fs.open(f.ino, os.O_WRONLY)
    with pytest.raises(FsError) as e:
        await fs.write(handle.fh, MAX_FILE_SIZE, b"x")
    assert e.value.errno == errno.EFBIG
    await fs.release(handle.fh)
    assert await read_file(fs, f.ino) == b"abc"


async def test_ctime_of_renamed_and_unlinked_files_moves(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    f = await write_file(fs, "f", b"1")
    f.attrs.ctime_ns = 1  # long ago: any change must move it forward
    await fs.rename(ROOT_INO, "f", ROOT_INO, "g")
    assert f.attrs.ctime_ns == fs.table.get(ROOT_INO).attrs.ctime_ns > 1
    handle, _ = await fs.open(f.ino, os.O_RDONLY)
    f.attrs.ctime_ns = 1
    await fs.unlink(ROOT_INO, "g")
    assert fs.stat(f).ctime_ns > 1
    await fs.release(handle.fh)


async def test_path_length_limit(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    parent = prev = ROOT_INO
    depth = 0
    while True:
        try:
            parent, prev = (await fs.mkdir(parent, "d" * 255, 0o755, CALLER)).ino, parent
        except FsError as e:
            assert e.errno == errno.ENAMETOOLONG
            break
        depth += 1
    assert depth == MAX_NAME_BYTES // 256  # each level is 255 bytes and a '/'
    handle, node = await fs.create(prev, "f", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"deep")
    await fs.release(handle.fh)
    assert await stored(mem, bucket_name, node.path) == b"deep"
    # A server with the default control line: the smaller limit, still ENAMETOOLONG.
    small = await make_fs(mem, bucket_name, create=False, max_name_bytes=SAFE_NAME_BYTES)
    p = ROOT_INO
    for _ in range(SAFE_NAME_BYTES // 256):
        p = (await small.mkdir(p, "e" * 255, 0o755, CALLER)).ino
    with pytest.raises(FsError) as e:
        await small.mkdir(p, "e" * 255, 0o755, CALLER)
    assert e.value.errno == errno.ENAMETOOLONG


async def test_directory_rename_that_makes_a_name_too_long(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name, max_name_bytes=600)
    a = await fs.mkdir(ROOT_INO, "a", 0o755, CALLER)
    b = await fs.mkdir(a.ino, "b" * 255, 0o755, CALLER)
    await write_file(fs, "c" * 255, b"x", parent=b.ino)
    with pytest.raises(FsError) as e:
        await fs.rename(ROOT_INO, "a", ROOT_INO, "a" * 200)
    assert e.value.errno == errno.ENAMETOOLONG
    assert await stored(mem, bucket_name, f"a/{'b' * 255}/{'c' * 255}") == b"x"
