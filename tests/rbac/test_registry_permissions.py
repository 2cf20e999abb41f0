"""What each built-in role lets a caller do in a registry's data plane, in both role assignment modes."""

from __future__ import annotations

import pytest

from acrlocal.rbac import InvalidScope, RegistryPermission, RoleAssignment, RoleAssignmentMode, get_role
from acrlocal.rbac import registry_permissions as permissions

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/myreg"
ALICE = "aaaaaaaa-0000-0000-0000-000000000001"

RBAC = RoleAssignmentMode.RBAC
ABAC = RoleAssignmentMode.RBAC_ABAC
P = RegistryPermission
READ = {P.PULL, P.METADATA_READ}
WRITE = {P.PULL, P.METADATA_READ, P.PUSH, P.METADATA_WRITE}
EVERYTHING = set(RegistryPermission)


def assign(role: str, scope: str = REGISTRY, condition: str | None = None) -> RoleAssignment:
    return RoleAssignment(
        id="/assignments/1",
        scope=scope,
        role_definition_id=f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{get_role(role).id}",
        principal_id=ALICE,
        condition=condition,
        condition_version="2.0" if condition else None,
    )


# Expected effect of each role assigned on the registry, per mode, from ACR's role directory.
EXPECTED = [
    ("Owner", EVERYTHING, set()),
    ("Contributor", EVERYTHING, set()),
    ("Reader", READ | {P.CATALOG_LIST}, set()),
    ("AcrPull", READ | {P.CATALOG_LIST}, set()),
    ("AcrPush", WRITE | {P.CATALOG_LIST}, set()),
    ("AcrDelete", {P.DELETE}, set()),
    ("AcrImageSigner", set(), set()),
    ("User Access Administrator", READ | {P.CATALOG_LIST}, set()),
    ("Container Registry Repository Reader", set(), READ),
    ("Container Registry Repository Writer", set(), WRITE),
    ("Container Registry Repository Contributor", set(), WRITE | {P.DELETE}),
    ("Container Registry Repository Catalog Lister", set(), {P.CATALOG_LIST}),
    ("Managed Identity Operator", set(), set()),
]


@pytest.mark.parametrize(("role", "in_rbac", "in_abac"), EXPECTED)
def test_each_role_in_both_modes(role: str, in_rbac: set[RegistryPermission], in_abac: set[RegistryPermission]) -> None:
    for scope in (REGISTRY, RG, f"/subscriptions/{SUB}"):
        assignments = [assign(role, scope)]
        assert permissions(assignments, [ALICE], REGISTRY, repository="app", mode=RBAC) == in_rbac
        assert permissions(assignments, [ALICE], REGISTRY, repository="app", mode=ABAC) == in_abac


def test_mode_may_be_given_as_its_arm_value() -> None:
    assignments = [assign("AcrPull")]
    assert P.PULL in permissions(assignments, [ALICE], REGISTRY, repository="a", mode="LegacyRegistryPermissions")  # type: ignore[arg-type]
    assert not permissions(assignments, [ALICE], REGISTRY, repository="a", mode="AbacRepositoryPermissions")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        permissions(assignments, [ALICE], REGISTRY, repository="a", mode="rbac")  # type: ignore[arg-type]


def test_no_assignments_no_permissions() -> None:
    for mode in RoleAssignmentMode:
        assert permissions([], [ALICE], REGISTRY, repository="app", mode=mode) == frozenset()
        assert permissions([assign("Owner")], ["someone-else"], REGISTRY, repository="app", mode=mode) == frozenset()


def test_assignment_on_another_registry_does_not_count() -> None:
    other = f"{RG}/providers/Microsoft.ContainerRegistry/registries/other"
    for role, mode in (("AcrPush", RBAC), ("Container Registry Repository Writer", ABAC)):
        assert permissions([assign(role, other)], [ALICE], REGISTRY, repository="app", mode=mode) == frozenset()


TEAM1_WRITER = (
    "((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/write'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/read'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/write'})) OR "
    "(@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team1/'))"
)


def test_repository_condition_in_abac_mode() -> None:
    assignments = [assign("Container Registry Repository Writer", condition=TEAM1_WRITER)]
    assert permissions(assignments, [ALICE], REGISTRY, repository="team1/app", mode=ABAC) == WRITE
    assert permissions(assignments, [ALICE], REGISTRY, repository="TEAM1/app", mode=ABAC) == WRITE
    assert permissions(assignments, [ALICE], REGISTRY, repository="team2/app", mode=ABAC) == frozenset()
    assert permissions(assignments, [ALICE], REGISTRY, repository="team1", mode=ABAC) == frozenset()
    # No repository named: only grants that hold for every repository count.
    assert permissions(assignments, [ALICE], REGISTRY, repository=None, mode=ABAC) == frozenset()


def test_condition_guarding_only_reads_leaves_writes_registry_wide() -> None:
    # Azure semantics: a condition restricts only the operations its ActionMatches name.
    reads_only = (
        "((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}))"
        " OR (@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringEquals 'team1/app'))"
    )
    assignments = [assign("Container Registry Repository Writer", condition=reads_only)]
    assert permissions(assignments, [ALICE], REGISTRY, repository="team2/app", mode=ABAC) == WRITE - {P.PULL}


def test_malformed_condition_fails_closed() -> None:
    assignments = [assign("Container Registry Repository Contributor", condition="((ActionMatches{'x'} OR")]
    for repository in ("team1/app", None):
        assert permissions(assignments, [ALICE], REGISTRY, repository=repository, mode=ABAC) == frozenset()


def test_catalog_lister_ignores_the_repository() -> None:
    assignments = [assign("Container Registry Repository Catalog Lister")]
    for repository in ("team1/app", None):
        assert permissions(assignments, [ALICE], REGISTRY, repository=repository, mode=ABAC) == {P.CATALOG_LIST}


def test_roles_combine() -> None:
    assignments = [assign("AcrPull"), assign("AcrDelete", RG)]
    assert permissions(assignments, [ALICE], REGISTRY, repository="a", mode=RBAC) == READ | {P.CATALOG_LIST, P.DELETE}
    assignments = [
        assign("Container Registry Repository Reader", condition=TEAM1_WRITER.replace("team1/", "public/")),
        assign("Container Registry Repository Catalog Lister"),
    ]
    assert permissions(assignments, [ALICE], REGISTRY, repository="public/x", mode=ABAC) == READ | {P.CATALOG_LIST}
    assert permissions(assignments, [ALICE], REGISTRY, repository="private/x", mode=ABAC) == {P.CATALOG_LIST}


def test_registry_must_be_a_registry() -> None:
    with pytest.raises(InvalidScope, match="not a container registry"):
        permissions([], [ALICE], RG, repository=None, mode=RBAC)
    with pytest.raises(InvalidScope):
        permissions([], [ALICE], "myreg", repository=None, mode=RBAC)
