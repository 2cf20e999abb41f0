"""Rounds of control-plane writes raced through two processes (two replicas over PostgreSQL, or two workers of one
server), each asserted to end as one of the serial orders: the answers are those Azure gives when the two requests
arrive one after the other, in either order, and the database holds what that order leaves (no second row for one
name, no resource or principal left in a deleted group). Every round cleans up after itself.

``arm(side, method, path, body=None)`` sends one ARM request through process ``side`` (0 or 1) as the
administrator and returns the response; the sides swap every round, so each process takes each part.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import requests
import sqlalchemy as sa

from tests.registry.conftest import at_once

Through = Callable[..., requests.Response]

REGISTRIES = "Microsoft.ContainerRegistry/registries"
IDENTITIES = "Microsoft.ManagedIdentity/userAssignedIdentities"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def api_version(path: str) -> str:
    """An ``api-version`` the resource type at ``path`` answers."""
    if "/roleAssignments/" in path:
        return "2022-04-01"
    if IDENTITIES in path:
        return "2023-01-31"
    return "2023-07-01" if REGISTRIES in path else "2022-09-01"


def code(response: requests.Response) -> str:
    """The ARM error code of a response, checking the body is ARM's error JSON."""
    body = response.json()
    assert isinstance(body.get("error"), dict), body
    return str(body["error"]["code"])


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def _sides(round_: int) -> tuple[int, int]:
    return round_ % 2, 1 - round_ % 2


def _statuses(*responses: requests.Response) -> list[tuple[int, str]]:
    return [(r.status_code, r.text[:300]) for r in responses]


def race_group_put(arm: Through, engine: sa.Engine, sub: str, round_: int) -> None:
    """The same resource group PUT through both processes at once: created once (201), the other an update (200)."""
    name = f"race-group-{round_}"
    path = f"/subscriptions/{sub}/resourceGroups/{name}"
    a, b = _sides(round_)
    one, two = at_once(partial(arm, a, "PUT", path, {"location": "westus", "tags": {"by": str(a)}}),
                       partial(arm, b, "PUT", path, {"location": "westus", "tags": {"by": str(b)}}))
    assert sorted([one.status_code, two.status_code]) == [200, 201], _statuses(one, two)
    assert count(engine, "SELECT count(*) FROM arm_resource_groups WHERE subscription_id = :s AND name_key = :n",
                 s=sub.lower(), n=name) == 1
    last = arm(a, "GET", path).json()["tags"]["by"]  # the tags of the update, which came second
    assert last == (str(a) if one.status_code == 200 else str(b))
    assert arm(b, "DELETE", path).status_code == 200


def race_registry_name(arm: Through, engine: sa.Engine, sub: str, groups: tuple[str, str], round_: int) -> None:
    """One registry name PUT in two resource groups through both processes at once: the name is unique across
    Azure, so one is created (201) and the other is 409 ``AlreadyInUse``; one ARM resource, one hosted registry."""
    name = f"racereg{round_}{uuid.uuid4().hex[:6]}"
    paths = [f"/subscriptions/{sub}/resourceGroups/{g}/providers/{REGISTRIES}/{name}" for g in groups]
    body = {"location": "westus", "sku": {"name": "Standard"}}
    a, b = _sides(round_)
    one, two = at_once(partial(arm, a, "PUT", paths[0], body), partial(arm, b, "PUT", paths[1], body))
    assert sorted([one.status_code, two.status_code]) == [201, 409], _statuses(one, two)
    loser = one if one.status_code == 409 else two
    assert code(loser) == "AlreadyInUse", loser.text
    assert count(engine, "SELECT count(*) FROM arm_resources WHERE type_key = :t AND name_key = :n",
                 t=REGISTRIES.lower(), n=name) == 1
    assert count(engine, "SELECT count(*) FROM registries WHERE lower(name) = :n", n=name) == 1
    won = paths[0] if one.status_code == 201 else paths[1]
    assert arm(b, "DELETE", won).status_code == 200
    assert count(engine, "SELECT count(*) FROM registries WHERE lower(name) = :n", n=name) == 0


