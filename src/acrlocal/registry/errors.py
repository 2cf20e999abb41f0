"""The OCI Distribution error codes, in one place, and their JSON body.

Every error the data plane answers is a :class:`RegistryError`; the HTTP layer renders it as
``{"errors": [{"code", "message", "detail"}]}`` with the code's status. Constructors are named after the spec's
codes so call sites read like the spec.
"""

from __future__ import annotations

import json
from typing import Any

from acrlocal.errors import ProtocolError

# code -> (HTTP status, default message), as the OCI Distribution Spec v1.1 lists them.
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (404, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not in the spec's table but used by Distribution and the spec's prose:
    "RANGE_INVALID": (416, "invalid content range"),
    "MANIFEST_TOO_LARGE": (413, "manifest too large"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "UNKNOWN": (500, "unknown error"),
    "UNAVAILABLE": (503, "service unavailable"),  # Distribution's code for a 503
    # ACR's own: a lock (changeable attribute) forbids the operation; a tag that does not exist (/acr/v1).
    "REGISTRY_DISALLOWED_OPERATION": (405, "The operation is disallowed on this registry, repository or image."),
    "TAG_UNKNOWN": (404, "the specified tag does not exist"),
    # The token service's malformed requests (a bad grant type, scope or form):
    "INVALID_REQUEST": (400, "invalid request"),
}


class RegistryError(ProtocolError):
    """An OCI error: ``code`` from :data:`CODES`, status from the code unless given."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_status, default_message = CODES[code]
        super().__init__(message or default_message, status=status or default_status, code=code)
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()
