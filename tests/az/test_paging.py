"""ARM lists page with a ``nextLink`` once they are long, and Microsoft's az follows it: resource groups, resources
and role assignments (paged in the database) on a server whose page holds 3 items."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.az.conftest import Az, unique
from tests.harness import AcrLocal, running

PAGE = 3


@pytest.fixture(scope="module")
def az_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("paging") / "data", "--arm-page-size", str(PAGE)) as server:
        yield server


def test_az_follows_next_links(host_az: Az, az_server: AcrLocal) -> None:
    az = host_az
    sub = az_server.admin_credential()["subscriptionId"]
    groups = [unique("rg-page-") for _ in range(PAGE + 2)]
    for name in groups:
        az("group", "create", "-n", name, "-l", "westus")
    assert set(groups) <= set(az("group", "list", "--query", "[].name"))

    rg = groups[0]
    identities = [az("identity", "create", "-g", rg, "-n", unique("id-"))["principalId"] for _ in range(PAGE + 1)]
    assert len(az("identity", "list", "-g", rg)) == PAGE + 1
    scope = f"/subscriptions/{sub}/resourceGroups/{rg}"
    for principal in identities:
        az("role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type",
           "ServicePrincipal", "--role", "Reader", "--scope", scope)
    listed = az("role", "assignment", "list", "--scope", scope, "--query", "[].principalId")
    assert sorted(listed) == sorted(identities)
    everything = az("role", "assignment", "list", "--all", "--query", "[].principalId")
    assert set(identities) <= set(everything) and len(everything) == len(set(everything))

    # On the wire: the first page holds PAGE items and a nextLink to the rest.
    token = az("account", "get-access-token")["accessToken"]
    first = requests.get(f"{az_server.shared}{scope}/providers/Microsoft.Authorization/roleAssignments",
                         params={"api-version": "2022-04-01"}, headers={"Authorization": f"Bearer {token}"},
                         verify=az_server.ca, timeout=30).json()
    assert len(first["value"]) == PAGE and first["nextLink"].startswith(az_server.shared)
    second = requests.get(first["nextLink"], headers={"Authorization": f"Bearer {token}"}, verify=az_server.ca,
                          timeout=30).json()
    assert {a["id"] for a in first["value"]}.isdisjoint({a["id"] for a in second["value"]})
    for name in groups:
        az("group", "delete", "-n", name, "--yes")
