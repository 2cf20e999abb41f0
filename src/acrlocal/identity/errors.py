"""Entra's error shape for the token endpoints: ``error``, ``error_description`` (with its AADSTS code),
``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from acrlocal.errors import ProtocolError


class OAuthError(ProtocolError):
    """An OAuth error as Entra answers it. ``aadsts`` is the numeric AADSTS code (e.g. 7000215)."""

    def __init__(self, error: str, description: str, aadsts: int, *, status: int = 400) -> None:
        super().__init__(description, status=status, code=error)
        self.aadsts = aadsts

    def body(self, correlation_id: str | None = None) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        trace = str(uuid.uuid4())
        corr = correlation_id or str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.code,
            "error_description": f"AADSTS{self.aadsts}: {self.message} Trace ID: {trace} Correlation ID: {corr} "
                                 f"Timestamp: {stamp}",
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
        }
