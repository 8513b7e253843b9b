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
import dataclasses
import errno
import functools
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from objfs import mountinfo, status
from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.connection import SettingsError, check_files
from objfs.daemon import Reporter, daemonize
from objfs.fs import Filesystem, spool_dir
from objfs.fs.stats import RecentErrors
from objfs.kernel_readahead import raise_readahead
from objfs.log import console, level_for, setup
from objfs.options import MountOptions, redact
from objfs.sd_notify import Notifier
from objfs.server import EmbeddedServer, ServerError
from objfs.store.api import ObjectStore
from objfs.store.errors import InvalidName, NotFound, StoreError
from objfs.store.names import check_bucket

if TYPE_CHECKING:  # the backend module is imported when connecting, not at start-up
    from objfs.store.nats_store import NatsObjectStore

log = logging.getLogger("objfs.mount")

STATUS_INTERVAL = 0.3
"""Least seconds between two STATUS= lines to systemd."""

# FUSE options objfs handles itself instead of passing them to libfuse 3, which rejects them.
_OWN_FUSE_OPTIONS = frozenset({"nonempty"})


class MountError(Exception):
    """A user-facing failure; its message is the whole one-line explanation."""


def main(options: MountOptions, *, verbose: int = 0) -> int:
    """``objfs mount``: check, maybe daemonize, mount until unmounted. Returns the exit code."""
    level = options.log_level
    if level is None:
        level = level_for(verbose, options.debug)
    try:
        setup(level, options.log_file)
    except OSError as e:
        console(f"cannot write the log file {options.log_file}: {e.strerror or e}", logging.ERROR)
        return 1
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
        log_file = options.log_file or options.connect.data_dir / "objfs.log"
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
        if e.errno != errno.ENOTCONN:
            raise MountError(f"cannot use mount point {mp}: {e.strerror}") from None
        clear_dead_mount(mp)
        try:
            st = os.stat(mp)
        except OSError as again:  # e.g. another dead mount under the one cleared
            raise MountError(f"cannot use mount point {mp}: {again.strerror}") from None
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


def clear_dead_mount(mp: Path) -> None:
    """Unmount the dead objfs mount at ``mp`` (its daemon was killed), or refuse.

    ENOTCONN: the FUSE connection is gone, so no process serves it any more. Only a mount of
    objfs's own type is cleared; another FUSE filesystem's dead mount is its owner's to clear.
    """
    path = mountinfo.absolute(mp)
    entry = mountinfo.at(path)
    if entry is None or entry.fstype != mountinfo.OBJFS_TYPE:
        what = f"a dead {entry.fstype} mount" if entry is not None else "a dead FUSE mount"
        raise MountError(f"{mp} is {what}, not objfs's; clear it with: fusermount3 -uz {mp}")
    command = ["fusermount3", "-uz", path] if os.geteuid() != 0 else ["umount", "-l", path]
    try:
        r = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MountError(f"{mp} is a dead objfs mount and clearing it failed: {e}") from None
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise MountError(f"{mp} is a dead objfs mount and {command[0]} failed: {why}")
    log.warning("%s was a dead objfs mount (its process was killed): unmounted it", mp)


def check_connect_files(options: MountOptions) -> None:
    """Refuse unreadable credential and TLS files before connecting; warn about secrets
    that other users can read (``objfs.connection.check_files``)."""
    try:
        warnings = check_files(options.connect)
    except SettingsError as e:
        raise MountError(str(e)) from None
    for warning in warnings:
        console(f"warning: {warning}", logging.WARNING)


def check_spool(options: MountOptions) -> None:
    """Refuse a spool base that cannot hold files (what earlier mounts left there is stored
    by ``recovery`` once mounted)."""
    base = spool_dir.base_for(options)
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = spool_dir.create(base)
        spool_dir.remove(probe)
    except OSError as e:
        raise MountError(f"cannot use spool directory {base}: {e.strerror or e}") from None


def mounted_paths() -> set[str]:
    """Mount points of this mount namespace."""
    return {m.path for m in mountinfo.mounts()}


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
        via = backend.connected_server or ",".join(redact(s) for s in servers)
        stack.push_async_callback(_close_store, bridge, backend)
        limit = backend.max_chunk_size
        if limit is not None and options.chunk_size > limit:
            raise MountError(
                f"--chunk-size {options.chunk_size} is larger than the server's max_payload "
                f"({limit} bytes): use a smaller chunk size or raise max_payload on the server"
            )
        store = TrioStore(backend, bridge)
        options = dataclasses.replace(options, max_name_bytes=backend.max_name_bytes)

        fs = Filesystem(store, options)
        errors = RecentErrors(fs.stats)
        logging.getLogger().addHandler(errors)
        stack.callback(logging.getLogger().removeHandler, errors)
        document = functools.partial(status.collect, fs, backend.connection_state)
        if options.metrics_addr is not None:
            _start_metrics(options.metrics_addr, fs, document, stack)
        # Normally shut down below, before the kernel mount goes; this covers a start-up that
        # fails half-way: the watches stop before the store and the asyncio thread do.
        stack.push_async_callback(_shutdown_quietly, fs)
        await _start_fs(fs, options)
        fuse_opts = {o for o in fs.fuse_options() if o not in _OWN_FUSE_OPTIONS}
        # Before the mount: resolving the path afterwards would ask this very process.
        status_socket = status.socket_path(options.mountpoint)
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
                nursery.start_soon(status.serve, status_socket, document)
                nursery.start_soon(_report_uploads, fs, reporter)
                nursery.start_soon(_recover, store, options, fs)
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


