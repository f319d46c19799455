"""The seed document's examples, end to end, against a live qomhost.

It builds the secrets the seed describes (inline, from a file, and
AES-256-CBC encrypted with the ``openssl`` recipe), starts ``qomhost`` with
them, the seed's iothread and a QMP socket, and runs the seed's QMP
(``query-iothreads``) and HMP (``qom-set /objects/iothread1 poll-max-ns
100000``) examples through the official ``qemu.qmp`` client, printing each
command and its answer.
"""

from __future__ import annotations

import json
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
    ]  # fmt: skip
    print("\n== starting qomhost")
    print("  $ " + " ".join(argv[:1] + [a if " " not in a else repr(a) for a in argv[1:]]))
    proc = subprocess.Popen(argv, cwd=work)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print("demo: qomhost did not start", file=sys.stderr)
                return 1
            time.sleep(0.01)
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
    print("\n== who may use the VNC service (the seed's rule file)")
    for identity in ("fred", "bob", "danb", "dan*", "dave"):
        check = subprocess.run(
            [str(BIN / "qomctl"), "authz", "check",
             f"authz-list-file,id=a,filename={work}/vnc-sasl.acl", identity],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(f"  $ qomctl authz check authz-list-file,id=a,filename=vnc-sasl.acl {identity!r}")
        print("    " + (check.stdout or check.stderr).strip())
    return status


if __name__ == "__main__":
    sys.exit(main())
