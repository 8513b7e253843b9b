"""``mount.fuse.objfs``: the helper ``mount -t fuse.objfs`` and fstab lines run.

mount(8) runs ``/sbin/mount.fuse.objfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`` (installed as
a link by ``scripts/install-service``). SOURCE is the bucket (``-`` mounts every bucket);
OPTIONS is a comma list in which

- ``NAME=VALUE`` and ``NAME`` are ``objfs mount --NAME VALUE`` and ``--NAME`` for any of its
  options (``_`` and ``-`` alike): ``server=nats://a:4222,creds=/etc/objfs/a.creds``;
  several servers are ``server=`` repeated;
- ``ro`` is ``--read-only``, ``allow_other`` is ``--allow-other`` and ``nats_user=`` is
  ``--user`` (``user`` is mount(8)'s option letting users mount);
- the options mount(8) and systemd read themselves (``defaults``, ``auto``, ``noauto``,
  ``user``, ``users``, ``nouser``, ``owner``, ``group``, ``_netdev``, ``nofail``, ``rw``,
  ``comment=…``, ``x-…``) are dropped;
- the kernel's generic flags (``nosuid``, ``nodev``, ``noexec``, ``noatime`` …) go to FUSE.

The options are looked up in ``objfs mount``'s own parser, so every option it has works here
without a table to keep in step; an unknown one is an error naming it (exit 1, mount's
convention for a bad call). The helper then runs ``objfs mount --daemon``, which returns once
the mount answers, as mount(8) and systemd's mount units expect.

``password=`` and ``token=`` do not become arguments, which anyone can read in the process
list for as long as the mount runs: the helper writes each into a pipe that the mount reads
as ``--password-file /dev/fd/N`` (``--token-file``) at start. (An fstab that holds a secret
is itself readable by every user: ``password_file=`` or ``creds=`` keep it out of fstab.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DROPPED = frozenset(
    {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev",
     "nofail", "rw"}
)
"""Options for mount(8), systemd or fstab's reader, not for the filesystem."""

KERNEL_FLAGS = frozenset(
    {"suid", "nosuid", "dev", "nodev", "exec", "noexec", "atime", "noatime", "relatime",
     "norelatime", "strictatime", "diratime", "nodiratime", "sync", "async", "dirsync"}
)
"""Generic mount flags, passed to libfuse (which sets them on the kernel mount)."""

ALIASES = {"ro": "read-only", "allow_other": "allow-other", "nats_user": "user"}
"""Option names that differ from objfs mount's flags (``user`` is mount(8)'s own)."""

ALL_BUCKETS = "-"

SECRETS = {"password": "password-file", "token": "token-file"}
"""Options whose value is a secret, and the file option the mount reads it from instead."""


class HelperError(Exception):
    """A bad helper call; the message is the whole line."""


def _mount_actions() -> dict[str, argparse.Action]:
    """``objfs mount``'s long options, by name without dashes."""
    from objfs.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            mount = action.choices["mount"]
            return {
                s[2:]: a
                for a in mount._actions
                for s in a.option_strings
                if s.startswith("--") and s not in ("--help", "--daemon", "--version")
            }
    raise AssertionError("objfs has no mount command")


def translate(argv: Sequence[str]) -> tuple[list[str], bool, dict[str, str]]:
    """The ``objfs mount`` arguments for a helper call's ``argv`` (without the program),
    whether mount(8) asked for a fake run (``-f``: say what would run, run nothing), and the
    secrets to hand over by pipe (``SECRETS``: file option -> value)."""
    positional: list[str] = []
    options: list[str] = []
    verbose = fake = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o":
            if not args:
                raise HelperError("-o needs a value")
            options += [o for o in args.pop(0).split(",") if o]
        elif arg.startswith("-o"):
            options += [o for o in arg[2:].split(",") if o]
        elif arg in ("-t", "-N"):
            if args:
                args.pop(0)  # the type (fuse.objfs) or a namespace: nothing for objfs
        elif arg.startswith("-") and len(arg) > 1:
            for flag in arg[1:]:
                if flag == "v":
                    verbose = True
                elif flag == "f":
                    fake = True
                elif flag not in "sn":  # sloppy, no mtab: nothing to do
                    raise HelperError(f"unknown flag -{flag}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise HelperError("usage: mount.fuse.objfs BUCKET|- MOUNTPOINT [-o OPTIONS]")
    source, mountpoint = positional
    actions = _mount_actions()
    out = ["mount", "--daemon"]
    fuse: list[str] = []
    secrets: dict[str, str] = {}
    if source != ALL_BUCKETS:
        out += ["--bucket", source]
    for option in options:
        name, eq, value = option.partition("=")
        if name in DROPPED or name.startswith("x-") or name == "comment":
            continue
        if name in KERNEL_FLAGS and not eq:
            fuse.append(name)
            continue
        key = ALIASES.get(name, name.replace("_", "-"))
        if key in SECRETS and eq:
            secrets[SECRETS[key]] = value
            continue
        action = actions.get(key)
        if action is None:
            raise HelperError(f"unknown option {name!r} (see objfs mount --help)")
        takes_value = action.nargs != 0
        if takes_value and not eq:
            raise HelperError(f"option {name} needs a value: {name}=...")
        if not takes_value and eq:
            raise HelperError(f"option {name} takes no value")
        out.append(f"--{key}")
        if takes_value:
            out.append(value)
    if fuse:
        out += ["-o", ",".join(fuse)]
    if verbose:
        out.append("-v")
    out.append(mountpoint)
    return out, fake, secrets


def _pipe(secret: str) -> int:
    """A pipe's read end (inherited across exec) holding ``secret``."""
    read, write = os.pipe()
    with os.fdopen(write, "w", encoding="utf-8") as f:  # far below a pipe's buffer
        f.write(secret)
    os.set_inheritable(read, True)
    return read


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, fake, secrets = translate(sys.argv[1:] if argv is None else argv)
    except HelperError as e:
        print(f"mount.fuse.objfs: {e}", file=sys.stderr)
        return 1
    mountpoint = args.pop()
    for option, secret in secrets.items():
        args += [f"--{option}", "<pipe>" if fake else f"/dev/fd/{_pipe(secret)}"]
    args.append(mountpoint)
    if fake:
        print(" ".join(["objfs", *args]))
        return 0
    command = [sys.executable, "-m", "objfs", *args]
    sys.stdout.flush()
    os.execv(sys.executable, command)


if __name__ == "__main__":
    sys.exit(main())
