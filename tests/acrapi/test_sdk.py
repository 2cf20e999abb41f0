"""azure-containerregistry's ``ContainerRegistryClient`` against ``/acr/v1``: every property call, paging, updates
of the changeable attributes, and deletes, with the SDK's own deserialization checking the required fields."""

from __future__ import annotations

import pytest
from azure.containerregistry import ArtifactTagOrder, ContainerRegistryClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.registry.conftest import RegistryClient


def test_repository_properties(sdk: ContainerRegistryClient, registry: RegistryClient, repo: str) -> None:
    first = registry.push_image(repo, "v1")
    registry.push_image(repo, "v2")
    registry.put(f"/v2/{repo}/manifests/also-v1", data=first.body, headers={"Content-Type": first.media_type})
    props = sdk.get_repository_properties(repo)
    assert props.name == repo
    assert props.manifest_count == 2 and props.tag_count == 3
    assert props.created_on <= props.last_updated_on
    assert (props.can_delete, props.can_write, props.can_read, props.can_list) == (True, True, True, True)
    with pytest.raises(ResourceNotFoundError):
        sdk.get_repository_properties(repo + "-missing")


def test_list_repository_names_pages_through_everything(sdk: ContainerRegistryClient, registry: RegistryClient,
                                                       repo: str) -> None:
    names = [f"{repo}/r{i}" for i in range(5)]
    for name in names:
        registry.push_image(name, "v1", layers=1)
    pages = sdk.list_repository_names(results_per_page=2).by_page()
    seen: list[str] = []
    page_sizes = []
    for page in pages:
        items = list(page)
        page_sizes.append(len(items))
        seen += items
    assert [n for n in seen if n.startswith(repo + "/")] == names
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert max(page_sizes) == 2 and len(page_sizes) >= 3


def test_tag_properties_and_listing(sdk: ContainerRegistryClient, registry: RegistryClient, repo: str) -> None:
    image = registry.push_image(repo, "b")
    registry.put(f"/v2/{repo}/manifests/a", data=image.body, headers={"Content-Type": image.media_type})
    registry.push_image(repo, "c")
    tag = sdk.get_tag_properties(repo, "b")
    assert (tag.name, tag.digest) == ("b", image.digest)
    assert tag.can_write and tag.can_delete and tag.can_read and tag.can_list

    by_name = [t.name for t in sdk.list_tag_properties(repo)]
    assert by_name == ["a", "b", "c"]
    newest_first = [t.name for t in sdk.list_tag_properties(repo, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING)]
    assert newest_first[0] == "c" and sorted(newest_first) == ["a", "b", "c"]
    paged = [t.name for t in sdk.list_tag_properties(repo, results_per_page=1)]
    assert paged == ["a", "b", "c"]
    paged_by_time = [t.name for t in sdk.list_tag_properties(
        repo, order_by=ArtifactTagOrder.LAST_UPDATED_ON_ASCENDING, results_per_page=1)]
    assert sorted(paged_by_time) == ["a", "b", "c"] and paged_by_time[-1] == "c"
    with pytest.raises(ResourceNotFoundError):
        sdk.get_tag_properties(repo, "nope")


def test_manifest_properties(sdk: ContainerRegistryClient, registry: RegistryClient, repo: str) -> None:
    image = registry.push_image(repo, "v1")
    registry.put(f"/v2/{repo}/manifests/latest", data=image.body, headers={"Content-Type": image.media_type})
    props = sdk.get_manifest_properties(repo, "v1")  # resolves the tag through _tags first
    assert props.digest == image.digest
    assert sorted(props.tags) == ["latest", "v1"]
    assert props.architecture is not None and props.architecture.startswith("arch")
    assert props.operating_system == "linux"
    assert props.size_in_bytes is not None and props.size_in_bytes > len(image.body)
    assert props.can_read and props.can_write
    same = sdk.get_manifest_properties(repo, image.digest)
    assert same.digest == image.digest

    second = registry.push_image(repo, None)
    listed = {m.digest: m for m in sdk.list_manifest_properties(repo)}
    assert set(listed) == {image.digest, second.digest}
    assert listed[second.digest].tags == []
    assert len(list(sdk.list_manifest_properties(repo, results_per_page=1))) == 2


def test_update_properties_round_trip(sdk: ContainerRegistryClient, registry: RegistryClient, repo: str) -> None:
    image = registry.push_image(repo, "v1")
    tag = sdk.update_tag_properties(repo, "v1", can_write=False, can_delete=False)
    assert (tag.can_write, tag.can_delete, tag.can_read, tag.can_list) == (False, False, True, True)
    assert not sdk.get_tag_properties(repo, "v1").can_write

    manifest = sdk.update_manifest_properties(repo, image.digest, can_list=False)
    assert manifest.can_list is False and manifest.can_write is True
    assert image.digest not in [m.digest for m in sdk.list_manifest_properties(repo)]
    assert sdk.get_manifest_properties(repo, image.digest).can_list is False

    repository = sdk.update_repository_properties(repo, can_read=False)
    assert repository.can_read is False and repository.can_write is True
    repository = sdk.update_repository_properties(repo, can_read=True)
    assert repository.can_read is True


def test_delete_tag_manifest_and_repository(sdk: ContainerRegistryClient, registry: RegistryClient,
                                            repo: str) -> None:
    keep = registry.push_image(repo, "keep")
    gone = registry.push_image(repo, "gone")
    registry.put(f"/v2/{repo}/manifests/untag-me", data=keep.body, headers={"Content-Type": keep.media_type})

    sdk.delete_tag(repo, "untag-me")
    assert registry.head(f"/v2/{repo}/manifests/untag-me").status_code == 404
    assert registry.head(f"/v2/{repo}/manifests/keep").status_code == 200
    sdk.delete_tag(repo, "untag-me")  # a missing tag is tolerated (404)

    sdk.delete_manifest(repo, "gone")  # by tag: resolved through _tags, deleted through /v2/
    assert registry.head(f"/v2/{repo}/manifests/{gone.digest}").status_code == 404

    sdk.delete_repository(repo)
    with pytest.raises(ResourceNotFoundError):
        sdk.get_repository_properties(repo)
    assert registry.head(f"/v2/{repo}/manifests/{keep.digest}").status_code == 404
    assert repo not in list(sdk.list_repository_names())
    sdk.delete_repository(repo)  # already gone: tolerated


def test_locked_tag_refuses_delete_through_the_sdk(sdk: ContainerRegistryClient, registry: RegistryClient,
                                                   repo: str) -> None:
    registry.push_image(repo, "v1")
    sdk.update_tag_properties(repo, "v1", can_delete=False)
    with pytest.raises(HttpResponseError) as caught:
        sdk.delete_tag(repo, "v1")
    assert caught.value.status_code == 405
    assert "disallowed" in str(caught.value)
    with pytest.raises(HttpResponseError):
        sdk.delete_repository(repo)
    sdk.update_tag_properties(repo, "v1", can_delete=True)
    sdk.delete_repository(repo)
