"""The primitive an SSH front end uses (``ComputeRuntime.serve_ssh``): one accepted connection served by the
host's ``sshd -i`` inside the VM, with the VM's own host key; Debian's OpenSSH client logs in as the admin user with
a key from the VM's ``osProfile`` (``authorized_keys``), and a key set later replaces it. The server runs in this
process, with a plain TCP listener standing in for the VM's public address."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from acrlocal.config import Settings
from acrlocal.server import Server

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists(),
                                reason="openssh-client and openssh-server are needed")


def keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


async def login(runtime: object, resource_id: str, key: Path) -> tuple[int, str, str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        conn, _ = await loop.sock_accept(listener)
        try:
            await runtime.serve_ssh(resource_id, conn)  # type: ignore[attr-defined]
        finally:
            conn.close()

    served = asyncio.ensure_future(serve())
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-i", str(key), "-p", str(listener.getsockname()[1]), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "azureuser@127.0.0.1", "id -un; hostname; sudo -n true && echo sudo-ok",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    await asyncio.wait_for(served, 30)
    listener.close()
    return proc.returncode or 0, out.decode(), err.decode()


def test_sshd_in_the_vm_logs_the_admin_in_with_its_keys(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first_key, second_key = keypair(first), keypair(second)

    async def scenario() -> None:
        server = Server(Settings(data_dir=tmp_path / "data", port=0, registry_port_base=0))
        ctx = await server.start()
        try:
            runtime = ctx.compute
            assert runtime is not None
            vm_id = (f"/subscriptions/{ctx.admin.subscriptionId}/resourceGroups/rg/providers/Microsoft.Compute/"
                     "virtualMachines/sshvm")
            await runtime.create(vm_id, tenant_id=ctx.admin.tenantId, location="westus", ssh_keys=[first_key])
            code, out, err = await login(runtime, vm_id, first)
            assert code == 0, err
            assert out.splitlines() == ["azureuser", "sshvm", "sudo-ok"]
            await runtime.set_ssh_keys(vm_id, [second_key])
            code, _, _ = await login(runtime, vm_id, first)
            assert code != 0  # the old key is no longer authorized
            code, out, err = await login(runtime, vm_id, second)
            assert code == 0 and out.startswith("azureuser\n"), err
        finally:
            await server.stop()

    asyncio.run(scenario())
