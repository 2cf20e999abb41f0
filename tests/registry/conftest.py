"""Fixtures for the data-plane tests: an HTTP client for a registry of a running server, a fresh repository name
per test, and a probe that looks at what the server stored (files under the data dir, rows in its database)."""

from __future__ import annotations

import itertools
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from acrlocal.registry.paths import Endpoint, parse_path
from tests.harness import AcrLocal, ChallengeAuth
from tests.ocitools import Blob, Manifest, config_blob, image, index, tar_layer

_counter = itertools.count()


ADMIN = "admin"


class RegistryClient:
    """``requests`` against one registry's login server. Paths are sent exactly as given (nothing re-encoded).

    ``credentials`` are what a docker-style client logs in with: by default the local administrator's (the
    all-zero user and an ACR refresh token; the administrator is Owner of the default subscription), a
    ``(user, password)`` pair, or ``None`` for no authentication at all. A 401 challenge is answered the way
    docker does (a token for the challenged scope from the realm, then the request again)."""

    def __init__(self, server: AcrLocal, registry: str = "acrlocal",
                 credentials: tuple[str, str] | str | None = ADMIN) -> None:
        self.server = server
        self.login_server = server.login_server(registry)
        self.base = f"https://{self.login_server}"
        self.http = server.session()
        #: Whether a blob GET's 307 to the blob store is followed (as docker does); off to see the redirect itself.
        self.follow_storage_redirects = True
        if credentials == ADMIN:
            credentials = server.registry_credentials(registry)
        if isinstance(credentials, tuple):
            self.http.auth = ChallengeAuth(credentials[0], credentials[1], server.ca)

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.base + path

    def authorization(self, scope: str) -> str:
        """An ``Authorization`` header value for ``scope`` (for requests written by hand on a socket)."""
        auth = self.http.auth
        assert isinstance(auth, ChallengeAuth), "an authenticated client"
        token = auth.token({"realm": f"{self.base}/oauth2/token", "service": self.login_server, "scope": scope})
        return f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if isinstance(self.http.auth, ChallengeAuth):
            # As containers/image does: the scope is computed from the request and the token sent up front (a
            # streamed body cannot be sent twice after a challenge).
            headers = dict(kwargs.pop("headers", None) or {})
            scopes = request_scopes(method, path)
            if "Authorization" not in headers and scopes:
                headers["Authorization"] = self.authorization(" ".join(scopes))
            kwargs["headers"] = headers
        response = self.http.request(method, self.url(path), allow_redirects=False, **kwargs)
        if response.status_code == 307 and method == "GET" and self.follow_storage_redirects:
            # A blob GET sent to the blob store (--blob-store with a key): followed as docker does, without the
            # registry's Authorization (requests drops it for another port), the Range and other headers kept.
            location = response.headers["Location"]
            assert location.startswith(("http://", "https://")) and not location.startswith(self.base), location
            headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
            followed = requests.get(location, headers=headers, timeout=60, verify=self.server.ca,
                                    stream=bool(kwargs.get("stream")))
            followed.history.insert(0, response)
            return followed
        return response

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> requests.Response:
        return self.request("HEAD", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # -- pushing content ---------------------------------------------------------------------------

    def push_blob(self, repo: str, blob: Blob | bytes) -> str:
        data = blob.data if isinstance(blob, Blob) else blob
        digest = Blob(data).digest
        r = self.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        r = self.put(f"{r.headers['Location']}?digest={digest}", data=data,
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def push_manifest(self, repo: str, reference: str, manifest: Manifest) -> requests.Response:
        return self.put(f"/v2/{repo}/manifests/{reference}", data=manifest.body,
                        headers={"Content-Type": manifest.media_type})

    def push_image(self, repo: str, tag: str | None, layers: int = 2, **manifest_args: Any) -> Manifest:
        """An image of ``layers`` small distinct layers plus a config, all pushed; then the manifest."""
        n = next(_counter)
        blobs = [tar_layer({f"file{i}.txt": f"{repo} {n} layer {i}\n".encode()}) for i in range(layers)]
        config = config_blob(architecture=f"arch{n}")
        for blob in [config, *blobs]:
            self.push_blob(repo, blob)
        manifest = image(config, blobs, **manifest_args)
        r = self.push_manifest(repo, tag or manifest.digest, manifest)
        assert r.status_code == 201, r.text
        return manifest


REPOSITORY_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")


def request_scopes(method: str, path: str) -> list[str]:
    """The token scopes a docker-style client asks for a request: ``registry:catalog:*`` for the catalogs, pull
    for reads, pull+push for writes, delete for deletes, pull on the ``from`` repository of a mount, and ACR's
    ``metadata_read``/``metadata_write`` for ``/acr/v1/`` reads and attribute updates. None for a name that is not
    a repository name (the registry refuses it before asking for a token)."""
    parsed = urllib.parse.urlsplit(path)
    route = parse_path(parsed.path)
    if route is None or route.endpoint is Endpoint.BASE:
        return []
    if route.endpoint in (Endpoint.CATALOG, Endpoint.ACR_CATALOG):
        return ["registry:catalog:*"]
    if not REPOSITORY_NAME.fullmatch(route.name):
        return []
    if route.endpoint.name.startswith("ACR_"):
        actions = {"GET": "metadata_read", "HEAD": "metadata_read", "DELETE": "delete"}.get(method, "metadata_write")
    else:
        actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    scopes = [f"repository:{route.name}:{actions}"]
    source = urllib.parse.parse_qs(parsed.query).get("from")
    if route.endpoint is Endpoint.UPLOADS and source and REPOSITORY_NAME.fullmatch(source[0]):
        scopes.append(f"repository:{source[0]}:pull")
    return scopes


class StorageProbe:
    """What the server has in its blob store and its database (read-only, while it runs, but for
    :meth:`remove_blob`): files under the data dir, or the blobs of its container (``--blob-backend azurite``)."""

    def __init__(self, server: AcrLocal) -> None:
        self.server = server
        self.data_dir = server.data_dir
        self.container: Any = None
        if server.blob_store is not None:
            from azure.storage.blob import ContainerClient

            from acrlocal.blob_location import parse_location

            location = parse_location(server.blob_store[0])
            self.container = ContainerClient(location.account_url, location.container, credential={
                "account_name": location.account, "account_key": server.blob_store[1]},
                connection_verify=server.blob_store[2])

    def blob_file(self, digest: str) -> Path:
        assert self.container is None, "a test of files in the data directory (--blob-backend files)"
        algorithm, encoded = digest.split(":", 1)
        return self.data_dir / "blobs" / algorithm / encoded[:2] / encoded

    def _blob_name(self, digest: str) -> str:
        return digest.replace(":", "/", 1)

    def has_blob(self, digest: str) -> bool:
        if self.container is None:
            return self.blob_file(digest).exists()
        return bool(self.container.get_blob_client(self._blob_name(digest)).exists())

    def blob_bytes(self, digest: str) -> bytes:
        if self.container is None:
            return self.blob_file(digest).read_bytes()
        return bytes(self.container.download_blob(self._blob_name(digest)).readall())

    def remove_blob(self, digest: str) -> None:
        """The blob's bytes lost (a disk, or someone, deleted them)."""
        if self.container is None:
            self.blob_file(digest).unlink()
        else:
            self.container.delete_blob(self._blob_name(digest))

    def stored_digests(self) -> list[str]:
        if self.container is None:
            return ["sha256:" + p.name for p in (self.data_dir / "blobs" / "sha256").glob("*/*")]
        return [str(b.name).replace("/", ":", 1) for b in self.container.list_blobs(name_starts_with="sha256/")]

    def upload_files(self) -> set[str]:
        if self.container is None:
            return {p.name for p in (self.data_dir / "blobs" / "_uploads").iterdir()}
        return {str(b.name).split("/", 1)[1] for b in self.container.list_blobs(name_starts_with="_uploads/")}

    def upload_size(self, upload_id: str) -> int:
        """The bytes the store holds as the upload (a file's size; the size recorded in a blob's state)."""
        if self.container is None:
            return (self.data_dir / "blobs" / "_uploads" / upload_id).stat().st_size
        metadata = self.container.get_blob_client(f"_uploads/{upload_id}").get_blob_properties().metadata
        return int(metadata["acrlocalupload"].split(".")[0])

    def upload_received(self, upload_id: str) -> int:
        """The bytes of the upload that reached the store, whether part of it yet or not (staged blocks)."""
        if self.container is None:
            try:
                return self.upload_size(upload_id)
            except FileNotFoundError:
                return 0  # completed or discarded since it was listed
        from azure.core.exceptions import ResourceNotFoundError

        try:
            _, uncommitted = self.container.get_blob_client(f"_uploads/{upload_id}").get_block_list("uncommitted")
        except ResourceNotFoundError:
            return 0
        return sum(int(block.size) for block in uncommitted)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, its ``?`` placeholders bound to ``params`` in order."""
        pieces = sql.split("?")
        named = "".join(f"{piece}:p{i}" for i, piece in enumerate(pieces[:-1])) + pieces[-1]
        engine = self.server.database()
        try:
            with engine.connect() as conn:
                bound = {f"p{i}": value for i, value in enumerate(params)}
                return [tuple(row) for row in conn.execute(sa.text(named), bound)]
        finally:
            engine.dispose()

    def count(self, sql: str, *params: Any) -> int:
        return int(self.rows(sql, *params)[0][0])


#: For tests of what only files in the data directory show (their ages, bytes cut mid-write).
files_only = pytest.mark.skipif("config.getoption('--blob-backend') != 'files'", reason="a test of the file blob store")


def registry_headers(response: requests.Response) -> Any:
    """The headers the registry answered with: a blob GET followed to the blob store has them on its 307."""
    return response.history[0].headers if response.history else response.headers


def error_code(response: requests.Response) -> str:
    """The first OCI error code of a response, checking the body is the spec's JSON error document."""
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["errors"], list) and body["errors"], body
    for entry in body["errors"]:
        assert re.fullmatch(r"[A-Z_]+", entry["code"]), entry
        assert isinstance(entry["message"], str)
    return str(body["errors"][0]["code"])


@pytest.fixture(scope="session")
def registry(acrlocal: AcrLocal) -> RegistryClient:
    return RegistryClient(acrlocal)


@pytest.fixture(scope="session")
def storage(acrlocal: AcrLocal) -> StorageProbe:
    return StorageProbe(acrlocal)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> Iterator[str]:
    """A repository name no other test uses (tests share one server)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    yield f"t{next(_counter)}/{slug}"


def registry_token(server: AcrLocal, base: str, scope: str, credentials: tuple[str, str]) -> str:
    """An access token for ``scope`` from the token service at ``base``, asked with Basic credentials."""
    host = base.split("://", 1)[1]
    r = requests.get(f"{base}/oauth2/token", params={"service": host, "scope": scope}, auth=credentials,
                     verify=server.ca, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def repository_writer(server: AcrLocal, repo: str) -> tuple[str, RegistryClient, dict[str, str]]:
    """For a test that races writes to ``repo``: the login server's base URL, a client of ``server``, and a bearer
    header with pull, push and delete on ``repo`` from the token service."""
    base = f"https://{server.login_server()}"
    token = registry_token(server, base, f"repository:{repo}:pull,push,delete", server.registry_credentials())
    return base, RegistryClient(server), {"Authorization": f"Bearer {token}"}


def at_once(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run ``calls`` in threads released together; their responses in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def serial_order(put: requests.Response, delete: requests.Response) -> bool:
    """Whether an index PUT and the racing DELETE of a manifest it names ended as one of the two serial orders:
    the index first (201, and the delete refused because the index names it), or the delete first (202, and the
    index refused for naming a manifest that is gone)."""
    if put.status_code == 201:
        return delete.status_code == 405 and error_code(delete) == "REGISTRY_DISALLOWED_OPERATION"
    return (put.status_code == 404 and error_code(put) == "MANIFEST_BLOB_UNKNOWN"
            and delete.status_code == 202)


def race_index_put_with_child_delete(client: RegistryClient, base: str, repo: str, auth: dict[str, str],
                                     through: Callable[..., requests.Response],
                                     round_: int) -> tuple[Manifest, Manifest, requests.Response]:
    """One round of the race: a child manifest pushed, then the PUT of an index naming it and the DELETE of the
    child at once, each through one of two processes (``through(side, method, url, **kw)``; the sides swap every
    round), asserted to end in a :func:`serial_order`. The child, the index and the PUT's response; an index
    that was stored is deleted again."""
    child = client.push_image(repo, None, layers=1)
    idx = index([(child, {"architecture": "amd64", "os": "linux"})])
    p, d = round_ % 2, 1 - round_ % 2  # each process takes each side
    put, delete = at_once(
        partial(through, p, "PUT", f"{base}/v2/{repo}/manifests/{idx.digest}", data=idx.body,
                headers={**auth, "Content-Type": idx.media_type}),
        partial(through, d, "DELETE", f"{base}/v2/{repo}/manifests/{child.digest}", headers=auth))
    assert serial_order(put, delete), (put.status_code, put.text, delete.status_code, delete.text)
    if put.status_code == 201:  # the index goes again, so that the next round's child is not named
        assert through(p, "DELETE", f"{base}/v2/{repo}/manifests/{idx.digest}", headers=auth).status_code == 202
    return child, idx, put


def tag_moved_in_the_database(server: AcrLocal, repo: str) -> tuple[Manifest, Manifest, dict[str, str], str]:
    """Two images of ``repo``, the first tagged ``v1``; returns them, pull headers and the tag's manifest URL, and
    leaves the tag where it is. :func:`move_tag_in_the_database` then moves it as a process that dies before it
    announces its commit would."""
    base = f"https://{server.login_server()}"
    client = RegistryClient(server)
    first, second = client.push_image(repo, "v1"), client.push_image(repo, None)
    token = registry_token(server, base, f"repository:{repo}:pull", server.registry_credentials())
    return first, second, {"Authorization": f"Bearer {token}", "Accept": first.media_type}, \
        f"{base}/v2/{repo}/manifests/v1"


def move_tag_in_the_database(server: AcrLocal, tag: str, digest: str) -> None:
    """Point every tag named ``tag`` at the manifest ``digest``, straight in the database (no announcement)."""
    with server.database().begin() as conn:
        moved = conn.execute(sa.text(
            "UPDATE tags SET manifest_id = (SELECT id FROM manifests WHERE digest = :digest) WHERE name = :tag"
        ), {"digest": digest, "tag": tag})
        assert moved.rowcount == 1
