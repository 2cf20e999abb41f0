"""Built-in role definitions: real GUIDs, look-up by id and name, and the ARM resource shape."""

from __future__ import annotations

import pytest

from acrlocal.errors import NotFound
from acrlocal.rbac import BUILT_IN_ROLES, UnknownRole, arm_role_definition, find_role, get_role, role_guid
from acrlocal.rbac.roles import ACR_PULL, ACR_PUSH, CONTRIBUTOR, OWNER, READER

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
REGISTRY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r"

# The GUIDs Azure publishes for these roles; clients and templates hard-code them.
AZURE_GUIDS = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Role Based Access Control Administrator": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "AcrDelete": "c2f4ef07-c644-48eb-af81-4b1b4947fb11",
    "AcrImageSigner": "6cef56e8-d556-48e5-a04f-b8e64114680f",
    "AcrQuarantineReader": "cdda3590-29a3-44f6-95f2-9f980659eb04",
    "AcrQuarantineWriter": "c8d4ff99-41c3-41a8-9f60-21dfdad59608",
    "Container Registry Repository Reader": "b93aa761-3e63-49ed-ac28-beffa264f7ac",
    "Container Registry Repository Writer": "2a1e307c-b015-4ebd-883e-5b7698a07328",
    "Container Registry Repository Contributor": "2efddaa5-3f1f-4df3-97df-af3f13818f4c",
    "Container Registry Repository Catalog Lister": "bfdb9389-c9a5-478a-bb2f-ba9ca092c3c7",
    "Managed Identity Operator": "f1a07417-d97a-45cb-824c-7a7467783830",
    "Managed Identity Contributor": "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
    "Virtual Machine Contributor": "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
    "Virtual Machine Administrator Login": "1c0163c0-47e6-4577-8991-ea5c82e286e4",
    "Virtual Machine User Login": "fb879df8-f326-4884-b1cf-06f3ad86be52",
}


def test_every_built_in_role_has_its_azure_guid() -> None:
    assert {role.role_name: guid for guid, role in BUILT_IN_ROLES.items()} == AZURE_GUIDS
    for guid, role in BUILT_IN_ROLES.items():
        assert role.id == guid == guid.lower()
        assert role.role_type == "BuiltInRole"
        assert role.assignable_scopes == ("/",)
        assert role.description


def test_acr_role_permissions_as_azure_documents_them() -> None:
    assert ACR_PULL.actions == ("Microsoft.ContainerRegistry/registries/pull/read",)
    assert ACR_PUSH.actions == (
        "Microsoft.ContainerRegistry/registries/pull/read",
        "Microsoft.ContainerRegistry/registries/push/write",
    )
    assert get_role("AcrDelete").actions == ("Microsoft.ContainerRegistry/registries/artifacts/delete",)
    reader = get_role("Container Registry Repository Reader")
    assert reader.actions == () and set(reader.data_actions) == {
        "Microsoft.ContainerRegistry/registries/repositories/metadata/read",
        "Microsoft.ContainerRegistry/registries/repositories/content/read",
    }
    contributor = get_role("Container Registry Repository Contributor")
    assert "Microsoft.ContainerRegistry/registries/repositories/content/delete" in contributor.data_actions
    assert get_role("Container Registry Repository Catalog Lister").data_actions == (
        "Microsoft.ContainerRegistry/registries/catalog/read",
    )
    assert OWNER.actions == ("*",) and OWNER.not_actions == ()
    assert READER.actions == ("*/read",)
    assert CONTRIBUTOR.actions == ("*",)
    assert {"Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write"} <= set(CONTRIBUTOR.not_actions)
    assert "Microsoft.Authorization/elevateAccess/Action" in CONTRIBUTOR.not_actions


@pytest.mark.parametrize("name", ["AcrPull", "acrpull", "ACRPULL", " acrpull "])
def test_find_by_name_ignores_case_like_az(name: str) -> None:
    assert find_role(name) is ACR_PULL


def test_find_by_guid_or_role_definition_id_at_any_scope() -> None:
    guid = AZURE_GUIDS["AcrPush"]
    assert find_role(guid) is ACR_PUSH
    assert find_role(guid.upper()) is ACR_PUSH
    assert find_role(f"/providers/Microsoft.Authorization/roleDefinitions/{guid}") is ACR_PUSH
    assert find_role(f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}") is ACR_PUSH
    assert find_role(f"{REGISTRY}/providers/microsoft.authorization/roledefinitions/{guid.upper()}") is ACR_PUSH


def test_unknown_roles() -> None:
    assert find_role("AcrPuller") is None
    assert find_role("00000000-0000-0000-0000-000000000000") is None
    with pytest.raises(UnknownRole, match="AcrPuller") as caught:
        get_role("AcrPuller")
    assert isinstance(caught.value, NotFound) and isinstance(caught.value, LookupError)


def test_role_guid_extracts_or_refuses() -> None:
    assert role_guid(f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/ABC") is None
    assert role_guid("not a guid") is None
    assert role_guid(AZURE_GUIDS["Reader"].upper()) == AZURE_GUIDS["Reader"]


def test_arm_shape_of_a_role_definition() -> None:
    body = arm_role_definition(ACR_PULL, REGISTRY)
    guid = AZURE_GUIDS["AcrPull"]
    assert body["id"] == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    assert body["name"] == guid
    assert body["type"] == "Microsoft.Authorization/roleDefinitions"
    properties = body["properties"]
    assert properties["roleName"] == "AcrPull"
    assert properties["type"] == "BuiltInRole"
    assert properties["description"] == "acr pull"
    assert properties["assignableScopes"] == ["/"]
    assert properties["permissions"] == [
        {
            "actions": ["Microsoft.ContainerRegistry/registries/pull/read"],
            "notActions": [],
            "dataActions": [],
            "notDataActions": [],
        }
    ]


def test_arm_id_without_a_subscription_is_tenant_level() -> None:
    guid = AZURE_GUIDS["Owner"]
    assert arm_role_definition(OWNER)["id"] == f"/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    assert arm_role_definition(OWNER, "/")["id"] == f"/providers/Microsoft.Authorization/roleDefinitions/{guid}"
