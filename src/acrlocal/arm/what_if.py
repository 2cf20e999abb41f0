"""What-if: what a deployment would change, as ARM's ``whatIf`` answers it (``az deployment group what-if``).

Each resource the template deploys is compared with what exists now: ``Create`` when it does not exist,
``NoChange`` when every property the template sets already has that value, ``Modify`` with the property changes
(``delta``) otherwise. Resources of the group that the template does not name are ``Ignore`` (``Incremental``)
or ``Delete`` (``Complete``). Values the template can only know once it deploys (``reference()`` of a resource
not created yet) are shown as their expressions, as ARM does. Properties the template does not set (read-only
ones such as ``provisioningState``) are not changes.

Inline nested deployments (Bicep modules) are expanded as ARM expands them: their resources' changes are listed
with the others, evaluated at the nested deployment's own target (a resource group the outer template creates
counts as existing, with its planned location). A nested deployment that cannot be evaluated before it runs (a
``templateLink``, a value only deployment makes known) is listed as ``Unsupported`` with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from acrlocal.arm.deployments import MAX_NESTING, DeploymentEnvironment, Request, internal, parse_request
from acrlocal.arm.errors import ArmError
from acrlocal.arm.providers import REGISTRY, Call
from acrlocal.arm.templates import Plan, PlannedResource, TemplateError, prepare
from acrlocal.arm.templates.expressions import is_expression

#: Top-level fields of a resource that what-if compares (the others are identity, not state).
COMPARED = ("location", "tags", "sku", "kind", "identity", "properties", "zones", "plan")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower() if a.startswith("/subscriptions/") else a == b
    return bool(a == b)


def delta(path: str, wanted: Any, current: Any) -> list[dict[str, Any]]:
    """The property changes that take ``current`` to ``wanted``, looking only at what ``wanted`` sets."""
    if isinstance(wanted, dict) and isinstance(current, dict):
        out: list[dict[str, Any]] = []
        lowered = {k.lower(): k for k in current}
        for key, value in wanted.items():
            child = f"{path}.{key}" if path else key
            if key.lower() not in lowered:
                out.append({"path": child, "propertyChangeType": "Create", "after": value})
            else:
                out += delta(child, value, current[lowered[key.lower()]])
        return out
    if isinstance(wanted, list) and isinstance(current, list):
        children: list[dict[str, Any]] = []
        for i, value in enumerate(wanted):
            if i >= len(current):
                children.append({"path": str(i), "propertyChangeType": "Create", "after": value})
            else:
                inner = delta("", value, current[i])
                if inner:
                    children.append({"path": str(i), "propertyChangeType": "Modify", "children": inner}
                                    if isinstance(value, dict | list) else inner[0] | {"path": str(i)})
        for i in range(len(wanted), len(current)):
            children.append({"path": str(i), "propertyChangeType": "Delete", "before": current[i]})
        return [{"path": path, "propertyChangeType": "Array", "children": children}] if children else []
    if isinstance(wanted, str) and is_expression(wanted):
        return [] if current is not None else [{"path": path, "propertyChangeType": "Create", "after": wanted}]
    if _same(wanted, current):
        return []
    return [{"path": path, "propertyChangeType": "Modify", "before": current, "after": wanted}]


def _predicted(plan: Plan, resource: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": resource.id, "name": resource.short_name, "type": resource.type,
            "apiVersion": resource.api_version, **body}


def _planned_groups(plan: Plan, inherited: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The resource groups ``plan`` creates, as a nested deployment's ``resourceGroup()`` will read them."""
    groups = dict(inherited)
    for resource in plan.deployable:
        if resource.type.lower() != "microsoft.resources/resourcegroups":
            continue
        try:
            body = plan.body(resource, keep_unknown=True)
        except TemplateError:
            continue
        groups[resource.key] = {"id": resource.id, "name": resource.short_name,
                                "type": "Microsoft.Resources/resourceGroups", "location": body.get("location"),
                                "tags": body.get("tags") or {}, "properties": {"provisioningState": "Succeeded"}}
    return groups


