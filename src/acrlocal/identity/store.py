"""SQL tables of the directory. Declared on the shared metadata; used only through :mod:`.directory` and
:mod:`.keys`."""

from __future__ import annotations

import sqlalchemy as sa

from acrlocal.storage.sql import metadata

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("display_name", sa.String(256), nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.Float, nullable=False),
    # The name in lower case: a tenant's name is its domain's first label, so no two tenants share one in any case.
    sa.Column("name_key", sa.String(256), nullable=False),
    sa.Index("ux_tenants_name_key", "name_key", unique=True),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("display_name", sa.String(256), nullable=False),
    sa.Column("state", sa.String(32), nullable=False, default="Enabled"),
    sa.Column("is_default", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.Float, nullable=False),
)

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("object_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    # ServicePrincipal | ManagedIdentity | User
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("app_id", sa.String(36), nullable=False, unique=True),
    sa.Column("display_name", sa.String(256), nullable=False),
    # For managed identities: the ARM id of the user-assigned identity, or of the resource (VM) for a
    # system-assigned one (the token's xms_mirid). Unique so IMDS selectors resolve to one principal.
    sa.Column("resource_id", sa.String(1024), nullable=True, unique=True),
    # system | user, for managed identities
    sa.Column("mi_kind", sa.String(16), nullable=True),
    sa.Column("created", sa.Float, nullable=False),
)

principal_secrets = sa.Table(
    "principal_secrets",
    metadata,
    sa.Column("key_id", sa.String(36), primary_key=True),
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"), nullable=False),
    sa.Column("display_name", sa.String(256), nullable=False, default=""),
    # sha256 of the secret: secrets are 256-bit random strings, so a fast hash is enough.
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("hint", sa.String(8), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=True),
    # Which Graph object lists it: "application" (also NULL, rows older than the column) or "servicePrincipal".
    sa.Column("listed_on", sa.String(16), nullable=True),
)

principal_certificates = sa.Table(
    "principal_certificates",
    metadata,
    sa.Column("key_id", sa.String(36), primary_key=True),
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"), nullable=False),
    sa.Column("thumbprint_sha1", sa.String(40), nullable=False),
    sa.Column("thumbprint_sha256", sa.String(64), nullable=False),
    sa.Column("certificate_pem", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    # Graph's keyCredential: its name and validity (NULL: the certificate's own), and which object lists it.
    sa.Column("display_name", sa.String(256), nullable=True),
    sa.Column("starts", sa.Float, nullable=True),
    sa.Column("expires", sa.Float, nullable=True),
    sa.Column("listed_on", sa.String(16), nullable=True),
)

federated_credentials = sa.Table(
    "federated_credentials",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("issuer", sa.String(1024), nullable=False),
    sa.Column("subject", sa.String(1024), nullable=False),
    sa.Column("audiences", sa.Text, nullable=False),  # JSON list
    sa.Column("created", sa.Float, nullable=False),
    sa.UniqueConstraint("object_id", "name"),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    # When a newer key took over; the key stays published until its last token expires.
    sa.Column("retired", sa.Float, nullable=True),
    # A tenant's keys (its JWKS, its signing key) are read by tenant: one index range, however many tenants.
    sa.Index("ix_signing_keys_tenant", "tenant_id"),
    # One unretired key (the one that signs) a tenant, whoever writes: a second is refused (``after_the_winner``).
    sa.Index("ux_signing_keys_active", "tenant_id", unique=True, sqlite_where=sa.text("retired IS NULL"),
             postgresql_where=sa.text("retired IS NULL")),
)

# -- the directory's people and objects (Microsoft Graph's users, groups, applications) ---------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    # Lower-cased userPrincipalName: unique across the server, as Entra's are across Entra.
    sa.Column("upn_key", sa.String(256), nullable=False, unique=True),
    sa.Column("user_principal_name", sa.String(256), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("password_changed", sa.Float, nullable=True),
    sa.Column("force_change", sa.Boolean, nullable=False, default=False),
    sa.Column("account_enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),  # other Graph properties (JSON)
)

groups = sa.Table(
    "directory_groups",
    metadata,
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),  # mailNickname, securityEnabled... (JSON)
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("member_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Index("ix_group_members_member", "member_id"),
)

#: Owners of applications, service principals and groups (object_id is any of those; not a foreign key, as an
#: application is no principal: deleting an object deletes its owner rows explicitly).
owners = sa.Table(
    "directory_owners",
    metadata,
    sa.Column("object_id", sa.String(36), primary_key=True),
    sa.Column("owner_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Index("ix_directory_owners_owner", "owner_id"),
)

#: Members of directory roles (Entra's role templates, e.g. Global Administrator).
directory_roles = sa.Table(
    "directory_role_members",
    metadata,
    sa.Column("role_template_id", sa.String(36), primary_key=True),
    sa.Column("principal_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
)

#: A user's refresh tokens (only their sha256 is kept; random 384-bit strings): gone with the user, and with a
#: password change.
refresh_tokens = sa.Table(
    "user_refresh_tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"), nullable=False),
    sa.Column("client_id", sa.String(36), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Index("ix_user_refresh_tokens_user", "object_id"),
)

#: Application objects (Graph's ``/applications``). The application's principal (same appId) is in ``principals``;
#: ``service_principal`` says whether its service principal object was created (``POST /servicePrincipals``).
applications = sa.Table(
    "applications",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("app_id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("display_name", sa.String(256), nullable=False),
    sa.Column("service_principal", sa.Boolean, nullable=False, default=False),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),  # identifierUris, web... (JSON)
    sa.Column("created", sa.String(40), nullable=False),
    sa.Index("ix_applications_tenant", "tenant_id"),
)

#: Graph properties of service principals (tags, notes, accountEnabled...); a row only once one is set.
service_principals = sa.Table(
    "service_principal_properties",
    metadata,
    sa.Column("object_id", sa.String(36), sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),
)


# -- sign-ins in progress, shared by every process and replica ----------------------------------------------------

# Device code flows (``device:<device code>``, with their user code) and authorization codes (``code:<code>``)
# until they are used or expire; the rest of the flow as JSON (the signed-in user by object id).
sign_ins = sa.Table(
    "sign_ins",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("user_code", sa.String(16), nullable=True, unique=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)

# Certificate assertions accepted, by SHA-256 of (client, jti, resource), until they expire.
assertion_replays = sa.Table(
    "assertion_replays",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)
