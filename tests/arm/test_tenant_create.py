"""A second tenant through the API: ``POST /providers/Microsoft.AcrLocal/createTenant`` and ``acrlocal admin tenant
create`` (Azure has no public API that makes a workforce tenant, so the action is acrlocal's own).

One call makes the tenant (domain ``<name>.localhost``), a default subscription and an administrator service
principal with a client secret (Global Administrator of the new directory, Owner of the new subscription), and
answers 201 with the ids and the secret, shown once. Only an administrator of the server's default tenant may call
it (ARM's 403 ``AuthorizationFailed`` for anyone else, an Owner of the default subscription included); a bad name is
400 and a taken one 409, with ARM's error body, and nothing is made."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from acrlocal.arm.store import ArmStore
from acrlocal.errors import AlreadyExists
from acrlocal.identity.directory import GLOBAL_ADMINISTRATOR, Directory
from acrlocal.rbac.roles import OWNER
from tests.arm.conftest import (
    ARM_SCOPE,
    Arm,
    admin_of,
    arm_error,
    subscription_of,
    subscription_owner,
    tenant_names,
)
from tests.arm.conftest import CREATE_TENANT as CREATE
from tests.arm.conftest import TENANT_API as API
from tests.harness import AcrLocal

GROUPS_API = "2023-07-01"


@pytest.fixture(scope="module")
def contoso(arm_server: AcrLocal) -> dict[str, Any]:
    """Tenant ``contoso``, made by the CLI as the local administrator."""
    created: dict[str, Any] = json.loads(arm_server.cli("admin", "tenant", "create", "--name", "contoso").stdout)
    return created


def test_the_cli_makes_a_tenant_whose_administrator_works_in_it(arm_server: AcrLocal, contoso: dict[str, Any]) -> None:
    admin = admin_of(arm_server)
    assert contoso["displayName"] == "contoso" and contoso["domain"] == "contoso.localhost"
    assert contoso["tenantId"] != admin.tenant_id
    assert contoso["subscriptionId"] != subscription_of(arm_server)
    assert contoso["clientId"] and contoso["objectId"] and contoso["clientSecret"]

    token = arm_server.entra_token(contoso["tenantId"], contoso["clientId"], contoso["clientSecret"], ARM_SCOPE)
    arm = Arm(arm_server, token)
    group = f"/subscriptions/{contoso['subscriptionId']}/resourcegroups/rg-contoso"
    r = arm.call("PUT", group, {"location": "westeurope"}, api_version=GROUPS_API)
    assert r.status_code == 201, r.text
    tenants = arm.call("GET", "/tenants", api_version="2022-12-01").json()["value"]
    assert [(t["tenantId"], t["defaultDomain"]) for t in tenants] == [(contoso["tenantId"], "contoso.localhost")]
    subs = arm.call("GET", "/subscriptions", api_version="2022-12-01").json()["value"]
    assert [s["subscriptionId"] for s in subs] == [contoso["subscriptionId"]]
    # Owner of its subscription (it may grant roles there) and Global Administrator of its directory.
    engine = arm_server.database()
    try:
        assert Directory(engine).has_directory_role(contoso["objectId"], GLOBAL_ADMINISTRATOR)
        owners = ArmStore(engine).assignments(scope=f"/subscriptions/{contoso['subscriptionId']}",
                                              principal_ids=[contoso["objectId"]], role_definition=OWNER.id)
        assert len(owners) == 1
    finally:
        engine.dispose()
    # As Global Administrator it makes a person of its tenant through Graph.
    graph = Arm(arm_server, arm_server.entra_token(contoso["tenantId"], contoso["clientId"], contoso["clientSecret"],
                                                   "https://graph.microsoft.com/.default"))
    r = graph.call("POST", "/v1.0/users", {
        "accountEnabled": True, "displayName": "Alice", "mailNickname": "alice",
        "userPrincipalName": "alice@contoso.localhost", "passwordProfile": {"password": "Str0ng-Passw0rd!"}},
        api_version=None)
    assert r.status_code == 201, r.text
    # The secret is shown once and written nowhere else.
    assert contoso["clientSecret"] not in arm_server.log_path.read_text(errors="replace")


def test_the_tenants_stay_apart(arm_server: AcrLocal, contoso: dict[str, Any]) -> None:
    """The default tenant's administrator is refused at the new subscription, and the new one at the default's."""
    a_arm = Arm(arm_server, admin_of(arm_server).token(arm_server))
    r = a_arm.call("GET", f"/subscriptions/{contoso['subscriptionId']}/resourcegroups", api_version=GROUPS_API)
    arm_error(r, 401, "InvalidAuthenticationTokenTenant")
    token = arm_server.entra_token(contoso["tenantId"], contoso["clientId"], contoso["clientSecret"], ARM_SCOPE)
    r = Arm(arm_server, token).call("GET", f"/subscriptions/{subscription_of(arm_server)}/resourcegroups",
                                    api_version=GROUPS_API)
    arm_error(r, 401, "InvalidAuthenticationTokenTenant")
    # The CLI lists only the caller's own tenant, as Azure's /tenants does.
    listed = json.loads(arm_server.cli("admin", "tenant", "list").stdout)
    assert [t["tenantId"] for t in listed] == [admin_of(arm_server).tenant_id]


def test_only_an_administrator_of_the_default_tenant_may_make_one(arm_server: AcrLocal,
                                                                  contoso: dict[str, Any]) -> None:
    """An Owner of the default subscription is no directory administrator; the new tenant's Global Administrator
    administers only its own tenant."""
    owner = subscription_owner(arm_server, "owner-not-admin")
    contoso_token = arm_server.entra_token(contoso["tenantId"], contoso["clientId"], contoso["clientSecret"],
                                           ARM_SCOPE)
    for token in (owner.token(arm_server), contoso_token):
        r = Arm(arm_server, token).call("POST", CREATE, {"displayName": "fabrikam"}, api_version=API)
        error = arm_error(r, 403, "AuthorizationFailed")
        assert "Microsoft.AcrLocal/createTenant/action" in error["message"]
    assert "fabrikam" not in tenant_names(arm_server)


@pytest.mark.parametrize("body", [
    {}, {"displayName": None}, {"displayName": 7}, {"displayName": ""}, {"displayName": "Contoso2"},
    {"displayName": "-edge"}, {"displayName": "edge-"}, {"displayName": "under_score"}, {"displayName": "a.b"},
    {"displayName": "x" * 64}, {"displayName": "spa ce"},
], ids=lambda b: json.dumps(b))
def test_a_bad_name_is_400(arm_server: AcrLocal, body: dict[str, Any]) -> None:
    before = tenant_names(arm_server)
    r = Arm(arm_server, admin_of(arm_server).token(arm_server)).call("POST", CREATE, body, api_version=API)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("InvalidRequestContent", "InvalidTenantName"), r.text
    assert tenant_names(arm_server) == before


@pytest.mark.parametrize("name", ["contoso", "acrlocal"])
def test_a_taken_name_is_409_and_makes_nothing(arm_server: AcrLocal, contoso: dict[str, Any], name: str) -> None:
    before = tenant_names(arm_server)
    r = Arm(arm_server, admin_of(arm_server).token(arm_server)).call("POST", CREATE, {"displayName": name},
                                                                    api_version=API)
    arm_error(r, 409, "Conflict")
    assert tenant_names(arm_server) == before
    proc = arm_server.cli("admin", "tenant", "create", "--name", name, check=False)
    assert proc.returncode != 0 and "Conflict" in proc.stderr + proc.stdout


def test_a_failure_half_way_leaves_nothing(arm_server: AcrLocal) -> None:
    """The directory makes the tenant, subscription, administrator, secret and role in one transaction with the
    caller's own writes (the control plane's Owner assignment): one failing leaves none."""
    engine = arm_server.database()
    try:
        directory = Directory(engine)
        before = (len(directory.tenants()), len(directory.subscriptions()), len(directory.principals()))

        def fail(conn: sa.Connection, made: Any) -> None:
            raise RuntimeError("the Owner assignment failed")

        with pytest.raises(RuntimeError):
            directory.create_tenant_with_administrator("halfway", "halfway-admin", also=fail)
        assert (len(directory.tenants()), len(directory.subscriptions()), len(directory.principals())) == before
        made = directory.create_tenant_with_administrator("halfway", "halfway-admin")
        assert made.tenant.display_name == "halfway" and made.secret
        with pytest.raises(AlreadyExists):
            directory.create_tenant_with_administrator("HalfWay", "halfway-admin")
    finally:
        engine.dispose()
