"""Template deployments with Microsoft's az: ``az deployment group create|validate|what-if|show|list|delete``,
``az deployment operation group list``, ``az deployment sub create`` with a nested deployment (a Bicep module's
shape), and ARM's errors as az prints them (``InvalidTemplate`` with the line, ``DeploymentFailed`` with the
failing resource's error). The templates in ``templates/`` are the project's own."""

from __future__ import annotations

from pathlib import Path

from tests.az.conftest import Az, unique

TEMPLATES = Path(__file__).parent / "templates"


def test_registry_template_deploys_redeploys_what_ifs_and_deletes(host_az: Az) -> None:
    az = host_az
    group = unique("rg-deploy-")
    az("group", "create", "-n", group, "-l", "westus")
    template = str(TEMPLATES / "registry.json")
    checked = az("deployment", "group", "validate", "-g", group, "--template-file", template)
    assert checked["properties"]["provisioningState"] == "Succeeded"
    assert len(checked["properties"]["validatedResources"]) == 3

    first = az("deployment", "group", "create", "-g", group, "-n", "acr", "--template-file", template,
               "--parameters", "acrSku=Standard")
    props = first["properties"]
    assert props["provisioningState"] == "Succeeded"
    registries = az("acr", "list", "-g", group)
    assert len(registries) == 1 and registries[0]["sku"]["name"] == "Standard" and registries[0]["adminUserEnabled"]
    registry = registries[0]
    assert props["outputs"]["loginServer"]["value"] == registry["loginServer"]
    creds = az("acr", "credential", "show", "-n", registry["name"])
    assert props["outputs"]["password"]["value"] == creds["passwords"][0]["value"]
    identity = az("identity", "list", "-g", group)[0]
    assignments = az("role", "assignment", "list", "--scope", registry["id"])
    assert [(a["principalId"], a["roleDefinitionName"]) for a in assignments] == [(identity["principalId"], "AcrPull")]
    operations = az("deployment", "operation", "group", "list", "-g", group, "-n", "acr")
    assert sorted(o["properties"]["targetResource"]["resourceType"] for o in operations) == [
        "Microsoft.Authorization/roleAssignments", "Microsoft.ContainerRegistry/registries",
        "Microsoft.ManagedIdentity/userAssignedIdentities"]
    assert all(o["properties"]["provisioningState"] == "Succeeded" for o in operations)

    # Redeploying is idempotent: the same resources, nothing new.
    again = az("deployment", "group", "create", "-g", group, "-n", "acr", "--template-file", template,
               "--parameters", "acrSku=Standard")
    assert again["properties"]["provisioningState"] == "Succeeded"
    assert az("acr", "list", "-g", group)[0]["id"] == registry["id"]
    assert len(az("identity", "list", "-g", group)) == 1
    assert len(az("role", "assignment", "list", "--scope", registry["id"])) == 1

    same = az("deployment", "group", "what-if", "-g", group, "--template-file", template, "--parameters",
              "acrSku=Standard", "--no-pretty-print")
    assert {c["changeType"] for c in same["changes"]} == {"NoChange"}
    changed = az("deployment", "group", "what-if", "-g", group, "--template-file", template, "--parameters",
                 "acrSku=Premium", "--no-pretty-print")
    by_id = {c["resourceId"]: c for c in changed["changes"]}
    delta = by_id[registry["id"]]["delta"]
    assert by_id[registry["id"]]["changeType"] == "Modify"
    assert {"path": "sku.name", "propertyChangeType": "Modify", "before": "Standard", "after": "Premium"} in [
        {k: d.get(k) for k in ("path", "propertyChangeType", "before", "after")} for d in delta]
    printed = az.run("deployment", "group", "what-if", "-g", group, "--template-file", template, "--parameters",
                     "acrSku=Premium", output=False)
    assert printed.returncode == 0 and '~ sku.name: "Standard" => "Premium"' in printed.stdout

    listed = az("deployment", "group", "list", "-g", group)
    assert [d["name"] for d in listed] == ["acr"]
    shown = az("deployment", "group", "show", "-g", group, "-n", "acr")
    assert shown["properties"]["parameters"]["acrSku"] == {"type": "String", "value": "Standard"}
    exported = az("deployment", "group", "export", "-g", group, "-n", "acr")
    assert exported["resources"][0]["type"] == "Microsoft.ContainerRegistry/registries"
    az("deployment", "group", "delete", "-g", group, "-n", "acr")
    assert az("deployment", "group", "list", "-g", group) == []
    assert len(az("acr", "list", "-g", group)) == 1  # deleting a deployment leaves what it deployed
    az("group", "delete", "-n", group, "--yes")


