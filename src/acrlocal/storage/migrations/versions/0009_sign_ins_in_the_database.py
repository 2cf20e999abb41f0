"""Sign-ins in progress (device code flows, authorization codes) and the client-assertion replay cache are kept in
the database, so that any process or replica completes a flow another one started and refuses an assertion another
one accepted.

Revision 0009, after 0008.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assertion_replays',
                    sa.Column('key', sa.String(length=64), nullable=False),
                    sa.Column('expires', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('key'))
    with op.batch_alter_table('assertion_replays', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assertion_replays_expires'), ['expires'], unique=False)
    op.create_table('sign_ins',
                    sa.Column('key', sa.String(length=100), nullable=False),
                    sa.Column('user_code', sa.String(length=16), nullable=True),
                    sa.Column('body', sa.Text(), nullable=False),
                    sa.Column('expires', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('key'),
                    sa.UniqueConstraint('user_code'))
    with op.batch_alter_table('sign_ins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_ins_expires'), ['expires'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sign_ins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_ins_expires'))
    op.drop_table('sign_ins')
    with op.batch_alter_table('assertion_replays', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assertion_replays_expires'))
    op.drop_table('assertion_replays')
