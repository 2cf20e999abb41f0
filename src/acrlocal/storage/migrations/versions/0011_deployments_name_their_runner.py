"""Template deployments name the server process that runs them (``runner``), so that a replica starting, or a
reader, fails only the deployments whose process is gone, not those another replica is running. Rows from before
name none: their process is gone (the server that ran them stopped to be upgraded). A cancel asked through another
replica than the runner's is a flag on the row (``cancel_requested``), which the runner reads between waves.

Revision 0011, after 0010.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('arm_deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('cancel_requested', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('arm_deployments', schema=None) as batch_op:
        batch_op.drop_column('cancel_requested')
        batch_op.drop_column('runner')
