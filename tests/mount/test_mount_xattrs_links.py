"""xattrs, links, sealed and read-only buckets on a real mount, checked by nats-py.

nats-py's ObjectStore is the independent client: it reads descriptions, headers and links;
the metadata map (which it does not model) and links (which it cannot write) are read and
written as raw ADR-20 meta messages with its JetStream API.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import errno
import json
import os
import secrets
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from helpers import data, sh, wait_for
from mounting import Mount, MountFactory, objfs_command

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def with_js(url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


async def raw_meta(js: Any, bucket: str, name: str) -> dict[str, Any]:
    msg = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, name))
    return json.loads(msg.data)


async def publish_link(js: Any, bucket: str, name: str, link: dict[str, str]) -> None:
    """A link as the Go client writes it (nats-py has no link API)."""
    info: dict[str, Any] = {"name": name, "bucket": bucket, "nuid": secrets.token_hex(11)}
    info.update(size=0, chunks=0, mtime="2026-01-01T00:00:00Z", options={"link": link})
    await js.publish(
        meta_subject(bucket, name), json.dumps(info).encode(), headers={"Nats-Rollup": "sub"}
    )


def os_errno(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def getxattr_sized(path: Path, name: str, size: int) -> int:
    """getxattr(2) with a ``size``-byte buffer: the length, or minus the errno."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.getxattr(str(path).encode(), name.encode(), buf if size else None, size)
    return n if n >= 0 else -ctypes.get_errno()


def test_object_xattrs_round_trip_with_nats_client(mount: Mount) -> None:
    f = mount.mountpoint / "doc.txt"
    f.write_bytes(b"content")
    os.setxattr(f, "user.description", b"the doc")
    os.setxattr(f, "user.header.X-Tags", b'["red","blue"]')
    os.setxattr(f, "user.header.X-One", b"single")
    os.setxattr(f, "user.origin", b"mount")
    bucket = str(mount.bucket)

    async def read(js: Any) -> tuple[Any, dict[str, Any]]:
        info = await (await js.object_store(bucket)).get_info("doc.txt")
        return info, await raw_meta(js, bucket, "doc.txt")

    info, raw = with_js(mount.server_url, read)
    assert info.description == "the doc"
    assert info.headers["X-Tags"] == ["red", "blue"] and info.headers["X-One"] == ["single"]
    assert raw["metadata"] == {"origin": "mount"}
    assert sorted(os.listxattr(f)) == sorted(
        ["user.description", "user.header.X-Tags", "user.header.X-One", "user.origin"]
    )
    assert os.getxattr(f, "user.objfs.digest") == info.digest.encode()
    assert os.getxattr(f, "user.objfs.nuid") == info.nuid.encode()
    assert os.getxattr(f, "user.objfs.chunks") == b"1"
    assert os.getxattr(f, "user.objfs.bucket") == bucket.encode()

    # The client changes them (nats-py update_meta keeps the rest of the meta): seen here.
    async def change(js: Any) -> None:
        store = await js.object_store(bucket)
        meta = info.meta
        meta.description = "changed by client"
        meta.headers = dict(info.headers, **{"X-Tags": ["green"]})
        await store.update_meta("doc.txt", meta)

    with_js(mount.server_url, change)
    wait_for(lambda: os.getxattr(f, "user.description") == b"changed by client", "update")
    assert os.getxattr(f, "user.header.X-Tags") == b"green"
    assert f.read_bytes() == b"content"

    # ext4's errnos.
    assert getxattr_sized(f, "user.header.X-One", 0) == len(b"single")  # size probe
    assert getxattr_sized(f, "user.header.X-One", 3) == -errno.ERANGE
    assert os_errno(lambda: os.getxattr(f, "user.nothing")) == errno.ENODATA
    assert os_errno(lambda: os.removexattr(f, "user.nothing")) == errno.ENODATA
    assert os_errno(lambda: os.setxattr(f, "user.objfs.digest", b"x")) == errno.EPERM
    assert os_errno(lambda: os.setxattr(f, "user.header.Objfs-Mode", b"777")) == errno.EPERM
    assert os_errno(lambda: os.setxattr(f, "trusted.x", b"v")) == errno.EOPNOTSUPP
    assert os_errno(lambda: os.setxattr(f, "security.x", b"v")) == errno.EOPNOTSUPP
    assert os_errno(lambda: os.setxattr(f, "user.big", b"v" * 70000)) == errno.E2BIG
    for i in range(3):
        os.setxattr(f, f"user.fill{i}", b"v" * 65536)
    assert os_errno(lambda: os.setxattr(f, "user.fill3", b"v" * 65536)) == errno.ENOSPC
    os.removexattr(f, "user.fill0")  # (nats-py's update_meta dropped the metadata map)
    raw = with_js(mount.server_url, lambda js: raw_meta(js, bucket, "doc.txt"))
    assert set(raw["metadata"]) == {"fill1", "fill2"}


