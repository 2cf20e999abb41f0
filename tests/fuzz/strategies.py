"""Hypothesis strategies for what clients send: text near each grammar (valid pieces, then mutated), and junk.

Each strategy mixes three sources: valid values built from the grammar, those values mutated (a character
inserted, deleted or swapped, a piece repeated), and arbitrary text including non-ASCII, control characters,
percent escapes and lone surrogates, so both the accepting and the refusing paths of a parser are exercised.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

NASTY = ["", " ", "/", "//", "..", "../", "%2F", "%00", "%ff", "\x00", "\n", "\r\n", "\t", "é", "\u202e", "\ud800",
         "\uffff", "😀", "'", '"', "\\", "*", "?", "#", "&", "=", ";", ",", ":", "@", "{", "}", "[", "]", "(", ")",
         "a" * 300, "9" * 40, "-1", "0", "null", "true", "{}", "[]"]
junk = st.one_of(st.sampled_from(NASTY), st.text(max_size=60),
                 st.text(alphabet=st.characters(codec="ascii"), max_size=80))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """``base`` drawn, then changed a few times (insert, delete, replace, duplicate, join with junk)."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "junk"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(NASTY + list("aZ09._-/:@+"))) + text[at:]
        elif op == "delete" and text:
            text = text[:at] + text[at + 1:]
        elif op == "replace" and text:
            text = text[:at] + draw(st.characters()) + text[at + 1:]
        elif op == "duplicate":
            text = text[:at] + text + text[at:]
        else:
            text = text[:at] + draw(junk) + text[at:]
    return text


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values, mutated ones, and junk."""
    return st.one_of(valid, mutated(valid), junk)


component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
repository_names = near(st.lists(component, min_size=1, max_size=4).map("/".join))
tags = near(st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}", fullmatch=True))
hex64 = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
digests = near(st.one_of(hex64.map(lambda h: f"sha256:{h}"),
                         st.from_regex(r"[0-9a-f]{128}", fullmatch=True).map(lambda h: f"sha512:{h}"),
                         st.from_regex(r"[a-z0-9+._-]{1,10}:[A-Za-z0-9=_-]{1,70}", fullmatch=True)))
references = st.one_of(tags, digests)
content_ranges = near(st.builds(lambda a, b, total: f"{'bytes ' if total % 2 else ''}{a}-{a + b}"
                                + (f"/{total}" if total % 3 else ""),
                                st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 10**6)))
actions = st.lists(st.sampled_from(["pull", "push", "delete", "*", "metadata_read", "metadata_write", ""]),
                   min_size=1, max_size=4).map(",".join)
registry_scopes = near(st.one_of(
    st.builds(lambda n, a: f"repository:{n}:{a}", repository_names, actions),
    st.just("registry:catalog:*"),
    st.builds(lambda t, n, a: f"{t}:{n}:{a}", st.sampled_from(["repository", "registry", "aks", "x"]),
              repository_names, actions)))
guids = st.uuids().map(str)
arm_names = near(st.from_regex(r"[A-Za-z0-9_.()-]{1,20}", fullmatch=True))
arm_segments = st.sampled_from(["subscriptions", "resourceGroups", "resourcegroups", "providers",
                                "Microsoft.ContainerRegistry", "registries", "Microsoft.Authorization",
                                "roleAssignments", "roleDefinitions", "Microsoft.ManagedIdentity",
                                "userAssignedIdentities", "Microsoft.Compute", "virtualMachines",
                                "Microsoft.Network", "Microsoft.Resources", "deployments", "locks",
                                "listCredentials", "regenerateCredential", "scopeMaps", "tokens", "operations"])


@st.composite
def arm_ids(draw: st.DrawFn, subscription: str | None = None) -> str:
    """ARM resource ids and scopes: a real-looking path whose pieces are mutated now and then."""
    sub = subscription or draw(st.one_of(guids, arm_names))
    parts = [draw(st.sampled_from(["subscriptions", "Subscriptions", "SUBSCRIPTIONS"])), sub]
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(st.one_of(arm_segments, arm_names, guids)))
    path = "/" + "/".join(parts)
    return draw(st.one_of(st.just(path), mutated(st.just(path))))


odata_filters = near(st.builds(lambda f, op, v: f"{f} {op} {v}",
                               st.sampled_from(["principalId", "atScope()", "assignedTo", "roleName", "displayName",
                                                "appId", "resourceType", "name", "startswith(displayName"]),
                               st.sampled_from(["eq", "ne", "gt", "and", "or", ""]),
                               st.one_of(st.just("'x'"), guids.map(lambda g: f"'{g}'"), junk)))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                        st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                        max_leaves=max_leaves)


#: Optional fields clients send that a valid document of the suite may lack: an object of a document gets one of
#: these, or one of the document's own keys from anywhere in it, now and then (a handler that reads a field the
#: valid body never has is otherwise never sent it).
FIELD_NAMES = ["addressPrefixes", "addressPrefix", "conditionVersion", "condition", "description", "tags", "zones",
               "sku", "identity", "userAssignedIdentities", "properties", "type", "kind", "location", "managedBy",
               "name", "id", "value", "status", "enabled", "policies", "networkRuleSet", "ssh", "publicKeys",
               "keyData", "computerName", "dataDisks", "diskSizeGB", "caching", "priority", "dependsOn", "copy",
               "annotations", "artifactType", "subject", "mediaType", "size", "digest", "urls", "platform",
               "audiences", "issuer", "redirectUris", "passwordCredentials", "keyCredentials", "members@odata.bind",
               "owners@odata.bind", "accountEnabled", "expiry", "scopeMapId", "credentials", "actions"]


@st.composite
def mutated_documents(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """``valid`` with fields removed, replaced by other JSON values or junk, or added (:data:`FIELD_NAMES`), then
    serialised; sometimes the serialised bytes are cut or spliced too."""
    doc: Any = json.loads(json.dumps(valid))

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(node, dict):
            for k, v in node.items():
                found += paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                found += paths(v, (*prefix, i))
        return found

    names = sorted({str(p[-1]) for p in paths(doc) if p and isinstance(p[-1], str)} | set(FIELD_NAMES))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(paths(doc)))
        node = doc
        for key in where:
            node = node[key]
        op = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
        if op == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(names))] = draw(st.one_of(json_values(), junk, st.integers()))
            continue
        if not where:
            continue
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        if op == "drop":
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(st.one_of(json_values(), junk, digests, st.integers()))
    raw = json.dumps(doc).encode()
    cut = draw(st.integers(0, 9))
    if cut == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif cut == 1:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
    return raw


@st.composite
def one_odd_value(draw: st.DrawFn, document: Any, odd: st.SearchStrategy[Any] | None = None) -> Any:
    """``document`` (valid JSON) with one value anywhere in it replaced by ``odd`` (other JSON or junk, unless
    given): a request a client might send, one field wrong."""
    document = json.loads(json.dumps(document))
    places: list[tuple[Any, Any]] = []
    stack = [document]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            places.append((node, key))
            stack.append(value)
    if places:
        node, key = draw(st.sampled_from(places))
        node[key] = draw(odd if odd is not None else st.one_of(json_values(max_leaves=4), junk, st.integers()))
    return document
