"""O_EXCL creation claims the name in the store at create time (fs/files.py ``_claim``).

On both backends: the claim is an exclusive put of an empty object, a name another client
holds is EEXIST, and the watch's report of the claim (which may arrive while the claim's put
is still returning) never makes a second node for the name.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from fs_helpers import CALLER, stored, wait_for, watch_barrier

from objfs.fs.errors import FsError
from objfs.fs.inodes import ROOT_INO

EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL


async def test_o_excl_claims_the_name_and_the_close_stores_the_data(
    store: Any, bucket_name: str, make_fs: Any
) -> None:
    import trio

    fs = await make_fs(store, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        # The watch reports the claim before create goes on (the put returns only then).
        real_put = store.put

        async def put(*args: Any, **kwargs: Any) -> Any:
            before = fs.watcher.applied
            info = await real_put(*args, **kwargs)
            await wait_for(lambda: fs.watcher.applied > before, "the claim's watch event")
            return info

        store.put = put
        try:
            h, node = await fs.create(ROOT_INO, "lock", 0o644, EXCL, CALLER)
        finally:
            del store.put
        claimed = await store.info(bucket_name, "lock")
        assert claimed.size == 0 and node.info is not None and node.info.nuid == claimed.nuid
        assert fs.table.child(fs.root, "lock") is node
        # One inode for the name: the watch's report of the claim did not make another.
        assert [n for n in fs.table.nodes() if n.name == "lock"] == [node]
        await fs.write(h.fh, 0, b"owner")
        await fs.flush(h.fh)
        await fs.release(h.fh)
        assert await stored(store, bucket_name, "lock") == b"owner"
        await watch_barrier(fs, store, bucket_name)
        assert fs.table.child(fs.root, "lock") is node
        nursery.cancel_scope.cancel()


async def test_o_excl_of_a_name_another_client_holds_is_eexist(
    store: Any, bucket_name: str, make_fs: Any
) -> None:
    fs = await make_fs(store, bucket_name)
    # Stored by someone else and not (yet) seen by this mount: no watch is running here.
    await store.put(bucket_name, "taken", b"theirs")
    with pytest.raises(FsError) as e:
        await fs.create(ROOT_INO, "taken", 0o644, EXCL, CALLER)
    assert e.value.errno == errno.EEXIST
    assert await stored(store, bucket_name, "taken") == b"theirs"
    assert fs.table.child(fs.root, "taken") is None


async def test_a_create_that_finds_the_file_made_meanwhile_opens_it(store, bucket_name, make_fs):
    """The kernel sends a create after its lookup found nothing; if the watch showed another
    client's file in between, open(O_CREAT) without O_EXCL opens that file (with O_TRUNC,
    empties it), as open(2) does: it gave EEXIST (two mounts writing one name, under load).
    O_EXCL still gives EEXIST, and a file the caller may not write is EACCES."""
    fs = await make_fs(store, bucket_name)
    handle, node = await fs.create(ROOT_INO, "f", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"first")
    await fs.flush(handle.fh)
    await fs.release(handle.fh)
    lookups = node.lookups
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    again, same = await fs.create(ROOT_INO, "f", 0o644, flags, CALLER)
    assert same is node and node.lookups == lookups + 1
    await fs.write(again.fh, 0, b"second")
    await fs.flush(again.fh)
    await fs.release(again.fh)
    assert await stored(store, bucket_name, "f") == b"second"
    with pytest.raises(FsError) as e:
        await fs.create(ROOT_INO, "f", 0o644, flags | os.O_EXCL, CALLER)
    assert e.value.errno == errno.EEXIST
    stranger = type(CALLER)(uid=CALLER.uid + 1000, gid=CALLER.gid + 1000)
    with pytest.raises(FsError) as e:
        await fs.create(ROOT_INO, "f", 0o644, os.O_WRONLY | os.O_CREAT, stranger)
    assert e.value.errno == errno.EACCES
    assert await stored(store, bucket_name, "f") == b"second"
