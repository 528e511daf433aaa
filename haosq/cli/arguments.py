"""Global options anywhere on the command line: `haosq jobs list --database-url URL` is
`haosq --database-url URL jobs list`, and `haosq --json stats` is `haosq stats --json`.

The command line is rearranged before click parses it: `--database-url` and `--config` found
among a command's arguments move in front of the command (unless the command has an option
of that name itself), and `--json` given before the command moves behind it (when the command
has no `--json`, that is a usage error naming the command). Option values are skipped by what
each command declares, so a value that happens to read `--config` stays a value; nothing after
`--` moves.
"""

from __future__ import annotations

from typer._click import Command, Context
from typer._click.exceptions import UsageError
from typer.core import TyperGroup as Group
from typer.core import TyperOption as Option

ROOT_VALUE_OPTIONS = ("--database-url", "--config")
MOVED_TO_COMMAND = "--json"


def _takes_value(command: Command, token: str) -> bool:
    name = token.split("=", 1)[0]
    for param in command.params:
        if isinstance(param, Option) and name in (*param.opts, *param.secondary_opts):
            return not param.is_flag and not param.count and "=" not in token
    return False


def _declares(command: Command, name: str) -> bool:
    return any(isinstance(p, Option) and name in p.opts for p in command.params)


def _root_option(token: str) -> str | None:
    for name in ROOT_VALUE_OPTIONS:
        if token == name or token.startswith(f"{name}="):
            return name
    return None


def normalise(root: Group, args: list[str]) -> list[str]:
    """The command line with global options where click expects them."""
    front: list[str] = []
    index = 0
    json_before = False
    # The root's own options, up to the command's name.
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        token = args[index]
        if token == MOVED_TO_COMMAND:
            json_before = True
        else:
            front.append(token)
            if _root_option(token) and "=" not in token and index + 1 < len(args):
                index += 1
                front.append(args[index])
        index += 1
    path: list[str] = []
    command: Command = root
    # Down the groups to the command itself.
    while isinstance(command, Group) and index < len(args) and not args[index].startswith("-"):
        found = command.commands.get(args[index])
        if found is None:
            break
        path.append(args[index])
        command = found
        index += 1
    rest = args[index:]
    moved: list[str] = []
    kept: list[str] = []
    position = 0
    while position < len(rest):
        token = rest[position]
        if token == "--":
            kept.extend(rest[position:])
            break
        name = _root_option(token)
        if name and not _declares(command, name):
            moved.append(token)
            if "=" not in token and position + 1 < len(rest):
                position += 1
                moved.append(rest[position])
        else:
            kept.append(token)
            if token.startswith("-") and _takes_value(command, token) and position + 1 < len(rest):
                position += 1
                kept.append(rest[position])
        position += 1
    if json_before:
        if not path or not _declares(command, MOVED_TO_COMMAND):
            where = " ".join(["haosq", *path])
            raise UsageError("--json is not available here: this command prints text only",
                             ctx=Context(command, info_name=where))
        kept = [MOVED_TO_COMMAND, *kept]
    return [*front, *moved, *path, *kept]