async def _nested(call: Call, plan: Plan, resource: PlannedResource, result_format: str, depth: int,
                  groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes of an inline nested deployment, at its own target; ``Unsupported`` when it cannot be known."""
    def unsupported(reason: str) -> list[dict[str, Any]]:
        return [{"resourceId": resource.id, "changeType": "Unsupported", "unsupportedReason": reason}]

    if depth >= MAX_NESTING:
        return unsupported(f"Nested deployments go deeper than {MAX_NESTING} levels.")
    try:
        request, nested = await call.run(_nested_plan, call, plan, resource, groups)
    except TemplateError as err:
        return unsupported(err.message)
    except ArmError as err:
        return unsupported(err.message)
    return await changes(call, nested, request.mode, result_format, depth=depth + 1, groups=groups)


def _nested_plan(call: Call, plan: Plan, resource: PlannedResource, groups: dict[str, dict[str, Any]]
                 ) -> tuple[Request, Plan]:
    """The request and the plan of an inline nested deployment; evaluating them reads the store, so this runs in
    the ``SqlThread``."""
    target = resource.nested_target or plan.target
    body = plan.body(resource, keep_unknown=True)
    request = parse_request(body, target.resource_group is None)
    env = DeploymentEnvironment(call, target, resource.short_name, request.mode, datetime.now(UTC),
                                request.template, request.location, what_if=True)
    env.planned_groups = groups
    nested = prepare(request.template, request.parameters, target, env)
    env.plan = nested
    return request, nested


async def changes(call: Call, plan: Plan, mode: str, result_format: str, *, depth: int = 0,
                  groups: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """ARM's ``changes`` list for deploying ``plan`` now (``depth`` > 0: a nested deployment's own resources,
    without the resources of its scope it leaves alone)."""
    full = result_format.lower() != "resourceidonly"
    out: list[dict[str, Any]] = []
    named: set[str] = set()
    groups = await call.run(_planned_groups, plan, groups or {})
    for resource in plan.deployable:
        named.add(resource.key)
        if resource.type.lower() == "microsoft.resources/deployments":
            inner = await _nested(call, plan, resource, result_format, depth, groups)
            named.update(c["resourceId"].lower() for c in inner)
            out += inner
            continue
        try:
            body = await call.run(plan.body, resource, keep_unknown=True)
        except TemplateError:
            body = {}
        status, current = await internal(call, "GET", resource.id, resource.api_version or "2023-01-01")
        if status >= 400:
            current = None
        after = _predicted(plan, resource, body)
        if current is None:
            change: dict[str, Any] = {"resourceId": resource.id, "changeType": "Create"}
            if full:
                change["after"] = after
        else:
            wanted = {k: v for k, v in body.items() if k in COMPARED}
            if "location" in wanted and isinstance(wanted["location"], str):
                wanted["location"] = "".join(wanted["location"].split()).lower()
            differences = delta("", wanted, {k: v for k, v in current.items() if k in COMPARED})
            change = {"resourceId": resource.id, "changeType": "Modify" if differences else "NoChange"}
            if full:
                change.update(before=current, after={**current, **after} if differences else current)
                if differences:
                    change["delta"] = differences
        out.append(change)
    target = plan.target
    if target.resource_group is not None and depth == 0:
        for existing in await call.run(call.store.resources, target.subscription_id, group=target.resource_group,
                                       top_level_only=True):
            if existing.id.lower() in named:
                continue
            change = {"resourceId": existing.id, "changeType": "Delete" if mode == "Complete" else "Ignore"}
            if full:
                rt = REGISTRY.type_of(existing.type)
                change["before"] = await call.run(rt.render, call, existing) if rt else {"id": existing.id}
            out.append(change)
    return out
