"""Locks (changeable attributes) set the way ``az acr repository update`` sets them (PATCH on ``/acr/v1``) and
enforced on the data plane with ACR's ``405 REGISTRY_DISALLOWED_OPERATION``; listings hide what is not listable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AcrLocal
from tests.interop.tools import Containers, ToolError
from tests.ocitools import Manifest, config_blob, image, index, tar_layer, write_layout
from tests.registry.conftest import RegistryClient, error_code

DISALLOWED = "REGISTRY_DISALLOWED_OPERATION"


def patch(registry: RegistryClient, path: str, **attributes: bool) -> dict[str, Any]:
    r = registry.patch(path, json=attributes)
    assert r.status_code == 200, r.text
    return dict(r.json())


def config_of(manifest: Manifest) -> str:
    return str(json.loads(manifest.body)["config"]["digest"])


def refused(response: Any) -> bool:
    if response.status_code != 405 or error_code(response) != DISALLOWED:
        return False
    return "The operation is disallowed on this registry, repository or image." in response.json()["errors"][0][
        "message"]


def test_write_locked_tag_refuses_overwrite_and_delete(registry: RegistryClient, repo: str) -> None:
    first = registry.push_image(repo, "v1")
    body = patch(registry, f"/acr/v1/{repo}/_tags/v1", writeEnabled=False)
    assert body["tag"]["changeableAttributes"] == {"deleteEnabled": True, "writeEnabled": False,
                                                   "readEnabled": True, "listEnabled": True}
    other = registry.push_image(repo, "v2")
    assert refused(registry.put(f"/v2/{repo}/manifests/v1", data=other.body,
                                headers={"Content-Type": other.media_type}))
    assert registry.get(f"/v2/{repo}/manifests/v1").content == first.body  # unchanged
    assert refused(registry.delete(f"/v2/{repo}/manifests/v1"))
    assert refused(registry.delete(f"/acr/v1/{repo}/_tags/v1"))
    assert refused(registry.delete(f"/v2/{repo}/manifests/{first.digest}"))  # a locked tag points at it
    assert refused(registry.delete(f"/acr/v1/{repo}"))
    # other tags are not affected
    assert registry.put(f"/v2/{repo}/manifests/v3", data=other.body,
                        headers={"Content-Type": other.media_type}).status_code == 201
    patch(registry, f"/acr/v1/{repo}/_tags/v1", writeEnabled=True)
    assert registry.put(f"/v2/{repo}/manifests/v1", data=other.body,
                        headers={"Content-Type": other.media_type}).status_code == 201


def test_write_locked_repository_refuses_every_push(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "v1")
    body = patch(registry, f"/acr/v1/{repo}", writeEnabled=False)
    assert body["changeableAttributes"]["writeEnabled"] is False and body["imageName"] == repo
    assert refused(registry.post(f"/v2/{repo}/blobs/uploads/"))
    assert refused(registry.put(f"/v2/{repo}/manifests/v2", data=b"{}",
                                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    assert registry.get(f"/v2/{repo}/manifests/v1").status_code == 200  # reads still work
    patch(registry, f"/acr/v1/{repo}", writeEnabled=True)
    registry.push_image(repo, "v2")


def test_delete_locked_manifest_and_repository(registry: RegistryClient, repo: str) -> None:
    image_ = registry.push_image(repo, None)
    patch(registry, f"/acr/v1/{repo}/_manifests/{image_.digest}", deleteEnabled=False)
    assert refused(registry.delete(f"/v2/{repo}/manifests/{image_.digest}"))
    assert refused(registry.delete(f"/acr/v1/{repo}/_manifests/{image_.digest}"))
    assert refused(registry.delete(f"/acr/v1/{repo}"))
    patch(registry, f"/acr/v1/{repo}/_manifests/{image_.digest}", deleteEnabled=True)
    patch(registry, f"/acr/v1/{repo}", deleteEnabled=False)
    assert refused(registry.delete(f"/v2/{repo}/manifests/{image_.digest}"))
    assert refused(registry.delete(f"/v2/{repo}/blobs/{config_of(image_)}"))
    patch(registry, f"/acr/v1/{repo}", deleteEnabled=True)
    r = registry.delete(f"/acr/v1/{repo}")
    assert r.status_code == 202 and r.json()["manifestsDeleted"] == [image_.digest]


def test_read_locks_refuse_pulls(registry: RegistryClient, repo: str) -> None:
    image_ = registry.push_image(repo, "v1")
    registry.put(f"/v2/{repo}/manifests/v2", data=image_.body, headers={"Content-Type": image_.media_type})
    patch(registry, f"/acr/v1/{repo}/_tags/v1", readEnabled=False)
    assert refused(registry.get(f"/v2/{repo}/manifests/v1"))
    assert registry.head(f"/v2/{repo}/manifests/v1").status_code == 405
    assert registry.get(f"/v2/{repo}/manifests/v2").status_code == 200  # another tag of the same image
    patch(registry, f"/acr/v1/{repo}/_manifests/{image_.digest}", readEnabled=False)
    assert refused(registry.get(f"/v2/{repo}/manifests/v2"))
    assert refused(registry.get(f"/v2/{repo}/manifests/{image_.digest}"))
    patch(registry, f"/acr/v1/{repo}", readEnabled=False)
    assert refused(registry.get(f"/v2/{repo}/blobs/{config_of(image_)}"))
    # metadata stays readable, so the lock can be seen and lifted
    assert registry.get(f"/acr/v1/{repo}/_tags/v1").json()["tag"]["changeableAttributes"]["readEnabled"] is False
    patch(registry, f"/acr/v1/{repo}", readEnabled=True)
    patch(registry, f"/acr/v1/{repo}/_manifests/{image_.digest}", readEnabled=True)
    patch(registry, f"/acr/v1/{repo}/_tags/v1", readEnabled=True)
    assert registry.get(f"/v2/{repo}/manifests/v1").content == image_.body


def test_list_locks_hide_from_listings(registry: RegistryClient, repo: str) -> None:
    shown = registry.push_image(repo, "shown")
    registry.push_image(repo, "hidden")
    patch(registry, f"/acr/v1/{repo}/_tags/hidden", listEnabled=False)
    assert registry.get(f"/v2/{repo}/tags/list").json()["tags"] == ["shown"]
    assert [t["name"] for t in registry.get(f"/acr/v1/{repo}/_tags").json()["tags"]] == ["shown"]
    assert registry.get(f"/acr/v1/{repo}/_tags/hidden").status_code == 200  # still readable by name
    patch(registry, f"/acr/v1/{repo}/_manifests/{shown.digest}", listEnabled=False)
    listed = [m["digest"] for m in registry.get(f"/acr/v1/{repo}/_manifests").json()["manifests"]]
    assert shown.digest not in listed and len(listed) == 1
    patch(registry, f"/acr/v1/{repo}", listEnabled=False)
    for path in ("/v2/_catalog", "/acr/v1/_catalog"):
        assert repo not in registry.get(path).json()["repositories"]
    assert registry.get(f"/acr/v1/{repo}").status_code == 200
    patch(registry, f"/acr/v1/{repo}", listEnabled=True)
    assert repo in registry.get("/acr/v1/_catalog").json()["repositories"]


def test_patch_validation(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "v1")
    for body in ([], {"writeEnabled": "no"}, {"immutable": True}):
        r = registry.patch(f"/acr/v1/{repo}/_tags/v1", json=body)
        assert r.status_code == 400 and error_code(r) == "UNSUPPORTED", r.text
    r = registry.patch(f"/acr/v1/{repo}/_tags/v1", data=b"{not json")
    assert r.status_code == 400
    assert registry.get(f"/acr/v1/{repo}/_tags/v1").json()["tag"]["changeableAttributes"]["writeEnabled"] is True
    r = registry.patch(f"/acr/v1/{repo}/_tags/missing", json={"writeEnabled": False})
    assert r.status_code == 404 and error_code(r) == "TAG_UNKNOWN"
    r = registry.patch(f"/acr/v1/{repo}-missing", json={"writeEnabled": False})
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


@pytest.fixture
def tools(acrlocal: AcrLocal, tmp_path: Path) -> Iterator[Containers]:
    with Containers(tmp_path, acrlocal) as tools:
        yield tools


def test_skopeo_push_to_a_locked_tag_fails_with_acr_message(tools: Containers, registry: RegistryClient,
                                                            repo: str, tmp_path: Path) -> None:
    layer = tar_layer({"hello": b"locked"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    layout = tmp_path / "layout"
    write_layout(layout, {"v1": manifest}, [layer, config])
    dest = f"docker://{tools.ref(repo)}:v1"
    tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1", dest)
    pushed = registry.get(f"/v2/{repo}/manifests/v1").content
    patch(registry, f"/acr/v1/{repo}/_tags/v1", writeEnabled=False)
    layer2 = tar_layer({"hello": b"changed"})
    config2 = config_blob(diff_ids=[layer2.digest])
    layout2 = tmp_path / "layout2"
    write_layout(layout2, {"v1": image(config2, [layer2])}, [layer2, config2])
    with pytest.raises(ToolError) as caught:
        tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout2}:v1", dest)
    assert "disallowed" in str(caught.value)
    assert registry.get(f"/v2/{repo}/manifests/v1").content == pushed


def test_read_locked_repository_lends_no_blob_to_a_mount(registry: RegistryClient, repo: str) -> None:
    image_ = registry.push_image(repo, "v1")
    digest = config_of(image_)
    target = repo + "-target"
    patch(registry, f"/acr/v1/{repo}", readEnabled=False)
    r = registry.post(f"/v2/{target}/blobs/uploads/?mount={digest}&from={repo}")
    assert r.status_code == 202  # an ordinary upload session instead of a mount
    assert registry.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    patch(registry, f"/acr/v1/{repo}", readEnabled=True)
    r = registry.post(f"/v2/{target}/blobs/uploads/?mount={digest}&from={repo}")
    assert r.status_code == 201


# -- what a locked manifest contains is locked with it (issue 8, item 3) ------------------------------------


def layers_of(manifest: Manifest) -> list[str]:
    return [layer["digest"] for layer in json.loads(manifest.body)["layers"]]


def pullable(registry: RegistryClient, repo: str, reference: str, manifest: Manifest) -> bool:
    """The manifest and every blob it names still answer with their bytes."""
    if registry.get(f"/v2/{repo}/manifests/{reference}").content != manifest.body:
        return False
    return all(registry.get(f"/v2/{repo}/blobs/{d}").status_code == 200
               for d in [config_of(manifest), *layers_of(manifest)])


@pytest.mark.parametrize("attribute", ["deleteEnabled", "writeEnabled"])
def test_blobs_of_a_locked_tag_cannot_be_deleted(registry: RegistryClient, repo: str, attribute: str) -> None:
    image_ = registry.push_image(repo, "v1")
    loose = registry.push_blob(repo, b"referenced by nothing")
    patch(registry, f"/acr/v1/{repo}/_tags/v1", **{attribute: False})
    for digest in [config_of(image_), *layers_of(image_)]:
        r = registry.delete(f"/v2/{repo}/blobs/{digest}")
        assert refused(r), r.text
        assert image_.digest in r.json()["errors"][0]["detail"]["locked"]
    assert pullable(registry, repo, "v1", image_)
    assert registry.delete(f"/v2/{repo}/blobs/{loose}").status_code == 202  # what no locked image needs goes
    patch(registry, f"/acr/v1/{repo}/_tags/v1", **{attribute: True})
    assert registry.delete(f"/v2/{repo}/blobs/{layers_of(image_)[0]}").status_code == 202


def test_blobs_of_a_locked_manifest_cannot_be_deleted(registry: RegistryClient, repo: str) -> None:
    locked = registry.push_image(repo, "locked", layers=1)
    free = registry.push_image(repo, "free", layers=1)
    patch(registry, f"/acr/v1/{repo}/_manifests/{locked.digest}", deleteEnabled=False)
    assert refused(registry.delete(f"/v2/{repo}/blobs/{layers_of(locked)[0]}"))
    assert pullable(registry, repo, "locked", locked)
    assert registry.delete(f"/v2/{repo}/blobs/{layers_of(free)[0]}").status_code == 202
    # the lock belongs to this repository's manifest: the same blob in another repository is not held by it
    other = repo + "-other"
    r = registry.post(f"/v2/{other}/blobs/uploads/?mount={layers_of(locked)[0]}&from={repo}")
    assert r.status_code == 201, r.text
    assert registry.delete(f"/v2/{other}/blobs/{layers_of(locked)[0]}").status_code == 202
    assert pullable(registry, repo, "locked", locked)


def test_children_of_a_locked_index_and_their_blobs_cannot_be_deleted(
    tools: Containers, registry: RegistryClient, repo: str
) -> None:
    amd, arm = registry.push_image(repo, None, layers=1), registry.push_image(repo, None, layers=1)
    multi = index([(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})])
    assert registry.push_manifest(repo, "multi", multi).status_code == 201
    patch(registry, f"/acr/v1/{repo}/_tags/multi", deleteEnabled=False)
    assert refused(registry.delete(f"/v2/{repo}/manifests/{amd.digest}"))
    assert refused(registry.delete(f"/acr/v1/{repo}/_manifests/{arm.digest}"))
    with pytest.raises(ToolError) as caught:
        tools.skopeo("delete", "--cert-dir", str(tools.cert_dir), f"docker://{tools.ref(repo)}@{amd.digest}")
    assert "disallowed" in str(caught.value)
    assert refused(registry.delete(f"/v2/{repo}/blobs/{layers_of(arm)[0]}"))  # two levels down
    assert pullable(registry, repo, amd.digest, amd) and pullable(registry, repo, arm.digest, arm)
    # the same through a lock on the index itself rather than its tag
    patch(registry, f"/acr/v1/{repo}/_tags/multi", deleteEnabled=True)
    patch(registry, f"/acr/v1/{repo}/_manifests/{multi.digest}", writeEnabled=False)
    assert refused(registry.delete(f"/v2/{repo}/manifests/{amd.digest}"))
    patch(registry, f"/acr/v1/{repo}/_manifests/{multi.digest}", writeEnabled=True)
    assert registry.delete(f"/v2/{repo}/manifests/{multi.digest}").status_code == 202  # the index names it: first
    tools.skopeo("delete", "--cert-dir", str(tools.cert_dir), f"docker://{tools.ref(repo)}@{amd.digest}")
    assert registry.get(f"/v2/{repo}/manifests/{amd.digest}").status_code == 404


def test_read_locked_manifest_locks_the_bytes_only_it_references(registry: RegistryClient, repo: str) -> None:
    shared = tar_layer({"base": repo.encode()})
    config_a, config_b = config_blob(architecture="a"), config_blob(architecture="b")
    for blob in (shared, config_a, config_b):
        registry.push_blob(repo, blob)
    quarantined = image(config_a, [shared])
    readable = image(config_b, [shared])
    assert registry.push_manifest(repo, "bad", quarantined).status_code == 201
    assert registry.push_manifest(repo, "good", readable).status_code == 201
    patch(registry, f"/acr/v1/{repo}/_manifests/{quarantined.digest}", readEnabled=False)
    r = registry.get(f"/v2/{repo}/blobs/{config_a.digest}")
    assert refused(r) and r.json()["errors"][0]["detail"]["attribute"] == "readEnabled"
    assert registry.head(f"/v2/{repo}/blobs/{config_a.digest}").status_code == 200  # a pusher may still skip it
    assert registry.get(f"/v2/{repo}/blobs/{shared.digest}").content == shared.data  # a readable image needs it
    assert pullable(registry, repo, "good", readable)
    # no mount lends what is locked (an upload session instead), and what is readable still mounts
    other = repo + "-other"
    assert registry.post(f"/v2/{other}/blobs/uploads/?mount={config_a.digest}&from={repo}").status_code == 202
    assert registry.post(f"/v2/{other}/blobs/uploads/?mount={shared.digest}&from={repo}").status_code == 201
    patch(registry, f"/acr/v1/{repo}/_manifests/{quarantined.digest}", readEnabled=True)
    assert registry.get(f"/v2/{repo}/blobs/{config_a.digest}").content == config_a.data
