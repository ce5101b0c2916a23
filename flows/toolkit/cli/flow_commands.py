"""A flow file's own commands: `deploy`, `plan`, `delete` and `run`.

The deployer is imported when a command runs, never with this module: a flow run
imports util, which imports the command line, and must not pay for the deployer (a
deployed copy does not even hold it).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from toolkit.errors import UserError, one_line
from toolkit.settings import Settings
from toolkit.cli.parsing import Command, Invocation, argument

DESCRIPTION = "Deploy this flow on Prefect, or run it here and now."


def _loaded_flow(invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer.flow_file import load_flow

    return load_flow(invocation.flow_path, invocation.flow_function)


def _deploy(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import deploy

    return deploy.deploy(
        Settings.from_environment(),
        _loaded_flow(invocation),
        invocation.flow_path,
        docker_label=arguments.docker_label,
        dry_run=arguments.dry_run,
    )


def _plan(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import deploy

    return deploy.show_plan(
        Settings.from_environment(),
        _loaded_flow(invocation),
        invocation.flow_path,
        arguments.docker_label,
    )


def _delete(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import delete

    return delete.delete(
        Settings.from_environment(),
        _loaded_flow(invocation),
        invocation.flow_path,
        main=arguments.main,
    )


def _run(arguments, invocation: Invocation):
    return run_flow_here(_loaded_flow(invocation), arguments.param)


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
        message = one_line(error)
        raise UserError(f"--param: {message}") from error
    return flow(**validated)


COMMANDS = (
    Command(
        "deploy",
        "register this flow for the current git branch",
        _deploy,
        (
            argument(
                "--docker-label",
                help="tag of the image to run on (default: main); dev branches only",
            ),
            argument(
                "--dry-run",
                action="store_true",
                help="print the plan as JSON and change nothing",
            ),
        ),
        description="Copy flows/ into flow storage and register the deployment of "
        "this flow for the current git branch (main: the stage main, else dev).",
    ),
    Command(
        "plan",
        "show what deploy would change against what is registered",
        _plan,
        (argument("--docker-label", help="as for deploy"),),
        description="Compare the deployment deploy would register with the one "
        "registered now: create, change (old -> new) or unchanged. Changes nothing.",
    ),
    Command(
        "delete",
        "delete this branch's deployment of this flow",
        _delete,
        (
            argument(
                "--main",
                "--production",
                dest="main",
                action="store_true",
                help="needed on main: yes, delete the deployment that runs for real "
                "(--production is its old name)",
            ),
        ),
        description="Delete this branch's deployment of this flow, and the branch's "
        "copy of flows/ once no deployment of the branch is left. Waits for a deploy "
        "of the branch under way, as deploy does.",
    ),
    Command(
        "run",
        "run the flow here, now, without a deployment",
        _run,
        (
            argument(
                "--param",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a flow parameter; repeat for several",
            ),
        ),
        description="Run the flow in this process. Values parse as JSON where they "
        "can (42, true, [1,2]) and are then converted to the parameter's type.",
    ),
)
