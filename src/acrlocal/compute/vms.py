"""A virtual machine as acrlocal runs it: its record (no I/O).

Where a VM's files are and what is put there is :mod:`acrlocal.compute.sandbox`; how it runs is
:mod:`acrlocal.compute.machine` and :mod:`acrlocal.compute.vminit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Azure's power states of a VM, as ``PowerState/<state>`` codes.
RUNNING, STOPPED, DEALLOCATED = "running", "stopped", "deallocated"
POWER_STATES = (RUNNING, STOPPED, DEALLOCATED)
DEFAULT_ADMIN = "azureuser"


@dataclass(frozen=True)
class VirtualMachine:
    """A VM's record. ``user_principals`` binds each user-assigned identity (by its ARM id, lower-cased) to the
    principal it had when it was assigned: an identity deleted and made again under the same id is a new principal,
    which the VM does not hold (as on Azure) until it is removed and assigned again. An identity missing there (a
    row from before bindings were kept) is taken as the directory has it now."""

    vm_id: str
    resource_id: str
    name: str
    resource_group: str
    subscription_id: str
    tenant_id: str
    location: str
    system_principal_id: str | None = None
    user_assigned: tuple[str, ...] = ()
    profile: dict[str, Any] = field(default_factory=dict)
    user_principals: dict[str, str] = field(default_factory=dict)
    power_state: str = RUNNING
    created: float = 0.0

    @property
    def admin_username(self) -> str:
        return str(self.profile.get("adminUsername") or DEFAULT_ADMIN)

    @property
    def hostname(self) -> str:
        return str(self.profile.get("computerName") or self.name)

    def identity_type(self) -> str:
        """ARM's ``identity.type`` for this VM."""
        kinds = (["SystemAssigned"] if self.system_principal_id else []) + (
            ["UserAssigned"] if self.user_assigned else [])
        return ", ".join(kinds) or "None"
