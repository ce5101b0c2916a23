"""Run a command of a checkout's flows/, and end its process the moment one step is done.

    python3 die_after.py MODULE:ATTRIBUTE [--before] SCRIPT [ARGS...]

for example `toolkit.deployer.storage.base:FlowStorage.write_copy flows/fixture_flow.py
deploy`. The step runs whole (with --before: not at all), then the process ends with
os._exit(DIED), as a deploy killed at that moment does: no except, finally or atexit
of the command runs, and nothing is flushed but what the command printed. The fault
tests use it; the toolkit itself has no such hook.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import runpy
import sys
from pathlib import Path

# The exit status of a process that died at its step: no command exits with it.
DIED = 86


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(DIED)  # pylint: disable=protected-access


def dying(step, before: bool):
    """`step`, wrapped to end the process once it returned (or as it is called)."""
    if inspect.iscoroutinefunction(step):

        @functools.wraps(step)
        async def dying_step(*args, **kwargs):
            if not before:
                await step(*args, **kwargs)
            _die()

    else:

        @functools.wraps(step)
        def dying_step(*args, **kwargs):
            if not before:
                step(*args, **kwargs)
            _die()

    return dying_step


def main(arguments: list[str]) -> None:
    """Patch the step in the checkout's own modules, then run the script as __main__."""
    step, *arguments = arguments
    before = arguments[0] == "--before"
    script, *command = arguments[1:] if before else arguments
    # The checkout's flows/ first, as its flow files put it: the step patched here is
    # the very one the command calls.
    sys.path.insert(0, str(Path(script).resolve().parent))
    module_name, attribute = step.split(":")
    *owners, name = attribute.split(".")
    owner = importlib.import_module(module_name)
    for owner_name in owners:
        owner = getattr(owner, owner_name)
    setattr(owner, name, dying(getattr(owner, name), before))
    sys.argv = [script, *command]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
