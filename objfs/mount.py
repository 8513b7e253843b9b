"""The mount's lifetime: checks, start-up in order, one FUSE main loop, orderly shutdown.

Start-up builds, in order: the embedded nats-server (only when no server is named), the
asyncio thread that runs nats-py, the store connection, the filesystem (which loads the
bucket's snapshot), then the kernel mount. Everything is registered on one ``AsyncExitStack``
as it is built, so shutdown runs in exactly the reverse order whatever failed half-way, and
the server, started first, stops last (s3ql's pattern).

The mount ends in three ways, all clean: ``fusermount3 -u`` (the kernel closes the session and
``pyfuse3.main`` returns), SIGINT/SIGTERM/SIGHUP (a task calls ``pyfuse3.terminate``), or an
error. Then pending uploads finish (``fs.shutdown``), the kernel mount is removed, and the
store, the thread and the server are stopped. Uploads that failed are reported with the spool
file that keeps their data, and the exit code is 1.

User errors (a missing mount point, an unreachable server, a missing bucket) are ``MountError``
or store/server errors and end as one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.daemon import Reporter, daemonize
from objfs.fs import Filesystem, spool_dir
from objfs.kernel_readahead import raise_readahead
from objfs.log import console, level_for, setup
from objfs.options import MountOptions
from objfs.sd_notify import Notifier
from objfs.server import EmbeddedServer, ServerError
from objfs.store.api import ObjectStore
from objfs.store.errors import InvalidName, NotFound, StoreError
from objfs.store.names import check_bucket

if TYPE_CHECKING:  # the backend module is imported when connecting, not at start-up
    from objfs.store.nats_store import NatsObjectStore

log = logging.getLogger("objfs.mount")

# FUSE options objfs handles itself instead of passing them to libfuse 3, which rejects them.
_OWN_FUSE_OPTIONS = frozenset({"nonempty"})


class MountError(Exception):
    """A user-facing failure; its message is the whole one-line explanation."""


def main(options: MountOptions, *, verbose: int = 0) -> int:
    """``objfs mount``: check, maybe daemonize, mount until unmounted. Returns the exit code."""
    level = level_for(verbose, options.debug)
    setup(level)
    try:
        check_mountpoint(options)
        check_spool(options)
        check_connect_files(options)
        check_fuse()
        if options.bucket is not None:
            check_bucket(options.bucket)
    except (MountError, InvalidName) as e:
        console(str(e), logging.ERROR)
        return 1
    # Read (and taken out of the environment) before anything starts: children such as the
    # embedded nats-server must not notify systemd on objfs's behalf.
    notifier = Notifier()
    reporter = Reporter(None, notifier)
    if options.daemon:
        log_file = options.connect.data_dir / "objfs.log"
        child = daemonize(log_file, notifier)
        if isinstance(child, int):
            return child  # the parent: the child reported ready, or its error was printed
        reporter = child
        setup(level, log_file)
    return run(options, reporter)


def run(options: MountOptions, reporter: Reporter | None = None) -> int:
    """Mount and serve until unmounted or signalled (the caller has set up logging)."""
    reporter = reporter or Reporter(None)
    try:
        try:
            return trio.run(_main, options, reporter)
        except BaseExceptionGroup as group:
            # Nurseries wrap errors in groups; the user wants the one that ended the mount.
            raise _first_leaf(group) from None
    except (MountError, ServerError, StoreError) as e:
        message = _one_line(e)
    except OSError as e:
        message = f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
    except Exception as e:
        log.debug("unexpected error", exc_info=True)
        message = f"internal error: {type(e).__name__}: {_one_line(e)}"
        if options.debug:
            log.exception("traceback")
    log.debug("exiting with error: %s", message)
    reporter.failed(message)
    console(message, logging.ERROR)
    return 1


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# -- checks before anything starts -----------------------------------------------------------


def check_mountpoint(options: MountOptions) -> None:
    """Refuse a mount point that is missing, not a directory, mounted, or in use."""
    mp = options.mountpoint
    try:
        st = os.stat(mp)
    except FileNotFoundError:
        raise MountError(f"mount point {mp} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountError(
                f"{mp} is a dead FUSE mount; clear it with: fusermount3 -uz {mp}"
            ) from None
        raise MountError(f"cannot use mount point {mp}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mp} is not a directory")
    real = os.path.realpath(mp)
    if real in mounted_paths():
        raise MountError(f"{mp} is already mounted (unmount it first: fusermount3 -u {mp})")
    if not os.access(real, os.R_OK | os.W_OK | os.X_OK):
        raise MountError(f"no permission to mount on {mp}")
    if "nonempty" not in options.fuse_options and os.listdir(real):
        raise MountError(f"mount point {mp} is not empty (mount over it with -o nonempty)")
    options.mountpoint = Path(real)  # absolute: a daemon moves to /


def check_connect_files(options: MountOptions) -> None:
    """Refuse unreadable credential and TLS files before connecting (nats-py would retry a
    connection for ever on a credentials file it cannot read)."""
    c = options.connect
    for flag, path in (
        ("--creds", c.creds),
        ("--tls-ca", c.tls_ca),
        ("--tls-cert", c.tls_cert),
        ("--tls-key", c.tls_key),
    ):
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        except OSError as e:
            raise MountError(f"{flag} {path}: {e.strerror or e}") from None
        if flag == "--creds" and (b"NATS USER JWT" not in head or b"NKEY SEED" not in head):
            raise MountError(
                f"--creds {path}: not a NATS credentials file (a user JWT and NKey seed, as "
                "made by nsc)"
            )


def check_spool(options: MountOptions) -> None:
    """Refuse a spool base that cannot hold files; warn about data earlier mounts left there."""
    base = spool_dir.base_for(options)
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = spool_dir.create(base)
        spool_dir.remove(probe)
    except OSError as e:
        raise MountError(f"cannot use spool directory {base}: {e.strerror or e}") from None
    spool_dir.warn_leftovers(base)


def mounted_paths() -> set[str]:
    """Mount points of this mount namespace (from /proc/self/mountinfo, unescaped)."""
    paths: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                # The kernel escapes space, tab, newline and backslash as \ooo.
                paths.add(_unescape(fields[4]))
    return paths


def _unescape(path: str) -> str:
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def check_fuse() -> None:
    """Refuse early when the kernel side of FUSE cannot be used."""
    if not os.path.exists("/dev/fuse"):
        raise MountError(
            "/dev/fuse is missing: load the fuse module (modprobe fuse), or in a container "
            "pass the device (--device /dev/fuse --cap-add SYS_ADMIN)"
        )
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError("no permission to open /dev/fuse (add yourself to the fuse group?)")
    if os.geteuid() != 0:
        import shutil

        if shutil.which("fusermount3") is None:
            raise MountError("fusermount3 not found: install the fuse3 package")


# -- the mount's lifetime ----------------------------------------------------------------------


@dataclass
class _State:
    """What the signal task needs to know about where start-up or shutdown is."""

    mounted: bool = False
    stopping: bool = False
    interrupted: bool = False


async def _main(options: MountOptions, reporter: Reporter) -> int:
    state = _State()
    # Installed first so that a signal during start-up cancels it cleanly (no
    # KeyboardInterrupt traceback, nothing left running).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_handle_signals, signals, state, nursery.cancel_scope)
            try:
                code = await _mount(options, reporter, state)
            finally:
                nursery.cancel_scope.cancel()
            return code
    # Reached only when a signal cancelled start-up.
    raise MountError("interrupted before the mount was ready")


async def _handle_signals(
    signals: AsyncIterator[int], state: _State, startup_scope: trio.CancelScope
) -> None:
    import pyfuse3

    async for signum in signals:
        name = signal.Signals(signum).name
        if state.stopping:
            log.warning("%s: still finishing uploads; SIGKILL would lose them", name)
        elif state.mounted:
            log.info("%s: unmounting", name)
            state.stopping = True
            pyfuse3.terminate()
        else:
            log.info("%s during start-up: stopping", name)
            state.interrupted = True
            startup_scope.cancel()


async def _mount(options: MountOptions, reporter: Reporter, state: _State) -> int:
    import pyfuse3

    from objfs.fs import FuseOperations

    async with contextlib.AsyncExitStack() as stack:
        servers = list(options.connect.servers)
        if not servers:
            servers = [await _start_embedded_server(options, stack)]
        thread = AsyncioThread().start()
        stack.callback(thread.stop)
        bridge = Bridge(thread)
        backend = await _connect(bridge, servers, options)
        via = backend.connected_server or ",".join(servers)
        stack.push_async_callback(_close_store, bridge, backend)
        limit = backend.max_chunk_size
        if limit is not None and options.chunk_size > limit:
            raise MountError(
                f"--chunk-size {options.chunk_size} is larger than the server's max_payload "
                f"({limit} bytes): use a smaller chunk size or raise max_payload on the server"
            )
        store = TrioStore(backend, bridge)

        fs = Filesystem(store, options)
        # Normally shut down below, before the kernel mount goes; this covers a start-up that
        # fails half-way: the watches stop before the store and the asyncio thread do.
        stack.push_async_callback(_shutdown_quietly, fs)
        await _start_fs(fs, options)
        fuse_opts = {o for o in fs.fuse_options() if o not in _OWN_FUSE_OPTIONS}
        before = os.stat(options.mountpoint).st_dev
        log.debug("FUSE options: %s", ",".join(sorted(fuse_opts)))
        try:
            pyfuse3.init(FuseOperations(fs), str(options.mountpoint), fuse_opts)
        except RuntimeError as e:
            # libfuse has printed the reason (bad option, permission) to stderr already.
            raise MountError(f"the kernel refused to mount {options.mountpoint}: {e}") from None
        state.mounted = True
        failures: list[tuple[str, str, str]] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fs.run_background)
                nursery.start_soon(_announce, options, before, reporter, via)
                nursery.start_soon(reporter.notifier.watchdog)
                await pyfuse3.main()
                log.debug("FUSE main loop ended")
                nursery.cancel_scope.cancel()
        finally:
            state.stopping = True
            reporter.stopping(f"unmounting {options.mountpoint}: finishing uploads")
            # Uploads first: the data users closed files on must reach the store even when
            # the loop ended by a signal or an error. Shielded: nothing may cut this short.
            with trio.CancelScope(shield=True):
                try:
                    failures = await fs.shutdown()
                finally:
                    state.mounted = False
                    pyfuse3.close(unmount=True)
                    log.info("unmounted %s", options.mountpoint)
        for path, spool, message in failures:
            log.error("upload of %s failed (%s); its data is kept in %s", path, message, spool)
            print(
                f"objfs: upload of {path} failed: {message}; data kept in {spool}",
                file=sys.stderr,
            )
        return 1 if failures else 0
    raise AssertionError("unreachable")


async def _start_embedded_server(options: MountOptions, stack: contextlib.AsyncExitStack) -> str:
    srv = EmbeddedServer(options.connect.data_dir)
    # Registered before starting: a signal during start-up must not leave the server running
    # (stop() of a server that never started does nothing).
    stack.callback(srv.stop)
    # nats-server start-up is a blocking wait for its port, done in a thread; it is not
    # abandoned on cancel, so the server is either fully started or not at all.
    await trio.to_thread.run_sync(srv.start)
    log.info("embedded nats-server at %s (log: %s)", srv.url, srv.log_path)
    return srv.url


async def _connect(
    bridge: Bridge, servers: list[str], options: MountOptions
) -> NatsObjectStore:
    from objfs.store.nats_store import connect

    c = options.connect
    where = ",".join(servers)
    # The store's own timeout should fire first; this bound is the backstop.
    with trio.move_on_after(c.timeout * 2 + 3) as scope:  # connect() gives up at 2t+1
        try:
            return await bridge.call(connect, servers, **c.client_kwargs())
        except StoreError as e:  # its message names the servers and the cause
            raise MountError(_one_line(e)) from None
        except (OSError, ValueError) as e:
            raise MountError(f"cannot connect to NATS at {where}: {_one_line(e)}") from None
    assert scope.cancelled_caught
    raise MountError(f"cannot connect to NATS at {where}: no answer in {c.timeout:g}s")


async def _shutdown_quietly(fs: Filesystem) -> None:
    with trio.CancelScope(shield=True):
        try:
            await fs.shutdown()
        except Exception as e:  # must not hide the error that ended start-up
            log.warning("stopping the filesystem: %s", _one_line(e))


async def _close_store(bridge: Bridge, backend: ObjectStore) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        try:
            await bridge.call(backend.close)
        except Exception as e:  # closing must not hide the error that ended the mount
            log.warning("closing the store connection: %s", _one_line(e))


async def _start_fs(fs: Filesystem, options: MountOptions) -> None:
    try:
        await fs.start()
    except NotFound as e:
        if options.bucket is not None and not options.create:
            raise MountError(
                f"bucket {options.bucket!r} does not exist (add --create to create it)"
            ) from None
        raise MountError(f"cannot open the store: {_one_line(e)}") from None
    except StoreError as e:
        raise MountError(f"cannot open the store: {_one_line(e)}") from None


async def _announce(options: MountOptions, before: int, reporter: Reporter, via: str) -> None:
    """Report ready once the mount answers: a stat of the mount point shows a new device.

    The stat runs in a thread because this process serves it: doing it on the trio thread
    would wait for itself.
    """
    mp = options.mountpoint
    with trio.move_on_after(max(options.connect.timeout, 10)) as scope:
        while True:
            try:
                st = await trio.to_thread.run_sync(os.stat, mp, abandon_on_cancel=True)
            except OSError as e:
                reporter.failed(f"the mount at {mp} does not answer: {e.strerror}")
                return
            if st.st_dev != before:
                break
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        reporter.failed(f"the mount at {mp} did not appear")
        return
    raise_readahead(st.st_dev)
    what = f"bucket {options.bucket}" if options.bucket else "all buckets"
    line = f"mounted {what} at {mp} via {via}"
    log.info("%s", line)
    reporter.ready(line)
