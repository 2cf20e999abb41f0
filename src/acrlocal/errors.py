"""One exception hierarchy for the whole package.

::

    AcrLocalError                      base of everything raised on purpose
    ├── ConfigError(ValueError)        a setting or a data directory that cannot be used
    ├── NotFound(LookupError)          a named thing does not exist (registry, repository, principal, ...)
    ├── AlreadyExists(ValueError)      a name is taken
    └── ProtocolError                  a request that a wire protocol answers with an error body;
        │                              each room renders it in its own format
        ├── registry.errors.RegistryError      OCI ``{"errors": [...]}``
        ├── identity.errors.OAuthError         Entra ``{"error", "error_description", ...}``
        └── arm.errors.ArmError                ARM ``{"error": {"code", "message"}}``

Exceptions subclass the builtin they mean, so callers that only know Python still catch them sensibly.
Messages name the offending value and what was expected.
"""

from __future__ import annotations


class AcrLocalError(Exception):
    """Base class of every error acrlocal raises on purpose."""


class ConfigError(AcrLocalError, ValueError):
    """A setting, flag or data directory that cannot be used."""


class NotFound(AcrLocalError, LookupError):
    """A named thing does not exist."""


class AlreadyExists(AcrLocalError, ValueError):
    """A name is already taken."""


class ProtocolError(AcrLocalError):
    """An error that a wire protocol answers with a status code and an error body.

    ``status`` is the HTTP status, ``code`` the protocol's own error code, ``message`` a sentence for humans.
    The HTTP layer of each room turns it into that protocol's error format; nothing else catches it.
    """

    status: int = 400
    code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
