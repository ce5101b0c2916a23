"""`deploy` of a checkout's fixture flow in a process of its own, started on a signal.

    python deploy_on_signal.py FLOWS_DIR SIGNALS_DIR NAME [--pause-after-copy]

It imports Prefect, the deployer and the flow's modules first (seconds), then makes
SIGNALS_DIR/NAME.ready and waits for SIGNALS_DIR/NAME.go: deploys told to go together
reach the lease together, not in the order their imports end. With --pause-after-copy,
once its copy is written it makes SIGNALS_DIR/NAME.paused and waits, holding the lease
(renewed as ever), until SIGNALS_DIR/NAME.resume exists: a test can run other
commands meanwhile, or kill it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

SIGNAL_POLL_SECONDS = 0.01


def pause_after_copy(signals: Path, name: str) -> None:
    """Make every copy written in this process wait for NAME.resume, once written."""
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer.storage import FlowStorage

    write_copy = FlowStorage.write_copy

    async def write_then_pause(self, *args, **kwargs):
        await write_copy(self, *args, **kwargs)
        (signals / f"{name}.paused").touch()
        while not (signals / f"{name}.resume").exists():
            await asyncio.sleep(SIGNAL_POLL_SECONDS)  # the lease is renewed meanwhile

    FlowStorage.write_copy = write_then_pause


def main() -> None:
    """Import, say ready, wait for go, deploy (exiting as the command line does)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("flows_dir", type=Path)
    parser.add_argument("signals", type=Path)
    parser.add_argument("name")
    parser.add_argument("--pause-after-copy", action="store_true")
    arguments = parser.parse_args()
    sys.path.insert(0, str(arguments.flows_dir))
    # pylint: disable=import-outside-toplevel,unused-import
    import util
    from toolkit.deployer import deploy  # noqa: F401  paid for before the start

    # What the flow file imports (pandas, the toolkit's sources and sinks), paid for
    # too: the deploy loads the file afresh, from the modules imported here.
    importlib.import_module("fixture_flow")

    if arguments.pause_after_copy:
        pause_after_copy(arguments.signals, arguments.name)
    (arguments.signals / f"{arguments.name}.ready").touch()
    while not (arguments.signals / f"{arguments.name}.go").exists():
        time.sleep(SIGNAL_POLL_SECONDS)
    util.run_flow_command_line_interface(
        str(arguments.flows_dir / "fixture_flow.py"), "fixture_flow", ["deploy"]
    )


if __name__ == "__main__":
    main()
