"""Fixtures for the data-plane tests: an HTTP client for a registry of a running server, a fresh repository name
per test, and a probe that looks at what the server stored (files under the data dir, rows in its database)."""

from __future__ import annotations

import itertools
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from acrlocal.registry.paths import Endpoint, parse_path
from tests.harness import AcrLocal, ChallengeAuth
from tests.ocitools import Blob, Manifest, config_blob, image, tar_layer

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
        return self.http.request(method, self.url(path), allow_redirects=False, **kwargs)

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
    """What the server has on disk and in its database (read-only, while it runs)."""

    def __init__(self, server: AcrLocal) -> None:
        self.server = server
        self.data_dir = server.data_dir

    def blob_file(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.data_dir / "blobs" / algorithm / encoded[:2] / encoded

    def upload_files(self) -> set[str]:
        return {p.name for p in (self.data_dir / "blobs" / "_uploads").iterdir()}

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
