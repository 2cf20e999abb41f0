"""Scope maps and tokens as ARM child resources of a registry, driven with azure-mgmt-containerregistry, and the
hook the token service calls with a token's name and password (checked here against the server's own database,
read-only, exactly as the token service reads it)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import (
    GenerateCredentialsParameters,
    ScopeMap,
    ScopeMapUpdateParameters,
    Token,
    TokenUpdateParameters,
)
from sqlalchemy.engine import Engine

from acrlocal.arm.tokens import RepositoryTokens
from acrlocal.storage.registries import RegistryRecord
from tests.arm.conftest import admin_of, subscription_of
from tests.harness import AcrLocal

GROUP, REGISTRY = "acrlocal", "acrlocal"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}x{datetime.now(UTC).strftime('%H%M%S%f')}"


@pytest.fixture(scope="module")
def acr(acrlocal: AcrLocal) -> ContainerRegistryManagementClient:
    return ContainerRegistryManagementClient(
        admin_of(acrlocal).credential(acrlocal), subscription_of(acrlocal), base_url=acrlocal.shared,
        credential_scopes=["https://management.azure.com/.default"], connection_verify=acrlocal.ca,
        polling_interval=0)


@pytest.fixture(scope="module")
def engine(acrlocal: AcrLocal) -> Iterator[Engine]:
    engine = acrlocal.database()
    yield engine
    engine.dispose()


def record(acr: ContainerRegistryManagementClient) -> RegistryRecord:
    registry = acr.registries.get(GROUP, REGISTRY)
    return RegistryRecord(1, REGISTRY, None, 0.0, {"resourceId": registry.id, "sku": "Standard"})


def create_token(acr: ContainerRegistryManagementClient, actions: list[str]) -> tuple[str, str]:
    scope_map = acr.scope_maps.begin_create(GROUP, REGISTRY, unique("map"), ScopeMap(
        actions=actions, description="test scope map")).result()
    token = acr.tokens.begin_create(GROUP, REGISTRY, unique("tok"), Token(
        scope_map_id=scope_map.id, status="enabled")).result()
    assert token.id is not None and token.name is not None
    return token.id, token.name


def generate(acr: ContainerRegistryManagementClient, token_id: str, **kw: Any) -> dict[str, str]:
    result = acr.registries.begin_generate_credentials(GROUP, REGISTRY, GenerateCredentialsParameters(
        token_id=token_id, **kw)).result()
    return {p.name: p.value for p in result.passwords}


def test_scope_map_and_token_lifecycle(acr: ContainerRegistryManagementClient) -> None:
    name = unique("map")
    created = acr.scope_maps.begin_create(GROUP, REGISTRY, name, ScopeMap(
        actions=["repositories/samples/hello/content/read", "repositories/samples/hello/content/write"],
        description="Sample scope map")).result()
    assert created.properties.type == "UserDefined" and created.provisioning_state == "Succeeded"
    assert created.actions == ["repositories/samples/hello/content/read", "repositories/samples/hello/content/write"]
    listed = {m.name: m for m in acr.scope_maps.list(GROUP, REGISTRY)}
    assert name in listed
    assert {"_repositories_pull", "_repositories_push", "_repositories_admin"} <= set(listed)
    assert listed["_repositories_admin"].properties.type == "SystemDefined"

    token = acr.tokens.begin_create(GROUP, REGISTRY, unique("tok"), Token(scope_map_id=created.id)).result()
    assert token.status == "enabled" and token.scope_map_id == created.id
    assert token.credentials is not None and token.credentials.passwords == []
    result = acr.registries.begin_generate_credentials(GROUP, REGISTRY, GenerateCredentialsParameters(
        token_id=token.id)).result()
    assert result.username == token.name
    assert sorted(p.name for p in result.passwords) == ["password1", "password2"]
    assert all(p.value and len(p.value) >= 40 for p in result.passwords)
    shown = acr.tokens.get(GROUP, REGISTRY, token.name)
    assert sorted(p.name for p in shown.credentials.passwords) == ["password1", "password2"]
    assert all(getattr(p, "value", None) is None for p in shown.credentials.passwords)

    updated = acr.tokens.begin_update(GROUP, REGISTRY, token.name, TokenUpdateParameters(status="disabled")).result()
    assert updated.status == "disabled"
    acr.tokens.begin_delete(GROUP, REGISTRY, token.name).result()
    with pytest.raises(ResourceNotFoundError):
        acr.tokens.get(GROUP, REGISTRY, token.name)
    acr.scope_maps.begin_delete(GROUP, REGISTRY, name).result()


def test_bad_requests_are_arm_errors(acr: ContainerRegistryManagementClient) -> None:
    for actions in (["repositories/x/content/admin"], [], ["repositories/Bad/content/read"]):
        with pytest.raises(HttpResponseError) as caught:
            acr.scope_maps.begin_create(GROUP, REGISTRY, unique("bad"), ScopeMap(actions=actions)).result()
        assert caught.value.status_code == 400
    with pytest.raises(HttpResponseError) as caught:
        acr.scope_maps.begin_create(GROUP, REGISTRY, "_repositories_pull", ScopeMap(
            actions=["repositories/*/content/write"])).result()
    assert caught.value.status_code == 400 and "system defined" in str(caught.value)
    with pytest.raises(HttpResponseError) as caught:
        acr.scope_maps.begin_delete(GROUP, REGISTRY, "_repositories_admin").result()
    assert caught.value.status_code == 400
    registry_id = acr.registries.get(GROUP, REGISTRY).id
    with pytest.raises(HttpResponseError) as caught:
        acr.tokens.begin_create(GROUP, REGISTRY, unique("tok"), Token(
            scope_map_id=f"{registry_id}/scopeMaps/nosuchmap")).result()
    assert caught.value.status_code == 404
    with pytest.raises(HttpResponseError) as caught:
        acr.registries.begin_generate_credentials(GROUP, REGISTRY, GenerateCredentialsParameters(
            token_id=f"{registry_id}/tokens/nosuchtoken")).result()
    assert caught.value.status_code == 404


def test_token_hook_checks_passwords_and_resolves_actions(acr: ContainerRegistryManagementClient,
                                                          engine: Engine) -> None:
    hook = RepositoryTokens(engine)
    reg = record(acr)
    token_id, name = create_token(acr, ["repositories/team1/*/content/read", "repositories/team1/app/content/write",
                                        "repositories/team1/app/metadata/read"])
    passwords = generate(acr, token_id)
    assert hook.check_password(reg, name, passwords["password1"])
    assert hook.check_password(reg, name, passwords["password2"])
    assert not hook.check_password(reg, name, passwords["password1"] + "x")
    assert not hook.check_password(reg, name + "x", passwords["password1"])
    assert set(hook.actions(reg, name, "repository", "team1/app")) == {"pull", "push", "metadata_read"}
    assert set(hook.actions(reg, name, "repository", "team1/other")) == {"pull"}
    assert set(hook.actions(reg, name, "repository", "team2/app")) == set()
    assert set(hook.actions(reg, name, "registry", "catalog")) == set()

    # a regenerated password replaces the old one at once
    fresh = generate(acr, token_id, name="password1")
    assert not hook.check_password(reg, name, passwords["password1"])
    assert hook.check_password(reg, name, fresh["password1"])
    assert hook.check_password(reg, name, passwords["password2"])

    # a disabled token is refused at once, and grants nothing
    acr.tokens.begin_update(GROUP, REGISTRY, name, TokenUpdateParameters(status="disabled")).result()
    assert not hook.check_password(reg, name, fresh["password1"])
    assert set(hook.actions(reg, name, "repository", "team1/app")) == set()
    acr.tokens.begin_update(GROUP, REGISTRY, name, TokenUpdateParameters(status="enabled")).result()
    assert hook.check_password(reg, name, fresh["password1"])

    # a changed scope map changes what the token may do at once
    token = acr.tokens.get(GROUP, REGISTRY, name)
    map_name = token.scope_map_id.rsplit("/", 1)[-1]
    acr.scope_maps.begin_update(GROUP, REGISTRY, map_name, ScopeMapUpdateParameters(
        actions=["repositories/team2/app/content/read"])
                                ).result()
    assert set(hook.actions(reg, name, "repository", "team1/app")) == set()
    assert set(hook.actions(reg, name, "repository", "team2/app")) == {"pull"}

    # a deleted token is gone
    acr.tokens.begin_delete(GROUP, REGISTRY, name).result()
    assert not hook.check_password(reg, name, fresh["password1"])


def test_expired_password_is_refused(acr: ContainerRegistryManagementClient, engine: Engine) -> None:
    hook = RepositoryTokens(engine)
    reg = record(acr)
    token_id, name = create_token(acr, ["repositories/x/content/read"])
    past = datetime.now(UTC) - timedelta(minutes=1)
    future = datetime.now(UTC) + timedelta(days=30)
    expired = generate(acr, token_id, name="password1", expiry=past)
    valid = generate(acr, token_id, name="password2", expiry=future)
    assert not hook.check_password(reg, name, expired["password1"])
    assert hook.check_password(reg, name, valid["password2"])
    shown = {p.name: p for p in acr.tokens.get(GROUP, REGISTRY, name).credentials.passwords}
    assert shown["password2"].expiry is not None and shown["password2"].expiry.year == future.year


def test_new_registry_gets_system_scope_maps_quota_and_cleanup(acr: ContainerRegistryManagementClient,
                                                              acrlocal: AcrLocal) -> None:
    from azure.mgmt.containerregistry.models import Registry, Sku

    from tests.arm.conftest import Arm

    name = unique("quota").replace("x", "")[:40]
    acr.registries.begin_create(GROUP, name, Registry(location="westus", sku=Sku(name="Basic"))).result()
    try:
        maps = {m.name for m in acr.scope_maps.list(GROUP, name)}
        assert {"_repositories_pull", "_repositories_push", "_repositories_admin"} <= maps
        arm = Arm(acrlocal, admin_of(acrlocal).token(acrlocal))
        base = (f"/subscriptions/{subscription_of(acrlocal)}/resourceGroups/{GROUP}/providers/"
                f"Microsoft.ContainerRegistry/registries/{name}/scopeMaps")
        for i in range(100):  # Basic allows 100 user-defined scope maps
            r = arm.call("PUT", f"{base}/map{i:03d}", {"properties": {"actions": ["repositories/a/content/read"]}})
            assert r.status_code == 201, r.text
        r = arm.call("PUT", f"{base}/map100", {"properties": {"actions": ["repositories/a/content/read"]}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "QuotaExceeded"
        r = arm.call("PUT", f"{base}/map000", {"properties": {"actions": ["repositories/b/content/read"]}})
        assert r.status_code == 200  # updating an existing one is not a new one
    finally:
        acr.registries.begin_delete(GROUP, name).result()
    with pytest.raises(ResourceNotFoundError):
        acr.scope_maps.get(GROUP, name, "_repositories_pull")
