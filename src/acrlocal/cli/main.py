"""The ``acrlocal`` command, shaped like ``az``: the server commands (``up``, ``down``, ``status``, ``trust``),
``db`` (schema migrations), ``admin`` (the server's own keys) and az's groups (``login``, ``account``,
``group``, ``acr``, ``identity``, ``vm``, ``role``, ``ad``).

Errors are printed as az prints them, ``ERROR: <message>`` on stderr, with az's exit codes: 1 for failures, 2 for
usage errors (unknown command, missing or bad argument, a ``--query`` that does not parse), 3 for ``show`` of a
resource that does not exist.
"""

from __future__ import annotations

import importlib
import sys

import click

from acrlocal import __version__
from acrlocal.cli.commands import server
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzGroup
from acrlocal.errors import AcrLocalError

__all__ = ["CLIError", "cli", "main"]


# az's groups, imported when first used: the server process (`up`) then never loads the https client and its
# dependencies (about 7 MiB of resident memory).
LAZY_COMMANDS = {
    "login": "account:login",
    "logout": "account:logout",
    "account": "account:account",
    "group": "group:group",
    "acr": "acr:acr",
    "identity": "identity:identity",
    "vm": "vm:vm",
    "ssh": "vm:ssh_group",
    "role": "role:role",
    "ad": "ad:ad",
    "az-setup": "az_setup:az_setup",
    "az": "az:az",
    "db": "db:db",
    "migrate": "db:migrate",
    "admin": "admin:admin",
}


class _TopLevel(AzGroup):
    """The root group: the server commands are loaded with it, az's groups on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(f"acrlocal.cli.commands.{module}"), attr)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
            self.add_command(command)
        return command


@click.group(cls=_TopLevel)
@click.version_option(__version__, "--version", prog_name="acrlocal")
def cli() -> None:
    """acrlocal: Entra ID managed identities, RBAC, ARM and Azure Container Registry, on your machine."""


for command in (server.up, server.down, server.status, server.trust, server.worker):
    cli.add_command(command)


def _usage_message(exc: click.UsageError) -> str:
    if isinstance(exc, click.NoSuchOption):
        return f"unrecognized arguments: {exc.option_name}"
    message = exc.format_message()
    if message.startswith("Got unexpected extra argument"):
        extra = message[message.find("(") + 1: message.rfind(")")]
        return f"unrecognized arguments: {extra}"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        names = "/".join(getattr(exc.param, "opts", []) or [exc.param.name or ""])
        return f"the following arguments are required: {names}"
    if isinstance(exc, click.BadOptionUsage) and "requires an argument" in message:
        return f"argument {exc.option_name}: expected one argument"
    return message


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command tree and turn errors into az-style messages and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args:
            click.echo(cli.get_help(click.Context(cli, info_name="acrlocal")))
            sys.exit(0)
        cli.main(args=args, prog_name="acrlocal", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ERROR: aborted", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=False)
        sys.exit(0)
    except click.UsageError as exc:
        click.echo(f"ERROR: {_usage_message(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"ERROR: {exc.format_message()}", err=True)
        sys.exit(1)
    except CLIError as exc:
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(exc.exit_code)
    except AcrLocalError as exc:
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("ERROR: Keyboard interrupt is captured.", err=True)
        sys.exit(130)
