"""Manifest references by digest: which manifests reference a blob or child manifest, for the reach of locks.

Revision 0002, after 0001.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_manifest_references_digest", "manifest_references", ["digest", "kind"])


def downgrade() -> None:
    op.drop_index("ix_manifest_references_digest", "manifest_references")