def race_identity_put(arm: Through, engine: sa.Engine, sub: str, group: str, round_: int) -> None:
    """The same user-assigned identity PUT through both processes at once: one 201 and one 200, naming the same
    service principal, and one principal in the directory."""
    name = f"race-identity-{round_}"
    path = f"/subscriptions/{sub}/resourceGroups/{group}/providers/{IDENTITIES}/{name}"
    a, b = _sides(round_)
    one, two = at_once(partial(arm, a, "PUT", path, {"location": "westus"}),
                       partial(arm, b, "PUT", path, {"location": "westus"}))
    assert sorted([one.status_code, two.status_code]) == [200, 201], _statuses(one, two)
    assert one.json()["properties"]["principalId"] == two.json()["properties"]["principalId"]
    assert count(engine, "SELECT count(*) FROM principals WHERE lower(resource_id) = :r", r=path.lower()) == 1
    assert arm(b, "DELETE", path).status_code == 200
    assert count(engine, "SELECT count(*) FROM principals WHERE lower(resource_id) = :r", r=path.lower()) == 0


def race_role_assignment(arm: Through, engine: sa.Engine, sub: str, group: str, principal: str, round_: int) -> None:
    """A role assignment PUT through both processes at once, under one name (one 201, the other 200 for the same
    assignment) and then under two names for the same principal, role and scope (one 201, the other 409
    ``RoleAssignmentExists``); one row either way."""
    scope = f"/subscriptions/{sub}/resourceGroups/{group}"
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/"
                           f"roleDefinitions/{ACR_PULL}", "principalId": principal,
                           "principalType": "ServicePrincipal"}}
    a, b = _sides(round_)

    def rows() -> int:
        return count(engine, "SELECT count(*) FROM arm_role_assignments WHERE scope_key = :s AND principal_id = :p "
                     "AND role_definition = :r", s=scope.lower(), p=principal.lower(), r=ACR_PULL)

    same = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    one, two = at_once(partial(arm, a, "PUT", same, body), partial(arm, b, "PUT", same, body))
    assert sorted([one.status_code, two.status_code]) == [200, 201], _statuses(one, two)
    assert rows() == 1
    assert arm(a, "DELETE", same).status_code == 200
    names = [f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}" for _ in range(2)]
    one, two = at_once(partial(arm, a, "PUT", names[0], body), partial(arm, b, "PUT", names[1], body))
    assert sorted([one.status_code, two.status_code]) == [201, 409], _statuses(one, two)
    assert code(one if one.status_code == 409 else two) == "RoleAssignmentExists"
    assert rows() == 1
    assert arm(b, "DELETE", names[0] if one.status_code == 201 else names[1]).status_code == 200
    assert rows() == 0


def race_group_delete_with_create_inside(arm: Through, engine: sa.Engine, sub: str, round_: int) -> None:
    """A resource group's DELETE through one process while a resource is PUT in it through the other (a registry,
    or every other round a user-assigned identity): the delete succeeds, and the PUT either came first (201, and
    the delete took it) or after (404 ``ResourceGroupNotFound``). Nothing of the group is left: no resource, no
    hosted registry, no identity's principal, no role assignment."""
    group = f"race-cascade-{round_}"
    scope = f"/subscriptions/{sub}/resourceGroups/{group}"
    assert arm(0, "PUT", scope, {"location": "westus"}).status_code == 201
    registry = f"racecascade{round_}{uuid.uuid4().hex[:6]}"
    identity = f"{scope}/providers/{IDENTITIES}/race-cascade"
    path, body = ((f"{scope}/providers/{REGISTRIES}/{registry}", {"location": "westus", "sku": {"name": "Basic"}})
                  if round_ // 2 % 2 == 0 else (identity, {"location": "westus"}))
    a, b = _sides(round_)
    deleted, put = at_once(partial(arm, a, "DELETE", scope), partial(arm, b, "PUT", path, body))
    assert deleted.status_code == 200, deleted.text
    assert put.status_code in (201, 404), _statuses(put)
    if put.status_code == 404:
        assert code(put) == "ResourceGroupNotFound", put.text
    assert arm(a, "GET", scope).status_code == 404
    assert count(engine, "SELECT count(*) FROM arm_resources WHERE subscription_id = :s AND group_key = :g",
                 s=sub.lower(), g=group) == 0
    assert count(engine, "SELECT count(*) FROM registries WHERE lower(name) = :n", n=registry) == 0
    assert count(engine, "SELECT count(*) FROM principals WHERE lower(resource_id) = :r", r=identity.lower()) == 0
    assert count(engine, "SELECT count(*) FROM arm_role_assignments WHERE scope_key = :s OR scope_key LIKE :below",
                 s=scope.lower(), below=scope.lower() + "/%") == 0
