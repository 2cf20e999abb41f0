"""The pure pieces of VMs: the DNS stub's answers, Azure's names, the VM's accounts and files, what of the host's
/etc a VM must not read, run-command input and answer, the console's request, the credential helper's server
names, az's option abbreviations, and name resolution that never asks off this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from acrlocal import publiccloud
from acrlocal.cli.credhelper import server_of
from acrlocal.cli.errors import CLIError, CLIUsageError
from acrlocal.cli.framework import expand_abbreviations
from acrlocal.cli.registries import resolves_locally
from acrlocal.compute import console, sandbox, vminit
from acrlocal.compute.dns import Names, answer
from acrlocal.compute.run_command import RunCommandError, RunRequest, RunResult
from acrlocal.errors import ConfigError

NAMES = Names(lambda name: name in {"mycontainerregistry", "acrlocal"})


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    reply = answer(dns.message.make_query(name, rdtype).to_wire(), NAMES)
    assert reply is not None
    return dns.message.from_wire(reply)


def test_the_dns_stub_knows_azure_names_and_nothing_else() -> None:
    for name in ("management.azure.com", "LOGIN.microsoftonline.com.", "graph.microsoft.com",
                 "mycontainerregistry.azurecr.io"):
        reply = ask(name)
        assert reply.rcode() == dns.rcode.NOERROR
        assert [r.address for rrset in reply.answer for r in rrset] == [publiccloud.FRONT_DOOR]
    assert ask("mycontainerregistry.azurecr.io", "AAAA").answer == []  # no IPv6: clients use the A record
    assert ask("mycontainerregistry.azurecr.io", "AAAA").rcode() == dns.rcode.NOERROR
    for name in ("nosuchregistry.azurecr.io", "registry-1.docker.io", "example.com", "azurecr.io",
                 "my.containerregistry.azurecr.io", "169.254.169.254.in-addr.arpa"):
        assert ask(name).rcode() == dns.rcode.NXDOMAIN, name
    assert answer(b"not dns", NAMES) is None


def test_azure_names() -> None:
    assert publiccloud.registry_of("MyContainerRegistry.azurecr.io:443") == "mycontainerregistry"
    assert publiccloud.registry_of("evil.azurecr.io.example.com") is None
    assert publiccloud.registry_of("ab.azurecr.io") is None  # registry names have 5 to 50 characters
    assert publiccloud.is_azure_host("management.azure.com") and publiccloud.is_azure_host("x1234.azurecr.io")
    assert not publiccloud.is_azure_host("localhost:8443") and not publiccloud.is_azure_host(None)


def test_accounts_keep_the_system_ones_and_add_the_admin(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
                                     "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n")
    (tmp_path / "group").write_text("root:x:0:\nsudo:x:27:alice\ntty:x:5:\nalice:x:1000:\n")
    accounts = sandbox.make_accounts("azureuser", tmp_path)
    users = [line.split(":")[0] for line in accounts.passwd.splitlines()]
    assert users == ["root", "nobody", "azureuser"]  # the host's people stay on the host
    assert "azureuser:x:1000:1000:azureuser:/home/azureuser:/bin/bash" in accounts.passwd.splitlines()
    groups = {line.split(":")[0]: line.split(":") for line in accounts.group.splitlines()}
    assert groups["sudo"][3] == "alice,azureuser" and "docker" in groups and "alice" not in groups
    assert accounts.admin.groups == tuple(sorted((27, int(groups["docker"][2]))))
    assert all(line.split(":")[1] == "*" for line in accounts.shadow.splitlines())
    with pytest.raises(ConfigError, match="system account"):
        sandbox.make_accounts("root", tmp_path)


def test_authorized_keys_from_the_os_profile() -> None:
    assert sandbox.authorized_keys(["ssh-ed25519 AAAA a@b\n", "  ", "ssh-rsa  BBBB\tc"]) == \
        b"ssh-ed25519 AAAA a@b\nssh-rsa BBBB c\n"


def test_write_file_never_follows_a_link(tmp_path: Path) -> None:
    disk, outside = tmp_path / "disk", tmp_path / "outside"
    (disk / "home" / "azureuser").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, disk / "home" / "azureuser" / ".ssh")
    with pytest.raises(ConfigError, match="link"):
        sandbox.write_file(disk, "home/azureuser/.ssh/authorized_keys", b"k\n", mode=0o600, uid=os.getuid(),
                           gid=os.getgid())
    assert list(outside.iterdir()) == []
    os.unlink(disk / "home" / "azureuser" / ".ssh")
    os.symlink(outside / "target", disk / "home" / "azureuser" / "file")
    sandbox.write_file(disk, "home/azureuser/file", b"mine\n", mode=0o600, uid=os.getuid(), gid=os.getgid())
    assert not (outside / "target").exists()  # the link itself was replaced
    assert (disk / "home" / "azureuser" / "file").read_bytes() == b"mine\n"
    with pytest.raises(ConfigError):
        sandbox.write_file(disk, "../escape", b"", mode=0o600, uid=0, gid=0)


def test_what_of_the_host_etc_a_vm_must_not_read(tmp_path: Path) -> None:
    etc, upper = tmp_path / "etc", tmp_path / "upper"
    (etc / "ssl" / "private").mkdir(parents=True)
    (etc / "ssh").mkdir()
    upper.mkdir()
    for name, mode in (("shadow", 0o640), ("hosts", 0o644), ("ssh/ssh_host_rsa_key", 0o600),
                       ("ssh/ssh_host_rsa_key.pub", 0o644), ("ssl/private/key.pem", 0o600), ("sudoers", 0o440)):
        (etc / name).write_text("x")
        os.chmod(etc / name, mode)
    os.chmod(etc / "ssl" / "private", 0o710)
    (upper / "shadow").write_text("the VM's own")
    hidden = set(vminit.hidden_host_etc(str(etc), str(upper)))
    assert hidden == {"ssh/ssh_host_rsa_key", "ssl/private", "sudoers"}


def test_a_vm_gets_a_docker_key_of_its_own_once(tmp_path: Path) -> None:
    host = tmp_path / "host-etc"
    (host / "docker").mkdir(parents=True)
    (host / "docker" / "key.json").write_text("the host's key")
    os.chmod(host / "docker" / "key.json", 0o600)
    folder = sandbox.VMDirectory(tmp_path / "vm")
    folder.etc_upper.mkdir(parents=True)
    assert sandbox.give_docker_key(folder)
    key = folder.etc_upper / "docker" / "key.json"
    first = json.loads(key.read_bytes())
    assert sorted(first) == ["crv", "d", "kid", "kty", "x", "y"] and first["kty"] == "EC"
    assert [len(part) for part in first["kid"].split(":")] == [4] * 12
    assert key.stat().st_mode & 0o777 == 0o600 and (key.parent.stat().st_mode & 0o777) == 0o755
    assert "docker/key.json" not in vminit.hidden_host_etc(str(host), str(folder.etc_upper))  # the VM's own shows
    assert not sandbox.give_docker_key(folder) and json.loads(key.read_bytes()) == first  # kept across boots
    other = sandbox.VMDirectory(tmp_path / "other")
    other.etc_upper.mkdir(parents=True)
    sandbox.give_docker_key(other)
    assert json.loads((other.etc_upper / "docker" / "key.json").read_bytes())["kid"] != first["kid"]
    linked = sandbox.VMDirectory(tmp_path / "linked")
    linked.etc_upper.mkdir(parents=True)
    os.symlink(host / "docker", linked.etc_upper / "docker")  # the VM's root made /etc/docker a link: left alone
    assert not sandbox.give_docker_key(linked)
    assert (host / "docker" / "key.json").read_text() == "the host's key"


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


def test_console_requests_and_tickets() -> None:
    assert console.parse_request(None) == (None, None, None)
    assert console.parse_request({"command": "ls", "tty": {"rows": 24, "cols": 80}, "term": "xterm"}) == \
        ("ls", (24, 80), "xterm")
    for bad in ({"command": 1}, {"tty": {"rows": 0, "cols": 80}}, {"tty": "yes"}, {"term": "x\n"}, []):
        with pytest.raises(ValueError):
            console.parse_request(bad)
    tickets = console.Tickets()
    value = tickets.issue("/vm", command=None, tty=None, term=None)
    assert len(value) >= 40 and tickets.redeem(value) is not None
    assert tickets.redeem(value) is None  # spent
    assert tickets.redeem("guess") is None


def test_names_resolve_locally_only_without_asking_off_this_machine(tmp_path: Path) -> None:
    hosts, resolv = tmp_path / "hosts", tmp_path / "resolv.conf"
    hosts.write_text("127.0.0.1 localhost myreg.localhost\n10.0.0.1 elsewhere.localhost\n")
    resolv.write_text("nameserver 10.0.0.53\n")
    assert resolves_locally("MYREG.localhost", hosts, resolv)
    assert not resolves_locally("elsewhere.localhost", hosts, resolv)  # not loopback
    assert not resolves_locally("other.localhost", hosts, resolv)  # the name server is off this machine: not asked
    resolv.write_text("nameserver 127.0.0.53\n")
    assert resolves_locally("localhost", tmp_path / "none", resolv)  # asked of a loopback stub
    hosts.write_text(f"{publiccloud.FRONT_DOOR} myreg.azurecr.io\n")
    assert not resolves_locally("myreg.azurecr.io", hosts, resolv)  # a VM's front door, not on this host's lo


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
