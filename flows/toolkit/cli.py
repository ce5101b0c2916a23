"""The command line every flow file ends with: `python3 flows/<flow>.py deploy|run|...`,
and `python3 flows/util.py ...` for commands about all the flows of the repository.

`flows/util.py` hands both on to this module. The deploy machinery lives in the
`deployer` package beside it; its settings (deployer/settings.py) are each overridable
by an environment variable FLOWS_<NAME>. Only light, Prefect-free modules are imported
with this one: a flow run never loads the rest of the deployer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from toolkit.deployer.errors import UserError, one_line
from toolkit.deployer.settings import SETTINGS, Settings

FLOWS_DIR = Path(__file__).resolve().parents[1]


_UNRECOGNIZED = "unrecognized arguments: "


def _without_values(message: str) -> str:
    """argparse's message without the values of unrecognized arguments: a mistyped
    `--notfy URL` must not print the webhook's token (or a password) to a CI log."""
    if not message.startswith(_UNRECOGNIZED):
        return message
    words = message[len(_UNRECOGNIZED) :].split()
    options = [word.split("=", 1)[0] for word in words if word.startswith("-")]
    shown = " ".join(options) if options else "(values not shown)"
    return f"{_UNRECOGNIZED}{shown}"


class _OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a UserError rather than usage text and exit."""

    def error(self, message):
        raise UserError(f"{self.prog}: {_without_values(message)} (see --help)")


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
    plan = commands.add_parser(
        "plan",
        help="show what deploy would change against what is registered",
        description="Compare the deployment deploy would register with the one "
        "registered now: create, change (old -> new) or unchanged. Changes nothing.",
    )
    plan.add_argument("--docker-label", help="as for deploy")
    delete = commands.add_parser(
        "delete",
        help="delete this branch's deployment of this flow",
        description="Delete this branch's deployment of this flow, and the branch's "
        "copy of flows/ once no deployment of the branch is left.",
    )
    delete.add_argument(
        "--production",
        action="store_true",
        help="needed on main: yes, delete the production deployment",
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
        message = one_line(error)
        raise UserError(f"--param: {message}") from error
    return flow(**validated)


def _dispatch(arguments: argparse.Namespace, flow_path: Path, function_name: str):
    # Imported here: a flow run imports util but must not pay for the deployer.
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import commands

    settings = Settings.from_environment()
    flow = commands.load_flow(flow_path, function_name)
    if arguments.command == "run":
        return run_flow_here(flow, arguments.param)
    if arguments.command == "plan":
        return commands.show_plan(settings, flow, flow_path, arguments.docker_label)
    if arguments.command == "delete":
        return commands.delete(
            settings, flow, flow_path, production=arguments.production
        )
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
    """A flow file's command line: `deploy`, `plan`, `delete`, `run` (see --help).

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


