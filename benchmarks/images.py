"""OCI image layouts of random, incompressible layers, for pushing with skopeo.

Each layer is a real uncompressed tar (media type ``application/vnd.oci.image.layer.v1.tar``) holding one file
of random bytes, so its digest is also its diff ID and no client can shrink it. Layers are written and hashed in
1 MiB chunks; nothing is held in memory whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def layer_bytes(self) -> int:
        return sum(b.size for b in self.layers)

    @property
    def total_bytes(self) -> int:
        return self.layer_bytes + self.config.size + self.manifest.size

    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _put(layout: Path, data: bytes) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob_path(layout, digest).write_bytes(data)
    return Blob(digest, len(data))


def _random_tar_layer(layout: Path, payload: int, name: str) -> Blob:
    """A tar of one ``payload``-byte random file; written to a temp name, then renamed to its digest."""
    tmp = layout / "blobs" / "sha256" / f".{name}.tmp"
    h = hashlib.sha256()
    info = tarfile.TarInfo(name)
    info.size = payload
    info.mode = 0o644
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    pad = (-payload) % tarfile.BLOCKSIZE
    with open(tmp, "wb") as f:
        f.write(header)
        h.update(header)
        left = payload
        while left:
            chunk = os.urandom(min(CHUNK, left))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
        trailer = b"\0" * (pad + 2 * tarfile.BLOCKSIZE)
        f.write(trailer)
        h.update(trailer)
        size = f.tell()
    digest = "sha256:" + h.hexdigest()
    os.replace(tmp, _blob_path(layout, digest))
    return Blob(digest, size)


def build_image(layout: Path, layer_payloads: list[int], tag: str = "v1") -> Image:
    """Write an OCI layout at ``layout`` holding one image of random layers with the given payload sizes."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers = tuple(_random_tar_layer(layout, size, f"layer{i}") for i, size in enumerate(layer_payloads))
    config = _put(layout, json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
    }).encode())
    manifest = _put(layout, json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": LAYER_TYPE, "digest": b.digest, "size": b.size} for b in layers],
    }).encode())
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": manifest.digest, "size": manifest.size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))
    return Image(layout, tag, manifest, config, layers)
