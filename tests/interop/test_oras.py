"""oras-py (the ORAS Python SDK) pushes an artifact with a ``subject``; the referrers API finds it."""

from __future__ import annotations

import json
from pathlib import Path

import oras.client
import oras.oci
import pytest

from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient

CONFIG_TYPE = "application/vnd.example.sbom.config.v1+json"


@pytest.fixture
def oras_client(acrlocal: AcrLocal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> oras.client.OrasClient:
    # oras reads credentials only from ~/.docker/config.json: HOME is the test's temp dir, logged in as the local
    # administrator (the all-zero user and an ACR refresh token, as `az acr login` leaves it).
    docker_config = tmp_path / ".docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps(acrlocal.docker_auth()))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("HOME", str(tmp_path))
    return oras.client.OrasClient(hostname=acrlocal.login_server(), tls_verify=acrlocal.ca)


def test_oras_artifact_with_subject_is_found_through_referrers(
    oras_client: oras.client.OrasClient, registry: RegistryClient, repo: str, tmp_path: Path
) -> None:
    subject = registry.push_image(repo, "app")
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": repo}))
    config = tmp_path / "config.json"
    config.write_text("{}")
    target = f"{registry.login_server}/{repo}:sbom"
    response = oras_client.push(
        target=target,
        files=[f"{sbom}:application/spdx+json"],
        manifest_config=f"{config}:{CONFIG_TYPE}",
        manifest_annotations={"org.example.kind": "sbom"},
        subject=oras.oci.Subject(mediaType=subject.media_type, digest=subject.digest, size=len(subject.body)),
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == subject.digest
    artifact_digest = response.headers["Docker-Content-Digest"]

    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200
    [descriptor] = r.json()["manifests"]
    assert descriptor["digest"] == artifact_digest
    assert descriptor["artifactType"] == CONFIG_TYPE
    assert descriptor["annotations"] == {"org.example.kind": "sbom"}
    filtered = registry.get(f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": CONFIG_TYPE})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [artifact_digest]

    # oras pulls it back and lists the tags.
    outdir = tmp_path / "pulled"
    files = oras_client.pull(target=target, outdir=str(outdir))
    assert [Path(f).read_text() for f in files] == [sbom.read_text()]
    assert sorted(oras_client.get_tags(f"{registry.login_server}/{repo}")) == ["app", "sbom"]
    manifest = oras_client.get_manifest(target)
    assert manifest["subject"]["digest"] == subject.digest


def test_oras_chunked_upload(oras_client: oras.client.OrasClient, registry: RegistryClient, repo: str,
                             tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 4096)  # 1 MiB in 64 KiB chunks
    target = f"{registry.login_server}/{repo}:chunked"
    response = oras_client.push(target=target, files=[str(data)], do_chunked=True, chunk_size=65536,
                                disable_path_validation=True, quiet=True)
    assert response.status_code == 201
    files = oras_client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(files[0]).read_bytes() == data.read_bytes()
