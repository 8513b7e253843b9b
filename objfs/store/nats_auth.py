"""What a NATS server asks of a client before it serves it, for both of objfs's connections.

nats-py's connection and the lean reader's (``nats_bulk``) must present the same credentials
and the same TLS, or the fast read path silently stops being used. From one
``objfs.options.ConnectOptions`` this module makes:

- the TLS context (custom CA, client certificate and key; system CAs otherwise), and whether
  the handshake comes first (``tls_first``, the server's ``handshake_first``);
- nats-py's connect keywords (``nats_py_options``);
- the credential fields of a ``CONNECT`` for a given server ``INFO`` (``connect_fields``):
  user/password, token, and for an nkey seed file or a credentials file the server's nonce
  signed with the seed (ed25519 through the ``nkeys`` package) with the public key or the
  user JWT. Seeds are read from their files when a nonce is signed and not kept.
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

import nkeys

from objfs.options import ConnectOptions


class CredentialsError(ValueError):
    """A credentials or nkey file that cannot be used; the message names the file."""


def tls_context(options: ConnectOptions) -> ssl.SSLContext:
    """The context both connections verify the server with (and present the client
    certificate from, for mutual TLS)."""
    ctx = ssl.create_default_context(cafile=options.tls_ca)
    if options.tls_cert:
        ctx.load_cert_chain(options.tls_cert, options.tls_key)
    return ctx


def nats_py_options(options: ConnectOptions) -> dict[str, Any]:
    """nats-py ``connect`` keywords for the credentials, TLS and inbox prefix."""
    opts: dict[str, Any] = {"inbox_prefix": options.inbox}
    if options.user is not None:
        opts["user"] = options.user
        opts["password"] = options.password or ""
    if options.token is not None:
        opts["token"] = options.token
    if options.creds is not None:
        opts["user_credentials"] = options.creds
    elif options.nkey is not None:
        opts["nkeys_seed"] = options.nkey
    if options.tls_wanted:
        opts["tls"] = tls_context(options)
        opts["tls_handshake_first"] = options.tls_first
    return opts


def connect_fields(options: ConnectOptions, info: dict[str, Any]) -> dict[str, Any]:
    """The credential fields of a ``CONNECT`` answering the server's ``info``."""
    fields: dict[str, Any] = {}
    if options.user is not None:
        fields["user"] = options.user
        fields["pass"] = options.password or ""
    if options.token is not None:
        fields["auth_token"] = options.token
    nonce = info.get("nonce")
    if nonce and (options.creds or options.nkey):
        if options.creds:
            jwt, seed = read_creds(options.creds)
            fields["jwt"] = jwt
        else:
            assert options.nkey is not None
            seed = read_seed(options.nkey)
        key = _key_pair(seed, options.creds or options.nkey or "")
        try:
            fields["sig"] = base64.urlsafe_b64encode(key.sign(str(nonce).encode())).rstrip(
                b"="
            ).decode()
            if not options.creds:
                fields["nkey"] = key.public_key.decode()
        finally:
            key.wipe()
    return fields


def signs(options: ConnectOptions) -> bool:
    """Whether these options can answer a server's nonce."""
    return bool(options.creds or options.nkey)


def read_seed(path: str) -> bytes:
    """The nkey seed in ``path`` (a seed file holds it alone, perhaps with comments)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise CredentialsError(f"nkey file {path}: {e.strerror or e}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(b"S") and len(line) > 50:
            return line
    raise CredentialsError(f"nkey file {path}: no nkey seed in it (SU...)")


def read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and the nkey seed of a credentials file (nsc's format: each between a
    ``-----BEGIN ...-----`` and an ``------END ...------`` line)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CredentialsError(f"credentials file {path}: {e.strerror or e}") from None
    jwt = seed = None
    for i, line in enumerate(lines[:-1]):
        if b"BEGIN NATS USER JWT" in line:
            jwt = lines[i + 1].strip().decode(errors="replace")
        elif b"BEGIN USER NKEY SEED" in line:
            seed = lines[i + 1].strip()
    if not jwt or not seed:
        raise CredentialsError(
            f"credentials file {path}: not a NATS credentials file (a user JWT and nkey "
            "seed, as made by nsc)"
        )
    return jwt, seed


def _key_pair(seed: bytes, path: str) -> Any:
    try:
        return nkeys.from_seed(bytearray(seed))
    except Exception:  # nkeys raises its own classes and binascii errors for bad seeds
        raise CredentialsError(f"{path}: the nkey seed is not valid") from None
