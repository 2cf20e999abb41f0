"""ARM provider ``Microsoft.Network``, as far as VMs need it: virtual networks and their subnets, network security
groups and their rules, public IP addresses and network interfaces, with Azure's shapes, ``etag`` and
``provisioningState``.

- A virtual network's ``subnets`` (and an NSG's ``securityRules``) are given inline or as child resources; both
  are stored as child resources, and the parent renders them inline, as Azure does. A PUT of the parent that
  lists them replaces the set; a subnet that a network interface uses cannot be removed
  (``InUseSubnetCannotBeDeleted``).
- A public IP address is **an address on this machine**: each gets its own loopback address ``127.77.x.y``
  (allocated once, kept until the address is deleted), through which the VM that uses it is reached (its ssh:
  :mod:`acrlocal.arm.vm_ssh`). ``Dynamic`` and ``Static`` allocation both get one at creation.
- A network interface's IP configurations name a subnet (which must exist), optionally a public IP address
  (used by at most one interface: ``PublicIPAddressInUse``) and get a private address from the subnet's range
  (Azure's first four are reserved). Its ``virtualMachine`` is set by the VM that attaches it
  (:mod:`acrlocal.arm.compute`); an attached interface cannot be deleted (``NicInUse``), nor a public IP address
  or NSG in use.

Back-references that Azure shows (a subnet's ``ipConfigurations``, a public IP's ``ipConfiguration``, an NSG's
``networkInterfaces`` and ``subnets``) are computed when rendered, from the interfaces of the subscription.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from typing import Any, ClassVar

from acrlocal.arm.errors import ArmError, bad_request
from acrlocal.arm.paths import parse_request_path
from acrlocal.arm.providers import Call, JsonObject, ResourceType, register, require_object
from acrlocal.arm.store import ArmStore, Resource

NAMESPACE = "Microsoft.Network"
VNET = f"{NAMESPACE}/virtualNetworks"
SUBNET = f"{VNET}/subnets"
NSG = f"{NAMESPACE}/networkSecurityGroups"
RULE = f"{NSG}/securityRules"
PUBLIC_IP = f"{NAMESPACE}/publicIPAddresses"
NIC = f"{NAMESPACE}/networkInterfaces"
API_VERSIONS = ("2024-07-01", "2024-05-01", "2024-03-01", "2024-01-01", "2023-11-01", "2023-09-01", "2023-06-01",
                "2023-05-01", "2023-04-01", "2022-11-01", "2022-07-01", "2022-05-01", "2022-01-01", "2021-08-01",
                "2021-05-01", "2021-02-01", "2020-11-01", "2020-06-01", "2019-11-01", "2018-11-01")
#: Public IP addresses are loopback addresses from this range (one per address; 127.0.0.1 is never used).
PUBLIC_RANGE = ipaddress.ip_network("127.77.0.0/16")
NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9_.]{0,78}[a-zA-Z0-9_])?\Z")
NAME_RULE = ("1-80 letters, digits, '-', '_' and '.', starting with a letter or digit and ending with a letter, "
             "digit or '_'")
PROTOCOLS = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "esp": "Esp", "ah": "Ah", "*": "*"}

#: Azure's default security rules of every network security group.
DEFAULT_RULES = (
    ("AllowVnetInBound", "Allow inbound traffic from all VMs in VNET", "VirtualNetwork", "VirtualNetwork", "Allow",
     65000, "Inbound"),
    ("AllowAzureLoadBalancerInBound", "Allow inbound traffic from azure load balancer", "AzureLoadBalancer", "*",
     "Allow", 65001, "Inbound"),
    ("DenyAllInBound", "Deny all inbound traffic", "*", "*", "Deny", 65500, "Inbound"),
    ("AllowVnetOutBound", "Allow outbound traffic from all VMs to all VMs in VNET", "VirtualNetwork",
     "VirtualNetwork", "Allow", 65000, "Outbound"),
    ("AllowInternetOutBound", "Allow outbound traffic from all VMs to Internet", "*", "Internet", "Allow", 65001,
     "Outbound"),
    ("DenyAllOutBound", "Deny all outbound traffic", "*", "*", "Deny", 65500, "Outbound"),
)


def _etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _ref(value: Any, what: str) -> str | None:
    """The ``id`` of a ``{"id": ...}`` reference, or None when absent."""
    if value is None:
        return None
    ref = require_object(value, what)
    rid = ref.get("id")
    if rid is None:
        return None
    if not isinstance(rid, str) or not rid.startswith("/subscriptions/"):
        raise bad_request("InvalidResourceReference", f"Resource reference '{str(rid)[:200]}' in {what} is not a "
                          "valid resource id.")
    return rid


def _require_joins(call: Call, draft: Resource, links: list[tuple[str | None, str]]) -> None:
    """Azure's linked access check for every ``(id, type)`` that ``draft``'s body names (ids that are None are
    skipped): the caller must hold ``{type}/join/action`` on each, else 403 ``LinkedAuthorizationFailed`` naming
    every one it may not join, whether or not they exist. Done before any of them is looked up."""
    call.caller.require_all_linked(f"{draft.type}/write", draft.id,
                                   [(f"{type_}/join/action", rid) for rid, type_ in links if rid is not None])


def _resolve(call: Call, rid: str, type_: str, what: str) -> Resource:
    """The resource of type ``type_`` that a body names, after :func:`_require_joins` checked it: it must exist in
    the caller's tenant (400 ``InvalidResourceReference``; another tenant's is answered as a missing one). Reads the
    store: in the ``SqlThread``."""
    resource = call.tenant_resource(rid)
    if resource is None or resource.type.lower() != type_.lower():
        raise bad_request("InvalidResourceReference", f"Resource {rid} referenced by resource {what} was not "
                          "found. Please make sure that the referenced resource exists, and that both resources "
                          "are in the same region.")
    return resource


def _body_ref(value: Any, *keys: str) -> str | None:
    """The id that ``value[keys[0]][keys[1]]...`` names, for the linked access check before the body is checked in
    full: None where the body has no reference there (or is malformed: the full check answers that)."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return _ref(value, keys[-1]) if isinstance(value, dict) else None


