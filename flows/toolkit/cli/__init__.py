"""The command line every flow file ends with (`python3 flows/<flow>.py deploy|run|...`)
and `python3 flows/util.py ...` for the commands about all the flows of a repository.

One module per command group, each command's parser next to its handler:
- flow_commands.py: deploy, plan, delete, run (a flow file's own);
- branch_commands.py: deploy-all, delete-branch, prune, docker-label;
- setup_command.py: setup;
- template_commands.py: upgrade, release, template-changed;
- parsing.py: the tables those modules declare, and argparse built from them.

This package sits above the deployer and the template machinery and imports them only
when a command runs: a flow run imports util, which imports this package, and a
deployed copy of flows/ holds neither of them. A user mistake is one line on stderr
and exit status 2, here and nowhere else; anything unexpected keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Sequence

from toolkit.errors import UserError
from toolkit.cli import (
    branch_commands,
    flow_commands,
    setup_command,
    template_commands,
)
from toolkit.cli.parsing import Invocation, build_parser

FLOWS_DIR = Path(__file__).resolve().parents[2]
REPOSITORY_PROG = "python3 flows/util.py"
REPOSITORY_COMMANDS = (
    branch_commands.COMMANDS + setup_command.COMMANDS + template_commands.COMMANDS
)


def flow_parser(flow_file_name: str) -> argparse.ArgumentParser:
    """The command line of the flow file `flow_file_name`."""
    return build_parser(
        f"python3 flows/{flow_file_name}",
        flow_commands.DESCRIPTION,
        flow_commands.COMMANDS,
    )


def repository_parser() -> argparse.ArgumentParser:
    """The command line of flows/util.py."""
    return build_parser(
        REPOSITORY_PROG,
        "Commands about all the flows of this repository.",
        REPOSITORY_COMMANDS,
    )


def _run(parser, args: Sequence[str] | None, invocation: Invocation):
    """Parse, run the command, and turn a UserError into one line and exit 2."""
    if args is None:
        # The command is this process's whole life: what the flow file imported lives
        # to its end, and the collector need not walk it again. Unfrozen, the walks
        # at the interpreter's exit alone took 0.7 s of a 5 s deploy (bench/deploy.py).
        gc.freeze()
    try:
        arguments = parser.parse_args(sys.argv[1:] if args is None else list(args))
        return arguments.command_spec.run(arguments, invocation)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def run_flow_command_line_interface(
    flow_filename: str, flow_function_name: str, args: Sequence[str] | None = None
):
    """A flow file's command line: `deploy`, `plan`, `delete`, `run` (see --help)."""
    flow_path = Path(flow_filename).resolve()
    invocation = Invocation(flow_path.parent, flow_path, flow_function_name)
    return _run(flow_parser(flow_path.name), args, invocation)


def run_repository_command_line_interface(args: Sequence[str] | None = None):
    """`python3 flows/util.py deploy-all | delete-branch BRANCH | prune | setup |
    docker-label | upgrade | release | template-changed`."""
    return _run(repository_parser(), args, Invocation(FLOWS_DIR))
