"""First start: the default tenant and subscription, and the local administrator the CLI acts as.

The administrator is a service principal whose client secret is written to ``<data dir>/admin.json`` (mode 0600),
the way a kubeconfig holds a cluster credential. If that file is lost, the next start issues a new secret and
writes it again; the old secrets are revoked.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from acrlocal.errors import NotFound
from acrlocal.identity.directory import Directory

ADMIN_NAME = "acrlocal-admin"


@dataclass(frozen=True)
class AdminCredential:
    tenantId: str
    subscriptionId: str
    clientId: str
    objectId: str
    clientSecret: str

    @classmethod
    def read(cls, path: Path) -> AdminCredential:
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def admin_file(data_dir: Path) -> Path:
    return data_dir / "admin.json"


def bootstrap(directory: Directory, data_dir: Path) -> AdminCredential:
    """Make sure the default tenant, subscription and administrator exist; return the administrator's
    credential (from ``admin.json``, rewritten with a new secret if it is missing or stale)."""
    try:
        tenant = directory.default_tenant()
    except NotFound:
        tenant = directory.create_tenant("acrlocal", default=True)
    subs = [s for s in directory.subscriptions(tenant.id) if s.is_default]
    sub = subs[0] if subs else directory.create_subscription(tenant.id, "acrlocal", default=True)
    admins = [p for p in directory.principals(tenant.id)
              if p.display_name == ADMIN_NAME and p.kind == "ServicePrincipal"]
    admin = admins[0] if admins else directory.create_service_principal(tenant.id, ADMIN_NAME)
    path = admin_file(data_dir)
    try:
        cred = AdminCredential.read(path)
        if cred.objectId == admin.object_id and directory.check_secret(admin.object_id, cred.clientSecret):
            return cred
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        pass
    directory.remove_secrets(admin.object_id)
    _, secret = directory.add_secret(admin.object_id, "acrlocal CLI")
    cred = AdminCredential(tenant.id, sub.id, admin.app_id, admin.object_id, secret)
    cred.write(path)
    return cred
