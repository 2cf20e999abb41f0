"""Baseline: the schema as it was when acrlocal took up migrations.

On a new database this creates every table. A database made before migrations (by ``create_all`` and the
"add the nullable columns a table has gained" helper of earlier versions) is adopted instead: tables it lacks are
created, columns and indexes it lacks are added (a missing column must be nullable or have a server default, as that
helper required), its rows are kept, and application objects still in the control plane's old
``arm_graph_applications`` table move to ``applications``.

Revision 0001, the first.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _byte_ordered(length: int) -> Any:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


#: Tables the database had before this migration (a database made before migrations), read once.
_existing: set[str] = set()


def _table(name: str, *elements: Any) -> None:
    """Create table ``name``, or add the columns an existing one lacks."""
    if name not in _existing:
        op.create_table(name, *elements)
        return
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(name)}
    missing = [e for e in elements if isinstance(e, sa.Column) and e.name not in present]
    for column in missing:
        if not column.nullable and column.server_default is None:
            raise RuntimeError(f"column {name}.{column.name} is missing and has no default: this database was made "
                               "by an acrlocal too old to upgrade; start from a new data directory")
    if missing:
        with op.batch_alter_table(name) as batch:
            for column in missing:
                batch.add_column(column)


def _index(name: str, table: str, columns: list[str], unique: bool = False) -> None:
    if table not in _existing or name not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, columns, unique=unique)


def _move_graph_applications() -> None:
    """Application objects used to be the control plane's ``arm_graph_applications`` table."""
    if "arm_graph_applications" not in _existing:
        return
    bind = op.get_bind()
    old = sa.Table("arm_graph_applications", sa.MetaData(), autoload_with=bind)
    new = sa.table("applications", *(sa.column(c) for c in (
        "id", "app_id", "tenant_id", "display_name", "service_principal", "properties", "created")))
    have = {r.id for r in bind.execute(sa.select(new.c.id))}
    for row in bind.execute(sa.select(old)).all():
        if row.id not in have:
            bind.execute(sa.insert(new).values(
                id=row.id, app_id=row.app_id, tenant_id=row.tenant_id, display_name=row.display_name,
                service_principal=bool(row.service_principal), properties="{}", created=row.created))
    op.drop_table("arm_graph_applications")


