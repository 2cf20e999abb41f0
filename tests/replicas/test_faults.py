"""Faults and races with two replicas behind HAProxy: racing writes end in one of the serial orders, a replica
killed (SIGKILL) in the middle of a push or a pull leaves nothing partial and the client's retry through the load
balancer completes, PostgreSQL restarted under the replicas is 503 with Retry-After and then serving again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from acrlocal.storage.shared import PEERS_CHECK_S
from tests import postgres
from tests.interop.tools import Containers
from tests.ocitools import Manifest, config_blob, image, layout_index, tar_layer, write_layout
from tests.registry.conftest import (
    RegistryClient,
    at_once,
    move_tag_in_the_database,
    race_index_put_with_child_delete,
    repository_writer,
    tag_moved_in_the_database,
)
from tests.replicas.conftest import Replicas, on, pinned, start_replicas, stop_replicas
from tests.replicas.test_replicas import registry_token

MiB = 1 << 20
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def own_replicas(tmp_path: Path) -> Iterator[Replicas]:
    """Replicas of the test's own (it kills one)."""
    found = start_replicas(tmp_path / "replicas")
    try:
        yield found
    finally:
        stop_replicas(found)


def test_replicas_racing_on_one_tag_one_upload_and_one_blob_delete_end_in_a_serial_order(
        replicas: Replicas) -> None:
    server = replicas.front
    repo = "replicas/race"
    base, client, auth = repository_writer(server, repo)
    sessions = pinned(replicas, base)
    # the same tag, moved to two manifests at once: both 201, both replicas then read the same one of the two
    images = [client.push_image(repo, None) for _ in range(2)]
    url = f"{base}/v2/{repo}/manifests/race"
    for _ in range(5):
        put = at_once(*(lambda i=i: on(sessions[i], replicas, i, "PUT", url, data=images[i].body,
                                        headers={**auth, "Content-Type": MANIFEST}) for i in range(2)))
        assert [r.status_code for r in put] == [201, 201], [r.text for r in put]
        seen = {on(sessions[i], replicas, i, "GET", url, headers=auth).content for i in range(2)}
        assert len(seen) == 1 and seen <= {m.body for m in images}
    # one upload session, the same first chunk sent through both at once: one is taken, the other is refused (416)
    r = on(sessions[0], replicas, 0, "POST", f"{base}/v2/{repo}/blobs/uploads/", headers=auth)
    assert r.status_code == 202, r.text
    location = base + r.headers["Location"] if r.headers["Location"].startswith("/") else r.headers["Location"]
    chunks = [os.urandom(2 * MiB), os.urandom(2 * MiB)]
    patch = at_once(*(lambda i=i: on(sessions[i], replicas, i, "PATCH", location, data=chunks[i], headers={
        **auth, "Content-Type": "application/octet-stream", "Content-Range": f"0-{len(chunks[i]) - 1}"})
        for i in range(2)))
    statuses = sorted(r.status_code for r in patch)
    assert statuses == [202, 416], [r.text for r in patch]
    taken = chunks[[r.status_code for r in patch].index(202)]
    digest = "sha256:" + hashlib.sha256(taken).hexdigest()
    r = on(sessions[1], replicas, 1, "PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}",
           headers=auth)
    assert r.status_code == 201, r.text
    for i in range(2):
        r = on(sessions[i], replicas, i, "GET", f"{base}/v2/{repo}/blobs/{digest}", headers=auth,
               allow_redirects=False)
        if r.status_code == 307:  # blobs in Blob Storage: to the storage's SAS URL, as ACR
            r = requests.get(r.headers["Location"], verify=server.ca, timeout=60)
        assert r.status_code == 200 and r.content == taken
    # the same blob deleted through both at once: one deletes it (202), the other finds it gone (404)
    delete = at_once(*(lambda i=i: on(sessions[i], replicas, i, "DELETE", f"{base}/v2/{repo}/blobs/{digest}",
                                      headers=auth) for i in range(2)))
    assert sorted(r.status_code for r in delete) == [202, 404], [r.text for r in delete]
    for i in range(2):
        assert on(sessions[i], replicas, i, "HEAD", f"{base}/v2/{repo}/blobs/{digest}",
                  headers=auth).status_code == 404


def _pids(server: Any) -> list[int]:
    """The replica's processes: its primary and the workers it started (``--workers``)."""
    pids, todo = [], [server.proc.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(p) for p in task.read_text().split()]
    return pids


def _kill_host(server: Any) -> None:
    """SIGKILL every process of the replica at once, as its machine dying would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def _holding(replicas: Replicas, fragment: str, within: float = 60.0) -> int:
    """The index of the replica that has a file whose path holds ``fragment`` open (waits for one)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for i, server in enumerate(replicas.servers):
            for pid in _pids(server):
                with contextlib.suppress(OSError):
                    for fd in Path(f"/proc/{pid}/fd").iterdir():
                        with contextlib.suppress(OSError):
                            if fragment in os.readlink(fd):
                                return i
        time.sleep(0.005)
    raise AssertionError(f"no replica opened a file under {fragment!r} within {within}s")


