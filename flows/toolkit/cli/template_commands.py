"""The release machinery's commands: `upgrade`, `release`, `template-changed` and
`check-prefect3`.

Standard library and git only, as the template package is: CI runs them before
anything else is installed.
"""

from __future__ import annotations

from toolkit.cli.parsing import Command, Invocation, argument


def _upgrade(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.template import upgrade

    return upgrade.upgrade(
        invocation.flows_dir.parent,
        arguments.source,
        arguments.tag,
        force=arguments.force,
    )


def _release(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.template import release

    return release.cut_release(invocation.flows_dir.parent, arguments.version)


def _template_changed(arguments, invocation: Invocation):
    # pylint: disable-next=import-outside-toplevel
    from toolkit.template import changes

    return changes.template_changed(invocation.flows_dir.parent, arguments.base)


def _check_prefect3(arguments, invocation: Invocation):
    del arguments  # none
    # pylint: disable-next=import-outside-toplevel
    from toolkit.template import prefect3_check

    return prefect3_check.check_prefect3(invocation.flows_dir)


COMMANDS = (
    Command(
        "upgrade",
        "replace the template's files with a newer release's; the team's stay",
        _upgrade,
        (
            argument(
                "--from",
                dest="source",
                metavar="URL",
                help="the template repository: any git URL or a local path "
                "(default: the one recorded in flows/toolkit/release.json)",
            ),
            argument(
                "--to",
                dest="tag",
                metavar="TAG",
                help="release tag (default: the newest)",
            ),
            argument(
                "--force",
                action="store_true",
                help="replace template files this team repository changed, too",
            ),
        ),
        description="Fetch the template at a release tag and replace exactly the "
        "template's paths (flows/toolkit/template-paths.txt) with that release's. "
        "Refuses when a template file was changed here, unless --force. Leaves an "
        "uncommitted change for a pull request.",
    ),
    Command(
        "release",
        "(template maintainers) record a release's version and checksums, commit "
        "and tag it",
        _release,
        (argument("version", help="vMAJOR.MINOR.PATCH, with a CHANGELOG entry"),),
    ),
    Command(
        "template-changed",
        "say whether the template's paths changed since a commit (PR checks run the "
        "toolkit's suite then)",
        _template_changed,
        (argument("base", help="the commit to compare HEAD with"),),
    ),
    Command(
        "check-prefect3",
        "name each place in flows/ whose meaning changes on Prefect 3, with its fix",
        _check_prefect3,
        (),
        description="Reads every Python file of flows/ but the toolkit's, without "
        "running it: a future's wait() whose value is used, result(fetch=...), and a "
        "flow that starts tasks with submit or map and never reads them. Prints "
        "file:line: what: fix for each, and exits 1 when there is any.",
    ),
)
