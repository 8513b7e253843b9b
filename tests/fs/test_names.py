"""Names through the core: rename, unlink, mkdir/rmdir, attributes, lookup counts, odd names."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from fs_helpers import CALLER, read_file, stored, write_file

from objfs.fs import FsError
from objfs.fs.inodes import ROOT_INO
from objfs.fs.values import SetAttr
from objfs.store.api import BucketConfig
from objfs.store.errors import Exists, StoreError


async def names(store, bucket):
    return sorted(i.name for i in await store.list(bucket))


async def test_rename_file_zero_copy(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    node = await write_file(fs, "a", b"data-a")
    nuid = node.info.nuid
    await fs.rename(ROOT_INO, "a", ROOT_INO, "b")
    assert await names(store, bucket_name) == ["b"]
    info = await store.info(bucket_name, "b")
    assert info.nuid == nuid
    assert (await fs.lookup(ROOT_INO, "b")) is node
    with pytest.raises(FsError) as e:
        await fs.lookup(ROOT_INO, "a")
    assert e.value.errno == errno.ENOENT


async def test_rename_over_existing_and_noreplace(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    await write_file(fs, "a", b"AAA")
    await write_file(fs, "b", b"BBB")
    with pytest.raises(FsError) as e:
        await fs.rename(ROOT_INO, "a", ROOT_INO, "b", noreplace=True)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(FsError) as e:
        await fs.rename(ROOT_INO, "a", ROOT_INO, "b", exchange=True)
    assert e.value.errno == errno.EINVAL
    await fs.rename(ROOT_INO, "a", ROOT_INO, "b")
    assert await names(store, bucket_name) == ["b"]
    assert await stored(store, bucket_name, "b") == b"AAA"


async def test_rename_replaces_an_object_the_tree_does_not_show_yet(store, bucket_name, make_fs):
    """Another client stored "b" and this mount's watch has not shown it yet (no watch runs
    here): rename(2) of "a" to "b" still replaces it, as rename(2) always does (it gave
    EEXIST); RENAME_NOREPLACE still refuses."""
    fs = await make_fs(store, bucket_name)
    await write_file(fs, "a", b"AAA")
    await write_file(fs, "c", b"CCC")
    await store.put(bucket_name, "b", b"from another client")
    await store.put(bucket_name, "d", b"from another client too")
    await fs.rename(ROOT_INO, "a", ROOT_INO, "b")
    assert await stored(store, bucket_name, "b") == b"AAA"
    with pytest.raises(Exists) as refused:  # the store's refusal: EEXIST for the kernel
        await fs.rename(ROOT_INO, "c", ROOT_INO, "d", noreplace=True)
    assert refused.value.errno == errno.EEXIST
    assert await stored(store, bucket_name, "d") == b"from another client too"
    assert await names(store, bucket_name) == ["b", "c", "d"]


async def test_rename_over_a_file_open_here_keeps_it_readable_until_its_last_close(
    store, bucket_name, make_fs
):
    """"Write a copy, rename it over the original" while a reader has the original open: the
    reader reads on (a local disk keeps the replaced inode until its last close; the chunks
    were purged at once and the read gave ESTALE), and the chunks go at that close."""
    fs = await make_fs(store, bucket_name)
    await write_file(fs, "v1", b"one")
    target = await write_file(fs, "v2", b"two")
    old = target.info
    handle, _ = await fs.open(target.ino, os.O_RDONLY)
    await fs.rename(ROOT_INO, "v1", ROOT_INO, "v2")
    assert await fs.read(handle.fh, 0, 100) == b"two"
    assert fs.stat(target).nlink == 0  # fstat of the replaced file
    assert await stored(store, bucket_name, "v2") == b"one"
    layout = await store.layout(old)
    assert b"".join(await store.read_chunks(layout, 0, 1)) == b"two"  # kept meanwhile
    await fs.release(handle.fh)
    with pytest.raises(StoreError):  # purged at the last close
        await store.read_chunks(await store.layout(old), 0, 1)
    assert await names(store, bucket_name) == ["v2"]


async def test_rename_directory_moves_everything(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    d = await fs.mkdir(ROOT_INO, "d", 0o755, CALLER)
    sub = await fs.mkdir(d.ino, "sub", 0o755, CALLER)
    await write_file(fs, "x", b"x", parent=d.ino)
    await write_file(fs, "y", b"y", parent=sub.ino)
    before = {i.name: i.nuid for i in await store.list(bucket_name)}
    e = await fs.mkdir(ROOT_INO, "e", 0o755, CALLER)
    await fs.rename(ROOT_INO, "d", e.ino, "moved")
    after = {i.name: i.nuid for i in await store.list(bucket_name)}
    expect = {n.replace("d/", "e/moved/", 1): u for n, u in before.items()}
    expect["e/"] = after["e/"]
    assert after == expect  # every object renamed, nuids kept (no copy)
    moved = await fs.lookup(e.ino, "moved")
    y = await fs.lookup((await fs.lookup(moved.ino, "sub")).ino, "y")
    assert y.path == "e/moved/sub/y"
    assert await read_file(fs, y.ino) == b"y"


async def test_rename_open_file_uploads_to_new_name(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "old", b"v1")
    node = await fs.lookup(ROOT_INO, "old")
    handle, _ = await fs.open(node.ino, os.O_WRONLY | os.O_TRUNC)
    await fs.write(handle.fh, 0, b"v2")
    await fs.rename(ROOT_INO, "old", ROOT_INO, "new")
    await fs.release(handle.fh)
    assert await names(mem, bucket_name) == ["new"]
    assert await stored(mem, bucket_name, "new") == b"v2"
    # A file never uploaded is renamed in the tree only, then uploaded under its new name.
    h2, _ = await fs.create(ROOT_INO, "fresh", 0o644, os.O_WRONLY, CALLER)
    await fs.write(h2.fh, 0, b"f")
    await fs.rename(ROOT_INO, "fresh", ROOT_INO, "renamed")
    await fs.release(h2.fh)
    assert await names(mem, bucket_name) == ["new", "renamed"]


async def test_unlink(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    await write_file(fs, "gone", b"1")
    await fs.unlink(ROOT_INO, "gone")
    assert await names(store, bucket_name) == []
    with pytest.raises(FsError) as e:
        await fs.unlink(ROOT_INO, "gone")
    assert e.value.errno == errno.ENOENT


async def test_mkdir_rmdir_markers(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    d = await fs.mkdir(ROOT_INO, "d", 0o750, CALLER)
    assert await names(store, bucket_name) == ["d/"]
    await write_file(fs, "f", b"z", parent=d.ino)
    with pytest.raises(FsError) as e:
        await fs.rmdir(ROOT_INO, "d")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(FsError) as e:
        await fs.mkdir(ROOT_INO, "d", 0o750, CALLER)
    assert e.value.errno == errno.EEXIST
    await fs.unlink(d.ino, "f")
    await fs.rmdir(ROOT_INO, "d")
    assert await names(store, bucket_name) == []
    # The empty directory survives a remount through its marker.
    await fs.mkdir(ROOT_INO, "empty", 0o700, CALLER)
    fs2 = await make_fs(store, bucket_name)
    again = await fs2.lookup(ROOT_INO, "empty")
    assert again.is_dir and stat.S_IMODE(again.attrs.mode) == 0o700


async def test_attributes_persist_across_remount(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    node = await write_file(fs, "p", b"payload")
    nuid = node.info.nuid
    mtime = 1_234_567_890_123_456_789
    await fs.setattr(node.ino, SetAttr(mode=0o640, uid=42, gid=43), None, CALLER)
    await fs.setattr(node.ino, SetAttr(mtime_ns=mtime, atime_ns=mtime), None, CALLER)
    info = await store.info(bucket_name, "p")
    assert info.nuid == nuid  # metadata only: no data copied
    assert info.headers["Objfs-Mode"] == ["640"]
    fs2 = await make_fs(store, bucket_name)
    st = fs2.stat(await fs2.lookup(ROOT_INO, "p"))
    assert (stat.S_IMODE(st.mode), st.uid, st.gid, st.mtime_ns) == (0o640, 42, 43, mtime)
    assert stat.S_ISREG(st.mode)
    assert await read_file(fs2, st.ino) == b"payload"


async def test_foreign_objects_get_mount_defaults(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name))
    await mem.put(bucket_name, "dir/plain.txt", b"hi")
    fs = await make_fs(mem, bucket_name, uid=7, gid=8, umask=0o027)
    d = await fs.lookup(ROOT_INO, "dir")
    f = await fs.lookup(d.ino, "plain.txt")
    info = await mem.info(bucket_name, "dir/plain.txt")
    st = fs.stat(f)
    assert (st.uid, st.gid, stat.S_IMODE(st.mode)) == (7, 8, 0o640)
    assert st.mtime_ns == info.mtime_ns
    assert stat.S_IMODE(fs.stat(d).mode) == 0o750


async def test_symlink_and_readlink(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    node = await fs.symlink(ROOT_INO, "l", "../outside/target", CALLER)
    assert fs.readlink(node.ino) == "../outside/target"
    fs2 = await make_fs(store, bucket_name)
    again = await fs2.lookup(ROOT_INO, "l")
    assert stat.S_ISLNK(fs2.stat(again).mode)
    assert fs2.readlink(again.ino) == "../outside/target"


async def test_object_link_shows_as_relative_symlink(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name))
    await mem.put(bucket_name, "a/b/target", b"t")
    await mem.add_link(bucket_name, "a/c/link", bucket_name, "a/b/target")
    fs = await make_fs(mem, bucket_name)
    a = await fs.lookup(ROOT_INO, "a")
    c = await fs.lookup(a.ino, "c")
    link = await fs.lookup(c.ino, "link")
    assert fs.readlink(link.ino) == "../b/target"


async def test_refused_kinds(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    node = await write_file(fs, "f", b"")
    with pytest.raises(FsError) as e:
        await fs.link(node.ino, ROOT_INO, "hard", CALLER)
    assert e.value.errno == errno.EPERM
    reg = await fs.mknod(ROOT_INO, "reg", stat.S_IFREG | 0o600, 0, CALLER)
    assert await stored(mem, bucket_name, "reg") == b""
    assert stat.S_IMODE(fs.stat(reg).mode) == 0o600


async def test_name_limits(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    with pytest.raises(FsError) as e:
        await fs.create(ROOT_INO, "n" * 256, 0o644, os.O_WRONLY, CALLER)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(FsError) as e:
        await fs.lookup(ROOT_INO, "n" * 256)
    assert e.value.errno == errno.ENAMETOOLONG
    assert (await fs.statfs()).namemax == 255


async def test_lookup_counts_readdir_forget(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    for name in ("a", "b", "c"):
        await write_file(fs, name, name.encode())
    # write_file's create is one reference each; the kernel forgets them.
    fs.forget([(fs.table.child(fs.root, n).ino, 1) for n in ("a", "b", "c")])
    entries = await fs.readdir(ROOT_INO, 0)
    assert [n.name for _, n in entries] == ["a", "b", "c"]
    for _, n in entries[:2]:  # the kernel's buffer held two entries
        fs.ref(n)
    rest = await fs.readdir(ROOT_INO, entries[1][0])
    assert [n.name for _, n in rest] == ["c"]
    # Entries coming and going do not shift the offsets.
    await fs.unlink(ROOT_INO, "a")
    await write_file(fs, "d", b"d")
    assert [n.name for _, n in await fs.readdir(ROOT_INO, entries[1][0])] == ["c", "d"]
    a, b = entries[0][1], entries[1][1]
    assert (a.lookups, b.lookups) == (1, 1)
    # An unlinked inode the kernel still knows stays until forgotten; forget never raises.
    assert a.ino in fs.table
    fs.forget([(a.ino, 1), (b.ino, 1), (999_999, 3)])
    assert a.ino not in fs.table
    assert b.ino in fs.table and b.lookups == 0


async def test_odd_names_do_not_break_listing(mem, bucket_name, make_fs, caplog):
    await mem.create_bucket(BucketConfig(name=bucket_name))
    for name in ("/abs", "a//b", "x/./y", "x/../y", "n" * 300, "ok", "clash", "clash/inner"):
        await mem.put(bucket_name, name, b"1")
    fs = await make_fs(mem, bucket_name)
    listing = sorted(n.name for _, n in await fs.readdir(ROOT_INO, 0))
    assert listing == ["clash", "ok"]
    clash = await fs.lookup(ROOT_INO, "clash")
    assert clash.is_dir
    assert [n.name for _, n in await fs.readdir(clash.ino, 0)] == ["inner"]
    skipped = fs.tree.skipped
    assert skipped.invalid == {"/abs", "a//b", "x/./y", "x/../y", "n" * 300}
    assert skipped.shadowed == {"clash"}


async def test_all_buckets_root(mem, bucket_name, make_fs):
    fs = await make_fs(mem, None)
    with pytest.raises(FsError) as e:
        await fs.mkdir(ROOT_INO, "bad name!", 0o755, CALLER)
    assert e.value.errno == errno.EINVAL
    b = await fs.mkdir(ROOT_INO, bucket_name, 0o755, CALLER)
    assert bucket_name in {s.name for s in await mem.list_buckets()}
    await write_file(fs, "f", b"in bucket", parent=b.ino)
    assert await stored(mem, bucket_name, "f") == b"in bucket"
    with pytest.raises(FsError) as e:
        await fs.rmdir(ROOT_INO, bucket_name)
    assert e.value.errno == errno.ENOTEMPTY
    await fs.unlink(b.ino, "f")
    await fs.rmdir(ROOT_INO, bucket_name)
    assert bucket_name not in {s.name for s in await mem.list_buckets()}
    # A bucket made by another client shows up on the next listing.
    await mem.create_bucket(BucketConfig(name=bucket_name + "-other"))
    names_ = [n.name for _, n in await fs.readdir(ROOT_INO, 0)]
    assert bucket_name + "-other" in names_


async def test_missing_bucket_without_create(mem, bucket_name, make_fs):
    from objfs.store.errors import NotFound

    with pytest.raises(NotFound):
        await make_fs(mem, bucket_name, create=False)
