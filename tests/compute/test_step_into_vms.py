"""VMs you can step into, through the CLI against a real server: ``vm run-command invoke`` (ARM ``runCommand``)
and ``vm ssh`` / ``ssh vm`` (``retrieveSandboxAccess``), what a VM sees inside (environment, host names, the CA
for every login server, kept current), who may do either, and the bounds of a run-command."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AcrLocal, acrlocal_cmd, child_env

RG_PREFIX = "step-"
IN_NAMESPACE = "mount-namespace" if os.geteuid() == 0 else "user-and-mount-namespace"


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
                    'echo "$ACRLOCAL_ENDPOINT $ACRLOCAL_VM_NAME $ACRLOCAL_VM_ISOLATION"',
                    'echo "$IDENTITY_ENDPOINT|$AZURE_POD_IDENTITY_AUTHORITY_HOST"', "command -v az docker",
                    params=("first", "second", "color=blue"))
    assert {k: status[k] for k in ("code", "level", "displayStatus")} == {
        "code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}
    out, err = streams(status["message"])
    lines = out.splitlines()
    assert lines[0] == "args: first second named: blue"
    home = acrlocal.data_dir / "vms" / vm["vmId"] / "home"
    assert lines[1] == str(home)
    assert lines[2] == f"{acrlocal.shared} myDockerVM {IN_NAMESPACE}"
    identity_endpoint, imds = lines[3].split("|")
    assert identity_endpoint.endswith("/msi/token") and imds.startswith("http://127.0.0.1:")
    assert lines[4] == str(acrlocal.data_dir / "vms" / vm["vmId"] / "bin" / "az")
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
    """The script signs in as the VM's identity and writes through ARM while its run-command is in flight (it
    would wait for itself if run-command held the control plane's write lock); a second run-command meanwhile
    is ARM's 409."""
    principal = az(acrlocal, "vm", "show", "-g", vm["group"], "-n", "myDockerVM", "--query",
                   "identity.principalId")
    group_id = az(acrlocal, "group", "show", "-n", vm["group"], "--query", "id")
    az(acrlocal, "role", "assignment", "create", "--assignee", principal, "--role", "Contributor", "--scope",
       group_id)
    home = acrlocal.data_dir / "vms" / vm["vmId"] / "home"
    (home / "go").unlink(missing_ok=True)
    first = subprocess.Popen(
        acrlocal_cmd("vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM", "--command-id",
                     "RunShellScript", "--scripts", "touch started", "az login --identity --output none",
                     f"az group update -n {vm['group']} --tags from=inside --query tags -o tsv",
                     "while [ ! -f go ]; do sleep 0.1; done", "echo done"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
    try:
        for _ in range(600):
            if (home / "started").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()
        err = fails(acrlocal, "vm", "run-command", "invoke", "-g", vm["group"], "-n", "myDockerVM",
                    "--command-id", "RunShellScript", "--scripts", "true")
        assert err.startswith("ERROR: (Conflict) Run command extension execution is in progress.")
    finally:
        (home / "go").touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    status = json.loads(out)["value"][0]
    assert status["code"] == "ProvisioningState/succeeded", status["message"]
    assert streams(status["message"])[0] == "inside\ndone\n"
    assert az(acrlocal, "group", "show", "-n", vm["group"], "--query", "tags") == {"from": "inside"}


def test_ssh_runs_commands_in_the_vm_with_names_and_trust(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    registry = acrlocal.registry()
    host = registry["hostLoginServer"]
    script = (f"getent hosts {host.split(':')[0]}; cat /etc/containers/certs.d/{host}/ca.crt | sha256sum; "
              f"cat /etc/docker/certs.d/{registry['loginServer']}/ca.crt | sha256sum; "
              "echo $HOME $ACRLOCAL_VM_ISOLATION; exit 4")
    ca_digest = subprocess.run(["sha256sum"], input=Path(acrlocal.ca).read_bytes(), capture_output=True,
                               check=True).stdout.decode().split()[0]
    for command in (["vm", "ssh"], ["ssh", "vm"]):
        proc = acrlocal.cli(*command, "-g", vm["group"], "-n", "myDockerVM", "--", script, check=False)
        assert proc.returncode == 4, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split() == ["127.0.0.1", host.split(":")[0]]
        assert lines[1].split()[0] == ca_digest
        if Path("/etc/docker").is_dir():
            assert lines[2].split()[0] == ca_digest
        assert lines[-1] == f"{acrlocal.data_dir / 'vms' / vm['vmId'] / 'home'} {IN_NAMESPACE}"
    # outside the VM the host's files are untouched
    assert host.split(":")[0] not in Path("/etc/hosts").read_text()


def test_an_open_shell_sees_registries_created_later(acrlocal: AcrLocal, vm: dict[str, str]) -> None:
    shell = subprocess.Popen(
        acrlocal_cmd("vm", "ssh", "-g", vm["group"], "-n", "myDockerVM"), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
    assert shell.stdin is not None and shell.stdout is not None
    try:
        shell.stdin.write("echo ready\n")
        shell.stdin.flush()
        assert shell.stdout.readline() == "ready\n"
        name = f"later{uuid.uuid4().hex[:8]}"
        az(acrlocal, "acr", "create", "-g", vm["group"], "-n", name, "--sku", "Basic")
        out, err = shell.communicate(f"getent hosts {name}.localhost; ls /etc/containers/certs.d; exit\n",
                                     timeout=120)
    finally:
        if shell.poll() is None:
            shell.kill()
    assert shell.returncode == 0, err
    assert out.splitlines()[0].split() == ["127.0.0.1", f"{name}.localhost"]
    port = acrlocal.shared.rsplit(":", 1)[1]
    assert f"{name}.localhost:{port}" in out.splitlines()[1:]


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


def test_run_command_stops_a_script_at_its_time_limit_or_when_the_vm_goes(tmp_path: Path) -> None:
    server = AcrLocal(tmp_path / "data", "--run-command-timeout", "1")
    server.start()
    try:
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "slow")
        started = server.data_dir / "started"
        result = az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "slow", "--command-id",
                    "RunShellScript", "--scripts", "echo before", f"sleep 600 & echo $! > {started}", "wait",
                    "echo never")
        status = result["value"][0]
        assert status["code"].startswith("ProvisioningState/failed/") and status["level"] == "Error"
        assert status["message"].startswith("Enable failed: the script did not finish within 1 seconds and was "
                                             "stopped\n[stdout]\nbefore\n")
        assert "never" not in status["message"]
        sleeper = int(started.read_text())
        with pytest.raises(ProcessLookupError):  # the script's session was ended with it
            for _ in range(50):
                os.kill(sleeper, 0)
                time.sleep(0.1)
        vm_id = az(server, "vm", "show", "-g", "rg", "-n", "slow", "--query", "vmId")
        runroot = Path(f"/tmp/acrlocal-vm-{vm_id.replace('-', '')[:12]}")
        assert runroot.is_dir()
    finally:
        az(server, "group", "delete", "-n", "rg", "--yes")
        server.stop()
    assert not runroot.exists()  # the VM's run-time directory goes with it


def test_deleting_a_vm_ends_its_run_command(acrlocal: AcrLocal) -> None:
    group = f"{RG_PREFIX}{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    try:
        az(acrlocal, "vm", "create", "-g", group, "-n", "doomed")
        vm_id = az(acrlocal, "vm", "show", "-g", group, "-n", "doomed", "--query", "vmId")
        home = acrlocal.data_dir / "vms" / vm_id / "home"
        running = subprocess.Popen(
            acrlocal_cmd("vm", "run-command", "invoke", "-g", group, "-n", "doomed", "--command-id",
                         "RunShellScript", "--scripts", "touch started", "sleep 600", "echo never"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(ACRLOCAL_DATA_DIR=str(acrlocal.data_dir), ACRLOCAL_CONFIG_DIR=str(acrlocal.profile_dir)))
        for _ in range(600):
            if (home / "started").exists() or running.poll() is not None:
                break
            time.sleep(0.1)
        assert running.poll() is None, running.communicate()
        az(acrlocal, "vm", "delete", "-g", group, "-n", "doomed", "--yes")
        out, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
        status = json.loads(out)["value"][0]
        assert status["code"] == "ProvisioningState/failed/137" and "never" not in status["message"]
        assert not home.exists()
    finally:
        az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_stopping_the_server_clears_vm_run_time_directories_and_keeps_the_vm(tmp_path: Path) -> None:
    server = AcrLocal(tmp_path / "data")
    server.start()
    try:
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "rebooted")
        az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "rebooted", "--command-id", "RunShellScript",
           "--scripts", "echo hello")
        vm_id = az(server, "vm", "show", "-g", "rg", "-n", "rebooted", "--query", "vmId")
        runroot = Path(f"/tmp/acrlocal-vm-{vm_id.replace('-', '')[:12]}")
        assert runroot.is_dir()
        assert server.stop() == 0
        assert not runroot.exists()  # like /run after a reboot
        server.start()
        result = az(server, "vm", "run-command", "invoke", "-g", "rg", "-n", "rebooted", "--command-id",
                    "RunShellScript", "--scripts", "echo again")
        assert streams(result["value"][0]["message"])[0] == "again\n"
        assert runroot.is_dir()
        az(server, "group", "delete", "-n", "rg", "--yes")
    finally:
        server.stop()
