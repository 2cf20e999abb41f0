"""SQL table of the compute room and the store over it: one row per VM.

A row holds what the runtime needs across restarts: the VM's ARM id and placement, its ``vmId``, its identities
(the system-assigned principal's object id; the ARM ids of its user-assigned identities, each with the object id of
the principal it had when it was assigned, ``{"id", "principalId"}``: rows from before hold the ARM ids alone) and
its power state. The
ARM representation lives with the control plane; ``profile`` keeps the few properties IMDS reports (size, OS,
image, admin user name, tags). ``imds_port`` and ``identity_secret`` are left from when each VM had an IMDS port
and an App Service endpoint on the host; new rows leave them empty. ``host`` names the server that runs the VM
(replicas over one database each run their own; ``NULL``: rows from before replicas, this server's). Every method
is one transaction; lookups raise :class:`~acrlocal.errors.NotFound`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.compute.vms import VirtualMachine
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.storage.sql import metadata

vms = sa.Table(
    "vms",
    metadata,
    sa.Column("vm_id", sa.String(36), primary_key=True),
    # ARM id, lower-cased for lookups; ``resource_id`` keeps the case it was created with.
    sa.Column("key", sa.String(1024), nullable=False, unique=True),
    sa.Column("resource_id", sa.String(1024), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("resource_group", sa.String(90), nullable=False),
    sa.Column("subscription_id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("location", sa.String(64), nullable=False),
    sa.Column("system_principal_id", sa.String(36), nullable=True),
    sa.Column("user_assigned", sa.Text, nullable=False, default="[]"),  # JSON list of {"id", "principalId"}
    sa.Column("profile", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("imds_port", sa.Integer, nullable=True, unique=True),
    sa.Column("identity_secret", sa.String(64), nullable=False, default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("power_state", sa.String(16), nullable=False, default="running", server_default="running"),
    sa.Column("host", sa.String(256), nullable=True),
)


def _user_assigned(text: str | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ARM ids of the ``user_assigned`` column and the principals they are bound to (lower-cased ids); an entry
    that is an ARM id alone (a row from before bindings were kept) is bound to none."""
    ids: list[str] = []
    bound: dict[str, str] = {}
    for entry in json.loads(text or "[]"):
        if isinstance(entry, str):
            ids.append(entry)
        else:
            ids.append(entry["id"])
            if entry.get("principalId"):
                bound[entry["id"].lower()] = entry["principalId"]
    return tuple(ids), bound


def _user_assigned_text(ids: Sequence[str], bound: Mapping[str, str]) -> str:
    return json.dumps([{"id": rid, "principalId": bound.get(rid.lower())} for rid in ids])


def _vm(row: Any) -> VirtualMachine:
    user_assigned, user_principals = _user_assigned(row.user_assigned)
    return VirtualMachine(
        vm_id=row.vm_id, resource_id=row.resource_id, name=row.name, resource_group=row.resource_group,
        subscription_id=row.subscription_id, tenant_id=row.tenant_id, location=row.location,
        system_principal_id=row.system_principal_id, user_assigned=user_assigned, user_principals=user_principals,
        profile=json.loads(row.profile or "{}"), power_state=row.power_state or "running", created=row.created)


class VMTable:
    """The VMs this server runs: those whose ``host`` is ``host`` (or none)."""

    def __init__(self, engine: Engine, host: str | None = None) -> None:
        self.engine = engine
        self.host = host

    def _mine(self) -> Any:
        return sa.true() if self.host is None else sa.or_(vms.c.host.is_(None), vms.c.host == self.host)

    def all(self) -> list[VirtualMachine]:
        with self.engine.connect() as conn:
            return [_vm(r) for r in conn.execute(sa.select(vms).where(self._mine()).order_by(vms.c.created))]

    def host_of(self, resource_id: str) -> str | None:
        """The server that runs the VM when it is another one (``None``: this one, or no such VM)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(vms.c.host).where(vms.c.key == resource_id.lower(),
                                                           sa.not_(self._mine()))).first()
        return None if row is None else str(row.host)

    def get(self, resource_id: str) -> VirtualMachine:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(vms).where(vms.c.key == resource_id.lower())).first()
        if row is None:
            raise NotFound(f"virtual machine {resource_id!r} does not exist")
        return _vm(row)

    def add(self, vm: VirtualMachine) -> VirtualMachine:
        with self.engine.begin() as conn:
            if conn.execute(sa.select(vms.c.vm_id).where(vms.c.key == vm.resource_id.lower())).first():
                raise AlreadyExists(f"virtual machine {vm.resource_id!r} already exists")
            conn.execute(sa.insert(vms).values(
                vm_id=vm.vm_id, key=vm.resource_id.lower(), resource_id=vm.resource_id, name=vm.name,
                resource_group=vm.resource_group, subscription_id=vm.subscription_id, tenant_id=vm.tenant_id,
                location=vm.location, system_principal_id=vm.system_principal_id,
                user_assigned=_user_assigned_text(vm.user_assigned, vm.user_principals), profile=json.dumps(vm.profile),
                identity_secret="", power_state=vm.power_state, created=vm.created or time.time(), host=self.host))
        return self.get(vm.resource_id)

    def update(self, resource_id: str, *, user_principals: Mapping[str, str] | None = None,
               **changes: Any) -> VirtualMachine:
        """Set columns (``user_assigned`` as a sequence of ARM ids, bound as ``user_principals`` says, ``profile``
        as a dict)."""
        values = dict(changes)
        if "user_assigned" in values:
            values["user_assigned"] = _user_assigned_text(values["user_assigned"], user_principals or {})
        if "profile" in values:
            values["profile"] = json.dumps(values["profile"])
        with self.engine.begin() as conn:
            result = conn.execute(sa.update(vms).where(vms.c.key == resource_id.lower()).values(**values))
        if result.rowcount == 0:
            raise NotFound(f"virtual machine {resource_id!r} does not exist")
        return self.get(resource_id)

    def remove(self, resource_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(vms).where(vms.c.key == resource_id.lower()))
