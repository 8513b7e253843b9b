"""Extended attributes, links and sealed/read-only buckets through the core (no kernel).

Each change is checked in the store itself (``store.info``/``bucket_status``), not only in
what the core answers, and the memory store's call counter proves that a read-only mount
refuses without asking the server.
"""

from __future__ import annotations

import errno
import os

import pytest
from fs_helpers import CALLER, CHUNK, new_bucket, read_file, stored, write_file

from objfs.fs import FsError
from objfs.fs.inodes import ROOT_INO, Kind
from objfs.fs.values import SetAttr
from objfs.fs.xattrs import META_MAX, VALUE_MAX
from objfs.store.api import Link


async def errno_of(coro) -> int:
    with pytest.raises(FsError) as e:
        await coro
    return e.value.errno


async def test_object_xattrs_round_trip(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    node = await write_file(fs, "f", b"data")
    await fs.setxattr(node.ino, "user.description", b"a file")
    await fs.setxattr(node.ino, "user.header.X-Single", b"one")
    await fs.setxattr(node.ino, "user.header.X-Multi", b'["a","b"]')
    await fs.setxattr(node.ino, "user.header.X-Looks", b'["[\\"x\\"]"]')
    await fs.setxattr(node.ino, "user.header.X-None", b"[]")
    await fs.setxattr(node.ino, "user.color", "blü".encode())
    await fs.setxattr(node.ino, "user.meta.description", b"a key named description")
    info = await store.info(bucket_name, "f")
    assert info.description == "a file"
    assert info.headers["X-Single"] == ["one"]
    assert info.headers["X-Multi"] == ["a", "b"]
    assert info.headers["X-Looks"] == ['["x"]']
    assert info.headers["X-None"] == []
    assert info.metadata == {"color": "blü", "description": "a key named description"}
    assert info.headers["Objfs-Mode"]  # the POSIX headers are kept
    # Another mount reads them back exactly, from the store.
    fs2 = await make_fs(store, bucket_name)
    again = await fs2.lookup(ROOT_INO, "f")
    names = set(await fs2.listxattr(again.ino))
    assert names == {
        "user.description",
        "user.header.X-Single",
        "user.header.X-Multi",
        "user.header.X-Looks",
        "user.header.X-None",
        "user.color",
        "user.meta.description",
    }
    for name in names:
        assert await fs2.getxattr(again.ino, name) == await fs.getxattr(node.ino, name), name
    assert await fs2.getxattr(again.ino, "user.header.X-Looks") == b'["[\\"x\\"]"]'
    assert await fs2.getxattr(again.ino, "user.header.X-Multi") == b'["a","b"]'
    assert await fs2.getxattr(again.ino, "user.meta.color") == "blü".encode()
    # Remove; the data was never copied (same nuid throughout).
    await fs.removexattr(node.ino, "user.header.X-Multi")
    await fs.removexattr(node.ino, "user.color")
    await fs.removexattr(node.ino, "user.description")
    after = await store.info(bucket_name, "f")
    assert "X-Multi" not in after.headers and "color" not in after.metadata
    assert after.description == "" and after.nuid == info.nuid
    assert await stored(store, bucket_name, "f") == b"data"
    assert await errno_of(fs.getxattr(node.ino, "user.color")) == errno.ENODATA
    assert await errno_of(fs.removexattr(node.ino, "user.color")) == errno.ENODATA


async def test_facts_are_read_only_and_own_headers_hidden(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    node = await write_file(fs, "f", b"x" * (2 * CHUNK + 1))
    info = await mem.info(bucket_name, "f")
    facts = {
        "digest": info.digest,
        "nuid": info.nuid,
        "chunks": "3",
        "size": str(2 * CHUNK + 1),
        "bucket": bucket_name,
        "name": "f",
        "chunk_size": str(CHUNK),
    }
    for key, value in facts.items():
        assert await fs.getxattr(node.ino, f"user.objfs.{key}") == value.encode(), key
    assert not [n for n in await fs.listxattr(node.ino) if n.startswith("user.objfs")]
    assert await errno_of(fs.getxattr(node.ino, "user.objfs.link")) == errno.ENODATA
    for name in ("user.objfs.digest", "user.objfs.nuid", "user.objfs.whatever"):
        assert await errno_of(fs.setxattr(node.ino, name, b"x")) == errno.EPERM
        assert await errno_of(fs.removexattr(node.ino, name)) == errno.EPERM
    # objfs's own headers: not listed, not readable, not clobbered.
    assert await fs.listxattr(node.ino) == []
    for header in ("Objfs-Mode", "objfs-uid", "Objfs-Symlink"):
        name = f"user.header.{header}"
        assert await errno_of(fs.getxattr(node.ino, name)) == errno.ENODATA
        assert await errno_of(fs.setxattr(node.ino, name, b"777")) == errno.EPERM
        assert await errno_of(fs.removexattr(node.ino, name)) == errno.EPERM
    assert (await mem.info(bucket_name, "f")).revision == info.revision  # nothing was written


async def test_xattr_errnos(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    node = await write_file(fs, "f", b"")
    for name in ("trusted.x", "security.selinux", "system.posix_acl_access", "other.x"):
        assert await errno_of(fs.getxattr(node.ino, name)) == errno.EOPNOTSUPP
        assert await errno_of(fs.setxattr(node.ino, name, b"v")) == errno.EOPNOTSUPP
    assert await errno_of(fs.getxattr(node.ino, "user.missing")) == errno.ENODATA
    too_big = b"v" * (VALUE_MAX + 1)
    assert await errno_of(fs.setxattr(node.ino, "user.big", too_big)) == errno.E2BIG
    assert await errno_of(fs.setxattr(node.ino, "user.bad", b"\xff\xfe")) == errno.EINVAL
    assert await errno_of(fs.setxattr(node.ino, "user.header.a:b", b"v")) == errno.EINVAL
    assert await errno_of(fs.setxattr(node.ino, "user.", b"v")) == errno.EINVAL
    # The whole meta is bounded: values that fit one by one run out of room together.
    value = b"v" * VALUE_MAX
    for i in range(META_MAX // VALUE_MAX - 1):
        await fs.setxattr(node.ino, f"user.k{i}", value)
    assert await errno_of(fs.setxattr(node.ino, "user.last", value)) == errno.ENOSPC
    assert await fs.getxattr(node.ino, "user.k0") == value


async def test_xattr_on_file_not_uploaded_yet(mem, bucket_name, make_fs):
    """cp -a sets xattrs on the open destination before closing it."""
    fs = await make_fs(mem, bucket_name)
    handle, node = await fs.create(ROOT_INO, "new", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"hello")
    await fs.setxattr(node.ino, "user.origin", b"cp")
    await fs.write(handle.fh, 5, b" world")
    await fs.release(handle.fh)
    info = await mem.info(bucket_name, "new")
    assert info.metadata == {"origin": "cp"}
    assert await stored(mem, bucket_name, "new") == b"hello world"


async def test_xattr_on_implicit_directory_makes_marker(mem, bucket_name, make_fs):
    await new_bucket(mem, bucket_name)
    await mem.put(bucket_name, "d/f", b"x")
    fs2 = await make_fs(mem, bucket_name)
    d = await fs2.lookup(ROOT_INO, "d")
    assert d.info is None and await fs2.listxattr(d.ino) == []
    await fs2.setxattr(d.ino, "user.purpose", b"docs")
    marker = await mem.info(bucket_name, "d/")
    assert marker.metadata == {"purpose": "docs"} and marker.size == 0
    assert await fs2.getxattr(d.ino, "user.purpose") == b"docs"


async def test_bucket_directory_xattrs_and_seal(mem, bucket_name, make_fs):
    fs = await make_fs(mem, None)
    await new_bucket(mem, bucket_name)
    b = await fs.lookup(ROOT_INO, bucket_name)
    facts = {
        "bucket": bucket_name,
        "chunk_size": str(CHUNK),
        "max_bytes": "-1",
        "replicas": "1",
        "storage": "memory",
        "compression": "false",
        "ttl": "0",
        "sealed": "false",
        "objects": "0",
    }
    for key, value in facts.items():
        assert await fs.getxattr(b.ino, f"user.objfs.{key}") == value.encode(), key
    assert int(await fs.getxattr(b.ino, "user.objfs.size")) >= 0
    await fs.setxattr(b.ino, "user.description", b"team bucket")
    await fs.setxattr(b.ino, "user.owner", b"ops")
    status = await mem.bucket_status(bucket_name)
    assert status.config.description == "team bucket"
    assert status.config.metadata == {"owner": "ops"}
    assert set(await fs.listxattr(b.ino)) == {"user.description", "user.owner"}
    await fs.removexattr(b.ino, "user.description")
    assert (await mem.bucket_status(bucket_name)).config.description == ""
    assert await errno_of(fs.setxattr(b.ino, "user.objfs.size", b"1")) == errno.EPERM
    assert await errno_of(fs.setxattr(b.ino, "user.objfs.sealed", b"maybe")) == errno.EINVAL
    await fs.setxattr(b.ino, "user.objfs.sealed", b"0")  # not sealed: nothing happens
    assert not (await mem.bucket_status(bucket_name)).sealed
    f = await write_file(fs, "f", b"before", parent=b.ino)
    await fs.setxattr(b.ino, "user.objfs.sealed", b"1")
    assert (await mem.bucket_status(bucket_name)).sealed
    assert await fs.getxattr(b.ino, "user.objfs.sealed") == b"true"
    # Sealed: every change is EROFS, and never reaches the store; reads keep working.
    before = dict(mem.store.calls)
    changes = [
        fs.create(b.ino, "x", 0o644, os.O_WRONLY, CALLER),
        fs.open(f.ino, os.O_WRONLY),
        fs.open(f.ino, os.O_RDONLY | os.O_TRUNC),
        fs.mkdir(b.ino, "d", 0o755, CALLER),
        fs.mknod(b.ino, "n", 0o100644, 0, CALLER),
        fs.unlink(b.ino, "f"),
        fs.rename(b.ino, "f", b.ino, "g"),
        fs.symlink(b.ino, "l", "f", CALLER),
        fs.setattr(f.ino, SetAttr(mode=0o600), None, CALLER),
        fs.setxattr(f.ino, "user.k", b"v"),
        fs.removexattr(f.ino, "user.k"),
        fs.setxattr(b.ino, "user.description", b"x"),
        fs.setxattr(b.ino, "user.objfs.sealed", b"0"),
        fs.rmdir(ROOT_INO, bucket_name),
    ]
    for op in changes:
        assert await errno_of(op) == errno.EROFS
    assert dict(mem.store.calls) == before
    assert await read_file(fs, f.ino) == b"before"
    assert await fs.getxattr(f.ino, "user.objfs.bucket") == bucket_name.encode()


async def test_read_only_mount_never_asks_the_server(mem, bucket_name, make_fs):
    writer = await make_fs(mem, bucket_name)
    f = await write_file(writer, "f", b"data")
    await writer.setxattr(f.ino, "user.k", b"v")
    fs = await make_fs(mem, bucket_name, read_only=True)
    f = await fs.lookup(ROOT_INO, "f")
    before = dict(mem.store.calls)
    changes = [
        fs.setxattr(f.ino, "user.k", b"w"),
        fs.removexattr(f.ino, "user.k"),
        fs.setxattr(ROOT_INO, "user.objfs.sealed", b"1"),
        fs.setxattr(ROOT_INO, "user.description", b"x"),
        fs.open(f.ino, os.O_RDWR),
        fs.unlink(ROOT_INO, "f"),
        fs.rename(ROOT_INO, "f", ROOT_INO, "g"),
        fs.symlink(ROOT_INO, "l", "f", CALLER),
        fs.setattr(f.ino, SetAttr(uid=1), None, CALLER),
        fs.mkdir(ROOT_INO, "d", 0o755, CALLER),
        fs.rmdir(ROOT_INO, "nothing"),
    ]
    for op in changes:
        assert await errno_of(op) == errno.EROFS
    assert await fs.getxattr(f.ino, "user.k") == b"v"  # answered from the tree
    assert dict(mem.store.calls) == before
    assert not (await mem.bucket_status(bucket_name)).sealed


async def test_ln_s_makes_object_links(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    d = await fs.mkdir(ROOT_INO, "d", 0o755, CALLER)
    await write_file(fs, "t", b"target bytes", parent=d.ino)
    link = await fs.symlink(ROOT_INO, "l", "d/t", CALLER)
    assert fs.readlink(link.ino) == "d/t"
    info = await store.info(bucket_name, "l")
    assert info.link == Link(bucket_name, "d/t")
    assert info.headers["Objfs-Symlink"] == ["d/t"]
    # A link to that link points at the final object (no link to a link).
    again = await fs.symlink(d.ino, "l2", "../l", CALLER)
    assert (await store.info(bucket_name, "d/l2")).link == Link(bucket_name, "d/t")
    assert fs.readlink(again.ino) == "../l"
    # Absolute targets under the mount point resolve too.
    mp = str(fs.options.mountpoint)
    await fs.symlink(ROOT_INO, "abs", f"{mp}/d/t", CALLER)
    assert (await store.info(bucket_name, "abs")).link == Link(bucket_name, "d/t")
    # Dangling, outside, directory: plain symlink objects.
    for name, target in (("dangling", "nope"), ("outside", "../../etc"), ("dir", "d")):
        await fs.symlink(ROOT_INO, name, target, CALLER)
        plain = await store.info(bucket_name, name)
        assert plain.link is None and plain.headers["Objfs-Symlink"] == [target], name
    # A remount reads the typed targets back; unlinking a link keeps its target.
    fs2 = await make_fs(store, bucket_name)
    l2 = await fs2.lookup(ROOT_INO, "l")
    assert l2.kind is Kind.SYMLINK and fs2.readlink(l2.ino) == "d/t"
    await fs2.unlink(ROOT_INO, "l")
    assert await stored(store, bucket_name, "d/t") == b"target bytes"


async def test_foreign_links_read_as_relative_symlinks(mem, bucket_name, make_fs):
    await new_bucket(mem, bucket_name)
    other = await new_bucket(mem, bucket_name[:30] + "-other")
    await mem.put(bucket_name, "a/b/target", b"x")
    await mem.put(other, "obj", b"y")
    await mem.add_link(bucket_name, "a/c/link", bucket_name, "a/b/target")
    await mem.add_link(bucket_name, "a/far", other, "obj")
    await mem.add_bucket_link(bucket_name, "a/c/bucket", other)
    await mem.add_bucket_link(bucket_name, "self", bucket_name)
    fs = await make_fs(mem, None)
    b = await fs.lookup(ROOT_INO, bucket_name)
    a = await fs.lookup(b.ino, "a")
    c = await fs.lookup(a.ino, "c")
    expect = {
        (c.ino, "link"): "../b/target",
        (a.ino, "far"): f"../../{other}/obj",
        (c.ino, "bucket"): f"../../../{other}",
        (b.ino, "self"): ".",
    }
    for (parent, name), text in expect.items():
        node = await fs.lookup(parent, name)
        assert fs.readlink(node.ino) == text, name
        assert fs.stat(node).size == len(text.encode()), name
    link = await fs.lookup(c.ino, "link")
    assert await fs.getxattr(link.ino, "user.objfs.link") == f"{bucket_name}/a/b/target".encode()
    # ln -s at the all-buckets root level: a bucket link, and a link across buckets.
    await fs.symlink(b.ino, "to-other", f"../{other}", CALLER)
    assert (await mem.info(bucket_name, "to-other")).link == Link(other)
    await fs.symlink(b.ino, "to-obj", f"../{other}/obj", CALLER)
    assert (await mem.info(bucket_name, "to-obj")).link == Link(other, "obj")
    # The target goes: the link stays, dangling.
    await mem.delete(bucket_name, "a/b/target")
    assert fs.readlink(link.ino) == "../b/target"
    assert (await mem.info(bucket_name, "a/c/link")).link is not None


async def test_link_meta_update_and_attrs(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "t", b"x")
    link = await fs.symlink(ROOT_INO, "l", "t", CALLER)
    await fs.setattr(link.ino, SetAttr(uid=42), None, CALLER)
    info = await mem.info(bucket_name, "l")
    assert info.link == Link(bucket_name, "t") and info.headers["Objfs-Uid"] == ["42"]
    assert fs.readlink(link.ino) == "t"
    target = await mem.info(bucket_name, "t")
    assert target.headers["Objfs-Uid"] == [str(CALLER.uid)]  # the target is untouched
