"""The commands about all the flows of a branch: `deploy-all`, `delete-branch`,
`prune` and `docker-label`."""

from __future__ import annotations

from toolkit.settings import Settings
from toolkit.cli.parsing import Command, Invocation, argument

_DRY_RUN = argument("--dry-run", action="store_true", help="list, delete nothing")


def _deploy_all(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import deploy

    return deploy.deploy_all(
        Settings.from_environment(),
        invocation.flows_dir,
        arguments.docker_label,
        arguments.dry_run,
    )


def _delete_branch(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import delete

    return delete.delete_branch(
        Settings.from_environment(),
        invocation.flows_dir,
        arguments.branch,
        arguments.dry_run,
    )


def _prune(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import delete

    return delete.prune(
        Settings.from_environment(), invocation.flows_dir, arguments.dry_run
    )


def _docker_label(arguments, invocation: Invocation) -> str:
    # Without Prefect: the image workflow's jobs do not install it.
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import naming, repository

    settings = Settings.from_environment()
    branch = (
        arguments.branch
        or repository.read_repository(invocation.flows_dir, settings).branch
    )
    label = naming.docker_label(branch, settings.main_branch)
    print(label)
    return label


COMMANDS = (
    Command(
        "deploy-all",
        "deploy every flow file of flows/ for the current branch",
        _deploy_all,
        (
            argument("--docker-label", help="image tag (dev branches only)"),
            argument("--dry-run", action="store_true", help="print the plans"),
        ),
    ),
    Command(
        "delete-branch",
        "delete a dev branch's deployments and its copy in flow storage",
        _delete_branch,
        (argument("branch", help="the branch name, as git spells it"), _DRY_RUN),
    ),
    Command(
        "prune",
        "delete the dev deployments (and copies) of branches origin no longer has",
        _prune,
        (_DRY_RUN,),
    ),
    Command(
        "docker-label",
        "print the image tag of a branch (default: the current)",
        _docker_label,
        (argument("branch", nargs="?"),),
    ),
)
