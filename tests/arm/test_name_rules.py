"""Names are checked whole: a name that keeps to its rule but ends with a line feed (which a regular expression's
``$`` lets through) is refused like any other character outside the rule, with the protocol's 400, and nothing is
made under it."""

from __future__ import annotations

import json
import uuid

from tests.arm.conftest import Arm, subscription_of
from tests.arm.test_graph import admin_of, graph
from tests.harness import AcrLocal

IDENTITIES = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"
REGISTRIES = "providers/Microsoft.ContainerRegistry/registries"


def test_arm_names_ending_with_a_line_feed_are_refused(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    suffix = uuid.uuid4().hex[:6]
    r = admin.call("PUT", f"/subscriptions/{sub}/resourcegroups/lf-{suffix}%0A", {"location": "westus"})
    assert r.status_code == 400, r.text
    groups = admin.call("GET", f"/subscriptions/{sub}/resourcegroups").json()["value"]
    assert not [g for g in groups if g["name"].startswith(f"lf-{suffix}")]
    group = f"/subscriptions/{sub}/resourceGroups/lf-{suffix}"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    for path, body, version in ((f"{group}/{IDENTITIES}/ident%0A", {"location": "westus"}, "2023-01-31"),
                                (f"{group}/{REGISTRIES}/lfreg{suffix}%0A",
                                 {"location": "westus", "sku": {"name": "Basic"}}, "2023-07-01")):
        r = admin.call("PUT", path, body, api_version=version)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] and r.json()["error"]["message"]
    for kind, version in ((IDENTITIES, "2023-01-31"), (REGISTRIES, "2023-07-01")):
        listed = admin.call("GET", f"{group}/{kind}", api_version=version)
        assert listed.status_code == 200 and listed.json()["value"] == [], listed.text


def test_an_encoded_slash_is_part_of_its_name_and_no_name_may_hold_one(arm_server: AcrLocal, admin: Arm) -> None:
    """``%2F`` in a path is a character of its segment, not a separator: a deployment named ``d%2F`` is refused
    (no ARM name holds a ``/``), not made as ``d`` with its actions then refused at ``d//cancel``, and nothing is
    made under any spelling of it."""
    sub = subscription_of(arm_server)
    group = f"/subscriptions/{sub}/resourceGroups/slash-{uuid.uuid4().hex[:6]}"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    template = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "resources": []}
    deployments = f"{group}/providers/Microsoft.Resources/deployments"
    for path, body, version in (
            (f"{deployments}/d%2F", {"properties": {"mode": "Incremental", "template": template}}, "2024-03-01"),
            (f"{deployments}/d%2fe", {"properties": {"mode": "Incremental", "template": template}}, "2024-03-01"),
            (f"{group}/{IDENTITIES}/ident%2F", {"location": "westus"}, "2023-01-31"),
            (f"{group}%2F", {"location": "westus"}, None)):
        r = admin.call("PUT", path, body, api_version=version) if version else admin.call("PUT", path, body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "InvalidRequestUri", r.text
    for action in ("cancel", "validate"):
        r = admin.call("POST", f"{deployments}/d%2F/{action}", api_version="2024-03-01")
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestUri", r.text
    listed = admin.call("GET", deployments, api_version="2024-03-01")
    assert listed.status_code == 200 and listed.json()["value"] == [], listed.text
    listed = admin.call("GET", f"{group}/{IDENTITIES}", api_version="2023-01-31")
    assert listed.status_code == 200 and listed.json()["value"] == [], listed.text


def test_graph_names_ending_with_a_line_feed_are_refused(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server))
    domain = json.loads((arm_server.data_dir / "admin.json").read_text())["userPrincipalName"].split("@")[1]
    upn = f"lf-{uuid.uuid4().hex[:6]}@{domain}"
    r = g.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "LF", "mailNickname": "lf",
                                       "userPrincipalName": upn + "\n",
                                       "passwordProfile": {"password": "Str0ng-Passw0rd!"}}, api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest", r.text
    r = g.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "LF", "mailNickname": "lf\n",
                                       "userPrincipalName": upn, "passwordProfile": {"password": "Str0ng-Passw0rd!"}},
               api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest", r.text
    users = g.call("GET", "/v1.0/users", api_version=None).json()["value"]
    assert not [u for u in users if u["userPrincipalName"].startswith(upn)]
    app = g.call("POST", "/v1.0/applications", {"displayName": "lf-fic"}, api_version=None).json()
    fics = f"/v1.0/applications/{app['id']}/federatedIdentityCredentials"
    r = g.call("POST", fics, {"name": "github\n", "issuer": "https://token.actions.githubusercontent.com",
                              "subject": "repo:o/r:ref:refs/heads/main"}, api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest", r.text
    assert g.call("GET", fics, api_version=None).json()["value"] == []
