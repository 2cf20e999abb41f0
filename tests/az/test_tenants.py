"""A second tenant with Microsoft's az: the local administrator makes it (``az rest`` on acrlocal's own
``createTenant``, as ``acrlocal admin tenant create`` does), and az signs in to it with the new administrator's
client secret (``az login --service-principal --tenant``) and works in its subscription."""

from __future__ import annotations

import json
from pathlib import Path

from tests.az.conftest import Az, Contained
from tests.harness import AcrLocal


def test_az_signs_in_to_a_new_tenant_and_works_there(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                                     host_az: Az, tmp_path: Path) -> None:
    made = host_az("rest", "--method", "post", "--url",
                   "/providers/Microsoft.AcrLocal/createTenant?api-version=2025-01-01",
                   "--body", json.dumps({"displayName": "fabrikam"}))
    assert made["domain"] == "fabrikam.localhost"

    az = Az(az_exe, az_server, tmp_path / "fabrikam", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    accounts = az("login", "--service-principal", "-u", made["clientId"], "-p", made["clientSecret"], "--tenant",
                  made["tenantId"])
    assert [(a["id"], a["tenantId"]) for a in accounts] == [(made["subscriptionId"], made["tenantId"])]
    group = az("group", "create", "-n", "rg-fabrikam", "-l", "westeurope")
    assert group["id"] == f"/subscriptions/{made['subscriptionId']}/resourceGroups/rg-fabrikam"
    assert az("account", "show")["tenantId"] == made["tenantId"]
    # The default tenant's administrator sees none of it.
    assert made["subscriptionId"] not in [s["id"] for s in host_az("account", "list", "--refresh")]
    # A wrong secret is refused at the new tenant.
    wrong = Az(az_exe, az_server, tmp_path / "wrong", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    wrong.setup()
    wrong.fail("login", "--service-principal", "-u", made["clientId"], "-p", "not-the-secret", "--tenant",
               made["tenantId"])
