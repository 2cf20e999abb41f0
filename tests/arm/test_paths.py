"""ARM path parsing and the $filter subset (pure)."""

from __future__ import annotations

import pytest

from acrlocal.arm.errors import ArmError
from acrlocal.arm.odata import parse_filter
from acrlocal.arm.paths import parse_path, parse_request_path

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"


def test_keywords_in_any_case() -> None:
    for text in (f"/subscriptions/{SUB}/resourcegroups/RG", f"/Subscriptions/{SUB.upper()}/ResourceGroups/RG/"):
        path = parse_path(text)
        assert path.kind == "group" and path.subscription == SUB and path.group == "RG"
        assert path.scope == f"/subscriptions/{SUB}/resourceGroups/RG"


def test_provider_paths_and_extension_resources() -> None:
    path = parse_path(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r")
    assert (path.kind, path.namespace, path.segments, path.group) == (
        "provider", "Microsoft.ContainerRegistry", ("registries", "r"), "rg")
    ext = parse_path(f"/subscriptions/{SUB}/resourceGroups/rg/PROVIDERS/Microsoft.ContainerRegistry/registries/r/"
                     "providers/Microsoft.Authorization/roleAssignments/x")
    assert ext.namespace == "Microsoft.Authorization" and ext.segments == ("roleAssignments", "x")
    assert ext.scope == f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r"
    root = parse_path("/providers/Microsoft.Authorization/roleDefinitions")
    assert root.scope == "/" and root.subscription is None
    assert parse_path(f"/subscriptions/{SUB}/resources").kind == "resources"
    assert parse_path(f"/subscriptions/{SUB}/resourceGroups/rg/resources").kind == "resources"
    assert parse_path(f"/subscriptions/{SUB}/providers").kind == "providers"


def test_empty_parent_resource_path() -> None:
    """``az resource create --resource-type Microsoft.Compute/virtualMachines`` (azure-mgmt-resource's generic
    resource calls) sends an empty parent resource path: ``.../providers/Microsoft.Compute//virtualMachines/vm``."""
    top = parse_path(f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.Compute//virtualMachines/vm1")
    assert top.namespace == "Microsoft.Compute" and top.segments == ("virtualMachines", "vm1")
    for bad in (f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines//vm1",
                f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.Compute///virtualMachines/vm1",
                f"/subscriptions/{SUB}/resourcegroups/rg/providers//Microsoft.Compute/virtualMachines/vm1"):
        with pytest.raises(ArmError) as err:
            parse_path(bad)
        assert err.value.code == "InvalidRequestUri", bad


@pytest.mark.parametrize(("text", "code"), [
    ("/subscriptions/nope/resourcegroups", "InvalidSubscriptionId"),
    (f"/subscriptions/{SUB}//resourcegroups", "InvalidRequestUri"),
    (f"/subscriptions/{SUB}/resourcegroups/bad%name", "InvalidResourceGroup"),
    (f"/subscriptions/{SUB}/resourcegroups/rg/what", "InvalidRequestUri"),
    (f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.X/t/n/providers/Microsoft.Y/z/<x>",
     "InvalidRequestUri"),
    ("/x" * 3000, "InvalidRequestUri"),
])
def test_malformed_paths(text: str, code: str) -> None:
    with pytest.raises(ArmError) as err:
        parse_path(text)
    assert err.value.status == 400 and err.value.code == code


def test_a_request_path_is_split_before_it_is_decoded() -> None:
    group = f"/subscriptions/{SUB}/resourceGroups/rg"
    path = parse_request_path(f"{group}/providers/Microsoft.Resources/deployments/d%20e%28x%29/cancel?x=%2F")
    assert path.segments == ("deployments", "d e(x)", "cancel")
    assert parse_request_path(f"{group}/providers/Microsoft.Compute//virtualMachines/vm1").segments == (
        "virtualMachines", "vm1")
    for encoded in ("d%2F", "d%2fe", "%2F"):
        with pytest.raises(ArmError) as err:
            parse_request_path(f"{group}/providers/Microsoft.Resources/deployments/{encoded}/cancel")
        assert err.value.status == 400 and err.value.code == "InvalidRequestUri"
    with pytest.raises(ArmError):
        parse_request_path(f"/subscriptions/{SUB}/resourceGroups/rg%2F")


def test_filters() -> None:
    f = parse_filter("resourceType eq 'Microsoft.ContainerRegistry/registries'", fields=("resourceType",))
    assert f.field("resourcetype") == "Microsoft.ContainerRegistry/registries"
    f = parse_filter("atScope() and assignedTo('it''s')", functions=("atScope", "assignedTo"))
    assert f.functions == {"atscope": None, "assignedto": "it's"}
    for bad in ("resourceType ne 'x'", "name eq 'x'", "resourceType eq 'x' or name eq 'y'", "atScope("):
        with pytest.raises(ArmError) as err:
            parse_filter(bad, fields=("resourceType",), functions=("atScope",))
        assert err.value.code == "InvalidFilterInQueryString"
