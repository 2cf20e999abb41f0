BEGIN TRANSACTION;
CREATE TABLE applications (
	id VARCHAR(36) NOT NULL, 
	app_id VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	service_principal BOOLEAN NOT NULL, 
	properties TEXT NOT NULL, 
	created VARCHAR(40) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (app_id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE TABLE arm_deployments (
	id_key VARCHAR(2048) NOT NULL, 
	id VARCHAR(2048) NOT NULL, 
	subscription_id VARCHAR(36) NOT NULL, 
	group_key VARCHAR(90) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	body TEXT NOT NULL, 
	template TEXT NOT NULL, 
	operations TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id_key)
);
CREATE TABLE arm_resource_groups (
	subscription_id VARCHAR(36) NOT NULL, 
	name_key VARCHAR(90) NOT NULL, 
	name VARCHAR(90) NOT NULL, 
	location VARCHAR(64) NOT NULL, 
	tags TEXT NOT NULL, 
	managed_by VARCHAR(1024), 
	system_data TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (subscription_id, name_key)
);
INSERT INTO "arm_resource_groups" VALUES('bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','acrlocal','westus','{}',NULL,'{}',1.79645652089991664885e+09);
INSERT INTO "arm_resource_groups" VALUES('bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','legacy-rg','westeurope','{}',NULL,'{"createdBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","createdByType":"Application","createdAt":"2026-12-05T07:42:01.141279Z","lastModifiedBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:01.141279Z"}',1.79645652114172887803e+09);
CREATE TABLE arm_resources (
	id_key VARCHAR(2048) NOT NULL, 
	id VARCHAR(2048) NOT NULL, 
	subscription_id VARCHAR(36) NOT NULL, 
	group_key VARCHAR(90) NOT NULL, 
	type_key VARCHAR(256) NOT NULL, 
	type VARCHAR(256) NOT NULL, 
	name VARCHAR(260) NOT NULL, 
	parent_key VARCHAR(2048), 
	location VARCHAR(64), 
	kind VARCHAR(64), 
	tags TEXT NOT NULL, 
	sku TEXT, 
	identity TEXT, 
	properties TEXT NOT NULL, 
	extra TEXT NOT NULL, 
	internal TEXT NOT NULL, 
	system_data TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id_key)
);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries','Microsoft.ContainerRegistry/registries','acrlocal',NULL,'westus',NULL,'{}','{"name":"Standard","tier":"Standard"}',NULL,'{"adminUserEnabled":false,"anonymousPullEnabled":false,"dataEndpointEnabled":false,"dataEndpointHostNames":[],"publicNetworkAccess":"Enabled","networkRuleBypassOptions":"AzureServices","zoneRedundancy":"Disabled","roleAssignmentMode":"LegacyRegistryPermissions","privateEndpointConnections":[],"encryption":{"status":"disabled"},"policies":{"quarantinePolicy":{"status":"disabled"},"trustPolicy":{"type":"Notary","status":"disabled"},"retentionPolicy":{"days":7,"status":"disabled"},"exportPolicy":{"status":"enabled"},"azureADAuthenticationAsArmPolicy":{"status":"enabled"}},"creationDate":"2026-12-05T07:42:00.891242Z"}','{}','{"adminPasswords":{"password":"YwtXFlYnuLO1qw8jQHZ2PSuWLj6SEnP_-Z8gZ0EPOJX8G8BFdcY2","password2":"ekirdCNnCXXbplh4RDVHsBAnrfJh3EQI1LhcoQwijCIstpFAvUKj"}}','{"createdBy":"acrlocal","createdByType":"Application","createdAt":"2026-12-05T07:42:00.901055Z","lastModifiedBy":"acrlocal","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:00.901055Z"}',1.7964565209016215801e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_pull','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_pull','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can pull any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:00.906360Z","actions":["repositories/*/content/read"]}','{}','{}','{}',1.79645652090660357469e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_pull_metadata_read','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_pull_metadata_read','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull_metadata_read','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:00.907290Z","actions":["repositories/*/content/read","repositories/*/metadata/read"]}','{}','{}','{}',1.79645652090750670426e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_push','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_push','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can push to any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:00.908125Z","actions":["repositories/*/content/read","repositories/*/content/write"]}','{}','{}','{}',1.79645652090834569928e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_push_metadata_write','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_push_metadata_write','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push_metadata_write','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read and write operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:00.909043Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652090931248669e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_admin','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_admin','bb2dca8f-556f-4c67-8f4e-596cce03cad4','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_admin','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read, write and delete operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:00.909959Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/content/delete","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652091019392016e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.managedidentity/userassignedidentities/legacy-id','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-id','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.managedidentity/userassignedidentities','Microsoft.ManagedIdentity/userAssignedIdentities','legacy-id',NULL,'westeurope',NULL,'{}',NULL,NULL,'{"isolationScope":"None","tenantId":"1da45f66-7601-4016-a5b8-d59c756c1153","principalId":"3e2bacf2-1dcd-44d2-8653-cfe2a2712c53","clientId":"802e749d-d3e2-4f42-918d-e37d034eefb5"}','{}','{"principalId":"3e2bacf2-1dcd-44d2-8653-cfe2a2712c53"}','{"createdBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","createdByType":"Application","createdAt":"2026-12-05T07:42:01.147382Z","lastModifiedBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:01.147382Z"}',1.79645652114943647379e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_pull','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_pull','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can pull any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:01.163282Z","actions":["repositories/*/content/read"]}','{}','{}','{}',1.79645652116355609897e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_pull_metadata_read','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_pull_metadata_read','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull_metadata_read','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:01.164272Z","actions":["repositories/*/content/read","repositories/*/metadata/read"]}','{}','{}','{}',1.79645652116449332236e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_push','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_push','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can push to any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:01.165165Z","actions":["repositories/*/content/read","repositories/*/content/write"]}','{}','{}','{}',1.79645652116540670392e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_push_metadata_write','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_push_metadata_write','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push_metadata_write','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read and write operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:01.166059Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652116630530356e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_admin','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_admin','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_admin','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read, write and delete operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:01.166963Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/content/delete","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652116721510891e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg','bb2dca8f-556f-4c67-8f4e-596cce03cad4','legacy-rg','microsoft.containerregistry/registries','Microsoft.ContainerRegistry/registries','legacyreg',NULL,'westeurope',NULL,'{}','{"name":"Standard","tier":"Standard"}',NULL,'{"adminUserEnabled":false,"anonymousPullEnabled":false,"dataEndpointEnabled":false,"dataEndpointHostNames":[],"publicNetworkAccess":"Enabled","networkRuleBypassOptions":"AzureServices","zoneRedundancy":"Disabled","roleAssignmentMode":"LegacyRegistryPermissions","privateEndpointConnections":[],"encryption":{"status":"disabled"},"policies":{"quarantinePolicy":{"status":"disabled"},"trustPolicy":{"type":"Notary","status":"disabled"},"retentionPolicy":{"days":7,"status":"disabled"},"exportPolicy":{"status":"enabled"},"azureADAuthenticationAsArmPolicy":{"status":"enabled"}},"creationDate":"2026-12-05T07:42:01.156614Z"}','{}','{"adminPasswords":{"password":"PJ7KKXYxJ9CWJb9VApQyxRZOQUbYVzwudsbfoP02DxkQezU3_qjY","password2":"isfJWFdlKKV8QSe1N66ZIJoOW63VWwY4pl096xKVgt3X9WcUR1qd"}}','{"createdBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","createdByType":"Application","createdAt":"2026-12-05T07:42:01.155924Z","lastModifiedBy":"f8be531e-d4a6-4d49-9663-5e022e18023d","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:01.155924Z"}',1.79645652116785955422e+09);
CREATE TABLE arm_role_assignments (
	name VARCHAR(36) NOT NULL, 
	scope VARCHAR(2048) NOT NULL, 
	scope_key VARCHAR(2048) NOT NULL, 
	role_definition VARCHAR(36) NOT NULL, 
	principal_id VARCHAR(36) NOT NULL, 
	principal_type VARCHAR(32) NOT NULL, 
	description TEXT, 
	condition TEXT, 
	condition_version VARCHAR(8), 
	created_on VARCHAR(40) NOT NULL, 
	updated_on VARCHAR(40) NOT NULL, 
	created_by VARCHAR(36), 
	updated_by VARCHAR(36), 
	PRIMARY KEY (name)
);
INSERT INTO "arm_role_assignments" VALUES('3327fa61-423f-5d32-a23d-2ee51473cf60','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4','8e3af657-a8ff-443c-a75c-2fe8c4bcb635','c3849ed2-bb16-4983-8415-48dec3f6901d','ServicePrincipal','acrlocal administrator',NULL,NULL,'2026-12-05T07:42:00.872566Z','2026-12-05T07:42:00.872566Z',NULL,NULL);
INSERT INTO "arm_role_assignments" VALUES('eea1ff44-9636-55ad-8f90-a0eb43f7da77','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4','8e3af657-a8ff-443c-a75c-2fe8c4bcb635','41067ab0-0851-4aca-8517-92dd697846c9','User','acrlocal user',NULL,NULL,'2026-12-05T07:42:00.874221Z','2026-12-05T07:42:00.874221Z',NULL,NULL);
INSERT INTO "arm_role_assignments" VALUES('a3247313-2473-4e62-b3cd-a63429bbf506','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg','7f951dda-4ed3-4680-a7ca-43fe172d538d','3e2bacf2-1dcd-44d2-8653-cfe2a2712c53','ServicePrincipal',NULL,NULL,NULL,'2026-12-05T07:42:01.174943Z','2026-12-05T07:42:01.174943Z','c3849ed2-bb16-4983-8415-48dec3f6901d','c3849ed2-bb16-4983-8415-48dec3f6901d');
CREATE TABLE arm_role_definitions (
	name VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	role_name VARCHAR(512) NOT NULL, 
	role_name_key VARCHAR(512) NOT NULL, 
	description TEXT, 
	permissions TEXT NOT NULL, 
	assignable_scopes TEXT NOT NULL, 
	created_on VARCHAR(40) NOT NULL, 
	updated_on VARCHAR(40) NOT NULL, 
	created_by VARCHAR(36), 
	updated_by VARCHAR(36), 
	PRIMARY KEY (name), 
	UNIQUE (tenant_id, role_name_key)
);
CREATE TABLE audit_login_events (
	id INTEGER NOT NULL, 
	time FLOAT NOT NULL, 
	registry VARCHAR(50) NOT NULL, 
	identity VARCHAR(200), 
	identity_kind VARCHAR(20), 
	operation VARCHAR(40) NOT NULL, 
	result VARCHAR(20) NOT NULL, 
	description VARCHAR(500), 
	caller_address VARCHAR(64), 
	user_agent VARCHAR(300), 
	PRIMARY KEY (id)
);
INSERT INTO "audit_login_events" VALUES(1,1.79645652266183447837e+09,'acrlocal','c3849ed2-bb16-4983-8415-48dec3f6901d','principal','Login','Success','refresh token issued','127.0.0.1',NULL);
INSERT INTO "audit_login_events" VALUES(2,1.79645652267547535898e+09,'acrlocal','c3849ed2-bb16-4983-8415-48dec3f6901d','principal','Login','Success',NULL,'127.0.0.1',NULL);
CREATE TABLE audit_repository_events (
	id INTEGER NOT NULL, 
	time FLOAT NOT NULL, 
	registry VARCHAR(50) NOT NULL, 
	identity VARCHAR(200), 
	identity_kind VARCHAR(20), 
	operation VARCHAR(40) NOT NULL, 
	repository VARCHAR(256), 
	tag VARCHAR(128), 
	digest VARCHAR(200), 
	media_type VARCHAR(255), 
	size BIGINT, 
	result VARCHAR(20) NOT NULL, 
	description VARCHAR(500), 
	caller_address VARCHAR(64), 
	user_agent VARCHAR(300), 
	PRIMARY KEY (id)
);
INSERT INTO "audit_repository_events" VALUES(1,1.79645652266639494895e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(2,1.79645652268634366992e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(3,1.79645652269509744649e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(4,1.79645652270177841186e+09,'acrlocal','c3849ed2-bb16-4983-8415-48dec3f6901d','principal','Push','legacy/app','v1','sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7','application/vnd.oci.image.manifest.v1+json',473,'Success',NULL,'127.0.0.1','python-requests/2.34.2');
CREATE TABLE blobs (
	digest VARCHAR(200) NOT NULL, 
	size BIGINT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
INSERT INTO "blobs" VALUES('sha256:be7607433becf9744c82f4f208f3b66d5c3cf87794294cc6ce67c4418ada87fc',100,1.79645652268081736568e+09);
INSERT INTO "blobs" VALUES('sha256:f79271197d8d1ce42e963307bc30562299a1da79e5dd6d31c3cf0ea896d7d078',10240,1.79645652269160866734e+09);
CREATE TABLE directory_groups (
	object_id VARCHAR(36) NOT NULL, 
	properties TEXT NOT NULL, 
	PRIMARY KEY (object_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE directory_owners (
	object_id VARCHAR(36) NOT NULL, 
	owner_id VARCHAR(36) NOT NULL, 
	PRIMARY KEY (object_id, owner_id), 
	FOREIGN KEY(owner_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE directory_role_members (
	role_template_id VARCHAR(36) NOT NULL, 
	principal_id VARCHAR(36) NOT NULL, 
	PRIMARY KEY (role_template_id, principal_id), 
	FOREIGN KEY(principal_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
INSERT INTO "directory_role_members" VALUES('62e90394-69f5-4237-9190-012177145e10','c3849ed2-bb16-4983-8415-48dec3f6901d');
INSERT INTO "directory_role_members" VALUES('62e90394-69f5-4237-9190-012177145e10','41067ab0-0851-4aca-8517-92dd697846c9');
CREATE TABLE federated_credentials (
	id VARCHAR(36) NOT NULL, 
	object_id VARCHAR(36) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	issuer VARCHAR(1024) NOT NULL, 
	subject VARCHAR(1024) NOT NULL, 
	audiences TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (object_id, name), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE group_members (
	group_id VARCHAR(36) NOT NULL, 
	member_id VARCHAR(36) NOT NULL, 
	PRIMARY KEY (group_id, member_id), 
	FOREIGN KEY(group_id) REFERENCES principals (object_id) ON DELETE CASCADE, 
	FOREIGN KEY(member_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE manifest_references (
	manifest_id INTEGER NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	digest VARCHAR(200) NOT NULL, 
	PRIMARY KEY (manifest_id, kind, digest), 
	FOREIGN KEY(manifest_id) REFERENCES manifests (id) ON DELETE CASCADE
);
INSERT INTO "manifest_references" VALUES(1,'blob','sha256:be7607433becf9744c82f4f208f3b66d5c3cf87794294cc6ce67c4418ada87fc');
INSERT INTO "manifest_references" VALUES(1,'blob','sha256:f79271197d8d1ce42e963307bc30562299a1da79e5dd6d31c3cf0ea896d7d078');
CREATE TABLE manifests (
	id INTEGER NOT NULL, 
	repository_id INTEGER NOT NULL, 
	digest VARCHAR(200) NOT NULL, 
	media_type VARCHAR(255) NOT NULL, 
	artifact_type VARCHAR(255), 
	subject VARCHAR(200), 
	annotations TEXT, 
	size BIGINT NOT NULL, 
	body BLOB NOT NULL, 
	created FLOAT NOT NULL, 
	updated FLOAT NOT NULL, 
	delete_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	write_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	read_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	list_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_manifests_digest UNIQUE (repository_id, digest), 
	FOREIGN KEY(repository_id) REFERENCES repositories (id) ON DELETE CASCADE
);
INSERT INTO "manifests" VALUES(1,1,'sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7','application/vnd.oci.image.manifest.v1+json','application/vnd.oci.image.config.v1+json',NULL,NULL,473,X'7B0A202022736368656D6156657273696F6E223A20322C0A2020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E6D616E69666573742E76312B6A736F6E222C0A202022636F6E666967223A207B0A20202020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E636F6E6669672E76312B6A736F6E222C0A2020202022646967657374223A20227368613235363A62653736303734333362656366393734346338326634663230386633623636643563336366383737393432393463633663653637633434313861646138376663222C0A202020202273697A65223A203130300A20207D2C0A2020226C6179657273223A205B0A202020207B0A202020202020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E6C617965722E76312E746172222C0A20202020202022646967657374223A20227368613235363A66373932373131393764386431636534326539363333303762633330353632323939613164613739653564643664333163336366306561383936643764303738222C0A2020202020202273697A65223A2031303234300A202020207D0A20205D0A7D',1.79645652269650101659e+09,1.79645652269650101659e+09,1,1,1,1);
CREATE TABLE principal_certificates (
	key_id VARCHAR(36) NOT NULL, 
	object_id VARCHAR(36) NOT NULL, 
	thumbprint_sha1 VARCHAR(40) NOT NULL, 
	thumbprint_sha256 VARCHAR(64) NOT NULL, 
	certificate_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	display_name VARCHAR(256), 
	starts FLOAT, 
	expires FLOAT, 
	listed_on VARCHAR(16), 
	PRIMARY KEY (key_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE principal_secrets (
	key_id VARCHAR(36) NOT NULL, 
	object_id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	secret_sha256 VARCHAR(64) NOT NULL, 
	hint VARCHAR(8) NOT NULL, 
	created FLOAT NOT NULL, 
	expires FLOAT, 
	listed_on VARCHAR(16), 
	PRIMARY KEY (key_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
INSERT INTO "principal_secrets" VALUES('51ddc5d7-4b3e-41e9-bdee-e28e7333b65b','c3849ed2-bb16-4983-8415-48dec3f6901d','acrlocal CLI','4d3fc283ed525b49af213bc34579471296fa660f725a1a8b05bc2a66463fe9b3','4tO',1.79645652066256570822e+09,NULL,'application');
CREATE TABLE principals (
	object_id VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	app_id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	resource_id VARCHAR(1024), 
	mi_kind VARCHAR(16), 
	created FLOAT NOT NULL, 
	PRIMARY KEY (object_id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE, 
	UNIQUE (app_id), 
	UNIQUE (resource_id)
);
INSERT INTO "principals" VALUES('c3849ed2-bb16-4983-8415-48dec3f6901d','1da45f66-7601-4016-a5b8-d59c756c1153','ServicePrincipal','f8be531e-d4a6-4d49-9663-5e022e18023d','acrlocal-admin',NULL,NULL,1.79645652065767216678e+09);
INSERT INTO "principals" VALUES('41067ab0-0851-4aca-8517-92dd697846c9','1da45f66-7601-4016-a5b8-d59c756c1153','User','41067ab0-0851-4aca-8517-92dd697846c9','acrlocal administrator',NULL,NULL,1796456520.71749);
INSERT INTO "principals" VALUES('3e2bacf2-1dcd-44d2-8653-cfe2a2712c53','1da45f66-7601-4016-a5b8-d59c756c1153','ManagedIdentity','802e749d-d3e2-4f42-918d-e37d034eefb5','legacy-id','/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-id','user',1.79645652114849543575e+09);
CREATE TABLE registries (
	id INTEGER NOT NULL, 
	name VARCHAR(50) NOT NULL, 
	port INTEGER, 
	created FLOAT NOT NULL, 
	properties TEXT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name), 
	UNIQUE (port)
);
INSERT INTO "registries" VALUES(1,'acrlocal',33589,1.79645652089124155045e+09,'{"sku": "Standard", "resourceId": "/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal", "adminUserEnabled": false, "anonymousPullEnabled": false, "roleAssignmentMode": "LegacyRegistryPermissions", "azureADAuthenticationAsArmPolicy": "enabled"}');
INSERT INTO "registries" VALUES(2,'legacyreg',43615,1.79645652115661430365e+09,'{"sku": "Standard", "resourceId": "/subscriptions/bb2dca8f-556f-4c67-8f4e-596cce03cad4/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg", "adminUserEnabled": false, "anonymousPullEnabled": false, "roleAssignmentMode": "LegacyRegistryPermissions", "azureADAuthenticationAsArmPolicy": "enabled"}');
CREATE TABLE registry_token_keys (
	kid VARCHAR(64) NOT NULL, 
	private_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	retired FLOAT, 
	PRIMARY KEY (kid)
);
INSERT INTO "registry_token_keys" VALUES('YU7RAR6KE5RQ4PXNP6XSCZSUYC6XUXSM','-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC3Giu05FPP5U/V
5bPwFX/0GYOZoHdriV4OAvX16f27R/sHc5QrguYhV1IMUz+nxqUJt9SJT8kiNIwB
CSVOo86StMeSNjK3IdIcvx0ercoEsaShzczqoGv05vLaNCJXpJmiwcOEkjNfXdAa
uYpKO13XO74u4z7UFlqBvtEtwjRqZy5LKUr4hUmVoFTCVHRPjxlikdE4ikqTtTlg
zusNxBSFKULmCfn5ouOw78r7ef7sAiSLywODfcmgcPr1jJXOmIhav39ixFM76X4j
S3GyIuO9E/XVSnhiVJhhTzHyyYuzs3hyHk9plxArQqz+ToEOcwYAwk/j938SRZn3
S+bYhCdNAgMBAAECggEAKYasr2mSLYXo+Y6PJM3Hd2Wa8EpRkyi0FVLsE/HVuvX7
82htzAFzrk+WutddijA1yVKxB9Q5vkFzGCAKHz/sz15jHaCfl2N6+syILudEuBRO
zWh2hybLXR9MqBqnSD+7HUu7CzO6JXCKDCmUuLmmknQI8arVmrWYILFVUP6osxGh
P3/KflX98GWAdYKujXItkpOqjXi5WUZqiyeFHUroxyZK2SRUXxvEN8mqolmcpkP9
vgmr7V9ehWwUmwh3KIXZc2bRaEwmW3j0D4Ro/x9VepebAMAV1nMH/JFuKtnVxJHH
jwoiYYxDc0Wzx1eUesOXR1ucE0zYfpBr8XRnXckECQKBgQDyGU6i32Ar+UYWW/Z9
/HXvkSaUn/B29dgMvck9QfC1i8xHWd6scCrxixV0MKDMZqgKS4maNaIKyKfMTYmp
uOCKtcFPkQX3cauTmEXDthpZ77ABFgP/A4RqssKC448fpVSwJq2olEAI/o+2DNDv
TH0vzq8RU6BBsgJ9VV560J0YBQKBgQDBnab37Ya3szoB/wXBGehJWI5gBvPd1sQ3
T1pLU8jl1IrEfApYWahSVSawTbkCtcYhH2yhZ72QE1kSoaMuWDXsGQzUiTw0gCub
WVqXmPLJjpvQrLTl4QbLve6F80dHDGJn4SzX6LxTK1GNBWu2IwO7Ll6kadJEjjiA
fkkfvm/cqQKBgB7pfFDvlKgIvBo+w8pyYdyk+/geM+X8ngmCch+QO9vybbLulrAN
4m3VBHhBfUacFPi7jGZUUsxtsn8zp1A0evc7HeO68LgXm4DNAJtstRCmuiJpXTlC
ibXV/WAZDj1MLvQO/D16MHL1jgQAvuzPJ2zjRxc/RkcdI5Q9QkMMQALBAoGAWTI3
6aAToC2BW8oQ7JTy3lddv/9z+Y8ndhOolWtT8g2ooDxEx88GLGfuGuqzgPwc+sVv
VixkuCsxrdOpSYB51vrzXjaa9dTWQgs4IP7lWtXIEqp97Clu6A3oBO2+uIyMCS9D
aXRezjH2r/D/XjljTqheEYBuzgZ3ITsMlQM2pYECgYEAz6gIBi3jENhpGgAUcigw
b2nrnD3fKR2B7ILK05sx5FpjMH6XIT0QHR/1YL1nTkJtvngsbVBXvf4fp68TNjWB
EGgWHrwR/eL9CnsEzV3NZDVRS4EVFtAy/MlRsGESnNfxt9kTIwrbTBsMhTzxQuHf
0iCJp2zxecqB+toYG4dOPm4=
-----END PRIVATE KEY-----
',1.79645652075645208354e+09,NULL);
CREATE TABLE repositories (
	id INTEGER NOT NULL, 
	registry_id INTEGER NOT NULL, 
	name VARCHAR(256) NOT NULL, 
	created FLOAT NOT NULL, 
	updated FLOAT NOT NULL, 
	delete_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	write_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	read_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	list_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_repositories_name UNIQUE (registry_id, name), 
	FOREIGN KEY(registry_id) REFERENCES registries (id) ON DELETE CASCADE
);
INSERT INTO "repositories" VALUES(1,1,'legacy/app',1.79645652268081736568e+09,1.79645652269650101659e+09,1,1,1,1);
CREATE TABLE repository_blobs (
	repository_id INTEGER NOT NULL, 
	digest VARCHAR(200) NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (repository_id, digest), 
	FOREIGN KEY(repository_id) REFERENCES repositories (id) ON DELETE CASCADE, 
	FOREIGN KEY(digest) REFERENCES blobs (digest)
);
INSERT INTO "repository_blobs" VALUES(1,'sha256:be7607433becf9744c82f4f208f3b66d5c3cf87794294cc6ce67c4418ada87fc',1.79645652268081736568e+09);
INSERT INTO "repository_blobs" VALUES(1,'sha256:f79271197d8d1ce42e963307bc30562299a1da79e5dd6d31c3cf0ea896d7d078',1.79645652269160866734e+09);
CREATE TABLE service_principal_properties (
	object_id VARCHAR(36) NOT NULL, 
	properties TEXT NOT NULL, 
	PRIMARY KEY (object_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE signing_keys (
	kid VARCHAR(64) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	private_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	retired FLOAT, 
	PRIMARY KEY (kid), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
INSERT INTO "signing_keys" VALUES('WsxZgPFsLnLgB4TzfSseR4r17TA','1da45f66-7601-4016-a5b8-d59c756c1153','-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQClM+rn3/MKGs4K
qxEq38DiK3u8XXCz5wHSGerrqU5NzfXYov8w5jNpACeMsZasObXOIX7CEkCvG+gb
U8s9oha8IYoNsBIUZh68bYqsCAMr8DU/3v2/GnD/ln2Cx1TaA/W8p40ZB7jKCRqm
L96OHago5ooo8HwBTOhlyXVcUR8vqIk86VV7lAP+Fd9CZnGGstSuxdwpl2X9PGTz
cttbQyzJJN7mBOaFWmN0UQGHn/lxSrdp0cr+/8yyxDg7xFdLQjACZU+o667UfQ8g
VjZqzv8nIpI20YDNc0dt0YuVNyF8hApMv7n0Mq+B0PPPT5+ZDQGHkrM8HnBNnDCN
icv8BMWLAgMBAAECggEASFKxTS/iw5K2jz8S9fUdCSbGNdGmbGv+hQ9ppB/rsu4u
6dd55ttwuFAkAFkiwGVHbWWGi8nX3ZFXDNejS2kxkM0SFin10E5guFcwdV3QnaS8
eyjRZ59YxtwIOH+xavx+0Ud84u9Ze8F+lDCyuv7KxpUe+QtHDn6v4xfONEsjXwYy
BtgWNPb9GaZLejICtOJZGgH9h5KEn+1hcOjwO6Hw274ddLnHcjp+ZRltlZz8rsrp
w/T7GT7ktkD4nvcT7hTtZWy+w0KXIjuP1FkeRxwUXwbxmniBNo+joBJgF7Bple4q
Tb5E/B67JjDiHIQczrO9sJbsMnApATED5zfUwt7DCQKBgQDceLhqYhlDxyZYv+io
6IiPr5u7LZmfHuqCFsmcvFzO2hArxus9K2AQoT07jHG7lHwLOyz81qZy9ydggHsX
bQBDUv/tUjk4fTU4EvA4Vy/ok9hQiSRtqyfun7DNaHbf2ONKaMNzgVtzcq6qOWbV
ZemkvGDMggZ6JqzQc1rChFeN1QKBgQC/0ydDel5wTC1OBmG5B+g0zs/V7ktriDmf
R3ZCXz57k+sVJ/nnfSI2D751LV2QliJxRF0hDA4rJ7/LO0Q6Gkyi6xruilRTH/Hs
V7TvQQsjJXwqDnNEhTHDk4hlW6u2yB1qNQQTdgdX2pjXEZEDx4IU+Oi/DbasgFcF
KRP5iMbV3wKBgQCg6fdnpgvcnUkOs5sDVRz/CmP2nNSn/6+XnTwvioeObjgpS3k8
XyExYg3IHbyQ9VIH/HvcWmqINH3oAD5XHbZ4bObgdwfOhAxIzgHIjVIpRWc3eLE+
3hI6JxGrCljhDnLuR0KIVlzCCW0UTusQS97Y3qkj+q7xjrLJPbh7io5AtQKBgQCV
aPw+HMQOJ+dpzKK1IimFaEiN0uu/t/1ZyKmeDN14F8CVW+vUmKza+uxYDJvCEI6H
Nr5rDR7EElPbEjCUKQPkKcdyYSBJFqqycaYmbL0mBP5vK44woqYeNX2ZpQtcdQYk
QWMJXXdewI8nhTE0hmMVvsJafW35coVVKae7RwPIdQKBgGm7wlNHw3SYmghMhD9x
+9C0yhqZ82iN3r10vV46ppFiO68SqpMgo7aw80K33KypFo33UmejcpDpBOo1gmaZ
8Hj0NYTP3eSSDHtub9+IN7h3uDmb04g74KwKNwWfNrZQWkR+S6jyv4frY1fmToTO
puS4kkseQ8mci7AQnVR6DnDA
-----END PRIVATE KEY-----
',1.79645652107337403294e+09,NULL);
CREATE TABLE subscriptions (
	id VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	state VARCHAR(32) NOT NULL, 
	is_default BOOLEAN NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
INSERT INTO "subscriptions" VALUES('bb2dca8f-556f-4c67-8f4e-596cce03cad4','1da45f66-7601-4016-a5b8-d59c756c1153','acrlocal','Enabled',1,1.7964565206558582782e+09);
CREATE TABLE tags (
	id INTEGER NOT NULL, 
	repository_id INTEGER NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	manifest_id INTEGER NOT NULL, 
	created FLOAT NOT NULL, 
	updated FLOAT NOT NULL, 
	delete_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	write_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	read_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	list_enabled BOOLEAN DEFAULT 1 NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_tags_name UNIQUE (repository_id, name), 
	FOREIGN KEY(repository_id) REFERENCES repositories (id) ON DELETE CASCADE, 
	FOREIGN KEY(manifest_id) REFERENCES manifests (id) ON DELETE CASCADE
);
INSERT INTO "tags" VALUES(1,1,'v1',1,1.79645652269650101659e+09,1.79645652269650101659e+09,1,1,1,1);
CREATE TABLE tenants (
	id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	is_default BOOLEAN NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "tenants" VALUES('1da45f66-7601-4016-a5b8-d59c756c1153','acrlocal',1,1.79645652065372443198e+09);
CREATE TABLE upload_sessions (
	id VARCHAR(64) NOT NULL, 
	registry_id INTEGER NOT NULL, 
	repository VARCHAR(256) NOT NULL, 
	principal VARCHAR(200), 
	created FLOAT NOT NULL, 
	updated FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(registry_id) REFERENCES registries (id) ON DELETE CASCADE
);
CREATE TABLE user_refresh_tokens (
	token_sha256 VARCHAR(64) NOT NULL, 
	object_id VARCHAR(36) NOT NULL, 
	client_id VARCHAR(36) NOT NULL, 
	created FLOAT NOT NULL, 
	expires FLOAT NOT NULL, 
	PRIMARY KEY (token_sha256), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
CREATE TABLE users (
	object_id VARCHAR(36) NOT NULL, 
	upn_key VARCHAR(256) NOT NULL, 
	user_principal_name VARCHAR(256) NOT NULL, 
	password_hash VARCHAR(256), 
	password_changed FLOAT, 
	force_change BOOLEAN NOT NULL, 
	account_enabled BOOLEAN NOT NULL, 
	properties TEXT NOT NULL, 
	PRIMARY KEY (object_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE, 
	UNIQUE (upn_key)
);
INSERT INTO "users" VALUES('41067ab0-0851-4aca-8517-92dd697846c9','admin@acrlocal.localhost','admin@acrlocal.localhost','scrypt$16384$8$1$IkKTusFj0XsiU9R4fHW2Dw==$1GLTS+gZPnxYz9m6Unio6WTIbQgssokm5WOqPjYHS0M=',1.79645652071679115297e+09,0,1,'{"mailNickname": "admin"}');
CREATE TABLE vms (
	vm_id VARCHAR(36) NOT NULL, 
	"key" VARCHAR(1024) NOT NULL, 
	resource_id VARCHAR(1024) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	resource_group VARCHAR(90) NOT NULL, 
	subscription_id VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	location VARCHAR(64) NOT NULL, 
	system_principal_id VARCHAR(36), 
	user_assigned TEXT NOT NULL, 
	profile TEXT NOT NULL, 
	imds_port INTEGER, 
	identity_secret VARCHAR(64) NOT NULL, 
	created FLOAT NOT NULL, 
	power_state VARCHAR(16) DEFAULT 'running' NOT NULL, 
	PRIMARY KEY (vm_id), 
	UNIQUE ("key"), 
	UNIQUE (imds_port)
);
CREATE INDEX ix_arm_resources_parent ON arm_resources (parent_key);
CREATE INDEX ix_arm_resources_group ON arm_resources (subscription_id, group_key);
CREATE INDEX ix_arm_resources_type ON arm_resources (type_key, name);
CREATE INDEX ix_arm_deployments_scope ON arm_deployments (subscription_id, group_key);
CREATE INDEX ix_arm_role_assignments_scope ON arm_role_assignments (scope_key);
CREATE INDEX ix_arm_role_assignments_principal ON arm_role_assignments (principal_id);
CREATE INDEX ix_audit_login_registry_time ON audit_login_events (registry, time);
CREATE INDEX ix_audit_repository_registry_time ON audit_repository_events (registry, time);
CREATE INDEX ix_upload_sessions_updated ON upload_sessions (updated);
CREATE INDEX ix_applications_tenant ON applications (tenant_id);
CREATE INDEX ix_repository_blobs_digest ON repository_blobs (digest);
CREATE INDEX ix_manifests_subject ON manifests (repository_id, subject);
CREATE INDEX ix_group_members_member ON group_members (member_id);
CREATE INDEX ix_directory_owners_owner ON directory_owners (owner_id);
CREATE INDEX ix_user_refresh_tokens_user ON user_refresh_tokens (object_id);
CREATE INDEX ix_tags_manifest ON tags (manifest_id);
COMMIT;
