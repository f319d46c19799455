"""pytest wiring for the differential suite: programs, skipping, background runs.

``cases.py`` holds the case table and the parametrized test; its name does not
match ``test_*.py``, so it is collected here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Case, Runner, find_qemu, find_qomhost  # noqa: E402

CASES_FILE = HERE / "cases.py"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # A path named on the command line is collected by pytest itself.
    if file_path == CASES_FILE and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    qemu, qomhost = find_qemu(), find_qomhost()
    return [
        f"differential: QEMU = {qemu.executable or qemu.missing}",
        f"differential: qomhost = {qomhost.executable or qomhost.missing}",
    ]


def _selected_cases(session: pytest.Session) -> list[Case]:
    cases: list[Case] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("case") if callspec is not None else None
        if isinstance(case, Case):
            cases.append(case)
    return cases


@pytest.fixture(scope="session")
def differential_runner(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """Runs cases against both programs; every selected case is started in the
    background as soon as the first one is needed.

    Skips (or fails, when ``CI=true``) if QEMU is not installed.  A missing
    qomhost makes each case fail instead, with the path that was tried.
    """
    qemu = find_qemu()
    if qemu.executable is None:
        reason = f"{qemu.missing}; the differential cases need QEMU 7.2 to compare against"
        if in_ci():
            pytest.fail(f"{reason} (CI=true, so this is an error)", pytrace=False)
        pytest.skip(reason)
    runner = Runner(qemu, find_qomhost())
    runner.prefetch(_selected_cases(request.session))
    yield runner
    runner.close()
