#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and `make images` need, only when one is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v go >/dev/null || need+=(golang-go)
command -v prometheus >/dev/null || need+=(prometheus)
# Images without a Docker daemon (make images, tests/integration/images): buildah builds, mmdebstrap and
# umoci make the Debian base, skopeo moves images between storages, runc runs the smoke tests.
command -v buildah >/dev/null || need+=(buildah)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v runc >/dev/null || need+=(runc)
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing packages: ${need[*]} (install them, or run as root)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
