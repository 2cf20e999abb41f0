"""The admin user, anonymous pull and cross-repository mounts, each switched through ARM and checked on the wire."""

from __future__ import annotations

from tests.arm.conftest import Arm
from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient
from tests.tokens.conftest import (
    TokenClient,
    admin_password,
    assign,
    claims,
    make_principal,
    principal_token,
    registry_id,
    registry_properties,
)


def test_admin_user_enabled_disabled_and_regenerated(server: AcrLocal, arm: Arm, tokens: TokenClient) -> None:
    registry_properties(arm, "acrlocal", adminUserEnabled=False)
    r = tokens.basic_token("acrlocal", "whatever", "repository:admin/app:pull")
    assert r.status_code == 401
    registry_properties(arm, "acrlocal", adminUserEnabled=True)
    password = admin_password(arm)
    r = tokens.basic_token("ACRLOCAL", password, "repository:admin/app:pull,push,delete")
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["access"][0]["actions"] == ["pull", "push", "delete"]
    client = RegistryClient(server, credentials=("acrlocal", password))
    assert client.push_image("admin/app", "v1").digest
    assert client.get("/v2/admin/app/manifests/v1").status_code == 200
    # Regenerating the password stops the old one for every new token at once.
    r = arm.call("POST", registry_id(server) + "/regenerateCredential", {"name": "password"},
                 api_version="2023-07-01")
    assert r.status_code == 200
    assert tokens.basic_token("acrlocal", password, "repository:admin/app:pull").status_code == 401
    new = admin_password(arm)
    assert tokens.basic_token("acrlocal", new, "repository:admin/app:pull").status_code == 200
    registry_properties(arm, "acrlocal", adminUserEnabled=False)
    assert tokens.basic_token("acrlocal", new, "repository:admin/app:pull").status_code == 401


def test_anonymous_pull_only_when_enabled_and_never_push(server: AcrLocal, arm: Arm, tokens: TokenClient) -> None:
    admin = RegistryClient(server)
    admin.push_image("public/app", "v1")
    anonymous = RegistryClient(server, credentials=("", ""))
    anonymous.http.auth.username = None  # type: ignore[union-attr]  # no Basic header: an anonymous token
    assert anonymous.get("/v2/public/app/manifests/v1").status_code == 401
    registry_properties(arm, "acrlocal", anonymousPullEnabled=True)
    try:
        anonymous = RegistryClient(server, credentials=("", ""))
        anonymous.http.auth.username = None  # type: ignore[union-attr]
        assert anonymous.get("/v2/public/app/manifests/v1").status_code == 200
        # azure-containerregistry's anonymous form: POST grant_type=password without credentials.
        r = server.session().post(tokens.base + "/oauth2/token", data={
            "grant_type": "password", "service": tokens.login_server, "scope": "repository:public/app:pull,push"})
        assert claims(r.json()["access_token"])["access"] == [
            {"type": "repository", "name": "public/app", "actions": ["pull"]}]
        r = anonymous.post("/v2/public/app/blobs/uploads/")
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert anonymous.get("/v2/_catalog").status_code == 401
    finally:
        registry_properties(arm, "acrlocal", anonymousPullEnabled=False)


REPOSITORY_WRITER = "2a1e307c-b015-4ebd-883e-5b7698a07328"
MINE_ONLY = (
    "((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/write'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/read'}) AND "
    "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/write'})) OR "
    "(@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'mine/'))"
)


def test_mount_from_a_repository_the_caller_cannot_read_is_an_upload(server: AcrLocal, arm: Arm) -> None:
    """In "RBAC registry + ABAC repository permissions" mode a writer of ``mine/*`` asks for pull on
    ``secret/source`` too (as docker and skopeo do before a mount); the grant leaves it out, and the mount becomes
    an ordinary upload session: the blob is not linked, no 201."""
    sub = arm.server.admin_credential()["subscriptionId"]
    group = f"/subscriptions/{sub}/resourceGroups/abac"
    arm.call("PUT", group, {"location": "westus"})
    r = arm.call("PUT", f"{group}/providers/Microsoft.ContainerRegistry/registries/abacmount",
                 {"location": "westus", "sku": {"name": "Standard"},
                  "properties": {"roleAssignmentMode": "AbacRepositoryPermissions"}}, api_version="2023-07-01")
    assert r.status_code in (200, 201), r.text
    rid, login_server = r.json()["id"], r.json()["properties"]["loginServer"]
    tokens = TokenClient(server, login_server)
    owner = tokens.refresh_token(server.admin_token())
    # In ABAC mode Owner reaches no data: the administrator is a Repository Writer everywhere (no condition).
    admin_writer = assign(arm, server.admin_credential()["objectId"], REPOSITORY_WRITER, rid)
    secret = tokens.access_token(owner, "repository:secret/source:pull,push")
    layer = b"a layer only the administrator may read"
    import hashlib
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    r = tokens.v2("POST", f"/v2/secret/source/blobs/uploads/?digest={digest}", secret, data=layer,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert admin_writer

    writer = make_principal(server, "minewriter")
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/"
                                               f"roleDefinitions/{REPOSITORY_WRITER}",
                           "principalId": writer.object_id, "principalType": "ServicePrincipal",
                           "condition": MINE_ONLY, "conditionVersion": "2.0"}}
    import uuid
    r = arm.call("PUT", f"{rid}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", body,
                 api_version="2022-04-01")
    assert r.status_code == 201, r.text
    refresh = tokens.refresh_token(principal_token(server, writer))
    token = tokens.access_token(refresh, "repository:mine/target:pull,push", "repository:secret/source:pull")
    assert claims(token)["access"] == [{"type": "repository", "name": "mine/target", "actions": ["pull", "push"]}]
    r = tokens.v2("POST", f"/v2/mine/target/blobs/uploads/?mount={digest}&from=secret/source", token)
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    assert tokens.v2("HEAD", f"/v2/mine/target/blobs/{digest}", token).status_code == 404
    assert tokens.v2("GET", f"/v2/secret/source/blobs/{digest}", token).status_code == 401
    # The administrator, who may read the source, mounts it.
    both = tokens.access_token(owner, "repository:mine/copy:pull,push", "repository:secret/source:pull")
    r = tokens.v2("POST", f"/v2/mine/copy/blobs/uploads/?mount={digest}&from=secret/source", both)
    assert r.status_code == 201