def test_links_both_ways(mounts: MountFactory, bucket_name: str) -> None:
    mount = mounts()
    mnt, bucket = mount.mountpoint, bucket_name
    other = bucket_name[:40] + "-o"
    (mnt / "dir").mkdir()
    body = data(300_000, 41)
    (mnt / "dir/target.bin").write_bytes(body)

    async def client_links(js: Any) -> None:
        await js.create_object_store(other)
        await (await js.object_store(other)).put("there.txt", b"other bucket")
        await publish_link(js, bucket, "sub/link", {"bucket": bucket, "name": "dir/target.bin"})
        await publish_link(js, bucket, "blink", {"bucket": other})

    with_js(mount.server_url, client_links)
    wait_for(lambda: (mnt / "sub/link").is_symlink(), "client link")
    assert os.readlink(mnt / "sub/link") == "../dir/target.bin"
    assert (mnt / "sub/link").read_bytes() == body
    assert os.lstat(mnt / "sub/link").st_size == len("../dir/target.bin")
    wait_for(lambda: (mnt / "blink").is_symlink(), "client bucket link")
    assert os.readlink(mnt / "blink") == f"../{other}"

    # ln -s to an existing object: a NATS link that nats-py follows.
    os.symlink("dir/target.bin", mnt / "mine")
    assert os.readlink(mnt / "mine") == "dir/target.bin"
    assert (mnt / "mine").read_bytes() == body

    async def read_link(js: Any) -> tuple[Any, bytes]:
        store = await js.object_store(bucket)
        return await store.get_info("mine"), (await store.get("mine")).data

    info, via_client = with_js(mount.server_url, read_link)
    assert info.is_link() and info.options.link.name == "dir/target.bin"
    assert via_client == body
    # Deleting a link keeps the target; a link whose target is gone is dangling, not EIO.
    os.unlink(mnt / "mine")
    assert (mnt / "dir/target.bin").read_bytes() == body
    os.unlink(mnt / "dir/target.bin")
    assert os.readlink(mnt / "sub/link") == "../dir/target.bin"
    assert not (mnt / "sub/link").exists()
    assert os_errno(lambda: (mnt / "sub/link").read_bytes()) == errno.ENOENT

    # The all-buckets view: the bucket link resolves, and ln -s to a bucket makes one.
    allb = mounts(bucket=None, name="all")
    assert (allb.mountpoint / bucket / "blink" / "there.txt").read_bytes() == b"other bucket"
    os.symlink(f"../{other}", allb.mountpoint / bucket / "to-other")
    raw = with_js(mount.server_url, lambda js: raw_meta(js, bucket, "to-other"))
    assert raw["options"]["link"] == {"bucket": other}


