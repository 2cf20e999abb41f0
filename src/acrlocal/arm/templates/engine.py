"""Deployment templates (pure): parameters, variables, resources with their copy loops, conditions and
dependencies, and outputs, as ARM processes them.

:func:`prepare` checks a template and its parameters and returns a :class:`Plan`: every resource instance the
template declares (copy loops expanded, nested child resources flattened, ids computed), each with the
resources it depends on (its ``dependsOn``, its parent, and every resource its ``reference()``/``list*()``
calls name). :meth:`Plan.waves` orders them; :meth:`Plan.body` evaluates one resource's body just before it is
deployed, when ``reference()`` can read what was deployed before it; :meth:`Plan.outputs` evaluates the
outputs at the end. Nothing here does I/O: what the template reads from outside (the subscription, the group,
other resources) comes through the :class:`~.functions.Environment` handed in.

Every problem raises :class:`~.errors.TemplateError` with ARM's wording and, where the template is a
:class:`~.jsonc.JsonObject`, the line and column of the part at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acrlocal.arm.templates.errors import TemplateError
from acrlocal.arm.templates.expressions import is_expression, parse, walk
from acrlocal.arm.templates.functions import Deferred, Environment, Scope, build_id, deep_equal, evaluate, to_text
from acrlocal.arm.templates.values import copy_count, expression, resolve, resolve_or_keep

MAX_RESOURCES = 800
MAX_PARAMETERS = 256
MAX_VARIABLES = 256
MAX_OUTPUTS = 64
#: Keys of a template resource that describe it to the engine rather than to its provider.
ENGINE_KEYS = frozenset({"type", "name", "apiversion", "dependson", "copy", "condition", "resources", "comments",
                         "scope", "metadata", "existing", "import", "subscriptionid", "resourcegroup"})
PARAMETER_TYPES = {"string": "String", "securestring": "SecureString", "int": "Int", "bool": "Bool",
                   "object": "Object", "secureobject": "SecureObject", "array": "Array"}
DEPLOYMENTS = "microsoft.resources/deployments"
#: ``resourceId('Microsoft.Resources/resourceGroups', 'rg')`` at subscription scope names the group this way.
_RG_AS_PROVIDER = re.compile(r"^(/subscriptions/[^/]+)/providers/microsoft\.resources/resourcegroups/")
RESOURCE_GROUPS = "microsoft.resources/resourcegroups"


@dataclass(frozen=True)
class Target:
    """Where a deployment deploys: a resource group, or a subscription when ``resource_group`` is None."""

    subscription_id: str
    resource_group: str | None = None

    @property
    def scope_id(self) -> str:
        if self.resource_group is None:
            return f"/subscriptions/{self.subscription_id}"
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"


@dataclass
class PlannedResource:
    """One resource instance of the template."""

    id: str
    type: str                  # the full type, ``Microsoft.Network/virtualNetworks/subnets``
    name: str                  # the full name, ``vnet1/default``
    api_version: str
    source: Mapping[str, Any]  # the template's resource object
    copy: dict[str | None, int] = field(default_factory=dict)
    loop: str | None = None
    symbolic: str | None = None
    condition: bool = True
    existing: bool = False
    depends_on: list[str] = field(default_factory=list)  # keys (lower-cased ids) of other planned resources
    line: int | None = None
    column: int | None = None
    #: A nested deployment's own target (``subscriptionId``/``resourceGroup`` on the resource).
    nested_target: Target | None = None

    @property
    def key(self) -> str:
        return self.id.lower()

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def deploys(self) -> bool:
        return self.condition and not self.existing

    def fail(self, err: TemplateError) -> TemplateError:
        return err.located(f"resource '{self.type}/{self.name}'", self.line, self.column)


def _get(obj: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``obj[key]`` ignoring the key's case, as ARM reads template properties."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if k.lower() == lowered:
            return v
    return default


def _pos(value: Any) -> tuple[int | None, int | None]:
    return getattr(value, "line", None), getattr(value, "column", None)


def _array(value: Any, what: str) -> list[Any]:
    """``value`` (a template's array property, absent or null: empty); :class:`TemplateError` if it is not an
    array."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TemplateError(f"The {what} must be an array; it is '{to_text(value)[:100]}'.")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    """``value`` (a template's object property, absent or null: empty); :class:`TemplateError` if it is not an
    object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateError(f"The {what} must be an object; it is '{to_text(value)[:100]}'.")
    return value


def _typename(declared: str) -> str:
    return {"String": "String", "SecureString": "String", "Int": "Integer", "Bool": "Boolean", "Object": "Object",
            "SecureObject": "Object", "Array": "Array"}[declared]


def _matches(declared: str, value: Any) -> bool:
    kind = _typename(declared)
    if kind == "Integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "Boolean":
        return isinstance(value, bool)
    return {"String": str, "Object": dict, "Array": list}[kind] in (type(value),) or isinstance(
        value, {"String": str, "Object": dict, "Array": list}[kind])


class Plan:
    """A checked template with its parameters: the resources to deploy, in dependency order."""

    def __init__(self, template: Mapping[str, Any], parameters: dict[str, Any], parameter_types: dict[str, str],
                 target: Target, env: Environment) -> None:
        self.template = template
        self.parameters = parameters
        self.parameter_types = parameter_types
        self.target = target
        self.env = env
        self.resources: list[PlannedResource] = []
        self._by_key: dict[str, PlannedResource] = {}
        self._variables: dict[str, Any] = {}
        self._evaluating: list[str] = []
        self.functions = self._user_functions()

    # -- scopes --------------------------------------------------------------------------------------

    def scope(self, *, runtime: bool = False, copy: dict[str | None, int] | None = None) -> Scope:
        return Scope(env=self.env, parameters=self.parameters, variables=self.variable, copy=dict(copy or {}),
                     user_functions=self.functions, resolve=self.resolve_target, runtime=runtime)

    def _user_functions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ns in _array(_get(self.template, "functions", None), "template 'functions'"):
            if isinstance(ns, dict) and isinstance(_get(ns, "namespace"), str):
                members = _get(ns, "members") or {}
                if isinstance(members, dict):
                    out[_get(ns, "namespace")] = members
        return out

    def variable(self, name: str) -> Any:
        key = name.lower()
        if key in self._variables:
            return self._variables[key]
        if key in self._evaluating:
            raise TemplateError(f"The template variable '{name}' refers to itself: "
                                f"{' -> '.join([*self._evaluating, key])}.")
        definitions = _get(self.template, "variables", None) or {}
        source: Any = None
        found = False
        for k, v in definitions.items():
            if k.lower() == key and k != "copy":
                source, found = v, True
        loops = [loop for loop in _array(_get(definitions, "copy", None), "variables' 'copy'") if isinstance(loop, dict)
                 and str(_get(loop, "name", "")).lower() == key]
        if not found and not loops:
            raise TemplateError(f"The template variable '{name}' is not found. Please see "
                                "https://aka.ms/arm-syntax-variables for usage details.")
        self._evaluating.append(key)
        try:
            scope = self.scope()
            if loops:
                loop = loops[0]
                count = copy_count(_get(loop, "count"), scope, f"the variable '{name}'")
                value: Any = [resolve(_get(loop, "input"), scope.child(copy={_get(loop, "name"): i}))
                              for i in range(count)]
            else:
                value = resolve(source, scope)
        except TemplateError as err:
            line, column = _pos(source if found else definitions)
            raise err.located(f"variable '{name}'", line, column) from None
        finally:
            self._evaluating.pop()
        self._variables[key] = value
        return value

    def resolve_target(self, text: str) -> str:
        """A ``reference()``/``list*()`` target (an id, a ``type/name``, a name, a symbolic name) → its id."""
        found = self.find(text)
        if found is not None:
            return found.id
        if text.startswith("/"):
            return text
        raise TemplateError(f"The template resource '{text}' is not found. Please see "
                            "https://aka.ms/arm-template/#resources for usage details.")

    def find(self, text: str) -> PlannedResource | None:
        lowered = _RG_AS_PROVIDER.sub(r"\1/resourcegroups/", text.lower())
        if lowered in self._by_key:
            return self._by_key[lowered]
        for r in self.resources:
            if r.symbolic is not None and r.symbolic.lower() == lowered:
                return r
        for r in self.resources:
            if f"{r.type}/{r.name}".lower() == lowered:
                return r
        named = [r for r in self.resources if r.name.lower() == lowered or r.short_name.lower() == lowered]
        return named[0] if len(named) == 1 else None

    # -- resources -----------------------------------------------------------------------------------

    def add(self, resource: PlannedResource) -> None:
        if resource.key in self._by_key and resource.deploys and self._by_key[resource.key].deploys:
            raise resource.fail(TemplateError(f"The resource '{resource.id}' is defined multiple times in a "
                                              "template. Please see https://aka.ms/arm-syntax-resources for usage "
                                              "details."))
        if resource.key not in self._by_key or resource.deploys:
            self._by_key[resource.key] = resource
        self.resources.append(resource)
        if len(self.resources) > MAX_RESOURCES:
            raise TemplateError(f"The template has more than {MAX_RESOURCES} resources (copy loops included).")

    @property
    def deployable(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.deploys]

    def waves(self) -> list[list[PlannedResource]]:
        """The resources to deploy, in groups: each group depends only on earlier ones. A cycle raises."""
        pending = {r.key: r for r in self.deployable}
        done: set[str] = set()
        out: list[list[PlannedResource]] = []
        while pending:
            ready = [r for r in pending.values() if all(d in done or d not in pending for d in r.depends_on)]
            if not ready:
                cycle = ", ".join(sorted(f"{r.type}/{r.name}" for r in pending.values()))
                raise TemplateError(f"Deployment template validation failed: 'Circular dependency detected on "
                                    f"resource: '{cycle}'. Please see https://aka.ms/arm-syntax-resources for "
                                    "usage details.'.", code="InvalidTemplate", target="")
            out.append(ready)
            for r in ready:
                done.add(r.key)
                del pending[r.key]
        return out

    def body(self, resource: PlannedResource, *, keep_unknown: bool = False) -> dict[str, Any]:
        """The resource's body as its provider receives it (location, tags, sku, identity, properties...)."""
        scope = self.scope(runtime=True, copy=resource.copy)
        out: dict[str, Any] = {}
        properties = _get(resource.source, "properties")
        options = _get(properties, "expressionEvaluationOptions") if isinstance(properties, dict) else None
        nested_inner = resource.type.lower() == DEPLOYMENTS and isinstance(options, dict) and \
            str(_get(options, "scope", "outer")).lower() == "inner"
        try:
            for key, value in resource.source.items():
                if key.lower() in ENGINE_KEYS:
                    continue
                if nested_inner and key.lower() == "properties" and isinstance(value, dict):
                    out[key] = {k: v if k.lower() == "template" else
                                (resolve_or_keep(v, scope) if keep_unknown else resolve(v, scope))
                                for k, v in value.items()}
                    continue
                out[key] = resolve_or_keep(value, scope) if keep_unknown else resolve(value, scope)
        except TemplateError as err:
            raise resource.fail(err) from None
        return out

    def outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs, ``{name: {"type": ..., "value": ...}}``, evaluated now."""
        definitions = _get(self.template, "outputs", None) or {}
        if not isinstance(definitions, dict):
            raise TemplateError("The template 'outputs' must be an object.")
        result: dict[str, dict[str, Any]] = {}
        scope = self.scope(runtime=True)
        for name, spec in definitions.items():
            try:
                if not isinstance(spec, dict):
                    raise TemplateError("an output must be an object with 'type' and 'value'")
                if "condition" in {k.lower() for k in spec} and not _truth(_get(spec, "condition"), scope):
                    continue
                declared = PARAMETER_TYPES.get(str(_get(spec, "type", "")).lower())
                if declared is None:
                    raise TemplateError(f"the output type '{_get(spec, 'type')}' is not one of "
                                        f"'{', '.join(PARAMETER_TYPES.values())}'")
                loop = _get(spec, "copy")
                value: Any
                if loop is not None:
                    loop = _object(loop, f"output '{name}''s 'copy'")
                    count = copy_count(_get(loop, "count"), scope, f"the output '{name}'")
                    value = [resolve(_get(loop, "input"), scope.child(copy={None: i})) for i in range(count)]
                else:
                    value = resolve(_get(spec, "value"), scope)
                if declared in ("String", "SecureString") and not isinstance(value, str):
                    value = to_text(value)
                if not _matches(declared, value):
                    raise TemplateError(f"Template output '{name}' expected a value of type "
                                        f"'{_typename(declared)}', but got a value of type "
                                        f"'{_arm_type(value)}'")
                result[name] = {"type": declared, "value": value}
            except TemplateError as err:
                line, column = _pos(spec)
                raise err.located(f"output '{name}'", line, column) from None
        return result


def _truth(value: Any, scope: Scope) -> bool:
    result = resolve(value, scope)
    if not isinstance(result, bool):
        raise TemplateError(f"The condition must be a boolean; it is '{to_text(result)[:100]}'.")
    return result


# -- parameters ----------------------------------------------------------------------------------------------


def _parameters(template: Mapping[str, Any], given: Mapping[str, Any], env: Environment,
                functions: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    definitions = _get(template, "parameters", None) or {}
    if not isinstance(definitions, dict):
        raise TemplateError("The template 'parameters' must be an object.")
    if len(definitions) > MAX_PARAMETERS:
        raise TemplateError(f"The template has {len(definitions)} parameters; at most {MAX_PARAMETERS} are allowed.")
    known = {k.lower() for k in definitions}
    unknown = [k for k in given if k.lower() not in known and not k.startswith("$")]
    if unknown:
        raise TemplateError(f"Deployment template validation failed: 'The template parameters "
                            f"'{', '.join(unknown)}' in the parameters file are not valid; they are not present in "
                            "the original template and can therefore not be provided at deployment time. The only "
                            f"supported parameters for this template are '{', '.join(definitions)}'. Please see "
                            "https://aka.ms/arm-pass-parameter-values for usage details.'.", target="")
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, spec in definitions.items():
        line, column = _pos(spec)
        try:
            if not isinstance(spec, dict):
                raise TemplateError("a parameter must be an object with a 'type'")
            declared = PARAMETER_TYPES.get(str(_get(spec, "type", "")).lower())
            if declared is None:
                raise TemplateError(f"the type '{_get(spec, 'type')}' is not one of "
                                    f"'{', '.join(PARAMETER_TYPES.values())}'")
            types[name] = declared
            supplied = next((v for k, v in given.items() if k.lower() == name.lower()), None)
            if supplied is not None:
                if not isinstance(supplied, dict) or "value" not in supplied:
                    kind = "a Key Vault reference" if isinstance(supplied, dict) and "reference" in supplied else \
                        "not an object with 'value'"
                    raise TemplateError(f"the value given for the template parameter '{name}' is {kind}; acrlocal "
                                        "takes parameter values as {\"value\": ...}")
                value = supplied["value"]
            elif "defaultvalue" in {k.lower() for k in spec}:
                scope = Scope(env=env, parameters=values, user_functions=functions, parameter_defaults=True)
                value = resolve(_get(spec, "defaultValue"), scope)
            else:
                raise TemplateError(f"Deployment template validation failed: 'The value for the template parameter "
                                    f"'{name}' at line '{line}' and column '{column}' is not provided. Please see "
                                    "https://aka.ms/resource-manager-parameter-files for details.'.", target="")
            _check_parameter(name, declared, spec, value)
            values[name] = value
        except TemplateError as err:
            raise err.located(f"parameter '{name}'", line, column) from None
    return values, types


def _check_parameter(name: str, declared: str, spec: Mapping[str, Any], value: Any) -> None:
    if not _matches(declared, value):
        raise TemplateError(f"Deployment template validation failed: 'Template parameter '{name}' was provided an "
                            f"invalid value. Expected a value of type '{_typename(declared)}', but received a value "
                            f"of type '{_arm_type(value)}'. Please see https://aka.ms/resource-manager-parameter-files "
                            "for details.'.", target="")
    allowed = _get(spec, "allowedValues")
    if isinstance(allowed, list) and allowed:
        candidates = value if isinstance(value, list) else [value]
        bad = [v for v in candidates if not any(deep_equal(v, a) for a in allowed)]
        if bad:
            shown = ",".join(to_text(a) for a in allowed)
            raise TemplateError(f"Deployment template validation failed: 'The provided value '{to_text(value)[:200]}' "
                                f"for the template parameter '{name}' is not valid. The value is not part of the "
                                f"allowed value(s): '{shown}'. Please see https://aka.ms/arm-syntax-parameters for "
                                "usage details.'.", target="")
    for bound, test, words in (("minValue", lambda v, b: v >= b, "less than the minimum"),
                               ("maxValue", lambda v, b: v <= b, "greater than the maximum")):
        limit = _get(spec, bound)
        if isinstance(limit, int) and isinstance(value, int) and not isinstance(value, bool) and not test(value, limit):
            raise TemplateError(f"Deployment template validation failed: 'The provided value '{value}' for the "
                                f"template parameter '{name}' is not valid. The value is {words} value of "
                                f"'{limit}'.'.", target="")
    for bound, test, words in (("minLength", lambda n, b: n >= b, "shorter than the minimum"),
                               ("maxLength", lambda n, b: n <= b, "longer than the maximum")):
        limit = _get(spec, bound)
        if isinstance(limit, int) and isinstance(value, str | list) and not test(len(value), limit):
            raise TemplateError(f"Deployment template validation failed: 'The provided value for the template "
                                f"parameter '{name}' is not valid. Its length is {words} length of '{limit}'.'.",
                                target="")


def _arm_type(value: Any) -> str:
    from acrlocal.arm.templates.expressions import type_name
    return type_name(value)


# -- resources -----------------------------------------------------------------------------------------------


def _resource_list(template: Mapping[str, Any]) -> list[tuple[str | None, Any]]:
    resources = _get(template, "resources", None)
    if resources is None:
        return []
    if isinstance(resources, dict):  # languageVersion 2.0: symbolic names
        return list(resources.items())
    if not isinstance(resources, list):
        raise TemplateError("The template 'resources' must be an array (or, with languageVersion 2.0, an object).")
    return [(None, r) for r in resources]


def _expand(plan: Plan, symbolic: str | None, source: Any, parent: PlannedResource | None) -> None:
    line, column = _pos(source)
    label = f"resource '{symbolic or _get(source, 'name', '?') if isinstance(source, dict) else '?'}'"
    try:
        if not isinstance(source, dict):
            raise TemplateError("a resource must be an object with 'type', 'name' and 'apiVersion'")
        for required in ("type", "name") + (() if _get(source, "existing") is True else ("apiVersion",)):
            if _get(source, required) is None:
                raise TemplateError(f"The template resource is missing the required property '{required}'")
        base = plan.scope(copy=parent.copy if parent else {})
        loop = _get(source, "copy")
        instances: list[dict[str | None, int]] = [dict(base.copy)]
        loop_name: str | None = None
        serial = 0
        if loop is not None:
            if not isinstance(loop, dict) or not isinstance(_get(loop, "name"), str):
                raise TemplateError("The resource's 'copy' must be an object with a 'name' and a 'count'")
            loop_name = _get(loop, "name")
            count = copy_count(_get(loop, "count"), base, f"the resource copy '{loop_name}'")
            instances = [{**base.copy, None: i, loop_name: i} for i in range(count)]
            if str(_get(loop, "mode", "parallel")).lower() == "serial":
                batch = resolve(_get(loop, "batchSize", 1), base)
                if batch is None:
                    batch = 1
                if isinstance(batch, bool) or not isinstance(batch, int):
                    raise TemplateError(f"The copy batchSize of '{loop_name}' must be an integer; it is "
                                        f"'{to_text(batch)[:100]}'.")
                serial = max(1, batch)
        planned: list[PlannedResource] = []
        for copy in instances:
            scope = base.child(copy=copy)
            resource = _instance(plan, symbolic, source, parent, scope, copy, loop_name)
            plan.add(resource)
            planned.append(resource)
        if serial:
            for i, r in enumerate(planned):
                if i >= serial:
                    r.depends_on.append(planned[i - serial].key)
        children = _array(_get(source, "resources", None), "resource's 'resources'")
    except TemplateError as err:
        raise err.located(label, line, column) from None
    for r in planned:
        for child in children:
            _expand(plan, None, child, r)


def _instance(plan: Plan, symbolic: str | None, source: Mapping[str, Any], parent: PlannedResource | None,
              scope: Scope, copy: dict[str | None, int], loop_name: str | None) -> PlannedResource:
    type_ = _text(expression_value(_get(source, "type"), scope), "type")
    name = _text(expression_value(_get(source, "name"), scope), "name")
    api = _get(source, "apiVersion")
    api_version = _text(expression_value(api, scope), "apiVersion") if api is not None else ""
    if parent is not None and "/" not in type_.split("/", 1)[-1] and "." not in type_.split("/")[0]:
        type_ = f"{parent.type}/{type_}"
    if parent is not None and name.count("/") < type_.count("/") - 1:
        name = f"{parent.name}/{name}"
    namespace, _, rest = type_.partition("/")
    if not rest or "." not in namespace:
        raise TemplateError(f"The resource type '{type_}' is not valid: a type is '<namespace>/<type>'")
    names = name.split("/")
    if len(names) != type_.count("/") or any(not n for n in names):
        raise TemplateError(f"The resource name '{name}' of type '{type_}' is not valid: it must have "
                            f"{type_.count('/')} segment(s)")
    condition = True
    if "condition" in {k.lower() for k in source}:
        condition = _truth(_get(source, "condition"), scope)
    if parent is not None and not parent.condition:
        condition = False
    existing = _get(source, "existing") is True
    target = plan.target
    nested: Target | None = None
    if type_.lower() == DEPLOYMENTS:
        sub = _get(source, "subscriptionId")
        rg = _get(source, "resourceGroup")
        sub_value = _text(expression_value(sub, scope), "subscriptionId") if sub is not None else \
            target.subscription_id
        rg_value = _text(expression_value(rg, scope), "resourceGroup") if rg is not None else \
            (target.resource_group if sub is None else None)
        nested = Target(sub_value, rg_value)
        rid = f"{nested.scope_id}/providers/Microsoft.Resources/deployments/{name}"
    elif type_.lower() == RESOURCE_GROUPS:
        if target.resource_group is not None:
            raise TemplateError("A resource group can only be deployed at subscription scope")
        rid = f"/subscriptions/{target.subscription_id}/resourceGroups/{name}"
    else:
        scope_value = _get(source, "scope")
        if scope_value is not None:
            extension_scope = _text(expression_value(scope_value, scope), "scope")
            if not extension_scope.startswith("/"):
                found = plan.find(extension_scope)
                if found is not None:
                    extension_scope = found.id
                else:
                    parts = extension_scope.split("/")
                    extension_scope = build_id(target.scope_id, "/".join([parts[0], *parts[1::2]]), parts[2::2]) \
                        if len(parts) >= 3 and len(parts) % 2 == 1 else extension_scope
            rid = build_id(extension_scope, type_, names)
        else:
            rid = build_id(target.scope_id, type_, names)
    line, column = _pos(source)
    resource = PlannedResource(id=rid, type=type_, name=name, api_version=api_version, source=source, copy=copy,
                               loop=loop_name, symbolic=symbolic, condition=condition, existing=existing,
                               line=line, column=column, nested_target=nested)
    if parent is not None:
        resource.depends_on.append(parent.key)
    return resource


def expression_value(value: Any, scope: Scope) -> Any:
    return expression(value, scope) if isinstance(value, str) else resolve(value, scope)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TemplateError(f"The resource's '{what}' must be a non-empty string; it is '{to_text(value)[:100]}'")
    return value


def _dependencies(plan: Plan) -> None:
    """Resolve every ``dependsOn`` entry, and add the resources each body's ``reference()`` calls name."""
    for r in plan.resources:
        scope = plan.scope(copy=r.copy)
        try:
            entries = _array(_get(r.source, "dependsOn", None), "resource's 'dependsOn'")
        except TemplateError as err:
            raise r.fail(err) from None
        for entry in entries:
            try:
                text = _text(expression_value(entry, scope), "dependsOn")
            except TemplateError as err:
                raise r.fail(err) from None
            targets = _dependency_targets(plan, text)
            if not targets:
                raise r.fail(TemplateError(f"The resource '{text}' is not defined in the template. Please see "
                                           "https://aka.ms/arm-syntax-resources for usage details."))
            r.depends_on.extend(t.key for t in targets if t.key != r.key)
        for target in _referenced(plan, r, scope):
            if target.key != r.key:
                r.depends_on.append(target.key)


def _dependency_targets(plan: Plan, text: str) -> list[PlannedResource]:
    found = plan.find(text)
    if found is not None:
        return [found]
    lowered = text.lower()
    return [r for r in plan.resources if r.loop is not None and r.loop.lower() == lowered]


def _referenced(plan: Plan, resource: PlannedResource, scope: Scope) -> list[PlannedResource]:
    out: list[PlannedResource] = []
    for text in _strings(resource.source, skip_engine_keys=True):
        if not is_expression(text):
            continue
        try:
            calls = walk(parse(text[1:-1]))
        except TemplateError as err:
            raise resource.fail(err) from None
        for call in calls:
            name = call.name.lower()
            if (name == "reference" or name.startswith("list")) and call.args:
                try:
                    target = evaluate(call.args[0], scope)
                except (TemplateError, Deferred):  # an argument that needs run-time values names no static target
                    continue
                if isinstance(target, str):
                    found = plan.find(target)
                    if found is not None:
                        out.append(found)
    return out


def _strings(value: Any, skip_engine_keys: bool = False) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(item for k, item in v.items() if not (skip_engine_keys and v is value
                                                               and k.lower() in ENGINE_KEYS))
        elif isinstance(v, list):
            stack.extend(v)
    return out


def template_hash(template: Any) -> str:
    """A stable hash of a template, as ``properties.templateHash`` shows (ARM's is a decimal number too)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    return str(int.from_bytes(digest[:8], "big"))


def prepare(template: Any, parameters: Mapping[str, Any] | None, target: Target, env: Environment) -> Plan:
    """Check ``template`` with ``parameters`` (``{name: {"value": ...}}``) for ``target``; the plan to deploy."""
    if not isinstance(template, dict):
        raise TemplateError("Deployment template validation failed: 'The template must be a JSON object.'.",
                            target="")
    schema = _get(template, "$schema")
    if schema is not None and not isinstance(schema, str):
        raise TemplateError("Deployment template validation failed: 'The template '$schema' must be a string.'.",
                            target="")
    plan_functions = Plan(template, {}, {}, target, env).functions
    values, types = _parameters(template, parameters or {}, env, plan_functions)
    plan = Plan(template, values, types, target, env)
    variables = _get(template, "variables", None) or {}
    if not isinstance(variables, dict):
        raise TemplateError("Deployment template validation failed: 'The template 'variables' must be an object.'.",
                            target="")
    if len(variables) > MAX_VARIABLES:
        raise TemplateError(f"The template has {len(variables)} variables; at most {MAX_VARIABLES} are allowed.")
    outputs = _get(template, "outputs", None) or {}
    if isinstance(outputs, dict) and len(outputs) > MAX_OUTPUTS:
        raise TemplateError(f"The template has {len(outputs)} outputs; at most {MAX_OUTPUTS} are allowed.")
    for name in variables:
        if name != "copy":
            plan.variable(name)
    for loop in _array(_get(variables, "copy", None), "variables' 'copy'"):
        if isinstance(loop, dict) and isinstance(_get(loop, "name"), str):
            plan.variable(_get(loop, "name"))
    for symbolic, source in _resource_list(template):
        _expand(plan, symbolic, source, None)
    _dependencies(plan)
    plan.waves()  # raises on a cycle
    return plan
