"""Control-plane writes raced through two replicas over one PostgreSQL database (see :mod:`tests.arm.races`): each
round ends as one of the serial orders, with Azure's answers and no duplicate or orphaned rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.arm import races
from tests.arm.conftest import admin_of, new_principal, subscription_of
from tests.replicas.conftest import Replicas, on, pinned

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
