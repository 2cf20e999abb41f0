BEGIN TRANSACTION;
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
CREATE TABLE arm_graph_applications (
	id VARCHAR(36) NOT NULL, 
	app_id VARCHAR(36) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	service_principal BOOLEAN NOT NULL, 
	password_credentials TEXT NOT NULL, 
	created VARCHAR(40) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (app_id)
);
INSERT INTO "arm_graph_applications" VALUES('2cd5741a-87c9-457b-bdf6-3ed7af9e7b2a','96d60dea-c298-498a-b600-5e8d1b003cd3','2943129b-d5ac-4349-8ef2-9b1459209a72','legacy-app',0,'[]','2026-12-05T07:42:04Z');
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
INSERT INTO "arm_resource_groups" VALUES('18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','acrlocal','westus','{}',NULL,'{}',1.79645652392915678025e+09);
INSERT INTO "arm_resource_groups" VALUES('18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','legacy-rg','westeurope','{}',NULL,'{"createdBy":"a4151287-a54f-4426-a240-eb112c78f014","createdByType":"Application","createdAt":"2026-12-05T07:42:04.043662Z","lastModifiedBy":"a4151287-a54f-4426-a240-eb112c78f014","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:04.043662Z"}',1.79645652404397416111e+09);
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
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries','Microsoft.ContainerRegistry/registries','acrlocal',NULL,'westus',NULL,'{}','{"name":"Standard","tier":"Standard"}',NULL,'{"adminUserEnabled":false,"anonymousPullEnabled":false,"dataEndpointEnabled":false,"dataEndpointHostNames":[],"publicNetworkAccess":"Enabled","networkRuleBypassOptions":"AzureServices","zoneRedundancy":"Disabled","roleAssignmentMode":"LegacyRegistryPermissions","privateEndpointConnections":[],"encryption":{"status":"disabled"},"policies":{"quarantinePolicy":{"status":"disabled"},"trustPolicy":{"type":"Notary","status":"disabled"},"retentionPolicy":{"days":7,"status":"disabled"},"exportPolicy":{"status":"enabled"},"azureADAuthenticationAsArmPolicy":{"status":"enabled"}},"creationDate":"2026-12-05T07:42:03.918733Z"}','{}','{"adminPasswords":{"password":"hm6_jt2rhqAEFIrijFfpjUBzCRdUr4pwwjNnOiXXTzRiL5DpKBL9","password2":"2Ea5lYSIty43IkrmiibGoNhrN54E-M16OEwVbActj2z4et-CGbLt"}}','{"createdBy":"acrlocal","createdByType":"Application","createdAt":"2026-12-05T07:42:03.930150Z","lastModifiedBy":"acrlocal","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:03.930150Z"}',1.79645652393067359929e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_pull','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_pull','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can pull any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:03.935371Z","actions":["repositories/*/content/read"]}','{}','{}','{}',1.79645652393562102315e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_pull_metadata_read','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_pull_metadata_read','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull_metadata_read','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:03.936297Z","actions":["repositories/*/content/read","repositories/*/metadata/read"]}','{}','{}','{}',1.79645652393653583521e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_push','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_push','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can push to any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:03.937178Z","actions":["repositories/*/content/read","repositories/*/content/write"]}','{}','{}','{}',1.79645652393743515012e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_push_metadata_write','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_push_metadata_write','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push_metadata_write','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read and write operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:03.938069Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652393830037121e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal/scopemaps/_repositories_admin','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal/scopeMaps/_repositories_admin','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','acrlocal','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_admin','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/acrlocal/providers/microsoft.containerregistry/registries/acrlocal',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read, write and delete operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:03.939034Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/content/delete","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652393928098675e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.managedidentity/userassignedidentities/legacy-id','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-id','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.managedidentity/userassignedidentities','Microsoft.ManagedIdentity/userAssignedIdentities','legacy-id',NULL,'westeurope',NULL,'{}',NULL,NULL,'{"isolationScope":"None","tenantId":"2943129b-d5ac-4349-8ef2-9b1459209a72","principalId":"b3259480-7691-423a-8dc8-f841f5dd0ba7","clientId":"efdb4cf4-db8d-48cd-a237-d66171e70fd1"}','{}','{"principalId":"b3259480-7691-423a-8dc8-f841f5dd0ba7"}','{"createdBy":"a4151287-a54f-4426-a240-eb112c78f014","createdByType":"Application","createdAt":"2026-12-05T07:42:04.048649Z","lastModifiedBy":"a4151287-a54f-4426-a240-eb112c78f014","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:04.048649Z"}',1.79645652405063247685e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_pull','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_pull','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can pull any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:04.063356Z","actions":["repositories/*/content/read"]}','{}','{}','{}',1.79645652406362605095e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_pull_metadata_read','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_pull_metadata_read','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_pull_metadata_read','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:04.064368Z","actions":["repositories/*/content/read","repositories/*/metadata/read"]}','{}','{}','{}',1.79645652406463146207e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_push','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_push','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can push to any repository of the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:04.065333Z","actions":["repositories/*/content/read","repositories/*/content/write"]}','{}','{}','{}',1.79645652406556653973e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_push_metadata_write','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_push_metadata_write','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_push_metadata_write','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read and write operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:04.066606Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652406697440154e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg/scopemaps/_repositories_admin','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg/scopeMaps/_repositories_admin','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries/scopemaps','Microsoft.ContainerRegistry/registries/scopeMaps','_repositories_admin','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg',NULL,NULL,'{}',NULL,NULL,'{"description":"Can perform all read, write and delete operations on the registry","type":"SystemDefined","creationDate":"2026-12-05T07:42:04.068038Z","actions":["repositories/*/content/read","repositories/*/content/write","repositories/*/content/delete","repositories/*/metadata/read","repositories/*/metadata/write"]}','{}','{}','{}',1.79645652406833887101e+09);
INSERT INTO "arm_resources" VALUES('/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg','18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','legacy-rg','microsoft.containerregistry/registries','Microsoft.ContainerRegistry/registries','legacyreg',NULL,'westeurope',NULL,'{}','{"name":"Standard","tier":"Standard"}',NULL,'{"adminUserEnabled":false,"anonymousPullEnabled":false,"dataEndpointEnabled":false,"dataEndpointHostNames":[],"publicNetworkAccess":"Enabled","networkRuleBypassOptions":"AzureServices","zoneRedundancy":"Disabled","roleAssignmentMode":"LegacyRegistryPermissions","privateEndpointConnections":[],"encryption":{"status":"disabled"},"policies":{"quarantinePolicy":{"status":"disabled"},"trustPolicy":{"type":"Notary","status":"disabled"},"retentionPolicy":{"days":7,"status":"disabled"},"exportPolicy":{"status":"enabled"},"azureADAuthenticationAsArmPolicy":{"status":"enabled"}},"creationDate":"2026-12-05T07:42:04.056114Z"}','{}','{"adminPasswords":{"password":"eXAkUi1FhWsq2oLMlakJT15oM3U-eFTcfpG0RJ7K-oLgbsF-DUt0","password2":"PGI0L4a7NzMJ2-8HwjQeMI0L1nPXZkuXHTmsRJsA3YIfUbkF4j1x"}}','{"createdBy":"a4151287-a54f-4426-a240-eb112c78f014","createdByType":"Application","createdAt":"2026-12-05T07:42:04.055461Z","lastModifiedBy":"a4151287-a54f-4426-a240-eb112c78f014","lastModifiedByType":"Application","lastModifiedAt":"2026-12-05T07:42:04.055461Z"}',1.79645652406909513468e+09);
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
INSERT INTO "arm_role_assignments" VALUES('2495be64-5d63-58c8-bc78-5b8e6e5769cb','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','8e3af657-a8ff-443c-a75c-2fe8c4bcb635','30100ba7-bedc-4f13-b63d-e0d589146276','ServicePrincipal','acrlocal administrator',NULL,NULL,'2026-12-05T07:42:03.910553Z','2026-12-05T07:42:03.910553Z',NULL,NULL);
INSERT INTO "arm_role_assignments" VALUES('0df40846-909d-44b2-9627-5f9b9cf5a68f','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourcegroups/legacy-rg/providers/microsoft.containerregistry/registries/legacyreg','7f951dda-4ed3-4680-a7ca-43fe172d538d','b3259480-7691-423a-8dc8-f841f5dd0ba7','ServicePrincipal',NULL,NULL,NULL,'2026-12-05T07:42:04.075555Z','2026-12-05T07:42:04.075555Z','30100ba7-bedc-4f13-b63d-e0d589146276','30100ba7-bedc-4f13-b63d-e0d589146276');
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
INSERT INTO "audit_login_events" VALUES(1,1.79645652522842383383e+09,'acrlocal','30100ba7-bedc-4f13-b63d-e0d589146276','principal','Login','Success','refresh token issued','127.0.0.1',NULL);
INSERT INTO "audit_login_events" VALUES(2,1.79645652524528717992e+09,'acrlocal','30100ba7-bedc-4f13-b63d-e0d589146276','principal','Login','Success',NULL,'127.0.0.1',NULL);
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
INSERT INTO "audit_repository_events" VALUES(1,1.79645652523544955255e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(2,1.79645652525762176509e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(3,1.79645652526393389703e+09,'acrlocal',NULL,NULL,'Push','legacy/app',NULL,NULL,NULL,NULL,'Denied','no bearer token','127.0.0.1',NULL);
INSERT INTO "audit_repository_events" VALUES(4,1.79645652527035140991e+09,'acrlocal','30100ba7-bedc-4f13-b63d-e0d589146276','principal','Push','legacy/app','v1','sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7','application/vnd.oci.image.manifest.v1+json',473,'Success',NULL,'127.0.0.1','python-requests/2.34.2');
CREATE TABLE blobs (
	digest VARCHAR(200) NOT NULL, 
	size BIGINT NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
INSERT INTO "blobs" VALUES('sha256:be7607433becf9744c82f4f208f3b66d5c3cf87794294cc6ce67c4418ada87fc',100,1.79645652525142765043e+09);
INSERT INTO "blobs" VALUES('sha256:f79271197d8d1ce42e963307bc30562299a1da79e5dd6d31c3cf0ea896d7d078',10240,1.79645652526033163072e+09);
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
INSERT INTO "manifests" VALUES(1,1,'sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7','application/vnd.oci.image.manifest.v1+json','application/vnd.oci.image.config.v1+json',NULL,NULL,473,X'7B0A202022736368656D6156657273696F6E223A20322C0A2020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E6D616E69666573742E76312B6A736F6E222C0A202022636F6E666967223A207B0A20202020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E636F6E6669672E76312B6A736F6E222C0A2020202022646967657374223A20227368613235363A62653736303734333362656366393734346338326634663230386633623636643563336366383737393432393463633663653637633434313861646138376663222C0A202020202273697A65223A203130300A20207D2C0A2020226C6179657273223A205B0A202020207B0A202020202020226D6564696154797065223A20226170706C69636174696F6E2F766E642E6F63692E696D6167652E6C617965722E76312E746172222C0A20202020202022646967657374223A20227368613235363A66373932373131393764386431636534326539363333303762633330353632323939613164613739653564643664333163336366306561383936643764303738222C0A2020202020202273697A65223A2031303234300A202020207D0A20205D0A7D',1.79645652526542615894e+09,1.79645652526542615894e+09,1,1,1,1);
CREATE TABLE principal_certificates (
	key_id VARCHAR(36) NOT NULL, 
	object_id VARCHAR(36) NOT NULL, 
	thumbprint_sha1 VARCHAR(40) NOT NULL, 
	thumbprint_sha256 VARCHAR(64) NOT NULL, 
	certificate_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
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
	PRIMARY KEY (key_id), 
	FOREIGN KEY(object_id) REFERENCES principals (object_id) ON DELETE CASCADE
);
INSERT INTO "principal_secrets" VALUES('2408797d-5039-4b00-b718-9a9630dd194a','30100ba7-bedc-4f13-b63d-e0d589146276','acrlocal CLI','7de015f14f4e88a9b9a894ccdb19dd274e724cc4eadb91be01c757327be6af02','pre',1.7964565238025176525e+09,NULL);
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
INSERT INTO "principals" VALUES('30100ba7-bedc-4f13-b63d-e0d589146276','2943129b-d5ac-4349-8ef2-9b1459209a72','ServicePrincipal','a4151287-a54f-4426-a240-eb112c78f014','acrlocal-admin',NULL,NULL,1.7964565238005905151e+09);
INSERT INTO "principals" VALUES('b3259480-7691-423a-8dc8-f841f5dd0ba7','2943129b-d5ac-4349-8ef2-9b1459209a72','ManagedIdentity','efdb4cf4-db8d-48cd-a237-d66171e70fd1','legacy-id','/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-id','user',1.79645652404993200297e+09);
INSERT INTO "principals" VALUES('814002ac-cdfe-4b78-9f1b-0f381d58521d','2943129b-d5ac-4349-8ef2-9b1459209a72','ServicePrincipal','96d60dea-c298-498a-b600-5e8d1b003cd3','legacy-app',NULL,NULL,1.79645652408942151068e+09);
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
INSERT INTO "registries" VALUES(1,'acrlocal',43171,1.79645652391873311996e+09,'{"sku": "Standard", "resourceId": "/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal", "adminUserEnabled": false, "anonymousPullEnabled": false, "roleAssignmentMode": "LegacyRegistryPermissions", "azureADAuthenticationAsArmPolicy": "enabled"}');
INSERT INTO "registries" VALUES(2,'legacyreg',43175,1.79645652405611395835e+09,'{"sku": "Standard", "resourceId": "/subscriptions/18ac0a99-2d39-4fdc-8fb0-9480e91e4d59/resourceGroups/legacy-rg/providers/Microsoft.ContainerRegistry/registries/legacyreg", "adminUserEnabled": false, "anonymousPullEnabled": false, "roleAssignmentMode": "LegacyRegistryPermissions", "azureADAuthenticationAsArmPolicy": "enabled"}');
CREATE TABLE registry_token_keys (
	kid VARCHAR(64) NOT NULL, 
	private_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	retired FLOAT, 
	PRIMARY KEY (kid)
);
INSERT INTO "registry_token_keys" VALUES('IMKG33TI32VJGCJ6L3DAPB5QPTT7T5KL','-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDIKAMZMELzJD0u
GlLM1bQT7LNSUwWN0cCKiqnJ0FZ2dEj9xR3ndQV5dkutaAJZNgtqEin+X2PjIxdo
u5w56c/em0gXaMPyovZyiHjXGwIOD4FbS2+kS4aGlfulK5XkGtwNGVmQ4qEzwQgH
CvESX/BggaAx4f8gNh1xneUl4O3lUvvO01Kdb6I8Xem08iDuSRg1qDF+/ml8mDTS
xfpF5oGHjAyV0P6LRLMO8+fuiBivln0iT52oytKyGZ95CDlq3YJW/0HCiJHWwk4O
A011TdU5m9qx7Q4UZjBJkLMeQyc6AYw/n529kgXheieMh6SgauGRJeGSz3chI+tC
oYjlUEBhAgMBAAECggEAFM68C7lNrHMe/RT1eJ/auZuIxM0mraiZiI2DuxwycNwD
3oXIZxBuQkM++MbwP4/zvdInlW8bNjimrVeblRWua2jfJLfabvXsAtoXHd2L6CRK
gVAlSgIj+QfMgk42peD48U+qVPqKYZP2nqzPhOZ+WboACk+BMzsM8ovEj5yDfqxj
ujuZgKyO5yQsVA1AHh6I3DCJ1fU84x0K19ELKTDJ6WZvA/tb3M55DG0ySTag58fa
eU7Oxh6IV6qfM07e/ae2zqy84/81LWtmhDiWqW4QGBuHdmmt205JzVHEdlI0Nav7
RZOx0E/kjIxiXMTgezfUE7+Ik3d72jp1Hc1T3OMEcQKBgQDj/raXLK8nmKGi0iR5
AV3ypQ6CLzU7LlPZokVkwsNYQuZL40vWRDchLPdObxtC5W09nZ0XtDxM7CrHKRLB
JnEbCTuwiDoehyeO8QFZuberY9WTzAmAqoy9PQ19YtXTuDCA2H/zwgGFFIgHTI3Q
DoIJTZrPPrv0p6VBT9xJrXo6NQKBgQDgvendgskjI2ApkZ5+IL9ykRyFUkz2h+j5
kwdeAT3fk3eh3rtr+10o3SFb5YUt7QCepxsN8Vnv/aiL9k07+hK7Tq7N9ZPiBYWh
tMUfSCDVeOcYpSQ1kCuykNTBnxH/mzXSyyZzT3sgx3/5zgBSSwfyK0jG1vxtLiUS
UpIVA1kS/QKBgAWKtnN8QZGr0xn7E6nhT6BLRMwDS77xhFZA7IDjfw4RKjnj/37o
z5I93pEIgFgi7YHW5++gkOqpvuxyYiNRxOQMWGgVF5yQWnTOBONicUV4OsPJ7N00
yBD9f+txUJNB4ePv30RUjebnNds/kB7ji2OggEfTVYw/2vN4dnlP/y2VAoGAP3jD
bOD8B2V9SiArP/nlt+iNwoV84P9/Z8UDhqQZImSWm+u4yQVjyR+yxS5sT40o6KXP
OT/Zo7LjACxeobq9wZK2QcrCqkne9M2GApCvXTrZIZe6QzplbPgEbm6LecIPEGp5
gIWJA7f0R8vLQXKZWuaolievgPJQW/1f7nlUlc0CgYB7z7tU1gcJzNaAgYru2eaG
Gyr7gxVODDwlZ9dmXLb+siBwGo8bVB5k5Rh2WQj4ch0jb0DCqPWTTX59BrGeYHJq
j8zN3pWZwVt6MoUCcdkkxflmciB9lNBYBfIhYaPVOAuiUwWf5FcvaIm6YLj/srn4
BeoUZcS4CT5f/WpW6n6p5Q==
-----END PRIVATE KEY-----
',1.79645652381954789157e+09,NULL);
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
INSERT INTO "repositories" VALUES(1,1,'legacy/app',1.79645652525142765043e+09,1.79645652526542615894e+09,1,1,1,1);
CREATE TABLE repository_blobs (
	repository_id INTEGER NOT NULL, 
	digest VARCHAR(200) NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (repository_id, digest), 
	FOREIGN KEY(repository_id) REFERENCES repositories (id) ON DELETE CASCADE, 
	FOREIGN KEY(digest) REFERENCES blobs (digest)
);
INSERT INTO "repository_blobs" VALUES(1,'sha256:be7607433becf9744c82f4f208f3b66d5c3cf87794294cc6ce67c4418ada87fc',1.79645652525142765043e+09);
INSERT INTO "repository_blobs" VALUES(1,'sha256:f79271197d8d1ce42e963307bc30562299a1da79e5dd6d31c3cf0ea896d7d078',1.79645652526033163072e+09);
CREATE TABLE signing_keys (
	kid VARCHAR(64) NOT NULL, 
	tenant_id VARCHAR(36) NOT NULL, 
	private_pem TEXT NOT NULL, 
	created FLOAT NOT NULL, 
	retired FLOAT, 
	PRIMARY KEY (kid), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
INSERT INTO "signing_keys" VALUES('M6RTxJLrawTVFyH1xiKDYKUzTIM','2943129b-d5ac-4349-8ef2-9b1459209a72','-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDMPfrqlP5M1acO
eehtYoX5vTa7vQbr14JGtjiFdcmAkkNxS2V+Kl14P1Or5LYduHklILZAqD119FGM
DEPsTtXpZ/baREVAsdTlBG736rWXXULYDnPax8vpAFNg141Iuim7ZMxh5rfj1YjN
3nwO6AanR6tZEVuvrHW9R0VsyHIP3Uh3tmR7S3P5fd/Z7btAb1tiLQ0cDzvR7PGp
wNqSaBiQYUpqSnyR7nJIEzkEONk4eJGaBTgEphvWI7qmj8kWcXkd0fSQfQobmnnX
F+NdMB6yVwLToVsj++2EN4fUSsgHlbuPgM6P6nxxzodMl5wEZAJunJwoTIQb4YgA
Cd+4utNvAgMBAAECggEASXnuv9+0EL44KEwRIvDz0+GPRED/sW7Jblj1woWaZUe5
PZPrQlVJZQ4bMtbH8a9A3euDxYUA/2NSxvhOoz/FUv/U3bb71wdi2LUcmtH0XCzv
9DxWz5lbMUqttEQ3jrdydfkQUhQnia5zVeS5ar9sTVfKO/OzsWJwxRRT1IvUBQJp
BOEjt7XmM+H27oTATUaYlvxymeJeEjP0gbyNY1pQgEx+XajfvvV/MdrjQajZg/d5
lEQ3U150JSrE1+OohQokyUhk/vbxfcyZu/DaDSBfXWiudxXqvQiXo5yKR+9isIiH
gOcjP0GzJgvpbzhlrh6qTliUxwkmeUEzUvEjPPmIcQKBgQDswOPvmlsQBRtQCljX
O5Is9eY6NRAcnBaNcG0epiF3t9bMVLEzcfKrpDJTHGyBuQfIsg3fSdJ1dgImRBuh
dlQcgXq9mz75scUPkp/NN/nNiq+imjwXWKV06KoNC3q87fvgHJABw1FO/WSIfYAS
cFqoKeOh+3uHO/P871wguTeZlwKBgQDc2H28U4Gg5zZfHkBlN/D6HQuN5Vizg5o6
8eyJtJ7tbot79yOthSq8O/zmVXaYDQTGIReydxMySRSaqgvTiICKff2RU1bAFqNr
PSIwSrCE128h8ex+JVuyiHZXobz7EEWFveXHB4D4eGMuoFbMJK7/jKW/DqSEwjlN
6T+GMAdf6QKBgAjzqiqvHW5Xoxa9rWpF+Fr22UOuKfPK+xdR/u4/vdg2/UowkZqu
XkybIsP9uSSWiHLQOLIOqoSCd8ZWoOzT+o4xXyC4NANg82CJXL13tlxNOCLfzhHb
6jWnbnabzoJCRVnN+qv2ZKal8h0vEZ6g3Oyq2M6RIbSVUb5oloUuO6n1AoGAPsyh
FIh6eBLHd0zW6vF5aOYRfwwUqRdnKBPbO11NRB8HMv0X/CO9/0DfrW/oBVzOWrjW
UD1kDAyT+1cXfdN3GeqxzD1ykbTeS4Ra0HissVnBlFmC8mwVIzOC03B+mLYLzvgs
+ue7WOyC56NYizxzNt/70dSMG+RO/0Swd6v4rOECgYEAnJGeA6F781DVZixfF9bG
e2IQjxlt3PZSVD3DHNJUo4SynqtkNjc1iAiVkwqEMsBEdJB7ZuMQNq70i91AmXP+
hZo5xTdhMuAa5CTLsPbnYyldBpIv4jYUmIEsAoPCZ9gp+sZ9roUZyTWL9dFh492N
cTlRMmln9SEf9MpZKD5to3A=
-----END PRIVATE KEY-----
',1.79645652398654294013e+09,NULL);
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
INSERT INTO "subscriptions" VALUES('18ac0a99-2d39-4fdc-8fb0-9480e91e4d59','2943129b-d5ac-4349-8ef2-9b1459209a72','acrlocal','Enabled',1,1.79645652379842281345e+09);
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
INSERT INTO "tags" VALUES(1,1,'v1',1,1.79645652526542615894e+09,1.79645652526542615894e+09,1,1,1,1);
CREATE TABLE tenants (
	id VARCHAR(36) NOT NULL, 
	display_name VARCHAR(256) NOT NULL, 
	is_default BOOLEAN NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "tenants" VALUES('2943129b-d5ac-4349-8ef2-9b1459209a72','acrlocal',1,1.79645652379605126388e+09);
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
CREATE INDEX ix_repository_blobs_digest ON repository_blobs (digest);
CREATE INDEX ix_manifests_subject ON manifests (repository_id, subject);
CREATE INDEX ix_tags_manifest ON tags (manifest_id);
COMMIT;
