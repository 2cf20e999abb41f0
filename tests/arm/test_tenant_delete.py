"""Deleting a tenant the server's administrator made: ``POST /providers/Microsoft.AcrLocal/deleteTenant`` with
``{"tenantId": ...}`` and ``acrlocal admin tenant delete --tenant-id ... --yes`` (acrlocal's own, as createTenant is).

Only an administrator of the server's default tenant may (ARM's 403 ``AuthorizationFailed`` for anyone else). As
Azure refuses to delete a directory that still holds things, a tenant holding anything createTenant did not make (a
resource group, a user...) is 409 naming it; the default tenant is 400, an unknown id 404 and a malformed one 400.
Otherwise the tenant goes in one transaction with everything createTenant made and everything derived: no row of
any table names it, its subscription or its administrator afterwards; the administrator's secret gets Entra's
AADSTS90002 and its tokens are refused; the name can be taken again."""

from __future__ import annotations

import json
import uuid
import warnings
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from acrlocal.arm.store import ArmStore, RoleDefinitionStore, StoredAssignment, StoredRoleDefinition
from acrlocal.identity.directory import DefaultTenantKept, Directory, TenantNotEmpty
from tests.arm.conftest import (
    ARM_SCOPE,
    Arm,
    admin_of,
    arm_error,
    subscription_owner,
    tenant_names,
)
from tests.arm.conftest import CREATE_TENANT as CREATE
from tests.arm.conftest import TENANT_API as API
from tests.harness import AcrLocal

DELETE = "/providers/Microsoft.AcrLocal/deleteTenant"
GROUPS_API = "2023-07-01"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def admin_arm(server: AcrLocal) -> Arm:
    return Arm(server, admin_of(server).token(server))


def make_tenant(server: AcrLocal, name: str) -> dict[str, Any]:
    r = admin_arm(server).call("POST", CREATE, {"displayName": name}, api_version=API)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def rows_naming(server: AcrLocal, *values: str) -> dict[str, int]:
    """For every table of the database (reflected: whatever the schema has now), how many rows have a text column
    that contains one of ``values`` (ids, in any case); only tables with such rows are listed."""
    engine = server.database()
    try:
        reflected = sa.MetaData()
        with warnings.catch_warnings():  # SQLite cannot reflect an expression index; its columns are what counts
            warnings.filterwarnings("ignore", message=".*expression-based index.*")
            reflected.reflect(engine)
        found: dict[str, int] = {}
        with engine.connect() as conn:
            for table in reflected.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, sa.String)]
                if not columns:
                    continue
                cond = sa.or_(*(sa.func.lower(c).contains(v.lower()) for c in columns for v in values))
                count = conn.execute(sa.select(sa.func.count()).select_from(table).where(cond)).scalar_one()
                if count:
                    found[table.name] = count
        return found
    finally:
        engine.dispose()


def token_answer(server: AcrLocal, made: dict[str, Any]) -> requests.Response:
    return server.session().post(f"{server.shared}/{made['tenantId']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": made["clientId"], "client_secret": made["clientSecret"],
        "scope": ARM_SCOPE})


