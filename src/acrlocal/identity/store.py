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
)
