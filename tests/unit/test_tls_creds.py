"""``tls-creds-x509`` as a library object, and the sans-I/O TLS session of chardevs.

The certificates are the ones the differential cases use (``tests/differential/tls``,
made with the openssl CLI). Two :class:`~qomhost.chardev.tls.TlsSession` objects
talk to each other through memory here, with no socket: the same code a socket
chardev drives from its fd handlers.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qomhost.chardev.tls import (
    TlsError,
    TlsSession,
    check_peer,
    check_server,
    hostname_matches,
    priority_versions,
    tls_context,
)
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.authz.base import authz_is_allowed_by_id
from qomhost.objects.tls import QCryptoTLSCredsX509

DATA = Path(__file__).resolve().parents[1] / "differential" / "tls"
CLIENT_DN = "C=GB,L=London,O=Example Org,CN=client"
SERVER_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "dh-params.pem")
CLIENT_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")


def creds_dir(tmp_path: Path, files: tuple[str, ...], **renamed: str) -> Path:
    """A credentials directory: ``files`` from the data, ``renamed`` as ``dest=source``."""
    d = tmp_path / ("creds-" + "-".join(sorted(renamed)) if renamed else "creds")
    d.mkdir(exist_ok=True)
    for name in files:
        shutil.copy(DATA / name, d / name)
    for dest, source in renamed.items():
        shutil.copy(DATA / source, d / (dest.replace("_", "-") + ".pem"))
    return d


def server_creds(host: Host, tmp_path: Path, **props: object) -> QCryptoTLSCredsX509:
    d = creds_dir(tmp_path, SERVER_FILES)
    obj = host.add_object("tls-creds-x509", "tls0", dir=str(d), endpoint="server", **props)
    assert isinstance(obj, QCryptoTLSCredsX509)
    return obj


# --------------------------------------------------------------------------- the object


def test_server_credentials_load(tmp_path: Path) -> None:
    host = Host()
    creds = server_creds(host, tmp_path)
    assert creds.loaded
    assert creds.get_property("loaded") is True
    assert creds.get_property("endpoint") == "server"
    assert creds.get_property("verify-peer") is True
    assert creds.get_property("priority") == ""
    material = creds.material
    assert material is not None and len(material.ca_der) == 1
    assert material.key_pem is not None and material.key_pem.startswith(b"-----BEGIN PRIVATE")
    # The private key never shows in a repr.
    assert "PRIVATE" not in repr(material) and "PRIVATE" not in repr(material.key_pem)


def test_encrypted_key_is_decrypted_with_passwordid(tmp_path: Path) -> None:
    host = Host()
    host.add_object("secret", "pw", data="letmein")
    d = creds_dir(tmp_path, ("ca-cert.pem", "server-cert.pem", "dh-params.pem"),
                  server_key="server-key-encrypted.pem")  # fmt: skip
    creds = host.add_object(
        "tls-creds-x509", "tls0", dir=str(d), endpoint="server", passwordid="pw"
    )
    assert isinstance(creds, QCryptoTLSCredsX509) and creds.loaded
    with pytest.raises(QemuError, match=r"^Cannot load certificate .* Decryption has failed\.$"):
        host.add_object("tls-creds-x509", "tls1", dir=str(d), endpoint="server")


def test_failed_credentials_leave_nothing_behind(tmp_path: Path) -> None:
    host = Host()
    d = creds_dir(tmp_path, SERVER_FILES, server_cert="expired-cert.pem")
    with pytest.raises(QemuError) as info:
        host.add_object("tls-creds-x509", "tls0", dir=str(d), endpoint="server")
    assert info.value.desc == f"The server certificate {d}/server-cert.pem has expired"
    assert host.lookup_object("tls0") is None


def test_endpoint_check(tmp_path: Path) -> None:
    creds = server_creds(Host(), tmp_path)
    creds.check_endpoint("server")
    with pytest.raises(QemuError, match=r"^Expected TLS credentials for a client endpoint$"):
        creds.check_endpoint("client")


# --------------------------------------------------------------------------- priorities


@pytest.mark.parametrize(
    ("priority", "versions"),
    [
        (None, {"TLSv1_2", "TLSv1_3"}),
        ("NORMAL", {"TLSv1_2", "TLSv1_3"}),
        ("@SYSTEM", {"TLSv1_2", "TLSv1_3"}),
        ("NORMAL:-VERS-TLS1.3", {"TLSv1_2"}),
        ("SECURE128:-VERS-ALL:+VERS-TLS1.3", {"TLSv1_3"}),
        ("NONE:+VERS-TLS1.2:+AES-256-GCM", {"TLSv1_2"}),
        ("NORMAL:%COMPAT:+VERS-TLS1.1", {"TLSv1_1", "TLSv1_2", "TLSv1_3"}),
    ],
)
def test_priority_versions(priority: str | None, versions: set[str]) -> None:
    assert {v.name for v in priority_versions(priority)} == versions


@pytest.mark.parametrize(
    ("priority", "reason"),
    [
        ("bogus", "The request is invalid."),
        ("NORMAL:-VERS-ALL", "No or insufficient priorities were set."),
    ],
)
def test_priorities_gnutls_refuses(priority: str, reason: str) -> None:
    with pytest.raises(TlsError) as info:
        priority_versions(priority)
    assert info.value.desc == f"Cannot set default TLS session priority {priority}: {reason}"


# --------------------------------------------------------------------------- host names


def _cert(common_name: str, dns: list[str], ips: list[str]) -> bytes:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("cert", "hostname", "matches"),
    [
        (("x", ["localhost"], ["127.0.0.1"]), "localhost", True),
        (("x", ["localhost"], ["127.0.0.1"]), "LOCALHOST", True),
        (("x", ["localhost"], ["127.0.0.1"]), "127.0.0.1", True),
        (("x", ["localhost"], ["127.0.0.1"]), "::1", False),
        (("x", ["localhost"], []), "127.0.0.1", False),
        (("x", ["*.example.com"], []), "a.example.com", True),
        (("x", ["*.example.com"], []), "a.b.example.com", False),
        (("x", ["*.example.com"], []), "example.com", False),
        (("x", ["*.com"], []), "example.com", False),
        (("host.example", [], []), "host.example", True),
        (("host.example", ["other.example"], []), "host.example", False),
    ],
)
def test_hostname_matches(
    cert: tuple[str, list[str], list[str]], hostname: str, matches: bool
) -> None:
    assert hostname_matches(_cert(*cert), hostname) is matches


# --------------------------------------------------------------------------- sessions in memory


def pump(a: TlsSession, b: TlsSession) -> None:
    """Move bytes both ways until neither side has anything to send."""
    for _ in range(20):
        out_a, out_b = a.pending(), b.pending()
        if not out_a and not out_b:
            return
        b.receive(out_a)
        a.receive(out_b)
        for side in (a, b):
            if not side.established:
                try:
                    side.handshake()
                except ssl.SSLError:
                    pass


def connect(
    server: QCryptoTLSCredsX509, client_ctx: ssl.SSLContext
) -> tuple[TlsSession, TlsSession]:
    srv = TlsSession(tls_context(server, server=True), server_side=True)
    cli = TlsSession(client_ctx, server_side=False, server_hostname="localhost")
    cli.handshake()
    pump(cli, srv)
    return srv, cli


def client_context(with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(DATA / "ca-cert.pem"))
    if with_cert:
        ctx.load_cert_chain(str(DATA / "client-cert.pem"), str(DATA / "client-key.pem"))
    return ctx


def authorize(host: Host, authz_id: str) -> Callable[[str], bool]:
    """The ``tls-authz`` check the command line gives a chardev."""
    return lambda dn: authz_is_allowed_by_id(host, authz_id, dn)


def test_allowed_client_in_memory(tmp_path: Path) -> None:
    host = Host()
    host.add_object("authz-simple", "auth0", identity=CLIENT_DN)
    creds = server_creds(host, tmp_path)
    srv, cli = connect(creds, client_context())
    assert srv.established and cli.established
    assert check_peer(srv, creds, authorize(host, "auth0")) == CLIENT_DN
    # Records flow both ways once the peer is accepted.
    cli.receive(srv.encrypt(b"greeting"))
    assert cli.read() == b"greeting"
    srv.receive(cli.encrypt(b'{"execute":"qmp_capabilities"}'))
    assert srv.read() == b'{"execute":"qmp_capabilities"}'


@pytest.mark.parametrize(
    ("identity", "authz_id", "reason"),
    [
        ("CN=someone", "auth0", f"TLS x509 authz check for {CLIENT_DN} is denied"),
        (CLIENT_DN, "nosuch", "Cannot find QAuthZ object ID nosuch"),
        (CLIENT_DN, "tls0", "Object 'tls0' is not a QAuthZ subclass"),
    ],
)
def test_refused_client_in_memory(
    tmp_path: Path, identity: str, authz_id: str, reason: str
) -> None:
    host = Host()
    host.add_object("authz-simple", "auth0", identity=identity)
    creds = server_creds(host, tmp_path)
    srv, _cli = connect(creds, client_context())
    with pytest.raises(TlsError) as info:
        check_peer(srv, creds, authorize(host, authz_id))
    assert info.value.desc == reason


def test_client_without_certificate(tmp_path: Path) -> None:
    host = Host()
    creds = server_creds(host, tmp_path)
    srv, _cli = connect(creds, client_context(with_cert=False))
    assert srv.established
    with pytest.raises(TlsError, match=r"^No certificate peers$"):
        check_peer(srv, creds, None)
    creds.verify_peer = False
    srv, _cli = connect(creds, client_context(with_cert=False))
    assert check_peer(srv, creds, authorize(host, "nosuch")) is None


def test_client_side_checks_the_host_name(tmp_path: Path) -> None:
    host = Host()
    server = server_creds(host, tmp_path)
    d = creds_dir(tmp_path, CLIENT_FILES)
    client = host.add_object("tls-creds-x509", "tlsc", dir=str(d))
    assert isinstance(client, QCryptoTLSCredsX509)
    srv = TlsSession(tls_context(server, server=True), server_side=True)
    cli = TlsSession(tls_context(client, server=False), server_side=False)
    cli.handshake()
    pump(cli, srv)
    assert cli.established and srv.established
    check_server(cli, client, "localhost")
    check_server(cli, client, "127.0.0.1")
    with pytest.raises(TlsError, match=r"^Certificate does not match the hostname elsewhere$"):
        check_server(cli, client, "elsewhere")
    # The client presented its certificate to the server.
    assert check_peer(srv, server, None) == CLIENT_DN


# --------------------------------------------------------------------------- imports

_PROBE = """
import os, sys
from qomhost.cli import qomhost as cli
status = cli.run(sys.argv[1:], "qomhost")
found = [m for m in ("ssl", "cryptography") if m in sys.modules]
os.write(2, ("MODULES " + " ".join(found) + "\\n").encode())
os._exit(status)
"""


def loaded_modules(*args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "-machine", "none", "-nodefaults", "-display", "none",
         "-qmp", "stdio", *args],
        input=b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stderr.decode().strip().splitlines()[-1].split()[1:]


def test_credentials_do_not_import_ssl(tmp_path: Path) -> None:
    """Credentials need ``cryptography`` to load; ``ssl`` waits for a TLS connection."""
    d = creds_dir(tmp_path, SERVER_FILES)
    creds = f"tls-creds-x509,id=tls0,dir={d},endpoint=server"
    assert loaded_modules("-object", creds) == ["cryptography"]


# --------------------------------------------------------------------------- qomctl


def run_qomctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from qomhost.cli.qomctl import main

    with pytest.raises(SystemExit) as info:
        main(["authz", "check", *argv])
    out, err = capsys.readouterr()
    assert isinstance(info.value.code, int)
    return info.value.code, out, err


def test_qomctl_check_with_a_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    """``--cert`` prints the identity QEMU would check, then the verdict."""
    cert = str(DATA / "client-cert.pem")
    rule = json.dumps(
        {
            "qom-type": "authz-list",
            "id": "a",
            "rules": [{"match": "*CN=client", "policy": "allow", "format": "glob"}],
        }
    )
    assert run_qomctl(capsys, rule, "--cert", cert) == (
        0,
        f"identity: {CLIENT_DN}\n"
        'allow: rule 0 matched (match "*CN=client", format glob, policy allow)\n',
        "",
    )
    assert run_qomctl(capsys, "authz-simple,id=a,identity=CN=client", "--cert", cert)[:2] == (
        1,
        f'identity: {CLIENT_DN}\ndeny: the allowed identity is "CN=client"\n',
    )
    assert run_qomctl(capsys, "authz-simple,id=a,identity=x", "--cert", str(DATA / "make.sh")) == (
        2,
        "",
        f"qomctl: {DATA / 'make.sh'}: ASN1 parser: Error in DER parsing.\n",
    )
