"""The seed document's examples, end to end, against a live qomhost.

It builds the secrets the seed describes (inline, from a file, and
AES-256-CBC encrypted with the ``openssl`` recipe), starts ``qomhost`` with
them, the seed's iothread, its authz objects, its ``sev-guest`` and its
``cryptodev-vhost-user`` (served by ``qomhost-vhost-user-crypto`` on a unix
socket) and a QMP socket, and runs the seed's QMP (``query-iothreads``) and
HMP (``qom-set /objects/iothread1 poll-max-ns 100000``) examples through the
official ``qemu.qmp`` client, printing each command and its answer. Then the
tools: ``qomctl authz check`` on the seed's rule file, ``qomctl cryptodev
encrypt`` checked against ``openssl enc -nopad``, ``qomctl secret encrypt
--to-keyring`` for a ``secret_keyring``, and ``qomctl sev`` on Debian's OVMF.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

BIN = Path(sys.executable).parent


def sh(command: str, cwd: Path) -> str:
    """Run a shell command as the seed writes it; return its output."""
    print(f"  $ {command}")
    out = subprocess.run(
        ["bash", "-c", command], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout
    return out.strip()


def main() -> int:
    if shutil.which("openssl") is None:
        print("demo: the openssl command is needed for the AES-256-CBC example", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="qomhost-demo-"))
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> int:
    print("== the seed's secrets")
    sh('printf "letmein" > mypasswd.txt', work)
    sh("openssl rand -base64 32 > key.b64", work)
    key = sh("base64 -d key.b64 | hexdump -v -e '/1 \"%02X\"'", work)
    sh("openssl rand -base64 16 > iv.b64", work)
    iv = sh("base64 -d iv.b64 | hexdump -v -e '/1 \"%02X\"'", work)
    secret = sh(f'printf "letmein" | openssl enc -aes-256-cbc -a -K {key} -iv {iv}', work)
    iv_b64 = (work / "iv.b64").read_text().strip()

    # The seed's rule file, less the trailing comma after the last rule,
    # which QEMU's JSON parser (and so qomhost's) rejects.
    (work / "vnc-sasl.acl").write_text(
        '{ "rules": [\n'
        '    { "match": "fred", "policy": "allow", "format": "exact" },\n'
        '    { "match": "bob", "policy": "allow", "format": "exact" },\n'
        '    { "match": "danb", "policy": "deny", "format": "glob" },\n'
        '    { "match": "dan*", "policy": "allow", "format": "exact" }\n'
        '  ],\n  "policy": "deny" }\n'
    )
    sock = work / "qmp.sock"
    crypto_sock = work / "vhost-user-crypto.sock"
    print("\n== the seed's vhost-user crypto backend")
    print(f"  $ qomhost-vhost-user-crypto --socket-path {crypto_sock} --queues 2 &")
    backend = subprocess.Popen(
        [str(BIN / "qomhost-vhost-user-crypto"), "--socket-path", str(crypto_sock), "--queues", "2"]
    )
    try:
        if not wait_for(crypto_sock, backend):
            print("demo: qomhost-vhost-user-crypto did not start", file=sys.stderr)
            return 1
        status = run_host(work, sock, crypto_sock, secret, iv_b64)
        if status == 0:
            status = run_tools(work, crypto_sock)
        return status
    finally:
        backend.terminate()
        backend.wait(timeout=10)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Wait until ``proc`` has created the socket ``path``."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_host(work: Path, sock: Path, crypto_sock: Path, secret: str, iv_b64: str) -> int:
    argv = [
        str(BIN / "qomhost"),
        "-machine", "none", "-nodefaults", "-display", "none",
        "-qmp", f"unix:{sock},server=on,wait=off",
        "-object", "secret,id=sec0,data=letmein,format=raw",
        "-object", "secret,id=sec1,file=mypasswd.txt,format=raw",
        "-object", "secret,id=secmaster0,format=base64,file=key.b64",
        "-object", f"secret,id=sec2,keyid=secmaster0,format=base64,data={secret},iv={iv_b64}",
        "-object", "iothread,id=iothread1,poll-max-ns=32768,poll-grow=0,poll-shrink=0,"
                   "aio-max-batch=0",
        "-object", "authz-simple,id=auth0,identity=CN=laptop.example.com,,O=Example Org,,"
                   "L=London,,ST=London,,C=GB",
        "-object", f"authz-listfile,id=auth1,filename={work}/vnc-sasl.acl,refresh=on",
        "-object", "sev-guest,id=sev0,cbitpos=47,reduced-phys-bits=5",
        "-chardev", f"socket,id=chardev0,path={crypto_sock}",
        "-object", "cryptodev-vhost-user,id=cryptodev0,chardev=chardev0,queues=2",
    ]  # fmt: skip
    print("\n== starting qomhost")
    print("  $ " + " ".join(argv[:1] + [a if " " not in a else repr(a) for a in argv[1:]]))
    proc = subprocess.Popen(argv, cwd=work)
    try:
        if not wait_for(sock, proc):
            print("demo: qomhost did not start", file=sys.stderr)
            return 1
        qmp = QEMUMonitorProtocol(str(sock))
        greeting = qmp.connect(negotiate=True)
        print("\n== QMP greeting")
        print("  " + json.dumps(greeting))

        def execute(cmd: str, **args: object) -> object:
            reply = qmp.cmd_raw(cmd, args or None)
            request: dict[str, object] = {"execute": cmd}
            if args:
                request["arguments"] = args
            print(f"\n-> {json.dumps(request)}")
            print(f"<- {json.dumps(reply)}")
            return reply

        def hmp(line: str) -> None:
            reply = qmp.cmd_raw("human-monitor-command", {"command-line": line})
            print(f"\n(qemu) {line}")
            text = str(reply.get("return", reply)).replace("\r\n", "\n").rstrip("\n")
            if text:
                print(text)

        print("\n== QMP")
        execute("qom-list-types", implements="secret_common")
        execute("qom-list", path="/objects/sec2")
        execute("qom-get", path="/objects/sec2", property="loaded")
        execute("qom-get", path="/objects/sec1", property="file")
        # A space is not base64: QEMU's error, and nothing is created.
        execute("object-add", **{"qom-type": "secret", "id": "sec3", "data": "bG V0bWVpbg==",
                                 "format": "base64"})  # fmt: skip
        execute("object-add", **{"qom-type": "secret", "id": "sec3", "data": "bGV0bWVpbg==",
                                 "format": "base64"})  # fmt: skip
        execute("object-del", id="sec0")
        execute("query-iothreads")
        execute("qom-get", path="/objects/auth0", property="identity")
        execute("qom-list", path="/objects/auth1")
        execute("qom-get", path="/objects/sev0", property="cbitpos")
        execute("qom-get", path="/objects/sev0", property="policy")
        execute("qom-get", path="/objects/cryptodev0", property="chardev")
        execute("qom-get", path="/objects/cryptodev0", property="queues")
        print("\n== HMP")
        hmp("qom-set /objects/iothread1 poll-max-ns 100000")
        hmp("info iothreads")
        hmp("info qom-tree /objects")
        hmp("qom-set /objects/sec1 format base64")
        hmp("qom-get /objects/sec1 format")
        hmp("object_add secret,id=sec4,keyid=nope,data=x,iv=x")
        execute("query-iothreads")
        execute("quit")
        qmp.close()
        status = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nqomhost exited with status {status}")
    return status


def tool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one of qomhost's programs, printing the command line."""
    shown = " ".join(a if a and " " not in a else repr(a) for a in args)
    print(f"  $ {shown}")
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], input=stdin, capture_output=True, check=False
    )


