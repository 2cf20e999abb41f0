"""A person signs in to Microsoft's az in a real browser: ``az login --use-device-code`` (the code entered on
``/devicelogin``) and plain ``az login`` (authorization code with PKCE; the page redirects to az's loopback
listener). Debian's Chromium, headless, driven through chromium-driver by selenium, takes a screenshot of every
step (kept under the test's temporary directory, and under ``$ACRLOCAL_SCREENSHOTS`` when set).

The server, az and the browser share a network namespace of their own that holds only ``lo``: Chromium reaches
nothing but loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.az.conftest import Az, Contained
from tests.az.test_person import NETNS
from tests.harness import AcrLocal, running

BROWSER_SCRIPT = Path(__file__).with_name("browser.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def az_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    if os.geteuid() != 0:
        pytest.fail("these tests run the server in a private network namespace, which needs root", pytrace=False)
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: ./scripts/test installs Debian's chromium and chromium-driver",
                        pytrace=False)
    with running(tmp_path_factory.mktemp("browser") / "data", wrapper=NETNS) as server:
        yield server


@pytest.fixture(scope="module")
def contained(az_server: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Contained:
    assert az_server.proc is not None
    return Contained(tmp_path_factory.mktemp("contained"), netns_pid=az_server.proc.pid)


def spki_hash(server: AcrLocal) -> str:
    cert = x509.load_pem_x509_certificate((server.data_dir / "tls" / "server.pem").read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def person_at_browser(server: AcrLocal, mode: str, url: str, password: str, shots: Path, code: str = ""
                      ) -> dict[str, Any]:
    """Run tests/az/browser.py in the server's network namespace; its JSON report."""
    assert server.proc is not None
    user = server.admin_credential()["userPrincipalName"]
    proc = subprocess.run(["nsenter", f"--net=/proc/{server.proc.pid}/ns/net", sys.executable, str(BROWSER_SCRIPT),
                           mode, url, user, password, str(shots), spki_hash(server), code],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(shots.parent / f"{shots.name}-home")})
    keep = os.environ.get("ACRLOCAL_SCREENSHOTS")
    if keep:
        shutil.copytree(shots, Path(keep) / shots.name, dirs_exist_ok=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(p).stat().st_size > 1000 for p in report["steps"])
    return report


def start_az(az: Az, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = az.contained.argv([str(az.exe), *args, "--output", "json"])
    return subprocess.Popen(argv, env={**az.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


def test_device_code_sign_in_in_a_browser(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                          tmp_path: Path) -> None:
    admin = az_server.admin_credential()
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    proc = start_az(az, "login", "--use-device-code")
    assert proc.stderr is not None
    message = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "enter the code" not in message:
        message += proc.stderr.readline()
    m = re.search(r"open the page (https://\S+) and enter the code (\w+)", message)
    assert m, message
    url, code = m.groups()
    assert url.endswith("/devicelogin")
    report = person_at_browser(az_server, "device", url, f"wrong:not-it|{admin['userPassword']}",
                               tmp_path / "device-shots", code)
    assert "You have signed in to the Microsoft Azure CLI application" in report["final_text"]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    accounts = json.loads(out)
    assert [(a["user"]["name"], a["user"]["type"], a["id"]) for a in accounts] == \
        [(admin["userPrincipalName"], "user", admin["subscriptionId"])]
    assert az("ad", "signed-in-user", "show")["id"] == admin["userObjectId"]


def test_browser_sign_in_with_authorization_code_and_pkce(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                                          tmp_path: Path) -> None:
    admin = az_server.admin_credential()
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    opened = tmp_path / "opened-url"
    browser = tmp_path / "browser.sh"  # what az "opens": the test's browser takes the address from here
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    browser.chmod(0o755)
    proc = start_az(az, "login", env={"BROWSER": str(browser)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (opened.exists() and opened.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        time.sleep(0.2)
    url = opened.read_text().strip().splitlines()[0]
    assert "/organizations/oauth2/v2.0/authorize?" in url and "code_challenge_method=S256" in url
    report = person_at_browser(az_server, "authorize", url, admin["userPassword"], tmp_path / "authorize-shots")
    # The page posts the code to az's loopback listener (response_mode=form_post), which thanks the person.
    assert report["final_url"].startswith("http://localhost:")
    assert "You have logged into Microsoft Azure!" in report["final_text"]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    assert [a["user"]["name"] for a in json.loads(out)] == [admin["userPrincipalName"]]
    assert az("account", "show")["user"] == {"name": admin["userPrincipalName"], "type": "user"}
