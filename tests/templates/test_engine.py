"""Templates as ARM processes them: parameters, variables, copy loops, conditions, nested resources, dependency
order, outputs, and ARM's errors with the line and column of the part at fault; the request body read as ARM
reads it (az's unquoted ``template:``, comments)."""

from __future__ import annotations

from typing import Any

import pytest

from acrlocal.arm.templates import Target, TemplateError, prepare
from acrlocal.arm.templates.jsonc import JsonObject, loads
from tests.templates.conftest import SUB, FixedEnvironment

TARGET = Target(SUB, "rg1")
SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
VNET = {"type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01", "name": "[parameters('vnetName')]",
        "location": "[resourceGroup().location]",
        "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}},
        "resources": [{"type": "subnets", "apiVersion": "2023-04-01", "name": "default",
                       "dependsOn": ["[parameters('vnetName')]"], "properties": {"addressPrefix": "10.0.0.0/24"}}]}


def template(**parts: Any) -> dict[str, Any]:
    return {"$schema": SCHEMA, "contentVersion": "1.0.0.0", **parts}


def test_parameters_variables_copy_and_order() -> None:
    t = template(
        parameters={"vnetName": {"type": "string", "defaultValue": "vnet1"},
                    "count": {"type": "int", "defaultValue": 2, "minValue": 1, "maxValue": 5},
                    "withIp": {"type": "bool", "defaultValue": False}},
        variables={"prefix": "[concat(parameters('vnetName'), '-')]",
                   "nicName": "[concat(variables('prefix'), 'nic')]"},
        resources=[
            VNET,
            {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "2023-04-01", "name": "ip",
             "condition": "[parameters('withIp')]", "location": "westus"},
            {"type": "Microsoft.Network/networkInterfaces", "apiVersion": "2023-04-01",
             "name": "[concat(variables('nicName'), copyIndex())]", "location": "westus",
             "copy": {"name": "nics", "count": "[parameters('count')]"},
             "properties": {"ipConfigurations": [{"name": "ipconfig", "properties": {"subnet": {"id": (
                 "[resourceId('Microsoft.Network/virtualNetworks/subnets', parameters('vnetName'), 'default')]")}}}]},
             "dependsOn": ["[resourceId('Microsoft.Network/virtualNetworks/subnets', parameters('vnetName'), "
                           "'default')]"]},
        ],
        outputs={"names": {"type": "array", "copy": {"count": "[parameters('count')]",
                                                      "input": "[concat(variables('nicName'), copyIndex())]"}},
                 "first": {"type": "string", "value": "[reference(resourceId('Microsoft.Network/virtualNetworks', "
                                                        "'vnet1')).addressSpace.addressPrefixes[0]]"}})
    vnet_id = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/vnet1"
    env = FixedEnvironment(deployed={vnet_id: {"properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}}})
    plan = prepare(template=t, parameters={"count": {"value": 3}}, target=TARGET, env=env)
    names = [[r.name for r in wave] for wave in plan.waves()]
    assert names == [["vnet1"], ["vnet1/default"], ["vnet1-nic0", "vnet1-nic1", "vnet1-nic2"]]
    skipped = [r for r in plan.resources if not r.deploys]
    assert [r.name for r in skipped] == ["ip"]
    subnet = plan.find("vnet1/default")
    assert subnet is not None and subnet.id == f"{vnet_id}/subnets/default"
    nic = plan.find("vnet1-nic1")
    assert nic is not None
    body = plan.body(nic)
    assert body["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] == subnet.id
    assert plan.body(plan.resources[0])["location"] == "westus"
    assert plan.outputs() == {"names": {"type": "Array", "value": ["vnet1-nic0", "vnet1-nic1", "vnet1-nic2"]},
                              "first": {"type": "String", "value": "10.0.0.0/16"}}


def test_reference_makes_an_implicit_dependency_and_what_if_keeps_unknown_values() -> None:
    t = template(resources=[
        {"type": "Microsoft.Network/networkInterfaces", "apiVersion": "2023-04-01", "name": "nic", "location": "x",
         "properties": {"note": "[reference('ip').ipAddress]"}},
        {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "2023-04-01", "name": "ip", "location": "x"}])
    env = FixedEnvironment(defer=True)
    plan = prepare(t, {}, TARGET, env)
    assert [[r.name for r in w] for w in plan.waves()] == [["ip"], ["nic"]]
    nic = plan.find("nic")
    assert nic is not None
    assert plan.body(nic, keep_unknown=True)["properties"]["note"] == "[reference('ip').ipAddress]"


def test_symbolic_names_and_serial_copy() -> None:
    t = template(languageVersion="2.0", resources={
        "reg": {"type": "Microsoft.ContainerRegistry/registries", "apiVersion": "2023-07-01", "name": "reg1",
                "location": "westus", "sku": {"name": "Basic"}},
        "ids": {"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "apiVersion": "2023-01-31",
                "name": "[format('id{0}', copyIndex())]", "location": "westus", "dependsOn": ["reg"],
                "copy": {"name": "ids", "count": 3, "mode": "serial", "batchSize": 1}}})
    plan = prepare(t, {}, TARGET, FixedEnvironment())
    assert [[r.name for r in w] for w in plan.waves()] == [["reg1"], ["id0"], ["id1"], ["id2"]]


def test_subscription_scope_resource_groups_and_nested_deployments() -> None:
    t = template(resources=[
        {"type": "Microsoft.Resources/resourceGroups", "apiVersion": "2022-09-01", "name": "rgA", "location": "x"},
        {"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "inner", "resourceGroup": "rgA",
         "dependsOn": ["[subscriptionResourceId('Microsoft.Resources/resourceGroups', 'rgA')]"],
         "properties": {"mode": "Incremental", "expressionEvaluationOptions": {"scope": "inner"},
                        "template": {"resources": [], "outputs": {"o": {"type": "string",
                                                                        "value": "[parameters('p')]"}}},
                        "parameters": {"p": {"value": "[concat('from-', 'outer')]"}}}}])
    plan = prepare(t, {}, Target(SUB), FixedEnvironment(group=None))
    waves = plan.waves()
    assert waves[0][0].id == f"/subscriptions/{SUB}/resourceGroups/rgA"
    inner = waves[1][0]
    assert inner.id == f"/subscriptions/{SUB}/resourceGroups/rgA/providers/Microsoft.Resources/deployments/inner"
    assert inner.nested_target == Target(SUB, "rgA")
    body = plan.body(inner)
    assert body["properties"]["template"]["outputs"]["o"]["value"] == "[parameters('p')]"  # inner scope: untouched
    assert body["properties"]["parameters"]["p"]["value"] == "from-outer"


TEXT = """{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  // a comment, as template files have them
  "contentVersion": "1.0.0.0",
  "parameters": {
    "sku": {"type": "string", "allowedValues": ["Basic", "Standard"], "defaultValue": "Basic"}
  },
  "resources": [
    {
      "type": "Microsoft.ContainerRegistry/registries",
      "apiVersion": "2023-07-01",
      "name": "[concat('reg', nosuch())]",
      "location": "westus"
    }
  ]
}"""


def test_request_body_as_az_sends_it_with_positions() -> None:
    body = '{"properties": {"parameters": {}, "mode": "Incremental"}, template:' + TEXT + "}"
    parsed = loads(body)
    t = parsed["template"]
    assert isinstance(t, JsonObject) and t["resources"][0].line == 9
    with pytest.raises(TemplateError) as err:
        prepare(t, {}, TARGET, FixedEnvironment())
    message = err.value.arm_message()
    assert err.value.code == "InvalidTemplate"
    assert "at line '9' and column '5' is not valid: The template function 'nosuch' is not valid" in message


@pytest.mark.parametrize(("parameters", "message"), [
    ({"sku": {"value": "Premium"}}, "The value is not part of the allowed value(s): 'Basic,Standard'"),
    ({"sku": {"value": 3}}, "Expected a value of type 'String', but received a value of type 'Integer'"),
    ({"other": {"value": 1}}, "The template parameters 'other' in the parameters file are not valid"),
])
def test_parameter_errors(parameters: dict[str, Any], message: str) -> None:
    t = loads(TEXT)
    t["resources"] = []
    with pytest.raises(TemplateError) as err:
        prepare(t, parameters, TARGET, FixedEnvironment())
    assert message in err.value.arm_message()


def test_missing_parameter_names_its_line() -> None:
    t = loads('{"parameters": {\n "name": {"type": "string"}}, "resources": []}')
    with pytest.raises(TemplateError) as err:
        prepare(t, {}, TARGET, FixedEnvironment())
    assert "The value for the template parameter 'name' at line '2' and column '10' is not provided" in \
        err.value.arm_message()
    # ARM's sentence once, not wrapped in another "The template  is not valid: ..."
    assert err.value.arm_message().startswith("Deployment template validation failed: 'The value for the template "
                                              "parameter 'name'"), err.value.arm_message()


@pytest.mark.parametrize(("resources", "message"), [
    ([{"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a", "dependsOn": ["b"]},
      {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "b", "dependsOn": ["a"]}],
     "Circular dependency detected on resource"),
    ([{"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a", "dependsOn": ["zzz"]}],
     "The resource 'zzz' is not defined in the template"),
    ([{"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a"},
      {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a"}],
     "is defined multiple times in a template"),
    ([{"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a",
       "copy": {"name": "c", "count": 801}}], "must be between 0 and 800"),
    ([{"type": "Microsoft.Network/publicIPAddresses", "name": "a"}], "missing the required property 'apiVersion'"),
])
def test_resource_errors(resources: list[Any], message: str) -> None:
    with pytest.raises(TemplateError) as err:
        prepare(template(resources=resources), {}, TARGET, FixedEnvironment())
    assert message in err.value.arm_message()


@pytest.mark.parametrize("text", ['{"a": 1,, }', '{"a": }', "{'a': 'unterminated}", "[1 2]", '{"a": 1} x', "/* x"])
def test_malformed_bodies_are_invalid_request_content(text: str) -> None:
    with pytest.raises(TemplateError) as err:
        loads(text)
    assert err.value.code == "InvalidRequestContent" and "line 1" in err.value.message


def test_lenient_json() -> None:
    assert loads("{a: 'x', /* c */ b: [1, 2,], // end\n}") == {"a": "x", "b": [1, 2]}
    assert loads('"\\u00e9\\n"') == "é\n"


PIP = {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "a"}


@pytest.mark.parametrize(("parts", "message"), [
    ({"functions": True}, "The template 'functions' must be an array"),
    ({"functions": 7}, "The template 'functions' must be an array"),
    ({"variables": {"copy": 3}}, "The variables' 'copy' must be an array"),
    ({"resources": [{**PIP, "resources": 5}]}, "The resource's 'resources' must be an array"),
    ({"resources": [{**PIP, "dependsOn": True}]}, "The resource's 'dependsOn' must be an array"),
    ({"resources": [{**PIP, "copy": {"name": "c", "count": 2, "mode": "serial", "batchSize": "x"}}]},
     "The copy batchSize of 'c' must be an integer"),
    ({"resources": [{**PIP, "copy": {"name": "c", "count": 2, "mode": "serial", "batchSize": [1]}}]},
     "The copy batchSize of 'c' must be an integer"),
])
def test_template_parts_of_the_wrong_json_type_are_invalid_template(parts: dict[str, Any], message: str) -> None:
    """A template property of the wrong JSON type (an array that is a boolean, a number that is text) is ARM's
    InvalidTemplate, not a failure of the server."""
    with pytest.raises(TemplateError) as err:
        prepare(template(**parts), {}, TARGET, FixedEnvironment())
    assert err.value.code == "InvalidTemplate" and message in err.value.arm_message(), err.value.arm_message()


def test_a_serial_copy_batch_size_may_be_an_expression() -> None:
    plan = prepare(template(resources=[{**PIP, "name": "[concat('a', copyIndex())]", "copy": {
        "name": "c", "count": 3, "mode": "serial", "batchSize": "[add(1, 0)]"}}]), {}, TARGET, FixedEnvironment())
    assert [[r.name for r in wave] for wave in plan.waves()] == [["a0"], ["a1"], ["a2"]]


def test_an_output_copy_that_is_not_an_object_is_invalid_template() -> None:
    plan = prepare(template(outputs={"o": {"type": "array", "copy": [1]}}), {}, TARGET, FixedEnvironment())
    with pytest.raises(TemplateError) as err:
        plan.outputs()
    assert "The output 'o''s 'copy' must be an object" in err.value.arm_message()


def test_a_nested_deployment_whose_properties_are_not_an_object_is_evaluated_as_they_are() -> None:
    nested = {"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "n",
              "properties": ["not", "an", "object"]}
    plan = prepare(template(resources=[nested]), {}, TARGET, FixedEnvironment())
    assert plan.body(plan.deployable[0])["properties"] == ["not", "an", "object"]
