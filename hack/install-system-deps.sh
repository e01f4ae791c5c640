#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and `make images` need, only when one is missing,
# then fetches the Kafka broker's jars (cached).
#
# - iproute2, go, prometheus: the local control plane, its pod network, the analysis tests.
# - The local cluster's real node: containerd (Debian's 1.6 is enough for kubelet 1.34, which falls
#   back when the CRI RuntimeConfig call is missing), runc (crun fails on this machine's hybrid cgroup
#   layout), the standard CNI plugins, nft/iptables (kube-proxy, CNI portmap), busybox-static (a tiny
#   test image; Debian's plain busybox is dynamically linked), patch (build-binaries.sh patches
#   kube-network-policies for this kernel).
# - Images without a Docker daemon (make images, tests/integration/images): buildah builds, mmdebstrap
#   and umoci make the Debian base, skopeo moves images between storages, runc runs the smoke tests.
# - java and maven: the Kafka broker of the stream tests, fetched from Maven Central.
# - postgresql, util-linux: the label joiner's PostgreSQL tests run a private server (initdb, pg_ctl)
#   as an unprivileged user (setpriv).
# - nodejs, npm: Azurite (the Azure Storage emulator, an npm package) for the Azure Blob tests.
# - wrk: the HTTP load generator of the serving and router benchmarks (bench/; not the tests).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v go >/dev/null || need+=(golang-go)
command -v prometheus >/dev/null || need+=(prometheus)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -e /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v patch >/dev/null || need+=(patch)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v buildah >/dev/null || need+=(buildah)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v setpriv >/dev/null || need+=(util-linux)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v wrk >/dev/null || need+=(wrk)
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
  apt-get update -qq
  # containerd's package would start the system's containerd service; there is no init system here to
  # start it, and the cluster runs a private containerd of its own anyway.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Kafka broker (jars from Maven Central, cached under $MODELDEPLOY_CACHE/kafka).
"$(dirname "$0")/../tests/kafka/fetch-kafka.sh" >/dev/null
# Azurite, the Azure Storage emulator of the Azure Blob tests (npm, cached under $MODELDEPLOY_CACHE/azurite).
"$(dirname "$0")/../tests/azure/fetch-azurite.sh" >/dev/null
