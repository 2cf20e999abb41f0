"""VMs you can step into, through the CLI against a real server: ``vm run-command invoke`` (ARM ``runCommand``,
as the VM's root) and ``vm ssh`` / ``ssh vm`` (the ``console`` action, as its admin user), what a VM sees inside
(Azure's names, the CA in its trust store, registries made later), who may do either, and the bounds of a
run-command."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from acrlocal.publiccloud import FRONT_DOOR
from tests.harness import AcrLocal, acrlocal_cmd, child_env

RG_PREFIX = "step-"
RUN_COMMAND_DIR = "/var/lib/waagent/run-command/download/0"


def az(server: AcrLocal, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def fails(server: AcrLocal, *args: str, env: dict[str, str] | None = None) -> str:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode != 0 and proc.stdout == "", (proc.returncode, proc.stdout)
    assert proc.stderr.startswith("ERROR: ")
    return proc.stderr


@pytest.fixture(scope="module")
def vm(acrlocal: AcrLocal) -> Iterator[dict[str, str]]:
    group = f"{RG_PREFIX}{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    created = az(acrlocal, "vm", "create", "-g", group, "-n", "myDockerVM", "--image", "UbuntuLTS",
                 "--admin-username", "azureuser", "--generate-ssh-keys", "--assign-identity")
    shown = az(acrlocal, "vm", "show", "-g", group, "-n", "myDockerVM")
    yield {"group": group, "id": created["id"], "vmId": shown["vmId"]}
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def invoke(server: AcrLocal, vm: dict[str, str], *scripts: str, params: tuple[str, ...] = (),
           env: dict[str, str] | None = None) -> dict[str, Any]:
    args = ["vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM", "--command-id", "RunShellScript",
            "--scripts", *scripts]
    if params:
        args += ["--parameters", *params]
    result = az(server, *args, env=env)
    assert len(result["value"]) == 1
    assert sorted(result["value"][0]) == ["code", "displayStatus", "level", "message"]  # as az 2.91 prints it
    return dict(result["value"][0])


def streams(message: str) -> tuple[str, str]:
    head, _, rest = message.partition("\n[stdout]\n")
    assert head in ("Enable succeeded: ", "Enable failed: ") or head.startswith("Enable failed: "), head
    out, _, err = rest.partition("\n[stderr]\n")
    return out, err


def test_run_command_answers_as_azure_and_runs_in_the_vm(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    status = invoke(acrlocal, vm, 'echo "args: $1 $2 named: $color"', "echo to-stderr >&2", "pwd",
                    'echo "$(id -un) $(hostname) $HOME"',
                    'echo "[$IDENTITY_ENDPOINT$AZURE_POD_IDENTITY_AUTHORITY_HOST]"', "command -v az",
                    params=("first", "second", "color=blue"))
    assert {k: status[k] for k in ("code", "level", "displayStatus")} == {
        "code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}
    out, err = streams(status["message"])
    lines = out.splitlines()
    assert lines[0] == "args: first second named: blue"
    assert lines[1] == RUN_COMMAND_DIR  # where Azure's agent runs scripts
    assert lines[2] == "root myDockerVM /root"  # the VM's root, as RunShellScript runs
    assert lines[3] == "[]"  # no identity endpoint is configured: IMDS is where Azure has it
    assert lines[4] == "/opt/acrlocal/bin/az"
    assert err == "to-stderr\n"

    failed = invoke(acrlocal, vm, "echo partial", "exit 3")
    assert failed["code"] == "ProvisioningState/failed/3" and failed["level"] == "Error"
    assert failed["message"].startswith("Enable failed: failed to execute command: command terminated with exit "
                                        "status=3\n[stdout]\npartial\n")


def test_run_command_keeps_the_last_4096_bytes_of_each_stream(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    status = invoke(acrlocal, vm, "head -c 10000 /dev/zero | tr '\\0' a", "printf 'b%.0s' $(seq 5000) >&2",
                    "echo; echo tail-line")
    out, err = streams(status["message"])
    assert len(out.encode()) == 4096 and out.endswith("a\ntail-line\n")
    assert err == "b" * 4096


def test_run_command_refuses_bad_input_like_arm(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    err = fails(acrlocal, "vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM", "--command-id",
                "RunPowerShellScript", "--scripts", "dir")
    assert err.startswith("ERROR: (InvalidParameter) The command id 'RunPowerShellScript' is not available")
    err = fails(acrlocal, "vm", "run-command", "invoke", "-g", vm["group"], "-n", "nosuchvm", "--command-id",
                "RunShellScript", "--scripts", "true")
    assert "(ResourceNotFound)" in err


def test_a_script_may_call_arm_and_only_one_runs_at_a_time(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    """The script signs in as the VM's identity (IMDS at 169.254.169.254, Azure's management.azure.com) and
    writes through ARM while its run-command is in flight (it would wait for itself if run-command held the
    control plane's write lock); a second run-command meanwhile is ARM's 409."""
    principal = az(acrlocal, "vm", "show", "-g", vm["group"], "-n", "myDockerVM", "--query",
                   "identity.principalId")
    group_id = az(acrlocal, "group", "show", "-n", vm["group"], "--query", "id")
    az(acrlocal, "role", "assignment", "create", "--assignee", principal, "--role", "Contributor", "--scope",
       group_id)
    workdir = acrlocal.data_dir / "vms" / vm["vmId"] / "disk" / RUN_COMMAND_DIR.lstrip("/")
    (workdir / "go").unlink(missing_ok=True)
    first = subprocess.Popen(
        acrlocal_cmd("vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM", "--command-id",
                     "RunShellScript", "--scripts", "touch started", "az login --identity --output none",
                     f"az group update -n {vm['group']} --tags from=inside --query tags -o tsv",
                     "while [ ! -f go ]; do sleep 0.1; done", "echo done"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
    try:
        for _ in range(600):
            if (workdir / "started").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()
        err = fails(acrlocal, "vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM",
                    "--command-id", "RunShellScript", "--scripts", "true")
        assert err.startswith("ERROR: (Conflict) Run command extension execution is in progress.")
    finally:
        (workdir / "go").touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    status = json.loads(out)["value"][0]
    assert status["code"] == "ProvisioningState/succeeded", status["message"]
    assert streams(status["message"])[0] == "inside\ndone\n"
    assert az(acrlocal, "group", "show", "-n", vm["group"], "--query", "tags") == {"from": "inside"}


def test_ssh_runs_commands_in_the_vm_with_azure_names_and_trust(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    script = ("getent hosts acrlocal.azurecr.io management.azure.com; "
              "curl -sS -o /dev/null -w '%{http_code}\\n' https://acrlocal.azurecr.io/v2/; "
              "grep -c 'acrlocal local CA' /etc/ssl/certs/ca-certificates.crt; "
              "openssl verify -CApath /etc/ssl/certs /etc/ssl/certs/acrlocal-ca.pem; "
              "getent hosts example.com || echo no-such-name; "
              "echo $(id -un) $HOME; exit 4")
    for command in (["vm", "ssh"], ["ssh", "vm"]):
        proc = acrlocal.cli(*command, "-g", vm["group"], "-n", "myDockerVM", "--", script, check=False)
        assert proc.returncode == 4, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split() == [FRONT_DOOR, "acrlocal.azurecr.io"]
        assert lines[1].split() == [FRONT_DOOR, "management.azure.com"]
        assert lines[2] == "401"  # the registry's challenge, over TLS the VM trusts
        assert lines[3] == "1"
        assert lines[4] == "/etc/ssl/certs/acrlocal-ca.pem: OK"  # the directory form, as OpenSSL reads it
        assert lines[5] == "no-such-name"  # every other name fails, at once: nothing is asked off this machine
        assert lines[-1] == "azureuser /home/azureuser"
    # outside the VM the host's files are untouched
    assert "azurecr.io" not in Path("/etc/hosts").read_text()


def test_an_open_shell_sees_registries_created_later(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    shell = subprocess.Popen(
        acrlocal_cmd("vm", "ssh", "-g", vm["group"], "-n", "myDockerVM"), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
    assert shell.stdin is not None and shell.stdout is not None
    try:
        name = f"later{uuid.uuid4().hex[:8]}"
        shell.stdin.write(f"getent hosts {name}.azurecr.io || echo unknown; echo ready\n")
        shell.stdin.flush()
        assert shell.stdout.readline() == "unknown\n"
        assert shell.stdout.readline() == "ready\n"
        az(acrlocal, "acr", "create", "-g", vm["group"], "-n", name, "--sku", "Basic")
        out, err = shell.communicate(f"getent hosts {name}.azurecr.io; exit\n", timeout=120)
    finally:
        if shell.poll() is None:
            shell.kill()
    assert shell.returncode == 0, err
    assert out.splitlines()[0].split() == [FRONT_DOOR, f"{name}.azurecr.io"]


def test_who_may_step_in(acrlocal: AcrLocal, vm: dict[str, str], tmp_path: Path) -> None:
    """Reader: neither. Virtual Machine Administrator Login: the shell, not run-command. Virtual Machine
    Contributor: both (it may run commands anyway)."""
    sp = az(acrlocal, "ad", "sp", "create-for-rbac", "-n", f"stepper-{uuid.uuid4().hex[:6]}")
    env = {"ACRLOCAL_CONFIG_DIR": str(tmp_path / "sp-profile")}
    assign = ("role", "assignment", "create", "--assignee", sp["appId"], "--scope", vm["id"], "--role")
    az(acrlocal, *assign, "Reader")
    az(acrlocal, "login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant", sp["tenant"],
       env=env)
    ssh = ("vm", "ssh", "-g", vm["group"], "-n", "myDockerVM", "--", "echo in")
    run = ("vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM", "--command-id", "RunShellScript",
           "--scripts", "echo in")
    assert "does not have authorization to perform action 'Microsoft.Compute/virtualMachines/loginAsAdmin/action'" \
        in fails(acrlocal, *ssh, env=env)
    assert "'Microsoft.Compute/virtualMachines/runCommand/action'" in fails(acrlocal, *run, env=env)

    az(acrlocal, *assign, "Virtual Machine Administrator Login")
    assert acrlocal.cli(*ssh, env=env).stdout == "in\n"
    assert "'Microsoft.Compute/virtualMachines/runCommand/action'" in fails(acrlocal, *run, env=env)

    az(acrlocal, *assign, "Virtual Machine Contributor")
    assert streams(az(acrlocal, *run, env=env)["value"][0]["message"])[0] == "in\n"


def processes(server: AcrLocal, group: str, name: str) -> str:
    result = az(server, "vm", "run-command", "invoke", "-g", group, "-n", name, "--command-id", "RunShellScript",
                "--scripts", "ps -e -o comm=")
    return streams(result["value"][0]["message"])[0]


def test_run_command_stops_a_script_at_its_time_limit(tmp_path: Path) -> None:
    server = AcrLocal(tmp_path / "data", "--run-command-timeout", "2")
    server.start()
    try:
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "slow")
        result = az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "slow", "--command-id",
                    "RunShellScript", "--scripts", "echo before", "sleep 600 &", "wait", "echo never")
        status = result["value"][0]
        assert status["code"].startswith("ProvisioningState/failed/") and status["level"] == "Error"
        assert status["message"].startswith("Enable failed: the script did not finish within 2 seconds and was "
                                             "stopped\n[stdout]\nbefore\n")
        assert "never" not in status["message"]
        assert "sleep" not in processes(server, "rg", "slow").split()  # the script's process group ended with it
    finally:
        az(server, "group", "delete", "-n", "rg", "--yes")
        server.stop()


def test_deleting_a_vm_ends_its_run_command(acrlocal: AcrLocal) -> None:
    group = f"{RG_PREFIX}{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    try:
        az(acrlocal, "vm", "create", "-g", group, "-n", "doomed")
        vm_id = az(acrlocal, "vm", "show", "-g", group, "-n", "doomed", "--query", "vmId")
        workdir = acrlocal.data_dir / "vms" / vm_id / "disk" / RUN_COMMAND_DIR.lstrip("/")
        running = subprocess.Popen(
            acrlocal_cmd("vm", "run-command", "invoke", "-g", group, "-n", "doomed", "--command-id",
                         "RunShellScript", "--scripts", "touch started", "sleep 600", "echo never"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
        for _ in range(600):
            if (workdir / "started").exists() or running.poll() is not None:
                break
            time.sleep(0.1)
        assert running.poll() is None, running.communicate()
        az(acrlocal, "vm", "delete", "-g", group, "-n", "doomed", "--yes")
        out, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
        status = json.loads(out)["value"][0]
        assert status["code"] == "ProvisioningState/failed/137" and "never" not in status["message"]
        assert not (acrlocal.data_dir / "vms" / vm_id).exists()
    finally:
        az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_stopping_the_server_stops_the_vms_and_keeps_them(tmp_path: Path) -> None:
    """A VM's processes end with the server (even those that left the script's session); it boots again when
    next used, with /tmp cleared, as after a reboot, and its disk kept."""
    server = AcrLocal(tmp_path / "data")
    server.start()
    try:
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "rebooted")
        az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "rebooted", "--command-id", "RunShellScript",
           "--scripts", "setsid sleep 1000 < /dev/null > /dev/null 2>&1 &",
           # Until the child has left the script's session (which ends with the script), it is the script's.
           "until ps -e -o args= | grep -q '^sleep 1000'; do sleep 0.05; done", "touch /tmp/scratch /root/kept")
        assert "sleep" in processes(server, "rg", "rebooted").split()
        assert server.stop() == 0
        server.start()
        result = az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "rebooted", "--command-id",
                    "RunShellScript", "--scripts", "ls /tmp /root; ps -e -o comm=")
        out = streams(result["value"][0]["message"])[0]
        assert "scratch" not in out and "kept" in out and "sleep" not in out.split()
        az(server, "group", "delete", "-n", "rg", "--yes")
    finally:
        server.stop()


def test_graph_from_the_vm_with_its_identity(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    """graph.microsoft.com inside the VM is this server: a token for Graph from IMDS (signed with the tenant's key,
    as the JWKS publishes it) reads the VM's own service principal, as a managed identity may; /me is refused as
    Graph refuses it to an application, and a token for ARM is not Graph's."""
    principal = az(acrlocal, "vm", "show", "-g", vm["group"], "-n", "myDockerVM", "--query",
                   "identity.principalId")
    script = f"""set -e
        imds='http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01'
        token() {{ curl -s -H Metadata:true "$imds&resource=$1" |
            sed -n 's/.*"access_token": *"\\([^"]*\\)".*/\\1/p'; }}
        graph=$(token https%3A%2F%2Fgraph.microsoft.com)
        arm=$(token https%3A%2F%2Fmanagement.azure.com%2F)
        echo "$graph"
        curl -s -H "Authorization: Bearer $graph" https://graph.microsoft.com/v1.0/servicePrincipals/{principal}
        echo
        curl -s -H "Authorization: Bearer $graph" https://graph.microsoft.com/v1.0/me; echo
        curl -s -o /dev/null -w '%{{http_code}}\\n' -H "Authorization: Bearer $arm" \\
            https://graph.microsoft.com/v1.0/servicePrincipals/{principal}
    """
    proc = acrlocal.cli("ssh", "vm", "-g", vm["group"], "-n", "myDockerVM", "--", script, check=False)
    assert proc.returncode == 0, proc.stderr
    token, own, me, arm_status = proc.stdout.splitlines()
    session = acrlocal.session()
    tenant = jwt.decode(token, options={"verify_signature": False})["tid"]
    config = session.get(f"{acrlocal.shared}/{tenant}/v2.0/.well-known/openid-configuration").json()
    keys = session.get(config["jwks_uri"]).json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="https://graph.microsoft.com",
                        options={"verify_iss": False})
    assert claims["oid"] == principal and claims["idtyp"] == "app"
    sp = json.loads(own)
    assert sp["id"] == principal and sp["servicePrincipalType"] == "ManagedIdentity"
    assert sp["displayName"] == "myDockerVM"
    assert json.loads(me)["error"]["message"] == "/me request is only valid with delegated authentication flow."
    assert arm_status == "401"
