"""What importing the runtime costs a run: each entry module now against a release.

    .venv/bin/python bench/imports.py [--before v1.5.0] [--rounds 7]

Checks the release's flows/ out into a temporary folder (`git archive`), compiles
both copies (a run's image has its .pyc files), then imports each entry module in a
fresh process, alternating the release and the working tree, --rounds times each.
Prints per module and copy: the median seconds of the import (measured inside the
process, from before the import to after it), the process's peak RSS after it
(VmHWM), and the modules in sys.modules; then each module's after/before ratios, and
last the line `delivery_import_before_s=B delivery_import_after_s=A ratio=R`.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
ENTRY_MODULES = (
    "toolkit.delivery",
    "toolkit.database",
    "toolkit.sftp",
    "toolkit.inbound",
    "toolkit.connections",
)
MEASURE = """
import json, sys, time
started = time.perf_counter()
import importlib
importlib.import_module(sys.argv[1])
seconds = time.perf_counter() - started
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"seconds": seconds, "peak_rss": peak, "modules": len(sys.modules)}))
"""


def release_flows(ref: str, into: Path) -> Path:
    """The flows/ folder of `ref`, written below `into`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "flows"],
        cwd=REPOSITORY_DIR,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "flows"


def measure(flows_dir: Path, module: str) -> dict:
    """One fresh process importing `module` from `flows_dir`: its figures."""
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, module],
        cwd=flows_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_all(before: str, rounds: int) -> dict:
    """{(module, "before" or "after"): [figures of each round]}."""
    with tempfile.TemporaryDirectory() as scratch:
        copies = {
            "before": release_flows(before, Path(scratch)),
            "after": REPOSITORY_DIR / "flows",
        }
        for flows_dir in copies.values():
            compileall.compile_dir(flows_dir, quiet=1)
        figures = {(m, c): [] for m in ENTRY_MODULES for c in copies}
        for module in ENTRY_MODULES:
            measure(copies["after"], module)  # warms the file cache for both
            for _ in range(rounds):
                for copy, flows_dir in copies.items():
                    figures[module, copy].append(measure(flows_dir, module))
    return figures


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", default="v1.5.0", help="the release to compare")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    figures = measure_all(options.before, options.rounds)
    print(f"{'module':22} {'copy':7} {'import s':>9} {'peak MB':>8} {'modules':>8}")
    medians = {}
    for (module, copy), runs in figures.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = statistics.median(run["peak_rss"] for run in runs) / 2**20
        modules = statistics.median(run["modules"] for run in runs)
        medians[module, copy] = (seconds, peak)
        print(f"{module:22} {copy:7} {seconds:9.2f} {peak:8.1f} {modules:8.0f}")
    for module in ENTRY_MODULES:
        (before_s, before_mb), (after_s, after_mb) = (
            medians[module, "before"],
            medians[module, "after"],
        )
        print(
            f"{module:22} after/before: import {after_s / before_s:.2f}, "
            f"peak {after_mb / before_mb:.2f}"
        )
    before_s = medians["toolkit.delivery", "before"][0]
    after_s = medians["toolkit.delivery", "after"][0]
    print(
        f"delivery_import_before_s={before_s:.2f} delivery_import_after_s="
        f"{after_s:.2f} ratio={after_s / before_s:.2f}"
    )


if __name__ == "__main__":
    main()
