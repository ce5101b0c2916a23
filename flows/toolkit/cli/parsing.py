"""How the command line is built: each command group's module declares its commands
as a table (Command, Argument), and build_parser turns a table into argparse."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toolkit.errors import UserError
from toolkit.settings import PER_SYSTEM_VARIABLES, SETTINGS

_UNRECOGNIZED = "unrecognized arguments: "


@dataclass(frozen=True)
class Invocation:
    """What a command acts on: the flows/ folder, and for a flow file's own
    commands, the flow file and the name of its flow function."""

    flows_dir: Path
    flow_path: Path | None = None
    flow_function: str | None = None


@dataclass(frozen=True)
class Argument:
    """One argparse argument: its names and add_argument's keywords."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def argument(*names: str, **options: Any) -> Argument:
    """An Argument, written as add_argument would be called."""
    return Argument(names, options)


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, its arguments, and the function that runs it with
    (parsed arguments, Invocation)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, Invocation], Any]
    arguments: tuple[Argument, ...] = ()
    description: str | None = None


def _without_values(message: str) -> str:
    """argparse's message without the values of unrecognized arguments: a mistyped
    `--notfy URL` must not print the webhook's token (or a password) to a CI log."""
    if not message.startswith(_UNRECOGNIZED):
        return message
    words = message[len(_UNRECOGNIZED) :].split()
    options = [word.split("=", 1)[0] for word in words if word.startswith("-")]
    shown = " ".join(options) if options else "(values not shown)"
    return f"{_UNRECOGNIZED}{shown}"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a UserError rather than usage text and exit."""

    def error(self, message):
        raise UserError(f"{self.prog}: {_without_values(message)} (see --help)")


def settings_epilog() -> str:
    """Every setting with its variable and default, for the end of --help."""
    lines = ["settings (environment variable: default):"]
    for setting in SETTINGS.values():
        lines.append(
            f"  {setting.env_var}: {setting.default or '(derived)'} - {setting.help}"
        )
    lines.append("per connection, read by setup:")
    lines += [f"  {name} - {text}" for name, text in PER_SYSTEM_VARIABLES.items()]
    return "\n".join(lines)


def build_parser(
    prog: str, description: str, commands: tuple[Command, ...]
) -> argparse.ArgumentParser:
    """The parser of a command line made of `commands`; each parsed command carries
    its Command as `command_spec`."""
    parser = OneLineArgumentParser(
        prog=prog,
        description=description,
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        subparser = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        for each in command.arguments:
            subparser.add_argument(*each.names, **each.options)
        subparser.set_defaults(command_spec=command)
    return parser
