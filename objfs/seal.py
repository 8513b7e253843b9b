"""``objfs seal BUCKET``: make a bucket read-only for ever, from the command line.

Sealing cannot be undone (the server refuses to unseal a stream), so the command asks for
``--yes`` instead of prompting: scripts must say it, and a typo cannot seal a bucket by
accident. The same seal can be set from a mount with
``setfattr -n user.objfs.sealed -v 1 DIR`` on the bucket's directory.

It takes the connection options every command does (``objfs.connection``) and needs a named
server (``--server``, a context or ``$NATS_URL``): starting an embedded server here
could race a mount that is using the same store directory.
"""

from __future__ import annotations

import asyncio
import sys

from objfs.connection import SettingsError, check_files
from objfs.options import ConnectOptions
from objfs.store.errors import StoreError
from objfs.store.names import check_bucket


async def _seal(bucket: str, connect: ConnectOptions) -> bool:
    """Seal ``bucket``; returns whether it was sealed already."""
    from objfs.store.nats_store import connect as open_store

    store = await open_store(connect, name="objfs-seal")
    try:
        was = (await store.bucket_status(bucket)).sealed
        if not was:
            await store.seal_bucket(bucket)
        return was
    finally:
        await store.close()


def main(bucket: str, connect: ConnectOptions, *, yes: bool) -> int:
    """Run the command; one line on stderr and exit code 1 on any error."""
    try:
        check_bucket(bucket)
    except StoreError as e:
        print(f"objfs: {e}", file=sys.stderr)
        return 1
    if not connect.servers:
        print("objfs: seal needs --server URL (or --context, $NATS_URL)", file=sys.stderr)
        return 1
    try:
        for warning in check_files(connect):
            print(f"objfs: warning: {warning}", file=sys.stderr)
    except SettingsError as e:
        print(f"objfs: {e}", file=sys.stderr)
        return 1
    if not yes:
        print(
            f"objfs: sealing makes bucket {bucket} read-only for ever; add --yes to seal it",
            file=sys.stderr,
        )
        return 1
    try:
        was = asyncio.run(_seal(bucket, connect))
    except (StoreError, OSError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"objfs: cannot seal {bucket}: {message}", file=sys.stderr)
        return 1
    print(f"bucket {bucket} {'was already' if was else 'is now'} sealed")
    return 0