def _receiving(replicas: Replicas, within: float = 60.0) -> int:
    """The index of the replica reading far more bytes than the other (``/proc/<pid>/io``), at least 4 MiB in
    0.1 s: the one a large upload goes to (waits for one)."""
    def read(server: Any) -> int:
        total = 0
        for pid in _pids(server):
            with contextlib.suppress(OSError):
                io = Path(f"/proc/{pid}/io").read_text()
                total += int(next(line.split()[1] for line in io.splitlines() if line.startswith("rchar:")))
        return total

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = [read(s) for s in replicas.servers]
        time.sleep(0.1)
        deltas = [read(s) - b for s, b in zip(replicas.servers, before, strict=True)]
        best = max(range(len(deltas)), key=deltas.__getitem__)
        if deltas[best] >= 4 * MiB and all(d * 4 < deltas[best] for i, d in enumerate(deltas) if i != best):
            return best
    raise AssertionError(f"no replica received an upload within {within}s")


def _big_image(tmp_path: Path, size: int) -> tuple[Path, Manifest, dict[str, Any]]:
    from tests.ocitools import big_tar_layer

    layout = tmp_path / "layout"
    big = big_tar_layer(layout, size)
    small = [tar_layer({"etc/motd": b"hello\n"})]
    config = config_blob(diff_ids=[small[0].digest, big["digest"]])
    doc = json.loads(image(config, small).body)
    doc["layers"].append(big)
    manifest = Manifest(json.dumps(doc).encode(), doc["mediaType"])
    write_layout(layout, {"v1": manifest}, [config, *small])
    return layout, manifest, big


