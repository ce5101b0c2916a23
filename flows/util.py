"""The command line every flow file ends with: `python3 flows/<flow>.py deploy|run|...`.

Settings live at the top of this module, each overridable by an environment variable
named FLOWS_<SETTING>; they are read when a command runs, never at import time, so a
flow run that imports this module pays nothing for them.

The deploy machinery itself lives in the `deployer` package beside this file and is
imported only by the commands that need it: a flow run never loads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

FLOWS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setting:
    """One setting: its default and the environment variable that overrides it."""

    env_var: str
    default: str
    help: str


SETTINGS = {
    "docker_registry": Setting(
        "FLOWS_DOCKER_REGISTRY",
        "",
        "registry the image is pulled from; empty means ghcr.io/<owner of origin>",
    ),
    "work_pool": Setting(
        "FLOWS_WORK_POOL", "flows-docker", "work pool the deployments run on"
    ),
    "work_pool_type": Setting(
        "FLOWS_WORK_POOL_TYPE",
        "docker",
        "type of the work pool when it has to be created (docker, or process "
        "where no Docker daemon runs)",
    ),
    "storage_root": Setting(
        "FLOWS_STORAGE_ROOT",
        "~/.prefect/flow-storage",
        "folder that holds the deployed copies of flows/",
    ),
    "repo_name": Setting(
        "FLOWS_REPO_NAME",
        "",
        "repository name; empty means GITHUB_REPOSITORY, else origin's URL, "
        "else the checkout's folder",
    ),
    "repo_name_marker": Setting(
        "FLOWS_REPO_NAME_MARKER",
        "-flows-",
        "what separates {org}-{team} from the short name in the repository name",
    ),
    "main_branch": Setting(
        "FLOWS_MAIN_BRANCH", "main", "the branch whose deployments are production"
    ),
}


@dataclass(frozen=True)
class Settings:  # pylint: disable=too-many-instance-attributes
    """The settings in force: each from its environment variable, else its default."""

    docker_registry: str
    work_pool: str
    work_pool_type: str
    storage_root: str
    repo_name: str
    repo_name_marker: str
    main_branch: str

    @classmethod
    def from_environment(cls, environ=None) -> "Settings":
        """Read every setting once, now."""
        environ = os.environ if environ is None else environ
        values = {
            field.name: environ.get(
                SETTINGS[field.name].env_var, SETTINGS[field.name].default
            ).strip()
            for field in fields(cls)
        }
        return cls(**values)

    @property
    def storage_path(self) -> Path:
        """The storage root as an absolute path."""
        return Path(self.storage_root).expanduser().resolve()


class UserError(Exception):
    """A mistake the user can fix; the command line prints it as one line, exit 2."""


class _OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a UserError rather than usage text and exit."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see --help)")


def _settings_epilog() -> str:
    lines = ["settings (environment variable: default):"]
    for setting in SETTINGS.values():
        lines.append(
            f"  {setting.env_var}: {setting.default or '(derived)'} - {setting.help}"
        )
    return "\n".join(lines)


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _OneLineArgumentParser(
        prog=prog,
        description="Deploy this flow on Prefect, or run it here and now.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    deploy = commands.add_parser(
        "deploy",
        help="register this flow for the current git branch",
        description="Copy flows/ into flow storage and register the deployment of "
        "this flow for the current git branch (main: production, else dev).",
    )
    deploy.add_argument(
        "--docker-label",
        help="tag of the image to run on (default: main); dev branches only",
    )
    deploy.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan as JSON and change nothing",
    )
    run = commands.add_parser(
        "run",
        help="run the flow here, now, without a deployment",
        description="Run the flow in this process. Values parse as JSON where they "
        "can (42, true, [1,2]) and are then converted to the parameter's type.",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a flow parameter; repeat for several",
    )
    return parser


def parse_param_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """Turn NAME=VALUE strings into a dict; VALUE is JSON where it parses, else text."""
    parameters: dict[str, Any] = {}
    for assignment in assignments:
        name, separator, raw_value = assignment.partition("=")
        name = name.strip()
        if not separator or not name:
            raise UserError(f"--param {assignment!r}: expected NAME=VALUE")
        try:
            parameters[name] = json.loads(raw_value)
        except json.JSONDecodeError:
            parameters[name] = raw_value
    return parameters


def run_flow_here(flow, assignments: Sequence[str]):
    """Validate the parameters against the flow's signature, then call the flow."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError

    parameters = parse_param_assignments(assignments)
    try:
        validated = flow.validate_parameters(parameters)
    except (ParameterTypeError, SignatureMismatchError) as error:
        message = " ".join(str(error).split())
        raise UserError(f"--param: {message}") from error
    return flow(**validated)


def _dispatch(arguments: argparse.Namespace, flow_path: Path, function_name: str):
    # Imported here: a flow run imports util but must not pay for the deployer.
    # pylint: disable-next=import-outside-toplevel
    from deployer import commands

    settings = Settings.from_environment()
    flow = commands.load_flow(flow_path, function_name, FLOWS_DIR)
    if arguments.command == "run":
        return run_flow_here(flow, arguments.param)
    return commands.deploy(
        settings,
        flow,
        flow_path,
        docker_label=arguments.docker_label,
        dry_run=arguments.dry_run,
    )


def run_flow_command_line_interface(
    flow_filename: str, flow_function_name: str, args: Sequence[str] | None = None
):
    """The command line of a flow file: `deploy [--docker-label X] [--dry-run]`, `run`.

    A user mistake prints one line on stderr and exits with status 2; anything
    unexpected keeps its traceback.
    """
    flow_path = Path(flow_filename).resolve()
    parser = _build_parser(prog=f"python3 flows/{flow_path.name}")
    try:
        arguments = parser.parse_args(sys.argv[1:] if args is None else list(args))
        return _dispatch(arguments, flow_path, flow_function_name)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
