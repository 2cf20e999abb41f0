"""Control-plane writes raced through two replicas over one PostgreSQL database (see :mod:`tests.arm.races`): each
round ends as one of the serial orders, with Azure's answers and no duplicate or orphaned rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.arm import races
from tests.arm.conftest import admin_of, new_principal, subscription_of
from tests.replicas.conftest import Replicas, on, pinned
from tests.table_locks import own_transaction, wait_until, waiters

ROUNDS = 10


@pytest.fixture(scope="module")
def arm(replicas: Replicas) -> races.Through:
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}

    def through(side: int, method: str, path: str, body: Any = None) -> requests.Response:
        return on(shared[side], replicas, side, method, server.shared + path,
                  params={"api-version": races.api_version(path)}, json=body, headers=auth)

    return through


@pytest.fixture(scope="module")
def engine(replicas: Replicas) -> Iterator[sa.Engine]:
    found = replicas.front.database()
    yield found
    found.dispose()


@pytest.fixture(scope="module")
def sub(replicas: Replicas) -> str:
    return subscription_of(replicas.front)


def _group(arm: races.Through, sub: str, name: str) -> str:
    assert arm(0, "PUT", f"/subscriptions/{sub}/resourceGroups/{name}", {"location": "westus"}).status_code \
        in (200, 201)
    return name


def test_a_resource_group_put_through_both_replicas_at_once_is_created_once(
        arm: races.Through, engine: sa.Engine, sub: str) -> None:
    for round_ in range(ROUNDS):
        races.race_group_put(arm, engine, sub, round_)


def test_a_registry_name_put_in_two_groups_through_both_replicas_at_once_is_taken_once(
        arm: races.Through, engine: sa.Engine, sub: str) -> None:
    groups = (_group(arm, sub, "race-names-a"), _group(arm, sub, "race-names-b"))
    for round_ in range(ROUNDS):
        races.race_registry_name(arm, engine, sub, groups, round_)


def test_a_user_assigned_identity_put_through_both_replicas_at_once_has_one_principal(
        arm: races.Through, engine: sa.Engine, sub: str) -> None:
    group = _group(arm, sub, "race-identities")
    for round_ in range(ROUNDS):
        races.race_identity_put(arm, engine, sub, group, round_)


def test_a_role_assignment_put_through_both_replicas_at_once_is_stored_once(
        replicas: Replicas, arm: races.Through, engine: sa.Engine, sub: str) -> None:
    group = _group(arm, sub, "race-assignments")
    principal = new_principal(replicas.front, "race-assignee").object_id
    for round_ in range(ROUNDS):
        races.race_role_assignment(arm, engine, sub, group, principal, round_)


def test_a_group_deleted_through_one_replica_while_resources_are_put_in_it_through_the_other_leaves_nothing(
        arm: races.Through, engine: sa.Engine, sub: str) -> None:
    for round_ in range(ROUNDS):
        races.race_group_delete_with_create_inside(arm, engine, sub, round_)


def test_a_graph_delete_of_a_principal_waits_for_the_arm_write_that_assigns_it_a_role(
        replicas: Replicas, arm: races.Through, engine: sa.Engine, sub: str) -> None:
    """Graph's writes take the control plane's write lock too: an application deleted through one replica while a
    role is being assigned to its service principal through the other ends as the serial order (assigned, then
    deleted with its assignments), never with an assignment left for a principal that is gone.

    The assignment is held at its insert by a lock the test takes on ``arm_role_assignments``; the delete must wait
    for the assignment (the control plane's lock) rather than reach the table beside it."""
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    token = admin_of(server).token(server, "https://graph.microsoft.com/.default")

    def graph(side: int, method: str, path: str, body: Any = None) -> requests.Response:
        return on(shared[side], replicas, side, method, server.shared + path, json=body,
                  headers={"Authorization": f"Bearer {token}"})

    app = graph(0, "POST", "/v1.0/applications", {"displayName": "race-graph-delete"})
    assert app.status_code == 201, app.text
    sp = graph(0, "POST", "/v1.0/servicePrincipals", {"appId": app.json()["appId"]})
    assert sp.status_code == 201, sp.text
    principal = sp.json()["id"]
    group = _group(arm, sub, "race-graph-delete")
    assignment = (f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Authorization/roleAssignments/"
                  f"{uuid.uuid4()}")
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/"
                           f"roleDefinitions/{races.ACR_PULL}", "principalId": principal,
                           "principalType": "ServicePrincipal"}}
    with own_transaction(engine, workers=2) as (holder, pool, watcher):
        holder.execute(sa.text("LOCK TABLE arm_role_assignments IN EXCLUSIVE MODE"))
        put = pool.submit(arm, 0, "PUT", assignment, body)
        wait_until(lambda: waiters(watcher, "arm_role_assignments") > 0, "the assignment's insert", put)
        delete = pool.submit(graph, 1, "DELETE", f"/v1.0/applications/{app.json()['id']}")
        time.sleep(2)  # room for the delete to reach the table, were it not waiting for the assignment
        assert not delete.done(), delete.result().text
        assert waiters(watcher, "arm_role_assignments") == 1, "the delete did not wait for the write"
    assert put.result(timeout=60).status_code == 201, put.result().text
    assert delete.result(timeout=60).status_code == 204, delete.result().text
    assert races.count(engine, "SELECT count(*) FROM arm_role_assignments WHERE principal_id = :p",
                       p=principal.lower()) == 0
    assert races.count(engine, "SELECT count(*) FROM principals WHERE object_id = :p", p=principal.lower()) == 0
