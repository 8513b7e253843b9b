"""mount.fuse.objfs's translation of mount(8) calls into ``objfs mount`` arguments."""

from __future__ import annotations

import pytest

from objfs.mount_helper import HelperError, main, translate


def test_options_map_to_objfs_mount_flags() -> None:
    args, fake, secrets = translate([
        "data", "/mnt/x", "-n", "-v", "-o",
        "rw,server=nats://a:4222,creds=/etc/objfs/a.creds,allow_other,ro,cache_size=1G,"
        "nofail,_netdev,x-systemd.automount,comment=x,defaults,nosuid,nodev,noatime",
    ])
    assert not fake and not secrets
    assert args == [
        "mount", "--daemon", "--bucket", "data",
        "--server", "nats://a:4222", "--creds", "/etc/objfs/a.creds", "--allow-other",
        "--read-only", "--cache-size", "1G",
        "-o", "nosuid,nodev,noatime", "-v", "/mnt/x",
    ]


def test_all_buckets_and_joined_o() -> None:
    assert translate(["-", "/mnt/all", "-ocreate"]) == (
        ["mount", "--daemon", "--create", "/mnt/all"], False, {}
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["b"], "usage"),
        (["b", "/m", "extra"], "usage"),
        (["b", "/m", "-o", "frob=1"], "unknown option 'frob'"),
        (["b", "/m", "-o", "server"], "needs a value"),
        (["b", "/m", "-o", "create=yes"], "takes no value"),
        (["b", "/m", "-o"], "-o needs a value"),
        (["b", "/m", "-q"], "unknown flag -q"),
    ],
)
def test_bad_calls_name_the_problem(argv: list[str], message: str) -> None:
    with pytest.raises(HelperError, match=message):
        translate(argv)


def test_fake_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["b", "/mnt/x", "-f", "-o", "server=nats://h:1"]) == 0
    assert capsys.readouterr().out == (
        "objfs mount --daemon --bucket b --server nats://h:1 /mnt/x\n"
    )


def test_secrets_go_by_pipe_not_argv(capsys: pytest.CaptureFixture[str]) -> None:
    """password= and token= would show in the process list as arguments: they become files
    the mount reads from a pipe."""
    args, _, secrets = translate(["b", "/mnt/x", "-o", "nats_user=u,password=pw,token=tk"])
    assert args == ["mount", "--daemon", "--bucket", "b", "--user", "u", "/mnt/x"]
    assert secrets == {"password-file": "pw", "token-file": "tk"}
    assert main(["b", "/mnt/x", "-f", "-o", "nats_user=u,password=s3cret"]) == 0
    out = capsys.readouterr().out
    assert out == "objfs mount --daemon --bucket b --user u --password-file <pipe> /mnt/x\n"


def test_bad_call_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["b"]) == 1
    assert capsys.readouterr().err.startswith("mount.fuse.objfs: usage")
