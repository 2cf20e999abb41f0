"""Upload sessions by principal: counting one principal's open sessions in a registry (the session quota) is an
index range.

Revision 0006, after 0005.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_upload_sessions_principal", "upload_sessions", ["registry_id", "principal"])


def downgrade() -> None:
    op.drop_index("ix_upload_sessions_principal", "upload_sessions")
