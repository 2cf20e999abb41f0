"""``/acr/v1`` as az and the SDK put it on the wire: percent-encoded names and digests, ``n``/``last``/``orderby``
with ``Link`` headers, 202 deletes, and OCI error bodies for bad input."""

from __future__ import annotations

from urllib.parse import quote

from acrlocal.registry.paths import Endpoint, parse_path
from tests.registry.conftest import RegistryClient, error_code


def test_paths_parse_encoded_and_raw_names() -> None:
    for raw in ("/acr/v1/library%2Fhello/_tags/v1", "/acr/v1/library/hello/_tags/v1"):
        route = parse_path(raw)
        assert route is not None and (route.endpoint, route.name, route.ref) == (Endpoint.ACR_TAG, "library/hello",
                                                                                 "v1")
    route = parse_path("/acr/v1/a%2Fb/_manifests/sha256%3Aab?api-version=2021-07-01")
    assert route is not None and (route.endpoint, route.ref) == (Endpoint.ACR_MANIFEST, "sha256:ab")
    assert parse_path("/acr/v1/_catalog?n=2") is not None
    route = parse_path("/acr/v1/a/b")
    assert route is not None and (route.endpoint, route.name) == (Endpoint.ACR_REPOSITORY, "a/b")
    assert parse_path("/acr/v1/a/_tags/x/y") is None
    assert parse_path("/acr/v1/_tags") is None


def test_encoded_names_and_paging_with_link(registry: RegistryClient, repo: str) -> None:
    image = registry.push_image(repo, "t1")
    for tag in ("t2", "t3"):
        registry.put(f"/v2/{repo}/manifests/{tag}", data=image.body, headers={"Content-Type": image.media_type})
    enc = quote(repo, safe="")
    r = registry.get(f"/acr/v1/{enc}?api-version=2021-07-01")
    assert r.status_code == 200 and r.json()["imageName"] == repo and r.json()["registry"] == registry.login_server
    r = registry.get(f"/acr/v1/{enc}/_tags?n=2&orderby=timeasc")
    assert [t["name"] for t in r.json()["tags"]] == ["t1", "t2"]
    link = r.headers["Link"]
    assert link.startswith(f"</acr/v1/{repo}/_tags?last=t2&n=2&orderby=timeasc>") and 'rel="next"' in link
    r = registry.get(link[1:link.index(">")])
    assert [t["name"] for t in r.json()["tags"]] == ["t3"] and "Link" not in r.headers
    r = registry.get(f"/acr/v1/{enc}/_manifests/{quote(image.digest, safe='')}")
    assert r.json()["manifest"]["tags"] == ["t1", "t2", "t3"]
    r = registry.get(f"/acr/v1/{enc}/_tags?digest={image.digest}")
    assert len(r.json()["tags"]) == 3


def test_catalog_paging(registry: RegistryClient, repo: str) -> None:
    for i in range(3):
        registry.push_image(f"{repo}/c{i}", "v1", layers=1)
    names: list[str] = []
    path = f"/acr/v1/_catalog?n=1&last={repo}/"
    while path:
        r = registry.get(path)
        assert r.status_code == 200
        page = r.json()["repositories"]
        assert len(page) <= 1
        names += page
        link = r.headers.get("Link")
        path = link[1:link.index(">")] if link and page and page[0].startswith(repo) else ""
    assert [n for n in names if n.startswith(repo)] == [f"{repo}/c{i}" for i in range(3)]


def test_bad_input_gets_oci_errors(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "v1")
    r = registry.get(f"/acr/v1/{repo}/_tags?orderby=sideways")
    assert r.status_code == 400 and error_code(r) == "UNSUPPORTED"
    r = registry.get(f"/acr/v1/{repo}/_tags?n=-1")
    assert r.status_code == 400 and error_code(r) == "PAGINATION_NUMBER_INVALID"
    r = registry.get("/acr/v1/Not..Valid/_tags")
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"
    r = registry.get(f"/acr/v1/{repo}/_manifests/sha256:short")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = registry.get(f"/acr/v1/{repo}/_manifests/sha256:{'0' * 64}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = registry.get(f"/acr/v1/{repo}-nope/_tags")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"
    r = registry.request("PUT", f"/acr/v1/{repo}")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
    r = registry.delete(f"/acr/v1/{repo}/_tags/missing")
    assert r.status_code == 404 and error_code(r) == "TAG_UNKNOWN"
