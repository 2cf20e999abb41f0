"""VM image aliases (``--image UbuntuLTS``) and the marketplace image facts ``az vm create`` asks for.

``/metadata/endpoints`` names ``vmImageAliasDoc``, which az reads to turn an alias into a publisher, offer, sku
and version. Azure's current document no longer has ``UbuntuLTS``, the alias Microsoft's articles still type;
acrlocal's document keeps it (as Azure's did: Canonical's UbuntuServer 18.04-LTS) next to the current aliases, so
the articles' command lines work as written. Every VM runs this host's programs whatever its image (see the
compute room); the image is a record.

The marketplace is a short catalog (:data:`CATALOG`: the aliases' images and a few other common Linux ones).
Looking up a publisher, offer or sku that it does not hold answers Azure's 404 (``Publisher: <name> was not
found.``, ``Artifact: VMImage was not found.``), and a VM whose ``imageReference`` names one is refused with
``PlatformImageNotFound`` (:func:`check_reference`). Each sku has one version; any version of it is answered.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acrlocal.arm.errors import ArmError

#: alias → (publisher, offer, sku); every version is "latest".
LINUX_ALIASES = {
    "UbuntuLTS": ("Canonical", "UbuntuServer", "18.04-LTS"),
    "Ubuntu2204": ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    "Ubuntu2404": ("Canonical", "ubuntu-24_04-lts", "server"),
    "Debian11": ("Debian", "debian-11", "11-backports-gen2"),
    "Debian12": ("Debian", "debian-12", "12-gen2"),
    "AzureLinux3": ("MicrosoftCBLMariner", "azure-linux-3", "azure-linux-3-gen2"),
}


#: publisher → offer → skus of the marketplace served here (look-ups ignore case, answers keep this spelling).
CATALOG: dict[str, dict[str, tuple[str, ...]]] = {
    "Canonical": {
        "UbuntuServer": ("16.04-LTS", "18.04-LTS", "18_04-lts-gen2"),
        "0001-com-ubuntu-server-focal": ("20_04-lts", "20_04-lts-gen2"),
        "0001-com-ubuntu-server-jammy": ("22_04-lts", "22_04-lts-gen2"),
        "ubuntu-24_04-lts": ("server", "server-gen1"),
    },
    "Debian": {"debian-11": ("11", "11-gen2", "11-backports", "11-backports-gen2"), "debian-12": ("12", "12-gen2")},
    "MicrosoftCBLMariner": {"azure-linux-3": ("azure-linux-3", "azure-linux-3-gen2")},
    "RedHat": {"RHEL": ("8-lvm-gen2", "9-lvm-gen2")},
    "SUSE": {"sles-15-sp5": ("gen1", "gen2")},
}


def _pick(names: Any, wanted: str) -> str | None:
    return next((n for n in names if n.lower() == wanted.lower()), None)


def catalog_offers(publisher: str) -> dict[str, tuple[str, ...]]:
    """The publisher's offers; 404 ``NotFound`` (Azure's words) for a publisher the catalog does not hold."""
    name = _pick(CATALOG, publisher)
    if name is None:
        raise ArmError(404, "NotFound", f"Publisher: {publisher} was not found.", target="publisherName")
    return CATALOG[name]


def catalog_skus(publisher: str, offer: str) -> tuple[str, ...]:
    """The offer's skus; 404 ``NotFound`` for an unknown publisher or offer."""
    offers = catalog_offers(publisher)
    name = _pick(offers, offer)
    if name is None:
        raise ArmError(404, "NotFound", "Artifact: VMImage was not found.", target="artifactName")
    return offers[name]


def catalog_sku(publisher: str, offer: str, sku: str) -> str:
    """The sku's spelling; 404 ``NotFound`` for an unknown publisher, offer or sku."""
    name = _pick(catalog_skus(publisher, offer), sku)
    if name is None:
        raise ArmError(404, "NotFound", "Artifact: VMImage was not found.", target="artifactName")
    return name


def check_reference(image: dict[str, Any]) -> None:
    """Refuse a VM's ``imageReference`` naming a marketplace image the catalog does not hold, as Azure does
    (404 ``PlatformImageNotFound``). References by ``id`` (custom images, galleries) are records and pass."""
    if "id" in image and not {"publisher", "offer", "sku"} & set(image):
        return
    parts = [str(image.get(k, "")) for k in ("publisher", "offer", "sku", "version")]
    try:
        catalog_sku(parts[0], parts[1], parts[2])
    except ArmError:
        raise ArmError(404, "PlatformImageNotFound", f"The platform image '{':'.join(parts)}' is not available. "
                       "Verify that all fields in the storage profile are correct. For more details about storage "
                       "profile information, please refer to https://aka.ms/storageprofile",
                       target="imageReference") from None


