"""``acrlocal az`` follows the server: after the data directory is deleted and made again on the same port (the
same endpoint), Microsoft's az is signed in again as the new local administrator instead of using the old one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.az.conftest import Az, Contained
from tests.cli.test_server_reset import free_port, server_on


def test_acrlocal_az_after_a_reset_on_the_same_port(az_exe: Path, contained: Contained, tmp_path: Path) -> None:
    server = server_on(tmp_path / "data", free_port())
    try:
        server.start()
        az = Az(az_exe, server, tmp_path / "home", contained, {"ACRLOCAL_DATA_DIR": str(server.data_dir),
                                                               "ACRLOCAL_CONFIG_DIR": str(tmp_path / "acrlocal")})
        del az.env["AZURE_CONFIG_DIR"]
        seen = []
        for reset in (False, True):
            if reset:
                server.stop()
                shutil.rmtree(server.data_dir)
                server.start()
            shown = az.acrlocal("az", "account", "show", "--output", "json")
            assert shown.returncode == 0, shown.stderr
            account = json.loads(shown.stdout)
            assert account["id"] == server.status["subscriptionId"], account
            listed = az.acrlocal("az", "group", "list", "--query", "[].name", "-o", "json")
            assert listed.returncode == 0 and "acrlocal" in json.loads(listed.stdout), listed.stderr
            seen.append(account["id"])
        assert seen[0] != seen[1]
    finally:
        server.stop()
