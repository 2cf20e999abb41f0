"""The command tree's machinery, shaped like az (knack/argparse) on top of click.

- Every command gets az's global arguments: ``--query``, ``--output/-o``, ``--only-show-errors``, ``--debug``,
  ``--verbose``, ``--subscription``. A command's callback *returns* its result; :class:`AzCommand` renders it
  with ``--output`` and ``--query`` (so a failed command prints nothing on stdout).
- Usage errors read as az's: ``the following arguments are required: --name/-n, --resource-group/-g`` (every
  missing one at once), ``unrecognized arguments: --foo``, ``'foo' is misspelled or not recognized by the system.``,
  ``'Foo' is not a valid value for '--sku'. Allowed values: ...``; they exit with code 2 (see ``main``).
- ``show`` commands (``show=True``) turn a 404 into exit code 3, as az's ``show_exception_handler`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from acrlocal.cli.errors import CLIError, CLIUsageError, ResourceNotFound
from acrlocal.cli.output import FORMATS, QueryError, compile_query, render

OUTPUT_CHOICES = ("json", "jsonc", "yaml", "yamlc", "table", "tsv", "none")
GLOBAL_PARAMS = ("output", "query", "only_show_errors", "debug", "verbose", "subscription")


@dataclass
class Invocation:
    """What the global arguments asked for, available to callbacks as :func:`invocation`."""

    output: str = "json"
    query: str | None = None
    only_show_errors: bool = False
    debug: bool = False
    verbose: bool = False
    subscription: str | None = None
    command_path: str = "acrlocal"


def invocation() -> Invocation:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        inv = ctx.meta.get("acrlocal.invocation")
        if isinstance(inv, Invocation):
            return inv
        ctx = ctx.parent
    return Invocation()


def warn(message: str) -> None:
    """az's ``WARNING: ...`` on stderr, unless ``--only-show-errors``."""
    if not invocation().only_show_errors:
        click.echo(f"WARNING: {message}", err=True)


def debug(message: str) -> None:
    """A line on stderr with ``--debug`` (requests and their answers; never a token or a secret)."""
    inv = invocation()
    if inv.debug:
        click.echo(f"DEBUG: {message}", err=True)


def verbose(message: str) -> None:
    inv = invocation()
    if inv.debug or inv.verbose:
        click.echo(f"INFO: {message}", err=True)


def confirm(message: str, yes: bool) -> None:
    """az's ``prompt_y_n``: ``--yes`` skips it, no terminal is an error, "n" cancels."""
    if yes:
        return
    if not sys.stdin.isatty():
        warn("Unable to prompt for confirmation as no tty available. Use --yes.")
        raise CLIError("Operation cancelled.")
    if not click.confirm(message, default=False, prompt_suffix=" (y/n): ", show_default=False):
        raise CLIError("Operation cancelled.")


class AzChoice(click.Choice):
    """A case-insensitive choice whose error reads as az's enum error; the value comes back as declared."""

    def __init__(self, choices: Sequence[str]) -> None:
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        for choice in self.choices:
            if str(value).lower() == str(choice).lower():
                return choice
        name = param.opts[0] if param is not None and param.opts else "value"
        path = ctx.command_path if ctx is not None else "acrlocal"
        allowed = ", ".join(str(c) for c in self.choices)
        raise CLIUsageError(f"{path}: '{value}' is not a valid value for '{name}'. Allowed values: {allowed}.")


class AzBool(click.ParamType):
    """az's three-state flag: ``--flag`` alone means true, ``--flag true|false`` (also yes/no, 1/0)."""

    name = "bool"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "yes", "1", "on", "enable", "enabled"):
            return True
        if text in ("false", "no", "0", "off", "disable", "disabled"):
            return False
        name = param.opts[0] if param is not None and param.opts else "value"
        path = ctx.command_path if ctx is not None else "acrlocal"
        raise CLIUsageError(f"{path}: '{value}' is not a valid value for '{name}'. Allowed values: false, true.")


def flag(*decls: str, help: str) -> Callable[[Any], Any]:
    """An az three-state boolean option (``None`` when not given)."""
    return click.option(*decls, type=AzBool(), is_flag=False, flag_value="true", default=None, help=help)


class AzOption(click.Option):
    """An option that az marks required: checked after parsing, all missing ones reported together."""

    def __init__(self, *args: Any, az_required: bool = False, greedy: bool = False, grouped: bool = False,
                 **kwargs: Any) -> None:
        if greedy:
            kwargs["multiple"] = True
        super().__init__(*args, **kwargs)
        self.az_required = az_required
        self.greedy = greedy
        self.grouped = grouped

    def az_name(self) -> str:
        return "/".join(self.opts + self.secondary_opts)


def option(*decls: str, required: bool = False, nargs_star: bool = False, grouped: bool = False,
           **kwargs: Any) -> Callable[[Any], Any]:
    """``click.option`` with az's required-argument reporting; ``nargs_star`` takes every value up to the next
    option, as az's ``nargs='*'`` / ``'+'`` arguments do (``--tags a=b c=d``), collected in a tuple; with
    ``grouped`` each occurrence stays one value, its words joined by ``GROUP_SEP`` (az's ``action='append'``)."""
    return click.option(*decls, cls=AzOption, az_required=required, greedy=nargs_star, grouped=grouped, **kwargs)


