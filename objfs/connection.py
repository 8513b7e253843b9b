"""Where the connection options come from: flags, a nats CLI context, the ``NATS_*`` environment.

objfs is configured the way the ``nats`` CLI is, so an operator's existing setup works as it
is. Three layers, later ones winning:

1. the environment variables the nats CLI reads (``ENVIRONMENT``: ``NATS_URL``,
   ``NATS_USER``, ``NATS_PASSWORD``, ``NATS_CREDS``, ``NATS_NKEY``, ``NATS_CERT``, ``NATS_KEY``,
   ``NATS_CA``, ``NATS_TIMEOUT``...);
2. a nats CLI context (``--context NAME`` or ``NATS_CONTEXT``): the JSON file
   ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (default ``~/.config/nats/context``) with the
   field names of the nats CLI's contexts (ADR-21; ``CONTEXT_FIELDS``);
3. explicit flags.

Credentials are one setting, not five: the highest layer that names a user, token, nkey or
credentials file supplies all of them, so a context's creds are not mixed with a ``NATS_USER``
left in the environment. A password alone (``--password-file``, ``NATS_PASSWORD``) completes
the user of whichever layer named it. As in the nats CLI, a user without a password from the
environment or a context is a token. A chosen context never falls back to the embedded
server: without a URL it means ``nats://127.0.0.1:4222``, the NATS default.

``check_files`` refuses credential and TLS files that cannot be read (nats-py would retry a
connection for ever on a credentials file it cannot read) and warns about secrets other users
can read. Every message names where the value came from (a flag, a variable, a context).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from objfs.options import ConnectOptions, parse_duration

DEFAULT_URL = "nats://127.0.0.1:4222"
"""What a context without a URL connects to (the nats CLI's default)."""

ENVIRONMENT = {
    "NATS_URL": "servers",
    "NATS_USER": "user",
    "NATS_PASSWORD": "password",
    "NATS_CREDS": "creds",
    "NATS_NKEY": "nkey",
    "NATS_CERT": "tls_cert",
    "NATS_KEY": "tls_key",
    "NATS_CA": "tls_ca",
    "NATS_TIMEOUT": "timeout",
}
"""The nats CLI's environment variables and the option each one sets."""

CONTEXT_FIELDS = {
    "url": "servers",
    "user": "user",
    "password": "password",
    "token": "token",
    "creds": "creds",
    "nkey": "nkey",
    "cert": "tls_cert",
    "key": "tls_key",
    "ca": "tls_ca",
    "tls_first": "tls_first",
    "jetstream_domain": "js_domain",
    "jetstream_api_prefix": "js_api_prefix",
    "jetstream_event_prefix": "js_event_prefix",
    "inbox_prefix": "inbox_prefix",
}
"""Fields of a nats CLI context file (jsm.go ``natscontext``) and the option each one sets;
others (description, socks_proxy, nsc, color_scheme...) are ignored."""

CREDENTIALS = ("user", "token", "creds", "nkey")
"""Options that name who connects (see the module docstring)."""

PATHS = ("creds", "nkey", "tls_ca", "tls_cert", "tls_key")

FLAGS = {
    "servers": "--server",
    "user": "--user",
    "password": "--password",
    "token": "--token",
    "creds": "--creds",
    "nkey": "--nkey",
    "tls_ca": "--tls-ca",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "timeout": "--timeout",
}
"""How messages name an option that came from a flag."""

_CONTEXT_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


class SettingsError(ValueError):
    """Connection settings that cannot be used; the message is the whole line."""


def context_dir(environ: Mapping[str, str]) -> Path:
    """Where the nats CLI keeps its contexts."""
    config = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "nats" / "context"


def context_path(name: str, environ: Mapping[str, str]) -> Path:
    """The file of context ``name`` (a path to a ``.json`` file is taken as it is)."""
    if name.endswith(".json") and os.sep in name:
        return Path(name).expanduser()
    if not _CONTEXT_NAME.match(name) or name.startswith("."):
        raise SettingsError(f"not a nats context name: {name!r}")
    return context_dir(environ) / f"{name}.json"


def load_context(name: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The options context ``name`` sets (``CONTEXT_FIELDS``; empty values are unset)."""
    path = context_path(name, environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"no nats context {name!r}: {path} does not exist") from None
    except OSError as e:
        raise SettingsError(f"nats context {name!r}: {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise SettingsError(f"nats context {name!r}: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"nats context {name!r}: {path} is not a JSON object")
    values: dict[str, Any] = {}
    for key, option in CONTEXT_FIELDS.items():
        value = data.get(key)
        if value in (None, "", False):
            continue
        if option == "tls_first":
            values[option] = bool(value)
        elif option == "servers":
            values[option] = split_servers([str(value)])
        else:
            values[option] = str(value)
    return values


def split_servers(values: list[str]) -> list[str]:
    """Server URLs from repeated and comma-separated values, in order, without repeats."""
    out: list[str] = []
    for value in values:
        for url in value.split(","):
            url = url.strip()
            if url and url not in out:
                out.append(url)
    return out


def _environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, option in ENVIRONMENT.items():
        value = environ.get(var, "")
        if not value:
            continue
        if option == "servers":
            values[option] = split_servers([value])
        elif option == "timeout":
            try:
                values[option] = parse_duration(value)
            except ValueError as e:
                raise SettingsError(f"{var}: {e}") from None
        else:
            values[option] = value
    return values


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], *, data_dir: Path | None = None
) -> ConnectOptions:
    """The connection options from explicit ``flags`` (option name -> value, None or False:
    not given; ``context`` and ``password_file`` too), a context and the environment.

    Paths come out absolute: a daemonized mount moves to / before it reads them.
    """
    flags = {k: v for k, v in flags.items() if v not in (None, False, [])}
    password_file = flags.pop("password_file", None)
    if password_file is not None:
        password_file = str(Path(str(password_file)).expanduser().absolute())
        flags["password"] = _read_secret("--password-file", password_file)
    token_file = flags.pop("token_file", None)
    if token_file is not None:
        token_file = str(Path(str(token_file)).expanduser().absolute())
        flags["token"] = _read_secret("--token-file", token_file)
    context = flags.pop("context", None) or environ.get("NATS_CONTEXT") or None
    layers: list[tuple[str, dict[str, Any]]] = [("environment", _environment(environ))]
    if context:
        layers.append((f"context {context}", load_context(context, environ)))
    layers.append(("flags", dict(flags)))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    owner: str | None = None  # the layer whose credentials are used
    loose: tuple[str, str] | None = None  # a password from a layer naming no one
    for where, layer in layers:
        names_who = any(k in layer for k in CREDENTIALS)
        for option, value in layer.items():
            if option in CREDENTIALS or option == "password":
                continue
            values[option] = value
            sources[option] = _source(where, option)
        if names_who:
            owner = where
            for option in (*CREDENTIALS, "password"):
                values.pop(option, None)
                if option in layer:
                    values[option] = layer[option]
                    sources[option] = _source(where, option)
        elif "password" in layer:
            loose = (layer["password"], _source(where, "password"))
    if loose is not None and values.get("user") is not None and "password" not in values:
        values["password"], sources["password"] = loose
    if owner != "flags" and values.get("user") is not None and values.get("password") is None:
        # The nats CLI's NATS_USER and a context's user are "user or token".
        values["token"] = values.pop("user")
        sources["token"] = sources.pop("user")
    if values.get("user") is None:
        values.pop("password", None)
    if context and not values.get("servers"):
        values["servers"] = [DEFAULT_URL]
    for option in PATHS:
        if values.get(option):
            values[option] = str(Path(values[option]).expanduser().absolute())
    options = ConnectOptions(**values, context=context)
    if data_dir is not None:
        options.data_dir = data_dir
    if password_file is not None and sources.get("password") == "--password":
        sources["password"] = f"--password-file {password_file}"
    if token_file is not None and sources.get("token") == "--token":
        sources["token"] = f"--token-file {token_file}"
    options.sources.update(sources)
    return options


def _source(where: str, option: str) -> str:
    if where == "flags":
        return FLAGS.get(option, f"--{option.replace('_', '-')}")
    if where == "environment":
        return next(var for var, o in ENVIRONMENT.items() if o == option)
    return where


def _read_secret(flag: str, path: str) -> str:
    """A password or token file's text without its line end."""
    try:
        with open(Path(path).expanduser(), encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SettingsError(f"{flag} {path}: {e.strerror or e}") from None
    return text.rstrip("\r\n")


def check_files(options: ConnectOptions) -> list[str]:
    """Refuse credential and TLS files that cannot be used; the warnings to show (secrets
    readable by other users)."""
    from objfs.store.nats_auth import CredentialsError, read_creds, read_seed

    warnings = []
    for option in ("password", "token"):
        flag, _, path = options.sources.get(option, "").partition(" ")
        if flag == f"--{option}-file":
            warning = _readable_by_others(path)
            if warning:
                warnings.append(f"{flag} {warning}")
    for option in PATHS:
        path = getattr(options, option)
        if path is None:
            continue
        label = options.sources.get(option, FLAGS[option])
        try:
            with open(path, "rb") as f:
                f.read(1)
            if option == "creds":
                read_creds(path)
            elif option == "nkey":
                read_seed(path)
        except OSError as e:
            raise SettingsError(f"{label} {path}: {e.strerror or e}") from None
        except CredentialsError as e:
            raise SettingsError(f"{label} {e}") from None
        if option in ("creds", "nkey", "tls_key"):
            warning = _readable_by_others(path)
            if warning:
                warnings.append(f"{label} {warning}")
    return warnings


def _readable_by_others(path: str) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (
            f"{path} holds a secret and is readable by other users (mode "
            f"{stat.S_IMODE(mode):03o}): chmod 600 {path}"
        )
    return None