def _network(value: Any, what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise bad_request("InvalidAddressPrefixFormat", f"Address prefix {value} for resource {what} is not a "
                          "valid IPv4 CIDR (for example 10.0.0.0/24).") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise bad_request("InvalidAddressPrefixFormat", f"Address prefix {value} for resource {what} is not IPv4.")
    return net


def group_deleted(call: Call | None) -> bool:
    """Whether in-use checks are off: ``call`` deletes a whole resource group (resources that use each other all
    go, in any order) or is not a DELETE (a Complete-mode deployment's clean-up)."""
    if call is None or call.request.method != "DELETE":
        return True
    try:
        return parse_request_path(call.request.raw_path).kind == "group"
    except ArmError:
        return False


def nics_of(store: ArmStore, subscription_id: str) -> list[Resource]:
    return store.resources(subscription_id, type=NIC)


def _ip_configuration_ids(store: ArmStore, subscription_id: str, key: str, target: str) -> list[str]:
    """Ids of the IP configurations (of every NIC in the subscription) whose ``key`` reference is ``target``."""
    out = []
    for nic in nics_of(store, subscription_id):
        for config in nic.properties.get("ipConfigurations", []):
            ref = (config.get("properties", {}).get(key) or {}).get("id")
            if isinstance(ref, str) and ref.lower() == target.lower():
                out.append(config["id"])
    return out


class NetworkType(ResourceType):
    namespace = NAMESPACE
    api_versions = API_VERSIONS
    name_pattern: ClassVar[re.Pattern[str]] = NAME
    name_rule = NAME_RULE

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        body["etag"] = resource.internal.get("etag") or _etag()
        props = body["properties"]
        if "resourceGuid" in resource.internal:
            props["resourceGuid"] = resource.internal["resourceGuid"]
        return body

    # The hooks read and write the store all through: each runs as one call of the server's SqlThread, and a type
    # says what it checks and does in the synchronous checked / applied / removed.

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        return await call.run(self.checked, call, draft, existing)

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        return await call.run(self.applied, call, resource, existing)

    async def check_remove(self, call: Call | None, resource: Resource) -> None:
        if call is not None:  # a cascade without a call (the server cleaning up) checks nothing
            await call.run(self.removed, call, resource)

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        """:meth:`prepare`'s work, in the ``SqlThread``."""
        return draft

    def applied(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        """:meth:`apply`'s work, in the ``SqlThread``."""
        return resource

    def removed(self, call: Call, resource: Resource) -> None:
        """:meth:`check_remove`'s checks, in the ``SqlThread``: a delete of the resource or of its parent is refused
        before anything goes."""

    def stamp(self, resource: Resource, existing: Resource | None) -> Resource:
        internal = dict(existing.internal if existing else resource.internal)
        internal["etag"] = _etag()
        internal.setdefault("resourceGuid", str(uuid.uuid4()))
        return resource.evolve(internal=internal)


def _child_view(child: Resource, etag: str) -> JsonObject:
    return {"name": child.name, "id": child.id, "etag": etag, "type": child.type,
            "properties": {**child.properties, "provisioningState": "Succeeded"}}


# -- virtual networks and subnets ----------------------------------------------------------------------------


def _subnet_properties(call: Call, draft: Resource, props: JsonObject, name: str,
                       vnet_prefixes: list[ipaddress.IPv4Network],
                       siblings: dict[str, ipaddress.IPv4Network]) -> JsonObject:
    prefix = props.get("addressPrefix")
    if not prefix:
        prefixes = _list(props.get("addressPrefixes"), "properties.addressPrefixes")
        prefix = prefixes[0] if prefixes else None
    if prefix is None:
        raise bad_request("NetcfgInvalidSubnet", f"Subnet '{name}' is not valid: it needs an addressPrefix.")
    net = _network(prefix, f"subnet '{name}'")
    if vnet_prefixes and not any(net.subnet_of(v) for v in vnet_prefixes):
        raise bad_request("NetcfgSubnetRangeOutsideVnet", f"Subnet '{name}' is not valid because its IP address "
                          f"range is outside the IP address range of virtual network.")
    for other, other_net in siblings.items():
        if other.lower() != name.lower() and net.overlaps(other_net):
            raise bad_request("NetcfgSubnetRangesOverlap", f"Subnet '{name}' is not valid because its IP address "
                              f"range overlaps with that of an existing subnet '{other}' in virtual network.")
    out: JsonObject = {"addressPrefix": str(net)}
    nsg = _ref(props.get("networkSecurityGroup"), f"subnet '{name}'")
    if nsg is not None:
        out["networkSecurityGroup"] = {"id": _resolve(call, nsg, NSG, f"subnet '{name}'").id}
    for key in ("privateEndpointNetworkPolicies", "privateLinkServiceNetworkPolicies", "defaultOutboundAccess"):
        if key in props:
            out[key] = props[key]
    out.setdefault("privateEndpointNetworkPolicies", "Disabled")
    out.setdefault("privateLinkServiceNetworkPolicies", "Enabled")
    return out


def _vnet_prefixes(vnet: Resource) -> list[ipaddress.IPv4Network]:
    prefixes = (vnet.properties.get("addressSpace") or {}).get("addressPrefixes") or []
    return [ipaddress.IPv4Network(p) for p in prefixes]


class VirtualNetworks(NetworkType):
    type = "virtualNetworks"

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = dict(draft.properties)
        space = require_object(props.get("addressSpace"), "properties.addressSpace")
        prefixes = space.get("addressPrefixes")
        if not isinstance(prefixes, list) or not prefixes:
            raise bad_request("InvalidRequestFormat", "Cannot parse the request: the virtual network needs "
                              "properties.addressSpace.addressPrefixes.")
        nets = [_network(p, f"virtual network '{draft.name}'") for p in prefixes]
        subnets = props.pop("subnets", None)
        planned: list[tuple[str, JsonObject]] = []
        if subnets is not None:
            if not isinstance(subnets, list):
                raise bad_request("InvalidRequestFormat", "properties.subnets must be an array.")
            _require_joins(call, draft, [(_body_ref(item, "properties", "networkSecurityGroup"), NSG)
                                         for item in subnets])
            seen: dict[str, ipaddress.IPv4Network] = {}
            for item in subnets:
                item = require_object(item, "properties.subnets[]")
                name = item.get("name")
                if not isinstance(name, str) or not NAME.match(name):
                    raise bad_request("InvalidResourceName", f"Subnet name '{name}' is invalid. The name must be "
                                      f"{NAME_RULE}.")
                sub_props = require_object(item.get("properties"), f"subnet '{name}'.properties")
                checked = _subnet_properties(call, draft, sub_props, name, nets, seen)
                seen[name] = ipaddress.IPv4Network(checked["addressPrefix"])
                planned.append((name, checked))
            if existing is not None:
                wanted = {n.lower() for n, _ in planned}
                for child in call.store.resources(existing.subscription_id, parent_id=existing.id, type=SUBNET):
                    users = _ip_configuration_ids(call.store, child.subscription_id, "subnet", child.id)
                    if child.name.lower() not in wanted and users:
                        raise bad_request("InUseSubnetCannotBeDeleted", f"Subnet {child.name} is in use by "
                                          f"{users[0]} and cannot be deleted. In order to delete the subnet, "
                                          "delete all the resources within the subnet.")
        elif existing is not None:
            for child in call.store.resources(existing.subscription_id, parent_id=existing.id, type=SUBNET):
                prefix = ipaddress.IPv4Network(child.properties["addressPrefix"])
                if not any(prefix.subnet_of(n) for n in nets):
                    raise bad_request("NetcfgSubnetRangeOutsideVnet", f"Subnet '{child.name}' is not valid because "
                                      "its IP address range is outside the IP address range of virtual network.")
        props["addressSpace"] = {"addressPrefixes": [str(n) for n in nets]}
        props.setdefault("enableDdosProtection", False)
        props.setdefault("virtualNetworkPeerings", [])
        resource = self.stamp(draft.evolve(properties=props), existing)
        return resource.evolve(internal={**resource.internal, "_subnets": planned if subnets is not None else None})

    def applied(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        internal = dict(resource.internal)
        planned = internal.pop("_subnets", None)
        resource = resource.evolve(internal=internal)
        if planned is None:
            return resource
        # The VNet row must exist before its subnets (children name it as their parent).
        call.store.put_resource(resource)
        wanted = {}
        for name, props in planned:
            rid = f"{resource.id}/subnets/{name}"
            old = call.store.resource(rid)
            wanted[rid.lower()] = True
            call.store.put_resource(Resource(
                id=old.id if old else rid, type=SUBNET, name=old.name if old else name,
                subscription_id=resource.subscription_id, group=resource.group, properties=props,
                internal={"etag": _etag()}, system_data=resource.system_data, parent_id=resource.id))
        for child in call.store.resources(resource.subscription_id, parent_id=resource.id, type=SUBNET):
            if child.id.lower() not in wanted:
                call.store.delete_resource(child.id)
        return resource

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        store = call.store if call else None
        if store is not None:
            subnets = store.resources(resource.subscription_id, parent_id=resource.id, type=SUBNET)
            body["properties"]["subnets"] = [SUBNETS.render(call, s) for s in subnets]
        return body


class Subnets(NetworkType):
    type = "virtualNetworks/subnets"
    location_required = False

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        assert draft.parent_id is not None
        vnet = call.store.resource(draft.parent_id)
        assert vnet is not None
        _require_joins(call, draft, [(_body_ref(draft.properties, "networkSecurityGroup"), NSG)])
        siblings = {s.name: ipaddress.IPv4Network(s.properties["addressPrefix"])
                    for s in call.store.resources(vnet.subscription_id, parent_id=vnet.id, type=SUBNET)}
        props = _subnet_properties(call, draft, draft.properties, draft.name, _vnet_prefixes(vnet), siblings)
        if existing is not None and props["addressPrefix"] != existing.properties.get("addressPrefix") and \
                _ip_configuration_ids(call.store, draft.subscription_id, "subnet", draft.id):
            raise bad_request("InUseSubnetCannotBeUpdated", f"Subnet {draft.name} is in use and its address prefix "
                              "cannot be changed.")
        return self.stamp(draft.evolve(properties=props, location=None), existing)

    def removed(self, call: Call, resource: Resource) -> None:
        used = _ip_configuration_ids(call.store, resource.subscription_id, "subnet", resource.id)
        if used and not group_deleted(call):
            raise bad_request("InUseSubnetCannotBeDeleted", f"Subnet {resource.name} is in use by {used[0]} and "
                              "cannot be deleted. In order to delete the subnet, delete all the resources within "
                              "the subnet.")

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = _child_view(resource, resource.internal.get("etag") or _etag())
        if call is not None:
            configs = _ip_configuration_ids(call.store, resource.subscription_id, "subnet", resource.id)
            if configs:
                body["properties"]["ipConfigurations"] = [{"id": c} for c in configs]
        return body


# -- network security groups ---------------------------------------------------------------------------------


def _list(value: Any, what: str) -> list[Any]:
    """A rule's array property (absent or null: empty); 400 ``InvalidRequestContent`` if it is not an array."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid and could not be "
                       f"deserialized: '{what}' must be a JSON array, not {type(value).__name__}.")
    return value


def _rule_properties(props: JsonObject, name: str) -> JsonObject:
    protocol = PROTOCOLS.get(str(props.get("protocol", "")).lower())
    if protocol is None:
        raise bad_request("SecurityRuleInvalidProtocol", f"Security rule {name} has invalid Protocol "
                          f"{props.get('protocol')}. Allowed values are Tcp, Udp, Icmp, Esp, Ah and *.")
    access = str(props.get("access", ""))
    if access.lower() not in ("allow", "deny"):
        raise bad_request("SecurityRuleInvalidAccess", f"Security rule {name} has invalid Access {access}. "
                          "Allowed values are Allow and Deny.")
    direction = str(props.get("direction", ""))
    if direction.lower() not in ("inbound", "outbound"):
        raise bad_request("SecurityRuleInvalidDirection", f"Security rule {name} has invalid Direction "
                          f"{direction}. Allowed values are Inbound and Outbound.")
    priority = props.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 100 <= priority <= 4096:
        raise bad_request("SecurityRuleInvalidPriority", f"Security rule {name} has invalid Priority {priority}. "
                          "Value provided: {priority} Allowed range 100-4096.")
    out: JsonObject = {"protocol": protocol, "access": access.capitalize(), "direction": direction.capitalize(),
                       "priority": priority}
    for side in ("source", "destination"):
        port = props.get(f"{side}PortRange")
        ports = _list(props.get(f"{side}PortRanges"), f"{side}PortRanges")
        for value in ([port] if port is not None else []) + ports:
            if isinstance(value, bool) or not re.fullmatch(r"\*|[0-9]{1,5}(-[0-9]{1,5})?", str(value)):
                raise bad_request("SecurityRuleInvalidPortRange", f"Security rule {name} has invalid Port range "
                                  f"{value}. Value provided: {value}. Value should be an integer OR integer range "
                                  "with '-' delimiter. Valid range 0-65535.")
        out[f"{side}PortRange"] = port if port is not None or ports else "*"
        if ports:
            out[f"{side}PortRanges"] = [str(p) for p in ports]
        prefix = props.get(f"{side}AddressPrefix")
        prefixes = _list(props.get(f"{side}AddressPrefixes"), f"{side}AddressPrefixes")
        for value in ([prefix] if prefix is not None else []) + prefixes:
            if not isinstance(value, str):
                raise bad_request("SecurityRuleInvalidAddressPrefix", f"Security rule {name} has invalid Address "
                                  f"prefix. Value provided: {json.dumps(value)[:100]}. The prefix must be a CIDR, an "
                                  "address, a service tag or '*'.")
        out[f"{side}AddressPrefix"] = prefix if prefix is not None or prefixes else "*"
        if prefixes:
            out[f"{side}AddressPrefixes"] = list(prefixes)
    if "description" in props:
        out["description"] = props["description"]
    return out


def default_rules(nsg_id: str) -> list[JsonObject]:
    return [{"name": name, "id": f"{nsg_id}/defaultSecurityRules/{name}", "etag": 'W/"00000000-0000-0000-0000-'
             '000000000000"', "type": f"{NSG}/defaultSecurityRules",
             "properties": {"provisioningState": "Succeeded", "description": description, "protocol": "*",
                            "sourcePortRange": "*", "destinationPortRange": "*", "sourceAddressPrefix": source,
                            "destinationAddressPrefix": destination, "access": access, "priority": priority,
                            "direction": direction, "sourcePortRanges": [], "destinationPortRanges": [],
                            "sourceAddressPrefixes": [], "destinationAddressPrefixes": []}}
            for name, description, source, destination, access, priority, direction in DEFAULT_RULES]


def _check_priorities(rules: list[tuple[str, JsonObject]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, props in rules:
        key = (props["direction"], props["priority"])
        if key in seen and seen[key].lower() != name.lower():
            raise bad_request("SecurityRuleConflict", f"Security rule {name} conflicts with rule {seen[key]}. Rules "
                              "cannot have the same Priority and Direction.")
        seen[key] = name


class NetworkSecurityGroups(NetworkType):
    type = "networkSecurityGroups"

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = dict(draft.properties)
        rules = props.pop("securityRules", None)
        planned: list[tuple[str, JsonObject]] | None = None
        if rules is not None:
            if not isinstance(rules, list):
                raise bad_request("InvalidRequestFormat", "properties.securityRules must be an array.")
            planned = []
            for item in rules:
                item = require_object(item, "properties.securityRules[]")
                name = item.get("name")
                if not isinstance(name, str) or not NAME.match(name):
                    raise bad_request("InvalidResourceName", f"Security rule name '{name}' is invalid. The name "
                                      f"must be {NAME_RULE}.")
                planned.append((name, _rule_properties(require_object(item.get("properties"),
                                                                      f"rule '{name}'.properties"), name)))
            _check_priorities(planned)
        resource = self.stamp(draft.evolve(properties=props), existing)
        return resource.evolve(internal={**resource.internal, "_rules": planned})

    def applied(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        internal = dict(resource.internal)
        planned = internal.pop("_rules", None)
        resource = resource.evolve(internal=internal)
        if planned is None:
            return resource
        call.store.put_resource(resource)
        wanted = set()
        for name, props in planned:
            rid = f"{resource.id}/securityRules/{name}"
            old = call.store.resource(rid)
            wanted.add(rid.lower())
            call.store.put_resource(Resource(
                id=old.id if old else rid, type=RULE, name=old.name if old else name,
                subscription_id=resource.subscription_id, group=resource.group, properties=props,
                internal={"etag": _etag()}, system_data=resource.system_data, parent_id=resource.id))
        for child in call.store.resources(resource.subscription_id, parent_id=resource.id, type=RULE):
            if child.id.lower() not in wanted:
                call.store.delete_resource(child.id)
        return resource

    def removed(self, call: Call, resource: Resource) -> None:
        if group_deleted(call):
            return
        users = [n.id for n in nics_of(call.store, resource.subscription_id)
                 if ((n.properties.get("networkSecurityGroup") or {}).get("id") or "").lower() == resource.id.lower()]
        if users:
            raise bad_request("InUseNetworkSecurityGroupCannotBeDeleted", f"Network security group {resource.id} "
                              f"cannot be deleted because it is in use by the following resources: {users[0]}. In "
                              "order to delete the Network security group, remove the association with the "
                              "resource(s).")

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        props = body["properties"]
        props["defaultSecurityRules"] = default_rules(resource.id)
        if call is not None:
            rules = call.store.resources(resource.subscription_id, parent_id=resource.id, type=RULE)
            props["securityRules"] = [RULES.render(call, r) for r in rules]
            users = [{"id": n.id} for n in nics_of(call.store, resource.subscription_id)
                     if ((n.properties.get("networkSecurityGroup") or {}).get("id") or "").lower()
                     == resource.id.lower()]
            if users:
                props["networkInterfaces"] = users
        return body


class SecurityRules(NetworkType):
    type = "networkSecurityGroups/securityRules"
    location_required = False

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        assert draft.parent_id is not None
        props = _rule_properties(draft.properties, draft.name)
        siblings = [(r.name, r.properties) for r in call.store.resources(draft.subscription_id,
                                                                        parent_id=draft.parent_id, type=RULE)
                    if r.name.lower() != draft.name.lower()]
        _check_priorities([*siblings, (draft.name, props)])
        return self.stamp(draft.evolve(properties=props, location=None), existing)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        return _child_view(resource, resource.internal.get("etag") or _etag())


# -- public IP addresses -------------------------------------------------------------------------------------


def allocate_public_address(store: ArmStore, subscription_ids: list[str]) -> str:
    """The first loopback address of :data:`PUBLIC_RANGE` no public IP address of any subscription holds."""
    taken = {r.properties.get("ipAddress") for sub in subscription_ids for r in store.resources(sub, type=PUBLIC_IP)}
    for address in PUBLIC_RANGE.hosts():
        if str(address) not in taken and address.packed[3] not in (0, 255):
            return str(address)
    raise ArmError(409, "PublicIPCountLimitReached", "Cannot create more public IP addresses: the loopback range "
                   f"{PUBLIC_RANGE} is full.")


class PublicIPAddresses(NetworkType):
    type = "publicIPAddresses"

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = dict(draft.properties)
        sku = dict(draft.sku or (existing.sku if existing else None) or {"name": "Standard"})
        sku_name = str(sku.get("name", "Standard"))
        if sku_name.lower() not in ("basic", "standard"):
            raise bad_request("InvalidPublicIPAddressSku", f"Public IP address SKU '{sku_name}' is not valid; "
                              "expected Basic or Standard.")
        sku = {"name": sku_name.capitalize(), "tier": sku.get("tier", "Regional")}
        method = str(props.get("publicIPAllocationMethod") or ("Static" if sku["name"] == "Standard" else
                                                                "Dynamic"))
        if method.lower() not in ("static", "dynamic"):
            raise bad_request("InvalidPublicIPAllocationMethod", f"Allocation method '{method}' is not valid; "
                              "expected Static or Dynamic.")
        if sku["name"] == "Standard" and method.lower() == "dynamic":
            raise bad_request("StandardSkuPublicIPAddressesMustBeStatic", "Standard sku publicIp "
                              f"/{draft.id} must have AllocationMethod set to Static.")
        version = str(props.get("publicIPAddressVersion", "IPv4"))
        if version != "IPv4":
            raise bad_request("InvalidPublicIPAddressVersion", "Only IPv4 public IP addresses are served here.")
        out: JsonObject = {"publicIPAddressVersion": "IPv4", "publicIPAllocationMethod": method.capitalize(),
                           "idleTimeoutInMinutes": props.get("idleTimeoutInMinutes", 4), "ipTags": []}
        dns = props.get("dnsSettings")
        if dns:
            label = require_object(dns, "properties.dnsSettings").get("domainNameLabel")
            if not isinstance(label, str) or not re.match(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]\Z", label):
                raise bad_request("InvalidDomainNameLabel", f"The domain name label {label} is invalid. It must "
                                  "conform to the following regular expression: ^[a-z][a-z0-9-]{1,61}[a-z0-9]$.")
            out["dnsSettings"] = {"domainNameLabel": label,
                                  "fqdn": f"{label}.{draft.location}.cloudapp.{call.services.settings.hostname_suffix}"}
        if existing is not None and existing.properties.get("ipAddress"):
            out["ipAddress"] = existing.properties["ipAddress"]
        return self.stamp(draft.evolve(properties=out, sku=sku), existing)

    def applied(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        if resource.properties.get("ipAddress"):
            return resource
        subs = [s.id for s in call.services.directory.subscriptions()]
        address = allocate_public_address(call.store, subs)
        return resource.evolve(properties={**resource.properties, "ipAddress": address})

    def removed(self, call: Call, resource: Resource) -> None:
        if group_deleted(call):
            return
        used = _ip_configuration_ids(call.store, resource.subscription_id, "publicIPAddress", resource.id)
        if used:
            raise bad_request("PublicIPAddressCannotBeDeleted", f"Public IP address {resource.id} can not be "
                              f"deleted since it is still allocated to resource {used[0]}. In order to delete the "
                              "public IP, disassociate/detach the Public IP address from the resource.")

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        if call is not None:
            used = _ip_configuration_ids(call.store, resource.subscription_id, "publicIPAddress", resource.id)
            if used:
                body["properties"]["ipConfiguration"] = {"id": used[0]}
        return body


# -- network interfaces --------------------------------------------------------------------------------------


def _mac(resource_id: str) -> str:
    digest = hashlib.sha256(resource_id.lower().encode()).digest()
    return "00-0D-3A-" + "-".join(f"{b:02X}" for b in digest[:3])


def _private_address(call: Call, subnet: Resource, nic_id: str, wanted: str | None) -> str:
    net = ipaddress.IPv4Network(subnet.properties["addressPrefix"])
    used = set()
    for nic in nics_of(call.store, subnet.subscription_id):
        if nic.id.lower() == nic_id.lower():
            continue
        for config in nic.properties.get("ipConfigurations", []):
            props = config.get("properties", {})
            if ((props.get("subnet") or {}).get("id") or "").lower() == subnet.id.lower():
                used.add(props.get("privateIPAddress"))
    hosts = [str(h) for h in net.hosts()][3:]  # Azure reserves the first four addresses (with the network's)
    if wanted is not None:
        if wanted not in hosts:
            raise bad_request("PrivateIPAddressNotInSubnet", f"IP address {wanted} does not belong to subnet "
                              f"{subnet.id}.")
        if wanted in used:
            raise bad_request("PrivateIPAddressInUse", f"IP configuration {nic_id} is using the private IP address "
                              f"{wanted} which is already allocated to another resource.")
        return wanted
    for host in hosts:
        if host not in used:
            return host
    raise bad_request("SubnetIsFull", f"Subnet {subnet.name} with address prefix {net} does not have enough "
                      "capacity for 1 IP addresses.")


class NetworkInterfaces(NetworkType):
    type = "networkInterfaces"

    def checked(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = dict(draft.properties)
        configs = props.get("ipConfigurations")
        if not isinstance(configs, list) or not configs:
            raise bad_request("InvalidRequestFormat", "Cannot parse the request: a network interface needs at least "
                              "one entry in properties.ipConfigurations.")
        links: list[tuple[str | None, str]] = []
        for item in configs:
            links += [(_body_ref(item, "properties", "subnet"), SUBNET),
                      (_body_ref(item, "properties", "publicIPAddress"), PUBLIC_IP)]
        _require_joins(call, draft, [*links, (_body_ref(props, "networkSecurityGroup"), NSG)])
        old_configs = {c["name"].lower(): c for c in (existing.properties.get("ipConfigurations", [])
                                                      if existing else [])}
        out_configs = []
        public_ips: set[str] = set()
        for i, item in enumerate(configs):
            item = require_object(item, "properties.ipConfigurations[]")
            name = item.get("name") or f"ipconfig{i + 1}"
            if not isinstance(name, str) or not NAME.match(name):
                raise bad_request("InvalidResourceName", f"IP configuration name '{name}' is invalid.")
            cprops = require_object(item.get("properties"), f"ipConfigurations['{name}'].properties")
            subnet_id = _ref(cprops.get("subnet"), f"{draft.id}/ipConfigurations/{name}")
            if subnet_id is None:
                raise bad_request("SubnetRequired", f"The IP configuration {draft.id}/ipConfigurations/{name} needs a "
                                  "subnet.")
            subnet = _resolve(call, subnet_id, SUBNET, f"{draft.id}/ipConfigurations/{name}")
            method = str(cprops.get("privateIPAllocationMethod", "Dynamic")).capitalize()
            if method not in ("Dynamic", "Static"):
                raise bad_request("InvalidPrivateIPAllocationMethod", f"Allocation method '{method}' is not valid.")
            old = (old_configs.get(name.lower()) or {}).get("properties", {})
            keep = old.get("privateIPAddress") if ((old.get("subnet") or {}).get("id") or "").lower() == \
                subnet.id.lower() else None
            wanted = cprops.get("privateIPAddress") if method == "Static" else keep
            address = _private_address(call, subnet, draft.id, wanted)
            config_id = f"{draft.id}/ipConfigurations/{name}"
            cout: JsonObject = {"privateIPAddress": address, "privateIPAllocationMethod": method,
                                "subnet": {"id": subnet.id}, "primary": bool(cprops.get("primary", i == 0)),
                                "privateIPAddressVersion": "IPv4"}
            public_id = _ref(cprops.get("publicIPAddress"), config_id)
            if public_id is not None:
                public = _resolve(call, public_id, PUBLIC_IP, config_id)
                users = [u for u in _ip_configuration_ids(call.store, draft.subscription_id, "publicIPAddress",
                                                          public.id) if not u.lower().startswith(draft.id.lower() +
                                                                                                 "/")]
                if users or public.id.lower() in public_ips:
                    raise bad_request("PublicIPAddressInUse", f"Resource {config_id} is referencing public IP "
                                      f"address {public.id} that is already allocated to resource "
                                      f"{users[0] if users else config_id}.")
                public_ips.add(public.id.lower())
                cout["publicIPAddress"] = {"id": public.id}
                delete_option = (cprops.get("publicIPAddress") or {}).get("properties", {}).get("deleteOption")
                if delete_option:
                    cout["publicIPAddress"]["properties"] = {"deleteOption": delete_option}
            out_configs.append({"name": name, "id": config_id, "etag": "", "type": f"{NIC}/ipConfigurations",
                                "properties": cout})
        out: JsonObject = {"ipConfigurations": out_configs,
                           "enableAcceleratedNetworking": bool(props.get("enableAcceleratedNetworking", False)),
                           "enableIPForwarding": bool(props.get("enableIPForwarding", False)),
                           "disableTcpStateTracking": False, "nicType": "Standard", "auxiliaryMode": "None",
                           "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
                           "macAddress": _mac(draft.id), "primary": True, "vnetEncryptionSupported": False}
        nsg_id = _ref(props.get("networkSecurityGroup"), draft.id)
        if nsg_id is not None:
            out["networkSecurityGroup"] = {"id": _resolve(call, nsg_id, NSG, draft.id).id}
        if existing is not None and existing.properties.get("virtualMachine"):
            out["virtualMachine"] = existing.properties["virtualMachine"]
        return self.stamp(draft.evolve(properties=out), existing)

    def removed(self, call: Call, resource: Resource) -> None:
        if group_deleted(call):
            return
        vm = (resource.properties.get("virtualMachine") or {}).get("id")
        if vm and call.store.resource(vm) is not None:
            raise bad_request("NicInUse", f"Network Interface {resource.id} is used by existing resource {vm}. In "
                              "order to delete the network interface, it must be dissociated from the resource. To "
                              "learn more, see aka.ms/deletenic.")

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        for config in body["properties"]["ipConfigurations"]:
            config["etag"] = body["etag"]
            config["properties"] = {**config["properties"], "provisioningState": "Succeeded"}
        body["kind"] = "Regular"
        return body


def attach(store: ArmStore, nic_id: str, vm_id: str | None) -> Resource | None:
    """Record that ``vm_id`` uses the interface (None: no VM uses it any more); the interface, if it exists."""
    nic = store.resource(nic_id)
    if nic is None or nic.type.lower() != NIC.lower():
        return None
    props = dict(nic.properties)
    if vm_id is None:
        props.pop("virtualMachine", None)
    else:
        props["virtualMachine"] = {"id": vm_id}
    nic = nic.evolve(properties=props)
    store.put_resource(nic)
    return nic


def public_addresses_of(store: ArmStore, nic_ids: list[str]) -> list[str]:
    """The loopback addresses of the public IP addresses that these interfaces hold."""
    out = []
    for nic_id in nic_ids:
        nic = store.resource(nic_id)
        for config in (nic.properties.get("ipConfigurations", []) if nic else []):
            ref = (config.get("properties", {}).get("publicIPAddress") or {}).get("id")
            public = store.resource(ref) if ref else None
            if public is not None and public.properties.get("ipAddress"):
                out.append(public.properties["ipAddress"])
    return out


SUBNETS = Subnets()
RULES = SecurityRules()
for _type in (VirtualNetworks(), SUBNETS, NetworkSecurityGroups(), RULES, PublicIPAddresses(), NetworkInterfaces()):
    register(_type)
