"""The template engine's tests are pure: an :class:`Environment` of fixed facts stands for the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from acrlocal.arm.templates import Deferred

SUB = "00000000-0000-0000-0000-0000000000aa"
TENANT = "00000000-0000-0000-0000-0000000000bb"


class FixedEnvironment:
    """A subscription, a resource group and a table of deployed resources' properties."""

    def __init__(self, group: str | None = "rg1", deployed: dict[str, Any] | None = None,
                 defer: bool = False) -> None:
        self.group = group
        self.deployed = {k.lower(): v for k, v in (deployed or {}).items()}
        self.defer = defer
        self.references: list[str] = []

    def subscription(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{SUB}", "subscriptionId": SUB, "tenantId": TENANT, "displayName": "sub"}

    def resource_group(self) -> dict[str, Any] | None:
        if self.group is None:
            return None
        return {"id": f"/subscriptions/{SUB}/resourceGroups/{self.group}", "name": self.group, "location": "westus",
                "type": "Microsoft.Resources/resourceGroups", "tags": {},
                "properties": {"provisioningState": "Succeeded"}}

    def tenant(self) -> dict[str, Any]:
        return {"tenantId": TENANT}

    def deployment(self) -> dict[str, Any]:
        return {"name": "d1", "properties": {"mode": "Incremental"}}

    def environment(self) -> dict[str, Any]:
        return {"name": "acrlocal", "suffixes": {"acrLoginServer": ".localhost"}}

    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any:
        self.references.append(resource_id)
        if self.defer:
            raise Deferred(resource_id)
        state = self.deployed[resource_id.lower()]
        return state if full else state["properties"]

    def invoke(self, resource_id: str, action: str, api_version: str | None, body: Any) -> Any:
        return {"keys": [{"value": f"key-of-{resource_id.rsplit('/', 1)[-1]}"}], "action": action}

    def now(self) -> datetime:
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
