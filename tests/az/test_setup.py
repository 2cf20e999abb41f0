"""``acrlocal az-setup``: the lines it prints work when a shell runs them, ``--apply`` registers or updates the
cloud in a given config directory, and bad set-ups fail with an ``ERROR:`` and leave nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from acrlocal.cli.azcloud import AzCloudSetup, MetadataError
from acrlocal.cli.commands.server import banner
from tests.az.conftest import Az, Contained
from tests.harness import AcrLocal


def test_printed_lines_set_up_az_and_sign_in(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                             tmp_path: Path) -> None:
    """What a user pastes: the exports, the three az commands, then the sign-in line from the comment."""
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    proc = az.acrlocal("az-setup")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert f"export REQUESTS_CA_BUNDLE={az_server.ca}" in script
    assert "export AZURE_CORE_COLLECT_TELEMETRY=false" in script and "unset ACC_CLOUD" in script
    assert az_server.admin_credential()["clientSecret"] not in script
    login = [line[len("#   "):] for line in script.splitlines() if line.startswith("#   az login")]
    assert len(login) == 1
    env = {k: v for k, v in az.env.items() if k != "REQUESTS_CA_BUNDLE"}  # the script exports it
    shell = subprocess.run(contained.argv(["bash", "-euc", script + login[0] + " >/dev/null\naz account show"]),
                           env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert shell.returncode == 0, shell.stderr[-3000:]
    account = json.loads(shell.stdout)
    assert account["environmentName"] == "AcrLocal"
    assert account["user"] == {"name": az_server.admin_credential()["clientId"], "type": "servicePrincipal"}

    cloud = az("cloud", "show")
    port = az_server.shared.rsplit(":", 1)[1]
    assert cloud["name"] == "AcrLocal" and cloud["isActive"] is True
    assert cloud["endpoints"]["resourceManager"] == az_server.shared + "/"
    assert cloud["endpoints"]["activeDirectory"] == az_server.shared
    assert cloud["endpoints"]["activeDirectoryResourceId"] == "https://management.core.windows.net/"
    assert cloud["endpoints"]["microsoftGraphResourceId"] == az_server.shared + "/"  # from /metadata/endpoints
    assert cloud["suffixes"]["acrLoginServerEndpoint"] == f".localhost:{port}"
    assert az("config", "get", "core.instance_discovery")["value"] == "false"


def test_apply_registers_then_updates(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                      tmp_path: Path) -> None:
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    config_dir = tmp_path / "elsewhere"
    del az.env["REQUESTS_CA_BUNDLE"]
    # What the README says: eval the output. ACC_CLOUD, set in the caller's shell, must not reach az (it turns
    # `login --identity` into Cloud Shell's flow) and is unset by the output.
    proc = az.shell(f'eval "$(acrlocal az-setup --apply --config-dir {config_dir})"\n'
                    'echo "$REQUESTS_CA_BUNDLE $AZURE_CONFIG_DIR ${ACC_CLOUD-unset}"\n'
                    'az cloud show --query endpoints.resourceManager --output tsv', env={"ACC_CLOUD": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{az_server.ca} {config_dir} unset", az_server.shared + "/"]
    assert (config_dir / "clouds.config").is_file() and not az.config_dir.exists()
    az.env.update(AZURE_CONFIG_DIR=str(config_dir), REQUESTS_CA_BUNDLE=az_server.ca)

    # The cloud exists now: a second run updates it in place (az cloud register would refuse).
    proc = az.acrlocal("az-setup", "--apply", "-o", "json", env={"AZURE_CONFIG_DIR": str(config_dir)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["applied"] is True and doc["configDir"] == str(config_dir)
    assert doc["environment"] == {"REQUESTS_CA_BUNDLE": az_server.ca, "AZURE_CORE_COLLECT_TELEMETRY": "false"}
    assert doc["commands"][0][:3] == ["az", "cloud", "register"]
    assert [c["name"] for c in az("cloud", "list") if c["isActive"]] == ["AcrLocal"]

    # A cloud that named another port (acrlocal started on another one): updated, and the user told to sign in
    # again, since az keeps tokens by host name.
    az("cloud", "update", "--name", "AcrLocal", "--endpoint-resource-manager", "https://localhost:1/",
       "--skip-endpoint-discovery")
    proc = az.acrlocal("az-setup", "--apply", env={"AZURE_CONFIG_DIR": str(config_dir)})
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: cloud 'AcrLocal' pointed at https://localhost:1/" in proc.stderr
    assert "`az account clear`" in proc.stderr
    assert az("cloud", "show")["endpoints"]["resourceManager"] == az_server.shared + "/"


def test_apply_without_az_is_an_error(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                      tmp_path: Path) -> None:
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    proc = az.acrlocal("az-setup", "--apply", "--az", str(tmp_path / "no-az"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("ERROR: Microsoft's az CLI was not found") and "--az" in proc.stderr
    assert not az.config_dir.exists()


def test_without_a_server_it_says_so(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                     tmp_path: Path) -> None:
    az = Az(az_exe, az_server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(tmp_path / "none")})
    proc = az.acrlocal("az-setup", "--apply")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "acrlocal is not running" in proc.stderr and "acrlocal up" in proc.stderr
    assert not az.config_dir.exists()


def test_from_metadata() -> None:
    doc = {"resourceManager": "https://localhost:8443/", "authentication": {"loginEndpoint": "https://localhost:8443/"},
           "suffixes": {"acrLoginServer": "localhost:8443"}}
    setup = AzCloudSetup.from_metadata(doc, "/ca.pem", login=["az", "login", "--identity"])
    assert setup.acr_suffix == ".localhost:8443" and setup.active_directory == "https://localhost:8443"
    assert setup.cloud_args("update")[:4] == ["cloud", "update", "--name", "AcrLocal"]
    assert "#   az login --identity" in setup.script()
    with pytest.raises(MetadataError, match="acrLoginServer"):
        AzCloudSetup.from_metadata({**doc, "suffixes": {}}, "/ca.pem")


def test_up_banner_names_az_setup(az_server: AcrLocal) -> None:
    assert "`acrlocal az-setup`" in banner(az_server.status)


def test_acrlocal_az_runs_microsofts_az_with_a_profile_of_its_own(az_exe: Path, az_server: AcrLocal,
                                                                   contained: Contained, tmp_path: Path) -> None:
    """``acrlocal az <args>`` sets up and signs in a profile of its own on first use and never touches
    ``~/.azure``; az's output and exit code are the command's."""
    home = tmp_path / "home"
    az = Az(az_exe, az_server, home, contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir),
                                                 "ACRLOCAL_CONFIG_DIR": str(tmp_path / "acrlocal")})
    del az.env["AZURE_CONFIG_DIR"]
    first = az.acrlocal("az", "account", "show", "--output", "json")
    assert first.returncode == 0, first.stderr
    admin = az_server.admin_credential()
    assert json.loads(first.stdout)["user"] == {"name": admin["clientId"], "type": "servicePrincipal"}
    assert (tmp_path / "acrlocal" / "az" / "azureProfile.json").exists()
    assert not (home / ".azure").exists()
    listed = az.acrlocal("az", "group", "list", "--query", "[].name", "-o", "json")
    assert listed.returncode == 0 and "acrlocal" in json.loads(listed.stdout)
    missing = az.acrlocal("az", "group", "show", "-n", "no-such-group")
    assert missing.returncode == 3 and "ResourceGroupNotFound" in missing.stderr
    assert not (home / ".azure").exists()
