"""ARM resources keep their name lower-cased (``name_key``), indexed with their type: finding who holds a name that
is unique in any case (a registry's, on every acr create and at every start) reads one index entry instead of
every resource of the type.

Revision 0008, after 0007.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('arm_resources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.String(length=260), server_default='', nullable=False))
    op.execute("UPDATE arm_resources SET name_key = lower(name)")
    with op.batch_alter_table('arm_resources', schema=None) as batch_op:
        batch_op.create_index('ix_arm_resources_name', ['type_key', 'name_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('arm_resources', schema=None) as batch_op:
        batch_op.drop_index('ix_arm_resources_name')
        batch_op.drop_column('name_key')
