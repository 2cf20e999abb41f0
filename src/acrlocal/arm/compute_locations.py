"""``/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/...``: what az asks Azure's compute
provider about a region before it creates a VM (marketplace images, :mod:`.images`; VM sizes) and the status of
its long-running operations (:mod:`.operations`).
"""

from __future__ import annotations

from aiohttp import web

from acrlocal.arm import images, operations
from acrlocal.arm.errors import ArmError
from acrlocal.arm.generic import json
from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import Call, register_location_handler

#: The sizes ``az vm list-sizes`` shows; a VM's size is a record here (it runs as a sandbox on this host).
VM_SIZES = (("Standard_B1s", 1, 1024), ("Standard_B1ms", 1, 2048), ("Standard_B2s", 2, 4096),
            ("Standard_B2ms", 2, 8192), ("Standard_DS1_v2", 1, 3584), ("Standard_DS2_v2", 2, 7168),
            ("Standard_D2s_v3", 2, 8192), ("Standard_D2s_v5", 2, 8192), ("Standard_D4s_v5", 4, 16384))


async def handle(call: Call, path: ArmPath) -> web.StreamResponse:
    assert path.subscription is not None
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    segments = list(path.segments)
    if len(segments) < 3:
        raise ArmError(400, "InvalidResourceType", "The resource type 'locations' could not be found in the "
                       f"namespace 'Microsoft.Compute' for api version '{call.api_version}'.")
    location, rest = segments[1].lower(), segments[2:]
    scope = f"/subscriptions/{path.subscription}"
    if rest[0].lower() in ("operations", "operationstatuses") and len(rest) == 2:
        return operations.status(call, path.subscription, rest[1])
    if not call.caller.has_any_role_under(scope):
        call.caller.require("Microsoft.Compute/locations/read", scope)
    if [r.lower() for r in rest] == ["vmsizes"]:
        return json({"value": [{"name": name, "numberOfCores": cores, "osDiskSizeInMB": 1047552,
                                "resourceDiskSizeInMB": 4096, "memoryInMB": memory, "maxDataDiskCount": 4}
                               for name, cores, memory in VM_SIZES]})
    answer = images.image_answer(path.subscription, location, rest, "properties" in call.query.get("$expand", ""))
    if answer is None:
        raise ArmError(404, "NotFound", f"The resource '{'/'.join(segments)}' was not found in the namespace "
                       "'Microsoft.Compute'.")
    if isinstance(answer, list):
        top = call.query.get("$top")
        if top is not None and top.isascii() and top.isdigit():
            answer = answer[:int(top)]
    return json(answer)


register_location_handler("Microsoft.Compute", handle)
