"""Usage errors read as az's and exit as az's (2), help on every level, and a missing server (1); none of them
writes anything."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from acrlocal.cli.main import cli
from tests.cli.conftest import run, tree


@pytest.fixture
def nowhere(tmp_path: Path) -> dict[str, str]:
    """An environment with no server and an empty profile directory."""
    return {"ACRLOCAL_DATA_DIR": str(tmp_path / "data"), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}


@pytest.mark.parametrize(("args", "message"), [
    (["foo"], "ERROR: 'foo' is misspelled or not recognized by the system.\n"),
    (["acr", "foo"], "ERROR: 'foo' is misspelled or not recognized by the system.\n"),
    (["role", "assignment", "frob"], "ERROR: 'frob' is misspelled or not recognized by the system.\n"),
    (["group", "create", "-n", "x"], "ERROR: the following arguments are required: --location/-l\n"),
    (["group", "show"], "ERROR: the following arguments are required: --name/-n/--resource-group/-g\n"),
    (["acr", "create", "-n", "x"], "ERROR: the following arguments are required: --resource-group/-g, --sku\n"),
    (["acr", "token", "create"], "ERROR: the following arguments are required: --registry/-r, --name/-n\n"),
    (["identity", "create"],
     "ERROR: the following arguments are required: --name/-n/--resource-name, --resource-group/-g\n"),
    (["vm", "create"], "ERROR: the following arguments are required: --name/-n, --resource-group/-g\n"),
    (["role", "assignment", "create", "--scope", "/x"], "ERROR: the following arguments are required: --role\n"),
    (["group", "show", "-n", "x", "--foo"], "ERROR: unrecognized arguments: --foo\n"),
    (["acr", "create", "-n", "abcde", "-g", "y", "--sku", "Foo"],
     "ERROR: acrlocal acr create: 'Foo' is not a valid value for '--sku'. Allowed values: Basic, Standard, "
     "Premium.\n"),
    (["group", "list", "-o", "xml"],
     "ERROR: acrlocal group list: 'xml' is not a valid value for '--output'. Allowed values: json, jsonc, yaml, "
     "yamlc, table, tsv, none.\n"),
    (["group", "list", "--query", "["],
     "ERROR: argument --query: invalid jmespath_type value: '['\nTo learn more about --query, please visit: "
     "'https://learn.microsoft.com/cli/azure/query-azure-cli'\n"),
    (["acr", "update", "-n", "abcde", "--admin-enabled", "maybe"],
     "ERROR: acrlocal acr update: 'maybe' is not a valid value for '--admin-enabled'. Allowed values: false, "
     "true.\n"),
])
def test_usage_errors_like_az(args: list[str], message: str, nowhere: dict[str, str], tmp_path: Path) -> None:
    proc = run(*args, env=nowhere)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, message, "")
    assert tree(tmp_path) == {}


def test_bad_registry_name_is_refused_before_any_request(nowhere: dict[str, str], tmp_path: Path) -> None:
    proc = run("acr", "login", "-n", "x", "--expose-token", env=nowhere)
    assert proc.returncode == 1
    assert proc.stderr == ("ERROR: Registry names may contain only alpha numeric characters and must be between 5 "
                           "and 50 characters\n")
    assert tree(tmp_path) == {}


def test_no_server_is_a_clear_error_and_writes_nothing(nowhere: dict[str, str], tmp_path: Path) -> None:
    for args in (["group", "list"], ["account", "show"], ["acr", "show", "-n", "acrlocal"], ["status"],
                 ["down"]):
        proc = run(*args, env=nowhere)
        assert proc.returncode == 1, args
        assert proc.stderr.startswith("ERROR: acrlocal is not running (no server for data dir"), proc.stderr
        assert "acrlocal up" in proc.stderr
        assert proc.stdout == ""
    assert tree(tmp_path) == {}


def test_login_identity_outside_a_vm_names_the_missing_endpoint(nowhere: dict[str, str], tmp_path: Path) -> None:
    env = {**nowhere, "ACRLOCAL_ENDPOINT": "https://localhost:1", "AZURE_POD_IDENTITY_AUTHORITY_HOST": "",
           "IDENTITY_ENDPOINT": "", "IDENTITY_HEADER": ""}
    proc = run("login", "--identity", env=env)
    assert proc.returncode == 1
    assert "AZURE_POD_IDENTITY_AUTHORITY_HOST" in proc.stderr and "169.254.169.254" not in proc.stdout
    assert tree(tmp_path) == {}


def test_login_identity_rejects_two_selectors(nowhere: dict[str, str]) -> None:
    proc = run("login", "--identity", "--client-id", "a", "--object-id", "b", env=nowhere)
    assert proc.returncode == 2
    assert "only one of --client-id, --object-id, --resource-id" in proc.stderr


def test_delete_without_yes_and_without_a_terminal_cancels(nowhere: dict[str, str], tmp_path: Path) -> None:
    proc = run("group", "delete", "-n", "rg1", env=nowhere)
    assert proc.returncode == 1
    assert proc.stderr == ("WARNING: Unable to prompt for confirmation as no tty available. Use --yes.\n"
                           "ERROR: Operation cancelled.\n")
    assert tree(tmp_path) == {}


def _commands(group: click.Group, path: list[str]) -> list[list[str]]:
    out = [path]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue  # internal commands (acrlocal _worker) are not az-shaped
        if isinstance(command, click.Group):
            out += _commands(command, [*path, name])
        else:
            out.append([*path, name])
    return out


def test_help_on_every_level() -> None:
    runner = CliRunner()
    paths = _commands(cli, [])
    assert ["acr", "repository", "show-tags"] in paths and ["vm", "identity", "assign"] in paths
    for path in paths:
        for flag in ("-h", "--help"):
            result = runner.invoke(cli, [*path, flag])
            assert result.exit_code == 0, (path, result.output)
            assert "Usage: " in result.output


def test_leaf_commands_take_az_global_arguments() -> None:
    runner = CliRunner()
    for path in _commands(cli, []):
        command = cli
        for name in path:
            command = command.get_command(click.Context(command), name)  # type: ignore[assignment]
        if isinstance(command, click.Group):
            continue
        text = runner.invoke(cli, [*path, "--help"]).output
        for option in ("--query", "--output", "--only-show-errors", "--debug", "--verbose", "--subscription"):
            assert option in text, (path, option)
