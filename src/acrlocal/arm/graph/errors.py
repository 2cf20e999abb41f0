"""Microsoft Graph's error body: ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from acrlocal.errors import ProtocolError


class GraphError(ProtocolError):
    """An error Microsoft Graph answers with ``{"error": {"code", "message", "innerError"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)

    def response(self, request: web.Request) -> web.Response:
        inner = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4()),
                 "client-request-id": request.headers.get("client-request-id", str(uuid.uuid4()))}
        return web.json_response({"error": {"code": self.code, "message": self.message, "innerError": inner}},
                                 status=self.status)
