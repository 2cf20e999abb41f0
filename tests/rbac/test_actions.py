"""Operation matching: case-insensitive, ``*`` wildcards, and ``/*/`` standing for no segment."""

from __future__ import annotations

import pytest

from acrlocal.rbac import action_matches

PULL = "Microsoft.ContainerRegistry/registries/pull/read"


@pytest.mark.parametrize(
    "pattern",
    [
        PULL,
        PULL.upper(),
        "*",
        "*/read",
        "Microsoft.ContainerRegistry/*",
        "microsoft.containerregistry/*/read",
        "Microsoft.ContainerRegistry/registries/*/read",
        "Microsoft.ContainerRegistry/registries/pull/*",
    ],
)
def test_patterns_that_cover_pull(pattern: str) -> None:
    assert action_matches(pattern, PULL)


@pytest.mark.parametrize(
    "pattern",
    [
        "*/write",
        "Microsoft.ContainerRegistry/registries/push/write",
        "Microsoft.Compute/*",
        "Microsoft.ContainerRegistry/registries/pull",
        "Microsoft.ContainerRegistry/registries/pull/read/more",
        "Microsoft.ContainerRegistry",
        "Microsoft.ContainerRegistry.Extra/*",
    ],
)
def test_patterns_that_do_not_cover_pull(pattern: str) -> None:
    assert not action_matches(pattern, PULL)


def test_regex_characters_in_patterns_are_literal() -> None:
    assert not action_matches("Microsoft.ContainerRegistry/registries/pul./read", PULL)
    assert not action_matches("Microsoft?ContainerRegistry/*", PULL)


def test_inner_wildcard_segment_may_be_empty() -> None:
    # Managed Identity Operator's pattern grants the assign action itself.
    pattern = "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action"
    assert action_matches(pattern, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action")
    assert action_matches(pattern, "Microsoft.ManagedIdentity/userAssignedIdentities/x/assign/action")
    assert not action_matches(pattern, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/read")
