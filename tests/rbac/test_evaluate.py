"""``may``: inheritance down scopes, case-insensitivity, notActions, data actions, conditions, fail-closed rows."""

from __future__ import annotations

import itertools

import pytest

from acrlocal.rbac import (
    BUILT_IN_ROLES,
    InvalidOperation,
    InvalidScope,
    Permission,
    RoleAssignment,
    RoleDefinition,
    get_role,
    may,
)

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
OTHER_SUB = "11111111-2222-3333-4444-555555555555"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/myreg"
OTHER_REGISTRY = f"/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.ContainerRegistry/registries/other"
ALICE = "aaaaaaaa-0000-0000-0000-000000000001"
BOB = "bbbbbbbb-0000-0000-0000-000000000002"
GROUP = "cccccccc-0000-0000-0000-000000000003"

PULL = "Microsoft.ContainerRegistry/registries/pull/read"
PUSH = "Microsoft.ContainerRegistry/registries/push/write"
REGISTRY_READ = "Microsoft.ContainerRegistry/registries/read"
ROLE_ASSIGNMENT_WRITE = "Microsoft.Authorization/roleAssignments/write"
CONTENT_READ = "Microsoft.ContainerRegistry/registries/repositories/content/read"

_ids = itertools.count()


def assign(role: str, scope: str, principal: str = ALICE, **extra: str) -> RoleAssignment:
    role_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{get_role(role).id}"
    return RoleAssignment(
        id=f"{scope}/providers/Microsoft.Authorization/roleAssignments/{next(_ids)}",
        scope=scope,
        role_definition_id=role_id,
        principal_id=principal,
        **extra,
    )


@pytest.mark.parametrize("scope", [f"/subscriptions/{SUB}", RG, REGISTRY])
def test_assignment_applies_at_its_scope_and_below(scope: str) -> None:
    assignments = [assign("AcrPull", scope)]
    assert may(assignments, [ALICE], PULL, REGISTRY)
    assert may(assignments, [ALICE], PULL, f"{REGISTRY}/replications/west")


def test_assignment_does_not_apply_above_or_beside_its_scope() -> None:
    assignments = [assign("Reader", REGISTRY)]
    assert may(assignments, [ALICE], REGISTRY_READ, REGISTRY)
    assert not may(assignments, [ALICE], "Microsoft.Resources/subscriptions/resourceGroups/read", RG)
    assert not may(assignments, [ALICE], REGISTRY_READ, OTHER_REGISTRY)
    assert not may(assignments, [ALICE], REGISTRY_READ, REGISTRY.replace(SUB, OTHER_SUB))


def test_only_the_assigned_principals_benefit() -> None:
    assignments = [assign("AcrPull", REGISTRY, principal=BOB), assign("AcrPush", REGISTRY, principal=GROUP)]
    assert not may(assignments, [ALICE], PULL, REGISTRY)
    assert may(assignments, [BOB], PULL, REGISTRY)
    assert not may(assignments, [BOB], PUSH, REGISTRY)
    # Group membership counts: the caller passes its groups' ids along with its own.
    assert may(assignments, [ALICE, GROUP], PUSH, REGISTRY)
    assert not may(assignments, [], PULL, REGISTRY)


def test_case_is_ignored_in_ids_scopes_and_operations() -> None:
    assignment = assign("AcrPull", RG.upper().replace("SUBSCRIPTIONS", "subscriptions"), principal=ALICE.upper())
    assignment = RoleAssignment(
        id=assignment.id,
        scope=assignment.scope,
        role_definition_id=assignment.role_definition_id.upper(),
        principal_id=assignment.principal_id,
    )
    assert may([assignment], [ALICE], PULL.upper(), REGISTRY.lower())


def test_wildcards_grant_whole_families() -> None:
    assert may([assign("Owner", RG)], [ALICE], ROLE_ASSIGNMENT_WRITE, REGISTRY)
    assert may([assign("Reader", RG)], [ALICE], PULL, REGISTRY)
    assert not may([assign("Reader", RG)], [ALICE], PUSH, REGISTRY)


def test_not_actions_subtract_within_the_role() -> None:
    contributor = [assign("Contributor", RG)]
    assert may(contributor, [ALICE], PUSH, REGISTRY)
    assert may(contributor, [ALICE], "Microsoft.ContainerRegistry/registries/delete", REGISTRY)
    assert not may(contributor, [ALICE], ROLE_ASSIGNMENT_WRITE, REGISTRY)
    assert not may(contributor, [ALICE], "microsoft.authorization/roleassignments/delete", REGISTRY)
    assert not may(contributor, [ALICE], "Microsoft.Authorization/elevateAccess/Action", "/")
    assert may(contributor, [ALICE], "Microsoft.Authorization/roleAssignments/read", REGISTRY)


def test_not_actions_never_cross_roles() -> None:
    # Contributor's notActions do not take away what User Access Administrator grants.
    assignments = [assign("Contributor", RG), assign("User Access Administrator", REGISTRY)]
    assert may(assignments, [ALICE], ROLE_ASSIGNMENT_WRITE, REGISTRY)
    assert not may(assignments, [ALICE], ROLE_ASSIGNMENT_WRITE, OTHER_REGISTRY)


