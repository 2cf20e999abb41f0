"""Quotas a user sets on ``acrlocal up``: open upload sessions per principal and registry (429 TOOMANYREQUESTS),
the size of a blob and the free space the data directory's disk keeps (403 DENIED with a message saying which),
and a full disk (ENOSPC) refused cleanly: the session is as it was before the chunk, and the server keeps serving.

The disk tests put the blob store on a small tmpfs mounted in the server's own mount namespace (``unshare``, as
root), so the host's mounts are untouched and the mount goes when the server exits."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal, running
from tests.interop.tools import Containers, ToolError
from tests.ocitools import Blob, config_blob, image, sha256, write_layout
from tests.registry.conftest import RegistryClient, StorageProbe, error_code, files_only
from tests.registry.test_persistence import MiB


def denied(response: object, *words: str) -> bool:
    r = response
    if r.status_code != 403 or error_code(r) != "DENIED":  # type: ignore[attr-defined]
        return False
    message = r.json()["errors"][0]["message"]  # type: ignore[attr-defined]
    return all(w in message for w in words)


def status_range(registry: RegistryClient, location: str) -> str:
    r = registry.get(location)
    assert r.status_code == 204, r.text
    return str(r.headers["Range"])


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    data = tmp_path_factory.mktemp("quotas") / "data"
    with running(data, "--upload-sessions-max", "3", "--blob-max-size", "1MiB") as server:
        yield server


def test_open_upload_sessions_per_principal_and_registry(limited: AcrLocal) -> None:
    registry = RegistryClient(limited)
    sessions = [registry.post(f"/v2/quota/s{i}/blobs/uploads/") for i in range(3)]
    assert all(r.status_code == 202 for r in sessions)
    r = registry.post("/v2/quota/s3/blobs/uploads/")
    assert r.status_code == 429 and error_code(r) == "TOOMANYREQUESTS"
    assert "too many open upload sessions" in r.json()["errors"][0]["message"]
    # a whole blob in one request opens no session, and a finished or cancelled session frees its place
    r = registry.post(f"/v2/quota/s3/blobs/uploads/?digest={sha256(b'one request')}", data=b"one request")
    assert r.status_code == 201
    assert registry.delete(sessions.pop(0).headers["Location"]).status_code == 204
    sessions.append(registry.post("/v2/quota/s3/blobs/uploads/"))
    assert sessions[-1].status_code == 202
    assert registry.post("/v2/quota/s4/blobs/uploads/").status_code == 429
    # the count is per registry: the same principal opens sessions in another one
    admin = Arm(limited, admin_of(limited).token(limited))
    group = f"/subscriptions/{subscription_of(limited)}/resourceGroups/quota"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    url = f"{group}/providers/Microsoft.ContainerRegistry/registries/quotareg"
    assert admin.call("PUT", url, {"location": "westus", "sku": {"name": "Standard"}}).status_code == 201
    limited.status = json.loads((limited.data_dir / "server.json").read_text())
    assert RegistryClient(limited, "quotareg").post("/v2/quota/s0/blobs/uploads/").status_code == 202
    for session in sessions:
        assert registry.delete(session.headers["Location"]).status_code == 204


def test_blob_size_limit(limited: AcrLocal) -> None:
    registry = RegistryClient(limited)
    big = os.urandom(MiB + 1)
    r = registry.post(f"/v2/quota/big/blobs/uploads/?digest={sha256(big)}", data=big)
    assert denied(r, "larger than the 1048576", "--blob-max-size"), r.text
    location = registry.post("/v2/quota/big/blobs/uploads/").headers["Location"]
    assert registry.patch(location, data=big[:100], headers={"Content-Range": "0-99"}).status_code == 202
    r = registry.patch(location, data=big[100:], headers={"Content-Range": f"100-{len(big) - 1}"})
    assert denied(r, "larger than"), r.text
    r = registry.patch(location, data=iter([big[100:][i:i + 65536] for i in range(0, len(big) - 100, 65536)]))
    assert denied(r, "larger than"), r.text  # streamed with no length: refused once it passes the limit
    assert status_range(registry, location) == "0-99"
    exact = big[:MiB]
    r = registry.put(f"{location}?digest={sha256(exact)}", data=exact[100:],
                     headers={"Content-Range": f"100-{MiB - 1}"})
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/quota/big/blobs/{sha256(exact)}").content == exact
    registry.delete(location)


def test_skopeo_push_of_a_layer_past_the_limit_fails_with_the_message(limited: AcrLocal, tmp_path: Path) -> None:
    layer = Blob(os.urandom(2 * MiB))
    config = config_blob()
    layout = tmp_path / "layout"
    write_layout(layout, {"v1": image(config, [layer])}, [layer, config])
    with Containers(tmp_path / "tools", limited) as tools, pytest.raises(ToolError) as caught:
        tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                     f"docker://{tools.ref('quota/skopeo')}:v1")
    assert "--blob-max-size" in str(caught.value)
    registry = RegistryClient(limited)
    assert registry.get("/v2/quota/skopeo/manifests/v1").status_code == 404
    # skopeo leaves the refused uploads open: cancel them, as the module's test of open sessions counts them
    for (upload_id,) in StorageProbe(limited).rows("SELECT id FROM upload_sessions WHERE repository = ?",
                                                   "quota/skopeo"):
        assert registry.delete(f"/v2/quota/skopeo/blobs/uploads/{upload_id}").status_code == 204


def blobs_on_tmpfs(data_dir: Path, size: str) -> list[str]:
    """A wrapper that runs the server in a mount namespace of its own with ``<data dir>/blobs`` on a tmpfs."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a tmpfs for the blob store needs root and unshare")
    (data_dir / "blobs").mkdir(parents=True)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size},mode=0700 acrlocal-blobs "$0" && exec "$@"', str(data_dir / "blobs")]


