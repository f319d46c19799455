"""``authz-pam`` against the real libpam, with Debian's pam_wrapper.

pam_wrapper (``libpam-wrapper``) is preloaded into a child process
(``LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1``) and reads PAM service files
from a directory of the test's own (``PAM_WRAPPER_SERVICE_DIR``), so the
system's ``/etc/pam.d`` is neither read nor changed. Two services:

* ``qemu-vnc``: ``pam_matrix`` (shipped with pam_wrapper), whose password
  file lists fred for this service and bob for another one;
* ``qemu-listfile``: the stock ``pam_listfile`` module (``libpam-modules``)
  with an allow-list holding fred.

Each must allow fred and deny bob. The check is QEMU's: ``pam_start`` with no
conversation, then ``pam_acct_mgmt(PAM_SILENT)``; that works only because
qomhost resolves libpam's functions through the global scope, where the
preloaded wrapper sits.

Without pam_wrapper the tests are skipped, with the reason, unless
``CI=true``: then they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

BIN = Path(sys.executable).parent
QOMCTL = str(BIN / "qomctl")


def _find(name: str) -> str | None:
    """``name`` in the library directories (multiarch first)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for root in (f"/usr/lib/{multiarch}", "/usr/lib64", "/usr/lib", f"/lib/{multiarch}"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    return None


def _require(what: str, path: str | None) -> str:
    if path is not None:
        return path
    reason = f"{what} not found; install Debian's libpam-wrapper (make system-deps)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true, so this is an error)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pam_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    wrapper = _require("libpam_wrapper.so", _find("libpam_wrapper.so"))
    matrix = _require("pam_matrix.so", _find("pam_wrapper/pam_matrix.so"))
    root = tmp_path_factory.mktemp("pam")
    services = root / "services"
    services.mkdir()
    passdb = root / "passdb"
    # pam_matrix: user:password:service
    passdb.write_text("fred:letmein:qemu-vnc\nbob:hunter2:other-service\n")
    (services / "qemu-vnc").write_text(
        f"auth required {matrix} passdb={passdb}\naccount required {matrix} passdb={passdb}\n"
    )
    allowed = root / "allowed-users"
    allowed.write_text("fred\n")
    (services / "qemu-listfile").write_text(
        f"account required pam_listfile.so item=user sense=allow file={allowed} onerr=fail\n"
    )
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=wrapper,
        PAM_WRAPPER="1",
        PAM_WRAPPER_SERVICE_DIR=str(services),
    )
    return env


def qomctl_check(env: dict[str, str], service: str, user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QOMCTL, "authz", "check", f"authz-pam,id=pam0,service={service}", user],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("service", ["qemu-vnc", "qemu-listfile"])
def test_allows_one_user_and_denies_another(pam_env: dict[str, str], service: str) -> None:
    fred = qomctl_check(pam_env, service, "fred")
    assert (fred.returncode, fred.stdout) == (
        0,
        f'allow: PAM account management of service "{service}" passed\n',
    ), fred.stderr
    bob = qomctl_check(pam_env, service, "bob")
    assert bob.returncode == 1, bob.stderr
    assert bob.stdout.startswith("deny: Unable to authorize user 'bob': "), bob.stdout


def test_library_use_in_process(pam_env: dict[str, str]) -> None:
    """The object inside a host, as a service would use it; the service can
    be changed at run time, and a refusal is logged."""
    script = textwrap.dedent(
        """
        import logging, sys
        from qomhost import Host
        from qomhost.errors import QemuError
        from qomhost.objects.authz.base import authz_is_allowed_by_id

        logging.basicConfig(stream=sys.stdout, format="LOG %(message)s")
        host = Host()
        pam = host.add_object("authz-pam", "pam0", service="qemu-vnc")
        print(authz_is_allowed_by_id(host, "pam0", "fred"))
        try:
            authz_is_allowed_by_id(host, "pam0", "bob")
        except QemuError as err:
            print("error:", err.desc)
        print(pam.is_allowed("bob"))
        pam.set_property_json("service", "qemu-listfile")
        print(pam.is_allowed("fred"), pam.is_allowed("bob"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=pam_env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("error: Unable to authorize user 'bob': ")
    assert lines[2].startswith("LOG /objects/pam0: Unable to authorize user 'bob': ")
    assert lines[3] == "False"
    assert lines[4].startswith("LOG /objects/pam0: Unable to authorize user 'bob': ")
    assert lines[5:] == ["True False"]
