"""Errors of the rbac room. Pure domain errors: the control plane renders them as ARM ``error`` JSON.

::

    AcrLocalError
    ├── InvalidScope(ValueError)        an ARM scope that does not parse
    ├── InvalidCondition(ValueError)    a role assignment condition outside the supported grammar
    ├── InvalidOperation(ValueError)    an operation name that cannot be checked (empty, or with a wildcard)
    └── UnknownRole(NotFound)           no role definition has that id or name
"""

from __future__ import annotations

from acrlocal.errors import AcrLocalError, NotFound


class InvalidScope(AcrLocalError, ValueError):
    """A scope that is not a well-formed ARM scope; the message names the offending part."""


class InvalidCondition(AcrLocalError, ValueError):
    """A condition that cannot be parsed or uses something the evaluator does not support.

    An assignment whose condition raises this grants nothing (fail closed).
    """


class InvalidOperation(AcrLocalError, ValueError):
    """An operation to check that is empty or contains a wildcard; permissions hold patterns, requests do not."""


class UnknownRole(NotFound):
    """No role definition matches the given GUID, resource id or role name."""
