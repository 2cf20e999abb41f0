"""Input that cannot be read is answered 4xx in each protocol's own format, never 500, and logs no traceback.

A byte that is not ASCII in ``Authorization`` or another header, a form that is not UTF-8, JSON nested past
the limit and bodies past the size limit, sent on raw sockets to every room of one server of the module's own
(so its log holds only these requests); then the log is checked and the server still serves.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import AcrLocal, running
from tests.rawhttp import Response, send

NOT_ASCII = b"\xff\xfe\x80"
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
JUST_TOO_DEEP = b"[" * 65 + b"]" * 65
SIX_MIB = b'{"x": "' + b"a" * (6 << 20) + b'"}'
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FORM = (b"Content-Type", b"application/x-www-form-urlencoded")
NOT_UTF8_FORM = b"grant_type=\xff\xfe&service=\xfe"


@dataclass
class Target:
    """Where to send: the server's ports, CA and tokens for each room."""

    server: AcrLocal
    tenant: str
    subscription: str
    arm_token: bytes
    graph_token: bytes
    refresh_token: str

    @property
    def shared(self) -> int:
        return int(self.server.shared.rsplit(":", 1)[1])

    @property
    def registry(self) -> int:
        return int(self.server.registry()["port"])

    def registry_token(self, scope: str) -> bytes:
        login = self.server.login_server()
        r = self.server.session().post(f"https://{login}/oauth2/token", data={
            "grant_type": "refresh_token", "service": login, "refresh_token": self.refresh_token, "scope": scope})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"]).encode()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running(tmp_path_factory.mktemp("unreadable") / "data") as server:
        cred = server.admin_credential()
        yield Target(server, cred["tenantId"], server.status["subscriptionId"],
                     server.admin_token("https://management.azure.com/.default").encode(),
                     server.admin_token("https://graph.microsoft.com/.default").encode(),
                     server.registry_credentials()[1])


def oci(r: Response, status: int, code: str) -> None:
    assert r.status == status, r.body[:300]
    assert r.json()["errors"][0]["code"] == code, r.body[:300]


def arm(r: Response, status: int, code: str) -> None:
    assert r.status == status, r.body[:300]
    assert r.json()["error"]["code"] == code, r.body[:300]


graph = arm  # Graph's body is {"error": {"code", "message", "innerError"}} too


def oauth(r: Response, status: int, error: str) -> None:
    assert r.status == status, r.body[:300]
    body = r.json()
    assert body["error"] == error and body["error_codes"], r.body[:300]


def bearer(token: bytes) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Bearer " + token)


Case = Callable[[Target], None]


def case_registry_bearer_not_ascii(t: Target) -> None:
    r = send(t.registry, t.server.ca, "GET", "/v2/", headers=[bearer(NOT_ASCII)])
    oci(r, 401, "UNAUTHORIZED")
    assert "error=\"invalid_token\"" in r.headers["www-authenticate"]


def case_registry_basic_not_ascii(t: Target) -> None:
    for value in (b"Basic " + NOT_ASCII, b"Basic " + base64.b64encode(NOT_ASCII + b":" + NOT_ASCII)):
        r = send(t.registry, t.server.ca, "GET", "/oauth2/token?service=x&scope=repository:a:pull",
                 headers=[(b"Authorization", value)])
        oci(r, 401, "UNAUTHORIZED")


def case_registry_form_not_utf8(t: Target) -> None:
    for path in ("/oauth2/token", "/oauth2/exchange"):
        oci(send(t.registry, t.server.ca, "POST", path, headers=[FORM], body=NOT_UTF8_FORM), 400, "INVALID_REQUEST")


def case_registry_by_host_bearer_not_ascii(t: Target) -> None:
    """The same registry addressed by host name on the shared port."""
    host = t.server.registry()["hostLoginServer"].split(":")[0]
    oci(send(t.shared, t.server.ca, "GET", "/v2/", headers=[bearer(NOT_ASCII)], host=host), 401, "UNAUTHORIZED")


def case_duplicate_host(t: Target) -> None:
    """A request aiohttp cannot parse is refused before any handler (400, plain text), and logged as the
    client's mistake."""
    r = send(t.shared, t.server.ca, "GET", "/v2/", headers=[(b"Host", b"localhost")])
    assert r.status == 400


def case_header_aiohttp_cannot_parse(t: Target) -> None:
    """A control character in a header value (with a ``%`` that the log line must not take as a format)."""
    r = send(t.shared, t.server.ca, "GET", "/v2/", headers=[(b"X-Odd", b"%s%d\x01")])
    assert r.status == 400


def case_arm_bearer_not_ascii(t: Target) -> None:
    r = send(t.shared, t.server.ca, "GET", f"/subscriptions/{t.subscription}?api-version=2022-12-01",
             headers=[bearer(NOT_ASCII), (b"X-IDENTITY-HEADER", NOT_ASCII), (b"x-ms-correlation-request-id",
                                                                              NOT_ASCII)])
    arm(r, 401, "AuthenticationFailed")


def case_arm_correlation_id_not_ascii(t: Target) -> None:
    r = send(t.shared, t.server.ca, "GET", f"/subscriptions/{t.subscription}?api-version=2022-12-01",
             headers=[bearer(t.arm_token), (b"x-ms-correlation-request-id", NOT_ASCII)])
    assert r.status == 200, r.body[:300]
    assert r.headers["x-ms-correlation-request-id"].isascii()


