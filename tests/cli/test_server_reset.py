"""The CLI's profile follows the server it talks to: after the data directory is deleted and made again, or with
two data directories used in turn on the same port, every command works without `acrlocal login`, as the local
administrator of the server that runs now (issue: `SubscriptionNotFound` for a subscription of a server gone)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests import ports
from tests.harness import AcrLocal


def free_port() -> int:
    """A free port below the ephemeral range, so that no client connection takes it while the server that
    keeps it (its own, or a registry's that comes back with its data directory) is stopped."""
    return ports.free_port(20000, 32000)


def server_on(data_dir: Path, port: int) -> AcrLocal:
    """A server whose shared port and registries' ports stay the same across restarts."""
    return AcrLocal(data_dir, "--port", str(port), "--registry-port-base", str(free_port()))


def current_account(server: AcrLocal, env: dict[str, str]) -> dict[str, str]:
    """``account show`` and a command that needs the subscription, which must be the running server's."""
    account = json.loads(server.cli("account", "show", "-o", "json", env=env).stdout)
    assert account["id"] == server.status["subscriptionId"], account
    assert account["tenantId"] == server.status["tenantId"], account
    groups = json.loads(server.cli("group", "list", "--query", "[].name", "-o", "json", env=env).stdout)
    assert "acrlocal" in groups
    listed = json.loads(server.cli("account", "list", "-o", "json", env=env).stdout)
    assert [a["id"] for a in listed] == [server.status["subscriptionId"]], listed
    return account


def test_cli_works_after_the_data_directory_is_made_again(tmp_path: Path) -> None:
    env = {"ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    server = server_on(tmp_path / "data", free_port())
    try:
        server.start()
        before = current_account(server, env)
        server.cli("group", "create", "-n", "before-reset", "-l", "westus", env=env)
        server.stop()
        shutil.rmtree(server.data_dir)
        server.start()
        after = current_account(server, env)
        assert after["id"] != before["id"] and after["user"]["name"] != before["user"]["name"]
        created = server.cli("group", "create", "-n", "after-reset", "-l", "westus", env=env)
        assert json.loads(created.stdout)["name"] == "after-reset"
    finally:
        server.stop()


def test_two_data_directories_in_turn_on_one_port(tmp_path: Path) -> None:
    env = {"ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    port = free_port()
    first, second = server_on(tmp_path / "one", port), server_on(tmp_path / "two", port)
    seen = []
    try:
        for server in (first, second, first, second):
            server.start()
            try:
                seen.append(current_account(server, env)["id"])
            finally:
                server.stop()
    finally:
        first.stop()
        second.stop()
    assert seen[0] == seen[2] != seen[1] == seen[3]


def test_a_service_principal_of_a_server_gone_is_not_used(tmp_path: Path) -> None:
    """An account signed in with `login --service-principal` on a server that is gone is dropped, and the local
    administrator of the new server signs in."""
    env = {"ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    server = server_on(tmp_path / "data", free_port())
    try:
        server.start()
        sp = json.loads(server.cli("ad", "sp", "create-for-rbac", "-n", "ci", "--role", "Reader", "--scopes",
                                   f"/subscriptions/{server.status['subscriptionId']}", "-o", "json",
                                   env=env).stdout)
        server.cli("login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant",
                   sp["tenant"], env=env)
        assert json.loads(server.cli("account", "show", "-o", "json", env=env).stdout)["user"]["name"] == sp["appId"]
        server.stop()
        shutil.rmtree(server.data_dir)
        server.start()
        account = current_account(server, env)
        assert account["user"]["name"] == server.admin_credential()["clientId"]
    finally:
        server.stop()
