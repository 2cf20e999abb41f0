"""A repository-scoped token end to end: created over ARM (scope map, token, generateCredentials), then used by
real clients with its name and password: it pushes and pulls its repository and is refused on another; disabling
it, or regenerating its password, refuses it at once; the audit log records its logins and never a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.acrapi.conftest import registry_path
from tests.arm.conftest import Arm
from tests.harness import AcrLocal
from tests.interop.tools import Containers, ToolError
from tests.ocitools import config_blob, image, tar_layer, write_layout
from tests.registry.conftest import RegistryClient

API = {"api_version": "2023-07-01"}


def make_token(arm: Arm, server: AcrLocal, name: str, actions: list[str]) -> dict[str, str]:
    base = registry_path(server)
    r = arm.call("PUT", f"{base}/scopeMaps/{name}-scope-map", {"properties": {"actions": actions}})
    assert r.status_code == 201, r.text
    r = arm.call("PUT", f"{base}/tokens/{name}", {"properties": {"scopeMapId": r.json()["id"]}})
    assert r.status_code == 201, r.text
    r = arm.call("POST", f"{base}/generateCredentials", {"tokenId": r.json()["id"]})
    assert r.status_code == 200, r.text
    return {p["name"]: p["value"] for p in r.json()["passwords"]}


def token_request(server: AcrLocal, user: str, password: str, scope: str) -> requests.Response:
    return server.session().get(f"https://{server.login_server()}/oauth2/token", auth=(user, password),
                                params={"service": server.login_server(), "scope": scope})


def granted(response: requests.Response) -> bool:
    return response.status_code in (200, 201, 202)


def test_token_pushes_its_repository_only(arm: Arm, acrlocal: AcrLocal, repo: str) -> None:
    name = "tok" + repo.replace("/", "x").replace("-", "")[:40]
    passwords = make_token(arm, acrlocal, name, [f"repositories/{repo}/content/read",
                                                 f"repositories/{repo}/content/write",
                                                 f"repositories/{repo}/metadata/read"])
    client = RegistryClient(acrlocal, credentials=(name, passwords["password1"]))
    pushed = client.push_image(repo, "v1")
    assert client.get(f"/v2/{repo}/manifests/v1").content == pushed.body
    assert client.get(f"/acr/v1/{repo}/_tags").json()["tags"][0]["name"] == "v1"

    other = repo + "-other"
    assert not granted(client.post(f"/v2/{other}/blobs/uploads/"))
    assert not granted(client.delete(f"/v2/{repo}/manifests/v1"))  # no content/delete
    assert not granted(client.patch(f"/acr/v1/{repo}/_tags/v1", json={"writeEnabled": False}))  # no metadata/write
    assert not granted(client.get("/acr/v1/_catalog"))  # scope maps never grant the catalog

    # the same through the token endpoint, as docker asks: only what the scope map grants is in the token
    r = token_request(acrlocal, name, passwords["password2"], f"repository:{repo}:pull,push,delete")
    assert r.status_code == 200

    # disabled: refused at once; enabled again: accepted
    base = registry_path(acrlocal)
    assert arm.call("PATCH", f"{base}/tokens/{name}", {"properties": {"status": "disabled"}}).status_code == 200
    assert token_request(acrlocal, name, passwords["password1"], f"repository:{repo}:pull").status_code == 401
    assert arm.call("PATCH", f"{base}/tokens/{name}", {"properties": {"status": "enabled"}}).status_code == 200
    assert token_request(acrlocal, name, passwords["password1"], f"repository:{repo}:pull").status_code == 200

    # a regenerated password replaces the old one at once
    r = arm.call("POST", f"{base}/generateCredentials", {"tokenId": f"{base}/tokens/{name}", "name": "password1"})
    fresh = r.json()["passwords"][0]["value"]
    assert token_request(acrlocal, name, passwords["password1"], f"repository:{repo}:pull").status_code == 401
    assert token_request(acrlocal, name, fresh, f"repository:{repo}:pull").status_code == 200

    # the audit log has the token's logins, and none of its secrets
    secrets = [passwords["password1"], passwords["password2"], fresh]
    logins = arm.call("POST", f"{base}/listAuditEvents", {"table": "ContainerRegistryLoginEvents", "top": 10000})
    assert logins.status_code == 200
    mine = [e for e in logins.json()["value"] if e["Identity"] == name]
    assert mine and {e["ResultType"] for e in mine} == {"Success"} and all(e["IdentityType"] == "token" for e in mine)
    refusals = [e for e in logins.json()["value"] if e["ResultType"] == "Failure" and name in str(
        e["ResultDescription"])]
    assert len(refusals) == 2  # disabled, then the replaced password
    repository = arm.call("POST", f"{base}/listAuditEvents", {"repository": repo})
    assert [e["OperationName"] for e in repository.json()["value"] if e["ResultType"] == "Success"][-1] == "Push"
    text = json.dumps(logins.json()) + json.dumps(repository.json()) + acrlocal.log()
    assert not any(s in text for s in secrets)


def test_skopeo_with_token_credentials(arm: Arm, acrlocal: AcrLocal, repo: str, tmp_path: Path) -> None:
    name = "sko" + repo.replace("/", "x").replace("-", "")[:40]
    passwords = make_token(arm, acrlocal, name, [f"repositories/{repo}/*/content/read",
                                                 f"repositories/{repo}/*/content/write"])
    layer = tar_layer({"hello": b"pushed with a scoped token\n"})
    config = config_blob(diff_ids=[layer.digest])
    layout = tmp_path / "layout"
    write_layout(layout, {"v1": image(config, [layer])}, [config, layer])
    creds = f"{name}:{passwords['password1']}"
    with Containers(tmp_path, acrlocal, anonymous=True) as tools:
        def push(target: str) -> Any:
            return tools.skopeo("copy", "--dest-creds", creds, "--dest-cert-dir", str(tools.cert_dir),
                                f"oci:{layout}:v1", f"docker://{tools.ref(target)}:v1")

        push(f"{repo}/app")  # matches repositories/<repo>/*
        with pytest.raises(ToolError):
            push(f"{repo}-elsewhere/app")
        pulled = tmp_path / "pulled"
        tools.skopeo("copy", "--src-creds", creds, "--src-cert-dir", str(tools.cert_dir),
                     "--dest-oci-accept-uncompressed-layers", f"docker://{tools.ref(repo + '/app')}:v1",
                     f"oci:{pulled}:v1")
        assert (pulled / "index.json").exists()
