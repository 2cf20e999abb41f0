"""Errors the CLI reports, each with az's exit code.

``main`` prints every one as ``ERROR: <message>`` on stderr and exits with ``exit_code``: 1 for a failure, 2 for a
usage error (az's argparse errors), 3 for a ``show`` of a resource that does not exist (az's
``show_exception_handler``). Nothing is written before an error is raised.
"""

from __future__ import annotations

from typing import Any

from acrlocal.errors import AcrLocalError, NotFound


class CLIError(AcrLocalError):
    """A failure reported to the user as ``ERROR: ...`` with exit code 1."""

    exit_code = 1


class CLIUsageError(CLIError, ValueError):
    """A command line that az would reject while parsing it (exit code 2)."""

    exit_code = 2


class ServerNotRunning(CLIError, ConnectionError):
    """No acrlocal server answers where the CLI looked for one."""


class AuthenticationFailed(CLIError, PermissionError):
    """A token endpoint refused the credential (the message is the endpoint's own error description)."""


class HttpResponseError(CLIError):
    """An error answer of the control plane, Graph or a registry, in az's words.

    ``code`` and ``message`` come from the ARM ``{"error": {"code", "message"}}`` body (or the OCI ``errors``
    list); ``str()`` is what az prints for an azure-core ``HttpResponseError``.
    """

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        super().__init__(f"({code}) {message}\nCode: {code}\nMessage: {message}")


class ResourceNotFound(HttpResponseError, NotFound):
    """A 404 answer. ``show`` commands exit with code 3 for it, as az does; other commands with 1."""
