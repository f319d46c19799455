"""``authz-list-file`` refreshing with real inotify on a real file system.

Each test creates a ``Host`` in-process and lets its main loop run (one
iteration at a time, or in a thread), writes the rule file the ways editors
and tools do, and checks the decisions:

* in place (``open(O_TRUNC)``, ``write``, ``close``): the old rules stay in
  force until the writer closes the file -- never a deny-all in between;
* renamed over the name; deleted and created again; hard-linked into place;
* deleted or renamed away: the last rules stay in force;
* invalid once written: everyone is denied and the reason is logged, until
  a valid file arrives.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostproc import Processes, program, run_qmp_stdio
from qomhost import Host
from qomhost.objects.authz.listfile import QAuthZListFile

ALICE_ONLY = {"policy": "deny", "rules": [{"match": "alice", "policy": "allow"}]}
ALICE_AND_BOB = {
    "policy": "deny",
    "rules": [
        {"match": "alice", "policy": "allow"},
        {"match": "b*", "policy": "allow", "format": "glob"},
    ],
}
EVERYONE = {"policy": "allow"}


def text(rules: object) -> str:
    return json.dumps(rules, indent=1)


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host()
    yield h
    h.close()


def pump(host: Host, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the main loop until ``until()`` holds (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail("the rule file change was not picked up")
        timer = host.context.call_later(0.05, lambda: None)
        host.context.run_once()
        timer.cancel()


def settle(host: Host, seconds: float = 0.1) -> None:
    """Run the main loop for a while, handling whatever arrives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        timer = host.context.call_later(0.02, lambda: None)
        host.context.run_once()
        timer.cancel()


def make(host: Host, path: Path, rules: object = ALICE_ONLY) -> QAuthZListFile:
    path.write_text(text(rules))
    obj = host.add_object("authz-list-file", "acl", filename=str(path))
    assert isinstance(obj, QAuthZListFile)
    return obj


def reloaded(obj: QAuthZListFile, since: int) -> Callable[[], bool]:
    return lambda: obj.generation > since


