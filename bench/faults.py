"""Every fault the toolkit is tested against, and how each ended.

    .venv/bin/python bench/faults.py [-k EXPRESSION]

Runs the fault tests (`pytest -m faults`, the real servers they start: PostgreSQL,
sshd, moto, a Prefect server) with FLOWS_FAULT_RECORD set, so that each fault test
records the outcome it asserts and what the fault cost (flows/toolkit/tests/
fault_record.py), and reads pytest's own verdict of each test from its JUnit report.
Prints one line per fault:

    <test>  <outcome>  extra=<seconds the fault cost over a faultless run>  secrets=<n>

where the outcome is the one the test asserts (recovered, failed clean) when it
passed, and broken when it failed, errored (a secret found fails it too) or was
skipped; then `faults=N recovered=R failed_clean=C broken=B secrets_found=S`.
Exits 1 when B is not 0 or pytest failed otherwise: `make test-faults` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from xml.etree import ElementTree
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
TESTS = "flows/toolkit/tests"
BROKEN = "broken"


def run_fault_tests(record_file: Path, report_file: Path, expression: str | None):
    """pytest -m faults, one test at a time."""
    command = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-m", "faults", "-q"]
    command += [f"--junitxml={report_file}", TESTS]
    if expression:
        command += ["-k", expression]
    environment = {
        **os.environ,
        "FLOWS_FAULT_RECORD": str(record_file),
        # A service that cannot start is a failure here, not a skip.
        "REQUIRE_SERVICES": "1",
    }
    # pytest's own lines stay visible: a failure's details are in them.
    return subprocess.run(command, cwd=REPOSITORY_DIR, env=environment, check=False)


def verdicts(report_file: Path) -> dict[str, bool]:
    """{test name: passed} from pytest's JUnit report."""
    found = {}
    for case in ElementTree.parse(report_file).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{module}::{case.get('name')}"
        failed = any(case.find(tag) is not None for tag in ("failure", "error"))
        skipped = case.find("skipped") is not None
        found[name] = not failed and not skipped
    return found


def records(record_file: Path) -> dict[str, dict]:
    """{test name: the record it wrote}."""
    if not record_file.exists():
        return {}
    lines = record_file.read_text(encoding="utf-8").splitlines()
    found = {}
    for line in lines:
        record = json.loads(line)
        module, _, name = record["test"].rpartition("::")
        found[f"{Path(module).stem}::{name}"] = record
    return found


def outcome_of(record: dict | None, passed: bool) -> str:
    """What the fault ended in: the asserted outcome, or broken."""
    if record is None or not passed or record["secrets_found"]:
        return BROKEN
    return record["expected"]


def print_table(passed: dict[str, bool], recorded: dict[str, dict], seconds) -> int:
    """One line per fault and the summary; how many broke."""
    # A fault test is one that recorded an outcome; any other test of `-m faults`
    # (classifications of errors) counts only when it failed.
    names = sorted(set(recorded) | {name for name, ok in passed.items() if not ok})
    counts = {"recovered": 0, "failed clean": 0, BROKEN: 0}
    secrets_found = 0
    width = max((len(name) for name in names), default=10)
    for name in names:
        record = recorded.get(name) or {"extra_seconds": None, "secrets_found": 0}
        outcome = outcome_of(recorded.get(name), passed.get(name, False))
        counts[outcome] += 1
        secrets_found += record["secrets_found"]
        extra = record["extra_seconds"]
        extra_text = f"{extra:.1f}s" if extra is not None else "-"
        print(
            f"{name:<{width}}  {outcome:<12}  extra={extra_text:<6}  "
            f"secrets={record['secrets_found']}"
        )
    print(
        f"faults={len(names)} recovered={counts['recovered']} "
        f"failed_clean={counts['failed clean']} broken={counts[BROKEN]} "
        f"secrets_found={secrets_found} wall_seconds={seconds:.0f}"
    )
    return counts[BROKEN]


def main() -> int:
    """Run, print the table and the summary; 1 when a fault broke something."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="expression", help="only tests matching (pytest)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as folder:
        record_file = Path(folder, "record.jsonl")
        report_file = Path(folder, "report.xml")
        started = time.monotonic()
        pytest_status = run_fault_tests(record_file, report_file, arguments.expression)
        seconds = time.monotonic() - started
        if not report_file.exists():
            print("the fault tests did not run (no pytest report)", file=sys.stderr)
            return 1
        passed, recorded = verdicts(report_file), records(record_file)
    broken = print_table(passed, recorded, seconds)
    return 1 if broken or pytest_status.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