@files_only
def test_a_full_disk_refuses_the_chunk_and_keeps_the_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data, "--min-free-space", "0", wrapper=blobs_on_tmpfs(data, "12m")) as server:
        registry = RegistryClient(server)
        kept = registry.push_blob("full/disk", os.urandom(4 * MiB))
        payload = os.urandom(10 * MiB)
        location = registry.post("/v2/full/disk/blobs/uploads/").headers["Location"]
        assert registry.patch(location, data=payload[:MiB], headers={"Content-Range": f"0-{MiB - 1}"}).status_code \
            == 202
        r = registry.patch(location, data=payload[MiB:], headers={"Content-Range": f"{MiB}-{len(payload) - 1}"})
        assert denied(r, "no room on the registry's disk"), r.text  # ENOSPC part-way through the chunk
        assert status_range(registry, location) == f"0-{MiB - 1}"  # the chunk is gone, the session intact
        # the server keeps serving: reads, and a write that fits
        assert registry.get(f"/v2/full/disk/blobs/{kept}").status_code == 200
        small = registry.push_blob("full/disk", b"still room for this")
        assert registry.get(f"/v2/full/disk/blobs/{small}").content == b"still room for this"
        r = registry.put(f"{location}?digest={sha256(payload[:2 * MiB])}", data=payload[MiB:2 * MiB],
                         headers={"Content-Range": f"{MiB}-{2 * MiB - 1}"})
        assert r.status_code == 201, r.text
        assert "Traceback" not in server.log()


@files_only
def test_the_free_space_floor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data, "--min-free-space", "6MiB", wrapper=blobs_on_tmpfs(data, "16m")) as server:
        registry = RegistryClient(server)
        first = os.urandom(8 * MiB)
        assert registry.push_blob("floor/app", first) == sha256(first)  # leaves 8 MiB free
        more = os.urandom(4 * MiB)
        r = registry.post(f"/v2/floor/app/blobs/uploads/?digest={sha256(more)}", data=more)
        assert denied(r, "keeps free", "--min-free-space"), r.text
        location = registry.post("/v2/floor/app/blobs/uploads/").headers["Location"]
        r = registry.patch(location, data=iter([more[i:i + 65536] for i in range(0, len(more), 65536)]))
        assert denied(r, "keeps free"), r.text  # streamed with no length: refused when it reaches the floor
        assert status_range(registry, location) == "0-0"
        assert registry.push_blob("floor/app", os.urandom(MiB)) is not None  # what fits above the floor passes
        assert registry.get(f"/v2/floor/app/blobs/{sha256(first)}").content == first