def test_in_place_rewrite_waits_for_close(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    assert acl.is_allowed("alice") and not acl.is_allowed("bob")
    gen = acl.generation
    content = text(ALICE_AND_BOB)
    with open(path, "w") as f:  # truncates: IN_MODIFY, which QEMU reloads on
        settle(host)
        assert acl.is_allowed("alice"), "an empty file was loaded"
        f.write(content[: len(content) // 2])
        f.flush()
        settle(host)
        assert acl.is_allowed("alice"), "a half-written file was loaded"
        assert acl.generation == gen
        f.write(content[len(content) // 2 :])
    pump(host, reloaded(acl, gen))
    assert acl.is_allowed("alice") and acl.is_allowed("bob") and not acl.is_allowed("carol")


def test_rename_over(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    gen = acl.generation
    tmp = tmp_path / ".acl.json.tmp"
    tmp.write_text(text(EVERYONE))
    settle(host)
    assert acl.generation == gen, "another file in the directory caused a reload"
    os.rename(tmp, path)
    pump(host, reloaded(acl, gen))
    assert acl.is_allowed("carol")


def test_delete_keeps_rules_then_create_loads(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    gen = acl.generation
    path.unlink()
    settle(host)
    assert acl.generation == gen
    assert acl.is_allowed("alice") and not acl.is_allowed("bob")
    path.write_text(text(ALICE_AND_BOB))
    pump(host, lambda: acl.is_allowed("bob"))
    assert acl.is_allowed("alice")


def test_rename_away_keeps_rules(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    gen = acl.generation
    os.rename(path, tmp_path / "old.json")
    settle(host)
    assert acl.generation == gen and acl.is_allowed("alice")


def test_hard_link_into_place(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    path.unlink()
    ready = tmp_path / "ready.json"
    ready.write_text(text(EVERYONE))
    settle(host)
    gen = acl.generation
    os.link(ready, path)  # only IN_CREATE: the file is complete already
    pump(host, reloaded(acl, gen))
    assert acl.is_allowed("carol")


def test_invalid_file_fails_closed_and_logs(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path, EVERYONE)
    gen = acl.generation
    with caplog.at_level(logging.ERROR, logger="qomhost.authz"):
        path.write_text('{"policy": "allow", "rules": [')
        pump(host, reloaded(acl, gen))
    assert not acl.is_allowed("alice") and not acl.is_allowed("carol")
    assert acl.list is None
    assert "JSON parse error" in caplog.text
    assert "denying every identity" in caplog.text

    gen = acl.generation
    with caplog.at_level(logging.ERROR, logger="qomhost.authz"):
        path.write_text(text({"policy": "allow", "bogus": 1}))
        pump(host, reloaded(acl, gen))
    assert "Property 'authz-list.bogus' not found" in caplog.text
    assert not acl.is_allowed("carol")

    gen = acl.generation
    path.write_text(text(ALICE_ONLY))
    pump(host, reloaded(acl, gen))
    assert acl.is_allowed("alice") and not acl.is_allowed("carol")


def test_invalid_file_created_by_link_waits(host: Host, tmp_path: Path) -> None:
    # A file that appears already invalid is taken for one still being
    # written; the next close or rename decides.
    path = tmp_path / "acl.json"
    acl = make(host, path)
    path.unlink()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    settle(host)
    os.link(broken, path)
    settle(host)
    assert acl.is_allowed("alice")
    gen = acl.generation
    with open(path, "a") as f:
        f.write("}")
    pump(host, reloaded(acl, gen))
    assert acl.list is not None
    assert not acl.is_allowed("alice")  # "{}": no rules, default deny


def test_filename_changed_later_is_read_at_next_reload(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    other = tmp_path / "other.json"
    other.write_text(text(EVERYONE))
    acl.set_property_json("filename", str(other))
    gen = acl.generation
    path.write_text(text(ALICE_ONLY))  # the watch stays on the old name
    pump(host, reloaded(acl, gen))
    assert acl.is_allowed("carol")


def test_refresh_off_does_not_watch(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    path.write_text(text(ALICE_ONLY))
    acl = host.add_object("authz-list-file", "acl", filename=str(path), refresh=False)
    assert isinstance(acl, QAuthZListFile)
    path.write_text(text(EVERYONE))
    settle(host)
    assert not acl.is_allowed("carol")


def test_object_del_stops_watching(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    acl = make(host, path)
    gen = acl.generation
    host.del_object("acl")
    path.write_text(text(EVERYONE))
    settle(host)
    assert acl.generation == gen


def test_checks_from_another_thread_never_see_a_gap(host: Host, tmp_path: Path) -> None:
    """While the file is rewritten in place over and over, alice (allowed by
    every version) must never be denied, as she briefly is in QEMU."""
    path = tmp_path / "acl.json"
    acl = make(host, path)
    stop = threading.Event()
    denied: list[int] = []
    checks = [0]

    def check() -> None:
        while not stop.is_set():
            if not acl.is_allowed("alice"):
                denied.append(acl.generation)
            checks[0] += 1

    def loop() -> None:
        while not stop.is_set():
            timer = host.context.call_later(0.02, lambda: None)
            host.context.run_once()
            timer.cancel()

    threads = [threading.Thread(target=check), threading.Thread(target=loop)]
    for t in threads:
        t.start()
    try:
        start = acl.generation
        versions = [text(ALICE_ONLY), text(ALICE_AND_BOB)]
        for i in range(40):
            content = versions[i % 2]
            with open(path, "w") as f:
                for at in range(0, len(content), 7):
                    f.write(content[at : at + 7])
                    f.flush()
            time.sleep(0.005)
        # The last version written allows bob; bursts may be read as one.
        deadline = time.monotonic() + 5
        while not acl.is_allowed("bob") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert acl.is_allowed("bob"), "the last version was not loaded"
    assert acl.generation >= start + 2, "the rewrites were not seen"
    assert checks[0] > 0
    assert denied == []


# --- the programs: qomhost creates the type under both names, QEMU 7.2 under neither ---


@pytest.mark.parametrize("name", ["authz-list-file", "authz-listfile"])
def test_command_line_creates_it_and_qemu_cannot(
    procs: Processes, workdir: Path, name: str
) -> None:
    path = workdir / "acl.json"
    path.write_text(text(ALICE_ONLY))
    args = ["-qmp", "stdio", "-object", f"{name},id=acl,filename={path}"]
    commands = [
        {"execute": "qom-get", "arguments": {"path": "/objects/acl", "property": p}}
        for p in ("type", "filename", "refresh")
    ]
    ours = run_qmp_stdio(procs, program("qomhost"), args, commands)
    assert ours.status == 0, ours.stderr
    replies = [m["return"] for m in ours.messages if "return" in m]
    assert replies[1:4] == [name, str(path), True]

    qemu = run_qmp_stdio(procs, program("qemu"), args, commands)
    assert qemu.status == 1
    expected = {
        "authz-list-file": f"-object {name},id=acl,filename={path}: "
        "Parameter 'qom-type' does not accept value 'authz-list-file'",
        "authz-listfile": "invalid object type: authz-listfile",
    }[name]
    assert qemu.stderr == f"qemu-system-x86_64: {expected}\n"