def test_the_cli_deletes_a_tenant_and_nothing_of_it_stays(arm_server: AcrLocal) -> None:
    made = json.loads(arm_server.cli("admin", "tenant", "create", "--name", "fabrikam").stdout)
    arm_token = arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"], ARM_SCOPE)
    # Derived rows too: a signing key (its first token made it) and a second client secret, added through Graph.
    graph = Arm(arm_server, arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"],
                                                   GRAPH_SCOPE))
    r = Arm(arm_server, arm_token).call("GET", "/subscriptions", api_version="2022-12-01")
    assert [s["subscriptionId"] for s in r.json()["value"]] == [made["subscriptionId"]], r.text
    r = graph.call("POST", f"/v1.0/servicePrincipals/{made['objectId']}/addPassword",
                   {"passwordCredential": {"displayName": "second"}}, api_version=None)
    assert r.status_code == 200, r.text
    ids = (made["tenantId"], made["subscriptionId"], made["objectId"], made["clientId"])
    before = rows_naming(arm_server, *ids)
    assert {"tenants", "subscriptions", "principals", "principal_secrets", "directory_role_members",
            "arm_role_assignments", "signing_keys"} <= before.keys(), before
    assert before["principal_secrets"] == 2, before

    proc = arm_server.cli("admin", "tenant", "delete", "--tenant-id", made["tenantId"], "--yes")
    assert proc.stdout.strip() == "", proc.stdout

    assert rows_naming(arm_server, *ids) == {}
    r = token_answer(arm_server, made)
    assert r.status_code == 400 and "AADSTS90002" in r.json()["error_description"], r.text
    # A token issued before is refused: the tenant's keys and principal are gone.
    r = Arm(arm_server, arm_token).call("GET", "/subscriptions", api_version="2022-12-01")
    assert r.status_code == 401, r.text
    # The name is free again; the new tenant is another one.
    again = make_tenant(arm_server, "fabrikam")
    assert again["tenantId"] != made["tenantId"]
    assert arm_server.entra_token(again["tenantId"], again["clientId"], again["clientSecret"], ARM_SCOPE)


def test_the_http_action_answers_what_it_deleted(arm_server: AcrLocal) -> None:
    made = make_tenant(arm_server, "tailspin")
    r = admin_arm(arm_server).call("POST", DELETE, {"tenantId": made["tenantId"].upper()}, api_version=API)
    assert r.status_code == 200, r.text
    assert r.json() == {"tenantId": made["tenantId"], "displayName": "tailspin"}
    assert "tailspin" not in tenant_names(arm_server)
    # A second delete of the same id: it is unknown now.
    r = admin_arm(arm_server).call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API)
    arm_error(r, 404, "TenantNotFound")


def test_the_cli_asks_before_it_deletes(arm_server: AcrLocal) -> None:
    made = make_tenant(arm_server, "asked")
    proc = arm_server.cli("admin", "tenant", "delete", "--tenant-id", made["tenantId"], check=False)
    assert proc.returncode != 0 and "--yes" in proc.stderr, proc.stderr
    assert "asked" in tenant_names(arm_server)
    arm_server.cli("admin", "tenant", "delete", "--tenant-id", made["tenantId"], "-y")
    assert "asked" not in tenant_names(arm_server)


def test_only_an_administrator_of_the_default_tenant_may_delete_one(arm_server: AcrLocal) -> None:
    """An Owner of the default subscription is no directory administrator, and a tenant's own Global Administrator
    may not delete its tenant (nor another): 403 before the body is looked at."""
    made = make_tenant(arm_server, "wingtip")
    owner = subscription_owner(arm_server, "owner-not-admin")
    own = arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"], ARM_SCOPE)
    for token in (owner.token(arm_server), own):
        for body in ({"tenantId": made["tenantId"]}, {"tenantId": admin_of(arm_server).tenant_id}, {}):
            r = Arm(arm_server, token).call("POST", DELETE, body, api_version=API)
            error = arm_error(r, 403, "AuthorizationFailed")
            assert "Microsoft.AcrLocal/deleteTenant/action" in error["message"] and "over scope '/'" in \
                error["message"], error
    assert "wingtip" in tenant_names(arm_server)


@pytest.mark.parametrize("body", [
    {}, {"tenantId": None}, {"tenantId": 7}, {"tenantId": ""}, {"tenantId": "contoso"},
    {"tenantId": "0000000-0000-0000-0000-000000000000"}, {"displayName": "contoso"},
], ids=lambda b: json.dumps(b))
def test_a_malformed_tenant_id_is_400(arm_server: AcrLocal, body: dict[str, Any]) -> None:
    before = tenant_names(arm_server)
    r = admin_arm(arm_server).call("POST", DELETE, body, api_version=API)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("InvalidRequestContent", "InvalidTenantId"), r.text
    assert tenant_names(arm_server) == before


