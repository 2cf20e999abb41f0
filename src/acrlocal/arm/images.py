"""VM image aliases (``--image UbuntuLTS``) and the marketplace image facts ``az vm create`` asks for.

``/metadata/endpoints`` names ``vmImageAliasDoc``, which az reads to turn an alias into a publisher, offer, sku
and version. Azure's current document no longer has ``UbuntuLTS``, the alias Microsoft's articles still type;
acrlocal's document keeps it (as Azure's did: Canonical's UbuntuServer 18.04-LTS) next to the current aliases, so
the articles' command lines work as written. Every VM runs this host's programs whatever its image (see the
compute room); the image is a record.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

#: alias → (publisher, offer, sku); every version is "latest".
LINUX_ALIASES = {
    "UbuntuLTS": ("Canonical", "UbuntuServer", "18.04-LTS"),
    "Ubuntu2204": ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    "Ubuntu2404": ("Canonical", "ubuntu-24_04-lts", "server"),
    "Debian11": ("Debian", "debian-11", "11-backports-gen2"),
    "Debian12": ("Debian", "debian-12", "12-gen2"),
    "AzureLinux3": ("MicrosoftCBLMariner", "azure-linux-3", "azure-linux-3-gen2"),
}


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


def _known(field: int, **match: str) -> list[str]:
    values = []
    for publisher, offer, sku in LINUX_ALIASES.values():
        row = {"publisher": publisher, "offer": offer, "sku": sku}
        if all(row[k].lower() == v.lower() for k, v in match.items()):
            value = (publisher, offer, sku)[field]
            if value not in values:
                values.append(value)
    return values


def image_answer(sub: str, location: str, parts: list[str], expand: bool) -> Any:
    """The answer to ``.../locations/{location}/`` + ``parts`` (publishers, offers, skus, versions, a version);
    None when the path is not an image path. Any publisher, offer and sku has one version (a VM runs this
    host's programs whatever its image)."""
    low = [p.lower() for p in parts]
    if low == ["publishers"]:
        return [{"name": p, "location": location, "id": _image_id(sub, location, p)} for p in _known(0)]
    if len(parts) == 4 and low[0] == "publishers" and low[2:] == ["artifacttypes", "vmimage"]:
        return None
    if len(parts) == 5 and low[0] == "publishers" and low[2:] == ["artifacttypes", "vmimage", "offers"]:
        return [{"name": o, "location": location, "id": _image_id(sub, location, parts[1], o)}
                for o in _known(1, publisher=parts[1])]
    if len(parts) == 7 and low[0] == "publishers" and low[2:4] == ["artifacttypes", "vmimage"] and low[6] == "skus":
        return [{"name": s, "location": location, "id": _image_id(sub, location, parts[1], parts[5], s)}
                for s in _known(2, publisher=parts[1], offer=parts[5])]
    if len(parts) in (9, 10) and low[0] == "publishers" and low[2:4] == ["artifacttypes", "vmimage"] \
            and low[4] == "offers" and low[6] == "skus" and low[8] == "versions":
        publisher, offer, sku = parts[1], parts[5], parts[7]
        version = parts[9] if len(parts) == 10 else IMAGE_VERSION
        if version.lower() == "latest":
            version = IMAGE_VERSION
        body: dict[str, Any] = {"name": version, "location": location,
                                "id": _image_id(sub, location, publisher, offer, sku, version)}
        if len(parts) == 10:
            return {**body, "properties": image_properties(sku)}
        return [{**body, "properties": image_properties(sku)} if expand else body]
    return None