def case_graph_bearer_not_ascii(t: Target) -> None:
    r = send(t.shared, t.server.ca, "GET", "/v1.0/applications", headers=[bearer(NOT_ASCII),
                                                                          (b"client-request-id", NOT_ASCII)])
    graph(r, 401, "InvalidAuthenticationToken")


def case_entra_form_not_utf8(t: Target) -> None:
    for path in (f"/{t.tenant}/oauth2/v2.0/token", f"/{t.tenant}/oauth2/token", f"/{t.tenant}/oauth2/v2.0/devicecode"):
        r = send(t.shared, t.server.ca, "POST", path, headers=[FORM, (b"X-IDENTITY-HEADER", NOT_ASCII)],
                 body=NOT_UTF8_FORM)
        oauth(r, 400, "invalid_request")


def case_signin_pages_form_not_utf8(t: Target) -> None:
    for path in (f"/{t.tenant}/oauth2/v2.0/authorize?client_id=04b07795-8ddb-461a-bbee-02f9e1bf7b46&response_type=code"
                 "&redirect_uri=http://localhost:1/&code_challenge=x&code_challenge_method=S256&scope=openid",
                 "/devicelogin"):
        r = send(t.shared, t.server.ca, "POST", path, headers=[FORM], body=NOT_UTF8_FORM)
        assert r.status == 400, r.body[:300]
        assert b"AADSTS9002313" in r.body


def case_manifest_put_too_deep(t: Target) -> None:
    token = t.registry_token("repository:deep/manifest:pull,push")
    for body in (DEEP_ARRAY, DEEP_OBJECT, JUST_TOO_DEEP):
        r = send(t.registry, t.server.ca, "PUT", "/v2/deep/manifest/manifests/v1",
                 headers=[bearer(token), (b"Content-Type", MANIFEST.encode())], body=body)
        oci(r, 400, "MANIFEST_INVALID")


def case_manifest_put_lone_surrogate(t: Target) -> None:
    token = t.registry_token("repository:deep/manifest:pull,push")
    body = b'{"schemaVersion": 2, "manifests": [], "annotations": {"a": "\\ud800"}}'
    r = send(t.registry, t.server.ca, "PUT", "/v2/deep/manifest/manifests/v1",
             headers=[bearer(token), (b"Content-Type", b"application/vnd.oci.image.index.v1+json")], body=body)
    oci(r, 400, "MANIFEST_INVALID")


def case_acr_patch_too_deep(t: Target) -> None:
    token = t.registry_token("repository:deep/acr:metadata_write")
    r = send(t.registry, t.server.ca, "PATCH", "/acr/v1/deep/acr", headers=[bearer(token)], body=DEEP_OBJECT)
    oci(r, 400, "UNSUPPORTED")


def case_arm_put_too_deep(t: Target) -> None:
    for body in (DEEP_OBJECT, DEEP_ARRAY, b"{location: 'x', tags: " + DEEP_ARRAY + b"}"):
        r = send(t.shared, t.server.ca, "PUT",
                 f"/subscriptions/{t.subscription}/resourcegroups/deep?api-version=2022-09-01",
                 headers=[bearer(t.arm_token)], body=body)
        arm(r, 400, "InvalidRequestContent")


def case_graph_post_too_deep(t: Target) -> None:
    r = send(t.shared, t.server.ca, "POST", "/v1.0/applications", headers=[bearer(t.graph_token)],
             body=DEEP_OBJECT)
    graph(r, 400, "BadRequest")


def case_lone_surrogate_in_arm_and_graph(t: Target) -> None:
    r = send(t.shared, t.server.ca, "PUT",
             f"/subscriptions/{t.subscription}/resourcegroups/surrogate?api-version=2022-09-01",
             headers=[bearer(t.arm_token)], body=b'{"location": "westus", "tags": {"a": "\\ud800"}}')
    arm(r, 400, "InvalidRequestContent")
    r = send(t.shared, t.server.ca, "POST", "/v1.0/applications", headers=[bearer(t.graph_token)],
             body=b'{"displayName": "\\ud800"}')
    graph(r, 400, "BadRequest")


def case_arm_put_six_mib(t: Target) -> None:
    r = send(t.shared, t.server.ca, "PUT",
             f"/subscriptions/{t.subscription}/resourcegroups/big?api-version=2022-09-01",
             headers=[bearer(t.arm_token)], body=SIX_MIB)
    arm(r, 413, "RequestEntityTooLarge")


def case_graph_post_six_mib(t: Target) -> None:
    r = send(t.shared, t.server.ca, "POST", "/v1.0/applications", headers=[bearer(t.graph_token)], body=SIX_MIB)
    graph(r, 413, "Request_EntityTooLarge")


def case_registry_token_form_six_mib(t: Target) -> None:
    r = send(t.registry, t.server.ca, "POST", "/oauth2/token", headers=[FORM], body=b"a=" + b"b" * (6 << 20))
    assert r.status in (400, 413) and r.json()["errors"], r.body[:300]


CASES = [f for name, f in sorted(globals().items()) if name.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
def test_answered_in_the_protocols_format(target: Target, case: Case) -> None:
    case(target)


def test_nothing_was_logged_as_a_server_error_and_the_server_serves(target: Target) -> None:
    for case in CASES:  # also when this test runs alone
        case(target)
    log = Path(target.server.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]
    assert target.server.session().get(f"{target.server.shared}/healthz").status_code == 200
    r = send(target.registry, target.server.ca, "GET", "/v2/", headers=[bearer(target.registry_token(
        "repository:deep/manifest:pull"))])
    assert r.status == 200
