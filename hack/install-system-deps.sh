#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when one is missing.
#
# The local cluster's real node needs containerd (Debian's 1.6 is enough for kubelet 1.34, which falls
# back when the CRI RuntimeConfig call is missing), runc (crun fails on this machine's hybrid cgroup
# layout), the standard CNI plugins, nft/iptables (kube-proxy, CNI portmap) and, to build the small
# images it runs, buildah and busybox-static (skopeo and umoci inspect and unpack images).
set -euo pipefail
need=()
have_file() { [[ -e $1 ]]; }
command -v ip >/dev/null || need+=(iproute2)
command -v go >/dev/null || need+=(golang-go)
command -v prometheus >/dev/null || need+=(prometheus)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
have_file /usr/lib/cni/bridge || need+=(containernetworking-plugins)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v buildah >/dev/null || need+=(buildah)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
# Debian's plain busybox is dynamically linked: the test image needs the static one.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing packages: ${need[*]} (install them, or run as root)" >&2
  exit 1
fi
apt-get update -qq
# containerd's package would start the system's containerd service; there is no init system here to
# start it, and the cluster runs a private containerd of its own anyway.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
