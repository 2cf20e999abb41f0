"""ARM scope parsing, canonical spelling, case-insensitive identity and inheritance."""

from __future__ import annotations

import pytest

from acrlocal.errors import AcrLocalError
from acrlocal.rbac import InvalidScope, is_at_or_above, normalize_scope, parse_scope, same_scope

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/myreg"


def test_kinds_and_parts() -> None:
    root = parse_scope("/")
    assert root.kind == "root" and root.subscription_id is None and root.parent is None
    sub = parse_scope(f"/subscriptions/{SUB}")
    assert sub.kind == "subscription" and sub.subscription_id == SUB and sub.parent == root
    group = parse_scope(RG)
    assert group.kind == "resourceGroup" and group.resource_group == "rg1" and group.parent == sub
    registry = parse_scope(REGISTRY)
    assert registry.kind == "resource"
    assert registry.resource_type == "Microsoft.ContainerRegistry/registries"
    assert registry.name == "myreg"
    assert registry.parent == group


def test_child_and_extension_resources() -> None:
    child = parse_scope(f"{REGISTRY}/replications/westeurope")
    assert child.resource_type == "Microsoft.ContainerRegistry/registries/replications"
    assert child.name == "westeurope"
    assert child.parent == parse_scope(REGISTRY)
    extension = parse_scope(f"{REGISTRY}/providers/Microsoft.Authorization/roleAssignments/abc")
    assert extension.resource_type == "Microsoft.Authorization/roleAssignments"
    assert extension.parent == parse_scope(REGISTRY)
    subscription_level = parse_scope(f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/x")
    assert subscription_level.resource_group is None
    assert subscription_level.parent == parse_scope(f"/subscriptions/{SUB}")


def test_a_resource_may_be_named_providers() -> None:
    scope = parse_scope(f"{RG}/providers/Microsoft.ContainerRegistry/registries/providers")
    assert scope.name == "providers"
    assert scope.resource_type == "Microsoft.ContainerRegistry/registries"
    assert scope.parent == parse_scope(RG)


def test_canonical_spelling_keeps_names_and_fixes_keywords() -> None:
    text = f"/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/RG1/PROVIDERS/Microsoft.ContainerRegistry/registries/MyReg/"
    assert normalize_scope(text) == (
        f"/subscriptions/{SUB}/resourceGroups/RG1/providers/Microsoft.ContainerRegistry/registries/MyReg"
    )


def test_identity_ignores_case_like_arm() -> None:
    upper = REGISTRY.upper().replace("SUBSCRIPTIONS", "subscriptions")
    assert same_scope(REGISTRY, upper)
    assert parse_scope(REGISTRY) == parse_scope(upper)
    assert hash(parse_scope(REGISTRY)) == hash(parse_scope(upper))
    assert not same_scope(REGISTRY, REGISTRY + "2")


def test_inheritance_goes_down_never_up() -> None:
    repository_child = f"{REGISTRY}/replications/west"
    for ancestor in ("/", f"/subscriptions/{SUB}", RG, REGISTRY):
        assert is_at_or_above(ancestor, REGISTRY)
        assert is_at_or_above(ancestor, repository_child)
    assert is_at_or_above(REGISTRY, REGISTRY)
    assert not is_at_or_above(REGISTRY, RG)
    assert not is_at_or_above(RG, f"/subscriptions/{SUB}")
    assert is_at_or_above(RG.upper().replace("SUBSCRIPTIONS", "subscriptions"), REGISTRY)


def test_inheritance_respects_segment_boundaries() -> None:
    # "rg1" is a prefix of "rg10" as text, but not as a scope.
    assert not is_at_or_above(RG, f"/subscriptions/{SUB}/resourceGroups/rg10")
    assert not is_at_or_above(REGISTRY, REGISTRY + "x")
    other_sub = "11111111-2222-3333-4444-555555555555"
    assert not is_at_or_above(f"/subscriptions/{SUB}", f"/subscriptions/{other_sub}/resourceGroups/rg1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "start with '/'"),
        ("subscriptions/" + SUB, "start with '/'"),
        ("/subscriptions", "subscription id"),
        ("/subscriptions/not-a-guid", "subscription id"),
        (f"/subscriptions/{SUB}//resourceGroups/rg", "empty segment"),
        (f"/subscriptions/{SUB}/resourceGroups", "resource group name"),
        (f"/subscriptions/{SUB}/resourceGroups/bad%name", "resource group name"),
        (f"/subscriptions/{SUB}/resourceGroups/ends.", "resource group name"),
        (f"/subscriptions/{SUB}/resourceGroups/{'r' * 91}", "resource group name"),
        (f"/subscriptions/{SUB}/things/x", "expected 'resourceGroups' or 'providers'"),
        (f"{RG}/providers/Microsoft.ContainerRegistry/registries", "providers/{Namespace}/{type}/{name}"),
        (f"{RG}/providers/NoDot/registries/r", "namespace"),
        (f"{RG}/providers/Microsoft.ContainerRegistry/regis-tries/r", "resource type"),
        (f"{RG}/providers/Microsoft.ContainerRegistry/registries/r?x", "resource name"),
        (f"{REGISTRY}/replications", "has no name"),
        ("/providers/Microsoft.Management/managementGroups/mg", "'/subscriptions/"),
        ("/" + "a" * 3000, "longer than"),
    ],
)
def test_malformed_scopes_raise_value_errors_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidScope) as caught:
        parse_scope(text)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AcrLocalError)


def test_non_string_scope_is_rejected() -> None:
    with pytest.raises(InvalidScope, match="must be a string"):
        parse_scope(42)  # type: ignore[arg-type]
