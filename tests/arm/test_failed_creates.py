"""An ARM create that fails after its type made what the resource stands for leaves nothing behind, so the client's
retry of the same PUT succeeds (ARM's PUT is idempotent). The failure is injected with a trigger that refuses the
one row of the resources table (``tests/db_faults.py``), so the type's work (hosting a registry, making an
identity's principal) has been done when the store write fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.arm.conftest import Arm, new_group, subscription_of
from tests.db_faults import failed, refused
from tests.harness import AcrLocal

ACR = "Microsoft.ContainerRegistry/registries"
UAMI = "Microsoft.ManagedIdentity/userAssignedIdentities"


@pytest.fixture(scope="module")
def group(arm_server: AcrLocal, admin: Arm) -> str:
    return new_group(arm_server, admin, "failedcreates")


@contextmanager
def refused_row(server: AcrLocal, type_key: str, name_key: str, parent_key: str | None = None) -> Iterator[None]:
    """While the block runs, the database refuses to insert the ARM resource row of that type and name (and
    parent)."""
    condition = f"NEW.type_key = '{type_key}' AND NEW.name_key = '{name_key}'"
    if parent_key is not None:
        condition += f" AND NEW.parent_key = '{parent_key}'"
    with refused(server, "arm_resources", "INSERT", condition):
        yield



def test_a_registry_whose_resource_cannot_be_stored_is_not_left_hosted(arm_server: AcrLocal, admin: Arm,
                                                                       group: str) -> None:
    url = f"{group}/providers/{ACR}/failedcreate01"
    body = {"location": "westus", "sku": {"name": "Standard"}}
    with refused_row(arm_server, ACR.lower(), "failedcreate01"):
        failed(admin.call("PUT", url, body))
    assert admin.call("GET", url).status_code == 404
    assert "failedcreate01" not in arm_server.cli("status", "--output", "json").stdout  # not served either
    check = admin.call("POST", f"/subscriptions/{subscription_of(arm_server)}/providers/Microsoft.ContainerRegistry/"
                       "checkNameAvailability", {"name": "failedcreate01", "type": ACR})
    assert check.json()["nameAvailable"] is True, check.text
    retried = admin.call("PUT", url, body)
    assert retried.status_code == 201, retried.text
    assert admin.call("DELETE", url).status_code == 200


def test_a_registry_whose_system_scope_maps_cannot_be_stored_is_not_left_hosted(arm_server: AcrLocal, admin: Arm,
                                                                                 group: str) -> None:
    url = f"{group}/providers/{ACR}/failedcreate02"
    body = {"location": "westus", "sku": {"name": "Standard"}}
    with refused_row(arm_server, f"{ACR}/scopeMaps".lower(), "_repositories_push", url.lower()):
        failed(admin.call("PUT", url, body))
    assert admin.call("GET", url).status_code == 404
    assert admin.call("GET", f"{url}/scopeMaps/_repositories_pull", api_version="2023-01-01-preview"
                      ).status_code == 404  # made before the one refused, and taken back
    assert "failedcreate02" not in arm_server.cli("status", "--output", "json").stdout
    retried = admin.call("PUT", url, body)
    assert retried.status_code == 201, retried.text
    maps = admin.call("GET", f"{url}/scopeMaps", api_version="2023-01-01-preview").json()["value"]
    assert {"_repositories_pull", "_repositories_push"} <= {m["name"] for m in maps}
    assert admin.call("DELETE", url).status_code == 200


def test_an_identity_whose_resource_cannot_be_stored_leaves_no_principal(arm_server: AcrLocal, admin: Arm,
                                                                          group: str) -> None:
    url = f"{group}/providers/{UAMI}/failedidentity"
    with refused_row(arm_server, UAMI.lower(), "failedidentity"):
        failed(admin.call("PUT", url, {"location": "westus"}))
    assert admin.call("GET", url).status_code == 404
    engine = arm_server.database()
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT display_name FROM principals")).scalars().all()
    finally:
        engine.dispose()
    assert "failedidentity" not in names
    retried = admin.call("PUT", url, {"location": "westus"})
    assert retried.status_code == 201, retried.text
    principal = retried.json()["properties"]["principalId"]
    assert admin.call("GET", url).json()["properties"]["principalId"] == principal
    assert admin.call("DELETE", url).status_code == 200
