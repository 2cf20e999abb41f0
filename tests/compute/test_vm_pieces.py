"""The pure pieces of VMs you can step into: the hosts file, run-command input and answer, the sandbox
description, the enter command line, the credential helper's server names, az's option abbreviations."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from acrlocal.cli.credhelper import server_of
from acrlocal.cli.errors import CLIError, CLIUsageError
from acrlocal.cli.framework import expand_abbreviations
from acrlocal.compute import enter
from acrlocal.compute.network import HOSTS_MARKER, VMNetwork, hosts_file, resolves_locally
from acrlocal.compute.run_command import RunCommandError, RunRequest, RunResult
from acrlocal.errors import ConfigError

NET = VMNetwork.of("https://localhost:8443", ["MyReg.localhost", "acrlocal.localhost", "myreg.localhost"],
                   ["localhost:8444", "myreg.localhost:8443"])


def test_network_view_is_sorted_lower_case_and_validated() -> None:
    assert NET.host_names == ("acrlocal.localhost", "myreg.localhost")
    with pytest.raises(ConfigError, match="not a DNS name"):
        VMNetwork.of("https://localhost:1", ["bad name.localhost"], [])
    with pytest.raises(ConfigError, match="not host:port"):
        VMNetwork.of("https://localhost:1", [], ["localhost"])


def test_hosts_file_keeps_the_host_lines_and_replaces_its_own_block() -> None:
    base = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
    text = hosts_file(base, NET)
    assert text.startswith(base)
    assert text.endswith(f"{HOSTS_MARKER}\n127.0.0.1 acrlocal.localhost\n127.0.0.1 myreg.localhost\n")
    smaller = VMNetwork.of("https://localhost:8443", ["acrlocal.localhost"], [])
    again = hosts_file(text, smaller)
    assert again.count(HOSTS_MARKER) == 1 and "myreg.localhost" not in again
    assert hosts_file(text, VMNetwork("https://localhost:8443")) == base


def test_resolves_locally_reads_only_the_hosts_text() -> None:
    text = hosts_file("127.0.0.1 localhost\n10.0.0.1 elsewhere.localhost\n", NET)
    assert resolves_locally(text, "MYREG.localhost")
    assert not resolves_locally(text, "elsewhere.localhost")  # not loopback
    assert not resolves_locally(text, "other.localhost")
    assert not resolves_locally("# 127.0.0.1 myreg.localhost\n", "myreg.localhost")


def test_run_request_parsing() -> None:
    req = RunRequest.parse({"commandId": "runshellscript", "script": ["echo $1 $2", "echo $X"],
                            "parameters": [{"name": "arg2", "value": "b"}, {"name": "X", "value": "x"},
                                           {"name": "arg1", "value": "a"}]})
    assert req.command_id == "RunShellScript"
    assert req.positional() == ["a", "b"]
    assert RunRequest.parse({"commandId": "RunShellScript", "script": "echo one"}).script == ("echo one",)
    for body, message in (({}, "missing"), ({"commandId": "RunPowerShellScript"}, "not available"),
                          ({"commandId": "RunShellScript", "script": [1]}, "list of strings"),
                          ({"commandId": "RunShellScript", "parameters": [{"name": "1x", "value": ""}]},
                           "parameter name '1x' is invalid"),
                          ({"commandId": "RunShellScript", "script": ["x" * (300 * 1024)]}, "larger than")):
        with pytest.raises(RunCommandError, match=message):
            RunRequest.parse(body)


def test_run_result_in_azure_agent_words() -> None:
    ok = RunResult(0, b"hello\n", b"").to_arm()
    assert ok == {"value": [{"code": "ProvisioningState/succeeded", "level": "Info",
                             "displayStatus": "Provisioning succeeded",
                             "message": "Enable succeeded: \n[stdout]\nhello\n\n[stderr]\n"}]}
    failed = RunResult(3, b"", b"boom\n").to_arm()["value"][0]
    assert failed["code"] == "ProvisioningState/failed/3" and failed["level"] == "Error"
    assert failed["message"] == ("Enable failed: failed to execute command: command terminated with exit status=3"
                                 "\n[stdout]\n\n[stderr]\nboom\n")
    stopped = RunResult(137, b"", b"", timed_out=True, timeout_s=2).to_arm()["value"][0]
    assert stopped["message"].startswith("Enable failed: the script did not finish within 2 seconds")


def test_sandbox_description_round_trip_and_checks() -> None:
    access = enter.SandboxAccess("vm", "/subscriptions/x/vm", "id", "/h", {"HOME": "/h"}, (("/s/hosts", "/etc/hosts"),),
                                 "/s/bashrc")
    assert enter.SandboxAccess.from_json(access.to_json()) == access
    with pytest.raises(ConfigError, match="absolute"):
        enter.SandboxAccess.from_json({**access.to_json(), "mounts": [{"source": "hosts", "target": "/etc/hosts"}]})
    with pytest.raises(ConfigError, match="environment"):
        enter.SandboxAccess.from_json({**access.to_json(), "environment": {"A": 1}})
    with pytest.raises(ConfigError, match="lacks"):
        enter.SandboxAccess.from_json({"environment": {}})


def test_enter_command_lines() -> None:
    access = enter.SandboxAccess("vm", "id", "vmid", "/h", {"HOME": "/h", "PATH": "/usr/bin:/bin"},
                                 (("/s/hosts", "/etc/hosts"),), "/s/bashrc")
    argv, env, mode = enter.command(access, ["bash", "-c", "true"], mode=enter.NAMESPACE,
                                    caller_env={"TERM": "xterm", "SECRET": "no"})
    assert argv[1:5] == ["--mount", "--propagation", "private", "--"]
    assert argv[-7:] == ["acrlocal-vm", "/s/hosts", "/etc/hosts", "--", "bash", "-c", "true"]
    assert env == {"HOME": "/h", "PATH": "/usr/bin:/bin", "TERM": "xterm", "ACRLOCAL_VM_ISOLATION": mode}
    argv, _, _ = enter.command(access, ["true"], mode=enter.USER_NAMESPACE, caller_env={})
    assert argv[1:3] == ["--user", "--map-root-user"]
    argv, env, _ = enter.command(access, ["true"], mode=enter.NO_NAMESPACE, caller_env={})
    assert argv == ["true"] and env["ACRLOCAL_VM_ISOLATION"] == "none"
    assert enter.shell_argv(access, "echo hi")[1:] == ["-c", "echo hi"]
    assert enter.shell_argv(access, None)[1:] == ["--rcfile", "/s/bashrc", "-i"]


def test_credential_helper_server_names() -> None:
    assert server_of("MyReg.localhost:8443\n") == "myreg.localhost:8443"
    assert server_of("https://myreg.localhost:8443/v1/") == "myreg.localhost:8443"
    assert server_of("localhost") == "localhost"
    for bad in ("", "   ", "https://"):
        with pytest.raises(CLIError):
            server_of(bad)


def test_option_abbreviations_as_argparse() -> None:
    opts = ["--output", "-o", "--query", "--resource-group", "--resource-id", "--name"]
    assert expand_abbreviations(["--out", "tsv", "--que=id"], opts, {"--output", "--query"}) == \
        ["--output", "tsv", "--query=id"]
    assert expand_abbreviations(["--name", "--out"], opts, {"--name"}) == ["--name", "--out"]  # a value
    assert expand_abbreviations(["--", "--out"], opts) == ["--", "--out"]
    assert expand_abbreviations(["--nosuch"], opts) == ["--nosuch"]  # left for click's own error
    with pytest.raises(CLIUsageError, match="ambiguous option: --resource could match"):
        expand_abbreviations(["--resource", "x"], opts)


@pytest.mark.parametrize("mode", [enter.NAMESPACE, enter.USER_NAMESPACE])
def test_the_namespace_shows_the_vm_files_and_leaves_the_host_alone(mode: str, tmp_path: Path) -> None:
    """Both ways into a VM's mount namespace (root's, and a user namespace as a non-root user gets) bind the VM's
    hosts file read-only; outside, /etc/hosts is unchanged."""
    if mode == enter.NAMESPACE and os.geteuid() != 0:
        pytest.skip("a mount namespace without a user namespace needs root")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    hosts = tmp_path / "hosts"
    hosts.write_text(hosts_file("127.0.0.1 localhost\n", NET))
    before = Path("/etc/hosts").read_text()
    access = enter.SandboxAccess("vm", "id", "vmid", str(tmp_path), {"PATH": "/usr/bin:/bin"},
                                 ((str(hosts), "/etc/hosts"),))
    argv, env, _ = enter.command(access, ["sh", "-c", "getent hosts myreg.localhost; echo x >> /etc/hosts"],
                                 mode=mode, caller_env={})
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["127.0.0.1", "myreg.localhost"], proc.stderr
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr
    assert Path("/etc/hosts").read_text() == before and "myreg.localhost" not in before
