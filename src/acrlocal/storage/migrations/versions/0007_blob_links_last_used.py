"""Blob links last used: when a repository's link to a blob was last linked again, mounted or read, so that
garbage collection spares the links a push in progress relies on (NULL: not since it was created).

Revision 0007, after 0006.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repository_blobs") as batch:
        batch.add_column(sa.Column("used", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repository_blobs") as batch:
        batch.drop_column("used")