def alias_document() -> dict[str, Any]:
    """The alias document in the shape az reads (``outputs.aliases.value.<os>.<alias>``)."""
    linux = {alias: {"publisher": p, "offer": o, "sku": s, "version": "latest", "architecture": "x64"}
             for alias, (p, o, s) in LINUX_ALIASES.items()}
    return {"$schema": "https://schema.management.azure.com/schemas/2015-01-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0", "parameters": {}, "variables": {}, "resources": [],
            "outputs": {"aliases": {"type": "object", "value": {"Linux": linux, "Windows": {}}}}}


async def aliases(request: web.Request) -> web.StreamResponse:
    """``GET /metadata/vm-image-aliases``: public, as the document az reads on Azure is."""
    return web.json_response(alias_document())


# -- marketplace images: /subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/publishers/... ----

IMAGE_VERSION = "1.0.20260101"


def _image_id(sub: str, location: str, publisher: str, offer: str | None = None, sku: str | None = None,
              version: str | None = None) -> str:
    rid = f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{publisher}"
    if offer is not None:
        rid += f"/ArtifactTypes/VMImage/Offers/{offer}"
    if sku is not None:
        rid += f"/Skus/{sku}"
    if version is not None:
        rid += f"/Versions/{version}"
    return rid


def image_properties(sku: str) -> dict[str, Any]:
    """What Azure says about an image version; ``gen2`` skus are Hyper-V generation 2 (trusted launch capable)."""
    gen2 = "gen2" in sku.lower() or sku.lower() == "server"
    props: dict[str, Any] = {
        "hyperVGeneration": "V2" if gen2 else "V1", "architecture": "x64", "replicaType": "Unmanaged",
        "disallowed": {"vmDiskType": "Unmanaged"}, "automaticOSUpgradeProperties": {
            "automaticOSUpgradeSupported": False}, "imageDeprecationStatus": {"imageState": "Active"},
        "osDiskImage": {"operatingSystem": "Linux", "sizeInGb": 30}, "dataDiskImages": []}
    if gen2:
        props["features"] = [{"name": "SecurityType", "value": "TrustedLaunchSupported"},
                             {"name": "IsAcceleratedNetworkSupported", "value": "True"},
                             {"name": "DiskControllerTypes", "value": "SCSI, NVMe"}]
    return props


def image_answer(sub: str, location: str, parts: list[str], expand: bool) -> Any:
    """The answer to ``.../locations/{location}/`` + ``parts`` (publishers, offers, skus, versions, a version);
    None when the path is not an image path; :class:`ArmError` 404 for what the catalog does not hold. Each sku
    has one version (a VM runs this host's programs whatever its image)."""
    low = [p.lower() for p in parts]
    if low == ["publishers"]:
        return [{"name": p, "location": location, "id": _image_id(sub, location, p)} for p in CATALOG]
    if len(parts) == 4 and low[0] == "publishers" and low[2:] == ["artifacttypes", "vmimage"]:
        return None
    if len(parts) == 5 and low[0] == "publishers" and low[2:] == ["artifacttypes", "vmimage", "offers"]:
        return [{"name": o, "location": location, "id": _image_id(sub, location, parts[1], o)}
                for o in catalog_offers(parts[1])]
    if len(parts) == 7 and low[0] == "publishers" and low[2:4] == ["artifacttypes", "vmimage"] and low[6] == "skus":
        return [{"name": s, "location": location, "id": _image_id(sub, location, parts[1], parts[5], s)}
                for s in catalog_skus(parts[1], parts[5])]
    if len(parts) in (9, 10) and low[0] == "publishers" and low[2:4] == ["artifacttypes", "vmimage"] \
            and low[4] == "offers" and low[6] == "skus" and low[8] == "versions":
        publisher, offer, sku = parts[1], parts[5], catalog_sku(parts[1], parts[5], parts[7])
        version = parts[9] if len(parts) == 10 else IMAGE_VERSION
        if version.lower() == "latest":
            version = IMAGE_VERSION
        body: dict[str, Any] = {"name": version, "location": location,
                                "id": _image_id(sub, location, publisher, offer, sku, version)}
        if len(parts) == 10:
            return {**body, "properties": image_properties(sku)}
        return [{**body, "properties": image_properties(sku)} if expand else body]
    return None
