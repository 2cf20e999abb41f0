"""ARM's error shape, ``{"error": {"code", "message"}}``, and the codes ARM uses.

An :class:`ArmError` raised anywhere below a handler is answered by the framework with its status and body;
nothing has been written when it is raised (handlers validate before they touch storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acrlocal.errors import ProtocolError


class ArmError(ProtocolError):
    """An error ARM answers with ``status`` and ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None, target: str | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.headers = headers or {}
        self.details = details
        self.target = target

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


NOT_FOUND_HINT = "For more details please go to https://aka.ms/ARMResourceNotFoundFix"


def bad_request(code: str, message: str) -> ArmError:
    return ArmError(400, code, message)


def invalid_content(reason: str) -> ArmError:
    return ArmError(400, "InvalidRequestContent",
                    f"The request content was invalid and could not be deserialized: {reason}")


def resource_not_found(resource_type: str, name: str, group: str | None) -> ArmError:
    where = f" under resource group '{group}'" if group else ""
    return ArmError(404, "ResourceNotFound",
                    f"The Resource '{resource_type}/{name}'{where} was not found. {NOT_FOUND_HINT}")


def group_not_found(group: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")


def subscription_not_found(subscription: str) -> ArmError:
    return ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")


def authorization_failed(client: str, object_id: str, action: str, scope: str) -> ArmError:
    return ArmError(403, "AuthorizationFailed",
                    f"The client '{client}' with object id '{object_id}' does not have authorization to perform "
                    f"action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
                    "granted, please refresh your credentials.")


def linked_authorization_failed(client: str, object_id: str, action: str, scope: str,
                                links: Sequence[tuple[str, str]]) -> ArmError:
    """ARM's 403 for a write of ``action`` at ``scope`` (which the caller may do) naming resources on which it may
    not do what the write needs: ``links`` of ``(linked action, linked scope)`` (a subnet it may not join...), all
    of them, comma-separated in order, as Azure lists them."""
    actions = ",".join(a for a, _ in links)
    scopes = ",".join(s for _, s in links)
    return ArmError(403, "LinkedAuthorizationFailed",
                    f"The client '{client}' with object id '{object_id}' has permission to perform action '{action}' "
                    f"on scope '{scope}'; however, it does not have permission to perform action(s) "
                    f"'{actions}' on the linked scope(s) '{scopes}' (respectively) or the linked scope(s) are "
                    "invalid.")
