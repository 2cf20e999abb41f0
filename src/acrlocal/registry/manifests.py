"""Manifest documents: which kinds the registry stores, and what each one references. Pure; no I/O.

:func:`parse_manifest` takes the exact bytes a client pushed and the ``Content-Type`` it sent and returns what the
registry needs to store them: the media type to serve them with, the blobs and child manifests that must already
be in the repository, the ``subject`` (which need not exist), and the ``artifactType`` and annotations that the
referrers API reports. Anything malformed is MANIFEST_INVALID (400) with a message that says which field is wrong;
nothing is stored for it.

The bytes are never re-serialised: the digest is over what the client sent, and that is what is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from acrlocal.inbound import MalformedRequest, parse_json
from acrlocal.registry.errors import RegistryError
from acrlocal.storage.digest import Digest, DigestError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

# Content-Types that say nothing about the kind of manifest; the body's shape decides.
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """What a pushed manifest means to the registry.

    ``blobs`` are the config and layers (of an image manifest), ``manifests`` the children (of an index); both
    must exist in the repository. ``artifact_type`` is what a referrers descriptor reports: the document's
    ``artifactType``, else an image manifest's config media type, else ``None``.
    """

    media_type: str
    blobs: tuple[Digest, ...]
    manifests: tuple[Digest, ...]
    subject: Digest | None
    artifact_type: str | None
    annotations: dict[str, str] | None


#: A media type as RFC 6838 (section 4.2) writes it, which the OCI image spec requires of ``artifactType``: a type
#: and a subtype of 1 to 127 characters each, so at most 255 in all (what the manifests table keeps).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
MEDIA_TYPE_MAX = 255


def _invalid(message: str, **detail: Any) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", message, detail or None)


def _media_type_of(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header without parameters, lower-cased."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _descriptor(value: Any, where: str) -> tuple[str, Digest, int]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not a descriptor object", field=where)
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is missing or not a string", field=where)
    digest_text = value.get("digest")
    if not isinstance(digest_text, str):
        raise _invalid(f"{where}.digest is missing or not a string", field=where)
    try:
        digest = Digest.parse(digest_text)
    except DigestError as exc:
        raise _invalid(f"{where}.digest: {exc}", field=where) from exc
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size is missing or not a non-negative integer", field=where)
    return media_type, digest, size


def _is_foreign(value: dict[str, Any], media_type: str) -> bool:
    """A layer stored elsewhere (``urls`` given, a foreign/non-distributable type): not required here."""
    return bool(value.get("urls")) and ("foreign" in media_type or "nondistributable" in media_type)


def _annotations(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid("annotations must be an object of strings", field="annotations")
    return value


def _detect(doc: dict[str, Any], content_type: str) -> str:
    """The media type: the body's ``mediaType``, which must agree with ``Content-Type`` when both are given."""
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise _invalid("mediaType is not a string", field="mediaType")
    if body_type and content_type not in _GENERIC_TYPES and body_type != content_type:
        raise _invalid(
            f"mediaType {body_type!r} in the body does not match Content-Type {content_type!r}",
            mediaType=body_type,
            contentType=content_type,
        )
    media_type = body_type or (content_type if content_type not in _GENERIC_TYPES else "")
    if not media_type:
        # Neither says: an OCI document's shape decides (mediaType is optional in the OCI image spec).
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise _invalid(
            f"manifest media type {media_type!r} is not supported (expected one of {sorted(MANIFEST_TYPES)})",
            mediaType=media_type,
        )
    return media_type


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a pushed manifest; MANIFEST_INVALID (400) for anything the registry must not store."""
    try:
        doc = parse_json(body, what="the manifest")
    except MalformedRequest as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(doc, dict):
        raise _invalid("manifest is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid(f"schemaVersion {doc.get('schemaVersion')!r} is not 2", field="schemaVersion")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise _invalid("a manifest may not have both 'manifests' and 'layers'/'config'")
    media_type = _detect(doc, _media_type_of(content_type))

    artifact_type = doc.get("artifactType")
    if artifact_type is not None and (not isinstance(artifact_type, str) or not MEDIA_TYPE.fullmatch(artifact_type)):
        raise _invalid(f"artifactType {str(artifact_type)[:80]!r} is not a media type (RFC 6838: type/subtype, each "
                       "1 to 127 letters, digits or !#$&^_.+-)", field="artifactType")
    subject = _descriptor(doc["subject"], "subject")[1] if doc.get("subject") is not None else None
    annotations = _annotations(doc.get("annotations"))

    blobs: list[Digest] = []
    children: list[Digest] = []
    if media_type in IMAGE_TYPES:
        if "manifests" in doc:
            raise _invalid(f"a {media_type} has 'config' and 'layers', not 'manifests'")
        config_type, config_digest, _ = _descriptor(doc.get("config"), "config")
        blobs.append(config_digest)
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("layers is not an array", field="layers")
        for i, layer in enumerate(layers):
            layer_type, layer_digest, _ = _descriptor(layer, f"layers[{i}]")
            if not _is_foreign(layer, layer_type):
                blobs.append(layer_digest)
        if not artifact_type and len(config_type) > MEDIA_TYPE_MAX:
            raise _invalid(f"config.mediaType has {len(config_type)} characters; a media type has at most "
                           f"{MEDIA_TYPE_MAX}", field="config")
        artifact_type = artifact_type or config_type
    else:
        if "config" in doc or "layers" in doc:
            raise _invalid(f"a {media_type} has 'manifests', not 'config' or 'layers'")
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise _invalid("manifests is missing or not an array", field="manifests")
        for i, entry in enumerate(entries):
            children.append(_descriptor(entry, f"manifests[{i}]")[1])

    return ParsedManifest(
        media_type=media_type,
        blobs=tuple(dict.fromkeys(blobs)),
        manifests=tuple(dict.fromkeys(children)),
        subject=subject,
        artifact_type=artifact_type or None,
        annotations=annotations,
    )
