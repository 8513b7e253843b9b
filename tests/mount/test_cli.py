"""``objfs`` command-line behaviour: help, version, completion, the manual, and one-line errors
with exit code 2 for a wrong command line, 1 for what fails later.

Errors must be one line naming the cause, never a traceback: users see them in a terminal,
in ``mount -a`` output and in systemd's journal. Most checks need no mount; the
already-mounted and missing-bucket ones use a real mount and server.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mounting import Mount, mounted, objfs_command

from objfs.server import EmbeddedServer

MOUNT_OPTIONS = [
    "--context",
    "--server",
    "--user",
    "--password",
    "--password-file",
    "--token",
    "--creds",
    "--nkey",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
    "--tlsfirst",
    "--js-domain",
    "--js-api-prefix",
    "--inbox-prefix",
    "--timeout",
    "--data-dir",
    "--bucket",
    "--create",
    "--read-only",
    "--allow-other",
    "--uid",
    "--gid",
    "--umask",
    "--cache-size",
    "--spool-dir",
    "--chunk-size",
    "-o",
    "--daemon",
    "--debug",
    "--verbose",
    "--quiet",
    "--log-level",
    "--log-file",
    "--metrics-addr",
]

COMMANDS = ("mount", "server", "seal", "status", "info", "completion", "man")


def objfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``objfs``; ``timeout`` only catches a hang (a loaded machine starts Python slowly)."""
    return subprocess.run(objfs_command(*args), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(
    r: subprocess.CompletedProcess[str], *words: str, code: int = 1
) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("objfs")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word in errors[0], (word, r.stderr)


def test_help_mentions_every_option() -> None:
    r = objfs("mount", "--help")
    assert r.returncode == 0, r.stderr
    for option in MOUNT_OPTIONS:
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", r.stdout), option
    # Each option has its own explanation, not just a usage line.
    options_part = r.stdout.split("connection:", 1)[1]
    for option in MOUNT_OPTIONS:
        assert option in options_part, option


def test_version() -> None:
    for args in (["--version"], *([c, "--version"] for c in COMMANDS)):
        r = objfs(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert re.fullmatch(r"objfs \d+\.\d+\.\d+\S*\n", r.stdout), (args, r.stdout)


def test_usage_errors_exit_2_and_are_documented(tmp_path: Path) -> None:
    for args, word in [
        (["mount"], "MOUNTPOINT"),
        (["mount", "--no-such-option", str(tmp_path)], "--no-such-option"),
        (["no-such-command"], "no-such-command"),
        (["mount", "--log-level", "loud", str(tmp_path)], "--log-level"),
        (["completion", "fish"], "fish"),
        ([], "COMMAND"),
    ]:
        assert_one_line_error(objfs(*args), word, code=2)
    for args in ([], ["mount"], ["status"]):
        r = objfs(*args, "--help")
        assert "exit codes:" in r.stdout and "  2  usage error" in r.stdout, r.stdout


def test_completion_scripts(tmp_path: Path) -> None:
    r = objfs("completion", "bash")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "objfs.bash"
    script.write_text(r.stdout)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # Loaded into bash, it completes objfs's subcommands and mount's options.
    probe = (
        f"source {script}; COMP_WORDS=(objfs mount --log-l); COMP_CWORD=2; "
        "_shtab_objfs; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert "--log-level" in done.stdout.split(), (done.stdout, done.stderr)
    r = objfs("completion", "zsh")
    assert r.returncode == 0 and "#compdef objfs" in r.stdout


def test_manual_page_renders() -> None:
    r = objfs("man")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('.TH OBJFS "1"'), r.stdout[:200]
    rendered = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww"], input=r.stdout, capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "warning" not in rendered.stderr, rendered.stderr
    text = re.sub(r".\x08", "", rendered.stdout)  # overstrike bold/underline
    for word in ("NAME", "objfs mount", "--metrics-addr", "objfs status", "exit codes"):
        assert word in text, word


def test_missing_mountpoint(tmp_path: Path) -> None:
    r = objfs("mount", "--server", "nats://127.0.0.1:1", str(tmp_path / "nope"))
    assert_one_line_error(r, "does not exist", str(tmp_path / "nope"))


def test_mountpoint_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error(objfs("mount", str(f)), "not a directory")


def test_mountpoint_not_empty_needs_nonempty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    assert_one_line_error(objfs("mount", str(tmp_path)), "not empty", "nonempty")


def test_bad_option_values(tmp_path: Path) -> None:
    for args, word in [
        (["--cache-size", "12X"], "--cache-size"),
        (["--chunk-size", "0"], "--chunk-size"),
        (["--umask", "9"], "--umask"),
        (["--timeout", "soon"], "--timeout"),
        (["--uid", "no-such-user-xyz"], "--uid"),
    ]:
        r = objfs("mount", *args, str(tmp_path))
        assert_one_line_error(r, word, code=2)


def test_invalid_bucket_name(tmp_path: Path) -> None:
    assert_one_line_error(objfs("mount", "--bucket", "a b", str(tmp_path)), "bucket")


def test_unreachable_server(tmp_path: Path) -> None:
    # The mount gives up (one pass over the servers, bounded by --timeout, nats_connect) instead
    # of retrying for ever: a mount that kept trying would not end, and objfs() would fail
    # with TimeoutExpired. How long start-up takes is the machine's business, not checked.
    r = objfs("mount", "--server", "nats://127.0.0.1:1", "--timeout", "1", str(tmp_path))
    assert_one_line_error(r, "nats://127.0.0.1:1")


def test_missing_bucket_without_create(
    tmp_path: Path, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = objfs("mount", "--server", nats_server.url, "--bucket", bucket_name, str(mp))
    assert_one_line_error(r, bucket_name, "--create")
    assert not mounted(mp)


def test_chunk_size_over_max_payload(
    tmp_path: Path, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = objfs(
        "mount", "--server", nats_server.url, "--bucket", bucket_name, "--create",
        "--chunk-size", "2M", str(mp),
    )  # fmt: skip
    assert_one_line_error(r, "--chunk-size", "max_payload")
    assert not mounted(mp)


def test_already_mounted(mount: Mount) -> None:
    r = objfs(
        "mount", "--server", mount.server_url, "--bucket", str(mount.bucket), str(mount.mountpoint)
    )
    assert_one_line_error(r, "already mounted")
    # The first mount is unharmed.
    (mount.mountpoint / "still-works").write_bytes(b"ok")
    assert (mount.mountpoint / "still-works").read_bytes() == b"ok"


def test_unreadable_credential_files(tmp_path: Path, nats_server: EmbeddedServer) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    bad = tmp_path / "bad.creds"
    bad.write_text("not a credentials file\n")
    for args, words in (
        (["--creds", str(tmp_path / "missing.creds")], ("--creds", "No such file")),
        (["--creds", str(bad)], ("--creds", "not a NATS credentials file")),
        (["--tls-ca", str(tmp_path / "missing.pem")], ("--tls-ca", "No such file")),
    ):
        r = objfs("mount", "--server", nats_server.url, *args, str(mp))
        assert_one_line_error(r, *words)
        assert not mounted(mp)