def upgrade() -> None:
    _existing.clear()
    _existing.update(sa.inspect(op.get_bind()).get_table_names())
    _table('arm_deployments',
    sa.Column('id_key', sa.String(length=2048), nullable=False),
    sa.Column('id', sa.String(length=2048), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('group_key', sa.String(length=90), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('operations', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id_key')
    )
    _index('ix_arm_deployments_scope', 'arm_deployments', ['subscription_id', 'group_key'])
    _table('arm_resource_groups',
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('name_key', sa.String(length=90), nullable=False),
    sa.Column('name', sa.String(length=90), nullable=False),
    sa.Column('location', sa.String(length=64), nullable=False),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('managed_by', sa.String(length=1024), nullable=True),
    sa.Column('system_data', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('subscription_id', 'name_key')
    )
    _table('arm_resources',
    sa.Column('id_key', _byte_ordered(2048), nullable=False),
    sa.Column('id', sa.String(length=2048), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('group_key', sa.String(length=90), nullable=False),
    sa.Column('type_key', sa.String(length=256), nullable=False),
    sa.Column('type', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=260), nullable=False),
    sa.Column('parent_key', sa.String(length=2048), nullable=True),
    sa.Column('location', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=True),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('identity', sa.Text(), nullable=True),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=False),
    sa.Column('internal', sa.Text(), nullable=False),
    sa.Column('system_data', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id_key')
    )
    _index('ix_arm_resources_group', 'arm_resources', ['subscription_id', 'group_key'])
    _index('ix_arm_resources_parent', 'arm_resources', ['parent_key'])
    _index('ix_arm_resources_type', 'arm_resources', ['type_key', 'name'])
    _table('arm_role_assignments',
    sa.Column('name', sa.String(length=36), nullable=False),
    sa.Column('scope', sa.String(length=2048), nullable=False),
    sa.Column('scope_key', _byte_ordered(2048), nullable=False),
    sa.Column('role_definition', sa.String(length=36), nullable=False),
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.Column('principal_type', sa.String(length=32), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('condition', sa.Text(), nullable=True),
    sa.Column('condition_version', sa.String(length=8), nullable=True),
    sa.Column('created_on', sa.String(length=40), nullable=False),
    sa.Column('updated_on', sa.String(length=40), nullable=False),
    sa.Column('created_by', sa.String(length=36), nullable=True),
    sa.Column('updated_by', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    _index('ix_arm_role_assignments_principal', 'arm_role_assignments', ['principal_id'])
    _index('ix_arm_role_assignments_scope', 'arm_role_assignments', ['scope_key'])
    _table('arm_role_definitions',
    sa.Column('name', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('role_name', sa.String(length=512), nullable=False),
    sa.Column('role_name_key', sa.String(length=512), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('permissions', sa.Text(), nullable=False),
    sa.Column('assignable_scopes', sa.Text(), nullable=False),
    sa.Column('created_on', sa.String(length=40), nullable=False),
    sa.Column('updated_on', sa.String(length=40), nullable=False),
    sa.Column('created_by', sa.String(length=36), nullable=True),
    sa.Column('updated_by', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('name'),
    sa.UniqueConstraint('tenant_id', 'role_name_key')
    )
    _table('audit_login_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('registry', sa.String(length=50), nullable=False),
    sa.Column('identity', sa.String(length=200), nullable=True),
    sa.Column('identity_kind', sa.String(length=20), nullable=True),
    sa.Column('operation', sa.String(length=40), nullable=False),
    sa.Column('result', sa.String(length=20), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('caller_address', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_audit_login_registry_time', 'audit_login_events', ['registry', 'time'])
    _table('audit_repository_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('registry', sa.String(length=50), nullable=False),
    sa.Column('identity', sa.String(length=200), nullable=True),
    sa.Column('identity_kind', sa.String(length=20), nullable=True),
    sa.Column('operation', sa.String(length=40), nullable=False),
    sa.Column('repository', sa.String(length=256), nullable=True),
    sa.Column('tag', sa.String(length=128), nullable=True),
    sa.Column('digest', sa.String(length=200), nullable=True),
    sa.Column('media_type', sa.String(length=255), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('result', sa.String(length=20), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('caller_address', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_audit_repository_registry_time', 'audit_repository_events', ['registry', 'time'])
    _table('blobs',
    sa.Column('digest', sa.String(length=200), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('digest')
    )
    _table('registries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('port')
    )
    _table('registry_token_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('private_pem', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('retired', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('kid')
    )
    _table('tenants',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _table('vms',
    sa.Column('vm_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=1024), nullable=False),
    sa.Column('resource_id', sa.String(length=1024), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('resource_group', sa.String(length=90), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('location', sa.String(length=64), nullable=False),
    sa.Column('system_principal_id', sa.String(length=36), nullable=True),
    sa.Column('user_assigned', sa.Text(), nullable=False),
    sa.Column('profile', sa.Text(), nullable=False),
    sa.Column('imds_port', sa.Integer(), nullable=True),
    sa.Column('identity_secret', sa.String(length=64), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('power_state', sa.String(length=16), server_default='running', nullable=False),
    sa.PrimaryKeyConstraint('vm_id'),
    sa.UniqueConstraint('imds_port'),
    sa.UniqueConstraint('key')
    )
    _table('applications',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('service_principal', sa.Boolean(), nullable=False),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.Column('created', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('app_id')
    )
    _index('ix_applications_tenant', 'applications', ['tenant_id'])
    _table('principals',
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('resource_id', sa.String(length=1024), nullable=True),
    sa.Column('mi_kind', sa.String(length=16), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id'),
    sa.UniqueConstraint('app_id'),
    sa.UniqueConstraint('resource_id')
    )
    _table('repositories',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('registry_id', sa.Integer(), nullable=False),
    sa.Column('name', _byte_ordered(256), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.Column('delete_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('write_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('read_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('list_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.ForeignKeyConstraint(['registry_id'], ['registries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('registry_id', 'name', name='uq_repositories_name')
    )
    _table('signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('private_pem', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('retired', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('kid')
    )
    _table('subscriptions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    _table('upload_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('registry_id', sa.Integer(), nullable=False),
    sa.Column('repository', sa.String(length=256), nullable=False),
    sa.Column('principal', sa.String(length=200), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['registry_id'], ['registries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_upload_sessions_updated', 'upload_sessions', ['updated'])
    _table('directory_groups',
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id')
    )
    _table('directory_owners',
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id', 'owner_id')
    )
    _index('ix_directory_owners_owner', 'directory_owners', ['owner_id'])
    _table('directory_role_members',
    sa.Column('role_template_id', sa.String(length=36), nullable=False),
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('role_template_id', 'principal_id')
    )
    _table('federated_credentials',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('issuer', sa.String(length=1024), nullable=False),
    sa.Column('subject', sa.String(length=1024), nullable=False),
    sa.Column('audiences', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('object_id', 'name')
    )
    _table('group_members',
    sa.Column('group_id', sa.String(length=36), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'member_id')
    )
    _index('ix_group_members_member', 'group_members', ['member_id'])
    _table('manifests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=200), nullable=False),
    sa.Column('media_type', sa.String(length=255), nullable=False),
    sa.Column('artifact_type', sa.String(length=255), nullable=True),
    sa.Column('subject', sa.String(length=200), nullable=True),
    sa.Column('annotations', sa.Text(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.Column('delete_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('write_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('read_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('list_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('repository_id', 'digest', name='uq_manifests_digest')
    )
    _index('ix_manifests_subject', 'manifests', ['repository_id', 'subject'])
    _table('principal_certificates',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('thumbprint_sha1', sa.String(length=40), nullable=False),
    sa.Column('thumbprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=True),
    sa.Column('starts', sa.Float(), nullable=True),
    sa.Column('expires', sa.Float(), nullable=True),
    sa.Column('listed_on', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id')
    )
    _table('principal_secrets',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=8), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('expires', sa.Float(), nullable=True),
    sa.Column('listed_on', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id')
    )
    _table('repository_blobs',
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=200), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['digest'], ['blobs.digest'], ),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repository_id', 'digest')
    )
    _index('ix_repository_blobs_digest', 'repository_blobs', ['digest'])
    _table('service_principal_properties',
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id')
    )
    _table('user_refresh_tokens',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=36), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('expires', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    _index('ix_user_refresh_tokens_user', 'user_refresh_tokens', ['object_id'])
    _table('users',
    sa.Column('object_id', sa.String(length=36), nullable=False),
    sa.Column('upn_key', sa.String(length=256), nullable=False),
    sa.Column('user_principal_name', sa.String(length=256), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('password_changed', sa.Float(), nullable=True),
    sa.Column('force_change', sa.Boolean(), nullable=False),
    sa.Column('account_enabled', sa.Boolean(), nullable=False),
    sa.Column('properties', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['object_id'], ['principals.object_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id'),
    sa.UniqueConstraint('upn_key')
    )
    _table('manifest_references',
    sa.Column('manifest_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('digest', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['manifest_id'], ['manifests.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('manifest_id', 'kind', 'digest')
    )
    _table('tags',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('name', _byte_ordered(128), nullable=False),
    sa.Column('manifest_id', sa.Integer(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.Column('delete_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('write_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('read_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('list_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.ForeignKeyConstraint(['manifest_id'], ['manifests.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('repository_id', 'name', name='uq_tags_name')
    )
    _index('ix_tags_manifest', 'tags', ['manifest_id'])

    _move_graph_applications()


def downgrade() -> None:
    raise NotImplementedError("the baseline is the first schema: there is nothing to go back to")
