"""The control plane (ARM and Microsoft Graph) waits for the database off the event loop (PostgreSQL, where a
statement waits for a round trip and, behind a lock, for as long as the lock is held).

Each case holds a lock on the table one request needs and checks that the same (single) server process answers
another request while the first waits behind it (:func:`tests.table_locks.served_while_waiting`); then the lock goes
and the request completes with its usual answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import AcrLocal
from tests.table_locks import BOUND_S, one_process, served_while_waiting

ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
API = {"api-version": "2022-09-01"}


class Context:
    """The server, the administrator's ARM and Graph tokens, its subscription, and a group and an identity made
    before any table is locked."""

    def __init__(self, server: AcrLocal) -> None:
        self.server = server
        admin = json.loads((Path(server.data_dir) / "admin.json").read_text())
        self.subscription = str(admin["subscriptionId"])
        self.arm_token = server.entra_token(admin["tenantId"], admin["clientId"], admin["clientSecret"], ARM_SCOPE)
        self.graph_token = server.entra_token(admin["tenantId"], admin["clientId"], admin["clientSecret"],
                                              GRAPH_SCOPE)
        self.group = f"/subscriptions/{self.subscription}/resourceGroups/offloop"
        made = self.arm("PUT", self.group, {"location": "westus"})
        assert made.status_code in (200, 201), made.text
        self.identity = self.group + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/offloop-id"
        made = self.arm("PUT", self.identity, {"location": "westus"}, api_version="2023-01-31")
        assert made.status_code in (200, 201), made.text

    def arm(self, method: str, path: str, body: Any = None, *, api_version: str = API["api-version"]
            ) -> requests.Response:
        return self.server.session().request(method, self.server.shared + path, params={"api-version": api_version},
                                             json=body, headers={"Authorization": f"Bearer {self.arm_token}"},
                                             timeout=BOUND_S * 2)

    def graph(self, path: str) -> requests.Response:
        return self.server.session().get(f"{self.server.shared}/v1.0{path}", timeout=BOUND_S * 2,
                                         headers={"Authorization": f"Bearer {self.graph_token}"})


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    with one_process(tmp_path_factory.mktemp("arm-sql-off-the-loop") / "data") as server:
        yield Context(server)


Step = Callable[[Context], requests.Response]


def _get_group(c: Context) -> requests.Response:
    return c.arm("GET", c.group)


def _create_group(c: Context) -> requests.Response:
    return c.arm("PUT", f"/subscriptions/{c.subscription}/resourceGroups/offloop-{uuid.uuid4().hex[:8]}",
                 {"location": "westus"})


def _get_resource(c: Context) -> requests.Response:
    return c.arm("GET", c.identity, api_version="2023-01-31")


def _create_registry(c: Context) -> requests.Response:
    return c.arm("PUT", f"{c.group}/providers/Microsoft.ContainerRegistry/registries/offloop{uuid.uuid4().hex[:8]}",
                 {"location": "westus", "sku": {"name": "Standard"}}, api_version="2023-07-01")


def _list_assignments(c: Context) -> requests.Response:
    return c.arm("GET", f"/subscriptions/{c.subscription}/providers/Microsoft.Authorization/roleAssignments")


def _list_subscriptions(c: Context) -> requests.Response:
    return c.arm("GET", "/subscriptions")


@pytest.mark.parametrize(("table", "step", "status"), [
    ("arm_resource_groups", _get_group, 200),  # ArmStore.group, after the caller is authenticated
    ("arm_resource_groups", _create_group, 201),  # ArmStore.group and put_group, under the write lock
    ("arm_resources", _get_resource, 200),  # ArmStore.resource of a provider's type
    ("registries", _create_registry, 201),  # RegistryHosting.create: the registry's row, then its port
    ("arm_role_assignments", _list_assignments, 200),  # the caller's assignments, then the list
    ("principals", _list_subscriptions, 200),  # authenticate: Directory.find_principal of the token's oid
    ("users", lambda c: c.graph("/users"), 200),  # Graph: Directory.users
    ("applications", lambda c: c.graph("/applications"), 200),  # Graph: Directory.applications
], ids=["arm-get-group", "arm-put-group", "arm-get-resource", "arm-put-registry", "arm-role-assignments",
        "arm-authentication", "graph-users", "graph-applications"])
def test_a_request_waiting_for_the_database_leaves_the_loop_serving(
        context: Context, table: str, step: Step, status: int) -> None:
    answer = served_while_waiting(context.server, table, lambda: step(context))
    assert answer.status_code == status, answer.text
