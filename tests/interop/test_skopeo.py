"""skopeo against acrlocal: an image with a 200 MiB layer and an image index, pushed from and pulled into OCI
layouts, with TLS verified through the local CA."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import (
    OCI_INDEX,
    Blob,
    Manifest,
    big_tar_layer,
    config_blob,
    image,
    index,
    layout_index,
    read_layout_blob,
    tar_layer,
    write_layout,
)
from tests.registry.conftest import RegistryClient

MiB = 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def test_push_and_pull_multi_layer_image_with_200_mib_layer(fresh_acrlocal: AcrLocal, tmp_path: Path) -> None:
    fresh_acrlocal.start()
    with Containers(tmp_path, fresh_acrlocal) as tools:
        push_and_pull_big(fresh_acrlocal, tools, tmp_path)


def push_and_pull_big(server: AcrLocal, tools: Containers, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    big = big_tar_layer(layout, 200 * MiB)
    small = [tar_layer({"etc/motd": b"hello\n"}), tar_layer({"usr/share/doc/x": b"doc " * 1000})]
    config = config_blob(diff_ids=[small[0].digest, big["digest"], small[1].digest])
    doc = json.loads(image(config, small).body)
    doc["layers"].insert(1, big)
    manifest = Manifest(json.dumps(doc).encode(), doc["mediaType"])
    write_layout(layout, {"v1": manifest}, [config, *small])

    tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir),
                 f"oci:{layout}:v1", f"docker://{tools.ref('big/image')}:v1")

    registry = RegistryClient(server)
    r = registry.get("/v2/big/image/manifests/v1")
    assert r.status_code == 200 and r.content == manifest.body
    head = registry.head(f"/v2/big/image/blobs/{big['digest']}")
    assert head.headers["Content-Length"] == str(big["size"])

    out = tmp_path / "pulled"
    tools.skopeo("copy", "--dest-oci-accept-uncompressed-layers", "--src-cert-dir", str(tools.cert_dir),
                 f"docker://{tools.ref('big/image')}:v1", f"oci:{out}:v1")
    pulled = layout_index(out)["manifests"][0]
    assert pulled["digest"] == manifest.digest
    for layer in doc["layers"]:
        path = out / "blobs" / "sha256" / layer["digest"].split(":")[1]
        assert path.stat().st_size == layer["size"]
    assert file_sha256(out / "blobs" / "sha256" / big["digest"].split(":")[1]) == big["digest"]

    # The 200 MiB went through the server in both directions without being held in memory.
    assert server.proc is not None
    assert peak_rss_mib(server.proc.pid) < 180

    inspect = json.loads(tools.skopeo("inspect", "--cert-dir", str(tools.cert_dir),
                                      f"docker://{tools.ref('big/image')}:v1"))
    assert inspect["Digest"] == manifest.digest
    assert inspect["Layers"] == [layer["digest"] for layer in doc["layers"]]
    tags = json.loads(tools.skopeo("list-tags", "--cert-dir", str(tools.cert_dir),
                                   f"docker://{tools.ref('big/image')}"))
    assert tags["Tags"] == ["v1"]


@pytest.fixture
def tools(acrlocal: AcrLocal, tmp_path: Path) -> Iterator[Containers]:
    with Containers(tmp_path, acrlocal) as tools:
        yield tools


def test_push_and_pull_image_index(tools: Containers, registry: RegistryClient, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    images: list[tuple[Manifest, dict[str, str]]] = []
    blobs: list[Blob] = []
    for arch in ("amd64", "arm64"):
        layer = tar_layer({"arch": arch.encode()})
        config = config_blob(architecture=arch, diff_ids=[layer.digest])
        blobs += [layer, config]
        images.append((image(config, [layer]), {"architecture": arch, "os": "linux"}))
    idx = index(images)
    write_layout(layout, {"multi": idx}, blobs, [m for m, _ in images])

    tools.skopeo("copy", "--all", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir),
                 f"oci:{layout}:multi", f"docker://{tools.ref('skopeo/index')}:multi")
    r = registry.get("/v2/skopeo/index/manifests/multi")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.content == idx.body
    for child, _ in images:
        assert registry.get(f"/v2/skopeo/index/manifests/{child.digest}").content == child.body

    out = tmp_path / "pulled"
    tools.skopeo("copy", "--all", "--dest-oci-accept-uncompressed-layers", "--src-cert-dir", str(tools.cert_dir),
                 f"docker://{tools.ref('skopeo/index')}:multi", f"oci:{out}:multi")
    assert layout_index(out)["manifests"][0]["digest"] == idx.digest
    for child, _ in images:
        assert read_layout_blob(out, child.digest) == child.body
    for blob in blobs:
        assert read_layout_blob(out, blob.digest) == blob.data


def test_skopeo_delete_and_copy_between_repositories(tools: Containers, registry: RegistryClient,
                                                     tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layer = tar_layer({"f": b"copy me"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(layout, {"v1": manifest}, [config, layer])
    src, dst = tools.ref("skopeo/source"), tools.ref("skopeo/copy")
    tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                 f"docker://{src}:v1")
    # Registry to registry: skopeo mounts the blobs from the source repository.
    tools.skopeo("copy", "--src-cert-dir", str(tools.cert_dir), "--dest-cert-dir", str(tools.cert_dir),
                 f"docker://{src}:v1", f"docker://{dst}:v1")
    assert registry.get("/v2/skopeo/copy/manifests/v1").content == manifest.body
    assert registry.get(f"/v2/skopeo/copy/blobs/{layer.digest}").content == layer.data
    tools.skopeo("delete", "--cert-dir", str(tools.cert_dir), f"docker://{dst}:v1")
    assert registry.get("/v2/skopeo/copy/manifests/v1").status_code == 404
    assert registry.get("/v2/skopeo/source/manifests/v1").status_code == 200