def test_an_unknown_tenant_is_404(arm_server: AcrLocal) -> None:
    missing = str(uuid.uuid4())
    error = arm_error(admin_arm(arm_server).call("POST", DELETE, {"tenantId": missing}, api_version=API), 404,
                      "TenantNotFound")
    assert missing in error["message"]
    proc = arm_server.cli("admin", "tenant", "delete", "--tenant-id", missing, "--yes", check=False)
    assert proc.returncode != 0 and "TenantNotFound" in proc.stderr + proc.stdout


def test_the_default_tenant_is_never_deleted(arm_server: AcrLocal) -> None:
    default = admin_of(arm_server).tenant_id
    before = rows_naming(arm_server, default)
    error = arm_error(admin_arm(arm_server).call("POST", DELETE, {"tenantId": default}, api_version=API), 400,
                      "CannotDeleteDefaultTenant")
    assert default in error["message"]
    assert rows_naming(arm_server, default) == before
    assert admin_of(arm_server).token(arm_server)


def test_a_tenant_that_holds_something_is_409_until_it_is_emptied(arm_server: AcrLocal) -> None:
    """A resource group in its subscription and a user in its directory are named; once they are deleted (by the
    tenant's own administrator), the tenant goes."""
    made = make_tenant(arm_server, "northwind")
    own = Arm(arm_server, arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"], ARM_SCOPE))
    graph = Arm(arm_server, arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"],
                                                   GRAPH_SCOPE))
    group = f"/subscriptions/{made['subscriptionId']}/resourceGroups/rg-left"
    r = own.call("PUT", group, {"location": "westeurope"}, api_version=GROUPS_API)
    assert r.status_code == 201, r.text
    r = graph.call("POST", "/v1.0/users", {
        "accountEnabled": True, "displayName": "Left", "mailNickname": "left",
        "userPrincipalName": "left@northwind.localhost", "passwordProfile": {"password": "Str0ng-Passw0rd!"}},
        api_version=None)
    assert r.status_code == 201, r.text
    user = r.json()["id"]

    admin = admin_arm(arm_server)
    error = arm_error(admin.call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API), 409,
                      "TenantNotEmpty")
    assert group in error["message"] and "left@northwind.localhost" in error["message"], error
    proc = arm_server.cli("admin", "tenant", "delete", "--tenant-id", made["tenantId"], "--yes", check=False)
    assert proc.returncode != 0 and "rg-left" in proc.stderr, proc.stderr

    assert own.call("DELETE", group, api_version=GROUPS_API).status_code == 200
    error = arm_error(admin.call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API), 409,
                      "TenantNotEmpty")
    assert group not in error["message"] and "left@northwind.localhost" in error["message"], error
    # Nothing went: the administrator still works.
    assert own.call("GET", f"/subscriptions/{made['subscriptionId']}/resourcegroups",
                    api_version=GROUPS_API).status_code == 200

    r = graph.call("DELETE", f"/v1.0/users/{user}", api_version=None)
    assert r.status_code == 204, r.text
    r = admin.call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API)
    assert r.status_code == 200, r.text
    assert rows_naming(arm_server, made["tenantId"], made["subscriptionId"], made["objectId"], user) == {}