GROUP_SEP = "\x1f"


def _spread_greedy(args: list[str], greedy: set[str], grouped: frozenset[str] = frozenset()) -> list[str]:
    """``--tags a b`` → ``--tags a --tags b`` for the options in ``greedy``; for those in ``grouped``,
    ``--repository r a1 a2`` → ``--repository 'r<GROUP_SEP>a1<GROUP_SEP>a2'`` (pure)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            out += args[i:]
            break
        if name in greedy and eq:
            out += [name, value]
            i += 1
            continue
        if arg in greedy:
            i += 1
            values = []
            while i < len(args) and not (args[i].startswith("-") and len(args[i]) > 1):
                values.append(args[i])
                i += 1
            if not values:
                out += [arg, ""]
            elif arg in grouped:
                out += [arg, GROUP_SEP.join(values)]
            else:
                for value in values:
                    out += [arg, value]
            continue
        out.append(arg)
        i += 1
    return out


def expand_abbreviations(args: list[str], options: Sequence[str], with_value: set[str] | None = None) -> list[str]:
    """argparse's (and so az's) unambiguous prefixes of long options: ``--out tsv`` is ``--output tsv``. An
    ambiguous prefix is az's usage error. The argument after an option in ``with_value`` is its value, never an
    option (pure; stops at ``--``)."""
    longs = [o for o in options if o.startswith("--")]
    takes_value = with_value or set()
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            out.append(arg)
            skip = False
            continue
        if arg == "--":
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if name.startswith("--") and len(name) > 2 and name not in longs:
            matches = sorted({o for o in longs if o.startswith(name)})
            if len(matches) == 1:
                arg = matches[0] + eq + value
            elif len(matches) > 1:
                raise CLIUsageError(f"ambiguous option: {name} could match {', '.join(matches)}")
        out.append(arg)
        skip = not eq and arg in takes_value
    return out


def _check_query(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            compile_query(value)
        except QueryError as exc:
            raise CLIUsageError(f"{exc}\nTo learn more about --query, please visit: "
                                "'https://learn.microsoft.com/cli/azure/query-azure-cli'") from exc
    return value


def _global_params() -> list[click.Parameter]:
    return [
        click.Option(["--subscription"], help="Name or ID of subscription."),
        click.Option(["--output", "-o"], type=AzChoice(OUTPUT_CHOICES), default="json",
                     help="Output format. Allowed values: " + ", ".join(OUTPUT_CHOICES) + "."),
        click.Option(["--query"], callback=_check_query, help="JMESPath query string."),
        click.Option(["--only-show-errors"], is_flag=True, help="Only show errors, suppressing warnings."),
        click.Option(["--debug"], is_flag=True, help="Increase logging verbosity to show all debug logs."),
        click.Option(["--verbose"], is_flag=True, help="Increase logging verbosity."),
    ]


TableTransformer = Callable[[Any], Any]


class AzCommand(click.Command):
    """A leaf command: az's global arguments, required-argument check, rendering of the returned result."""

    def __init__(self, *args: Any, table: TableTransformer | None = None, show: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_params())
        self.table = table
        self.show = show

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = [p for p in self.params if isinstance(p, click.Option)]
        args = expand_abbreviations(args, [o for p in options for o in p.opts],
                                    {o for p in options if not p.is_flag and not p.count for o in p.opts})
        greedy = {o for p in self.params if isinstance(p, AzOption) and p.greedy for o in p.opts}
        grouped = frozenset(o for p in self.params if isinstance(p, AzOption) and p.grouped for o in p.opts)
        if greedy:
            args = _spread_greedy(args, greedy, grouped)
        rest = super().parse_args(ctx, args)
        missing = [p.az_name() for p in self.params
                   if isinstance(p, AzOption) and p.az_required and ctx.params.get(p.name or "") in (None, ())]
        if missing:
            raise CLIUsageError("the following arguments are required: " + ", ".join(missing))
        return rest

    def invoke(self, ctx: click.Context) -> Any:
        inv = Invocation(command_path=ctx.command_path, **{k: ctx.params.pop(k) for k in GLOBAL_PARAMS})
        ctx.meta["acrlocal.invocation"] = inv
        try:
            result = super().invoke(ctx)
        except ResourceNotFound as exc:
            if self.show:
                exc.exit_code = 3
            raise
        if inv.output == "table" and self.table is not None and not inv.query and result is not None:
            result = self.table(result)
        text = render(result, inv.output, inv.query)
        if text:
            click.echo(text, nl=False)
        return result


class AzGroup(click.Group):
    """A command group: az's message for an unknown command; its commands are :class:`AzCommand`."""

    command_class = AzCommand
    group_class = type

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(*args, **kwargs)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        name = click.utils.make_str(args[0])
        if self.get_command(ctx, name) is None and not name.startswith("-"):
            raise CLIUsageError(f"'{name}' is misspelled or not recognized by the system.")
        return super().resolve_command(ctx, args)


assert set(OUTPUT_CHOICES) == set(FORMATS)
