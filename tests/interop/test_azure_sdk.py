"""azure-containerregistry's /v2/ calls (as the local administrator, through ACR's token exchange): it
percent-encodes names (``library%2Fhello``) and digests (``sha256%3A...``), uploads in 4 MiB PATCH chunks,
downloads in 4 MiB ranges, and checks every digest."""

from __future__ import annotations

import io
import json
import os

import pytest
from azure.containerregistry import ContainerRegistryClient, DigestValidationError
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential

from tests.harness import AcrLocal
from tests.ocitools import OCI_MANIFEST, sha256
from tests.registry.conftest import RegistryClient


@pytest.fixture
def client(acrlocal: AcrLocal) -> ContainerRegistryClient:
    cred = acrlocal.admin_credential()
    credential = ClientSecretCredential(cred["tenantId"], cred["clientId"], cred["clientSecret"],
                                        authority=acrlocal.shared, connection_verify=acrlocal.ca,
                                        disable_instance_discovery=True)
    return ContainerRegistryClient(f"https://{acrlocal.login_server()}", credential, connection_verify=acrlocal.ca)


def test_upload_set_manifest_get_and_download(client: ContainerRegistryClient, registry: RegistryClient,
                                             repo: str) -> None:
    layer = os.urandom(9 * 1024 * 1024 + 123)  # three PATCH chunks, three ranged GETs
    config = b"{}"
    layer_digest, layer_size = client.upload_blob(repo, io.BytesIO(layer))
    assert (layer_digest, layer_size) == (sha256(layer), len(layer))
    config_digest, _ = client.upload_blob(repo, io.BytesIO(config))
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}],
    }
    digest = client.set_manifest(repo, manifest, tag="sdk")
    body = registry.get(f"/v2/{repo}/manifests/sdk").content
    assert digest == sha256(body)
    assert json.loads(body) == manifest

    got = client.get_manifest(repo, digest)
    assert got.digest == digest and got.manifest == manifest
    assert client.get_manifest(repo, "sdk").digest == digest

    stream = client.download_blob(repo, layer_digest)
    assert b"".join(stream) == layer

    client.delete_blob(repo, config_digest)
    assert registry.head(f"/v2/{repo}/blobs/{config_digest}").status_code == 404
    client.delete_manifest(repo, digest)
    with pytest.raises(ResourceNotFoundError):
        client.get_manifest(repo, digest)


def test_downloaded_blob_is_checked_against_its_digest(client: ContainerRegistryClient, repo: str) -> None:
    digest, _ = client.upload_blob(repo, io.BytesIO(b"verified by the client"))
    assert b"".join(client.download_blob(repo, digest)) == b"verified by the client"
    with pytest.raises((ResourceNotFoundError, DigestValidationError)):
        b"".join(client.download_blob(repo, sha256(b"not there")))
