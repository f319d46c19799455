"""A throw-away PKI made with the ``openssl`` CLI, laid out as ``tls-creds-x509`` wants it.

Shared by ``tests/integration/test_tls_monitor.py`` and
``tests/interop/test_tls_openssl.py``. :func:`make_pki` writes, under a
directory:

* ``server/``: ``ca-cert.pem``, ``server-cert.pem`` (``CN=localhost``, with
  ``DNS:localhost`` and ``IP:127.0.0.1`` names), ``server-key.pem`` and
  ``dh-params.pem`` (RFC 7919's ffdhe2048, so that QEMU does not spend a
  second generating parameters at start-up);
* ``elsewhere/``: the same for a server whose certificate names another host;
* one directory per client in :data:`CLIENTS` (``ca-cert.pem``,
  ``client-cert.pem``, ``client-key.pem``), usable both by a test's own TLS
  client and as ``endpoint=client`` credentials; ``expired`` is out of date
  and ``rogue`` was signed by another CA of the same name.

:attr:`Pki.dn` gives each client's subject as QEMU writes it (GnuTLS's
spelling): that is what ``tls-authz`` objects are given.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hostproc import TIMEOUT, connect_tcp, need_tool

#: client name -> (openssl -subj, the DN QEMU sees, extra openssl req options)
CLIENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fred": (
        "/C=GB/L=London/O=Example Org/CN=fred",
        "C=GB,L=London,O=Example Org,CN=fred",
        (),
    ),
    "bob": ("/C=GB/O=Example Org/CN=bob", "C=GB,O=Example Org,CN=bob", ()),
    # RFC 4514's special characters, an e-mail address, in the certificate's order.
    "tricky": (
        '/C=GB/O=Acme, Inc./OU=R\\+D/CN=Joe "J" <Bloggs>; #1/emailAddress=joe@example.com',
        'C=GB,O=Acme\\, Inc.,OU=R\\+D,CN=Joe \\"J\\" \\<Bloggs\\>\\; #1,EMAIL=joe@example.com',
        (),
    ),
    # A multi-valued RDN: its attributes in DER (SET OF) order.
    "multi": (
        "/O=Example Org/UID=m1+CN=multi",
        "O=Example Org,CN=multi+UID=m1",
        ("-multivalue-rdn",),
    ),
    "expired": ("/C=GB/L=London/O=Example Org/CN=fred", "C=GB,L=London,O=Example Org,CN=fred", ()),
    "rogue": ("/C=GB/L=London/O=Example Org/CN=fred", "C=GB,L=London,O=Example Org,CN=fred", ()),
}

_EXTENSIONS = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[elsewhere]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:elsewhere.example
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
"""


@dataclass
class Pki:
    """Where the credentials are; see the module's docstring."""

    root: Path
    dn: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def elsewhere(self) -> Path:
        return self.root / "elsewhere"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca-cert.pem"

    def client(self, name: str) -> Path:
        return self.root / name


class _Openssl:
    def __init__(self, exe: str, cwd: Path) -> None:
        self.exe = exe
        self.cwd = cwd
        self.serial = 1

    def __call__(self, *args: str) -> None:
        proc = subprocess.run(
            [self.exe, *args], cwd=self.cwd, capture_output=True, timeout=TIMEOUT, check=False
        )
        assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))

    def key(self, path: Path) -> None:
        self(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
        )

    def sign(
        self,
        out: Path,
        key: Path,
        subject: str,
        ext: str,
        ca: Path,
        days: str = "30",
        req_opts: tuple[str, ...] = (),
    ) -> None:
        csr = out.with_suffix(".csr")
        self("req", "-new", "-key", str(key), "-subj", subject, *req_opts, "-out", str(csr))
        self.serial += 1
        self(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca / "ca-cert.pem"),
            "-CAkey",
            str(ca / "ca-key.pem"),
            "-set_serial",
            str(self.serial),
            "-days",
            days,
            "-extfile",
            "ext.cnf",
            "-extensions",
            ext,
            "-out",
            str(out),
        )
        csr.unlink()


def make_pki(root: Path) -> Pki:
    """Create the PKI under ``root`` (skips, or fails in CI, without openssl)."""
    ssl_cli = _Openssl(need_tool("openssl"), root)
    (root / "ext.cnf").write_text(_EXTENSIONS)
    for ca_name in ("ca", "other-ca"):
        ca = root / ca_name
        ca.mkdir()
        ssl_cli.key(ca / "ca-key.pem")
        ssl_cli(
            "req", "-x509", "-new", "-key", str(ca / "ca-key.pem"), "-subj", "/CN=Test CA",
            "-days", "30", "-config", "ext.cnf", "-extensions", "ca", "-out",
            str(ca / "ca-cert.pem"),
        )  # fmt: skip
    ca = root / "ca"
    dh = root / "dh-params.pem"
    ssl_cli(
        "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048", "-out", str(dh)
    )
    for name, ext in (("server", "server"), ("elsewhere", "elsewhere")):
        d = root / name
        d.mkdir()
        (d / "ca-cert.pem").write_bytes(ca.joinpath("ca-cert.pem").read_bytes())
        (d / "dh-params.pem").write_bytes(dh.read_bytes())
        ssl_cli.key(d / "server-key.pem")
        subject = "/CN=localhost" if name == "server" else "/CN=elsewhere.example"
        ssl_cli.sign(d / "server-cert.pem", d / "server-key.pem", subject, ext, ca)
    pki = Pki(root)
    for name, (subject, dn, req_opts) in CLIENTS.items():
        d = root / name
        d.mkdir()
        (d / "ca-cert.pem").write_bytes(ca.joinpath("ca-cert.pem").read_bytes())
        ssl_cli.key(d / "client-key.pem")
        ssl_cli.sign(
            d / "client-cert.pem",
            d / "client-key.pem",
            subject,
            "client",
            root / "other-ca" if name == "rogue" else ca,
            days="-1" if name == "expired" else "30",
            req_opts=req_opts,
        )
        pki.dn[name] = dn
    return pki


def client_context(pki: Pki, name: str | None, tls12: bool = False) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting client ``name``'s certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca_cert))
    if name is not None:
        d = pki.client(name)
        ctx.load_cert_chain(str(d / "client-cert.pem"), str(d / "client-key.pem"))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_connect(pki: Pki, port: int, name: str | None, tls12: bool = False) -> ssl.SSLSocket:
    """Connect to 127.0.0.1:``port`` (retrying until it listens) and do the handshake.

    With TLS 1.3 the client's half of the handshake is done before the server
    has judged its certificate: a refused client finds out when it reads.
    """
    sock = connect_tcp("127.0.0.1", port)
    sock.settimeout(TIMEOUT)
    return client_context(pki, name, tls12).wrap_socket(sock, server_hostname="localhost")


def server_context(directory: Path, require_client_cert: bool = True) -> ssl.SSLContext:
    """A server context from a ``server/``-style directory (the peer of a client chardev)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(directory / "server-cert.pem"), str(directory / "server-key.pem"))
    ctx.load_verify_locations(str(directory / "ca-cert.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def listen_tcp() -> tuple[socket.socket, int]:
    """A listening socket on 127.0.0.1 and its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    return sock, sock.getsockname()[1]


def json_object(props: dict[str, object]) -> str:
    """An ``-object`` argument in JSON form (no QemuOpts comma doubling needed)."""
    return json.dumps(props)


__all__ = [
    "CLIENTS",
    "Pki",
    "client_context",
    "json_object",
    "listen_tcp",
    "make_pki",
    "server_context",
    "tls_connect",
]
