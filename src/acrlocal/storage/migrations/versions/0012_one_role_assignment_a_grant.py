"""One role assignment a principal, role and scope: a unique index on (principal_id, role_definition, scope_key).

ARM answers a second assignment of the same role to the same principal at the same scope, under another name, with
409 ``RoleAssignmentExists``. The handler checks before it inserts, under the control plane's write lock; the index
refuses the second of two writers that both checked before either inserted (replicas whose lock was lost with its
connection), so that the check's answer holds whatever the lock did.

A database may already hold such duplicates (only such a race could make them). Each grant keeps its oldest
assignment (by ``created_on``, then name: the one ARM would have kept, answering the later PUT with 409), and the
later ones are deleted, each named in a warning. They granted the same role to the same principal at the same
scope, so access changes only where their conditions differed; the migration does not refuse to run, since a
server that cannot start could not delete them through ARM either.

Revision 0012, after 0011.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

log = logging.getLogger("acrlocal.storage.schema")

#: The assignments that an older one of the same grant (principal, role, scope) precedes.
LATER = """
FROM arm_role_assignments WHERE EXISTS (
    SELECT 1 FROM arm_role_assignments AS older
    WHERE older.principal_id = arm_role_assignments.principal_id
      AND older.role_definition = arm_role_assignments.role_definition
      AND older.scope_key = arm_role_assignments.scope_key
      AND (older.created_on < arm_role_assignments.created_on
           OR (older.created_on = arm_role_assignments.created_on AND older.name < arm_role_assignments.name)))
"""


def upgrade() -> None:
    conn = op.get_bind()
    for name, scope, role, principal in conn.execute(
            sa.text(f"SELECT name, scope, role_definition, principal_id {LATER}")).all():
        log.warning("deleting role assignment %s (role %s for principal %s at %s): an older assignment grants the "
                    "same role to the same principal at the same scope", name, role, principal, scope)
    conn.execute(sa.text(f"DELETE {LATER}"))
    with op.batch_alter_table('arm_role_assignments', schema=None) as batch_op:
        batch_op.create_index('ix_arm_role_assignments_grant', ['principal_id', 'role_definition', 'scope_key'],
                              unique=True)


def downgrade() -> None:
    with op.batch_alter_table('arm_role_assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_arm_role_assignments_grant')
