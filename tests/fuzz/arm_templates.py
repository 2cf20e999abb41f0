"""Hypothesis strategies for ARM deployment requests: templates that are valid JSON and near-valid ARM
(parameters, variables with copy, resources of the types acrlocal serves with their properties, copy loops,
conditions, dependencies, child resources, nested deployments, outputs), whose strings are template expressions
built from ARM's functions, each piece mutated or replaced by other JSON now and then.

The resource names are few (``fz0``...), so resources of one example refer to those of another and deployments
update what earlier ones made; the groups are :data:`GROUPS` only, so ``Complete`` mode never deletes anything
outside them. No virtual machines: a VM needs a network namespace of its own."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzz import strategies as s

GROUPS = ["fuzz-deploy", "fuzz-deploy2"]
NAMES = ["fz0", "fz1", "fz2"]
PARAMETERS = ["p1", "p2", "p3"]
VARIABLES = ["v1", "v2", "v3"]
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
SUB_SCHEMA = "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#"

FUNCTIONS = ["concat", "format", "string", "int", "bool", "length", "add", "sub", "mul", "div", "mod", "if",
             "equals", "not", "and", "or", "empty", "first", "last", "take", "skip", "union", "intersection",
             "createArray", "createObject", "json", "base64", "base64ToString", "uniqueString", "guid", "toLower",
             "toUpper", "substring", "replace", "split", "join", "range", "min", "max", "contains", "indexOf",
             "padLeft", "trim", "coalesce", "array", "dataUri", "uri", "uriComponent", "dateTimeAdd", "objectKeys",
             "items", "flatten", "tryGet", "shallowMerge", "parseCidr", "cidrSubnet", "cidrHost", "greater",
             "less", "startsWith", "endsWith", "resourceId", "subscriptionResourceId", "extensionResourceId",
             "tenantResourceId", "reference", "listKeys", "listCredentials", "copyIndex", "parameters", "variables",
             "filter", "map", "reduce", "sort", "lambda", "lambdaVariables", "toObject", "nosuch"]
LEAVES = ["resourceGroup().location", "resourceGroup().name", "resourceGroup().id", "subscription().subscriptionId",
          "subscription().id", "deployment().name", "deployment().properties", "environment().name",
          "tenant().tenantId", "utcNow()", "newGuid()", "true()", "false()", "null()", "copyIndex()", "copyIndex(1)",
          "copyIndex('c')", "copyIndex('vc')", "parameters('p1')", "parameters('p2')", "variables('v1')",
          "variables('v2')", "parameters('nope')", "variables('nope')", "range(0, 3)", "createObject('a', 1)",
          "json('{\"a\":[1,2]}')", "resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'fz0')",
          "resourceId('Microsoft.Network/virtualNetworks', 'fz1')",
          "reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'fz0'))",
          "reference('fz0', '2023-01-31', 'Full')", "lambdaVariables('x')", "lambda('x', lambdaVariables('x'))",
          "listKeys(resourceId('Microsoft.ContainerRegistry/registries', 'fz0'), '2023-07-01')",
          "resourceGroup()", "subscription()", "deployment()"]
TYPES = ["Microsoft.ManagedIdentity/userAssignedIdentities", "Microsoft.Network/virtualNetworks",
         "Microsoft.Network/virtualNetworks/subnets", "Microsoft.Network/networkSecurityGroups",
         "Microsoft.Network/networkSecurityGroups/securityRules", "Microsoft.Network/publicIPAddresses",
         "Microsoft.Network/networkInterfaces", "Microsoft.Authorization/roleAssignments",
         "Microsoft.Resources/deployments", "Microsoft.ContainerRegistry/registries",
         "Microsoft.ContainerRegistry/registries/scopeMaps",
         "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
         "Microsoft.Resources/resourceGroups", "Microsoft.Foo/bars", "Microsoft.Network/nosuch", "nonamespace"]
API_VERSIONS = ["2023-01-31", "2023-09-01", "2023-07-01", "2022-04-01", "2022-09-01", "2021-04-01", "2099-01-01",
                "", "latest"]


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _call(draw: st.DrawFn, depth: int) -> str:
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(st.sampled_from(LEAVES), st.integers(-3, 10**6).map(str),
                              st.sampled_from([*NAMES, "x", "", "10.0.0.0/16", "2026-01-01T00:00:00Z", "P1D"])
                              .map(literal), st.text(max_size=8).map(literal)))
    name = draw(st.sampled_from(FUNCTIONS))
    args = [_call(draw, depth - 1) for _ in range(draw(st.integers(0, 3)))]
    text = f"{name}({', '.join(args)})"
    suffix = draw(st.sampled_from(["", "", "", ".name", ".properties", "[0]", "['a']", ".id", "[1].x"]))
    return text + suffix


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """A template expression string (``[...]``): function calls nested a few deep, mutated now and then."""
    text = f"[{_call(draw, depth)}]"
    return draw(st.one_of(st.just(text), st.just(text), s.mutated(st.just(text))))


#: Values that evaluate in every template :func:`templates` makes (``p1``, ``p2`` and ``v1`` are always declared).
GOOD_VALUES = ["fz0", 3, True, None, [1, "a"], {"a": {"b": [1]}}, "[parameters('p1')]", "[parameters('p2')]",
               "[variables('v1')]", "[concat(parameters('p1'), '-', string(parameters('p2')))]",
               "[resourceGroup().location]", "[subscription().subscriptionId]", "[uniqueString(resourceGroup().id)]",
               "[guid(parameters('p1'))]", "[toLower(deployment().name)]", "[length(variables('v1'))]",
               "[if(equals(parameters('p2'), 2), 'two', 'other')]", "[createObject('k', parameters('p2'))]",
               "[union(createArray(1), createArray(2))]", "[json('{\"a\": 1}')]", "[utcNow()]",
               "[dateTimeAdd(utcNow(), 'P1D')]", "[cidrSubnet('10.0.0.0/16', 24, parameters('p2'))]",
               "[base64(parameters('p1'))]", "[range(0, parameters('p2'))]", "[environment().name]",
               "[map(range(0, 3), lambda('i', add(lambdaVariables('i'), 1)))]",
               "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'fz0'), '2023-01-31')]",
               "[resourceId('Microsoft.Network/virtualNetworks', 'fz1')]", "[tenant().tenantId]"]


def values() -> st.SearchStrategy[Any]:
    """Mostly values that evaluate; else generated expressions (that mostly do not), other JSON, or junk."""
    good = st.sampled_from(GOOD_VALUES)
    return st.one_of(good, good, good, good, expressions(), s.json_values(max_leaves=6), s.junk)


def names() -> st.SearchStrategy[str]:
    good = st.sampled_from([*NAMES, "[parameters('p1')]", "[concat('fz', string(parameters('p2')))]"])
    return st.one_of(good, good, good, good, st.just("[concat('fz', copyIndex())]"), expressions(2), s.arm_names)


TIDY_PARAMETERS = [{"type": "string", "defaultValue": "fz0"}, {"type": "int", "defaultValue": 2},
                   {"type": "bool", "defaultValue": False}, {"type": "array", "defaultValue": [1, 2]},
                   {"type": "object", "defaultValue": {"a": 1}}, {"type": "securestring", "defaultValue": "s3cret"},
                   {"type": "string", "allowedValues": ["fz0", "fz1"], "defaultValue": "fz1"},
                   {"type": "int", "minValue": 1, "maxValue": 3, "defaultValue": 2},
                   {"type": "string", "minLength": 2, "maxLength": 20, "defaultValue": "[resourceGroup().name]"},
                   {"type": "string"}]


@st.composite
def parameter_specs(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 2)):
        return dict(draw(st.sampled_from(TIDY_PARAMETERS)))
    spec: dict[str, Any] = {"type": draw(st.one_of(st.sampled_from(["string", "int", "bool", "object", "array",
                                                                    "securestring", "secureObject", "String"]),
                                                   s.junk))}
    for key in draw(st.lists(st.sampled_from(["defaultValue", "allowedValues", "minValue", "maxValue", "minLength",
                                              "maxLength", "metadata", "nullable"]), max_size=3, unique=True)):
        if key == "defaultValue":
            spec[key] = draw(st.one_of(values(), st.sampled_from(["fz0", 3, True, [], {}])))
        elif key == "allowedValues":
            spec[key] = draw(st.one_of(st.lists(st.one_of(st.sampled_from(["fz0", "fz1", 1, 2]), s.json_values(2)),
                                                max_size=3), s.json_values(3)))
        elif key in ("minValue", "maxValue", "minLength", "maxLength"):
            spec[key] = draw(st.one_of(st.integers(-5, 70), s.json_values(2)))
        else:
            spec[key] = draw(s.json_values(3))
    return spec


@st.composite
def copies(draw: st.DrawFn, name: str = "c") -> dict[str, Any]:
    copy: dict[str, Any] = {"name": draw(st.one_of(st.just(name), s.junk)),
                            "count": draw(st.one_of(st.integers(-2, 4), st.just("[length(range(0, 2))]"),
                                                    st.just("[parameters('p2')]"), expressions(2), s.junk))}
    if draw(st.booleans()):
        copy["mode"] = draw(st.one_of(st.sampled_from(["serial", "parallel", "Serial"]), s.junk))
        copy["batchSize"] = draw(st.one_of(st.integers(-1, 3), s.junk))
    return copy


def properties_for(kind: str, draw: st.DrawFn, depth: int) -> Any:
    if kind == "Microsoft.Network/virtualNetworks":
        return {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                "subnets": [{"name": "s1", "properties": {"addressPrefix": "10.0.0.0/24"}}]}
    if kind == "Microsoft.Network/virtualNetworks/subnets":
        return {"addressPrefix": draw(st.sampled_from(["10.0.1.0/24", "10.0.0.0/24", "10.9.0.0/8", "x"]))}
    if kind == "Microsoft.Network/networkSecurityGroups":
        return {"securityRules": [{"name": "r1", "properties": {
            "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourcePortRange": "*",
            "destinationPortRange": "22", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}}]}
    if kind == "Microsoft.Network/networkSecurityGroups/securityRules":
        return {"priority": 200, "direction": "Inbound", "access": "Deny", "protocol": "*", "sourcePortRange": "*",
                "destinationPortRange": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}
    if kind == "Microsoft.Authorization/roleAssignments":
        return {"roleDefinitionId": f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                                    f"'{CONTRIBUTOR}')]",
                "principalId": "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', "
                               "'fz0')).principalId]",
                "principalType": "ServicePrincipal"}
    if kind == "Microsoft.ContainerRegistry/registries":
        return {"adminUserEnabled": draw(st.booleans())}
    if kind == "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials":
        return {"issuer": "https://token.actions.githubusercontent.com", "subject": "repo:o/r:ref:refs/heads/main",
                "audiences": ["api://AzureADTokenExchange"]}
    if kind == "Microsoft.Resources/deployments":
        inner: dict[str, Any] = {"mode": draw(st.sampled_from(["Incremental", "Incremental", "Complete", "x"])),
                                 "template": draw(templates(depth - 1)) if depth > 0 else {"resources": []}}
        if draw(st.booleans()):
            inner["expressionEvaluationOptions"] = {"scope": draw(st.sampled_from(["inner", "outer", "x"]))}
        if draw(st.booleans()):
            inner["parameters"] = {"p1": {"value": draw(values())}}
        return inner
    return {}


@st.composite
def resources(draw: st.DrawFn, depth: int = 1, child: bool = False) -> dict[str, Any]:
    if child:
        kind = draw(st.sampled_from(["subnets", "securityRules", "federatedIdentityCredentials", "scopeMaps", "x"]))
    else:
        kind = draw(st.one_of(st.sampled_from(TYPES), st.sampled_from(TYPES[:8]), s.junk))
    resource: dict[str, Any] = {"type": kind,
                                "apiVersion": draw(st.sampled_from(API_VERSIONS[:4] * 3 + API_VERSIONS)),
                                "name": draw(names())}
    if kind.count("/") >= 2 and isinstance(resource["name"], str) and not resource["name"].startswith("["):
        resource["name"] = draw(st.sampled_from(NAMES)) + "/" + resource["name"]
    location = st.sampled_from(["westus", "[resourceGroup().location]", "westeurope", "West US"])
    resource["location"] = draw(location) if draw(st.integers(0, 9)) else draw(s.junk)
    resource["properties"] = properties_for(kind, draw, depth)
    for key in draw(st.lists(st.sampled_from(["dependsOn", "copy", "condition", "resources", "tags", "existing",
                                              "resourceGroup", "subscriptionId", "scope", "identity", "sku",
                                              "comments"]), max_size=3, unique=True)):
        if key == "dependsOn":
            resource[key] = draw(st.lists(st.one_of(st.sampled_from(NAMES), expressions(2), s.junk, st.just(
                "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'fz0')]")), max_size=3))
        elif key == "copy":
            resource[key] = draw(copies())
        elif key == "condition":
            resource[key] = draw(st.one_of(st.booleans(), expressions(2), st.just("[equals(1, 1)]"), s.junk))
        elif key == "resources":
            resource[key] = draw(st.lists(resources(depth=0, child=True), max_size=2)) if depth > 0 else []
        elif key == "tags":
            resource[key] = draw(st.one_of(st.dictionaries(st.text(max_size=6), values(), max_size=2),
                                           s.json_values(3)))
        elif key == "existing":
            resource[key] = draw(st.one_of(st.booleans(), s.json_values(1)))
        elif key == "resourceGroup":
            resource[key] = draw(st.one_of(st.sampled_from(GROUPS), expressions(1), s.junk))
        elif key == "subscriptionId":
            resource[key] = draw(st.one_of(st.just("[subscription().subscriptionId]"), s.guids, s.junk))
        elif key == "scope":
            resource[key] = draw(st.one_of(st.just("[resourceGroup().id]"), st.just(
                "[format('Microsoft.ManagedIdentity/userAssignedIdentities/{0}', 'fz0')]"), expressions(1)))
        elif key == "identity":
            resource[key] = draw(st.one_of(st.just({"type": "SystemAssigned"}), s.json_values(3)))
        elif key == "sku":
            resource[key] = draw(st.one_of(st.just({"name": "Basic"}), st.just({"name": "Standard"}),
                                           s.json_values(2)))
        else:
            resource[key] = draw(values())
    return resource


@st.composite
def templates(draw: st.DrawFn, depth: int = 1, subscription: bool = False) -> dict[str, Any]:
    template: dict[str, Any] = {"$schema": SUB_SCHEMA if subscription else SCHEMA, "contentVersion": "1.0.0.0"}
    template["parameters"] = {"p1": {"type": "string", "defaultValue": "fz0"},
                              "p2": {"type": "int", "defaultValue": 2},
                              **draw(st.dictionaries(st.sampled_from(["p3", "p3", "p1"]), parameter_specs(),
                                                     max_size=1))}
    variables: dict[str, Any] = {"v1": "[concat(parameters('p1'), '-v')]",
                                 **draw(st.dictionaries(st.sampled_from(VARIABLES), values(), max_size=2))}
    if draw(st.integers(0, 4)) == 0:
        variables["copy"] = [{**draw(copies("vc")), "input": draw(values())}]
    template["variables"] = variables
    listed = draw(st.lists(resources(depth=depth), max_size=4))
    if draw(st.integers(0, 5)) == 0:
        template["languageVersion"] = "2.0"
        template["resources"] = {f"r{i}": r for i, r in enumerate(listed)}
    else:
        template["resources"] = listed
    outputs: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(["o1", "o2", "o3"]), max_size=2, unique=True)):
        output: dict[str, Any] = {"type": draw(st.one_of(st.sampled_from(["string", "int", "bool", "object",
                                                                          "array", "securestring"]), s.junk))}
        if draw(st.integers(0, 3)) == 0:
            output["copy"] = {**draw(copies("oc")), "input": draw(values())}
        else:
            output["value"] = draw(values())
        if draw(st.integers(0, 3)) == 0:
            output["condition"] = draw(st.one_of(st.booleans(), expressions(1)))
        outputs[name] = output
    template["outputs"] = outputs
    if draw(st.integers(0, 6)) == 0:
        template["functions"] = [{"namespace": "fz", "members": {"f": {
            "parameters": [{"name": "a", "type": draw(st.sampled_from(["string", "int", "x"]))}],
            "output": {"type": "string", "value": draw(st.one_of(st.just("[concat(parameters('a'), 'x')]"),
                                                                  expressions(1)))}}}}]
    if draw(st.integers(0, 9)) == 0:  # now and then a piece is junk
        template[draw(st.sampled_from(sorted(k for k in template if not k.startswith(("$", "content")))))] = \
            draw(s.json_values(3))
    return template


@st.composite
def deployment_bodies(draw: st.DrawFn, subscription: bool = False) -> dict[str, Any]:
    """A deployment request body: properties (mode, template, parameters), and a location at subscription
    scope."""
    template = draw(templates(subscription=subscription))
    parameters: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(["p1", "p1", "p2", "p2", "p3", "extra"]), max_size=2, unique=True)):
        if name in ("p3", "extra") and draw(st.integers(0, 3)):
            continue
        fitting = {"p1": "fz1", "p2": 3}.get(name, "fz2")
        value = draw(st.one_of(st.just(fitting), st.just(fitting), st.sampled_from(["fz0", 2, True, [1], {"a": 1}]),
                               values()))
        parameters[name] = draw(st.sampled_from([{"value": value}] * 4 + [
            value, {"reference": {"keyVault": {"id": "x"}, "secretName": "s"}}]))
    properties: dict[str, Any] = {"mode": draw(st.sampled_from(["Incremental"] * 6 + ["Complete", "incremental",
                                                                                     "Nope"])),
                                  "template": template, "parameters": parameters}
    body: dict[str, Any] = {"properties": properties}
    if subscription or draw(st.integers(0, 3)) == 0:
        body["location"] = draw(st.sampled_from(["westus", "westeurope"])) if draw(st.integers(0, 9)) else \
            draw(s.junk)
    if draw(st.integers(0, 4)) == 0:
        body["tags"] = draw(st.one_of(st.just({"a": "b"}), s.json_values(3)))
    if draw(st.integers(0, 5)) == 0:
        properties["whatIfSettings"] = draw(st.one_of(st.just({"resultFormat": "ResourceIdOnly"}), s.json_values(2)))
    return body


# -- deployments that deploy: valid templates, one value now and then odd ------------------------------------------

IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"


def _identity(name: str, **extra: Any) -> dict[str, Any]:
    return {"type": IDENTITY, "apiVersion": "2023-01-31", "name": name, "location": "[resourceGroup().location]",
            **extra}


VALID_RESOURCES: list[dict[str, Any]] = [
    _identity("fz0"),
    _identity("[concat('fzc', copyIndex())]", copy={"name": "c", "count": "[parameters('p2')]"}),
    _identity("[format('fzs{0}', copyIndex(1))]", copy={"name": "s", "count": 3, "mode": "serial", "batchSize": 1},
              tags={"n": "[string(copyIndex())]"}),
    _identity("fz1", condition="[equals(parameters('p1'), 'fz0')]"),
    _identity("fz2", tags={"from": "[variables('v1')]"}, dependsOn=[f"[resourceId('{IDENTITY}', 'fz0')]"]),
    {"type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-09-01", "name": "fzv",
     "location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "subnets": [
         {"name": "s0", "properties": {"addressPrefix": "[cidrSubnet('10.0.0.0/16', 24, 0)]"}}]},
     "resources": [{"type": "subnets", "apiVersion": "2023-09-01", "name": "s1", "dependsOn": ["fzv"],
                    "properties": {"addressPrefix": "10.0.1.0/24"}}]},
    {"type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2023-09-01", "name": "fzn",
     "location": "westus", "properties": {"securityRules": [{"name": "r1", "properties": {
         "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourcePortRange": "*",
         "destinationPortRange": "22", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}}]}},
    {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "2023-09-01", "name": "fzp", "location": "westus",
     "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}},
    {"type": "Microsoft.Authorization/roleAssignments", "apiVersion": "2022-04-01",
     "name": f"[guid(resourceGroup().id, 'fz0', '{CONTRIBUTOR}')]", "dependsOn": [f"[resourceId('{IDENTITY}', 'fz0')]"],
     "properties": {"roleDefinitionId": f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                                        f"'{CONTRIBUTOR}')]",
                    "principalId": f"[reference(resourceId('{IDENTITY}', 'fz0')).principalId]",
                    "principalType": "ServicePrincipal"}},
    {"type": f"{IDENTITY}/federatedIdentityCredentials", "apiVersion": "2023-01-31", "name": "fz0/fic",
     "dependsOn": ["fz0"], "properties": {"issuer": "https://token.actions.githubusercontent.com",
                                          "subject": "repo:o/r:ref:refs/heads/main",
                                          "audiences": ["api://AzureADTokenExchange"]}},
    {"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "fzinner",
     "properties": {"mode": "Incremental", "expressionEvaluationOptions": {"scope": "inner"},
                    "parameters": {"n": {"value": "[parameters('p1')]"}},
                    "template": {"$schema": SCHEMA, "contentVersion": "1.0.0.0",
                                 "parameters": {"n": {"type": "string"}},
                                 "resources": [_identity("[concat(parameters('n'), '-inner')]")],
                                 "outputs": {"id": {"type": "string", "value": "[resourceId('" + IDENTITY +
                                                    "', concat(parameters('n'), '-inner'))]"}}}}},
]
VALID_OUTPUTS: dict[str, Any] = {
    "name": {"type": "string", "value": "[parameters('p1')]"},
    "n": {"type": "int", "value": "[add(parameters('p2'), 1)]"},
    "principal": {"type": "string", "value": f"[reference(resourceId('{IDENTITY}', 'fz0')).principalId]"},
    "list": {"type": "array", "copy": {"count": "[parameters('p2')]", "input": "[copyIndex()]"}},
    "obj": {"type": "object", "value": "[createObject('a', variables('v1'))]"},
    "when": {"type": "bool", "value": True, "condition": "[greater(parameters('p2'), 1)]"},
}


SUBSCRIPTION_RESOURCES: list[dict[str, Any]] = [
    {"type": "Microsoft.Resources/resourceGroups", "apiVersion": "2022-09-01", "name": "fuzz-deploy2",
     "location": "westus", "tags": {"by": "[deployment().name]"}},
    {"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "fzsub",
     "resourceGroup": "fuzz-deploy2",
     "dependsOn": ["[subscriptionResourceId('Microsoft.Resources/resourceGroups', 'fuzz-deploy2')]"],
     "properties": {"mode": "Incremental", "expressionEvaluationOptions": {"scope": "inner"},
                    "template": {"$schema": SCHEMA, "contentVersion": "1.0.0.0",
                                 "resources": [_identity("fzsub0"), _identity(
                                     "[concat('fzsubc', copyIndex())]", copy={"name": "c", "count": 2})],
                                 "outputs": {"rg": {"type": "string", "value": "[resourceGroup().name]"}}}}},
    {"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "fzsubouter",
     "resourceGroup": "[parameters('p1')]",
     "properties": {"mode": "Incremental", "template": {"$schema": SCHEMA, "contentVersion": "1.0.0.0",
                                                          "resources": []}}},
]


@st.composite
def deploying_bodies(draw: st.DrawFn, subscription: bool = False) -> dict[str, Any]:
    """A valid deployment, at resource group scope of resources from :data:`VALID_RESOURCES` (Incremental or
    Complete), at subscription scope of :data:`SUBSCRIPTION_RESOURCES`, with outputs from :data:`VALID_OUTPUTS`;
    in half of them one value is replaced by something odd."""
    if subscription:
        picked = draw(st.lists(st.sampled_from(range(len(SUBSCRIPTION_RESOURCES))), min_size=1, max_size=3,
                               unique=True))
        resources = [SUBSCRIPTION_RESOURCES[i] for i in sorted({0, *picked})]
    else:
        picked = draw(st.lists(st.sampled_from(range(len(VALID_RESOURCES))), min_size=1, max_size=4, unique=True))
        if {4, 8, 9} & set(picked):  # fz2, the role assignment and the credential need the identity fz0
            picked = sorted({0, *picked})
        resources = [VALID_RESOURCES[i] for i in picked]
    outputs = [k for k in draw(st.lists(st.sampled_from(sorted(VALID_OUTPUTS)), max_size=3, unique=True))
               if k != "principal" or (not subscription and 0 in picked)]
    template = {"$schema": SUB_SCHEMA if subscription else SCHEMA, "contentVersion": "1.0.0.0",
                "parameters": {"p1": {"type": "string", "defaultValue": "fuzz-deploy" if subscription else "fz0"},
                               "p2": {"type": "int", "defaultValue": 2, "minValue": 0, "maxValue": 5}},
                "variables": {"v1": "[concat(parameters('p1'), '-v')]"},
                "resources": resources, "outputs": {k: VALID_OUTPUTS[k] for k in outputs}}
    parameters = {"p2": {"value": draw(st.integers(0, 3))}} if draw(st.booleans()) else {}
    mode = "Complete" if not subscription and draw(st.integers(0, 5)) == 0 else "Incremental"
    body: dict[str, Any] = {"properties": {"mode": mode, "template": template, "parameters": parameters}}
    if subscription:
        body["location"] = "westus"
    if draw(st.booleans()):
        body = draw(s.one_odd_value(body, st.one_of(expressions(), s.json_values(max_leaves=4), s.junk,
                                                    st.sampled_from(GOOD_VALUES))))
    return body
