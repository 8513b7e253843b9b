"""Secured nats-servers for tests: extra configuration, TLS certificates, nkeys and JWTs.

Everything is made by the test that needs it, in its own directory: a CA with a server and a
client certificate (the ``cryptography`` package), nkey user seeds and an operator, account
and user JWT chain for credentials files (the ``nkeys`` package signs them, as nsc would).
``ConfiguredServer`` is the embedded server with extra configuration text, optionally without
JetStream or with TLS handshake first (its readiness check then only waits for the port).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from objfs.server import EmbeddedServer, ServerError


class ServerWith(Protocol):
    """The ``server_with`` fixture (tests/conftest.py): a private server with extra config."""

    def __call__(
        self, extra: str, *, jetstream: bool = True, tls_first: bool = False
    ) -> EmbeddedServer: ...


class ConfiguredServer(EmbeddedServer):
    """The embedded server with extra configuration text (auth, TLS, ping interval...)."""

    def __init__(
        self, data_dir: Path, extra: str, *, jetstream: bool = True, tls_first: bool = False
    ) -> None:
        super().__init__(data_dir)
        self.extra = extra
        self.jetstream = jetstream
        self.tls_first = tls_first

    def _config(self, port: int) -> str:
        base = super()._config(port)
        if not self.jetstream:
            base = "\n".join(line for line in base.splitlines() if "jetstream" not in line)
        return base + "\n" + self.extra + "\n"

    def _wait_ready(self, port: int) -> None:
        if self.jetstream and not self.tls_first:
            return super()._wait_ready(port)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"nats-server exited:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    if self.tls_first or s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServerError(f"nats-server did not start:\n{self.log_tail()}")


def closed_port() -> int:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_tls(self, *, verify: bool = True, handshake_first: bool = False) -> str:
        """A server ``tls`` block with these files."""
        lines = [
            f'cert_file: "{self.server_cert}"',
            f'key_file: "{self.server_key}"',
            f'ca_file: "{self.ca}"',
            "timeout: 5",
        ]
        if verify:
            lines.append("verify: true")
        if handshake_first:
            lines.append("handshake_first: true")
        return "tls {\n  " + "\n  ".join(lines) + "\n}"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    names: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if names:
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage.CLIENT_AUTH if client else usage.SERVER_AUTH]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, *, server_names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """A fresh CA and certificates in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("objfs test CA", ca_key, None, ca_key, ca=True)
    files = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, names, client in (
        (files.server_cert, files.server_key, "objfs test server", server_names, False),
        (files.client_cert, files.client_key, "objfs test client", (), True),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca.subject, ca_key, names=names, client=client)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return files


# -- nkeys and JWTs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NKey:
    seed: bytes
    public: str

    def write(self, path: Path) -> Path:
        path.write_bytes(self.seed + b"\n")
        path.chmod(0o600)
        return path


def new_nkey(prefix: int = nkeys.PREFIX_BYTE_USER) -> NKey:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return NKey(bytes(seed), nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], issuer: NKey) -> str:
    """A NATS JWT (v2) with ``claims``, signed by ``issuer`` (ed25519-nkey)."""
    body = {"iat": int(time.time()), "iss": issuer.public, **claims}
    body["jti"] = base64.b32encode(
        hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    ).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = nkeys.from_seed(bytearray(issuer.seed)).sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


@dataclass(frozen=True)
class Operator:
    """Decentralized auth: the server config naming the operator and account, and a
    credentials file for a user of that account."""

    config: str
    creds: Path
    user: NKey


