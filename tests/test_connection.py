"""Where connection options come from (objfs.connection): flags, a nats CLI context, NATS_*.

No server needed: these check the resolution itself (precedence, the context file's field
names, the environment variables, a missing context, secrets from a file, warnings about
secret files other users can read, repeated and comma-separated servers, durations). That the
resolved options really connect is tests/store/test_nats_auth.py's and the mount tests'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from objfs.connection import (
    DEFAULT_URL,
    SettingsError,
    check_files,
    context_path,
    resolve,
    split_servers,
)
from objfs.options import ConnectOptions, parse_duration, redact


def write_context(config: Path, name: str, **fields: Any) -> Path:
    path = config / "nats" / "context" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    return path


def test_context_fields_are_the_nats_cli_names(tmp_path: Path) -> None:
    creds = tmp_path / "u.creds"
    write_context(
        tmp_path, "prod",
        description="production", url="nats://a:4222,nats://b:4222", user="", password="",
        token="", creds=str(creds), nkey="", cert="/c.pem", key="/k.pem", ca="/ca.pem",
        nsc="", jetstream_domain="hub", jetstream_api_prefix="", jetstream_event_prefix="EV.hub",
        inbox_prefix="_P", user_jwt="", color_scheme="", tls_first=True,
    )  # fmt: skip
    o = resolve({}, {"XDG_CONFIG_HOME": str(tmp_path), "NATS_CONTEXT": "prod"})
    assert o.servers == ["nats://a:4222", "nats://b:4222"]
    assert o.creds == str(creds) and o.tls_cert == "/c.pem" and o.tls_key == "/k.pem"
    assert o.tls_ca == "/ca.pem" and o.tls_first and o.js_domain == "hub"
    assert o.inbox_prefix == "_P" and o.context == "prod"
    assert o.user is None and o.token is None  # empty strings are unset
    assert o.api_prefix == "$JS.hub.API" and o.inbox == "_P"
    assert o.event_prefix == "EV.hub"
    assert resolve({}, {}).event_prefix == "$JS.EVENT"


def test_context_dir_follows_xdg_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert context_path("x", {}) == tmp_path / "home/.config/nats/context/x.json"
    assert context_path("x", {"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/nats/context/x.json")
    with pytest.raises(SettingsError):
        context_path("../etc/passwd", {})


def test_missing_context_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as e:
        resolve({"context": "nope"}, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert str(e.value) == (
        f"no nats context 'nope': {tmp_path}/nats/context/nope.json does not exist"
    )


def test_precedence_flags_then_context_then_environment(tmp_path: Path) -> None:
    write_context(tmp_path, "c", url="nats://ctx:4222", ca="/ctx-ca.pem", jetstream_domain="d")
    env = {
        "XDG_CONFIG_HOME": str(tmp_path), "NATS_URL": "nats://env:4222", "NATS_CA": "/env.pem",
        "NATS_CERT": "/env-cert.pem", "NATS_TIMEOUT": "3s",
    }  # fmt: skip
    o = resolve({"context": "c"}, env)
    assert o.servers == ["nats://ctx:4222"] and o.tls_ca == "/ctx-ca.pem"
    assert o.tls_cert == "/env-cert.pem" and o.timeout == 3.0  # not in the context
    o = resolve({"context": "c", "servers": ["nats://flag:4222"], "tls_ca": "/f.pem"}, env)
    assert o.servers == ["nats://flag:4222"] and o.tls_ca == "/f.pem" and o.js_domain == "d"
    o = resolve({}, env)
    assert o.servers == ["nats://env:4222"] and o.context is None


def test_a_context_never_means_the_embedded_server(tmp_path: Path) -> None:
    write_context(tmp_path, "bare", description="no url")
    o = resolve({}, {"XDG_CONFIG_HOME": str(tmp_path), "NATS_CONTEXT": "bare"})
    assert o.servers == [DEFAULT_URL]
    assert resolve({}, {}).servers == []  # no context, no URL: the embedded server


def test_credentials_come_from_one_layer(tmp_path: Path) -> None:
    creds = tmp_path / "c.creds"
    write_context(tmp_path, "c", url="nats://x:4222", creds=str(creds))
    env = {"XDG_CONFIG_HOME": str(tmp_path), "NATS_USER": "envuser", "NATS_PASSWORD": "envpw"}
    o = resolve({"context": "c"}, env)
    assert o.creds == str(creds) and o.user is None and o.password is None
    o = resolve({}, env)
    assert (o.user, o.password) == ("envuser", "envpw")
    # Flags naming who connects replace the context's credentials entirely.
    o = resolve({"context": "c", "token": "tok"}, env)
    assert o.token == "tok" and o.creds is None


def test_user_without_password_is_a_token_as_in_the_nats_cli(tmp_path: Path) -> None:
    assert resolve({}, {"NATS_USER": "s3cr3t"}).token == "s3cr3t"
    write_context(tmp_path, "t", user="tok")
    assert resolve({"context": "t"}, {"XDG_CONFIG_HOME": str(tmp_path)}).token == "tok"
    # A password from elsewhere completes a context's user.
    write_context(tmp_path, "u", user="bob")
    o = resolve({"context": "u"}, {"XDG_CONFIG_HOME": str(tmp_path), "NATS_PASSWORD": "pw"})
    assert (o.user, o.password, o.token) == ("bob", "pw", None)


def test_password_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("hunter2\n")
    f.chmod(0o600)
    o = resolve({"user": "u", "password_file": str(f)}, {})
    assert (o.user, o.password) == ("u", "hunter2")
    assert check_files(o) == []
    f.chmod(0o644)
    [warning] = check_files(o)
    assert "--password-file" in warning and "readable by other users" in warning
    with pytest.raises(SettingsError, match=r"--password-file .*No such file"):
        resolve({"user": "u", "password_file": str(tmp_path / "missing")}, {})


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("t0ken\n")
    f.chmod(0o600)
    o = resolve({"token_file": str(f)}, {"NATS_USER": "env-user"})
    assert (o.token, o.user) == ("t0ken", None)  # a flag's token wins over the environment
    assert o.sources["token"] == f"--token-file {f}"
    assert check_files(o) == []
    f.chmod(0o640)
    [warning] = check_files(o)
    assert warning.startswith(f"--token-file {f} holds a secret")
    with pytest.raises(SettingsError, match=r"--token-file .*No such file"):
        resolve({"token_file": str(tmp_path / "missing")}, {})


def test_secret_files_checked_and_named_by_their_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as e:
        check_files(resolve({}, {"NATS_CREDS": str(tmp_path / "gone.creds")}))
    assert str(e.value).startswith(f"NATS_CREDS {tmp_path}/gone.creds: No such file"), e.value
    bad = tmp_path / "bad.nk"
    bad.write_text("not a seed\n")
    with pytest.raises(SettingsError, match=r"--nkey .*no nkey seed"):
        check_files(resolve({"nkey": str(bad)}, {}))
    seed = tmp_path / "user.nk"
    seed.write_text("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n")
    seed.chmod(0o640)
    [warning] = check_files(resolve({"nkey": str(seed)}, {}))
    assert warning.startswith(f"--nkey {seed} holds a secret") and "chmod 600" in warning
    seed.chmod(0o600)
    assert check_files(resolve({"nkey": str(seed)}, {})) == []


def test_nkey_and_tls_key_from_the_environment(tmp_path: Path) -> None:
    """NATS_NKEY and NATS_KEY (with NATS_CERT) as the nats CLI reads them, named by their
    variable in messages; a flag naming who connects replaces NATS_NKEY."""
    seed = tmp_path / "user.nk"
    seed.write_text("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n")
    seed.chmod(0o600)
    key = tmp_path / "client-key.pem"
    key.write_text("key\n")
    key.chmod(0o600)
    env = {"NATS_NKEY": str(seed), "NATS_CERT": "/c.pem", "NATS_KEY": str(key)}
    o = resolve({}, env)
    assert (o.nkey, o.tls_key, o.tls_cert) == (str(seed), str(key), "/c.pem")
    assert o.sources["nkey"] == "NATS_NKEY" and o.sources["tls_key"] == "NATS_KEY"
    with pytest.raises(SettingsError, match=r"^NATS_CERT /c\.pem: No such file"):
        check_files(o)
    o = resolve({}, {"NATS_NKEY": str(seed), "NATS_KEY": str(key)})
    assert check_files(o) == []
    seed.chmod(0o644)
    key.chmod(0o640)
    assert [w.split(" holds")[0] for w in check_files(o)] == [
        f"NATS_NKEY {seed}", f"NATS_KEY {key}",
    ]  # fmt: skip
    with pytest.raises(SettingsError, match=r"^NATS_NKEY .*: No such file"):
        check_files(resolve({}, {"NATS_NKEY": str(tmp_path / "gone.nk")}))
    o = resolve({"user": "u", "password": "p"}, env)
    assert o.nkey is None and (o.user, o.password) == ("u", "p")
    assert o.tls_key == str(key)  # not a credential: kept


def test_context_nkey_and_token(tmp_path: Path) -> None:
    """A context's ``nkey`` (a seed file, made absolute) and ``token`` fields."""
    write_context(tmp_path, "nk", url="nats://x:4222", nkey="~/keys/user.nk")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    o = resolve({"context": "nk"}, env)
    assert o.nkey == str(Path.home() / "keys/user.nk") and o.sources["nkey"] == "context nk"
    assert o.token is None and o.user is None
    write_context(tmp_path, "tok", url="nats://x:4222", token="ctx-t0ken", user="", password="")
    o = resolve({"context": "tok"}, {**env, "NATS_NKEY": "/env.nk", "NATS_USER": "eu"})
    assert (o.token, o.sources["token"]) == ("ctx-t0ken", "context tok")
    assert o.nkey is None and o.user is None  # the context names who connects
    assert "ctx-t0ken" not in repr(o)


def test_servers_repeated_and_comma_separated() -> None:
    assert split_servers(["nats://a:1", "nats://b:2,nats://c:3", " nats://a:1 "]) == [
        "nats://a:1", "nats://b:2", "nats://c:3",
    ]  # fmt: skip


def test_secrets_not_in_repr() -> None:
    o = ConnectOptions(
        servers=["nats://me:pw-in-url@h:4222"], user="me", password="pw-x", token="tok-x"
    )
    text = repr(o)
    for secret in ("pw-in-url", "pw-x", "tok-x"):
        assert secret not in text, text
    assert "password='<set>'" in text and "nats://***@h:4222" in text
    assert redact("nats://tok@h:4222") == "nats://***@h:4222"
    assert redact("nats://h:4222") == "nats://h:4222"


def test_durations() -> None:
    assert parse_duration("5s") == 5 and parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120 and parse_duration("10") == 10
    assert parse_duration("1.5") == 1.5 and parse_duration("1h") == 3600
    for bad in ("soon", "5 days", "", "-1s"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
