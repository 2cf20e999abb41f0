"""ABAC conditions on the repository name, in the shapes Azure writes for ACR, and what fails closed."""

from __future__ import annotations

import pytest

from acrlocal.rbac import InvalidCondition, parse_condition
from acrlocal.rbac.conditions import MAX_CONDITION_LENGTH

READ = "Microsoft.ContainerRegistry/registries/repositories/content/read"
META_READ = "Microsoft.ContainerRegistry/registries/repositories/metadata/read"
WRITE = "Microsoft.ContainerRegistry/registries/repositories/content/write"
NAME = "@Request[Microsoft.ContainerRegistry/registries/repositories:name]"

# Exactly as the az CLI echoes it back after `az role assignment create --condition ...`.
DOCUMENTED_SINGLE_REPOSITORY = (
    "( (  !(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'})  AND  "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/read'}) ) OR  (  "
    "@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringEqualsIgnoreCase 'nginx' ))"
)
MULTI_LINE_PREFIXES = f"""
(
 (
  !(ActionMatches{{'{READ}'}})
  AND
  !(ActionMatches{{'{META_READ}'}})
 )
 OR
 (
  {NAME} StringStartsWithIgnoreCase 'backend/'
  OR
  {NAME} StringStartsWithIgnoreCase 'frontend/js/'
 )
)
"""


def test_documented_single_repository_condition() -> None:
    condition = parse_condition(DOCUMENTED_SINGLE_REPOSITORY, "2.0")
    assert condition.applies(READ, repository="nginx")
    assert condition.applies(META_READ, repository="NGINX")
    assert not condition.applies(READ, repository="redis")
    assert not condition.applies(READ, repository="nginx2")
    # Operations the condition does not target are left to the role alone.
    assert condition.applies(WRITE, repository="redis")


def test_documented_prefix_condition_over_several_lines() -> None:
    condition = parse_condition(MULTI_LINE_PREFIXES)
    assert condition.applies(READ, repository="backend/nginx")
    assert condition.applies(READ, repository="frontend/js/react")
    assert not condition.applies(READ, repository="backend-infra/k8s")
    assert not condition.applies(READ, repository="frontend/css/x")


def test_brief_shape_with_single_negated_group() -> None:
    condition = parse_condition(f"((!(ActionMatches{{'{READ}'}})) OR ({NAME} StringStartsWithIgnoreCase 'team1/'))")
    assert condition.applies(READ, repository="team1/app")
    assert condition.applies(READ, repository="Team1/App")
    assert not condition.applies(READ, repository="team2/app")


def test_missing_repository_makes_a_comparison_false() -> None:
    condition = parse_condition(f"((!(ActionMatches{{'{READ}'}})) OR ({NAME} StringNotEquals 'secret'))")
    assert condition.applies(READ, repository="public")
    assert not condition.applies(READ, repository="secret")
    assert not condition.applies(READ, repository=None)
    assert condition.applies("Microsoft.ContainerRegistry/registries/catalog/read", repository=None)


@pytest.mark.parametrize(
    ("operator", "value", "matching", "other"),
    [
        ("StringEquals", "team/app", "team/app", "Team/app"),
        ("StringEqualsIgnoreCase", "team/app", "TEAM/APP", "team/app2"),
        ("StringNotEquals", "team/app", "team/other", "team/app"),
        ("StringNotEqualsIgnoreCase", "team/app", "team/other", "TEAM/APP"),
        ("StringStartsWith", "team/", "team/app", "Team/app"),
        ("StringStartsWithIgnoreCase", "team/", "TEAM/app", "teams/app"),
        ("StringNotStartsWith", "team/", "other/app", "team/app"),
        ("StringNotStartsWithIgnoreCase", "team/", "other/app", "TEAM/app"),
        ("StringLike", "team/*/api", "team/x/y/api", "team/api"),
        ("StringLike", "app-?", "app-1", "app-10"),
        ("StringLike", r"lit\*", "lit*", "literal"),
        ("StringLikeIgnoreCase", "TEAM/*", "team/app", "other/app"),
        ("StringNotLike", "team/*", "other/app", "team/app"),
        ("StringNotLikeIgnoreCase", "TEAM/*", "other/app", "team/app"),
    ],
)
def test_string_operators(operator: str, value: str, matching: str, other: str) -> None:
    condition = parse_condition(f"{NAME} {operator} '{value}'")
    assert condition.applies(READ, repository=matching)
    assert not condition.applies(READ, repository=other)


def test_keywords_and_symbols_are_equivalent() -> None:
    words = parse_condition(f"NOT ActionMatches{{'{READ}'}} OR {NAME} StringEquals 'a'")
    symbols = parse_condition(f"!ActionMatches{{'{READ}'}} || {NAME} StringEquals 'a'")
    conjunction = parse_condition(f"{NAME} StringStartsWith 'a' && {NAME} StringNotEquals 'ab'")
    for condition in (words, symbols):
        assert condition.applies(READ, repository="a")
        assert not condition.applies(READ, repository="b")
    assert conjunction.applies(READ, repository="ac")
    assert not conjunction.applies(READ, repository="ab")


def test_action_matches_uses_wildcards() -> None:
    condition = parse_condition(
        f"!(ActionMatches{{'Microsoft.ContainerRegistry/registries/repositories/*'}}) OR {NAME} StringEquals 'a'"
    )
    assert not condition.applies(WRITE, repository="b")
    assert condition.applies("Microsoft.ContainerRegistry/registries/catalog/read")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (f"{NAME} StringEquals 'a' AND {NAME} StringEquals 'b' OR {NAME} StringEquals 'c'", "mixes AND and OR"),
        (f"({NAME} StringEquals 'a'", "expected ')'"),
        (f"{NAME} StringEquals 'a')", "unexpected"),
        (f"{NAME} StringEquals 'unterminated", "unexpected character"),
        (f"{NAME} StringEquals", "quoted string"),
        (f"{NAME} StringEquals {{'a'}}", "quoted string"),
        (f"{NAME} StringEquals {{'a', 'b'}}", "unexpected character"),
        (f"{NAME} ForAnyOfAnyValues:StringEquals 'a'", "not supported"),
        (f"{NAME} NumericEquals '1'", "not supported"),
        ("@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringEquals 'a'", "attribute"),
        ("@Request[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'a'", "attribute"),
        (f"ActionMatches{{'{READ}'}} AND SubOperationMatches{{'x'}}", "SubOperationMatches"),
        ("ActionMatches{''}", "empty ActionMatches"),
        (f"ActionMatches('{READ}')", "expected '{'"),
        ("true", "not supported"),
        (f"{NAME} StringEquals 'a' $", "unexpected character"),
        ("!" * 100 + f"{NAME} StringEquals 'a'", "nests deeper"),
        ("(" * 100 + f"{NAME} StringEquals 'a'" + ")" * 100, "nests deeper"),
        (f"{NAME} StringEquals '{'a' * MAX_CONDITION_LENGTH}'", "longer than"),
    ],
)
def test_unsupported_or_malformed_conditions_are_refused(text: str, problem: str) -> None:
    with pytest.raises(InvalidCondition) as caught:
        parse_condition(text)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_only_version_two_is_understood() -> None:
    assert parse_condition(f"{NAME} StringEquals 'a'", "2.0").applies(READ, repository="a")
    with pytest.raises(InvalidCondition, match=r"version '1\.0'"):
        parse_condition(f"{NAME} StringEquals 'a'", "1.0")
