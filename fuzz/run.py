"""Run the fuzz targets with atheris (libFuzzer, coverage-guided).

    fuzz/run.py [--runs N] [--timeout S] [--jobs J] [TARGET ...]

Each target runs in a child process of its own for ``N`` executions
(default one million), from seeds in ``fuzz/targets.py`` plus whatever
corpus earlier runs kept in ``.cache/fuzz/corpus/<target>``. A table of
executions, crashes, hangs and time per target is printed at the end and
written to ``.cache/fuzz/results.json``.

A crash (an exception a target does not allow) does not stop the run: the
child saves the input as ``.cache/fuzz/crashes/<target>-<hash>`` with its
traceback beside it, once per distinct place, and carries on, so that one
bug does not hide the next. A hang (one input running longer than
``--timeout`` seconds) ends the child; libFuzzer saves the input as
``.cache/fuzz/crashes/<target>-timeout-<hash>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".cache" / "fuzz"


def _signature(exc: BaseException) -> str:
    """Where an exception came from: its type and the innermost qomhost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "qomhost" in f.filename] or frames
    where = f"{Path(own[-1].filename).name}:{own[-1].lineno}" if own else "?"
    return f"{type(exc).__name__}@{where}"


def child(name: str, runs: int, timeout: int) -> None:
    """Fuzz one target in this process (libFuzzer exits it when done)."""
    import atheris

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["qomhost"]):
        import pkgutil

        import qomhost

        # Every module now, so that code imported lazily by a target is
        # instrumented too.
        for module in pkgutil.walk_packages(qomhost.__path__, "qomhost."):
            if not module.name.endswith("__main__"):
                __import__(module.name)
        import targets

    target = targets.TARGETS[name]
    corpus = CACHE / "corpus" / name
    crashes = CACHE / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    for seed in targets.SEEDS[name]():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    targets.setup()
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except Exception as exc:
            signature = _signature(exc)
            if signature in seen:
                return
            seen.add(signature)
            path = crashes / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}"
            path.write_bytes(data)
            text = "".join(traceback.format_exception(exc))
            path.with_suffix(".txt").write_text(f"{signature}\n{text}")
            sys.stderr.write(f"\nCRASH {signature} -> {path}\n{text}\n")

    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-runs={runs}",
            f"-timeout={timeout}",
            f"-artifact_prefix={crashes}/{name}-",
            "-max_len=4096",
            "-print_final_stats=1",
        ],
        one_input,
    )
    atheris.Fuzz()


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_CRASH = re.compile(r"^CRASH (\S+)", re.M)


def run_target(name: str, runs: int, timeout: int) -> dict[str, object]:
    """One child; its figures read back from the log it leaves."""
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / f"{name}.log"
    start = time.monotonic()
    with log.open("w") as f:
        command = [sys.executable, __file__, "--child", name, "--runs", str(runs)]
        rc = subprocess.call(
            [*command, "--timeout", str(timeout)],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    elapsed = time.monotonic() - start
    text = log.read_text(errors="replace")
    done = _DONE.search(text)
    executions = int(done.group(1)) if done else _last_count(text)
    hang = "ALARM: working on the last Unit" in text or "-timeout-" in text
    return {
        "target": name,
        "executions": executions,
        "crashes": len(_CRASH.findall(text)),
        "crash_sites": sorted(set(_CRASH.findall(text))),
        "hangs": int(hang),
        "seconds": round(elapsed, 1),
        "exec_per_s": round(executions / elapsed) if elapsed else 0,
        "exit": rc,
    }


def _last_count(text: str) -> int:
    counts = re.findall(r"^#(\d+)\s", text, re.M)
    return int(counts[-1]) if counts else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions per target")
    parser.add_argument("--timeout", type=int, default=10, help="seconds before an input hangs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.timeout)
        return 0
    sys.path.insert(0, str(HERE))
    from targets import TARGETS

    if args.list:
        print("\n".join(TARGETS))
        return 0
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)} (see --list)")
    results = []
    print(f"{'target':<22}{'executions':>12}{'crashes':>9}{'hangs':>7}{'seconds':>10}{'exec/s':>9}")
    for name in names:
        row = run_target(name, args.runs, args.timeout)
        results.append(row)
        print(
            f"{name:<22}{row['executions']:>12}{row['crashes']:>9}{row['hangs']:>7}"
            f"{row['seconds']:>10}{row['exec_per_s']:>9}",
            flush=True,
        )
        for site in row["crash_sites"]:  # type: ignore[attr-defined]
            print(f"    crash: {site}")
    out = CACHE / "results.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update({row["target"]: row for row in results})
    out.write_text(json.dumps(previous, indent=2) + "\n")
    failed = any(row["crashes"] or row["hangs"] for row in results)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