def test_errors_as_arm_gives_them(host_az: Az) -> None:
    az = host_az
    group = unique("rg-deploy-")
    az("group", "create", "-n", group, "-l", "westus")
    broken = az.fail("deployment", "group", "create", "-g", group, "--template-file", str(TEMPLATES / "broken.json"))
    assert "InvalidTemplate" in broken.stderr
    assert "at line '5' and column '5'" in broken.stderr
    assert "The template function 'nosuchfunction' is not valid" in broken.stderr

    failed = az.fail("deployment", "group", "create", "-g", group, "-n", "bad", "--template-file",
                     str(TEMPLATES / "failing.json"))
    assert "DeploymentFailed" in failed.stderr and "InvalidResourceName" in failed.stderr, failed.stderr
    shown = az("deployment", "group", "show", "-g", group, "-n", "bad")
    assert shown["properties"]["provisioningState"] == "Failed"
    error = shown["properties"]["error"]
    assert error["code"] == "DeploymentFailed"
    assert error["details"][0]["code"] == "InvalidResourceName"
    operations = az("deployment", "operation", "group", "list", "-g", group, "-n", "bad")
    states = {o["properties"]["targetResource"]["resourceName"]: o["properties"]["provisioningState"]
              for o in operations}
    assert states == {"fine-identity": "Succeeded", "has-dashes": "Failed"}

    missing = az.fail("deployment", "group", "show", "-g", group, "-n", "nothing")
    assert "DeploymentNotFound" in missing.stderr
    wrong = az.fail("deployment", "group", "create", "-g", group, "--template-file", str(TEMPLATES / "registry.json"),
                    "--parameters", "acrSku=Gold")
    assert "is not part of the allowed value(s): 'Basic,Standard,Premium'" in wrong.stderr
    az("group", "delete", "-n", group, "--yes")


def test_subscription_deployment_with_a_nested_deployment(host_az: Az) -> None:
    az = host_az
    group = unique("rg-sub-")
    subscription = az("account", "show")["id"]
    group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
    identity_id = f"{group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{group}-id"
    what_if = ["deployment", "sub", "what-if", "-l", "westus", "--template-file", str(TEMPLATES / "subscription.json"),
               "--parameters", f"groupName={group}", "--no-pretty-print"]
    # what-if expands the nested deployment (at the group the template creates) as ARM does
    before = {c["resourceId"].lower(): c for c in az(*what_if)["changes"]}
    assert before[group_id.lower()]["changeType"] == "Create"
    assert before[identity_id.lower()]["changeType"] == "Create"
    assert before[identity_id.lower()]["after"]["location"] == "westus"
    result = az("deployment", "sub", "create", "-l", "westus", "-n", unique("sub-"), "--template-file",
                str(TEMPLATES / "subscription.json"), "--parameters", f"groupName={group}")
    assert result["properties"]["provisioningState"] == "Succeeded"
    identity = az("identity", "show", "-g", group, "-n", f"{group}-id")
    assert result["properties"]["outputs"]["clientId"]["value"] == identity["clientId"]
    nested = az("deployment", "group", "show", "-g", group, "-n", "identityModule")
    assert nested["properties"]["outputs"]["clientId"]["value"] == identity["clientId"]
    assert az("group", "show", "-n", group)["location"] == "westus"
    after = {c["resourceId"].lower(): c["changeType"] for c in az(*what_if)["changes"]}
    assert after[group_id.lower()] == "NoChange" and after[identity_id.lower()] == "NoChange"
    printed = az.run(*what_if[:-1], output=False)
    assert printed.returncode == 0 and f"{group}-id" in printed.stdout
    az("group", "delete", "-n", group, "--yes")
