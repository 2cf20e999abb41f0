"""Tenants by name: ``name_key``, the name in lower case, with a unique index, so that no two tenants share a name
(their domains' first label) in any case, even when two writers both checked. A database that already holds two
tenants of one name (none made through the API could) keeps the oldest's key; the others get ``<name>#<id>``.

Revision 0014, after 0013.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.String(length=256), nullable=True))
    op.execute("UPDATE tenants SET name_key = lower(display_name)")
    op.execute(
        "UPDATE tenants SET name_key = substr(name_key, 1, 219) || '#' || id WHERE EXISTS (SELECT 1 FROM tenants "
        "AS older WHERE lower(older.display_name) = lower(tenants.display_name) AND (older.created < tenants.created "
        "OR (older.created = tenants.created AND older.id < tenants.id)))")
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.alter_column('name_key', existing_type=sa.String(length=256), nullable=False)
        batch_op.create_index('ux_tenants_name_key', ['name_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_index('ux_tenants_name_key')
        batch_op.drop_column('name_key')
