#!/usr/bin/env bash
# "Use an Azure managed identity to authenticate to an Azure container registry", on this machine.
#
# Run it after `acrlocal up` (or `acrlocal up --detach`). It does what the article does, with the article's names
# and command lines; only `az` is acrlocal's az-shaped CLI (set ACRLOCAL to the command that runs it, default
# `acrlocal`). What runs "on the VM" runs in the VM through `az ssh vm`, where `az` is the VM's az (Microsoft's,
# when this machine has it), the registry is mycontainerregistry.azurecr.io, and `docker` is the VM's own Docker
# Engine (podman when this machine has no docker.io).
#
#   0. the article's prerequisites: the group, the registry, an aci-helloworld:v1 image pushed by a principal with
#      AcrPush, and the Docker-enabled VM myDockerVM;
#   1. Example 1, a user-assigned identity (myACRId) with AcrPull on the registry: az login --identity --resource-id,
#      az acr login, docker pull; and what stays denied (pull before the role assignment, push with AcrPull);
#   2. Example 2, the VM's system-assigned identity: az login --identity, az acr login, docker pull; and the pull
#      denied once that identity is removed from the VM.
#
# It needs skopeo (the image is pushed with it). It refuses to run when
# myResourceGroup exists, and deletes the group at the end unless KEEP=1.
set -euo pipefail
shopt -s inherit_errexit

ACRLOCAL=${ACRLOCAL:-acrlocal}
az() { $ACRLOCAL "$@"; }

say() { printf '\n### %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

for tool in skopeo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install $tool)"
done
if [ "$(az group exists --name myResourceGroup)" = true ]; then
  fail "myResourceGroup exists (from an earlier run?); delete it first: $ACRLOCAL group delete -n myResourceGroup --yes"
fi

work=$(mktemp -d)
cleanup() {
  rm -rf "$work"
  if [ "${KEEP:-0}" != 1 ] && [ "$(az group exists --name myResourceGroup 2>/dev/null)" = true ]; then
    az group delete --name myResourceGroup --yes >/dev/null || true
  fi
}
trap cleanup EXIT

say "Prerequisites: a resource group, a registry and a Docker-enabled VM"
az group create --name myResourceGroup --location westus --output none
az acr create --resource-group myResourceGroup --name mycontainerregistry --sku Basic --output none
az vm create \
    --resource-group myResourceGroup \
    --name myDockerVM \
    --image UbuntuLTS \
    --admin-username azureuser \
    --generate-ssh-keys

registryID=$(az acr show --resource-group myResourceGroup --name myContainerRegistry --query id --output tsv)
# Inside a VM the registry answers as in Azure: mycontainerregistry.azurecr.io.
loginServer=mycontainerregistry.azurecr.io
hostLoginServer=$(az acr show --resource-group myResourceGroup --name myContainerRegistry --query loginServer \
    --output tsv)
ca=$(az status --query caPath --output tsv)

