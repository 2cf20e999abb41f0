"""ACR's locks on the data plane: the changeable attributes of repositories, tags and manifests, enforced.

What each attribute forbids, as ACR documents it for ``az acr repository update``:

- ``writeEnabled=false``: on a repository, every push to it (blob uploads, manifests); on a tag, moving it to
  another manifest. A write-locked item cannot be deleted either ("write-enabled: block both update and delete").
- ``deleteEnabled=false``: deleting the repository, the tag, or the manifest (a manifest also cannot be deleted
  while a tag on it is locked, nor a repository while anything in it is).
- ``readEnabled=false``: pulling the manifest (by a locked tag, of a locked manifest, or anything of a locked
  repository, blobs included). A read-locked manifest also locks the bytes of the blobs that only read-locked
  manifests of the repository reference (GET refused, no mount lends them); ``HEAD`` still answers, so a
  client pushing an image that shares those layers is not stopped.
- What a locked manifest contains is locked with it: a blob or child manifest that a delete- or write-locked
  manifest (or one under such a tag) references, directly or through indexes, cannot be deleted.
- ``listEnabled=false``: the item is left out of listings (the catalog, tag lists, manifest lists); it can still
  be read by name. Listings filter in their queries (:mod:`acrlocal.storage.artifacts`), not here.

A refusal is ACR's ``405 REGISTRY_DISALLOWED_OPERATION`` ("The operation is disallowed on this registry, repository
or image."), with ``detail`` naming what is locked. Changing the attributes themselves (PATCH on ``/acr/v1``) is
never refused by a lock, or nothing could be unlocked. Checks run after authorization, so a caller without access
learns nothing about locks. Each check is one cached lookup (:meth:`ArtifactCatalog.locks`).
"""

from __future__ import annotations

from acrlocal.registry.errors import CODES, RegistryError
from acrlocal.storage.artifacts import ArtifactCatalog
from acrlocal.storage.metadata import ManifestInUse

DISALLOWED = "REGISTRY_DISALLOWED_OPERATION"
HELP = ("View troubleshooting steps at "
        "https://aka.ms/acr/faq/#why-does-my-pull-or-push-request-fail-with-disallowed-operation")


def disallowed(what: str, attribute: str) -> RegistryError:
    message = f"{CODES[DISALLOWED][1]} {HELP}"
    return RegistryError(DISALLOWED, message, {"locked": what, "attribute": attribute})


def check_pull(catalog: ArtifactCatalog, registry_id: int, repository: str, tag: str | None, digest: str) -> None:
    """Reading a manifest: the repository, the tag it was named by, and the manifest must be readable."""
    locks = catalog.locks(registry_id, repository)
    if not locks.repository.read_enabled:
        raise disallowed(f"repository {repository!r}", "readEnabled")
    if tag is not None and not locks.tag(tag).read_enabled:
        raise disallowed(f"tag {repository}:{tag}", "readEnabled")
    if not locks.manifest(digest).read_enabled:
        raise disallowed(f"manifest {repository}@{digest}", "readEnabled")


def check_blob_read(catalog: ArtifactCatalog, registry_id: int, repository: str) -> None:
    if not catalog.locks(registry_id, repository).repository.read_enabled:
        raise disallowed(f"repository {repository!r}", "readEnabled")


def check_write(catalog: ArtifactCatalog, registry_id: int, repository: str, tag: str | None = None) -> None:
    """Pushing into the repository (a blob, a manifest, or a manifest under ``tag``)."""
    locks = catalog.locks(registry_id, repository)
    if not locks.repository.write_enabled:
        raise disallowed(f"repository {repository!r}", "writeEnabled")
    if tag is not None and not locks.tag(tag).write_enabled:
        raise disallowed(f"tag {repository}:{tag}", "writeEnabled")


def check_tag_delete(catalog: ArtifactCatalog, registry_id: int, repository: str, tag: str) -> None:
    locks = catalog.locks(registry_id, repository)
    if not locks.repository.deletable:
        raise disallowed(f"repository {repository!r}", "deleteEnabled")
    if not locks.tag(tag).deletable:
        raise disallowed(f"tag {repository}:{tag}", "deleteEnabled")


def check_blob_content_read(catalog: ArtifactCatalog, registry_id: int, repository: str, digest: str) -> None:
    """Reading a blob's bytes: refused when only read-locked manifests of the repository reference it."""
    blocker = catalog.blob_read_blocker(registry_id, repository, digest)
    if blocker is not None:
        raise disallowed(blocker, "readEnabled")


def check_manifest_delete(catalog: ArtifactCatalog, registry_id: int, repository: str, digest: str) -> None:
    """Deleting a manifest: not if it, its repository or a tag on it is locked, nor if a locked index needs it."""
    blocker = catalog.manifest_deletion_blocker(registry_id, repository, digest)
    if blocker is None:
        blocker = catalog.content_deletion_blocker(registry_id, repository, digest, "manifest")
    if blocker is not None:
        raise disallowed(blocker, "deleteEnabled")


def named_by_index(exc: ManifestInUse) -> RegistryError:
    """A manifest an index of its repository names, refused as ACR refuses a disallowed delete (405), naming the
    index: deleting it would leave the index naming a manifest that is gone."""
    detail = {"manifest": exc.digest, "referencedBy": exc.index}
    return RegistryError(DISALLOWED, f"{CODES[DISALLOWED][1]} {exc}", detail)


def check_blob_delete(catalog: ArtifactCatalog, registry_id: int, repository: str, digest: str) -> None:
    """Deleting a blob: not from a locked repository, nor from under a locked manifest that references it."""
    if not catalog.locks(registry_id, repository).repository.deletable:
        raise disallowed(f"repository {repository!r}", "deleteEnabled")
    blocker = catalog.content_deletion_blocker(registry_id, repository, digest, "blob")
    if blocker is not None:
        raise disallowed(blocker, "deleteEnabled")
