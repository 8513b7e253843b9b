"""A TLS nats-server for the TLS rows: a CA and a server certificate made here with openssl
(a throwaway CA in the bench's temporary directory), and the embedded server with a ``tls``
block, so the TLS figures run against a server of the same build and storage as the plain one.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from objfs.server import EmbeddedServer


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def openssl_missing() -> str | None:
    return None if shutil.which("openssl") else "openssl is not installed (TLS rows need it)"


def make_certs(directory: Path) -> TlsFiles:
    """A CA and a certificate for 127.0.0.1/localhost signed by it (EC P-256: quick to make)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=objfs-bench-ca")  # fmt: skip
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca, cert, key)


class TlsServer(EmbeddedServer):
    """The embedded server with TLS required (the INFO line still comes first in clear, which
    is what ``EmbeddedServer`` waits for). Clients reach it at its ``nats://`` URL with a TLS
    context (``--tls-ca`` for objfs), as a deployment would."""

    def __init__(self, data_dir: Path, files: TlsFiles) -> None:
        super().__init__(data_dir)
        self.files = files

    def _config(self, port: int) -> str:
        return super()._config(port) + (
            f'tls {{ cert_file: "{self.files.cert}", key_file: "{self.files.key}" }}\n'
        )
