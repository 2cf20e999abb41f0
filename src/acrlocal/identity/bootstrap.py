"""First start: the default tenant and subscription, the local administrator the CLI acts as, and one user.

The administrator is a service principal whose client secret is written to ``<data dir>/admin.json`` (mode 0600),
the way a kubeconfig holds a cluster credential. The user (``admin@<tenant domain>``, for ``az login -u -p`` and
the sign-in pages) has its password in the same file. Both are Global Administrators of the tenant (Owner of the
default subscription is granted by the control plane). If the file is lost or a credential in it no longer
works, the next start issues a new secret or password and writes the file again; the old secrets are revoked.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from acrlocal.errors import NotFound
from acrlocal.files import write_private
from acrlocal.identity.directory import Directory
from acrlocal.identity.passwords import generate_password, hash_password, verify_password

ADMIN_NAME = "acrlocal-admin"
USER_NAME = "admin"
USER_DISPLAY_NAME = "acrlocal administrator"


@dataclass(frozen=True)
class AdminCredential:
    tenantId: str
    subscriptionId: str
    clientId: str
    objectId: str
    clientSecret: str
    # The user `up` creates (absent from files written before users existed).
    userPrincipalName: str = ""
    userObjectId: str = ""
    userPassword: str = ""

    @classmethod
    def read(cls, path: Path) -> AdminCredential:
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data or not k.startswith("user")})

    def write(self, path: Path) -> None:
        """Mode 0600 whatever the umask, fsynced and renamed into place (see :func:`acrlocal.files.write_private`)."""
        write_private(path, (json.dumps(asdict(self), indent=2) + "\n").encode())


def admin_file(data_dir: Path) -> Path:
    return data_dir / "admin.json"


def user_domain(tenant_name: str, suffix: str = "localhost") -> str:
    """A tenant's domain, as ``/tenants`` lists it (``acrlocal.localhost``)."""
    return f"{tenant_name.lower()}.{suffix}"


def bootstrap(directory: Directory, data_dir: Path, suffix: str = "localhost") -> AdminCredential:
    """Make sure the default tenant, subscription, administrator and user exist; return their credentials
    (from ``admin.json``, rewritten with a new secret or password if it is missing or stale)."""
    try:
        tenant = directory.default_tenant()
    except NotFound:
        tenant = directory.create_tenant("acrlocal", default=True)
    subs = [s for s in directory.subscriptions(tenant.id) if s.is_default]
    sub = subs[0] if subs else directory.create_subscription(tenant.id, "acrlocal", default=True)
    admins = [p for p in directory.principals(tenant.id)
              if p.display_name == ADMIN_NAME and p.kind == "ServicePrincipal"]
    admin = admins[0] if admins else directory.create_service_principal(tenant.id, ADMIN_NAME)
    directory.add_directory_role(admin.object_id)
    upn = f"{USER_NAME}@{user_domain(tenant.display_name, suffix)}"
    user = directory.find_user(upn)
    path = admin_file(data_dir)
    old: AdminCredential | None = None
    with contextlib.suppress(FileNotFoundError, KeyError, ValueError, TypeError):
        old = AdminCredential.read(path)
    secret = old.clientSecret if old is not None and old.objectId == admin.object_id and \
        directory.check_secret(admin.object_id, old.clientSecret) else None
    password = old.userPassword if old is not None and user is not None and old.userObjectId == user.object_id \
        and verify_password(old.userPassword, directory.password_hash(user.object_id)) else None
    if secret is None:
        directory.remove_secrets(admin.object_id)
        _, secret = directory.add_secret(admin.object_id, "acrlocal CLI")
    if password is None:
        password = generate_password()
        if user is None:
            user = directory.create_user(tenant.id, upn, USER_DISPLAY_NAME, hash_password(password),
                                         properties={"mailNickname": USER_NAME})
        else:
            directory.update_user(user.object_id, password_hash=hash_password(password), account_enabled=True)
    assert user is not None
    directory.add_directory_role(user.object_id)
    cred = AdminCredential(tenant.id, sub.id, admin.app_id, admin.object_id, secret, user.user_principal_name,
                           user.object_id, password)
    if cred != old:
        cred.write(path)
    return cred
