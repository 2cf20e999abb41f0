"""Indexes that keep registry requests from growing with the repository: the time-ordered tag and manifest lists
(``orderby=timedesc|timeasc``) read a page in order, and partial indexes of the locked tags and manifests (those
with an attribute disabled) answer "is anything here locked" from the locked rows alone.

Revision 0005, after 0004.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

LOCKED = "NOT (delete_enabled AND write_enabled AND read_enabled AND list_enabled)"


def upgrade() -> None:
    with op.batch_alter_table('manifests', schema=None) as batch_op:
        batch_op.create_index('ix_manifests_locked', ['repository_id'], unique=False, sqlite_where=sa.text(LOCKED),
                              postgresql_where=sa.text(LOCKED))
        batch_op.create_index('ix_manifests_updated', ['repository_id', 'updated', 'digest'], unique=False)

    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index('ix_tags_locked', ['repository_id'], unique=False, sqlite_where=sa.text(LOCKED),
                              postgresql_where=sa.text(LOCKED))
        batch_op.create_index('ix_tags_updated', ['repository_id', 'updated', 'name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index('ix_tags_updated')
        batch_op.drop_index('ix_tags_locked')

    with op.batch_alter_table('manifests', schema=None) as batch_op:
        batch_op.drop_index('ix_manifests_updated')
        batch_op.drop_index('ix_manifests_locked')
