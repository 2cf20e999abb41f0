"""Running things in a VM from tests, the way ``acrlocal ssh vm`` does: the control plane's ``console`` action as
the local administrator, then its WebSocket. Everything a test checks inside a VM (IMDS, Azure's names, the
clients) really runs in the VM's namespaces; nothing reaches a VM's addresses from the host."""

from __future__ import annotations

import asyncio
import json
import shlex
import ssl
import textwrap
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.harness import AcrLocal

ARM_SCOPE = "https://management.azure.com/.default"
VM_API = "2024-07-01"
STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        assert self.code == 0, f"exit {self.code}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        return self


def console_path(server: AcrLocal, vm_id: str, command: str | None, *, token: str | None = None) -> str:
    r = server.session().post(f"{server.shared}{vm_id}/console", params={"api-version": VM_API},
                              json={"command": command} if command is not None else {},
                              headers={"Authorization": f"Bearer {token or server.admin_token(ARM_SCOPE)}"})
    assert r.status_code == 200, r.text
    return str(r.json()["path"])


async def _relay(url: str, ca: str, stdin: bytes, timeout: float) -> Result:
    context = ssl.create_default_context(cafile=ca)
    out, err, code = bytearray(), bytearray(), -1
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context, max_msg_size=0) as ws:
        if stdin:
            await ws.send_bytes(bytes([STDIN]) + stdin)
        await ws.send_bytes(bytes([STDIN]))
        async with asyncio.timeout(timeout):
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel == STDOUT:
                    out += payload
                elif channel == STDERR:
                    err += payload
                elif channel == STATUS:
                    code = int(json.loads(payload)["exit"])
    return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))


def vm_exec(server: AcrLocal, vm_id: str, command: str, *, stdin: str | bytes = b"", token: str | None = None,
            timeout: float = 600) -> Result:
    """``bash -c command`` in the VM as its admin user (``sudo`` for root), standard input given."""
    path = console_path(server, vm_id, command, token=token)
    url = "wss://" + server.shared.split("://", 1)[1] + path
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return asyncio.run(_relay(url, server.ca, data, timeout))


def vm_python(server: AcrLocal, vm_id: str, code: str, *, sudo: bool = False) -> Any:
    """Run Python ``code`` in the VM (``acrlocal-python``: the Python packages of acrlocal's environment, the
    Azure SDKs among them) and parse the JSON it prints last."""
    result = vm_exec(server, vm_id, ("sudo " if sudo else "") + "acrlocal-python",
                     stdin=textwrap.dedent(code)).ok()
    return json.loads(result.stdout.strip().splitlines()[-1])


REQUESTS = """
import json, requests
calls = json.loads({calls!r})
answers = []
for call in calls:
    r = requests.request(call.get("method", "GET"), call["url"], headers=call.get("headers") or {{}}, timeout=30,
                         allow_redirects=False)
    try:
        body = r.json()
    except ValueError:
        body = None
    answers.append({{"status": r.status_code, "headers": dict(r.headers), "text": r.text, "json": body}})
print(json.dumps(answers))
"""


def vm_requests(server: AcrLocal, vm_id: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of ``calls`` (``{"url", "method"?, "headers"?}``) made with ``requests`` inside the VM, in order:
    ``[{"status", "headers", "text", "json"}]``."""
    answers: list[dict[str, Any]] = vm_python(server, vm_id, REQUESTS.format(calls=json.dumps(calls)))
    return answers


def vm_client(server: AcrLocal, vm_id: str, code: str, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a client script (see :mod:`tests.clients`: it ``report``s or ``attempt``s) in the VM, in the
    environment a user's shell there has (``env`` adds variables, as a user would export them)."""
    from tests.clients import PRELUDE

    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
    result = vm_exec(server, vm_id, exports + "acrlocal-python", stdin=PRELUDE + textwrap.dedent(code))
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.code != 0 or not lines:
        raise AssertionError(f"client exited {result.code}:\nstdout: {result.stdout}\nstderr: {result.stderr}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer
