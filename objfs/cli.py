"""The ``objfs`` command line: arguments in, option values out, one command run.

``objfs mount`` builds an ``objfs.options.MountOptions`` and hands it to ``objfs.mount.main``
(which owns the mount's lifetime and its one-line errors); ``objfs server`` runs the embedded
nats-server in the foreground, small enough to live here; ``objfs seal`` is ``objfs.seal``,
``objfs status`` is ``objfs.status``, ``objfs info`` is ``objfs.info``; ``objfs completion``
(shtab) and ``objfs man`` (argparse-manpage) are generated from this parser.
Bad option values are checked here, before anything starts, and reported like every other
objfs error: one line; the exit code is 2 for a wrong command line, 1 for everything that
fails later (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from objfs import __version__
from objfs.log import console
from objfs.options import ConnectOptions, MountOptions, parse_duration
from objfs.server import DEFAULT_DATA_DIR, EmbeddedServer, ServerError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``128K``, ``1.5GiB`` or plain bytes -> bytes (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 128K, 256M, 1G)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_chunk_size(text: str) -> int:
    value = parse_size(text)
    # nats-server's max_payload (default 1 MiB, at most 64 MiB) caps a chunk; tiny chunks
    # would turn every read into thousands of round trips.
    if not 1024 <= value <= 64 << 20:
        raise argparse.ArgumentTypeError(f"chunk size must be between 1K and 64M: {text!r}")
    return value


def parse_umask(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"umask must be octal (e.g. 022): {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"umask out of range (000-777): {text!r}")
    return value


def parse_uid(text: str) -> int:
    """A user number or name."""
    return _parse_id(text, lambda name: pwd.getpwnam(name).pw_uid, "user")


def parse_gid(text: str) -> int:
    """A group number or name."""
    return _parse_id(text, lambda name: grp.getgrnam(name).gr_gid, "group")


def _parse_id(text: str, lookup: Callable[[str], int], what: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such {what}: {text!r}") from None


def parse_timeout(text: str) -> float:
    """Seconds a request may take: positive."""
    value = _parse_seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"timeout must be positive: {text!r}")
    return value


def parse_attr_timeout(text: str) -> float:
    """Seconds the kernel may cache: 0 (no caching) to an hour."""
    value = _parse_seconds(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds: {text!r}")
    return value


def _parse_seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


USAGE_ERROR = 2
EXIT_CODES = """exit codes:
  0  success
  1  runtime error (the server, the mount point, the store, an upload failed)
  2  usage error (unknown option, missing or malformed argument)"""

LOG_LEVELS = ("debug", "info", "warning", "error")


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, but the exit code table keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text == EXIT_CODES:
            return "".join(indent + line + "\n" for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit code 2, as argparse and getopt tools)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_metrics_addr(text: str) -> str:
    """``HOST:PORT`` or ``PORT`` (loopback); the mount parses it again when it starts."""
    from objfs.metrics import parse_address

    try:
        return str(parse_address(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_parser(
    sub: argparse._SubParsersAction[_Parser], name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand, with ``--version`` and the exit codes in its help like every other."""
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"objfs {__version__}")
    return p


