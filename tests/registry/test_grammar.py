"""The pure pieces of the data plane: path parsing, name/tag/digest grammar, manifest validation."""

from __future__ import annotations

import json

import pytest

from acrlocal.registry.errors import RegistryError
from acrlocal.registry.manifests import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, parse_manifest
from acrlocal.registry.names import check_repository, parse_reference
from acrlocal.registry.paths import Endpoint, Route, parse_path

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("target", "route"), [
    ("/v2/", Route(Endpoint.BASE)),
    ("/v2", Route(Endpoint.BASE)),
    ("/v2/_catalog?n=1", Route(Endpoint.CATALOG)),
    ("/v2/a/b/c/manifests/latest", Route(Endpoint.MANIFEST, "a/b/c", "latest")),
    (f"/v2/library%2Fhello/manifests/{D.replace(':', '%3A')}", Route(Endpoint.MANIFEST, "library/hello", D)),
    (f"/v2/x/blobs/{D}", Route(Endpoint.BLOB, "x", D)),
    ("/v2/x/blobs/uploads/", Route(Endpoint.UPLOADS, "x")),
    ("/v2/x/blobs/uploads?digest=y", Route(Endpoint.UPLOADS, "x")),
    ("/v2/x/blobs/uploads/abc?digest=y", Route(Endpoint.UPLOAD, "x", "abc")),
    ("/v2/x/blobs/blobs/uploads/", Route(Endpoint.UPLOADS, "x/blobs")),
    ("/v2/blobs/uploads/manifests/t", Route(Endpoint.MANIFEST, "blobs/uploads", "t")),
    ("/v2/a/tags/list", Route(Endpoint.TAGS, "a")),
    (f"/v2/a/referrers/{D}", Route(Endpoint.REFERRERS, "a", D)),
    ("/v2/a/..%2F../manifests/x", Route(Endpoint.MANIFEST, "a/../..", "x")),
])
def test_parse_path(target: str, route: Route) -> None:
    assert parse_path(target) == route


@pytest.mark.parametrize("target", ["/", "/v1/", "/v2x/", "/v2/foo", "/v2/foo/tags/lists", "/v2/a/b"])
def test_parse_path_rejects_non_endpoints(target: str) -> None:
    assert parse_path(target) is None


@pytest.mark.parametrize("name", ["a", "library/hello", "a.b_c__d---e/f0", "0/1/2", "x" * 255])
def test_valid_repository_names(name: str) -> None:
    assert check_repository(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a//b", "..", "a/../b", "a_.b", "a___b", "x" * 256, "a\n",
                                  "a b", "a\x00", "é"])
def test_invalid_repository_names(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        check_repository(name)
    assert info.value.code == "NAME_INVALID" and info.value.status == 400


def test_reference_is_tag_or_digest() -> None:
    assert parse_reference("v1.0_rc-1") == "v1.0_rc-1"
    assert str(parse_reference(D)) == D
    for bad, code in [("-x", "MANIFEST_INVALID"), ("x" * 129, "MANIFEST_INVALID"), ("sha256:zz", "DIGEST_INVALID"),
                      ("a:b:c", "DIGEST_INVALID"), ("v1\n", "MANIFEST_INVALID")]:
        with pytest.raises(RegistryError) as info:
            parse_reference(bad)
        assert info.value.code == code, bad


def _doc(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 2}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + "b" * 64, "size": 5}


def test_image_manifest_references_and_artifact_type() -> None:
    parsed = parse_manifest(_doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER]), OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST
    assert [str(d) for d in parsed.blobs] == [D, LAYER["digest"]]
    assert parsed.artifact_type == CONFIG["mediaType"]  # no artifactType: the config's media type
    assert parsed.subject is None
    artifact = parse_manifest(_doc(config=CONFIG, layers=[], artifactType="x/y", subject=LAYER,
                                   annotations={"k": "v"}), OCI_MANIFEST)
    assert artifact.artifact_type == "x/y" and str(artifact.subject) == LAYER["digest"]
    assert artifact.annotations == {"k": "v"}


def test_index_children_and_no_artifact_type() -> None:
    parsed = parse_manifest(_doc(mediaType=DOCKER_LIST, manifests=[LAYER]), "application/json; charset=utf-8")
    assert parsed.media_type == DOCKER_LIST
    assert [str(d) for d in parsed.manifests] == [LAYER["digest"]] and parsed.blobs == ()
    assert parsed.artifact_type is None


def test_foreign_layers_are_not_required() -> None:
    foreign = {**LAYER, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "urls": ["https://example.invalid/layer"]}
    parsed = parse_manifest(_doc(config=CONFIG, layers=[foreign]), OCI_MANIFEST)
    assert [str(d) for d in parsed.blobs] == [D]


@pytest.mark.parametrize(("body", "content_type"), [
    (_doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[]), OCI_INDEX),
    (_doc(config=CONFIG, layers=[], manifests=[]), OCI_MANIFEST),
    (_doc(mediaType=OCI_INDEX, manifests=[], config=CONFIG), OCI_INDEX),
    (_doc(mediaType=OCI_MANIFEST, layers=[]), OCI_MANIFEST),
    (_doc(mediaType=OCI_INDEX), OCI_INDEX),
    (_doc(config={**CONFIG, "size": -1}, layers=[]), OCI_MANIFEST),
    (_doc(config={**CONFIG, "size": True}, layers=[]), OCI_MANIFEST),
    (_doc(config=CONFIG, layers=[], annotations={"k": 1}), OCI_MANIFEST),
    (_doc(config=CONFIG, layers={}), OCI_MANIFEST),
    (json.dumps({"schemaVersion": 1}).encode(), OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (b"\xff", OCI_MANIFEST),
])
def test_invalid_manifests(body: bytes, content_type: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_manifest(body, content_type)
    assert info.value.code == "MANIFEST_INVALID"
