"""The fuzz suite's settings and its count.

The servers the HTTP fuzz modules drive: :class:`World` and its ``world`` fixture, one server per module (a
module's last test checks that server's log).

Hypothesis's profiles (``ci`` and ``long``) are set in ``tests/conftest.py``. Every
example counts itself (:func:`count`); the session prints the totals and, when ``$FUZZ_REPORT`` names a file,
appends them to it as one JSON line (``scripts/fuzz`` adds the rounds up).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from hypothesis import reject

from tests.harness import AcrLocal, running
from tests.ocitools import config_blob, image, tar_layer

TOTALS: Counter[str] = Counter()


def count(kind: str, status: int | None = None) -> None:
    """One example of ``kind`` was run (``status``: the HTTP status it got, for requests)."""
    TOTALS["examples"] += 1
    TOTALS[f"examples.{kind}"] += 1
    if status is not None:
        TOTALS["requests"] += 1
        if status >= 500:
            TOTALS["5xx"] += 1


def clean(value: Any) -> Any:
    """What an HTTP client can send of a drawn value: text as UTF-8 (a lone surrogate becomes ``?``), recursively."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def latin1(value: str) -> str:
    """A header value ``requests`` can send: the UTF-8 bytes of ``value`` as latin-1 text."""
    return value.encode("utf-8", "replace").decode("latin-1")


ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
REPO = "fuzz/base"


@dataclass(repr=False)
class World:
    server: AcrLocal
    http: requests.Session
    refresh: str
    arm: str
    graph: str
    manifest: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def login(self) -> str:
        return self.server.login_server()

    @property
    def registry(self) -> str:
        return f"https://{self.login}"

    @property
    def subscription(self) -> str:
        return str(self.server.status["subscriptionId"])

    @property
    def tenant(self) -> str:
        return str(self.server.status["tenantId"])

    @property
    def domain(self) -> str:
        """The default tenant's domain (that of the local administrator's user name)."""
        admin = json.loads((self.server.data_dir / "admin.json").read_text())
        return str(admin["userPrincipalName"]).split("@")[1]

    def registry_token(self, scope: str) -> str | None:
        """An access token for ``scope`` as the local administrator, or ``None`` if the token service refuses
        the scope (a name that is not a repository name); remembered per scope."""
        if scope not in self.tokens:
            r = self.http.post(f"{self.registry}/oauth2/token", data={
                "grant_type": "refresh_token", "service": self.login, "refresh_token": self.refresh, "scope": scope})
            assert r.status_code < 500, r.text
            if r.status_code != 200:
                return None
            if len(self.tokens) > 500:
                self.tokens.clear()
            self.tokens[scope] = r.json()["access_token"]
        return self.tokens[scope]

    def __repr__(self) -> str:
        return f"World({self.server.shared})"

    def answered(self, send: Callable[[], requests.Response], kind: str) -> requests.Response:
        """The response to ``send()``, which must not be a 5xx; a request ``requests`` itself refuses to send (a
        header value it finds invalid, a URL it cannot parse) is rejected as an example, not sent."""
        try:
            r = send()
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
            reject()
        count(kind, r.status_code)
        assert r.status_code < 500, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}"
        return r

    def catalog(self) -> list[str]:
        token = self.registry_token("registry:catalog:*")
        r = self.http.get(f"{self.registry}/v2/_catalog", params={"n": "1000"},
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return list(r.json()["repositories"])

    def tags(self, repo: str = REPO) -> list[str]:
        token = self.registry_token(f"repository:{repo}:pull")
        r = self.http.get(f"{self.registry}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"})
        return list(r.json().get("tags") or []) if r.status_code == 200 else []

    def arm_state(self) -> tuple[list[str], list[str]]:
        auth = {"Authorization": f"Bearer {self.arm}"}
        base = f"{self.server.shared}/subscriptions/{self.subscription}"
        groups = self.http.get(f"{base}/resourcegroups", params={"api-version": "2022-09-01"}, headers=auth)
        resources = self.http.get(f"{base}/resources", params={"api-version": "2022-09-01"}, headers=auth)
        assert groups.status_code == 200 and resources.status_code == 200, (groups.text, resources.text)
        return (sorted(g["id"] for g in groups.json()["value"]), sorted(r["id"] for r in resources.json()["value"]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running(tmp_path_factory.mktemp("fuzz-http") / "data") as server:
        http = server.session()
        _, refresh = server.registry_credentials()
        w = World(server, http, refresh, server.admin_token(ARM_SCOPE), server.admin_token(GRAPH_SCOPE), {})
        # A repository with an image, so that mutated manifests may refer to blobs that exist.
        token = w.registry_token(f"repository:{REPO}:pull,push")
        auth = {"Authorization": f"Bearer {token}"}
        layer, config = tar_layer({"hello.txt": b"fuzz\n"}), config_blob()
        for blob in (config, layer):
            r = http.post(f"{w.registry}/v2/{REPO}/blobs/uploads/?digest={blob.digest}", data=blob.data,
                          headers=auth)
            assert r.status_code == 201, r.text
        built = image(config, [layer])
        r = http.put(f"{w.registry}/v2/{REPO}/manifests/v1", data=built.body,
                     headers={**auth, "Content-Type": built.media_type})
        assert r.status_code == 201, r.text
        w.manifest = json.loads(built.body)
        yield w



def assert_logged_no_error(world: World) -> None:
    """The server's log holds no traceback and nothing at ERROR level (a module's last test)."""
    log = world.server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, log[-6000:]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TOTALS:
        return
    terminalreporter.write_line(f"fuzz: {TOTALS['examples']} examples, {TOTALS['requests']} HTTP requests, "
                                f"{TOTALS['5xx']} answered 5xx")
    if path := os.environ.get("FUZZ_REPORT"):
        with open(path, "a") as report:
            report.write(json.dumps(dict(TOTALS)) + "\n")
