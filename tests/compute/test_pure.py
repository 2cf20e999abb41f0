"""The pure pieces of IMDS and the VM provider: the throttle's bucket, identity selection, identity blocks."""

from __future__ import annotations

import pytest

from acrlocal.arm.compute import parse_identity_type, wanted_identities
from acrlocal.arm.errors import ArmError
from acrlocal.compute.runtime import parse_vm_id
from acrlocal.errors import ConfigError
from acrlocal.identity.directory import Principal
from acrlocal.identity.imds import IdentityError, Selector, Throttle, VMIdentities, read_selector, select_identity


def mi(n: int, kind: str = "user") -> Principal:
    return Principal(f"0000000{n}-0000-0000-0000-000000000000", "t", "ManagedIdentity",
                     f"1111111{n}-0000-0000-0000-000000000000", f"id{n}", f"/subscriptions/s/rg/uami{n}", kind)  # type: ignore[arg-type]


def test_throttle_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [100.0]
    throttle = Throttle(2.0, clock=lambda: now[0])
    assert [throttle.admit("vm") for _ in range(10)] == [0.0] * 10  # five seconds' worth
    assert throttle.admit("vm") == pytest.approx(0.5)
    assert throttle.admit("other") == 0.0
    now[0] += 0.5
    assert throttle.admit("vm") == 0.0
    assert Throttle(0).admit("vm") == 0.0


def test_selection() -> None:
    system, u1, u2 = mi(0, "system"), mi(1), mi(2)
    both = VMIdentities(system, (u1, u2))
    kw = {"not_found": "nf", "ambiguous": "amb"}
    assert select_identity(both, None, **kw) is system
    assert select_identity(VMIdentities(None, (u1,)), None, **kw) is u1
    assert select_identity(both, Selector("client_id", u2.app_id.upper()), **kw) is u2
    assert select_identity(both, Selector("object_id", u1.object_id), **kw) is u1
    assert select_identity(both, Selector("resource_id", "/SUBSCRIPTIONS/s/rg/uami2"), **kw) is u2
    with pytest.raises(IdentityError, match="amb"):
        select_identity(VMIdentities(None, (u1, u2)), None, **kw)
    with pytest.raises(IdentityError, match="nf"):
        select_identity(VMIdentities(None, ()), None, **kw)
    with pytest.raises(IdentityError, match="nf"):  # the system identity is not selected by a resource id
        select_identity(both, Selector("resource_id", "/subscriptions/s/rg/uami0"), **kw)
    with pytest.raises(IdentityError):
        read_selector({"client_id": "a", "object_id": "b"}, ("client_id", "object_id"))
    assert read_selector({"mi_res_id": "/x"}, ("mi_res_id",)) == Selector("resource_id", "/x")


def test_identity_blocks() -> None:
    assert parse_identity_type("SystemAssigned,UserAssigned") == (True, True)
    assert parse_identity_type("none") == (False, False)
    for bad in ("", "Both", "None, SystemAssigned", 3):
        with pytest.raises(ArmError):
            parse_identity_type(bad)
    current = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {"/a": {}, "/b": {}}}
    assert wanted_identities({"userAssignedIdentities": {"/a": None}}, current, patch=True) == (True, ["/b"])
    assert wanted_identities({"type": "UserAssigned", "userAssignedIdentities": {"/c": {}}}, current,
                             patch=False) == (False, ["/c"])
    assert wanted_identities({"type": "UserAssigned", "userAssignedIdentities": {"/c": {}}}, current,
                             patch=True) == (False, ["/a", "/b", "/c"])
    assert wanted_identities({"type": "SystemAssigned"}, current, patch=True) == (True, [])
    with pytest.raises(ArmError):
        wanted_identities({"type": "UserAssigned", "userAssignedIdentities": {"/a": None, "/b": None}}, current,
                          patch=True)


def test_vm_ids() -> None:
    sub = "0a0b0c0d-0000-0000-0000-000000000001"
    assert parse_vm_id(f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v1") \
        == (sub, "rg", "v1")
    for bad in ("/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v1",
                f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/../etc"):
        with pytest.raises(ConfigError):
            parse_vm_id(bad)