def _add_connection_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The connection options every command that talks to NATS takes (one group, so that
    ``mount``, ``seal`` and the rest accept the same); resolved by ``connect_options``."""
    conn = p.add_argument_group(
        "connection",
        "Flags override a nats CLI context (--context, $NATS_CONTEXT), which overrides the "
        "nats CLI's NATS_* environment variables (NATS_URL, NATS_USER, NATS_PASSWORD, "
        "NATS_CREDS, NATS_NKEY, NATS_CERT, NATS_KEY, NATS_CA, NATS_TIMEOUT).",
    )
    conn.add_argument(
        "--context",
        metavar="NAME",
        help="use the nats CLI context NAME (~/.config/nats/context/NAME.json, or under "
        "$XDG_CONFIG_HOME): its URL, credentials, TLS and JetStream domain (default: "
        "$NATS_CONTEXT)",
    )
    conn.add_argument(
        "--server",
        "-s",
        metavar="URL[,URL...]",
        action="append",
        help="NATS server URL(s): repeat it or separate with commas (default: the context's, "
        "else $NATS_URL; a mount with none of them starts the embedded server)",
    )
    conn.add_argument("--user", help="user name for NATS user/password authentication")
    conn.add_argument(
        "--password",
        help="password for --user (visible to other users in the process list: prefer "
        "--password-file or $NATS_PASSWORD)",
    )
    conn.add_argument(
        "--password-file", metavar="FILE", help="read the password for --user from FILE"
    )
    conn.add_argument(
        "--token",
        help="NATS authentication token (visible in the process list: prefer --token-file)",
    )
    conn.add_argument("--token-file", metavar="FILE", help="read the NATS token from FILE")
    conn.add_argument("--creds", metavar="FILE", help="NATS credentials file (JWT and NKey seed)")
    conn.add_argument("--nkey", metavar="FILE", help="NATS nkey user seed file (SU...)")
    conn.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the server")
    conn.add_argument("--tls-cert", metavar="FILE", help="client certificate for mutual TLS")
    conn.add_argument("--tls-key", metavar="FILE", help="client private key for mutual TLS")
    conn.add_argument(
        "--tlsfirst",
        "--tls-first",
        dest="tls_first",
        action="store_true",
        help="TLS handshake before the server's greeting (servers with handshake_first)",
    )
    conn.add_argument(
        "--js-domain", metavar="DOMAIN", help="JetStream domain (e.g. of a leaf node's hub)"
    )
    conn.add_argument(
        "--js-api-prefix",
        metavar="PREFIX",
        help="JetStream API subject prefix, for an imported JetStream (default: $JS.API)",
    )
    conn.add_argument(
        "--js-event-prefix",
        metavar="PREFIX",
        help="JetStream advisory subject prefix, where an imported JetStream's events arrive "
        "(default: $JS.EVENT; the bucket list also re-reads every 30 s)",
    )
    conn.add_argument(
        "--inbox-prefix",
        metavar="PREFIX",
        help="subject prefix of reply inboxes (default: _INBOX), for accounts whose "
        "permissions allow another",
    )
    conn.add_argument(
        "--timeout",
        type=parse_timeout,
        metavar="DURATION",
        help="time to reach the server at start (one pass over the servers), and for any "
        "store request before the filesystem answers an I/O error: 10, 5s, 500ms, 2m "
        f"(default: {ConnectOptions().timeout:g}s, or $NATS_TIMEOUT)",
    )
    return conn


def connect_options(args: argparse.Namespace, data_dir: Path | None = None) -> ConnectOptions:
    """The connection group's arguments, with a context and the environment; a missing
    context or unreadable password file ends the command with its one-line error."""
    from objfs.connection import SettingsError, resolve, split_servers

    flags = {
        name: getattr(args, name)
        for name in (
            "context", "user", "password", "password_file", "token", "token_file", "creds",
            "nkey",
            "tls_ca", "tls_cert", "tls_key", "tls_first", "js_domain", "js_api_prefix",
            "js_event_prefix",
            "inbox_prefix", "timeout",
        )
    }  # fmt: skip
    if args.server:
        flags["servers"] = split_servers(args.server)
    try:
        return resolve(flags, os.environ, data_dir=data_dir)
    except SettingsError as e:
        console(str(e), logging.ERROR)
        raise SystemExit(1) from None


def _add_mount_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "mount",
        help="mount a NATS Object Store (one bucket, or every bucket) as a filesystem",
        description="Mount NATS JetStream Object Store buckets at MOUNTPOINT. Without "
        "--server, a private nats-server is started with its store under --data-dir. "
        "The mount runs in the foreground until unmounted (fusermount3 -u MOUNTPOINT), "
        "interrupted (Ctrl-C) or terminated (SIGTERM); pending uploads finish first.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path, help="an existing directory")
    conn = _add_connection_options(p)
    conn.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="where the embedded server keeps its store and log, and where a daemonized "
        "mount logs (default: %(default)s)",
    )
    fs = p.add_argument_group("filesystem")
    fs.add_argument(
        "--bucket",
        metavar="NAME",
        help="mount this bucket as the root (default: the root lists every bucket as a "
        "directory; mkdir there creates a bucket)",
    )
    fs.add_argument("--create", action="store_true", help="create the --bucket if it is missing")
    fs.add_argument("--read-only", action="store_true", help="mount read-only (writes: EROFS)")
    fs.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users access the mount (FUSE allow_other; non-root users need "
        "user_allow_other in /etc/fuse.conf)",
    )
    fs.add_argument(
        "--uid",
        type=parse_uid,
        default=os.getuid(),
        metavar="UID",
        help="owner (number or name) of objects that carry no stored owner, e.g. written "
        "by other NATS clients (default: you)",
    )
    fs.add_argument(
        "--gid",
        type=parse_gid,
        default=os.getgid(),
        metavar="GID",
        help="group (number or name) of objects that carry no stored group (default: yours)",
    )
    fs.add_argument(
        "--umask",
        type=parse_umask,
        default=0o022,
        metavar="OCTAL",
        help="permission bits removed from the default mode of objects that carry no "
        "stored mode (default: 022)",
    )
    fs.add_argument(
        "--cache-size",
        type=parse_size,
        default=MountOptions.__dataclass_fields__["cache_size"].default,
        metavar="SIZE",
        help="memory for the read chunk cache, e.g. 256M or 1G (default: 256M)",
    )
    fs.add_argument(
        "--attr-timeout",
        type=parse_attr_timeout,
        default=MountOptions.__dataclass_fields__["attr_timeout"].default,
        metavar="SECONDS",
        help="how long the kernel may cache names and attributes without asking objfs "
        "(default: 1); changes made elsewhere are pushed to the kernel by the store watch at "
        "once, this only bounds staleness if such a notice is lost",
    )
    fs.add_argument(
        "--spool-dir",
        type=Path,
        metavar="DIR",
        help="where files being written are spooled before upload, in a directory per mount "
        "(default: DATA_DIR/spool); the data of uploads that failed is kept there",
    )
    fs.add_argument(
        "--chunk-size",
        type=parse_chunk_size,
        default=MountOptions.__dataclass_fields__["chunk_size"].default,
        metavar="SIZE",
        help="chunk size of new objects, e.g. 128K (default: 128K; the server's "
        "max_payload caps it)",
    )
    fs.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="extra FUSE mount options (repeatable), e.g. -o nonempty to mount over a "
        "non-empty directory",
    )
    run = p.add_argument_group("running")
    run.add_argument(
        "--daemon",
        action="store_true",
        help="run in the background; return once the mount answers (log: DATA_DIR/objfs.log)",
    )
    run.add_argument(
        "--debug",
        action="store_true",
        help="log at debug level (objfs, pyfuse3, nats), for troubleshooting",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v each upload's start and end with size and rate, -vv debug",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"log at this level ({', '.join(LOG_LEVELS)}; overrides -v, -q and --debug)",
    )
    run.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="log to FILE (appended) instead of stderr; with --daemon instead of "
        "DATA_DIR/objfs.log",
    )
    run.add_argument(
        "--metrics-addr",
        type=parse_metrics_addr,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (a PORT alone: on "
        "127.0.0.1; name another address to listen there)",
    )


def _add_server_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "server",
        help="run the embedded nats-server in the foreground and print its URL",
        description="Run objfs's embedded nats-server (JetStream, loopback only) until "
        "interrupted; prints its URL on the first line of stdout.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="where the server keeps its store and log (default: %(default)s)",
    )
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    p.add_argument(
        "--max-payload",
        type=parse_size,
        metavar="SIZE",
        help="largest message (caps the chunk size; default: the server's 1M)",
    )


def _add_seal_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "seal",
        help="make a bucket read-only for ever (irreversible)",
        description="Seal BUCKET: every later change is refused (EROFS through a mount). "
        "Sealing cannot be undone, so --yes is required.",
    )
    p.add_argument("bucket", metavar="BUCKET")
    p.add_argument("--yes", action="store_true", help="yes, seal it (irreversible)")
    _add_connection_options(p)


def _add_status_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "status",
        help="show what running mounts are doing (uploads, cache, connection, errors)",
        description="Ask the mount at MOUNTPOINT (default: every objfs mount of yours) for "
        "its status: the server and connection, buckets, cache use and hit ratio, uploads "
        "pending and in flight with progress, spool leftovers, recent errors.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path, nargs="?")
    p.add_argument("--json", action="store_true", help="print JSON (stable keys)")


def _add_info_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "info",
        help="show the object behind a file of an objfs mount",
        description="Show the object facts of FILE on an objfs mount (bucket, name, nuid, "
        "digest, size, chunks, revision, headers, metadata): the user.objfs.* extended "
        "attributes, read through the mount; of a symlink, its target.",
    )
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_completion_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_parser(
        sub,
        "completion",
        help="print a shell completion script",
        description="Print the completion script for SHELL, e.g. "
        "objfs completion bash > /etc/bash_completion.d/objfs, or in ~/.zshrc: "
        "eval \"$(objfs completion zsh)\"",
    )
    p.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "tcsh"))


def _add_man_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    _add_parser(
        sub,
        "man",
        help="print the manual page (roff)",
        description="Print objfs(1) in roff, e.g. objfs man | man -l -",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="objfs",
        description="Mount NATS JetStream Object Store buckets as a filesystem.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"objfs {__version__}")
    sub = parser.add_subparsers(
        parser_class=_Parser, dest="command", metavar="COMMAND", required=True
    )
    _add_mount_parser(sub)
    _add_server_parser(sub)
    _add_seal_parser(sub)
    _add_status_parser(sub)
    _add_info_parser(sub)
    _add_completion_parser(sub)
    _add_man_parser(sub)
    return parser


def mount_options(args: argparse.Namespace) -> MountOptions:
    """The parsed ``objfs mount`` arguments as a MountOptions value."""
    fuse_options = [o.strip() for arg in args.fuse_options for o in arg.split(",") if o.strip()]
    connect = connect_options(args, args.data_dir.expanduser().absolute())
    return MountOptions(
        mountpoint=args.mountpoint,
        connect=connect,
        bucket=args.bucket,
        create=args.create,
        read_only=args.read_only,
        allow_other=args.allow_other,
        uid=args.uid,
        gid=args.gid,
        umask=args.umask,
        cache_size=args.cache_size,
        attr_timeout=args.attr_timeout,
        spool_dir=args.spool_dir.expanduser().absolute() if args.spool_dir else None,
        chunk_size=args.chunk_size,
        fuse_options=fuse_options,
        daemon=args.daemon,
        debug=args.debug,
        log_level=log_level(args),
        log_file=args.log_file.expanduser().absolute() if args.log_file else None,
        metrics_addr=args.metrics_addr,
    )


def log_level(args: argparse.Namespace) -> int | None:
    """The level --log-level or -q choose (None: -v and --debug decide)."""
    if args.log_level is not None:
        return int(getattr(logging, args.log_level.upper()))
    return logging.ERROR if args.quiet else None


def run_server(data_dir: Path, *, port: int = 0, max_payload: int | None = None) -> int:
    """``objfs server``: the embedded nats-server in the foreground until SIGINT/SIGTERM.

    Prints the URL on stdout first (scripts and tests read it), the log path on stderr.
    """
    srv = EmbeddedServer(data_dir, port=port, max_payload=max_payload)
    # Blocked signals are collected by sigtimedwait below instead of interrupting anything, so
    # the server is always stopped through stop() (which flushes its store).
    stop_on = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_on)
    try:
        srv.start()
    except ServerError as e:
        print(f"objfs: {str(e).splitlines()[0]} (log: {srv.log_path})", file=sys.stderr)
        return 1
    try:
        print(srv.url, flush=True)
        print(f"objfs: nats-server running, store and log in {srv.data_dir}", file=sys.stderr)
        while srv.proc is not None and srv.proc.poll() is None:
            if signal.sigtimedwait(stop_on, 0.5) is not None:
                break
        else:
            print(f"objfs: nats-server exited (log: {srv.log_path})", file=sys.stderr)
            return 1
        return 0
    finally:
        srv.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, which knows its --help
        prog = f"objfs {args.command}"
        parser.exit(
            USAGE_ERROR,
            f"{prog}: unrecognized arguments: {' '.join(extra)} (see {prog} --help)\n",
        )
    if args.command == "server":
        return run_server(args.data_dir.expanduser(), port=args.port, max_payload=args.max_payload)
    if args.command == "seal":
        from objfs import seal

        connect = connect_options(args)
        return seal.main(args.bucket, connect, yes=args.yes)
    if args.command == "status":
        from objfs import status

        return status.main(args.mountpoint, as_json=args.json)
    if args.command == "info":
        from objfs import info

        return info.main(args.file, as_json=args.json)
    if args.command == "completion":
        import shtab

        print(shtab.complete(parser, args.shell))
        return 0
    if args.command == "man":
        print(manual_page(parser), end="")
        return 0
    from objfs import mount

    return mount.main(mount_options(args), verbose=args.verbose)


def manual_page(parser: argparse.ArgumentParser) -> str:
    """objfs(1) in roff, generated from the parser (argparse-manpage)."""
    from argparse_manpage.manpage import Manpage

    page = Manpage(
        parser,
        _data={
            "project_name": "objfs",
            "version": __version__,
            "description": "mount NATS JetStream Object Store buckets as a filesystem",
            "manual_title": "objfs manual",
        },
    )
    return str(page)


if __name__ == "__main__":
    sys.exit(main())
