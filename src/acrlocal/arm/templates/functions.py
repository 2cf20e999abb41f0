"""The template functions (pure): ``concat``, ``resourceId``, ``reference``, ``uniqueString``... and
:func:`evaluate`, which walks an expression tree with them.

Functions get evaluated arguments, except the few that decide what to evaluate (``if``, ``and``, ``or``,
``coalesce`` and the lambda functions), which get the argument nodes. What a function needs from outside the
template (the subscription, the resource group, another resource's state) comes from the
:class:`Environment` the deployment hands in; ``parameters()``, ``variables()`` and ``copyIndex()`` come from
the :class:`Scope` being evaluated. Failures raise :class:`TemplateError` with ARM's wording.

Where acrlocal differs from ARM: ``uniqueString`` and ``guid`` are deterministic functions of their arguments
(equal inputs, equal outputs; 13 characters of base32, a version-5 UUID) but not bit-for-bit Azure's values.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from acrlocal.arm.templates.errors import TemplateError
from acrlocal.arm.templates.expressions import Call, Index, Literal, Member, Node, index, member, type_name
from acrlocal.errors import AcrLocalError
from acrlocal.inbound import MalformedRequest, parse_json

MAX_ITEMS = 10_000
MAX_STRING = 131_072
#: Namespace of ``guid()``'s version-5 UUIDs.
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


class Deferred(AcrLocalError, LookupError):
    """Raised by an :class:`Environment` when a value exists only once resources are deployed (what-if)."""


class Environment(Protocol):
    """What functions need from outside the template; the deployment engine implements it."""

    def subscription(self) -> dict[str, Any]: ...
    def resource_group(self) -> dict[str, Any] | None: ...
    def tenant(self) -> dict[str, Any]: ...
    def deployment(self) -> dict[str, Any]: ...
    def environment(self) -> dict[str, Any]: ...
    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any: ...
    def invoke(self, resource_id: str, action: str, api_version: str | None, body: Any) -> Any: ...
    def now(self) -> datetime: ...


@dataclass
class Scope:
    """Where an expression is evaluated: the template's parameters and variables, the copy loops around it,
    lambda variables, and which functions are allowed there (``reference`` only in resource bodies and
    outputs; ``utcNow`` and ``newGuid`` only in parameter defaults)."""

    env: Environment
    parameters: Mapping[str, Any] = field(default_factory=dict)
    variables: Callable[[str], Any] | None = None
    copy: dict[str | None, int] = field(default_factory=dict)
    lambdas: dict[str, Any] = field(default_factory=dict)
    user_functions: Mapping[str, Any] = field(default_factory=dict)
    #: ``resource id or name or symbolic name`` → full id, for ``reference`` and ``list*``.
    resolve: Callable[[str], str] | None = None
    runtime: bool = False          # reference() and list*() allowed
    parameter_defaults: bool = False  # utcNow() and newGuid() allowed

    def child(self, **changes: Any) -> Scope:
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        values.update(changes)
        return Scope(**values)


# -- evaluation ----------------------------------------------------------------------------------------------


def evaluate(node: Node, scope: Scope) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Member):
        return member(evaluate(node.target, scope), node.name)
    if isinstance(node, Index):
        return index(evaluate(node.target, scope), evaluate(node.index, scope))
    name = node.name.lower()
    lazy = LAZY.get(name)
    if lazy is not None:
        return lazy(scope, node)
    if "." in name:
        return _user_function(scope, node)
    fn = FUNCTIONS.get(name)
    if fn is None:
        if name.startswith("list"):
            return _list(scope, node.name, [evaluate(a, scope) for a in node.args])
        raise TemplateError(f"The template function '{node.name}' is not valid. Please see "
                            "https://aka.ms/arm-functions for usage details.")
    args = [evaluate(a, scope) for a in node.args]
    try:
        return fn(scope, *args)
    except TypeError as exc:
        if "positional argument" in str(exc) or "takes" in str(exc):
            raise TemplateError(f"Unable to evaluate template language function '{node.name}': it does not take "
                                f"{len(args)} argument(s). Please see https://aka.ms/arm-functions for usage "
                                "details.") from None
        raise


def _user_function(scope: Scope, node: Call) -> Any:
    namespace, _, name = node.name.partition(".")
    fn = None
    for ns_name, ns in scope.user_functions.items():
        if ns_name.lower() == namespace.lower():
            fn = next((f for n, f in ns.items() if n.lower() == name.lower()), None)
    if fn is None:
        raise TemplateError(f"The template function '{node.name}' is not valid. Please see "
                            "https://aka.ms/arm-functions for usage details.")
    params = fn.get("parameters") or []
    if len(params) != len(node.args):
        raise TemplateError(f"The template function '{node.name}' expects {len(params)} parameter(s), got "
                            f"{len(node.args)}.")
    values = {p.get("name", ""): evaluate(a, scope) for p, a in zip(params, node.args, strict=True)}
    output = (fn.get("output") or {}).get("value")
    inner = Scope(env=scope.env, parameters=values, user_functions=scope.user_functions)
    from acrlocal.arm.templates.values import resolve  # a cycle by design: values evaluate with functions
    return resolve(output, inner)


# -- argument checks -----------------------------------------------------------------------------------------


def _expect(fn: str, value: Any, *types: type, what: str = "") -> Any:
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
    if not ok:
        names = " or ".join({str: "String", int: "Integer", bool: "Boolean", list: "Array", dict: "Object"}
                            .get(t, t.__name__) for t in types)
        raise TemplateError(f"The template language function '{fn}' expects its {what or 'parameter'} to be of "
                            f"type '{names}'. The provided value is of type '{type_name(value)}'. Please see "
                            "https://aka.ms/arm-functions for usage details.")
    return value


def _count(fn: str, args: tuple[Any, ...], low: int, high: int | None = None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        wanted = f"{low}" if high == low else f"{low} to {high}" if high is not None else f"at least {low}"
        raise TemplateError(f"The template language function '{fn}' must have {wanted} parameter(s); it has "
                            f"{len(args)}. Please see https://aka.ms/arm-functions for usage details.")


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise TemplateError(f"The template language expression produced a string of {len(value)} characters; "
                            f"at most {MAX_STRING} are allowed.")
    if isinstance(value, list) and len(value) > MAX_ITEMS:
        raise TemplateError(f"The template language expression produced an array of {len(value)} items; at most "
                            f"{MAX_ITEMS} are allowed.")
    return value


def to_text(value: Any) -> str:
    """``string()``: text as is, JSON for objects and arrays, ``True``/``False`` for booleans, '' for null."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def deep_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        lb = {k.lower(): v for k, v in b.items()}
        return len(a) == len(b) and all(k.lower() in lb and deep_equal(v, lb[k.lower()]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return (type(a) is type(b) and a == b) or (isinstance(a, int | float) and isinstance(b, int | float) and a == b)


# -- lazy functions ------------------------------------------------------------------------------------------


def _if(scope: Scope, node: Call) -> Any:
    _count("if", node.args, 3, 3)
    condition = _expect("if", evaluate(node.args[0], scope), bool, what="first parameter")
    return evaluate(node.args[1] if condition else node.args[2], scope)


def _and(scope: Scope, node: Call) -> Any:
    _count("and", node.args, 2)
    return all(_expect("and", evaluate(a, scope), bool) for a in node.args)


def _or(scope: Scope, node: Call) -> Any:
    _count("or", node.args, 2)
    return any(_expect("or", evaluate(a, scope), bool) for a in node.args)


def _coalesce(scope: Scope, node: Call) -> Any:
    _count("coalesce", node.args, 1)
    for arg in node.args:
        value = evaluate(arg, scope)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Lambda:
    names: tuple[str, ...]
    body: Node

    def __call__(self, scope: Scope, *values: Any) -> Any:
        if len(values) != len(self.names):
            raise TemplateError(f"The lambda takes {len(self.names)} parameter(s); it was given {len(values)}.")
        return evaluate(self.body, scope.child(lambdas={**scope.lambdas, **dict(zip(self.names, values,
                                                                                       strict=True))}))


def _lambda(scope: Scope, node: Call) -> Any:
    _count("lambda", node.args, 1)
    names = tuple(_expect("lambda", evaluate(a, scope), str) for a in node.args[:-1])
    return Lambda(names, node.args[-1])


def _lambda_variables(scope: Scope, node: Call) -> Any:
    _count("lambdaVariables", node.args, 1, 1)
    name = _expect("lambdaVariables", evaluate(node.args[0], scope), str)
    if name not in scope.lambdas:
        raise TemplateError(f"The lambda variable '{name}' is not defined here.")
    return scope.lambdas[name]


def _lambda_arg(fn: str, scope: Scope, node: Node) -> Lambda:
    value = evaluate(node, scope)
    if not isinstance(value, Lambda):
        raise TemplateError(f"The template language function '{fn}' expects a lambda expression as its last "
                            "parameter.")
    return value


def _array_arg(fn: str, scope: Scope, node: Node) -> list[Any]:
    return list(_expect(fn, evaluate(node, scope), list, what="first parameter"))


def _filter(scope: Scope, node: Call) -> Any:
    _count("filter", node.args, 2, 2)
    items, fn = _array_arg("filter", scope, node.args[0]), _lambda_arg("filter", scope, node.args[1])
    return [x for x in items if _expect("filter", fn(scope, x), bool, what="lambda's result")]


def _map(scope: Scope, node: Call) -> Any:
    _count("map", node.args, 2, 2)
    items, fn = _array_arg("map", scope, node.args[0]), _lambda_arg("map", scope, node.args[1])
    if len(fn.names) == 2:
        return [fn(scope, x, i) for i, x in enumerate(items)]
    return [fn(scope, x) for x in items]


def _reduce(scope: Scope, node: Call) -> Any:
    _count("reduce", node.args, 3, 3)
    items = _array_arg("reduce", scope, node.args[0])
    acc = evaluate(node.args[1], scope)
    fn = _lambda_arg("reduce", scope, node.args[2])
    for i, x in enumerate(items):
        acc = fn(scope, acc, x, i) if len(fn.names) == 3 else fn(scope, acc, x)
    return acc


def _sort(scope: Scope, node: Call) -> Any:
    _count("sort", node.args, 2, 2)
    items, fn = _array_arg("sort", scope, node.args[0]), _lambda_arg("sort", scope, node.args[1])
    result: list[Any] = []
    for x in items:  # insertion sort through the lambda's "a before b"
        pos = len(result)
        for i, y in enumerate(result):
            if _expect("sort", fn(scope, x, y), bool, what="lambda's result"):
                pos = i
                break
        result.insert(pos, x)
    return result


def _to_object(scope: Scope, node: Call) -> Any:
    _count("toObject", node.args, 2, 3)
    items = _array_arg("toObject", scope, node.args[0])
    key_fn = _lambda_arg("toObject", scope, node.args[1])
    value_fn = _lambda_arg("toObject", scope, node.args[2]) if len(node.args) == 3 else None
    return {_expect("toObject", key_fn(scope, x), str, what="key"): value_fn(scope, x) if value_fn else x
            for x in items}


LAZY: dict[str, Callable[[Scope, Call], Any]] = {
    "if": _if, "and": _and, "or": _or, "coalesce": _coalesce, "lambda": _lambda,
    "lambdavariables": _lambda_variables, "filter": _filter, "map": _map, "reduce": _reduce, "sort": _sort,
    "toobject": _to_object,
}


# -- scope functions -----------------------------------------------------------------------------------------


def _parameters(scope: Scope, name: Any) -> Any:
    _expect("parameters", name, str)
    for key, value in scope.parameters.items():
        if key.lower() == name.lower():
            return value
    raise TemplateError(f"The template parameter '{name}' is not found. Please see "
                        "https://aka.ms/arm-syntax-parameters for usage details.")


def _variables(scope: Scope, name: Any) -> Any:
    _expect("variables", name, str)
    if scope.variables is None:
        raise TemplateError("The template function 'variables' is not expected at this location.")
    return scope.variables(name)


def _copy_index(scope: Scope, *args: Any) -> Any:
    _count("copyIndex", args, 0, 2)
    name: str | None = None
    offset = 0
    if args and isinstance(args[0], str):
        name, args = args[0], args[1:]
    if args:
        offset = _expect("copyIndex", args[0], int)
    if name is None:
        if None not in scope.copy:
            raise TemplateError("The template function 'copyIndex' is not expected at this location. The function "
                                "can only be used in a resource with copy specified.")
        return scope.copy[None] + offset
    for key, value in scope.copy.items():
        if key is not None and key.lower() == name.lower():
            return value + offset
    raise TemplateError(f"The template function 'copyIndex' is not expected at this location: no copy loop named "
                        f"'{name}' surrounds it.")


def _runtime_only(scope: Scope, fn: str) -> None:
    if not scope.runtime:
        raise TemplateError(f"The template function '{fn}' is not expected at this location. Please see "
                            "https://aka.ms/arm-functions for usage details.")


def _reference(scope: Scope, *args: Any) -> Any:
    _count("reference", args, 1, 3)
    _runtime_only(scope, "reference")
    target = _expect("reference", args[0], str, what="first parameter")
    api = args[1] if len(args) > 1 else None
    full = len(args) > 2 and isinstance(args[2], str) and args[2].lower() == "full"
    rid = scope.resolve(target) if scope.resolve else target
    return scope.env.reference(rid, api, full)


def _list(scope: Scope, fn: str, args: list[Any]) -> Any:
    _count(fn, tuple(args), 2, 3)
    _runtime_only(scope, fn)
    target = _expect(fn, args[0], str, what="first parameter")
    rid = scope.resolve(target) if scope.resolve else target
    return scope.env.invoke(rid, fn, args[1], args[2] if len(args) > 2 else None)


def _now_only(scope: Scope, fn: str) -> None:
    if not scope.parameter_defaults:
        raise TemplateError(f"The template function '{fn}' is not expected at this location. It can only be used "
                            "with parameter default value. Please see https://aka.ms/arm-functions for usage "
                            "details.")


def _utc_now(scope: Scope, fmt: Any = "yyyyMMddTHHmmssZ") -> Any:
    _now_only(scope, "utcNow")
    return format_datetime(scope.env.now(), _expect("utcNow", fmt, str))


def _new_guid(scope: Scope) -> Any:
    _now_only(scope, "newGuid")
    return str(uuid.uuid4())


# -- resource ids --------------------------------------------------------------------------------------------

_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)+/[A-Za-z0-9][-A-Za-z0-9/._]*\Z")


def _split_type_and_names(fn: str, args: tuple[Any, ...]) -> tuple[list[str], str, list[str]]:
    for a in args:
        _expect(fn, a, str)
    at = next((i for i, a in enumerate(args) if _TYPE.match(a)), None)
    if at is None:
        raise TemplateError(f"The template language function '{fn}' expects a fully qualified resource type such "
                            f"as 'Microsoft.Network/virtualNetworks' among its parameters; it has "
                            f"'{', '.join(map(str, args))[:300]}'.")
    type_ = args[at]
    names = list(args[at + 1:])
    segments = type_.split("/")[1:]
    if len(names) != len(segments):
        raise TemplateError(f"Unable to evaluate template language function '{fn}': the type '{type_}' requires "
                            f"'{len(segments)}' resource name argument(s).")
    return list(args[:at]), type_, names


def build_id(prefix: str, type_: str, names: list[str]) -> str:
    namespace, *types = type_.split("/")
    parts = [prefix.rstrip("/"), "providers", namespace]
    for t, n in zip(types, names, strict=True):
        parts += [t, n]
    return "/".join(parts)


def _resource_id(scope: Scope, *args: Any) -> Any:
    _count("resourceId", args, 2)
    before, type_, names = _split_type_and_names("resourceId", args)
    sub = scope.env.subscription()["subscriptionId"]
    group = scope.env.resource_group()
    if len(before) > 2:
        raise TemplateError("Unable to evaluate template language function 'resourceId': too many arguments before "
                            f"the resource type '{type_}'.")
    if len(before) == 2:
        sub, rg = before
    elif len(before) == 1:
        rg = before[0]
    elif group is not None:
        rg = group["name"]
    else:
        return build_id(f"/subscriptions/{sub}", type_, names)
    return build_id(f"/subscriptions/{sub}/resourceGroups/{rg}", type_, names)


def _subscription_resource_id(scope: Scope, *args: Any) -> Any:
    _count("subscriptionResourceId", args, 2)
    before, type_, names = _split_type_and_names("subscriptionResourceId", args)
    if len(before) > 1:
        raise TemplateError("Unable to evaluate template language function 'subscriptionResourceId': too many "
                            "arguments before the resource type.")
    sub = before[0] if before else scope.env.subscription()["subscriptionId"]
    return build_id(f"/subscriptions/{sub}", type_, names)


def _tenant_resource_id(scope: Scope, *args: Any) -> Any:
    _count("tenantResourceId", args, 2)
    before, type_, names = _split_type_and_names("tenantResourceId", args)
    if before:
        raise TemplateError("Unable to evaluate template language function 'tenantResourceId': unexpected "
                            "arguments before the resource type.")
    return build_id("", type_, names)


def _extension_resource_id(scope: Scope, base: Any, *args: Any) -> Any:
    _expect("extensionResourceId", base, str)
    _count("extensionResourceId", args, 2)
    before, type_, names = _split_type_and_names("extensionResourceId", args)
    if before:
        raise TemplateError("Unable to evaluate template language function 'extensionResourceId': unexpected "
                            "arguments between the base id and the resource type.")
    return build_id(base, type_, names)


def _resource_group(scope: Scope) -> Any:
    group = scope.env.resource_group()
    if group is None:
        raise TemplateError("The template function 'resourceGroup' is not expected at this location: this "
                            "deployment is at subscription scope.")
    return group


# -- strings -------------------------------------------------------------------------------------------------


def _concat(scope: Scope, *args: Any) -> Any:
    _count("concat", args, 1)
    if all(isinstance(a, list) or a is None for a in args) and any(isinstance(a, list) for a in args):
        return _bounded([x for a in args if a is not None for x in a])
    if any(isinstance(a, list | dict) for a in args):
        raise TemplateError("The template language function 'concat' expects its parameters to be all arrays or "
                            "all primitive values (strings, integers, booleans).")
    return _bounded("".join(to_text(a) for a in args))


_FORMAT = re.compile(r"\{\{|\}\}|\{(\d+)(?:,(-?\d+))?(?::([^}]*))?\}|[{}]")


def _format_width(text: str) -> int:
    """A width or precision in a format item, refused past the longest string a template may make (so that
    ``{0,999999999}`` or ``{0:D999999999}`` cannot build a gigabyte before the result is checked)."""
    width = int(text)
    if abs(width) > MAX_STRING:
        raise TemplateError(f"The template language function 'format' has a width or precision of {width}; at most "
                            f"{MAX_STRING} is allowed.")
    return width


def _format_value(value: Any, spec: str | None) -> str:
    if spec and isinstance(value, int) and not isinstance(value, bool):
        kind, digits = spec[0].upper(), spec[1:]
        width = _format_width(digits) if digits.isascii() and digits.isdigit() else 0
        if kind == "D":
            return f"{value:0{width}d}"
        if kind == "X":
            return f"{value:0{width}{'x' if spec[0] == 'x' else 'X'}}"
        if kind == "N":
            return f"{value:,.{width if digits else 2}f}"
    return to_text(value)


def _format(scope: Scope, fmt: Any, *args: Any) -> Any:
    _expect("format", fmt, str, what="first parameter")
    made = 0  # characters produced so far: the result is refused as soon as it is too long, not once it is built

    def replace(m: re.Match[str]) -> str:
        nonlocal made
        text = m.group()
        if text in ("{{", "}}"):
            return text[0]
        if m.group(1) is None:
            raise TemplateError(f"The template language function 'format' has an invalid format string "
                                f"'{fmt[:200]}'.")
        i = int(m.group(1))
        if i >= len(args):
            raise TemplateError(f"The template language function 'format' refers to argument {i} but has only "
                                f"{len(args)}.")
        out = _format_value(args[i], m.group(3))
        width = _format_width(m.group(2) or "0")
        out = out.rjust(width) if width > 0 else out.ljust(-width)
        made += len(out)
        if made > MAX_STRING:
            raise TemplateError(f"The template language function 'format' produced more than {MAX_STRING} "
                                "characters; at most that many are allowed.")
        return out

    return _bounded(_FORMAT.sub(replace, fmt))


def _contains(scope: Scope, container: Any, item: Any) -> Any:
    if isinstance(container, str):
        return to_text(item) in container
    if isinstance(container, list):
        return any(deep_equal(x, item) for x in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item.lower() in {k.lower() for k in container}
    _expect("contains", container, str, list, dict, what="first parameter")
    return False  # pragma: no cover


def _empty(scope: Scope, value: Any) -> Any:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def _length(scope: Scope, value: Any) -> Any:
    return len(_expect("length", value, str, list, dict))


def _first(scope: Scope, value: Any) -> Any:
    _expect("first", value, str, list)
    return value[0] if value else ("" if isinstance(value, str) else None)


def _last(scope: Scope, value: Any) -> Any:
    _expect("last", value, str, list)
    return value[-1] if value else ("" if isinstance(value, str) else None)


def _index_of(fn: str, container: Any, item: Any, last: bool) -> int:
    if isinstance(container, str):
        _expect(fn, item, str, what="second parameter")
        hay, needle = container.lower(), item.lower()
        return hay.rfind(needle) if last else hay.find(needle)
    _expect(fn, container, str, list, what="first parameter")
    found = [i for i, x in enumerate(container) if deep_equal(x, item)]
    return (found[-1] if last else found[0]) if found else -1


def _skip(scope: Scope, value: Any, count: Any) -> Any:
    _expect("skip", value, str, list, what="first parameter")
    n = max(0, _expect("skip", count, int, what="second parameter"))
    return value[n:]


def _take(scope: Scope, value: Any, count: Any) -> Any:
    _expect("take", value, str, list, what="first parameter")
    n = max(0, _expect("take", count, int, what="second parameter"))
    return value[:n]


def _substring(scope: Scope, text: Any, start: Any = 0, length: Any = None) -> Any:
    _expect("substring", text, str, what="first parameter")
    _expect("substring", start, int, what="second parameter")
    if length is None:
        length = len(text) - start
    _expect("substring", length, int, what="third parameter")
    if start < 0 or start > len(text):
        raise TemplateError(f"The index parameter '{start}' of the template language function 'substring' is out "
                            f"of range of the string of length {len(text)}.")
    if length < 0 or start + length > len(text):
        raise TemplateError(f"The length parameter '{length}' of the template language function 'substring' is "
                            f"out of range: the string has {len(text) - start} characters from index {start}.")
    return text[start:start + length]


def _split(scope: Scope, text: Any, delimiters: Any) -> Any:
    _expect("split", text, str, what="first parameter")
    delims = [delimiters] if isinstance(delimiters, str) else _expect("split", delimiters, list, str)
    if not all(isinstance(d, str) and d for d in delims):
        raise TemplateError("The template language function 'split' expects non-empty string delimiters.")
    pattern = "|".join(re.escape(d) for d in delims)
    return _bounded(re.split(pattern, text))


def _replace(scope: Scope, text: Any, old: Any, new: Any) -> Any:
    for v in (text, old, new):
        _expect("replace", v, str)
    if not old:
        raise TemplateError("The template language function 'replace' expects a non-empty string to replace.")
    return _bounded(text.replace(old, new))


def _pad_left(scope: Scope, value: Any, total: Any, pad: Any = " ") -> Any:
    text = to_text(_expect("padLeft", value, str, int))
    _expect("padLeft", total, int, what="second parameter")
    _expect("padLeft", pad, str, what="third parameter")
    if len(pad) != 1:
        raise TemplateError("The template language function 'padLeft' expects a single padding character.")
    if total > 16_384:
        raise TemplateError("The template language function 'padLeft' pads to at most 16384 characters.")
    return text.rjust(total, pad)


def _string_fn(fn: str, op: Callable[[str], Any]) -> Callable[..., Any]:
    def call(scope: Scope, value: Any) -> Any:
        return op(_expect(fn, value, str))
    return call


def _two_strings(fn: str, op: Callable[[str, str], Any]) -> Callable[..., Any]:
    def call(scope: Scope, a: Any, b: Any) -> Any:
        return op(_expect(fn, a, str, what="first parameter"), _expect(fn, b, str, what="second parameter"))
    return call


def _base64_decode(fn: str, value: Any) -> bytes:
    try:
        return base64.b64decode(_expect(fn, value, str), validate=True)
    except ValueError:
        raise TemplateError(f"The template language function '{fn}' was given text that is not base64.") from None


def _base64_to_string(scope: Scope, value: Any) -> Any:
    return _base64_decode("base64ToString", value).decode("utf-8", errors="replace")


def _base64_to_json(scope: Scope, value: Any) -> Any:
    return _json(scope, _base64_decode("base64ToJson", value).decode("utf-8", errors="replace"))


def _data_uri(scope: Scope, value: Any) -> Any:
    return "data:text/plain;charset=utf8;base64," + base64.b64encode(to_text(value).encode()).decode()


def _data_uri_to_string(scope: Scope, value: Any) -> Any:
    _expect("dataUriToString", value, str)
    head, sep, data = value.partition(",")
    if not head.startswith("data:") or not sep:
        raise TemplateError(f"The template language function 'dataUriToString' was given '{value[:100]}', which is "
                            "not a data URI.")
    if head.endswith(";base64"):
        return _base64_decode("dataUriToString", data).decode("utf-8", errors="replace")
    return urllib.parse.unquote(data)


def _uri(scope: Scope, base: Any, relative: Any) -> Any:
    _expect("uri", base, str, what="first parameter")
    _expect("uri", relative, str, what="second parameter")
    return urllib.parse.urljoin(base, relative)


def unique_string(*parts: str) -> str:
    """13 lower-case base32 characters, a function of the parts (see the module's note)."""
    digest = hashlib.sha256("-".join(parts).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    return "".join(_BASE32[(number >> (59 - 5 * i)) & 31] for i in range(12)) + _BASE32[number & 15]


def _unique_string(scope: Scope, *args: Any) -> Any:
    _count("uniqueString", args, 1)
    return unique_string(*(_expect("uniqueString", a, str) for a in args))


def _guid(scope: Scope, *args: Any) -> Any:
    _count("guid", args, 1)
    return str(uuid.uuid5(GUID_NAMESPACE, "-".join(_expect("guid", a, str) for a in args)))


# -- numbers, logic, comparison ------------------------------------------------------------------------------


def _int(scope: Scope, value: Any) -> Any:
    if isinstance(value, bool):
        raise TemplateError("The template language function 'int' cannot convert a Boolean.")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    _expect("int", value, str, int)
    try:
        return int(value.strip())
    except ValueError:
        raise TemplateError(f"The template language function 'int' cannot convert '{value[:100]}' to an "
                            "integer.") from None


def _bool(scope: Scope, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TemplateError(f"The template language function 'bool' cannot convert '{to_text(value)[:100]}' to a "
                        "boolean.")


def _arith(fn: str, op: Callable[[int, int], int]) -> Callable[..., Any]:
    def call(scope: Scope, a: Any, b: Any) -> Any:
        x, y = _expect(fn, a, int, what="first parameter"), _expect(fn, b, int, what="second parameter")
        if fn in ("div", "mod") and y == 0:
            raise TemplateError(f"The template language function '{fn}' cannot divide by zero.")
        result = op(x, y)
        if abs(result) > 2**63:
            raise TemplateError(f"The template language function '{fn}' overflowed.")
        return result
    return call


def _div(x: int, y: int) -> int:
    q = abs(x) // abs(y)  # .NET truncates toward zero
    return q if (x >= 0) == (y >= 0) else -q


def _mod(x: int, y: int) -> int:
    return x - _div(x, y) * y


def _compare(fn: str, op: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    def call(scope: Scope, a: Any, b: Any) -> Any:
        if isinstance(a, str) and isinstance(b, str):
            return op(a, b)
        _expect(fn, a, int, what="first parameter")
        _expect(fn, b, int, what="second parameter")
        return op(a, b)
    return call


def _minmax(fn: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def call(scope: Scope, *args: Any) -> Any:
        _count(fn, args, 1)
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not values:
            raise TemplateError(f"The template language function '{fn}' needs at least one value.")
        for v in values:
            _expect(fn, v, int)
        return pick(values)
    return call


def _not(scope: Scope, value: Any) -> Any:
    return not _expect("not", value, bool)


# -- arrays and objects --------------------------------------------------------------------------------------


def _array(scope: Scope, value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _create_object(scope: Scope, *args: Any) -> Any:
    if len(args) % 2:
        raise TemplateError("The template language function 'createObject' expects an even number of parameters.")
    return {_expect("createObject", k, str, what="key"): v for k, v in zip(args[0::2], args[1::2], strict=True)}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        existing = next((k for k in out if k.lower() == key.lower()), None)
        if existing is not None and isinstance(out[existing], dict) and isinstance(value, dict):
            out[existing] = _merge(out[existing], value)
        else:
            if existing is not None:
                del out[existing]
            out[key] = value
    return out


def _union(scope: Scope, *args: Any) -> Any:
    _count("union", args, 1)
    if all(isinstance(a, dict) for a in args):
        result: dict[str, Any] = {}
        for a in args:
            result = _merge(result, a)
        return result
    if all(isinstance(a, list) for a in args):
        out: list[Any] = []
        for a in args:
            for x in a:
                if not any(deep_equal(x, y) for y in out):
                    out.append(x)
        return _bounded(out)
    raise TemplateError("The template language function 'union' expects its parameters to be all arrays or all "
                        "objects.")


def _intersection(scope: Scope, *args: Any) -> Any:
    _count("intersection", args, 2)
    if all(isinstance(a, dict) for a in args):
        first = args[0]
        return {k: v for k, v in first.items() if all(k in a and deep_equal(a[k], v) for a in args[1:])}
    if all(isinstance(a, list) for a in args):
        out: list[Any] = []
        for x in args[0]:
            if all(any(deep_equal(x, y) for y in a) for a in args[1:]) and not any(deep_equal(x, y) for y in out):
                out.append(x)
        return out
    raise TemplateError("The template language function 'intersection' expects its parameters to be all arrays or "
                        "all objects.")


def _shallow_merge(scope: Scope, items: Any) -> Any:
    out: dict[str, Any] = {}
    for item in _expect("shallowMerge", items, list):
        out.update(_expect("shallowMerge", item, dict, what="items"))
    return out


def _items(scope: Scope, value: Any) -> Any:
    obj = _expect("items", value, dict)
    return [{"key": k, "value": obj[k]} for k in sorted(obj, key=str.lower)]


def _object_keys(scope: Scope, value: Any) -> Any:
    return list(_expect("objectKeys", value, dict))


def _range(scope: Scope, start: Any, count: Any) -> Any:
    _expect("range", start, int, what="first parameter")
    _expect("range", count, int, what="second parameter")
    if count < 0 or count > MAX_ITEMS:
        raise TemplateError(f"The template language function 'range' count '{count}' must be between 0 and "
                            f"{MAX_ITEMS}.")
    return list(range(start, start + count))


def _flatten(scope: Scope, value: Any) -> Any:
    out: list[Any] = []
    for item in _expect("flatten", value, list):
        out.extend(_expect("flatten", item, list, what="items"))
    return _bounded(out)


def _join(scope: Scope, items: Any, delimiter: Any) -> Any:
    _expect("join", items, list, what="first parameter")
    _expect("join", delimiter, str, what="second parameter")
    return _bounded(delimiter.join(to_text(x) for x in items))


def _try_get(scope: Scope, value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict) and isinstance(key, str):
            value = next((v for k, v in value.items() if k.lower() == key.lower()), None)
        elif isinstance(value, list) and isinstance(key, int) and not isinstance(key, bool) \
                and 0 <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def _json(scope: Scope, text: Any) -> Any:
    _expect("json", text, str)
    try:
        return parse_json(text, what="the value")
    except MalformedRequest as exc:
        raise TemplateError(f"The template language function 'json' was given '{text[:100]}', which is not valid "
                            f"JSON: {exc}.") from None


# -- dates ---------------------------------------------------------------------------------------------------

_NET_FORMAT = [("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"),
               ("fffffff", "%f0"), ("ffffff", "%f"), ("yy", "%y")]


def format_datetime(value: datetime, fmt: str) -> str:
    if fmt in ("u",):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if fmt in ("o", "O"):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    if fmt == "d":
        return value.strftime("%m/%d/%Y")
    out = fmt
    for net, py in _NET_FORMAT:
        out = out.replace(net, py)
    return value.strftime(out)


def _parse_datetime(fn: str, text: Any) -> datetime:
    _expect(fn, text, str)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TemplateError(f"The template language function '{fn}' was given '{text[:100]}', which is not an ISO "
                            "8601 date and time.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_DURATION = re.compile(r"^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?\Z")


def _date_time_add(scope: Scope, base: Any, duration: Any, fmt: Any = None) -> Any:
    start = _parse_datetime("dateTimeAdd", base)
    m = _DURATION.match(_expect("dateTimeAdd", duration, str, what="second parameter"))
    if not m or duration in ("P", "PT", "-P"):
        raise TemplateError(f"The template language function 'dateTimeAdd' was given '{duration[:50]}', which is not "
                            "an ISO 8601 duration.")
    sign = -1 if m.group(1) else 1
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in m.groups()[1:])
    month_index = start.month - 1 + sign * (years * 12 + months)
    try:
        moved = start.replace(year=start.year + month_index // 12, month=month_index % 12 + 1)
        result = moved + sign * timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    except (ValueError, OverflowError):
        raise TemplateError("The template language function 'dateTimeAdd' produced a date out of range.") from None
    if fmt is not None:
        return format_datetime(result, _expect("dateTimeAdd", fmt, str, what="third parameter"))
    return result.strftime("%Y-%m-%dT%H:%M:%SZ")


def _date_time_to_epoch(scope: Scope, value: Any) -> Any:
    return int(_parse_datetime("dateTimeToEpoch", value).timestamp())


def _date_time_from_epoch(scope: Scope, value: Any) -> Any:
    seconds = _expect("dateTimeFromEpoch", value, int)
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        raise TemplateError(f"The template language function 'dateTimeFromEpoch' cannot convert '{seconds}'.") \
            from None


# -- networking (Bicep's cidr functions) ---------------------------------------------------------------------


def _network(fn: str, value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(_expect(fn, value, str), strict=False)
    except ValueError:
        raise TemplateError(f"The template language function '{fn}' was given '{str(value)[:60]}', which is not a "
                            "CIDR range.") from None


def _parse_cidr(scope: Scope, value: Any) -> Any:
    net = _network("parseCidr", value)
    hosts = list(net.hosts()) if net.num_addresses <= 4 else None
    first = hosts[0] if hosts else net.network_address + (1 if net.num_addresses > 2 else 0)
    last = hosts[-1] if hosts else net.broadcast_address - (1 if net.num_addresses > 2 else 0)
    return {"network": str(net.network_address), "netmask": str(net.netmask),
            "broadcast": str(net.broadcast_address), "firstUsable": str(first), "lastUsable": str(last),
            "cidr": net.prefixlen}


def _cidr_subnet(scope: Scope, value: Any, prefix: Any, number: Any) -> Any:
    net = _network("cidrSubnet", value)
    _expect("cidrSubnet", prefix, int, what="second parameter")
    _expect("cidrSubnet", number, int, what="third parameter")
    if not net.prefixlen <= prefix <= net.max_prefixlen or not 0 <= number < 2 ** (prefix - net.prefixlen):
        raise TemplateError(f"The template language function 'cidrSubnet' cannot make subnet {number} of size /"
                            f"{prefix} in '{value}'.")
    size = 2 ** (net.max_prefixlen - prefix)
    return f"{net.network_address + number * size}/{prefix}"


def _cidr_host(scope: Scope, value: Any, number: Any) -> Any:
    net = _network("cidrHost", value)
    _expect("cidrHost", number, int, what="second parameter")
    if not 0 <= number < net.num_addresses - 2:
        raise TemplateError(f"The template language function 'cidrHost' has no host {number} in '{value}'.")
    return str(net.network_address + number + 1)


# -- the table -----------------------------------------------------------------------------------------------


def _env_fn(getter: Callable[[Environment], Any]) -> Callable[..., Any]:
    def call(scope: Scope) -> Any:
        return getter(scope.env)
    return call


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # scope and deployment
    "parameters": _parameters, "variables": _variables, "copyindex": _copy_index,
    "deployment": _env_fn(lambda e: e.deployment()), "environment": _env_fn(lambda e: e.environment()),
    "subscription": _env_fn(lambda e: e.subscription()), "tenant": _env_fn(lambda e: e.tenant()),
    "resourcegroup": _resource_group, "reference": _reference, "utcnow": _utc_now, "newguid": _new_guid,
    "resourceid": _resource_id, "subscriptionresourceid": _subscription_resource_id,
    "tenantresourceid": _tenant_resource_id, "extensionresourceid": _extension_resource_id,
    "pickzones": lambda scope, *args: [],
    # strings
    "concat": _concat, "format": _format, "contains": _contains, "empty": _empty, "length": _length,
    "first": _first, "last": _last, "skip": _skip, "take": _take, "substring": _substring, "split": _split,
    "replace": _replace, "padleft": _pad_left, "string": lambda scope, v: to_text(v),
    "indexof": lambda scope, c, i: _index_of("indexOf", c, i, False),
    "lastindexof": lambda scope, c, i: _index_of("lastIndexOf", c, i, True),
    "tolower": _string_fn("toLower", str.lower), "toupper": _string_fn("toUpper", str.upper),
    "trim": _string_fn("trim", str.strip),
    "startswith": _two_strings("startsWith", lambda a, b: a.lower().startswith(b.lower())),
    "endswith": _two_strings("endsWith", lambda a, b: a.lower().endswith(b.lower())),
    "base64": _string_fn("base64", lambda s: base64.b64encode(s.encode()).decode()),
    "base64tostring": _base64_to_string, "base64tojson": _base64_to_json, "datauri": _data_uri,
    "datauritostring": _data_uri_to_string, "uri": _uri,
    "uricomponent": _string_fn("uriComponent", lambda s: urllib.parse.quote(s, safe="")),
    "uricomponenttostring": _string_fn("uriComponentToString", urllib.parse.unquote),
    "uniquestring": _unique_string, "guid": _guid, "json": _json,
    # numbers and logic
    "int": _int, "bool": _bool, "not": _not, "true": lambda scope: True, "false": lambda scope: False,
    "null": lambda scope: None,
    "add": _arith("add", lambda a, b: a + b), "sub": _arith("sub", lambda a, b: a - b),
    "mul": _arith("mul", lambda a, b: a * b), "div": _arith("div", _div), "mod": _arith("mod", _mod),
    "min": _minmax("min", min), "max": _minmax("max", max),
    "equals": lambda scope, a, b: deep_equal(a, b),
    "greater": _compare("greater", lambda a, b: a > b), "less": _compare("less", lambda a, b: a < b),
    "greaterorequals": _compare("greaterOrEquals", lambda a, b: a >= b),
    "lessorequals": _compare("lessOrEquals", lambda a, b: a <= b),
    # arrays and objects
    "array": _array, "createarray": lambda scope, *a: list(a), "createobject": _create_object, "union": _union,
    "intersection": _intersection, "shallowmerge": _shallow_merge, "items": _items, "objectkeys": _object_keys,
    "range": _range, "flatten": _flatten, "join": _join, "tryget": _try_get,
    # dates
    "datetimeadd": _date_time_add, "datetimetoepoch": _date_time_to_epoch,
    "datetimefromepoch": _date_time_from_epoch,
    # networking
    "parsecidr": _parse_cidr, "cidrsubnet": _cidr_subnet, "cidrhost": _cidr_host,
}
