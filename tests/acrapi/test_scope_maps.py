"""Scope maps, pure: the action grammar, wildcards, and what a map grants on a repository."""

from __future__ import annotations

import pytest

from acrlocal.registry.scope_maps import (
    SYSTEM_SCOPE_MAPS,
    InvalidScopeMapAction,
    parse_action,
    token_actions,
)


def test_actions_map_to_token_actions() -> None:
    actions = ["repositories/samples/hello/content/read", "repositories/samples/hello/content/write",
               "repositories/samples/hello/metadata/read", "repositories/other/content/delete"]
    assert token_actions(actions, "samples/hello") == {"pull", "push", "metadata_read"}
    assert token_actions(actions, "other") == {"delete"}
    assert token_actions(actions, "samples/hello2") == frozenset()
    assert token_actions(actions, "samples") == frozenset()


def test_wildcards() -> None:
    team = ["repositories/team1/*/content/read"]
    assert token_actions(team, "team1/app") == {"pull"}
    assert token_actions(team, "team1/a/b") == {"pull"}
    assert token_actions(team, "team1") == frozenset()
    assert token_actions(team, "team10/app") == frozenset()
    everything = ["repositories/*/metadata/write"]
    assert token_actions(everything, "any/thing") == {"metadata_write"}


def test_system_scope_maps() -> None:
    assert token_actions(SYSTEM_SCOPE_MAPS["_repositories_pull"][1], "x/y") == {"pull"}
    assert token_actions(SYSTEM_SCOPE_MAPS["_repositories_push"][1], "x") == {"pull", "push"}
    assert token_actions(SYSTEM_SCOPE_MAPS["_repositories_admin"][1], "x") == {
        "pull", "push", "delete", "metadata_read", "metadata_write"}


@pytest.mark.parametrize("text", [
    "repositories/hello/content/admin",
    "repositories/hello/pull",
    "repository/hello/content/read",
    "repositories/Hello/content/read",
    "repositories/a*/content/read",
    "repositories/*/x/content/read",
    "repositories//content/read",
    "repositories/content/read",
    "gateway/connected/config/read",
    "repositories/../content/read",
])
def test_bad_actions_are_refused_with_the_grammar(text: str) -> None:
    with pytest.raises(InvalidScopeMapAction) as caught:
        parse_action(text)
    assert text[:30] in str(caught.value)


def test_unparseable_stored_actions_grant_nothing() -> None:
    assert token_actions(["garbage", "repositories/a/content/read"], "a") == {"pull"}
