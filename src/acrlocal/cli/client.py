"""HTTPS to the control plane, Graph and the registries, the way az's clients talk to them.

:class:`Http` is one ``requests`` session that trusts the local CA (passed per request, since ``REQUESTS_CA_BUNDLE``
would otherwise override the session's ``verify``), logs each request with ``--debug`` (never a header or a body)
and turns a connection failure into a :class:`~acrlocal.cli.errors.ServerNotRunning`.

:class:`ArmClient` adds the bearer token and ``api-version``, follows ``nextLink`` for lists, waits for
long-running operations (``Azure-AsyncOperation`` or ``Location``, as azure-mgmt's pollers do) and turns ARM's
``{"error": {"code", "message"}}`` into :class:`~acrlocal.cli.errors.HttpResponseError` (404:
:class:`~acrlocal.cli.errors.ResourceNotFound`). A token the server rejects with 401 is dropped from the cache and
the request is sent once more with a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urljoin

import requests

from acrlocal.cli.errors import CLIError, HttpResponseError, ResourceNotFound, ServerNotRunning
from acrlocal.cli.framework import debug

USER_AGENT = "acrlocal-cli (AZURECLI-compatible) python-requests"
LRO_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_on: int


class TokenSource(Protocol):
    def get_token(self, resource: str, *, fresh: bool = False) -> AccessToken: ...


class Http:
    def __init__(self, verify: str | bool) -> None:
        self.verify = verify
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("timeout", 60)
        debug(f"Request: {method} {url.split('?')[0]}")
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise CLIError(f"TLS verification of {url.split('?')[0]} failed: {exc}. The CLI trusts the CA in "
                           f"{self.verify!r}.") from None
        except requests.exceptions.ConnectionError:
            raise ServerNotRunning(f"Failed to connect to {url.split('?')[0]}: is acrlocal running? "
                                   "Start it with `acrlocal up`.") from None
        debug(f"Response: {response.status_code} {method} {url.split('?')[0]}")
        return response


def arm_error(response: requests.Response) -> HttpResponseError:
    """az's error for an ARM (or Graph) error answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code, message = "", ""
    if isinstance(body, dict):
        err = body.get("error", body.get("Error"))
        if isinstance(err, dict):
            code = str(err.get("code", err.get("Code", "")))
            message = str(err.get("message", err.get("Message", "")))
        elif isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
    if not code:
        code = {400: "BadRequest", 401: "AuthenticationFailed", 403: "AuthorizationFailed",
                404: "NotFound", 409: "Conflict"}.get(response.status_code, str(response.status_code))
    if not message:
        message = (response.text or response.reason or "").strip()[:500]
    cls = ResourceNotFound if response.status_code == 404 else HttpResponseError
    return cls(response.status_code, code, message, body)


class ArmClient:
    """Requests to a token-protected JSON API (ARM or Graph) rooted at ``base``."""

    def __init__(self, http: Http, base: str, tokens: TokenSource, resource: str) -> None:
        self.http = http
        self.base = base if base.endswith("/") else base + "/"
        self.tokens = tokens
        self.resource = resource

    def url(self, path: str) -> str:
        """``path`` under the base URL, percent-encoded as az encodes its path parameters: a name is sent as given
        (urljoin alone would drop a line feed, and ``?`` or ``#`` would end the path), and the server refuses what
        it must. Queries go in ``params``, never in ``path``."""
        return urljoin(self.base, quote(path.lstrip("/"), safe="/:@!$&'()*+,;="))

    def send(self, method: str, path_or_url: str, *, api_version: str | None = None,
             body: Any = None, params: dict[str, str] | None = None,
             timeout: float | None = None) -> requests.Response:
        url = path_or_url if path_or_url.startswith("https://") else self.url(path_or_url)
        query = dict(params or {})
        if api_version and "api-version=" not in url:
            query["api-version"] = api_version
        for attempt in (0, 1):
            token = self.tokens.get_token(self.resource, fresh=attempt == 1)
            headers = {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}
            response = self.http.request(method, url, params=query or None, json=body, headers=headers,
                                         timeout=timeout or 60)
            if response.status_code != 401 or attempt == 1:
                return response
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, *, api_version: str | None = None, body: Any = None,
             params: dict[str, str] | None = None, wait: bool = True, timeout: float | None = None) -> Any:
        """The JSON answer (``None`` for an empty one); errors raised in az's words; operations awaited.
        ``timeout`` is the seconds to wait for the answer (default 60)."""
        response = self.send(method, path, api_version=api_version, body=body, params=params, timeout=timeout)
        if response.status_code >= 400:
            raise arm_error(response)
        if wait and response.status_code in (201, 202):
            final = self._wait(response)
            if final is not None:
                response = final
            elif method in ("PUT", "PATCH"):
                response = self.send("GET", path, api_version=api_version)
                if response.status_code >= 400:
                    raise arm_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CLIError(f"{method} {path} answered {response.status_code} with a body that is not JSON") from None

    def _wait(self, response: requests.Response) -> requests.Response | None:
        """Poll a long-running operation; the final answer of a ``Location`` poll, or ``None``."""
        async_op = response.headers.get("Azure-AsyncOperation")
        location = response.headers.get("Location")
        if not async_op and not location:
            return None
        deadline = time.monotonic() + LRO_TIMEOUT_S
        delay = 0.1
        while time.monotonic() < deadline:
            if async_op:
                poll = self.send("GET", async_op)
                if poll.status_code >= 400:
                    raise arm_error(poll)
                status = str((poll.json() if poll.content else {}).get("status", "Succeeded"))
                if status.lower() in ("succeeded", "failed", "canceled", "cancelled"):
                    if status.lower() != "succeeded":
                        err = (poll.json() or {}).get("error", {})
                        raise HttpResponseError(200, str(err.get("code", status)),
                                                str(err.get("message", f"The operation ended {status}.")))
                    return None
            else:
                assert location is not None
                poll = self.send("GET", location)
                if poll.status_code >= 400:
                    raise arm_error(poll)
                if poll.status_code != 202:
                    return poll
            time.sleep(min(float(poll.headers.get("Retry-After", delay) or delay), 2.0))
            delay = min(delay * 2, 1.0)
        raise CLIError(f"The operation did not finish within {LRO_TIMEOUT_S:.0f} seconds.")

    def get(self, path: str, api_version: str, **kw: Any) -> Any:
        return self.call("GET", path, api_version=api_version, **kw)

    def put(self, path: str, api_version: str, body: Any, **kw: Any) -> Any:
        return self.call("PUT", path, api_version=api_version, body=body, **kw)

    def patch(self, path: str, api_version: str, body: Any, **kw: Any) -> Any:
        return self.call("PATCH", path, api_version=api_version, body=body, **kw)

    def post(self, path: str, api_version: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, api_version=api_version, body=body, **kw)

    def delete(self, path: str, api_version: str, **kw: Any) -> Any:
        return self.call("DELETE", path, api_version=api_version, **kw)

    def list(self, path: str, api_version: str, params: dict[str, str] | None = None,
             keep: Callable[[dict[str, Any]], bool] | None = None) -> list[Any]:
        """Every item of a paged ``{"value": [...], "nextLink": ...}`` answer."""
        items: list[Any] = []
        page = self.get(path, api_version, params=params)
        while True:
            values = page.get("value", []) if isinstance(page, dict) else []
            items += [v for v in values if keep is None or keep(v)]
            next_link = page.get("nextLink") if isinstance(page, dict) else None
            if not next_link:
                return items
            page = self.call("GET", next_link)
