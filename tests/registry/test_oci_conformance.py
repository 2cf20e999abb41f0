"""Cases of the OCI distribution-spec conformance suite that acrlocal once failed, written from the spec's text and
the suite's behaviour as a client: it keeps one token per repository and kind of request (a pull token for GET and
HEAD, a push token for POST, PATCH and PUT), and it names a manifest that cannot exist ``.INVALID_MANIFEST_NAME``."""

from __future__ import annotations

import pytest

from tests.ocitools import sha256
from tests.registry.conftest import RegistryClient, error_code


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "-x", "x" * 129, "sha256:totallywrong"])
def test_a_manifest_by_a_name_that_cannot_exist_is_unknown(registry: RegistryClient, repo: str,
                                                           reference: str) -> None:
    """"If the manifest is not found in the repository, the response code MUST be 404 Not Found" (pulling
    manifests); v1.1.1's suite asks exactly this of HEAD and GET."""
    registry.push_image(repo, "v1")
    r = registry.get(f"/v2/{repo}/manifests/{reference}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN", r.text
    assert registry.head(f"/v2/{repo}/manifests/{reference}").status_code == 404


def test_upload_status_after_an_out_of_order_chunk_with_a_pull_token(registry: RegistryClient,
                                                                     repo: str) -> None:
    """"If a chunk is uploaded out of order, the registry MUST respond with a 416 Requested Range Not Satisfiable
    code. A GET request may be used to retrieve the current valid offset and upload location": 204 with ``Range``
    and ``Location``, to a client whose GETs carry a pull token."""
    push = {"Authorization": registry.authorization(f"repository:{repo}:pull,push")}
    pull = {"Authorization": registry.authorization(f"repository:{repo}:pull")}
    http = registry.server.session()
    data = bytes(range(256)) * 4
    r = http.post(registry.url(f"/v2/{repo}/blobs/uploads/"), headers=push)
    assert r.status_code == 202
    location = r.headers["Location"]
    r = http.patch(registry.url(location), data=data[:300], headers={**push, "Content-Range": "0-299"})
    assert r.status_code == 202 and r.headers["Range"] == "0-299"
    r = http.patch(registry.url(r.headers["Location"]), data=data[600:900],
                   headers={**push, "Content-Range": "600-899"})
    assert r.status_code == 416 and error_code(r) == "RANGE_INVALID"
    status = http.get(registry.url(r.headers["Location"]), headers=pull)
    assert status.status_code == 204, status.text
    assert status.headers["Range"] == "0-299" and status.headers["Location"] == location
    r = http.patch(registry.url(location), data=data[300:], headers={**push, "Content-Range": f"300-{len(data) - 1}"})
    assert r.status_code == 202
    r = http.put(registry.url(f"{location}?digest={sha256(data)}"), headers=push)
    assert r.status_code == 201, r.text
    assert http.get(registry.url(f"/v2/{repo}/blobs/{sha256(data)}"), headers=pull).content == data
    # the session stays its opener's: a pull token cannot continue it, nor cancel it
    location = http.post(registry.url(f"/v2/{repo}/blobs/uploads/"), headers=push).headers["Location"]
    assert http.patch(registry.url(location), data=b"x", headers=pull).status_code in (401, 403)
    assert http.delete(registry.url(location), headers=pull).status_code in (401, 403)
