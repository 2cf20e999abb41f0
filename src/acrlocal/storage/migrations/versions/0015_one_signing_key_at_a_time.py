"""One signing key at a time: a unique index allows a tenant one unretired Entra key (``signing_keys``) and the
registries one unretired token key (``registry_token_keys``), so that two processes rotating (or making a first key)
at once end as the two in turn instead of both keys signing. A database where that race left several unretired keys
keeps the newest signing and retires the others now (they stay published, so their tokens verify until they expire).

Revision 0015, after 0014.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

NEWER = ("newer.retired IS NULL AND (newer.created > {t}.created OR (newer.created = {t}.created AND newer.kid > "
         "{t}.kid))")


def upgrade() -> None:
    now = time.time()
    op.execute(sa.text(
        "UPDATE signing_keys SET retired = :now WHERE retired IS NULL AND EXISTS (SELECT 1 FROM signing_keys AS "
        "newer WHERE newer.tenant_id = signing_keys.tenant_id AND " + NEWER.format(t="signing_keys") + ")"
    ).bindparams(now=now))
    op.execute(sa.text(
        "UPDATE registry_token_keys SET retired = :now WHERE retired IS NULL AND EXISTS (SELECT 1 FROM "
        "registry_token_keys AS newer WHERE " + NEWER.format(t="registry_token_keys") + ")"
    ).bindparams(now=now))
    op.create_index('ux_signing_keys_active', 'signing_keys', ['tenant_id'], unique=True,
                    sqlite_where=sa.text('retired IS NULL'), postgresql_where=sa.text('retired IS NULL'))
    op.create_index('ux_registry_token_keys_active', 'registry_token_keys', [sa.text('(retired IS NULL)')],
                    unique=True, sqlite_where=sa.text('retired IS NULL'), postgresql_where=sa.text('retired IS NULL'))


def downgrade() -> None:
    op.drop_index('ux_registry_token_keys_active', table_name='registry_token_keys')
    op.drop_index('ux_signing_keys_active', table_name='signing_keys')
