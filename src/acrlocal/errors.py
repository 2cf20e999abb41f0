"""One exception hierarchy for the whole package.

Every exception acrlocal defines derives from :class:`AcrLocalError` and, where there is one, from the builtin
it means (``ValueError`` for bad input, ``LookupError`` for a missing thing, ...), so callers that only know
Python still catch them sensibly. Messages name the offending value and what was expected. Module paths are
relative to ``acrlocal``::

    AcrLocalError                                   base of everything raised on purpose
    ├── ConfigError(ValueError)                     a setting, flag, data directory or sandbox description
    │   ├── storage.schema.SchemaError              a database that cannot be migrated to this code's schema
    │   └── storage.copy.TargetNotEmpty             a database to copy into that already has rows
    ├── AlreadyExists(ValueError)                   a name is taken
    │   └── identity.directory.IssuerAndSubjectTaken  another federated credential of the principal has them
    ├── ValueTooLong(ValueError)                    a value longer than the column that keeps it (checked before
    │                                               the database sees it)
    ├── LimitReached(OSError)                       a limit of this machine or of the server (free ports, open
    │                                               files) stops a new thing from being made
    ├── NotFound(LookupError)                       a named thing does not exist
    │   ├── rbac.errors.UnknownRole                 no role definition has that id or name
    │   └── registry.permissions.SubjectRefused     a subject that cannot hold tokens for this registry now
    ├── inbound.MalformedRequest(ValueError)        a header, form or JSON body that cannot be read (not ASCII, not
    │   │                                           UTF-8, not JSON, nested too deeply); each room answers it
    │   ├── inbound.RequestTooLarge                 a body past the endpoint's limit (413)
    │   └── inbound.ClientTooSlow                   a request body that stopped arriving (408)
    ├── storage.metadata.UnknownReferences(LookupError)  a manifest names content its repository lacks
    ├── storage.artifacts.Blocked(PermissionError)  a deletion refused by a lock
    ├── storage.metadata.ManifestInUse(PermissionError)  a manifest delete refused: an index of its repository names it
    ├── identity.directory.DefaultTenantKept(PermissionError)  a deletion of the server's default tenant
    ├── identity.directory.TenantNotEmpty(PermissionError)  a tenant deletion refused: the tenant still holds things
    ├── storage.sql.LockLost                        an advisory lock lost with its cut connection; an SQLAlchemy
    │                                               OperationalError, so the protocols answer their 503
    ├── storage.blobs.DigestMismatch(ValueError)    uploaded bytes do not hash to the digest given
    ├── storage.blobs.UploadTooLarge(ValueError)    an upload past its allowed size
    ├── storage.digest.DigestError(ValueError)      a digest that does not parse or is not supported
    ├── storage.blobs.StorageFull(OSError)          no room on the blob store's disk (below its free-space floor)
    ├── storage.blobs.StorageUnavailable(OSError)   the blob store cannot be reached now (503, Retry-After)
    ├── storage.blobs.UploadRaced(RuntimeError)     another request changed the upload at the same time
    ├── storage.azure_blobs.TokenRefused            the blob store's managed identity gave no token (also azure-core's
    │                                               ClientAuthenticationError, as the SDK's pipeline expects)
    ├── storage.sha256state.StateError(ValueError)  a saved SHA-256 state that does not parse
    ├── identity.tokens.InvalidToken(ValueError)    an Entra token that is not ours, or not valid here and now
    ├── identity.passwords.WeakPassword(ValueError)  a user's password that fails Entra's complexity rule
    ├── registry.token_codec.InvalidRegistryToken(ValueError)  the same for the registry's own tokens
    ├── registry.scopes.InvalidScope(ValueError)    a Docker token scope (``repository:name:pull``) that does not
    │                                               parse; not to be confused with rbac's, for ARM scopes
    ├── registry.scope_maps.InvalidScopeMapAction(ValueError)  a scope map action outside ACR's grammar
    ├── rbac.errors.InvalidScope(ValueError)        an ARM scope that does not parse
    ├── rbac.errors.InvalidCondition(ValueError)    a role assignment condition outside the supported grammar
    ├── rbac.errors.InvalidOperation(ValueError)    an operation to check that is empty or has a wildcard
    ├── arm.templates.errors.TemplateError(ValueError)  a deployment template, its parameters or the request
    │                                               carrying them (ARM's ``InvalidTemplate``...)
    ├── arm.templates.functions.Deferred(LookupError)  a template value known only once resources are deployed
    ├── arm.deployments.NeedsAction(LookupError)   a deployment must run a ``list*()`` action before it evaluates on
    ├── compute.run_command.RunCommandError(ValueError)  a run-command request that cannot run
    ├── compute.run_command.Busy(RuntimeError)      another run-command is running on the VM
    ├── compute.machine.MachineError(RuntimeError)  a VM that cannot start, or a process that cannot start in it
    ├── compute.runtime.VMNotRunning(RuntimeError)  a stopped or deallocated VM asked to run something
    ├── compute.runtime.HostedElsewhere             a VM run by another replica (ARM's 409 there)
    ├── registry.housekeeping.CollectionRunning(RuntimeError) another process's garbage collection did not end in time
    ├── cli.output.QueryError(ValueError)           a ``--query`` that is not JMESPath
    ├── cli.azcloud.MetadataError(ValueError)       ``/metadata/endpoints`` answered no cloud description
    ├── cli.errors.CLIError                         az's ``ERROR: ...`` and exit code (no builtin: any failure)
    │   ├── cli.errors.CLIUsageError(ValueError)    a command line az would reject (exit code 2)
    │   ├── cli.errors.ServerNotRunning(ConnectionError)
    │   ├── cli.errors.AuthenticationFailed(PermissionError)
    │   ├── cli.errors.HttpResponseError            a server's error answer, in az's words
    │   │   └── cli.errors.ResourceNotFound(NotFound)    a 404 (``show`` exits with 3)
    │   └── cli.credhelper.NotFoundError(LookupError)    the credential-helper protocol's "no credentials"
    └── ProtocolError                               a request that a wire protocol answers with an error body;
        │                                           no builtin: its status says what it means
        ├── registry.errors.RegistryError           OCI ``{"errors": [...]}``
        ├── identity.errors.OAuthError              Entra ``{"error", "error_description", ...}``
        ├── identity.imds.IdentityError             IMDS ``{"error", "error_description"}``
        ├── arm.errors.ArmError                     ARM ``{"error": {"code", "message"}}``
        └── arm.graph.errors.GraphError             Microsoft Graph ``{"error": {"code", "message", ...}}``

Each room's HTTP layer renders its own :class:`ProtocolError` subclass; handlers catch the domain errors they
expect and answer them in their protocol's format.

One class is not an error but a signal, a :class:`BaseException` as :class:`GeneratorExit` is, so that no ``except
Exception`` on its way takes it for one; it never leaves the function that raises it and the one that catches it::

    storage.sql.NeedsDatabase(BaseException)       a call tried on the event loop asked for a connection: it runs
                                                    again in the SQL thread (``SqlThread.run``)

``tests/test_errors.py`` checks that these drawings name every exception class the package defines, with the
builtin it derives from.
"""