def _build_repository_parser() -> argparse.ArgumentParser:
    parser = _OneLineArgumentParser(
        prog="python3 flows/util.py",
        description="Commands about all the flows of this repository.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    deploy_all = commands.add_parser(
        "deploy-all", help="deploy every flow file of flows/ for the current branch"
    )
    deploy_all.add_argument("--docker-label", help="image tag (dev branches only)")
    deploy_all.add_argument("--dry-run", action="store_true", help="print the plans")
    delete = commands.add_parser(
        "delete-branch",
        help="delete a dev branch's deployments and its copy in flow storage",
    )
    delete.add_argument("branch", help="the branch name, as git spells it")
    delete.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    prune = commands.add_parser(
        "prune",
        help="delete the dev deployments (and copies) of branches origin no longer has",
    )
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    setup = commands.add_parser(
        "setup",
        help="make the Prefect workspace ready: work pool, queues main and dev, flow "
        "storage, connection blocks; a second run changes nothing",
    )
    setup.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="SYSTEM",
        help="save block SYSTEM-database-ENV from FLOWS_<SYSTEM>_DATABASE_URL and "
        "_PASSWORD (asked in a terminal when unset)",
    )
    setup.add_argument(
        "--sftp",
        action="append",
        default=[],
        metavar="SYSTEM",
        help="save block SYSTEM-sftp-ENV from FLOWS_<SYSTEM>_SFTP_HOST, _PORT, "
        "_USERNAME, _KNOWN_HOSTS_FILE, _PRIVATE_KEY_FILE or _PASSWORD, _REMOTE_DIR, "
        "_ATOMIC_UPLOADS",
    )
    setup.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="post failed, crashed and timed-out production runs (tag main) to this "
        "Slack, Teams Workflows or other webhook URL; also from FLOWS_NOTIFY_URLS "
        "(whitespace-separated). The URL is kept in a block, never shown",
    )
    setup.add_argument("--env", choices=["dev", "prod"], default="prod")
    setup.add_argument(
        "--no-prompt", dest="ask", action="store_false", help="never ask for a value"
    )
    label = commands.add_parser(
        "docker-label", help="print the image tag of a branch (default: the current)"
    )
    label.add_argument("branch", nargs="?")
    upgrade = commands.add_parser(
        "upgrade",
        help="replace the template's files with a newer release's; the team's stay",
        description="Fetch the template at a release tag and replace exactly the "
        "template's paths (flows/toolkit/template-paths.txt) with that release's. "
        "Refuses when a template file was changed here, unless --force. Leaves an "
        "uncommitted change for a pull request.",
    )
    upgrade.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the template repository: any git URL or a local path "
        "(default: the one recorded in flows/toolkit/release.json)",
    )
    upgrade.add_argument(
        "--to", dest="tag", metavar="TAG", help="release tag (default: the newest)"
    )
    upgrade.add_argument(
        "--force",
        action="store_true",
        help="replace template files this copy changed, too",
    )
    release = commands.add_parser(
        "release",
        help="(template maintainers) record a release's version and checksums, "
        "commit and tag it",
    )
    release.add_argument("version", help="vMAJOR.MINOR.PATCH, with a CHANGELOG entry")
    changed = commands.add_parser(
        "template-changed",
        help="say whether the template's paths changed since a commit "
        "(PR checks run the toolkit's suite then)",
    )
    changed.add_argument("base", help="the commit to compare HEAD with")
    return parser


def _run_release_command(arguments: argparse.Namespace):
    # pylint: disable-next=import-outside-toplevel
    from toolkit import release

    top_level = FLOWS_DIR.parent
    if arguments.command == "upgrade":
        return release.upgrade(
            top_level, arguments.source, arguments.tag, force=arguments.force
        )
    if arguments.command == "release":
        return release.cut_release(top_level, arguments.version)
    return release.template_changed(top_level, arguments.base)


def run_repository_command_line_interface(args: Sequence[str] | None = None):
    """`python3 flows/util.py deploy-all | delete-branch BRANCH | prune | setup |
    docker-label | upgrade | release | template-changed`."""
    flows_dir = FLOWS_DIR
    try:
        arguments = _build_repository_parser().parse_args(
            sys.argv[1:] if args is None else list(args)
        )
        if arguments.command in ("upgrade", "release", "template-changed"):
            return _run_release_command(arguments)
        settings = Settings.from_environment()
        if arguments.command == "docker-label":  # without Prefect: image jobs lack it
            # pylint: disable-next=import-outside-toplevel
            from toolkit.deployer import repository

            branch = (
                arguments.branch
                or repository.read_repository(flows_dir, settings).branch
            )
            label = repository.docker_label(branch, settings)
            print(label)
            return label
        # pylint: disable-next=import-outside-toplevel
        from toolkit.deployer import lifecycle

        if arguments.command == "deploy-all":
            return lifecycle.deploy_all(
                settings, flows_dir, arguments.docker_label, arguments.dry_run
            )
        if arguments.command == "prune":
            return lifecycle.prune(settings, flows_dir, arguments.dry_run)
        if arguments.command == "setup":
            # pylint: disable-next=import-outside-toplevel
            from toolkit.deployer import workspace

            return workspace.setup(
                settings,
                databases=arguments.database,
                sftp_servers=arguments.sftp,
                env=arguments.env,
                ask=arguments.ask,
                webhook_urls=arguments.notify,
            )
        return lifecycle.delete_branch(
            settings, flows_dir, arguments.branch, arguments.dry_run
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
