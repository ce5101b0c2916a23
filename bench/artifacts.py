"""What the delivery artifacts cost a flow run: the same run with and without them.

    .venv/bin/python bench/artifacts.py --files 20 --runs 3

Starts its own Prefect server on 127.0.0.1 (as the tests do). A child process runs a
flow that delivers --files small CSV files (one deliver_frame task each, in turn, to
a local folder) and ends with summarize_deliveries; it runs the flow once to warm up,
then --runs times, timed. The child "without" replaces the artifact call with one
that does nothing; the two children alternate, twice each. It prints each child's
median seconds and last `artifacts_seconds_per_file=S artifacts_over_run=R`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_environment  # noqa: F401  pylint: disable=unused-import

# pylint: disable=wrong-import-position
import local_prefect  # noqa: E402
import services  # noqa: E402

MODES = ("with", "without")


def run_child(mode: str, files: int, runs: int, folder: str) -> list[float]:
    """The body of one child: warm up, then time `runs` flow runs of `files` files."""
    # pylint: disable=import-outside-toplevel
    import pandas as pd
    from prefect import flow

    from toolkit import delivery

    if mode == "without":
        delivery.create_table_artifact = lambda **_: None
    sink = delivery.LocalFolderSink(folder)
    frame = pd.DataFrame({"id": range(100), "name": [f"n{i}" for i in range(100)]})

    @flow
    def deliver_small_files() -> int:
        reports = [
            delivery.deliver_frame(sink, frame, f"file_{index:03d}.csv")
            for index in range(files)
        ]
        delivery.summarize_deliveries(reports, key=f"bench-{mode}")
        return len(reports)

    deliver_small_files()  # the first run registers the flow and warms the client
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        deliver_small_files()
        timings.append(time.perf_counter() - started)
    return timings


def benchmark(files: int, runs: int) -> dict[str, list[float]]:
    """A server, then the two children in turn, twice each; every timed run by mode."""
    timings: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as home:
        with local_prefect.serving(Path(home), services.free_port()) as url:
            environment = local_prefect.quiet_environment(PREFECT_API_URL=url)
            for mode in MODES * 2:
                command = [sys.executable, __file__, "--child", mode]
                command += ["--files", str(files), "--runs", str(runs)]
                command += ["--folder", str(Path(home) / "out" / mode)]
                output = subprocess.run(
                    command,
                    env=environment,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                child_timings = json.loads(output.strip().splitlines()[-1])
                print(f"{mode:8} " + " ".join(f"{s:6.2f}" for s in child_timings))
                timings[mode] += child_timings
    return timings


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        timings = run_child(options.child, options.files, options.runs, options.folder)
        print(json.dumps(timings), flush=True)
        return
    print(f"files={options.files} runs={options.runs} (seconds per flow run)")
    timings = benchmark(options.files, options.runs)
    medians = {mode: statistics.median(timings[mode]) for mode in MODES}
    extra = medians["with"] - medians["without"]
    print(
        f"median_with={medians['with']:.2f} median_without={medians['without']:.2f} "
        f"artifacts_seconds_per_file={extra / options.files:.3f} "
        f"artifacts_over_run={medians['with'] / medians['without']:.2f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