def test_cp_a_tree_with_symlinks_in_and_out(mount: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file.txt").write_bytes(b"file")
    (src / "sub/deep.bin").write_bytes(data(5000, 3))
    os.setxattr(src / "file.txt", "user.mark", b"kept")
    os.symlink("file.txt", src / "to-file")
    os.symlink("../file.txt", src / "sub/up")
    os.symlink("sub", src / "to-dir")
    os.symlink("missing", src / "dangling")
    os.symlink("/etc/hostname", src / "outside")
    links = ["to-file", "sub/up", "to-dir", "dangling", "outside"]
    sh("cp", "-a", src, mount.mountpoint / "tree")
    dst = mount.mountpoint / "tree"
    for rel in links:
        assert os.readlink(dst / rel) == os.readlink(src / rel), rel
    assert (dst / "to-file").read_bytes() == b"file"
    assert os.getxattr(dst / "file.txt", "user.mark") == b"kept"
    raw = with_js(mount.server_url, lambda js: raw_meta(js, str(mount.bucket), "tree/to-file"))
    assert raw["options"]["link"] == {"bucket": mount.bucket, "name": "tree/file.txt"}
    out = tmp_path / "out"
    r = subprocess.run(["cp", "-a", dst, out], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stderr, r.stderr  # no xattr the copy cannot set
    for rel in links:
        assert os.readlink(out / rel) == os.readlink(src / rel), rel
    assert (out / "sub/deep.bin").read_bytes() == (src / "sub/deep.bin").read_bytes()
    assert os.listxattr(out / "file.txt") == ["user.mark"]


def test_seal_from_the_mount(mount: Mount) -> None:
    mnt = mount.mountpoint
    (mnt / "f").write_bytes(b"before")
    assert os.getxattr(mnt, "user.objfs.sealed") == b"false"
    assert os.getxattr(mnt, "user.objfs.objects") == b"1"
    os.setxattr(mnt, "user.description", b"archive")
    os.setxattr(mnt, "user.objfs.sealed", b"1")

    async def status(js: Any) -> Any:
        return await (await js.object_store(str(mount.bucket))).status()

    st = with_js(mount.server_url, status)
    assert st.sealed and st.description == "archive"
    f = mnt / "f"
    refused: list[Callable[[], object]] = [
        lambda: (mnt / "new").write_bytes(b"x"),
        lambda: open(f, "ab"),  # noqa: SIM115
        lambda: (mnt / "d").mkdir(),
        lambda: f.unlink(),
        lambda: f.rename(mnt / "g"),
        lambda: f.chmod(0o600),
        lambda: os.symlink("f", mnt / "l"),
        lambda: os.setxattr(f, "user.k", b"v"),
        lambda: os.setxattr(mnt, "user.description", b"x"),
    ]
    for op in refused:
        assert os_errno(op) == errno.EROFS
    assert f.read_bytes() == b"before"
    assert os.getxattr(mnt, "user.objfs.sealed") == b"true"


def test_read_only_mount_refuses_xattrs_and_links(mounts: MountFactory) -> None:
    rw = mounts()
    (rw.mountpoint / "f").write_bytes(b"x")
    os.setxattr(rw.mountpoint / "f", "user.k", b"v")
    ro = mounts("--read-only")
    f = ro.mountpoint / "f"
    assert os.getxattr(f, "user.k") == b"v"
    for op in (
        lambda: os.setxattr(f, "user.k", b"w"),
        lambda: os.removexattr(f, "user.k"),
        lambda: os.symlink("f", ro.mountpoint / "l"),
        lambda: os.setxattr(ro.mountpoint, "user.objfs.sealed", b"1"),
    ):
        assert os_errno(op) == errno.EROFS
    assert os.getxattr(rw.mountpoint, "user.objfs.sealed") == b"false"


def test_objfs_seal_command(nats_server: Any, bucket_name: str) -> None:
    with_js(nats_server.url, lambda js: js.create_object_store(bucket_name))
    cmd = objfs_command("seal", "--server", nats_server.url, bucket_name)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--yes" in r.stderr

    async def sealed(js: Any) -> bool:
        return (await (await js.object_store(bucket_name)).status()).sealed

    assert not with_js(nats_server.url, sealed)
    r = subprocess.run([*cmd, "--yes"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert with_js(nats_server.url, sealed)