say "An aci-helloworld:v1 image, pushed by a service principal with AcrPush"
layout="$work/aci-helloworld"
mkdir -p "$layout/blobs/sha256" "$work/rootfs"
printf 'Hello from acrlocal: this image was pulled with a managed identity.\n' > "$work/rootfs/hello.txt"
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" .
blob() { # blob FILE -> digest hex, the file stored in the layout
  local hex; hex=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$layout/blobs/sha256/$hex"; echo "$hex"
}
size() { stat -c %s "$1"; }
layer=$(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$layer" > "$work/config.json"
config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar")" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest" "$(size "$work/manifest.json")" > "$layout/index.json"

read -r appId password <<<"$(az ad sp create-for-rbac --name "acrPusher$RANDOM" --role acrpush \
    --scopes "$registryID" --query "[appId, password]" --output tsv | tr '\n' ' ')"
mkdir -p "$work/certs" && cp "$ca" "$work/certs/ca.crt"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$work/policy.json"
# As from CI: the service principal logs in to the registry with its app id and client secret.
skopeo login --authfile "$work/auth.json" --cert-dir "$work/certs" --username "$appId" --password-stdin \
    "$hostLoginServer" <<<"$password" >/dev/null
echo "logged in to $hostLoginServer as the service principal $appId"
skopeo --policy "$work/policy.json" copy --quiet --authfile "$work/auth.json" --dest-cert-dir "$work/certs" \
    "oci:$layout:v1" "docker://$hostLoginServer/aci-helloworld:v1"
echo "pushed $hostLoginServer/aci-helloworld:v1"

say "Example 1: a user-assigned identity"
az identity create --resource-group myResourceGroup --name myACRId --output none
userID=$(az identity show --resource-group myResourceGroup --name myACRId --query id --output tsv)
spID=$(az identity show --resource-group myResourceGroup --name myACRId --query principalId --output tsv)
az vm identity assign --resource-group myResourceGroup --name myDockerVM --identities "$userID"

say "On the VM, before the identity has a role on the registry: the pull is denied"
az ssh vm --resource-group myResourceGroup --name myDockerVM -- "
  if docker pull -q $loginServer/aci-helloworld:v1; then echo 'UNEXPECTED: pulled without a role'; exit 1; fi
  echo 'pull denied, as expected (no role assignment yet)'
"

resourceID=$(az acr show --resource-group myResourceGroup --name myContainerRegistry --query id --output tsv)
az role assignment create --assignee "$spID" --scope "$resourceID" --role acrpull --output none

say "On the VM: az login with the identity, az acr login, docker pull"
az ssh vm --resource-group myResourceGroup --name myDockerVM -- "
  set -e
  # the article's --username: az 2.91 and later take the identity as --resource-id (or --client-id)
  az login --identity --resource-id $userID --query '[].user' --output table
  az acr login --name myContainerRegistry
  docker pull $loginServer/aci-helloworld:v1
  docker images $loginServer/aci-helloworld
  echo 'push with AcrPull:'
  docker tag $loginServer/aci-helloworld:v1 $loginServer/aci-helloworld:pushed-by-the-vm
  if docker push -q $loginServer/aci-helloworld:pushed-by-the-vm; then echo 'UNEXPECTED: pushed'; exit 1; fi
  echo 'push denied, as expected (AcrPull only)'
"

say "Example 2: the VM's system-assigned identity"
az vm identity remove --resource-group myResourceGroup --name myDockerVM --identities "$userID" --output none
az vm identity assign --resource-group myResourceGroup --name myDockerVM
spID=$(az vm show --resource-group myResourceGroup --name myDockerVM --query identity.principalId --out tsv)
resourceID=$(az acr show --resource-group myResourceGroup --name myContainerRegistry --query id --output tsv)
az role assignment create --assignee "$spID" --scope "$resourceID" --role acrpull --output none

az ssh vm --resource-group myResourceGroup --name myDockerVM -- "
  set -e
  docker rmi -f $loginServer/aci-helloworld:v1 $loginServer/aci-helloworld:pushed-by-the-vm >/dev/null
  az login --identity --query '[].user' --output table
  az acr login --name myContainerRegistry
  docker pull $loginServer/aci-helloworld:v1
"

say "Without the system-assigned identity, the VM's credentials stop working"
az vm identity remove --resource-group myResourceGroup --name myDockerVM --identities '[system]' --output none
az ssh vm --resource-group myResourceGroup --name myDockerVM -- "
  docker rmi -f $loginServer/aci-helloworld:v1 >/dev/null
  if docker pull -q $loginServer/aci-helloworld:v1; then echo 'UNEXPECTED: pulled'; exit 1; fi
  echo 'pull denied, as expected (the identity is gone)'
  if az login --identity --output none; then echo 'UNEXPECTED: signed in'; exit 1; fi
  echo 'az login --identity refused, as expected'
"

say "Done: both examples of the tutorial ran on this machine"