def run_tools(work: Path, crypto_sock: Path) -> int:
    print("\n== who may use the VNC service (the seed's rule file)")
    for identity in ("fred", "bob", "danb", "dan*", "dave"):
        check = subprocess.run(
            [str(BIN / "qomctl"), "authz", "check",
             f"authz-list-file,id=a,filename={work}/vnc-sasl.acl", identity],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(f"  $ qomctl authz check authz-list-file,id=a,filename=vnc-sasl.acl {identity!r}")
        print("    " + (check.stdout or check.stderr).strip())

    print("\n== AES-256-CBC through the vhost-user crypto backend, against openssl")
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()
    plaintext = os.urandom(64 * 1024)
    for queue in ("0", "1"):
        through = tool(
            "qomctl", "cryptodev", "encrypt", "--socket", str(crypto_sock),
            "--cipher", "aes-256-cbc", "--key", key, "--iv", iv, "--queue", queue,
            stdin=plaintext,
        )  # fmt: skip
        if through.returncode != 0:
            print(through.stderr.decode().strip(), file=sys.stderr)
            return 1
        reference = subprocess.run(
            ["openssl", "enc", "-aes-256-cbc", "-nopad", "-K", key, "-iv", iv],
            input=plaintext, capture_output=True, check=True,
        ).stdout  # fmt: skip
        same = "the same bytes" if through.stdout == reference else "DIFFERENT bytes"
        print(f"    64 KiB on queue {queue}: {same} as openssl enc -aes-256-cbc -nopad")
        if through.stdout != reference:
            return 1

    print("\n== a secret kept in the kernel keyring")
    enc = tool(
        "qomctl", "secret", "encrypt", "--key-file", str(work / "key.b64"),
        "--data", "letmein", "--to-keyring", f"qomhost-demo-{os.getpid()}", "--with-key",
    )  # fmt: skip
    text = (enc.stdout or enc.stderr).decode().strip()
    print("    " + text.replace("\n", "\n    "))
    if enc.returncode == 0:
        serial = int(text.rsplit("serial=", 1)[1].split(",", 1)[0])
        check = subprocess.run(
            [str(BIN / "qomhost"), "-machine", "none", "-nodefaults", "-display", "none",
             "-qmp", "stdio", *text.replace("-object ", "-object\n").split("\n")],
            input=b'{"execute":"qmp_capabilities"}\n'
            b'{"execute":"qom-get","arguments":{"path":"/objects/sec0","property":"loaded"}}\n'
            b'{"execute":"quit"}\n',
            capture_output=True, cwd=work, check=False,
        )  # fmt: skip
        loaded = b'{"return": true}' in check.stdout
        print(f"    qomhost loads it: {'yes' if loaded else 'no: ' + check.stderr.decode()}")
        from qomhost.crypto.keyring import KEY_SPEC_SESSION_KEYRING, revoke_key, unlink_key

        revoke_key(serial)
        unlink_key(serial, KEY_SPEC_SESSION_KEYRING)

    ovmf = Path("/usr/share/OVMF/OVMF_CODE.fd")
    if ovmf.exists():
        print("\n== what a SEV guest owner checks before launch")
        for args in (
            ("qomctl", "sev", "policy", "0x1"),
            ("qomctl", "sev", "measure", "--ovmf", str(ovmf)),
        ):
            out = tool(*args)
            print("    " + (out.stdout or out.stderr).decode().strip().replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
