"""What the registry room asks the control plane without HTTP (arm/access.py), on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from acrlocal.arm.access import ArmAccess
from acrlocal.arm.authorization import ensure_admin_owner
from acrlocal.arm.store import ArmStore, Resource, StoredAssignment
from acrlocal.errors import AlreadyExists
from acrlocal.identity.bootstrap import AdminCredential
from acrlocal.rbac import RegistryPermission, RoleAssignmentMode, registry_permissions
from acrlocal.rbac.roles import OWNER
from acrlocal.storage.sql import open_engine

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
P = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"
REGISTRY = f"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.ContainerRegistry/registries/MyReg"


def assignment(name: str, scope: str, role: str, principal: str = P) -> StoredAssignment:
    return StoredAssignment(name, scope, role, principal, "ServicePrincipal", created_on="t", updated_on="t")


def test_assignments_at_and_above_a_registry(tmp_path: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    store = ArmStore(engine)
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000001", f"/subscriptions/{SUB}", ACR_PULL))
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000002", f"/subscriptions/{SUB}/resourceGroups/rg",
                                    ACR_PUSH))
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000003", f"{REGISTRY}2", ACR_PUSH))  # a sibling
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000004", REGISTRY, ACR_PUSH, OTHER))
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000005", f"/subscriptions/{SUB}/resourceGroups/"
                                    "rg_x", ACR_PUSH))
    found = ArmAccess(engine).assignments_for([P], REGISTRY.lower())
    assert sorted(a.id.rsplit("/", 1)[1] for a in found) == ["00000000-0000-0000-0000-000000000001",
                                                             "00000000-0000-0000-0000-000000000002"]
    granted = registry_permissions(found, [P], REGISTRY, repository="hello", mode=RoleAssignmentMode.RBAC)
    assert {RegistryPermission.PULL, RegistryPermission.PUSH} <= granted
    assert registry_permissions(ArmAccess(engine).assignments_for([OTHER], f"{REGISTRY}2"), [OTHER], f"{REGISTRY}2",
                                repository="hello", mode=RoleAssignmentMode.RBAC) == frozenset()
    engine.dispose()


def test_admin_password_check(tmp_path: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    store = ArmStore(engine)
    resource = Resource(REGISTRY, "Microsoft.ContainerRegistry/registries", "MyReg", SUB, "RG",
                        properties={"adminUserEnabled": True},
                        internal={"adminPasswords": {"password": "first-secret", "password2": "second-secret"}})
    store.put_resource(resource)
    access = ArmAccess(engine)
    assert ArmAccess(engine).registry_resource_id("myreg") == REGISTRY
    assert access.check_admin_password("myreg", "MyReg", "second-secret")
    assert not access.check_admin_password("myreg", "MyReg", "wrong")
    assert not access.check_admin_password("myreg", "someone", "first-secret")
    store.put_resource(resource.evolve(properties={"adminUserEnabled": False}))
    assert not access.check_admin_password("myreg", "MyReg", "first-secret")
    assert not access.check_admin_password("nosuch", "nosuch", "first-secret")
    engine.dispose()


def test_deleting_a_group_keeps_assignments_of_look_alike_groups(tmp_path: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    store = ArmStore(engine)
    for i, group in enumerate(["a_b", "aXb", "a_b2", "a_b/"]):
        scope = f"/subscriptions/{SUB}/resourceGroups/{group.rstrip('/')}"
        role = ACR_PUSH if group.endswith("/") else ACR_PULL  # a second grant at a_b (one a role and scope)
        store.add_assignment(assignment(f"00000000-0000-0000-0000-00000000001{i}", scope, role))
    store.add_assignment(assignment("00000000-0000-0000-0000-000000000020",
                                    f"/subscriptions/{SUB}/resourceGroups/a_b/providers/X.Y/t/n", ACR_PULL))
    store.delete_group(SUB, "A_B")
    left = sorted(a.scope.split("/")[4] for a in store.assignments(principal_ids=[P]))
    assert left == sorted(["a_b2", "aXb"])
    engine.dispose()


def test_replicas_putting_the_same_group_and_resource_end_in_one_serial_order(database_url: str) -> None:
    """Concurrent PUTs of one new resource group and one new resource (other replicas; here threads with
    connections of their own): none fails, exactly one reports that it created it, as in some serial order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from acrlocal.arm.store import ResourceGroup

    engine = open_engine(database_url)
    store = ArmStore(engine)
    writers = 6
    for round_ in range(5):
        barrier = threading.Barrier(writers)
        name = f"race-{round_}"
        resource_id = f"/subscriptions/{SUB}/resourceGroups/{name}/providers/Microsoft.ManagedIdentity/" \
                      "userAssignedIdentities/id"

        def put(i: int, name: str = name, resource_id: str = resource_id,
                barrier: threading.Barrier = barrier) -> tuple[bool, bool]:
            barrier.wait()
            group = store.put_group(ResourceGroup(SUB, name, "westus", tags={"writer": str(i)}))
            resource = store.put_resource(Resource(resource_id, "Microsoft.ManagedIdentity/userAssignedIdentities",
                                                   "id", SUB, name, location="westus", tags={"writer": str(i)}))
            return group, resource

        with ThreadPoolExecutor(writers) as pool:
            created = list(pool.map(put, range(writers)))
        assert sum(g for g, _ in created) == 1 and sum(r for _, r in created) == 1, created
        assert [g.name for g in store.groups(SUB) if g.name == name] == [name]
    engine.dispose()


def test_replicas_starting_together_make_the_administrators_owner_once(database_url: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replica's start finds no Owner assignment for the administrator and inserts the one of the fixed name;
    the one that comes second must go on starting, not fail on the name the first inserted."""
    admin = AdminCredential(tenantId=OTHER, subscriptionId=SUB, clientId=P, objectId=P, clientSecret="-",
                            userObjectId=OTHER)
    engine = open_engine(database_url)
    first, second = ArmStore(engine), ArmStore(engine)
    looked: set[str] = set()
    real = second.assignment

    def before_the_first_inserted(name: str) -> StoredAssignment | None:
        if name in looked:
            return real(name)
        looked.add(name)
        return None
    monkeypatch.setattr(second, "assignments", lambda **_: [])  # its first look came before the first's insert
    monkeypatch.setattr(second, "assignment", before_the_first_inserted)
    ensure_admin_owner(admin, first)
    ensure_admin_owner(admin, second)  # raised IntegrityError before
    monkeypatch.undo()
    owners = first.assignments(scope=f"/subscriptions/{SUB}", principal_ids=[P, OTHER], role_definition=OWNER.id)
    assert sorted(a.principal_id for a in owners) == [P, OTHER]
    with pytest.raises(AlreadyExists):  # anything but the name's existing row still fails
        monkeypatch.setattr(second, "assignment", lambda name: None)
        second.add_assignment_if_absent(assignment(owners[0].name, f"/subscriptions/{SUB}", OWNER.id))
    engine.dispose()
