"""Azure's built-in role definitions that acrlocal knows, with their real GUIDs, and look-up by id or name.

The definitions are copied from Azure's published built-in role JSON (actions, notActions, dataActions,
notDataActions, description exactly as Azure lists them). :func:`find_role` resolves what a client may send as
``--role``: a GUID, a role definition resource id at any scope, or a role name in any case (``az`` accepts
``acrpull``). :func:`arm_role_definition` renders the ARM resource that ``GET .../roleDefinitions/{id}`` returns.

Pure data and functions; nothing here touches storage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from acrlocal.rbac.actions import any_matches
from acrlocal.rbac.errors import UnknownRole
from acrlocal.rbac.scopes import Scope, parse_scope

ROLE_DEFINITIONS_TYPE = "Microsoft.Authorization/roleDefinitions"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_ROLE_ID = re.compile(r"/providers/Microsoft\.Authorization/roleDefinitions/([^/]+)/?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Permission:
    """One entry of a role's ``permissions``: what it allows, minus what it excludes.

    ``not_actions`` subtract from ``actions`` of this entry only, never from another role or entry; data actions
    are a separate list (``*`` in ``actions`` grants no data action).
    """

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def allows(self, operation: str, *, data_action: bool = False) -> bool:
        if data_action:
            return any_matches(self.data_actions, operation) and not any_matches(self.not_data_actions, operation)
        return any_matches(self.actions, operation) and not any_matches(self.not_actions, operation)


@dataclass(frozen=True, slots=True)
class RoleDefinition:
    """A role: ``id`` is its lower-case GUID, ``role_type`` is ``BuiltInRole`` or ``CustomRole``."""

    id: str
    role_name: str
    description: str
    permissions: tuple[Permission, ...]
    assignable_scopes: tuple[str, ...] = ("/",)
    role_type: str = "BuiltInRole"

    def allows(self, operation: str, *, data_action: bool = False) -> bool:
        """True if some permission entry of this role grants ``operation``."""
        return any(entry.allows(operation, data_action=data_action) for entry in self.permissions)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a for entry in self.permissions for a in entry.actions)

    @property
    def not_actions(self) -> tuple[str, ...]:
        return tuple(a for entry in self.permissions for a in entry.not_actions)

    @property
    def data_actions(self) -> tuple[str, ...]:
        return tuple(a for entry in self.permissions for a in entry.data_actions)

    @property
    def not_data_actions(self) -> tuple[str, ...]:
        return tuple(a for entry in self.permissions for a in entry.not_data_actions)


def _builtin(
    guid: str,
    name: str,
    description: str,
    *,
    actions: tuple[str, ...] = (),
    not_actions: tuple[str, ...] = (),
    data_actions: tuple[str, ...] = (),
    not_data_actions: tuple[str, ...] = (),
) -> RoleDefinition:
    return RoleDefinition(
        id=guid,
        role_name=name,
        description=description,
        permissions=(Permission(actions, not_actions, data_actions, not_data_actions),),
    )


_ACR = "Microsoft.ContainerRegistry/registries"
_REPO = f"{_ACR}/repositories"

OWNER = _builtin(
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Owner",
    "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
    actions=("*",),
)
CONTRIBUTOR = _builtin(
    "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Contributor",
    "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage "
    "assignments in Azure Blueprints, or share image galleries.",
    actions=("*",),
    not_actions=(
        "Microsoft.Authorization/*/Delete",
        "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
        "Microsoft.Blueprint/blueprintAssignments/write",
        "Microsoft.Blueprint/blueprintAssignments/delete",
        "Microsoft.Compute/galleries/share/action",
        "Microsoft.Purview/consents/write",
        "Microsoft.Purview/consents/delete",
        "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
        "Microsoft.Subscription/cancel/action",
        "Microsoft.Subscription/enable/action",
    ),
)
READER = _builtin(
    "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "Reader",
    "View all resources, but does not allow you to make any changes.",
    actions=("*/read",),
)
USER_ACCESS_ADMINISTRATOR = _builtin(
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "User Access Administrator",
    "Lets you manage user access to Azure resources.",
    actions=("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"),
)
ROLE_BASED_ACCESS_CONTROL_ADMINISTRATOR = _builtin(
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
    "Role Based Access Control Administrator",
    "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to manage "
    "access using other ways, such as Azure Policy.",
    actions=(
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Authorization/roleAssignments/delete",
        "*/read",
        "Microsoft.Support/*",
    ),
)
ACR_PULL = _builtin("7f951dda-4ed3-4680-a7ca-43fe172d538d", "AcrPull", "acr pull", actions=(f"{_ACR}/pull/read",))
ACR_PUSH = _builtin(
    "8311e382-0749-4cb8-b61a-304f252e45ec",
    "AcrPush",
    "acr push",
    actions=(f"{_ACR}/pull/read", f"{_ACR}/push/write"),
)
ACR_DELETE = _builtin(
    "c2f4ef07-c644-48eb-af81-4b1b4947fb11", "AcrDelete", "acr delete", actions=(f"{_ACR}/artifacts/delete",)
)
ACR_IMAGE_SIGNER = _builtin(
    "6cef56e8-d556-48e5-a04f-b8e64114680f",
    "AcrImageSigner",
    "acr image signer",
    actions=(f"{_ACR}/sign/write",),
    data_actions=(f"{_ACR}/trustedCollections/write",),
)
ACR_QUARANTINE_READER = _builtin(
    "cdda3590-29a3-44f6-95f2-9f980659eb04",
    "AcrQuarantineReader",
    "acr quarantine data reader",
    actions=(f"{_ACR}/quarantine/read",),
    data_actions=(f"{_ACR}/quarantinedArtifacts/read",),
)
ACR_QUARANTINE_WRITER = _builtin(
    "c8d4ff99-41c3-41a8-9f60-21dfdad59608",
    "AcrQuarantineWriter",
    "acr quarantine data writer",
    actions=(f"{_ACR}/quarantine/read", f"{_ACR}/quarantine/write"),
    data_actions=(f"{_ACR}/quarantinedArtifacts/read", f"{_ACR}/quarantinedArtifacts/write"),
)
REPOSITORY_READER = _builtin(
    "b93aa761-3e63-49ed-ac28-beffa264f7ac",
    "Container Registry Repository Reader",
    "Allows for read access to Azure Container Registry repositories, but excluding catalog listing.",
    data_actions=(f"{_REPO}/metadata/read", f"{_REPO}/content/read"),
)
REPOSITORY_WRITER = _builtin(
    "2a1e307c-b015-4ebd-883e-5b7698a07328",
    "Container Registry Repository Writer",
    "Allows for read and write access to Azure Container Registry repositories, but excluding catalog listing.",
    data_actions=(
        f"{_REPO}/metadata/read",
        f"{_REPO}/content/read",
        f"{_REPO}/metadata/write",
        f"{_REPO}/content/write",
    ),
)
REPOSITORY_CONTRIBUTOR = _builtin(
    "2efddaa5-3f1f-4df3-97df-af3f13818f4c",
    "Container Registry Repository Contributor",
    "Allows for read, write, and delete access to Azure Container Registry repositories, but excluding catalog "
    "listing.",
    data_actions=(
        f"{_REPO}/metadata/read",
        f"{_REPO}/content/read",
        f"{_REPO}/metadata/write",
        f"{_REPO}/content/write",
        f"{_REPO}/metadata/delete",
        f"{_REPO}/content/delete",
    ),
)
REPOSITORY_CATALOG_LISTER = _builtin(
    "bfdb9389-c9a5-478a-bb2f-ba9ca092c3c7",
    "Container Registry Repository Catalog Lister",
    "Allows for listing all repositories in an Azure Container Registry.",
    data_actions=(f"{_ACR}/catalog/read",),
)
MANAGED_IDENTITY_OPERATOR = _builtin(
    "f1a07417-d97a-45cb-824c-7a7467783830",
    "Managed Identity Operator",
    "Read and Assign User Assigned Identity",
    actions=(
        "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
        "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
        "Microsoft.Authorization/*/read",
        "Microsoft.Insights/alertRules/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.Resources/deployments/*",
        "Microsoft.Support/*",
    ),
)
MANAGED_IDENTITY_CONTRIBUTOR = _builtin(
    "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
    "Managed Identity Contributor",
    "Create, Read, Update, and Delete User Assigned Identity",
    actions=(
        "Microsoft.ManagedIdentity/userAssignedIdentities/read",
        "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
        "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
        "Microsoft.Authorization/*/read",
        "Microsoft.Insights/alertRules/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.Resources/deployments/*",
        "Microsoft.Support/*",
    ),
)
VIRTUAL_MACHINE_CONTRIBUTOR = _builtin(
    "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
    "Virtual Machine Contributor",
    "Lets you manage virtual machines, but not access to them, and not the virtual network or storage account "
    "they're connected to.",
    actions=(
        "Microsoft.Authorization/*/read",
        "Microsoft.Compute/availabilitySets/*",
        "Microsoft.Compute/locations/*",
        "Microsoft.Compute/virtualMachines/*",
        "Microsoft.Compute/virtualMachineScaleSets/*",
        "Microsoft.Compute/cloudServices/*",
        "Microsoft.Compute/disks/write",
        "Microsoft.Compute/disks/read",
        "Microsoft.Compute/disks/delete",
        "Microsoft.Compute/hostgroups/write",
        "Microsoft.Compute/hostgroups/hosts/write",
        "Microsoft.DevTestLab/schedules/*",
        "Microsoft.Insights/alertRules/*",
        "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
        "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
        "Microsoft.Network/loadBalancers/inboundNatPools/join/action",
        "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
        "Microsoft.Network/loadBalancers/probes/join/action",
        "Microsoft.Network/loadBalancers/read",
        "Microsoft.Network/locations/*",
        "Microsoft.Network/networkInterfaces/*",
        "Microsoft.Network/networkSecurityGroups/join/action",
        "Microsoft.Network/networkSecurityGroups/read",
        "Microsoft.Network/publicIPAddresses/join/action",
        "Microsoft.Network/publicIPAddresses/read",
        "Microsoft.Network/virtualNetworks/read",
        "Microsoft.Network/virtualNetworks/subnets/join/action",
        "Microsoft.RecoveryServices/locations/*",
        "Microsoft.RecoveryServices/Vaults/backupFabrics/backupProtectionIntent/write",
        "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/*/read",
        "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/read",
        "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/write",
        "Microsoft.RecoveryServices/Vaults/backupPolicies/read",
        "Microsoft.RecoveryServices/Vaults/backupPolicies/write",
        "Microsoft.RecoveryServices/Vaults/read",
        "Microsoft.RecoveryServices/Vaults/usages/read",
        "Microsoft.RecoveryServices/Vaults/write",
        "Microsoft.ResourceHealth/availabilityStatuses/read",
        "Microsoft.Resources/deployments/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.SerialConsole/serialPorts/connect/action",
        "Microsoft.SqlVirtualMachine/*",
        "Microsoft.Storage/storageAccounts/listKeys/action",
        "Microsoft.Storage/storageAccounts/read",
        "Microsoft.Support/*",
    ),
)

_VM_LOGIN_ACTIONS = (
    "Microsoft.Network/publicIPAddresses/read",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/loadBalancers/read",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Compute/virtualMachines/*/read",
    "Microsoft.HybridCompute/machines/*/read",
    "Microsoft.HybridConnectivity/endpoints/listCredentials/action",
)
VIRTUAL_MACHINE_ADMINISTRATOR_LOGIN = _builtin(
    "1c0163c0-47e6-4577-8991-ea5c82e286e4",
    "Virtual Machine Administrator Login",
    "View Virtual Machines in the portal and login as administrator",
    actions=_VM_LOGIN_ACTIONS,
    data_actions=(
        "Microsoft.Compute/virtualMachines/login/action",
        "Microsoft.Compute/virtualMachines/loginAsAdmin/action",
        "Microsoft.HybridCompute/machines/login/action",
        "Microsoft.HybridCompute/machines/loginAsAdmin/action",
    ),
)
VIRTUAL_MACHINE_USER_LOGIN = _builtin(
    "fb879df8-f326-4884-b1cf-06f3ad86be52",
    "Virtual Machine User Login",
    "View Virtual Machines in the portal and login as a regular user.",
    actions=_VM_LOGIN_ACTIONS,
    data_actions=(
        "Microsoft.Compute/virtualMachines/login/action",
        "Microsoft.HybridCompute/machines/login/action",
    ),
)

#: Every built-in role acrlocal knows, keyed by lower-case GUID.
BUILT_IN_ROLES: Mapping[str, RoleDefinition] = MappingProxyType(
    {
        role.id: role
        for role in (
            OWNER,
            CONTRIBUTOR,
            READER,
            USER_ACCESS_ADMINISTRATOR,
            ROLE_BASED_ACCESS_CONTROL_ADMINISTRATOR,
            ACR_PULL,
            ACR_PUSH,
            ACR_DELETE,
            ACR_IMAGE_SIGNER,
            ACR_QUARANTINE_READER,
            ACR_QUARANTINE_WRITER,
            REPOSITORY_READER,
            REPOSITORY_WRITER,
            REPOSITORY_CONTRIBUTOR,
            REPOSITORY_CATALOG_LISTER,
            MANAGED_IDENTITY_OPERATOR,
            MANAGED_IDENTITY_CONTRIBUTOR,
            VIRTUAL_MACHINE_CONTRIBUTOR,
            VIRTUAL_MACHINE_ADMINISTRATOR_LOGIN,
            VIRTUAL_MACHINE_USER_LOGIN,
        )
    }
)


def role_guid(role_definition_id: str) -> str | None:
    """The lower-case GUID in a role definition reference, or ``None`` if it holds none.

    Accepts a bare GUID or a role definition resource id at any scope
    (``/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}``).
    """
    text = role_definition_id.strip()
    match = _ROLE_ID.search(text)
    if match:
        text = match.group(1)
    return text.lower() if _GUID.match(text) else None


def find_role(
    name_or_id: str, definitions: Mapping[str, RoleDefinition] = BUILT_IN_ROLES
) -> RoleDefinition | None:
    """The role that ``name_or_id`` names: a GUID, a role definition id, or a role name in any case."""
    guid = role_guid(name_or_id)
    if guid is not None:
        return definitions.get(guid)
    wanted = name_or_id.strip().casefold()
    for role in definitions.values():
        if role.role_name.casefold() == wanted:
            return role
    return None


def get_role(name_or_id: str, definitions: Mapping[str, RoleDefinition] = BUILT_IN_ROLES) -> RoleDefinition:
    """Like :func:`find_role`, but raises :class:`~acrlocal.rbac.errors.UnknownRole` if nothing matches."""
    role = find_role(name_or_id, definitions)
    if role is None:
        raise UnknownRole(f"role {name_or_id[:200]!r} does not exist (expected a role name, GUID or definition id)")
    return role


def role_definition_id(guid: str, scope: str | Scope | None = None) -> str:
    """The resource id ARM gives a role definition seen from ``scope``.

    Role definitions are listed under the subscription of the scope they are read at
    (``/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}``), and at the tenant level
    (``/providers/Microsoft.Authorization/roleDefinitions/{guid}``) when the scope has no subscription.
    """
    subscription = parse_scope(scope).subscription_id if scope is not None else None
    prefix = f"/subscriptions/{subscription}" if subscription else ""
    return f"{prefix}/providers/{ROLE_DEFINITIONS_TYPE}/{guid.lower()}"


def arm_role_definition(role: RoleDefinition, scope: str | Scope | None = None) -> dict[str, Any]:
    """The ARM resource for ``role`` read at ``scope`` (see :func:`role_definition_id`)."""
    return {
        "id": role_definition_id(role.id, scope),
        "name": role.id,
        "type": ROLE_DEFINITIONS_TYPE,
        "properties": {
            "roleName": role.role_name,
            "type": role.role_type,
            "description": role.description,
            "assignableScopes": list(role.assignable_scopes),
            "permissions": [
                {
                    "actions": list(entry.actions),
                    "notActions": list(entry.not_actions),
                    "dataActions": list(entry.data_actions),
                    "notDataActions": list(entry.not_data_actions),
                }
                for entry in role.permissions
            ],
            "createdOn": None,
            "updatedOn": None,
            "createdBy": None,
            "updatedBy": None,
        },
    }
