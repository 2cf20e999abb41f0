"""Docker Engine in a VM (Debian's docker.io on the host): the VM's own ``dockerd``, started on first use of
``/run/docker.sock``, running as the VM's root inside its namespaces; pulls from ``<registry>.azurecr.io`` with the
VM's identity and runs containers on the VM's network; Docker Hub is out of reach with Docker's own error, and
``registry-mirrors`` pointed at an acrlocal registry serves ``hello-world``; the daemon ends with the VM. Without
docker.io, ``docker`` is podman and says so once."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acrlocal.publiccloud import FRONT_DOOR
from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout

BUSYBOX = Path("/bin/busybox")
pytestmark = [
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="Debian's docker.io is not installed"),
    pytest.mark.skipif(not BUSYBOX.exists() or shutil.which("skopeo") is None,
                       reason="busybox-static and skopeo make and push the test image"),
]


def az(server: AcrLocal, *args: str) -> Any:
    proc = server.cli(*args, check=False)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def ssh(server: AcrLocal, group: str, vm: str, script: str) -> tuple[int, str, str]:
    proc = server.cli("ssh", "vm", "-g", group, "-n", vm, "--", script, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def push_busybox_image(server: AcrLocal, root: Path, repository: str, message: str) -> str:
    """An image whose entry point prints ``message`` (a static busybox), pushed as the local administrator."""
    layer = tar_layer({"bin/busybox": BUSYBOX.read_bytes()}, modes={"bin/busybox": 0o755})
    config = config_blob(diff_ids=[layer.digest], cmd=["/bin/busybox", "echo", message])
    manifest = image(config, [layer])
    write_layout(root / "layout", {"v1": manifest}, [config, layer])
    with Containers(root / "tools", server) as tools:
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir),
                     f"oci:{root / 'layout'}:v1", f"docker://{tools.ref(repository)}:latest")
    return manifest.digest


@pytest.fixture(scope="module")
def world(acrlocal: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    group = f"docker-{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    principal = az(acrlocal, "vm", "create", "-g", group, "-n", "dockervm", "--assign-identity", "--query",
                   "identity.systemAssignedIdentity")
    registry = az(acrlocal, "acr", "show", "-n", "acrlocal", "--query", "id")
    az(acrlocal, "role", "assignment", "create", "--assignee", principal, "--scope", registry, "--role", "acrpull")
    root = tmp_path_factory.mktemp("docker-image")
    push_busybox_image(acrlocal, root, "engine/hello", "Hello from a container in an acrlocal VM")
    yield {"group": group}
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_the_vms_own_engine_pulls_with_the_identity_and_runs(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    code, out, err = ssh(acrlocal, world["group"], "dockervm", """set -e
        ls -l /run/docker.sock | cut -d' ' -f1,3,4
        docker version --format '{{.Server.Version}}' > /dev/null
        ps -e -o user=,comm= | grep -w dockerd
        docker info --format '{{.DockerRootDir}} {{.Driver}}'
        echo '{"credHelpers": {"acrlocal.azurecr.io": "acrlocal"}}' > ~/.docker/config.json 2>/dev/null || {
            mkdir -p ~/.docker; echo '{"credHelpers": {"acrlocal.azurecr.io": "acrlocal"}}' > ~/.docker/config.json; }
        docker pull -q acrlocal.azurecr.io/engine/hello:latest > /dev/null
        docker run --rm --network host acrlocal.azurecr.io/engine/hello:latest
        docker run --rm acrlocal.azurecr.io/engine/hello:latest
    """)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "srw-rw---- root docker"
    assert lines[1].split() == ["root", "dockerd"]  # the VM's root: root only inside the VM's user namespace
    assert lines[2] == "/var/lib/docker overlay2"
    assert lines[3:] == ["Hello from a container in an acrlocal VM"] * 2


def test_docker_hub_is_out_of_reach_with_dockers_own_error(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    code, out, err = ssh(acrlocal, world["group"], "dockervm", "sudo docker run hello-world")
    assert code != 0
    assert "Unable to find image 'hello-world:latest' locally" in err + out
    assert "lookup registry-1.docker.io" in err and "no such host" in err


def test_registry_mirrors_pointed_at_an_acrlocal_registry_serve_hello_world(
        acrlocal: AcrLocal, world: dict[str, str], tmp_path: Path) -> None:
    mirror = f"mirror{uuid.uuid4().hex[:8]}"
    az(acrlocal, "acr", "create", "-g", world["group"], "-n", mirror, "--sku", "Standard")
    az(acrlocal, "acr", "update", "-n", mirror, "--anonymous-pull-enabled", "true")
    layer = tar_layer({"bin/busybox": BUSYBOX.read_bytes()}, modes={"bin/busybox": 0o755})
    config = config_blob(diff_ids=[layer.digest], cmd=["/bin/busybox", "echo", "Hello from Docker!"])
    write_layout(tmp_path / "layout", {"latest": image(config, [layer])}, [config, layer])
    token = az(acrlocal, "acr", "login", "-n", mirror, "--expose-token", "--query", "accessToken")
    login_server = az(acrlocal, "acr", "show", "-n", mirror, "--query", "loginServer")
    with Containers(tmp_path / "tools", acrlocal, anonymous=True) as tools:
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), "--dest-creds",
                     f"00000000-0000-0000-0000-000000000000:{token}", f"oci:{tmp_path / 'layout'}:latest",
                     f"docker://{login_server}/library/hello-world:latest")
    code, out, err = ssh(acrlocal, world["group"], "dockervm", f"""set -e
        echo '{{"registry-mirrors": ["https://{mirror}.azurecr.io"]}}' | sudo tee /etc/docker/daemon.json >/dev/null
        sudo kill -HUP $(cat /run/docker.pid)
        sleep 1
        sudo docker run --rm hello-world
        # leave the engine as it was (the module's Docker Hub test runs hello-world): without the image, and without
        # the mirror (a reload keeps the mirrors of a configuration that no longer names any)
        sudo docker image rm -f hello-world >/dev/null
        echo '{{"registry-mirrors": []}}' | sudo tee /etc/docker/daemon.json >/dev/null
        sudo kill -HUP $(cat /run/docker.pid)
        sudo rm /etc/docker/daemon.json
    """)
    assert code == 0, err
    assert out.splitlines()[-1] == "Hello from Docker!"


def test_the_engine_checks_the_registrys_certificate(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    """Azure's names are outside 127.0.0.0/8 in a VM, where Docker Engine takes no registry for an insecure one: it
    pulls from acrlocal.azurecr.io trusting the VM's trust store (this would fail without acrlocal's CA there), and
    refuses a name the certificate does not cover."""
    code, out, err = ssh(acrlocal, world["group"], "dockervm", f"""set -e
        getent hosts acrlocal.azurecr.io
        mkdir -p ~/.docker; echo '{{"credHelpers": {{"acrlocal.azurecr.io": "acrlocal"}}}}' > ~/.docker/config.json
        docker image rm -f acrlocal.azurecr.io/engine/hello:latest > /dev/null 2>&1 || true
        docker pull -q acrlocal.azurecr.io/engine/hello:latest
        echo '{FRONT_DOOR} notazure.example' | sudo tee -a /etc/hosts > /dev/null
        trap 'sudo sed -i "/notazure.example/d" /etc/hosts' EXIT
        docker pull notazure.example/engine/hello:latest 2>&1 || true
    """)
    assert code == 0, err
    lines = out.splitlines()
    address = ipaddress.ip_address(lines[0].split()[0])
    assert str(address) == FRONT_DOOR and not address.is_loopback
    assert lines[1] == "acrlocal.azurecr.io/engine/hello:latest"
    assert "x509: certificate is valid for" in out and "not notazure.example" in out


def certificate_authority(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA of the test's own and a server certificate for ``name``: (CA PEM, certificate PEM, key PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a registry's own CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (ca.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="Debian's docker-registry is not installed")
def test_a_registry_ca_in_docker_certs_d_is_trusted_by_the_engine(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    """A registry whose CA is not in the VM's trust store (Debian's docker-registry, run in the VM on an address of
    its own on lo): the engine refuses it, then trusts it once its CA is in /etc/docker/certs.d/<host:port>/."""
    host = "private.registry.test"
    ca, cert, key = certificate_authority(host)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    code, out, err = ssh(acrlocal, world["group"], "dockervm", f"""set -e
        mkdir -p ~/.docker; echo '{{"credHelpers": {{"acrlocal.azurecr.io": "acrlocal"}}}}' > ~/.docker/config.json
        work=$(mktemp -d); cd "$work"
        echo {b64(ca)} | base64 -d > ca.crt; echo {b64(cert)} | base64 -d > cert.pem
        echo {b64(key)} | base64 -d > key.pem
        printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: %s/data\\n' "$work" > config.yml
        printf 'http:\\n  addr: 169.254.20.1:5443\\n  tls:\\n    certificate: %s/cert.pem\\n    key: %s/key.pem\\n' \
            "$work" "$work" >> config.yml
        sudo ip addr add 169.254.20.1/32 dev lo
        echo '169.254.20.1 {host}' | sudo tee -a /etc/hosts > /dev/null
        docker-registry serve config.yml > registry.log 2>&1 &
        registry=$!
        trap 'kill $registry; sudo ip addr del 169.254.20.1/32 dev lo; sudo sed -i "/{host}/d" /etc/hosts;
              sudo rm -rf /etc/docker/certs.d/{host}:5443' EXIT
        for i in $(seq 100); do curl -s --cacert ca.crt -o /dev/null https://{host}:5443/v2/ && break; sleep 0.1; done
        docker pull -q acrlocal.azurecr.io/engine/hello:latest > /dev/null
        docker tag acrlocal.azurecr.io/engine/hello:latest {host}:5443/hello:v1
        docker push {host}:5443/hello:v1 2>&1 | tail -1 || true
        sudo mkdir -p /etc/docker/certs.d/{host}:5443
        sudo cp ca.crt /etc/docker/certs.d/{host}:5443/ca.crt
        docker push -q {host}:5443/hello:v1 > /dev/null
        docker image rm -f {host}:5443/hello:v1 > /dev/null
        docker pull -q {host}:5443/hello:v1
        docker run --rm {host}:5443/hello:v1
    """)
    assert code == 0, err
    lines = out.splitlines()
    assert "x509: certificate signed by unknown authority" in lines[0]
    assert lines[1:] == [f"{host}:5443/hello:v1", "Hello from a container in an acrlocal VM"]


def test_the_engine_ends_with_the_vm_and_starts_again(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    code, out, err = ssh(acrlocal, world["group"], "dockervm", """set -e
        mkdir -p ~/.docker
        echo '{"credHelpers": {"acrlocal.azurecr.io": "acrlocal"}}' > ~/.docker/config.json
        docker pull -q acrlocal.azurecr.io/engine/hello:latest > /dev/null
        pgrep -c dockerd
    """)
    assert code == 0 and out.strip() == "1", err
    az(acrlocal, "vm", "restart", "-g", world["group"], "-n", "dockervm")
    code, out, err = ssh(acrlocal, world["group"], "dockervm", "pgrep -c dockerd || true; "
                         "docker image ls --format '{{.Repository}}' | grep -c engine/hello")
    assert code == 0, err
    assert out.splitlines() == ["0", "1"]  # no daemon until docker is used; its images kept on the VM's disk


def test_without_docker_io_docker_is_podman_and_says_so_once(tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    server = AcrLocal(tmp_path / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACRLOCAL_VM_DOCKER", "podman")
        server.start()
    try:
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        az(server, "vm", "create", "-g", "rg", "-n", "plain")
        first = ssh(server, "rg", "plain", "docker --version; test -S /run/docker.sock || echo no-engine-socket")
        second = ssh(server, "rg", "plain", "docker --version")
        assert first[0] == 0 and second[0] == 0, first[2] + second[2]
        assert first[1].startswith("podman version") and "no-engine-socket" in first[1]
        assert "Emulate Docker CLI using podman" in first[2] and "Emulate Docker CLI" not in second[2]
    finally:
        server.stop()


def libtrust_kid(jwk: dict[str, str]) -> str:
    """libtrust's fingerprint of an EC P-256 JWK (what dockerd 20.10 reports as its ID): the SHA-256 of the
    public key's DER, its first 30 bytes in base32, in groups of four."""
    def number(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    public = ec.EllipticCurvePublicNumbers(number(jwk["x"]), number(jwk["y"]), ec.SECP256R1()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def host_dockerd_key() -> dict[str, str]:
    """A key as the host's dockerd 20.10 writes it in /etc/docker/key.json."""
    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).decode().rstrip("=")

    jwk = {"crv": "P-256", "d": b64(numbers.private_value), "kty": "EC", "x": b64(numbers.public_numbers.x),
           "y": b64(numbers.public_numbers.y)}
    return {**jwk, "kid": libtrust_kid(jwk)}


def test_a_host_whose_dockerd_has_a_key_gives_each_vm_engine_a_key_of_its_own(tmp_path: Path) -> None:
    """dockerd 20.10 on the host writes its identity key to /etc/docker/key.json, root-only, which a VM's /etc
    shows empty: the VM's engine must have a key of its own, and start and pull. The host's key is simulated in a
    mount namespace of the server's own, whose /etc is a copy of the host's holding it (bound over /etc there; a
    copy rather than an overlay, whose VMs' overlay on top could pass the kernel's stacking depth where the root
    file system is an overlay already): the host's /etc is not written, and the copy is removed."""
    host_etc = tmp_path / "host-etc"
    shutil.copytree("/etc", host_etc, symlinks=True)
    (host_etc / "docker").mkdir(exist_ok=True)
    host_key = host_dockerd_key()
    key_file = host_etc / "docker" / "key.json"
    key_file.write_text(json.dumps(host_key))
    os.chmod(key_file, 0o600)
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc && exec "$@"',
               str(host_etc)]
    host_had_key = Path("/etc/docker/key.json").exists()
    server = AcrLocal(tmp_path / "data", wrapper=wrapper)
    server.start()
    try:
        assert server.proc is not None
        assert json.loads(Path(f"/proc/{server.proc.pid}/root/etc/docker/key.json").read_text()) == host_key
        az(server, "group", "create", "-n", "rg", "-l", "westus")
        principal = az(server, "vm", "create", "-g", "rg", "-n", "keyed", "--assign-identity", "--query",
                       "identity.systemAssignedIdentity")
        registry = az(server, "acr", "show", "-n", "acrlocal", "--query", "id")
        az(server, "role", "assignment", "create", "--assignee", principal, "--scope", registry, "--role",
           "acrpull")
        push_busybox_image(server, tmp_path / "image", "engine/keyed", "Hello from an engine with its own key")
        code, out, err = ssh(server, "rg", "keyed", """set -e
            mkdir -p ~/.docker; echo '{"credHelpers": {"acrlocal.azurecr.io": "acrlocal"}}' > ~/.docker/config.json
            docker info --format '{{.ID}}'
            docker pull -q acrlocal.azurecr.io/engine/keyed:latest > /dev/null
            docker run --rm acrlocal.azurecr.io/engine/keyed:latest
            sudo cat /etc/docker/key.json
        """)
        assert code == 0, err
        engine_id, greeting, vm_key_text = out.splitlines()[:3]
        assert greeting == "Hello from an engine with its own key"
        vm_key = json.loads(vm_key_text)
        assert vm_key["kid"] == libtrust_kid(vm_key) == engine_id  # the engine runs with the VM's key
        assert vm_key["d"] != host_key["d"] and engine_id != host_key["kid"]
    finally:
        server.stop()
        shutil.rmtree(host_etc, ignore_errors=True)  # it holds copies of the host's secrets (/etc/shadow...)
    assert Path("/etc/docker/key.json").exists() == host_had_key
