"""Long-running operations as ARM runs them: the request answers 202 at once with ``Azure-AsyncOperation`` and
``Location`` pointing at ``/subscriptions/{sub}/providers/{namespace}/locations/{location}/operations/{id}``,
the work goes on in a task, and that URL answers ``{"status": "InProgress" | "Succeeded" | "Failed", "name",
"startTime", "endTime", "error"}`` (``Retry-After: 1`` while it runs), which azure-core's pollers (and so az)
follow. Only the principal that started an operation can read it; finished ones are forgotten after
:data:`KEEP_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from acrlocal.arm.errors import ArmError
from acrlocal.arm.generic import json
from acrlocal.arm.providers import Call

log = logging.getLogger(__name__)

KEEP_S = 600.0


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


@dataclass
class Operation:
    id: str
    subscription_id: str
    principal: str
    start_time: str = field(default_factory=_stamp)
    end_time: str | None = None
    status: str = "InProgress"
    error: dict[str, Any] | None = None
    finished: float | None = None
    task: asyncio.Task[None] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"startTime": self.start_time, "status": self.status, "name": self.id}
        if self.end_time:
            out["endTime"] = self.end_time
        if self.error:
            out["error"] = self.error
        return out


_OPERATIONS: dict[str, Operation] = {}


def _forget_old() -> None:
    now = time.monotonic()
    for key in [k for k, op in _OPERATIONS.items() if op.finished and now - op.finished > KEEP_S]:
        del _OPERATIONS[key]


def start(call: Call, namespace: str, location: str, work: Callable[[], Awaitable[None]]) -> web.StreamResponse:
    """Run ``work`` as an operation of ``call``'s caller and answer 202 with the headers that poll it. An
    :class:`ArmError` raised by ``work`` ends the operation ``Failed`` with that error."""
    _forget_old()
    sub = call.request.path.split("/")[2]
    op = Operation(str(uuid.uuid4()), sub.lower(), call.caller.object_id)
    _OPERATIONS[op.id] = op

    async def run() -> None:
        try:
            await work()
            op.status = "Succeeded"
        except ArmError as err:
            op.status, op.error = "Failed", err.body()["error"]
        except Exception as exc:  # the operation fails, the server goes on
            log.exception("operation %s failed", op.id)
            op.status, op.error = "Failed", {"code": "InternalOperationError", "message": str(exc)[:500]}
        op.end_time = _stamp()
        op.finished = time.monotonic()

    op.task = asyncio.get_running_loop().create_task(run(), name=f"operation {op.id}")
    host = call.request.headers.get("Host") or f"localhost:{call.services.settings.port}"
    url = f"https://{host}/subscriptions/{sub}/providers/{namespace}/locations/{location}/operations/{op.id}" \
          f"?api-version={call.api_version}"
    return web.Response(status=202, headers={"Azure-AsyncOperation": url, "Location": url + "&monitor=true",
                                             "Retry-After": "1"})


def status(call: Call, subscription_id: str, op_id: str) -> web.StreamResponse:
    op = _OPERATIONS.get(op_id)
    if op is None or op.subscription_id != subscription_id.lower() or op.principal != call.caller.object_id:
        raise ArmError(404, "NotFound", f"The operation '{op_id}' was not found.")
    if op.status == "InProgress":
        response = json(op.body())
        response.headers["Retry-After"] = "1"
        return response
    if call.query.get("monitor") == "true" and op.status == "Succeeded":
        return web.Response(status=200)  # the Location's final answer: the action returns nothing
    return json(op.body())