from __future__ import annotations


class AcrLocalError(Exception):
    """Base class of every error acrlocal raises on purpose."""


class ConfigError(AcrLocalError, ValueError):
    """A setting, flag or data directory that cannot be used."""


class ValueTooLong(AcrLocalError, ValueError):
    """A value longer than the column that would keep it allows, refused before the database sees it (SQLite would
    keep it whole, PostgreSQL would refuse the statement). The HTTP layers answer it with their protocol's 400."""

    def __init__(self, table: str, column: str, limit: int, length: int) -> None:
        super().__init__(f"{column} has {length} characters; at most {limit} are kept")
        self.table, self.column, self.limit, self.length = table, column, limit, length


class LimitReached(AcrLocalError, OSError):
    """A limit of this machine or of the server (free ports, open files) stops a new thing from being made; the
    message names the limit and how to raise it."""


class NotFound(AcrLocalError, LookupError):
    """A named thing does not exist."""


class AlreadyExists(AcrLocalError, ValueError):
    """A name is already taken."""


class ProtocolError(AcrLocalError):
    """An error that a wire protocol answers with a status code and an error body.

    ``status`` is the HTTP status, ``code`` the protocol's own error code, ``message`` a sentence for humans.
    The HTTP layer of each room turns it into that protocol's error format; nothing else catches it.
    """

    status: int = 400
    code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
