"""Registries get an identity of their own (``uid``), which registry tokens name: a registry deleted and made again
under the same name has another. Registries that exist get one each.

Revision 0004, after 0003.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=36), nullable=True))
    conn = op.get_bind()
    registries = sa.table("registries", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    for (registry_id,) in conn.execute(sa.select(registries.c.id)).all():
        conn.execute(sa.update(registries).where(registries.c.id == registry_id).values(uid=str(uuid.uuid4())))
    with op.batch_alter_table("registries") as batch:
        batch.alter_column("uid", existing_type=sa.String(length=36), nullable=False)
        batch.create_index("ix_registries_uid", ["uid"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.drop_index("ix_registries_uid")
        batch.drop_column("uid")
