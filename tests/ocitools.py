"""Build OCI content for tests: blobs, image manifests, indexes, tar layers and OCI layout directories.

Everything is written from the OCI image spec by hand, so tests control every byte (and every digest).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.body)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.body), **extra}


def config_blob(architecture: str = "amd64", diff_ids: list[str] | None = None,
                media_type: str = OCI_CONFIG, cmd: list[str] | None = None) -> Blob:
    doc = {"architecture": architecture, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids or []},
           "config": {"Cmd": cmd} if cmd else {}}
    return Blob(json.dumps(doc, sort_keys=True).encode(), media_type)


def image(config: Blob, layers: list[Blob], *, media_type: str = OCI_MANIFEST, subject: Manifest | None = None,
          artifact_type: str | None = None, annotations: dict[str, str] | None = None,
          with_media_type: bool = True) -> Manifest:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if with_media_type:
        doc["mediaType"] = media_type
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config.descriptor()
    doc["layers"] = [layer.descriptor() for layer in layers]
    if subject is not None:
        doc["subject"] = subject.descriptor()
    if annotations:
        doc["annotations"] = annotations
    return Manifest(json.dumps(doc, indent=2).encode(), media_type)


def index(children: list[tuple[Manifest, dict[str, str]]], *, media_type: str = OCI_INDEX,
          subject: Manifest | None = None, artifact_type: str | None = None,
          annotations: dict[str, str] | None = None) -> Manifest:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["manifests"] = [child.descriptor(platform=platform) for child, platform in children]
    if subject is not None:
        doc["subject"] = subject.descriptor()
    if annotations:
        doc["annotations"] = annotations
    return Manifest(json.dumps(doc).encode(), media_type)


def tar_layer(files: dict[str, bytes], modes: dict[str, int] | None = None) -> Blob:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return Blob(buf.getvalue(), OCI_LAYER)


# -- OCI layout directories (what `skopeo copy oci:DIR:TAG` reads and writes) ------------------------------


def _put_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def big_tar_layer(layout: Path, size: int, name: str = "big.bin") -> dict[str, Any]:
    """A tar layer of one file of ``size`` random (incompressible) bytes, written straight into the layout's blob
    directory 1 MiB at a time (constant memory); returns its descriptor."""
    tmp = layout / "big-layer.tmp"
    layout.mkdir(parents=True, exist_ok=True)
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 1_700_000_000
    info.mode = 0o644

    class Random(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left, 1 << 20)
            buffer[:n] = os.urandom(n)
            self.left -= n
            return n

    with open(tmp, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BufferedReader(Random(), 1 << 20))
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    final = layout / "blobs" / "sha256" / h.hexdigest()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return {"mediaType": OCI_LAYER, "digest": "sha256:" + h.hexdigest(), "size": final.stat().st_size}


def write_layout(layout: Path, tagged: dict[str, Manifest], blobs: Sequence[Blob] = (),
                 manifests: Sequence[Manifest] = ()) -> None:
    """An OCI image layout: ``oci-layout``, ``index.json`` naming ``tagged`` by tag, and every blob and manifest
    (tagged or not) under ``blobs/``."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in blobs:
        _put_blob(layout, blob.data)
    for manifest in [*manifests, *tagged.values()]:
        _put_blob(layout, manifest.body)
    entries = [m.descriptor(annotations={"org.opencontainers.image.ref.name": tag}) for tag, m in tagged.items()]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                  "manifests": entries}))


def read_layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, encoded = digest.split(":", 1)
    return (layout / "blobs" / algorithm / encoded).read_bytes()


def layout_index(layout: Path) -> dict[str, Any]:
    return dict(json.loads((layout / "index.json").read_text()))
