"""``authz-list-file`` while its rule file is rewritten as fast as it can be.

Version ``k`` of the file allows ``alice`` and ``v<k>``, and denies
everyone else (``mallory`` among them). So every complete version gives
the same answers for alice (allowed) and mallory (denied), and anything
else -- a file read half-written, an empty one, a gap with no rules -- is
seen as a wrong answer for one of them. A pretty-printed JSON object has no
prefix that is valid JSON, so a half-written file cannot pass for a version.

The file is rewritten in turn in place (``O_TRUNC`` and small writes), by
rename over it, and by delete and create, while four threads decide
continuously and the main loop runs in a thread of its own. At the end the
last version must be in force: ``v<last>`` allowed, ``v<last-1>`` denied.

``make test`` writes 100 versions in about a second; ``make soak``
(``QOMHOST_SOAK=1``) 1 000 in about ten seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpload import soak
from qomhost import Host
from qomhost.objects.authz.listfile import QAuthZListFile

VERSIONS = 1000 if soak() else 100
#: seconds over which the versions are written
SPREAD = 10.0 if soak() else 1.0
DECIDERS = 4


#: the writer, a process of its own (as an editor or a configuration tool
#: is): ``WRITER PATH VERSIONS SPREAD`` writes versions 1 to VERSIONS, in
#: turn in place, by rename and by delete and create, spread over SPREAD
#: seconds, then prints the seconds it took
WRITER = """
import json, os, sys, time

def version(k):
    rules = {"policy": "deny", "rules": [
        {"match": "alice", "policy": "allow"},
        {"match": "v%d" % k, "policy": "allow"},
        {"match": "mallory", "policy": "deny"},
    ]}
    return json.dumps(rules, indent=2).encode()

def in_place(path, data):
    with open(path, "wb") as f:
        for at in range(0, len(data), 16):
            f.write(data[at : at + 16])
            f.flush()

def by_rename(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)

def delete_and_create(path, data):
    os.unlink(path)
    in_place(path, data)

path, versions, spread = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if versions == 0:
    in_place(path, version(0))
    sys.exit(0)
ways = [in_place, by_rename, delete_and_create]
began = time.monotonic()
for k in range(1, versions + 1):
    ways[k % 3](path, version(k))
    ahead = began + spread * k / versions - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print(time.monotonic() - began)
"""


def write(path: Path, versions: int, spread: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(versions), str(spread)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host()
    yield h
    h.close()


def test_rewrites_under_continuous_decisions(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    assert write(path, 0).wait(10) == 0
    acl = host.add_object("authz-list-file", "acl", filename=str(path), refresh=True)
    assert isinstance(acl, QAuthZListFile)
    stop = threading.Event()
    wrong: list[str] = []
    decisions = [0] * DECIDERS
    crashed: list[BaseException] = []

    def decide(me: int) -> None:
        try:
            while not stop.is_set():
                if not acl.is_allowed("alice"):
                    wrong.append(f"alice denied at generation {acl.generation}")
                if acl.is_allowed("mallory"):
                    wrong.append(f"mallory allowed at generation {acl.generation}")
                decisions[me] += 2
        except BaseException as exc:
            crashed.append(exc)

    def loop() -> None:
        try:
            while not stop.is_set():
                timer = host.context.call_later(0.02, lambda: None)
                host.context.run_once()
                timer.cancel()
        except BaseException as exc:
            crashed.append(exc)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(DECIDERS)]
    threads.append(threading.Thread(target=loop))
    for t in threads:
        t.start()
    start_gen = acl.generation
    try:
        writer = write(path, VERSIONS, SPREAD)
        out, _ = writer.communicate(timeout=SPREAD * 10 + 30)
        assert writer.returncode == 0
        written = float(out)
        deadline = time.monotonic() + 5
        while not acl.is_allowed(f"v{VERSIONS}") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert crashed == []
    assert wrong == [], wrong[:5]
    assert acl.is_allowed(f"v{VERSIONS}"), "the last version is not in force"
    assert not acl.is_allowed(f"v{VERSIONS - 1}")
    reloads = acl.generation - start_gen
    print(
        f"\n{VERSIONS} rewrites in {written:.1f} s (in place, rename, delete and create in turn);"
        f" {reloads} reloads; {sum(decisions)} decisions by {DECIDERS} threads, none wrong"
    )
