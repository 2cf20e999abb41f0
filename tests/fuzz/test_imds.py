"""IMDS (a VM's ``169.254.169.254``) fuzzed over HTTP on loopback: the application every VM's IMDS door serves
(:func:`acrlocal.identity.imds.build_app`), run in a thread of the test with one VM of fixed facts standing for
the compute runtime (which needs a VM's network namespace; here every connection is that VM's), and a real token
issuer. The token endpoint and the instance metadata get random queries (api-version, resource, the identity
selectors, format) and headers (``Metadata``, ``X-Forwarded-For``), near-valid and junk.

Properties: never a 5xx; every refusal is IMDS's JSON error (``error`` and ``error_description`` for tokens,
``error`` and ``newest-versions`` for instance metadata); a token is only answered to a request with
``Metadata: true``, a valid api-version and a resource, for the identity the selector names, with the resource
echoed exactly; and nothing was logged at ERROR level."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from aiohttp import web
from hypothesis import given, reject
from hypothesis import strategies as st

from acrlocal.identity.bootstrap import bootstrap
from acrlocal.identity.directory import Directory, Principal
from acrlocal.identity.imds import INSTANCE_API_VERSIONS, VMIdentities, build_app
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import TokenIssuer
from acrlocal.server import quiet_client_errors
from acrlocal.storage.sql import open_engine
from tests.fuzz import strategies as s
from tests.fuzz.conftest import clean, count

SUB = "00000000-0000-0000-0000-0000000000aa"
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg"
IDENTITY_IDS = [f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{i}" for i in (1, 2)]


@dataclass
class VM:
    vm_id: str = "11111111-2222-3333-4444-555555555555"
    resource_id: str = f"{GROUP}/providers/Microsoft.Compute/virtualMachines/vm1"
    name: str = "vm1"
    resource_group: str = "rg"
    subscription_id: str = SUB
    location: str = "westus"
    profile: Mapping[str, Any] = field(default_factory=lambda: {
        "tags": {"env": "fuzz", "a;b": "c:d"}, "adminUsername": "azureuser", "vmSize": "Standard_B1s",
        "imageReference": {"publisher": "Canonical", "offer": "ubuntu", "sku": "22_04-lts", "version": "latest"},
        "osDisk": {"diskSizeGB": 30}})


class OneVM:
    """Every request comes from :class:`VM`, which holds a system-assigned and two user-assigned identities."""

    def __init__(self, tenant: str) -> None:
        self.vm = VM()
        self.held = VMIdentities(
            Principal("00000000-0000-0000-0000-00000000005a", tenant, "ManagedIdentity",
                      "00000000-0000-0000-0000-00000000005b", "vm1", mi_kind="system"),
            tuple(Principal(f"00000000-0000-0000-0000-0000000000{i}a", tenant, "ManagedIdentity",
                            f"00000000-0000-0000-0000-0000000000{i}b", f"u{i}", resource_id=IDENTITY_IDS[i - 1],
                            mi_kind="user") for i in (1, 2)))

    def vm_of_request(self, request: web.Request) -> VM:
        return self.vm

    async def identities(self, vm: VM) -> VMIdentities:
        return self.held


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass
class Imds:
    url: str
    http: requests.Session
    vms: OneVM
    errors: Errors


def _serve(app: web.Application, ready: threading.Event, port: list[int], stop: list[Any]) -> None:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    stopped = asyncio.Event()
    stop.append((loop, stopped))
    ready.set()
    loop.run_until_complete(stopped.wait())
    loop.run_until_complete(runner.cleanup())
    loop.close()


@pytest.fixture(scope="module")
def imds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imds]:
    root: Path = tmp_path_factory.mktemp("fuzz-imds")
    engine = open_engine(f"sqlite:///{root / 'imds.db'}")
    admin = bootstrap(Directory(engine), root)
    vms = OneVM(admin.tenantId)
    app = build_app(vms, TokenIssuer(KeyRing(engine), "https://localhost:8443"), rate_limit=0)
    errors = Errors()
    quiet_client_errors()  # as the server does: a request no HTTP parser takes is the client's fault
    logging.getLogger().addHandler(errors)
    ready, port, stop = threading.Event(), [], []  # type: ignore[var-annotated]
    thread = threading.Thread(target=_serve, args=(app, ready, port, stop), daemon=True)
    thread.start()
    assert ready.wait(30)
    http = requests.Session()
    http.trust_env = False
    try:
        yield Imds(f"http://127.0.0.1:{port[0]}", http, vms, errors)
    finally:
        loop, stopped = stop[0]
        loop.call_soon_threadsafe(stopped.set)
        thread.join(30)
        logging.getLogger().removeHandler(errors)


def answered(imds: Imds, path: str, query: dict[str, str], headers: dict[str, str], kind: str) -> requests.Response:
    try:
        r = imds.http.get(imds.url + path, params=query, headers=headers, timeout=30)
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
        reject()  # a request requests itself refuses to send
    count(kind, r.status_code)
    assert r.status_code < 500, (path, query, headers, r.status_code, r.text[:300])
    return r


api_versions = st.one_of(st.sampled_from(["2018-02-01", "2019-08-01", "2021-02-01", "2017-12-01", "2018-2-1",
                                          "2099-12-31", "2018-02-01x", "\uff12\uff10\uff11\uff18-02-01", ""]),
                         st.sampled_from(INSTANCE_API_VERSIONS), s.mutated(st.just("2018-02-01")), s.junk)
resources = st.one_of(st.sampled_from(["https://management.azure.com/", "https://management.azure.com",
                                       "https://vault.azure.net", "https://storage.azure.com/", "api://x", ""]),
                      s.mutated(st.just("https://management.azure.com/")), s.junk)
metadata_headers = st.dictionaries(
    st.sampled_from(["Metadata", "X-Forwarded-For", "metadata"]),
    st.one_of(st.sampled_from(["true", "True", "TRUE", "false", "1", "", "127.0.0.1"]), s.junk).map(
        # (bytes no HTTP parser takes in a header are test_http's test_raw_header_bytes)
        lambda v: "".join(c for c in v.encode("utf-8", "replace").decode("latin-1") if " " <= c != "\x7f")),
    max_size=2)


def selectors(vms: OneVM) -> st.SearchStrategy[dict[str, str]]:
    known = [p.app_id for p in vms.held.all()] + [p.object_id for p in vms.held.all()] + IDENTITY_IDS
    value = st.one_of(st.sampled_from(known), st.sampled_from(known).map(str.upper), s.mutated(st.sampled_from(known)),
                      s.guids, s.arm_ids(SUB), s.junk)
    return st.dictionaries(st.sampled_from(["client_id", "object_id", "msi_res_id", "mi_res_id", "principal_id",
                                            "resource_id", "bypass_cache"]), value, max_size=2)


@given(st.data(), api_versions, resources, metadata_headers)
def test_identity_tokens(imds: Imds, data: st.DataObject, version: str, resource: str,
                         headers: dict[str, str]) -> None:
    query = {"api-version": version, "resource": resource, **data.draw(selectors(imds.vms))}
    for key in data.draw(st.lists(st.sampled_from(["api-version", "resource"]), max_size=1)):
        query.pop(key)
    query = clean(query)
    if data.draw(st.integers(0, 3)):
        headers = {**headers, "Metadata": "true"}
    r = answered(imds, "/metadata/identity/oauth2/token", query, headers, "imds token")
    body = r.json()
    if r.status_code != 200:
        assert isinstance(body["error"], str) and isinstance(body["error_description"], str), r.text
        return
    sent = r.request.headers  # (case-insensitive: what was sent of "metadata" and "Metadata")
    assert sent.get("Metadata", "").lower() == "true" and "X-Forwarded-For" not in sent
    assert body["resource"] == query["resource"] and body["token_type"] == "Bearer"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == query["resource"] and claims["appid"] == body["client_id"]
    assert body["client_id"] in {p.app_id for p in imds.vms.held.all()}


@given(st.lists(st.one_of(st.sampled_from(["compute", "network", "interface", "0", "ipv4", "ipAddress",
                                           "privateIpAddress", "tagsList", "tags", "name", "storageProfile",
                                           "osDisk", "1", "-1", "00", "\u0660"]), s.junk), max_size=5),
       st.dictionaries(st.sampled_from(["api-version", "format"]),
                       st.one_of(st.sampled_from([*INSTANCE_API_VERSIONS[-3:], "text", "json", "xml"]), s.junk),
                       max_size=2),
       metadata_headers, st.sampled_from(["/metadata/instance", "/metadata/versions"]))
def test_instance_metadata(imds: Imds, parts: list[str], query: dict[str, str], headers: dict[str, str],
                           base: str) -> None:
    from urllib.parse import quote
    path = base + "".join("/" + quote(clean(p), safe="") for p in parts) if base.endswith("instance") else base
    r = answered(imds, path, clean(query), {"Metadata": "true", **headers} if len(headers) < 2 else headers,
                 "imds instance")
    if r.status_code >= 400 and r.headers.get("Content-Type", "").startswith("application/json"):
        body = r.json()
        assert isinstance(body["error"], str), r.text
    elif r.status_code >= 400:
        assert r.status_code == 404 and r.text == "404: Not Found", r.text  # a path that names no endpoint


def test_nothing_was_logged_at_error_level(imds: Imds) -> None:
    assert not imds.errors.records, "\n".join(imds.errors.records)[-6000:]


def test_an_instance_path_with_a_line_feed_is_imds_own_not_found(imds: Imds) -> None:
    """A segment holding a line feed names nothing in the instance document: IMDS's own 404 in its JSON shape,
    not the web framework's plain-text one."""
    r = imds.http.get(f"{imds.url}/metadata/instance/compute%0Aname", params={"api-version": "2021-02-01"},
                      headers={"Metadata": "true"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"] == "Not found", r.text
    assert r.json()["newest-versions"]
