"""Evaluating template values (pure): strings that are expressions, objects and arrays holding them, and the
property loops (``"copy": [{"name", "count", "input"}]``) inside a resource's properties.

:func:`resolve` returns plain JSON values. An expression that cannot be evaluated yet (``reference()`` of a
resource that what-if has not deployed) raises :class:`~.functions.Deferred` out of :func:`resolve`;
:func:`resolve_or_keep` keeps such an expression's text instead, as ARM's what-if shows it.
"""

from __future__ import annotations

from typing import Any

from acrlocal.arm.templates.errors import TemplateError
from acrlocal.arm.templates.expressions import is_expression, literal_text, parse
from acrlocal.arm.templates.functions import Deferred, Lambda, Scope, evaluate

MAX_COPY = 800


def expression(text: str, scope: Scope) -> Any:
    """The value of one template string (an expression or literal text)."""
    if not is_expression(text):
        return literal_text(text)
    value = evaluate(parse(text[1:-1]), scope)
    if isinstance(value, Lambda):
        raise TemplateError(f"The template language expression '{text[1:-1][:300]}' is a lambda, which can only be "
                            "an argument of filter, map, reduce, sort or toObject.")
    return value


def copy_count(value: Any, scope: Scope, what: str) -> int:
    count = resolve(value, scope)
    if isinstance(count, bool) or not isinstance(count, int):
        raise TemplateError(f"The copy count of {what} must be an integer; it is '{str(count)[:100]}'.")
    if not 0 <= count <= MAX_COPY:
        raise TemplateError(f"The copy count of {what} must be between 0 and {MAX_COPY}; it is '{count}'.")
    return count


def property_loops(loops: Any, scope: Scope, keep: bool = False) -> dict[str, list[Any]]:
    """``"copy": [{"name": "subnets", "count": 2, "input": {...}}]`` → ``{"subnets": [...]}``."""
    if not isinstance(loops, list):
        raise TemplateError("The 'copy' property of an object must be an array of {name, count, input}.")
    out: dict[str, list[Any]] = {}
    for loop in loops:
        if not isinstance(loop, dict) or not isinstance(loop.get("name"), str) or "input" not in loop:
            raise TemplateError("Each property copy loop needs a 'name', a 'count' and an 'input'.")
        name = loop["name"]
        count = copy_count(loop.get("count"), scope, f"the property '{name}'")
        items = []
        for i in range(count):
            inner = scope.child(copy={**scope.copy, name: i})
            items.append(resolve_or_keep(loop["input"], inner) if keep else resolve(loop["input"], inner))
        out[name] = items
    return out


def resolve(value: Any, scope: Scope) -> Any:
    """``value`` with every expression evaluated (property loops expanded)."""
    if isinstance(value, str):
        return expression(value, scope)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "copy" and isinstance(item, list):
                out.update(property_loops(item, scope))
            else:
                out[key] = resolve(item, scope)
        return out
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    return value


def resolve_or_keep(value: Any, scope: Scope) -> Any:
    """As :func:`resolve`, but an expression whose value is not known yet stays as its text."""
    if isinstance(value, str):
        try:
            return expression(value, scope)
        except Deferred:
            return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "copy" and isinstance(item, list):
                try:
                    out.update(property_loops(item, scope, keep=True))
                except Deferred:
                    out[key] = item
            else:
                out[key] = resolve_or_keep(item, scope)
        return out
    if isinstance(value, list):
        return [resolve_or_keep(item, scope) for item in value]
    return value