def test_data_actions_are_separate_from_actions() -> None:
    owner = [assign("Owner", RG)]
    assert may(owner, [ALICE], PULL, REGISTRY)
    assert not may(owner, [ALICE], CONTENT_READ, REGISTRY, data_action=True)
    repository_reader = [assign("Container Registry Repository Reader", REGISTRY)]
    assert may(repository_reader, [ALICE], CONTENT_READ, REGISTRY, data_action=True)
    assert not may(repository_reader, [ALICE], CONTENT_READ, REGISTRY)
    assert not may(repository_reader, [ALICE], PULL, REGISTRY)


def test_not_data_actions_subtract_data_actions() -> None:
    custom = RoleDefinition(
        id="dddddddd-0000-0000-0000-000000000004",
        role_name="Everything but delete",
        description="custom",
        permissions=(
            Permission(
                data_actions=("Microsoft.ContainerRegistry/registries/repositories/*",),
                not_data_actions=("Microsoft.ContainerRegistry/registries/repositories/*/delete",),
            ),
        ),
        role_type="CustomRole",
    )
    definitions = {**BUILT_IN_ROLES, custom.id: custom}
    assignments = [RoleAssignment("x", REGISTRY, custom.id, ALICE)]
    write = "Microsoft.ContainerRegistry/registries/repositories/content/write"
    delete = "Microsoft.ContainerRegistry/registries/repositories/content/delete"
    assert may(assignments, [ALICE], write, REGISTRY, data_action=True, definitions=definitions)
    assert not may(assignments, [ALICE], delete, REGISTRY, data_action=True, definitions=definitions)
    # Without its definition the same assignment grants nothing.
    assert not may(assignments, [ALICE], write, REGISTRY, data_action=True)


def test_inner_wildcard_grants_managed_identity_assign() -> None:
    identity = f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
    operator = [assign("Managed Identity Operator", RG)]
    assert may(operator, [ALICE], "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", identity)
    assert not may(operator, [ALICE], "Microsoft.ManagedIdentity/userAssignedIdentities/write", identity)
    vm = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm1"
    vm_contributor = [assign("Virtual Machine Contributor", RG)]
    assert may(vm_contributor, [ALICE], "Microsoft.Compute/virtualMachines/write", vm)
    assert not may(vm_contributor, [ALICE], ROLE_ASSIGNMENT_WRITE, vm)


REPOSITORY_CONDITION = (
    "((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'})) OR "
    "(@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team1/'))"
)


def test_condition_limits_the_assignment_to_matching_repositories() -> None:
    assignments = [
        assign(
            "Container Registry Repository Reader",
            REGISTRY,
            condition=REPOSITORY_CONDITION,
            condition_version="2.0",
        )
    ]
    assert may(assignments, [ALICE], CONTENT_READ, REGISTRY, data_action=True, repository="team1/app")
    assert not may(assignments, [ALICE], CONTENT_READ, REGISTRY, data_action=True, repository="team2/app")
    assert not may(assignments, [ALICE], CONTENT_READ, REGISTRY, data_action=True)


def test_a_condition_narrows_only_its_own_assignment() -> None:
    assignments = [
        assign("Container Registry Repository Reader", REGISTRY, condition=REPOSITORY_CONDITION),
        assign("Container Registry Repository Reader", RG, principal=GROUP),
    ]
    assert may(assignments, [ALICE, GROUP], CONTENT_READ, REGISTRY, data_action=True, repository="team2/app")


@pytest.mark.parametrize(
    ("condition", "version"),
    [
        ("((!(ActionMatches{'x'})) OR (@Request[Microsoft.ContainerRegistry/registries/repositories:name]", "2.0"),
        ("@Resource[tags:owner] StringEquals 'alice'", "2.0"),
        (REPOSITORY_CONDITION, "1.0"),
        ("   ", None),
    ],
)
def test_unparseable_condition_grants_nothing(condition: str, version: str | None) -> None:
    role_id = get_role("Container Registry Repository Contributor").id
    assignments = [RoleAssignment("1", REGISTRY, role_id, ALICE, condition=condition, condition_version=version)]
    for repository in ("team1/app", "anything", None):
        assert not may(assignments, [ALICE], CONTENT_READ, REGISTRY, data_action=True, repository=repository)


def test_unknown_or_malformed_rows_grant_nothing_and_do_not_break_others() -> None:
    broken = [
        RoleAssignment("1", REGISTRY, "00000000-0000-0000-0000-000000000000", ALICE),
        RoleAssignment("2", REGISTRY, "/providers/Microsoft.Authorization/roleDefinitions/not-a-guid", ALICE),
        RoleAssignment("3", REGISTRY, "AcrPull", ALICE),  # a name is not a role definition id
        RoleAssignment("4", "not a scope", get_role("Owner").id, ALICE),
    ]
    assert not may(broken, [ALICE], PULL, REGISTRY)
    assert may([*broken, assign("AcrPull", REGISTRY)], [ALICE], PULL, REGISTRY)


def test_bad_questions_are_errors() -> None:
    assignments = [assign("Owner", RG)]
    with pytest.raises(InvalidOperation):
        may(assignments, [ALICE], "", REGISTRY)
    with pytest.raises(InvalidOperation):
        may(assignments, [ALICE], "Microsoft.ContainerRegistry/*", REGISTRY)
    with pytest.raises(InvalidScope):
        may(assignments, [ALICE], PULL, "registries/myreg")
