"""What a VM keeps out. A Contributor on one resource group runs a script in a VM there (as the VM's root, as
Azure's run-command does): the server's data directory (``admin.json``), other VMs' disks and the host's homes are
not there to read; ``ps`` shows the VM's processes only; its network namespace holds nothing but ``lo`` and no
route; the host's programs are read-only and the VM's root can neither mount nor make devices; the host's own
secrets in ``/etc`` are hidden; the host's network namespace never gains 169.254.169.254; a VM that would see
the data directory does not start, and says why; a host that cannot make a VM's namespaces makes no VM; and a VM
whose monitor was killed leaves no cgroup behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acrlocal.publiccloud import FRONT_DOOR
from tests.compute.conftest import mgmt_for
from tests.harness import AcrLocal


def az(server: AcrLocal, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def run(server: AcrLocal, group: str, vm: str, script: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    result = az(server, "vm", "run-command", "invoke", "-g", group, "-n", vm, "--command-id", "RunShellScript",
                "--scripts", script, env=env)
    message = result["value"][0]["message"]
    out, _, err = message.partition("\n[stdout]\n")[2].partition("\n[stderr]\n")
    return out, err


@pytest.fixture(scope="module")
def world(acrlocal: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    group = f"iso-{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    az(acrlocal, "vm", "create", "-g", group, "-n", "vm-a")
    az(acrlocal, "vm", "create", "-g", group, "-n", "vm-b")
    run(acrlocal, group, "vm-b", "echo secret-of-b > /home/azureuser/secret; echo root-of-b > /root/secret")
    sp = az(acrlocal, "ad", "sp", "create-for-rbac", "-n", f"contributor-{uuid.uuid4().hex[:6]}", "--role",
            "Contributor", "--scopes", az(acrlocal, "group", "show", "-n", group, "--query", "id"))
    profile = tmp_path_factory.mktemp("contributor-profile")
    env = {"ACRLOCAL_CONFIG_DIR": str(profile)}
    az(acrlocal, "login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant", sp["tenant"],
       env=env)
    b_disk = acrlocal.data_dir / "vms" / az(acrlocal, "vm", "show", "-g", group, "-n", "vm-b", "--query", "vmId")
    yield {"group": group, "contributor": env, "b_disk": b_disk / "disk"}
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_a_contributors_run_command_reads_nothing_of_the_server_or_other_vms(acrlocal: AcrLocal,
                                                                            world: dict[str, Any]) -> None:
    data = acrlocal.data_dir
    assert (data / "admin.json").exists() and (world["b_disk"] / "home" / "azureuser" / "secret").exists()
    host_home = Path.home()
    out, err = run(acrlocal, world["group"], "vm-a", f"""
        id -u
        cat {data}/admin.json || echo no-admin-json
        ls {data} || echo no-data-dir
        ls {world["b_disk"]} || echo no-other-disk
        cat /home/*/secret /root/secret 2>/dev/null || echo no-secret-of-b
        ls /home
        ls -A {host_home} | sort | tr '\\n' ' '; echo
        test -e {host_home}/.acrlocal && echo host-profile-visible || echo no-host-profile
        ls /vms /data 2>/dev/null || echo nothing-else
    """, env=world["contributor"])
    lines = out.splitlines()
    assert lines[0] == "0"  # the VM's root, as Azure's run-command runs
    assert lines[1:5] == ["no-admin-json", "no-data-dir", "no-other-disk", "no-secret-of-b"], out + err
    assert lines[5] == "azureuser"
    skel = sorted(p.name for p in Path("/etc/skel").iterdir()) if Path("/etc/skel").is_dir() else []
    if str(host_home) == "/root":
        assert lines[6].split() == skel  # the VM's own /root, a fresh image's
    assert lines[7] == "no-host-profile" and lines[8] == "nothing-else"
    assert "No such file or directory" in err


def test_ps_shows_only_the_vms_processes(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    out, _ = run(acrlocal, world["group"], "vm-a", "ps -e -o pid=,comm=")
    processes = [line.split(None, 1) for line in out.splitlines()]
    assert processes[0][0] == "1"
    assert {name for _, name in processes[1:]} <= {"bash", "ps", "sleep", "dockerd", "containerd"}, out
    assert len(processes) < 10


def test_the_network_namespace_holds_only_lo(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    out, _ = run(acrlocal, world["group"], "vm-a", "ip -o link | cut -d: -f2; ip -4 -o addr | awk '{print $4}'; "
                 "ip route; ip -6 route | grep -v '^::1 ' || true; ls /sys/class/net")
    assert out.split() == ["lo", "127.0.0.1/8", "169.254.169.254/32", f"{FRONT_DOOR}/32", "lo"]


def test_host_programs_are_read_only_and_the_vms_root_is_no_host_root(acrlocal: AcrLocal,
                                                                      world: dict[str, Any]) -> None:
    out, err = run(acrlocal, world["group"], "vm-a", """
        touch /usr/bin/x 2>&1 | grep -o 'Read-only file system'
        mount -t tmpfs none /mnt 2>/dev/null || echo no-mount
        mknod /tmp/disk b 8 0 2>/dev/null || echo no-mknod
        umount /usr 2>/dev/null || echo no-umount
        cut -d: -f2 /etc/shadow | sort -u
        ls /dev
    """)
    lines = out.splitlines()
    assert lines[:5] == ["Read-only file system", "no-mount", "no-mknod", "no-umount", "*"], out + err
    assert "vda" not in lines and "sda" not in lines and "null" in lines


def test_host_secrets_in_etc_are_hidden(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    secrets = [p for p in (Path("/etc/ssh/ssh_host_rsa_key"), Path("/etc/ssh/ssh_host_ecdsa_key"),
                           Path("/etc/gshadow-"), Path("/etc/shadow-")) if p.exists()]
    if not secrets:
        pytest.skip("this host has none of the root-only /etc files checked here")
    out, _ = run(acrlocal, world["group"], "vm-a", " ".join(["wc -c"] + [str(p) for p in secrets]))
    sizes = [line.split()[0] for line in out.splitlines()[:-1]]
    assert sizes == ["0"] * len(secrets), out


def test_the_host_never_gains_the_imds_address(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    def host_addresses() -> str:
        return Path("/proc/net/fib_trie").read_text() + subprocess.run(
            ["ip", "-o", "addr"], capture_output=True, text=True).stdout

    assert "169.254.169.254" not in host_addresses() and FRONT_DOOR not in host_addresses()
    run(acrlocal, world["group"], "vm-a", "curl -s -o /dev/null http://169.254.169.254/metadata/versions; "
        "curl -s -o /dev/null https://management.azure.com/")
    az(acrlocal, "vm", "restart", "-g", world["group"], "-n", "vm-b")
    az(acrlocal, "vm", "stop", "-g", world["group"], "-n", "vm-b")
    assert "169.254.169.254" not in host_addresses() and FRONT_DOOR not in host_addresses()


def test_a_vm_that_would_see_the_data_directory_does_not_start(tmp_path: Path) -> None:
    """The server's virtualenv is visible (read-only) in every VM: a data directory there would be too."""
    data = Path(sys.prefix) / f".acrlocal-test-{uuid.uuid4().hex[:8]}"
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtualenv")
    server = AcrLocal(data)
    server.log_path = tmp_path / "server.log"
    try:
        server.start()
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "exposed")
        proc = server.cli("vm", "run-command", "invoke", "-g", "rg", "-n", "exposed", "--command-id",
                          "RunShellScript", "--scripts", "echo ran", check=False)
        assert proc.returncode != 0 and "ran" not in proc.stdout
        assert "is under a path every VM sees" in proc.stderr and str(data) in proc.stderr
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(data.parent / f"{data.name}-cli-profile", ignore_errors=True)


NOT_ROOT = 4242


@pytest.mark.parametrize("how", ["not root", "no network namespace"])
def test_a_host_that_cannot_make_a_vms_namespaces_refuses_to_create_it(how: str, tmp_path: Path) -> None:
    """Fail closed: with a server that is not root, or that cannot make a network namespace (its user namespace
    allows none: /proc/sys/user/max_net_namespaces is 0 there, the host's limit is untouched), creating a VM is
    ARM's error naming what is missing, and nothing of the VM is made: no resource, no identity, no directory."""
    if how == "not root":
        data = Path(tempfile.mkdtemp(prefix="acrlocal-notroot-")) / "data"  # pytest's own directories are 0700
        data.mkdir()
        os.chown(data.parent, NOT_ROOT, NOT_ROOT)
        os.chown(data, NOT_ROOT, NOT_ROOT)
        wrapper = ["setpriv", f"--reuid={NOT_ROOT}", f"--regid={NOT_ROOT}", "--clear-groups"]
        missing = f"VMs need root: each VM's mount, user, network and PID namespaces are made by the server as " \
                  f"root, and this server runs as uid {NOT_ROOT}"
    else:
        data = tmp_path / "data"
        wrapper = ["unshare", "--user", "--map-root-user", "sh", "-c",
                   'echo 0 > /proc/sys/user/max_net_namespaces && exec "$@"', "sh"]
        missing = "cannot make user, network, UTS, IPC, cgroup and PID namespaces: the per-user limit of " \
                  "namespaces is reached"
    server = AcrLocal(data, wrapper=wrapper)
    server.log_path = tmp_path / "server.log"
    try:
        server.start()
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        proc = server.cli("vm", "create", "-g", "rg", "-n", "refused", "--assign-identity", check=False)
        assert proc.returncode != 0 and proc.stdout == ""
        assert "(AllocationFailed) Allocation failed: the virtual machine 'refused' cannot run on this host." \
            in proc.stderr
        assert missing in proc.stderr
        assert az(server, "vm", "list", "-g", "rg") == []
        m = mgmt_for(server)
        principals = server.session().get(server.shared + "/v1.0/servicePrincipals", headers={
            "Authorization": f"Bearer {m.credential.get_token('https://graph.microsoft.com/.default').token}"})
        assert principals.status_code == 200
        assert [p["displayName"] for p in principals.json()["value"] if p["displayName"] == "refused"] == []
        assert not (data / "vms").exists() or list((data / "vms").iterdir()) == []
    finally:
        server.stop()
        if how == "not root":
            shutil.rmtree(data.parent, ignore_errors=True)


def test_a_vm_whose_monitor_was_killed_leaves_no_cgroup_behind(tmp_path: Path) -> None:
    """The VM's monitor (the host-side process that made its cgroups, and removes them when the VM powers off)
    killed with SIGKILL: the server removes the cgroups once the VM's processes have left them. On a server of its
    own: the session's server, after a monitor was killed, failed later tests' VMs running Docker Engine (see the
    issue's notes)."""
    import signal
    import time

    from acrlocal.compute import vminit

    acrlocal = AcrLocal(tmp_path / "data")
    acrlocal.log_path = tmp_path / "server.log"
    group = f"cg-{uuid.uuid4().hex[:8]}"
    try:
        acrlocal.start()
        az(acrlocal, "group", "create", "-n", group, "-l", "westus")
        az(acrlocal, "vm", "create", "-g", group, "-n", "vm-c")
        run(acrlocal, group, "vm-c", "true")  # running
        vm_id = az(acrlocal, "vm", "show", "-g", group, "-n", "vm-c", "--query", "vmId")
        name = f"acrlocal-vm-{vm_id.replace('-', '')[:12]}"
        directories = [d for _key, _parent, d in vminit._vm_cgroups(name)]  # the server's cgroup is the test's
        assert any(os.path.isdir(d) for d in directories), directories
        monitors = []
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                cgroups = (entry / "cgroup").read_text()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if any(part.endswith(b"vminit.py") for part in command) and f"/{name}\n" in cgroups and \
                    acrlocal.proc is not None and parent == acrlocal.proc.pid:  # not the VM's PID 1, its child
                monitors.append(int(entry.name))
        assert len(monitors) == 1, monitors
        os.kill(monitors[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(os.path.isdir(d) for d in directories):
            assert time.monotonic() < deadline, [d for d in directories if os.path.isdir(d)]
            time.sleep(0.2)
    finally:
        acrlocal.stop()