def test_a_replica_killed_during_a_large_push_and_during_a_pull(own_replicas: Replicas, tmp_path: Path) -> None:
    replicas = own_replicas
    server = replicas.front
    layout, manifest, big = _big_image(tmp_path, 200 * MiB)
    client = RegistryClient(server)
    with Containers(tmp_path, server) as tools:
        command = ["skopeo", "--policy", str(tools.policy), "copy", "--retry-times", "3", "--preserve-digests",
                   "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                   f"docker://{tools.ref('replicas/big')}:v1"]
        push = subprocess.Popen(command, env=tools.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            # the replica receiving the big layer: the one with the upload file open, or reading the most
            victim = _receiving(replicas) if server.blob_store is not None else _holding(replicas, "/_uploads/")
            _kill_host(replicas.servers[victim])
            out, _ = push.communicate(timeout=300)
        finally:
            if push.poll() is None:
                push.kill()
                push.wait()
        # skopeo retries a reset connection itself but gives up on a broken pipe: then the user runs it again,
        # as docker push retries a layer. Either way nothing of the cut upload is served.
        head = client.head(f"/v2/replicas/big/blobs/{big['digest']}")
        assert head.status_code == 404 or int(head.headers["Content-Length"]) == big["size"], head.headers
        for _ in range(2):
            if push.returncode == 0:
                break
            again = subprocess.run(command, env=tools.env(), capture_output=True, text=True, timeout=300)
            push.returncode, out = again.returncode, again.stdout + again.stderr
        assert push.returncode == 0, out
        survivor = replicas.servers[1 - victim]
        head = client.head(f"/v2/replicas/big/blobs/{big['digest']}")
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == big["size"]
        out_dir = tmp_path / "pulled"
        tools.skopeo("copy", "--dest-oci-accept-uncompressed-layers", "--src-cert-dir", str(tools.cert_dir),
                     f"docker://{tools.ref('replicas/big')}:v1", f"oci:{out_dir}:v1")
        assert layout_index(out_dir)["manifests"][0]["digest"] == manifest.digest
    if server.blob_store is not None:
        return  # blobs come from the storage account (a 307 to it), not through a replica: no pull to cut
    # the killed replica comes back; now a pull is cut by killing the replica serving it, and the retry completes
    replicas.servers[victim].start()
    replicas.restart_lb()
    base = f"https://{server.login_server()}"
    token = registry_token(server, base, "repository:replicas/big:pull", server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    blob_url = f"{base}/v2/replicas/big/blobs/{big['digest']}"
    sessions = pinned(replicas, base)
    cut = sessions[victim].get(blob_url, headers=auth, stream=True, timeout=60)
    assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == big["size"]
    received = len(next(cut.iter_content(MiB)))
    _kill_host(replicas.servers[victim])
    with pytest.raises(requests.RequestException):
        for chunk in cut.iter_content(MiB):
            received += len(chunk)
    assert received < big["size"]  # the client saw the cut: fewer bytes than Content-Length
    digest = hashlib.sha256()
    retry = requests.get(blob_url, headers=auth, stream=True, verify=server.ca, timeout=60)  # a new connection
    assert retry.status_code == 200 and retry.headers["X-Acrlocal-Replica"] == replicas.names()[1 - victim]
    for chunk in retry.iter_content(MiB):
        digest.update(chunk)
    assert "sha256:" + digest.hexdigest() == big["digest"]
    assert survivor.proc is not None and survivor.proc.poll() is None


def test_postgresql_restarted_under_the_replicas_is_503_then_serving_without_a_restart(tmp_path: Path) -> None:
    database = postgres.PostgresServer()  # a server of the test's own: it is stopped and started again
    database.start()
    replicas: Replicas | None = None
    try:
        replicas = start_replicas(tmp_path / "replicas", database_url=database.create_database("outage"))
        server = replicas.front
        base = f"https://{server.login_server()}"
        client = RegistryClient(server)
        pushed = client.push_image("replicas/outage", "v1")
        token = registry_token(server, base, "repository:replicas/outage:pull", server.registry_credentials())
        auth = {"Authorization": f"Bearer {token}"}
        sessions = pinned(replicas, base)
        url = f"{base}/v2/replicas/outage/manifests/v1"
        for i in range(2):
            assert on(sessions[i], replicas, i, "GET", url, headers=auth).content == pushed.body
        database.stop_server()
        for i in range(2):
            down = on(sessions[i], replicas, i, "GET", f"{base}/v2/replicas/outage/tags/list", headers=auth)
            assert down.status_code == 503, down.text
            assert int(down.headers["Retry-After"]) > 0 and down.json()["errors"][0]["code"] == "UNAVAILABLE"
        database.start_server()
        deadline = time.monotonic() + 60  # a bound, not a timing: recovery is checked, not its speed
        while True:
            answers = [on(sessions[i], replicas, i, "GET", f"{base}/v2/replicas/outage/tags/list", headers=auth)
                       for i in range(2)]
            if [r.status_code for r in answers] == [200, 200] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [r.status_code for r in answers] == [200, 200], [r.text[:300] for r in answers]
        moved = client.push_image("replicas/outage", "v1")  # writes again, and both replicas see them at once
        for i in range(2):
            assert on(sessions[i], replicas, i, "GET", url, headers=auth).content == moved.body
    finally:
        if replicas is not None:
            stop_replicas(replicas)
        database.stop()



def test_an_index_put_racing_the_delete_of_its_child_on_two_replicas_never_both_succeed(replicas: Replicas) -> None:
    """On PostgreSQL the pair serializes on the child's row (FOR SHARE in the PUT, FOR UPDATE in the DELETE): either
    the index commits and the delete is refused because it names the child, or the delete commits and the index is
    MANIFEST_BLOB_UNKNOWN; never an index naming a deleted manifest."""
    server = replicas.front
    repo = "replicas/index-race"
    base, client, auth = repository_writer(server, repo)
    sessions = pinned(replicas, base)

    def through(i: int, method: str, url: str, **kw: Any) -> requests.Response:
        return on(sessions[i], replicas, i, method, url, **kw)

    for round_ in range(30):
        child, _, put = race_index_put_with_child_delete(client, base, repo, auth, through, round_)
        for i in range(2):  # both replicas agree on what is left
            got = through(i, "GET", f"{base}/v2/{repo}/manifests/{child.digest}", headers={**auth, "Accept": MANIFEST})
            assert got.status_code == (200 if put.status_code == 201 else 404), got.text


def test_what_a_replica_committed_and_died_before_announcing_is_read_again_once_its_death_is_seen(
        own_replicas: Replicas) -> None:
    """A replica that dies between a commit and its notification leaves the other replicas' caches of what it
    changed stale. The write is done here straight in the database, as the dead replica's commit was, and the
    replica is killed: every process looks every couple of seconds at which processes listen for notifications,
    and one that went away makes it drop its caches, so the survivor reads the tag moved without waiting for the
    dead replica to start again (which tells every process to drop its caches too)."""
    replicas = own_replicas
    server = replicas.front
    first, second, auth, url = tag_moved_in_the_database(server, "replicas/crash")
    survivor = pinned(replicas, f"https://{server.login_server()}")[0]

    def served() -> str:
        return on(survivor, replicas, 0, "HEAD", url, headers=auth).headers["Docker-Content-Digest"]

    assert served() == first.digest
    move_tag_in_the_database(server, "v1", second.digest)  # the dead replica's commit
    time.sleep(3 * PEERS_CHECK_S)  # the survivor's checks while the replica lives: they must not drop its caches
    assert served() == first.digest, "the survivor read the tag again on its own: this test shows nothing"
    _kill_host(replicas.servers[1])
    deadline = time.monotonic() + 30  # a bound, never a measurement: it is seen within a check or two
    while served() != second.digest:
        assert time.monotonic() < deadline, "the survivor still serves the tag as it was before the dead " \
            "replica's commit"
        time.sleep(0.2)
    replicas.servers[1].start()
    assert served() == second.digest