def make_operator(directory: Path) -> Operator:
    directory.mkdir(parents=True, exist_ok=True)
    op = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
    op_jwt = sign_jwt(
        {"sub": op.public, "name": "objfs-op",
         "nats": {"type": "operator", "version": 2, "system_account": system.public}},
        op,
    )  # fmt: skip
    acct_jwt = sign_jwt(
        {"sub": account.public, "name": "objfs-acct",
         "nats": {"type": "account", "version": 2, "limits": {
             **unlimited, "mem_storage": -1, "disk_storage": -1, "streams": -1,
             "consumer": -1}}},
        op,
    )  # fmt: skip
    sys_jwt = sign_jwt(
        {"sub": system.public, "name": "SYS",
         "nats": {"type": "account", "version": 2, "limits": unlimited}},
        op,
    )  # fmt: skip
    user_jwt = sign_jwt(
        {"sub": user.public, "name": "objfs-user",
         "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1,
                  "data": -1, "payload": -1}},
        account,
    )  # fmt: skip
    creds = directory / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    creds.chmod(0o600)
    config = (
        f'operator: "{op_jwt}"\n'
        f'system_account: "{system.public}"\n'
        "resolver: MEMORY\n"
        f'resolver_preload: {{\n  {account.public}: "{acct_jwt}"\n'
        f'  {system.public}: "{sys_jwt}"\n}}\n'
    )
    return Operator(config, creds, user)


# -- a JetStream imported from another account -------------------------------------------------


@dataclass(frozen=True)
class ImportedJetStream:
    """Two accounts on one server: ``JS`` has JetStream and exports it, ``APP`` has none and
    imports it under prefixes (the deployment docs/operations.md describes).

    A user of APP reaches JetStream only through ``api_prefix`` (plain ``$JS.API`` answers
    "JetStream not enabled for account"), hears its advisories only under ``event_prefix``,
    and gets push-consumer deliveries only under ``inbox_prefix`` (the stream export of the
    deliver subjects). What else crosses: flow-control answers (``$JS.FC``) and acks as
    services, and the object store's own subjects (``$O.>``, published to with an ack reply).
    The API's export is a stream response: a batch direct get answers with many messages.
    """

    api_prefix: str = "JS.acc.API"
    event_prefix: str = "JS.acc.EVENT"
    inbox_prefix: str = "_INBOX_APP"
    app_user: str = "app"
    app_password: str = "app-pa55"
    js_user: str = "js"
    js_password: str = "js-pa55"

    @property
    def config(self) -> str:
        api, events = self.api_prefix, self.event_prefix
        return f"""accounts {{
  JS: {{
    jetstream: enabled
    users: [ {{ user: "{self.js_user}", password: "{self.js_password}" }} ]
    exports: [
      {{ service: "$JS.API.>", response_type: stream, accounts: [APP] }}
      {{ service: "$JS.FC.>", accounts: [APP] }}
      {{ service: "$JS.ACK.>", accounts: [APP] }}
      {{ service: "$O.>", accounts: [APP] }}
      {{ stream: "$JS.EVENT.>", accounts: [APP] }}
      {{ stream: "{self.inbox_prefix}.>", accounts: [APP] }}
    ]
  }}
  APP: {{
    users: [ {{ user: "{self.app_user}", password: "{self.app_password}" }} ]
    imports: [
      {{ service: {{ account: JS, subject: "$JS.API.>" }}, to: "{api}.>" }}
      {{ service: {{ account: JS, subject: "$JS.FC.>" }} }}
      {{ service: {{ account: JS, subject: "$JS.ACK.>" }} }}
      {{ service: {{ account: JS, subject: "$O.>" }} }}
      {{ stream: {{ account: JS, subject: "$JS.EVENT.>" }}, to: "{events}.>" }}
      {{ stream: {{ account: JS, subject: "{self.inbox_prefix}.>" }} }}
    ]
  }}
}}
"""

    def mount_args(self) -> tuple[str, ...]:
        """``objfs mount`` flags of APP's user (the password on the command line: a test)."""
        return (
            "--user", self.app_user, "--password", self.app_password,
            "--js-api-prefix", self.api_prefix, "--js-event-prefix", self.event_prefix,
            "--inbox-prefix", self.inbox_prefix,
        )  # fmt: skip