def test_an_application_a_custom_role_or_another_assignment_is_held_too(arm_server: AcrLocal) -> None:
    """Beyond createTenant's Owner assignment, another role assignment of its administrator is named, as are an
    application registration (with its service principal) and a custom role of the tenant."""
    made = make_tenant(arm_server, "adventure")
    graph = Arm(arm_server, arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"],
                                                   GRAPH_SCOPE))
    r = graph.call("POST", "/v1.0/applications", {"displayName": "left-app"}, api_version=None)
    assert r.status_code == 201, r.text
    app = r.json()
    engine = arm_server.database()
    try:
        ArmStore(engine).add_assignment(StoredAssignment(
            "0b6b1ec0-2f4e-4d1f-9c55-9a4ef2d5a003", f"/subscriptions/{made['subscriptionId']}",
            "acdd72a7-3385-48ef-bd42-f606fba81ae7", made["objectId"], "ServicePrincipal"))
        RoleDefinitionStore(engine).put(StoredRoleDefinition(
            "0b6b1ec0-2f4e-4d1f-9c55-9a4ef2d5a004", made["tenantId"], "Left Reader", None,
            [{"actions": ["*/read"]}], [f"/subscriptions/{made['subscriptionId']}"], "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z", None, None))
    finally:
        engine.dispose()
    error = arm_error(admin_arm(arm_server).call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API),
                      409, "TenantNotEmpty")
    assert "left-app" in error["message"] and "0b6b1ec0-2f4e-4d1f-9c55-9a4ef2d5a003" in error["message"] and \
        "Left Reader" in error["message"], error
    assert graph.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 204
    engine = arm_server.database()
    try:
        ArmStore(engine).delete_assignment("0b6b1ec0-2f4e-4d1f-9c55-9a4ef2d5a003")
    finally:
        engine.dispose()
    error = arm_error(admin_arm(arm_server).call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API),
                      409, "TenantNotEmpty")
    assert "custom role 'Left Reader'" in error["message"] and "left-app" not in error["message"], error
    engine = arm_server.database()
    try:
        RoleDefinitionStore(engine).delete("0b6b1ec0-2f4e-4d1f-9c55-9a4ef2d5a004")
    finally:
        engine.dispose()
    r = admin_arm(arm_server).call("POST", DELETE, {"tenantId": made["tenantId"]}, api_version=API)
    assert r.status_code == 200, r.text
    assert rows_naming(arm_server, made["tenantId"], made["subscriptionId"], made["objectId"], app["appId"]) == {}


def test_a_failure_half_way_leaves_everything(arm_server: AcrLocal) -> None:
    """The directory deletes the tenant, its subscription, administrator, secrets, roles and keys in one transaction
    with the caller's own deletes (the control plane's assignments): one failing leaves all of it. The default
    tenant and a tenant that holds something are refused before anything is deleted."""
    made = make_tenant(arm_server, "halfway")
    arm_server.entra_token(made["tenantId"], made["clientId"], made["clientSecret"], ARM_SCOPE)  # a signing key
    ids = (made["tenantId"], made["subscriptionId"], made["objectId"])
    before = rows_naming(arm_server, *ids)
    engine = arm_server.database()
    try:
        directory = Directory(engine)

        def arm_rows(conn: sa.Connection, deleting: Any) -> None:
            ArmStore(engine).delete_tenant_rows_in(conn, deleting)

        def fail(conn: sa.Connection, deleting: Any) -> None:
            arm_rows(conn, deleting)
            raise RuntimeError("the control plane's delete failed")

        with pytest.raises(RuntimeError):
            directory.delete_tenant(made["tenantId"], also=fail)
        assert rows_naming(arm_server, *ids) == before
        with pytest.raises(DefaultTenantKept):
            directory.delete_tenant(admin_of(arm_server).tenant_id)

        groups = [f"resource group 'rg{n}'" for n in range(7)]

        def held(conn: sa.Connection, deleting: Any) -> list[str]:
            return groups

        with pytest.raises(TenantNotEmpty) as refused:
            directory.delete_tenant(made["tenantId"], held=held)
        assert refused.value.held == groups
        assert "'rg4' and more" in str(refused.value) and "rg5" not in str(refused.value)
        assert rows_naming(arm_server, *ids) == before
        directory.delete_tenant(made["tenantId"], also=arm_rows)
        assert rows_naming(arm_server, *ids) == {}
    finally:
        engine.dispose()