def _start_metrics(
    address: str,
    fs: Filesystem,
    document: Callable[[], status.Status],
    stack: contextlib.AsyncExitStack,
) -> None:
    from objfs import metrics

    token = trio.lowlevel.current_trio_token()

    def snapshot() -> metrics.Snapshot:
        # On the trio thread: the numbers (the inode table among them) are its own.
        def take() -> metrics.Snapshot:
            return document(), {op: s.copy() for op, s in fs.stats.ops.items()}

        return trio.from_thread.run_sync(take, trio_token=token)

    try:
        server = metrics.MetricsServer(metrics.parse_address(address), snapshot)
    except (OSError, ValueError) as e:
        raise MountError(f"--metrics-addr {address}: {getattr(e, 'strerror', None) or e}") from None
    stack.callback(server.stop)


async def _report_uploads(fs: Filesystem, reporter: Reporter) -> None:
    """Keep systemd's STATUS= line on what waits to be uploaded, as uploads start and end
    (at most a few lines a second: a tree of small files starts thousands)."""
    if not reporter.notifier.enabled:
        return
    changed = trio.Event()

    def note() -> None:
        changed.set()

    fs.stats.on_upload = note
    while True:
        await changed.wait()
        changed = trio.Event()
        reporter.notifier.status(fs.stats.status_line())
        await trio.sleep(STATUS_INTERVAL)


async def _start_embedded_server(options: MountOptions, stack: contextlib.AsyncExitStack) -> str:
    srv = EmbeddedServer(options.connect.data_dir)
    # Registered before starting: a signal during start-up must not leave the server running
    # (stop() of a server that never started does nothing).
    stack.callback(srv.stop)
    # nats-server start-up is a blocking wait for its port, done in a thread; it is not
    # abandoned on cancel, so the server is either fully started or not at all.
    await trio.to_thread.run_sync(srv.start)
    options.server_store = srv.store_dir
    log.info("embedded nats-server at %s (log: %s)", srv.url, srv.log_path)
    return srv.url


async def _connect(
    bridge: Bridge, servers: list[str], options: MountOptions
) -> NatsObjectStore:
    from objfs.store.nats_store import connect

    c = dataclasses.replace(options.connect, servers=servers)
    where = ",".join(redact(s) for s in servers)
    # The store's own timeout should fire first; this bound is the backstop.
    with trio.move_on_after(c.timeout + 3) as scope:  # connect() gives up at the timeout
        try:
            return await bridge.call(connect, c)
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
    """Connect the filesystem to its bucket(s) before the kernel mount is made.

    A ``--bucket`` mount checks (or creates) the bucket here, and loads its tree in the
    background once mounted (``Coherence``): readiness does not wait for a snapshot of one
    message per object, and operations in the bucket wait for it instead. A missing bucket,
    refused credentials or an unreachable server still fail the mount here."""
    try:
        await fs.start(background=options.bucket is not None)
    except NotFound as e:
        if options.bucket is not None and not options.create:
            raise MountError(
                f"bucket {options.bucket!r} does not exist (add --create to create it)"
            ) from None
        raise MountError(f"cannot open the store: {_one_line(e)}") from None
    except StoreError as e:
        raise MountError(f"cannot open the store: {_one_line(e)}") from None


async def _recover(store: TrioStore, options: MountOptions, fs: Filesystem) -> None:
    """Store what dead mounts left in the spool base (in the background: see ``recovery``)."""
    if options.read_only:
        return  # a read-only mount stores nothing: a writable one will
    try:
        from objfs.fs.recovery import Recovery

        base, origin = spool_dir.base_for(options), spool_dir.origin_of(options)
        await Recovery(
            store, base, fs.spool_dir, origin, bucket=options.bucket, chunk_size=options.chunk_size
        ).run()
    except OSError as e:  # the spool base went away or is unreadable: the mount carries on
        log.error("recovery of earlier spool files failed: %s", e)
    except Exception:  # a bug here must not end the mount; the files stay for the next one
        log.exception("recovery of earlier spool files failed")


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
