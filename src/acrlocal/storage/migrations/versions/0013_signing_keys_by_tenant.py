"""Signing keys by tenant: a tenant's JWKS and its signing key are read with one index range, however many tenants
the directory holds (the table had only its primary key, the kid).

Revision 0013, after 0012.
"""

from __future__ import annotations

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index('ix_signing_keys_tenant', ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_signing_keys_tenant')
