"""``POST .../Microsoft.ContainerRegistry/registries/{r}/listAuditEvents``: the registry's audit log over ARM.

Body (all optional): ``table`` (``ContainerRegistryRepositoryEvents``, the default, or
``ContainerRegistryLoginEvents``), ``top`` (1-10,000, default 100), ``since`` (ISO 8601), ``operation``,
``repository``. Answer: ``{"value": [events, newest first]}`` with ACR's column names (``TimeGenerated``,
``LoginServer``, ``OperationName``, ``Identity``, ``Repository``, ``Tag``, ``Digest``, ``CallerIpAddress``,
``ResultType``, ...).
Authorized by the framework as ``Microsoft.ContainerRegistry/registries/listAuditEvents/action`` on the registry
(Owner and Contributor have it). This process's queued events are written first, and with several worker
processes the read waits one batch interval (``AuditLog.interval_s``) for the others' batches: a read sees every
event that happened before it, except that under load another worker's batch of the last moments may come late
and show in the next read (Azure's own audit logs reach Log Analytics minutes late). Bad bodies are ARM 400s.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from acrlocal.arm.errors import invalid_content
from acrlocal.arm.providers import Call, JsonObject
from acrlocal.arm.store import Resource
from acrlocal.errors import NotFound
from acrlocal.registry import audit


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_content(f"'{key}' must be a string.")
    return value


async def list_audit_events(call: Call, registry: Resource) -> JsonObject:
    body = call.body
    table = _text(body, "table") or audit.REPOSITORY_TABLE
    if table not in audit.TABLES:
        raise invalid_content(f"'table' must be one of {', '.join(audit.TABLES)}, not {table[:60]!r}.")
    top = body.get("top", 100)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 10_000:
        raise invalid_content("'top' must be an integer from 1 to 10000.")
    since_text = _text(body, "since")
    since = None
    if since_text is not None:
        try:
            since = datetime.fromisoformat(since_text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise invalid_content(f"'since' value {since_text[:40]!r} is not an ISO 8601 date and time.") from None
    audit_log = call.services.data_plane.audit
    await audit_log.flush()
    if call.services.settings.workers > 1:  # the other processes write their batches within one interval
        await asyncio.sleep(audit_log.interval_s)
    events = await call.run(audit.query, audit_log.engine, registry.name, table, since=since, top=top,
                            operation=_text(body, "operation"), repository=_text(body, "repository"))
    try:
        login_server = call.services.registries.login_server(call.services.registries.get(registry.name))
    except NotFound:
        login_server = registry.name
    for event in events:
        event["LoginServer"] = login_server
    return {"value": events}
