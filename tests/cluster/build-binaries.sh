#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules (through the Go module proxy) into
# $MODELDEPLOY_CACHE/bin: the control plane, the real node's kubelet and kube-proxy, CoreDNS and the
# CNCF distribution registry, kube-network-policies (the real node's NetworkPolicy enforcer), the
# helm-unittest plugin; and the Gateway API's and the Prometheus
# Operator's CRDs from their modules. Each binary is rebuilt only when its recipe changes (wrapper module
# go.mod/go.sum, package, flags, Go version), so a second run on the same machine takes seconds.
#
# Versions are pinned by the wrapper modules under tests/cluster/gotools/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}
bin=$cache/bin
mkdir -p "$bin"
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$cache/go-mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$cache/go-build}
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local

KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
REGISTRY_VERSION=v3.1.2
GATEWAY_API_VERSION=v1.3.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# Argo Rollouts, the anchor of the operator scale benchmark (bench/operator/scale.py): not part of the
# cluster, built only when asked (`build-binaries.sh argo-rollouts`). v1.10.1 is the newest release
# this Go (1.26.8) builds: v1.9.3 and v1.10.2 require go >= 1.26.10. Its client-go is v0.34.5, the
# cluster's minor version.
ARGO_ROLLOUTS_VERSION=v1.10.1

TAGS=selinux,notest

# The key of a binary is its recipe, not this whole script: editing the script (adding a binary)
# must not relink every other one, and checkouts on different commits share this bin folder.
key_of() {  # key_of MODULE-DIR PACKAGE LDFLAGS: the inputs that decide a binary's content
  { cat "$here/gotools/$1"/go.mod "$here/gotools/$1"/*.go; cat "$here/gotools/$1/go.sum" 2>/dev/null
    echo "$2|$3|$TAGS|$GOFLAGS|$CGO_ENABLED|$(go env GOVERSION)"; } | sha256sum | cut -c1-16
}

build() {  # build NAME MODULE-DIR PACKAGE [LDFLAGS]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-} key
  key=$(key_of "$dir" "$pkg" "$ldflags")
  [[ -x "$bin/$name" && "$(cat "$bin/.$name.key" 2>/dev/null)" == "$key" ]] && return 0
  echo "building $name from $pkg (cold builds take minutes)" >&2
  local started=$SECONDS tmp="$bin/.$name.tmp.$$"  # per-process: other checkouts may build at once
  (cd "$here/gotools/$dir" && go build -tags "$TAGS" -ldflags "-s -w $ldflags" -o "$tmp" "$pkg")
  mv "$tmp" "$bin/$name"
  echo "$key" > "$bin/.$name.key"
  echo "built $name in $((SECONDS - started))s" >&2
}

kube_ldflags() {
  local v=${KUBE_VERSION#v} out="" pkg
  local major=${v%%.*} minor=${v#*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    out+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$out"
}

helm_ldflags() {  # as helm's Makefile: the Kubernetes version `helm template` and `lint` assume
  # (else v1.20, which the chart's kubeVersion refuses); the cluster's minor version.
  local v=${KUBE_VERSION#v} out="" pkg
  local major=${v%%.*} minor=${v#*.}; minor=${minor%%.*}
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    out+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$out"
}

gateway_api_crds() {  # the standard-channel CRDs, as shipped in the Gateway API's Go module
  local dest=$cache/gateway-api-crds/$GATEWAY_API_VERSION
  [[ -f $dest/.done ]] && return 0
  local dir
  dir=$(cd "$here/gotools/kube" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$dest"
  cp "$dir"/config/crd/standard/*.yaml "$dest/"
  chmod u+w "$dest"/*.yaml
  touch "$dest/.done"
}

prometheus_operator_crds() {  # the monitoring.coreos.com CRDs, as shipped in the Prometheus Operator's Go module
  local dest=$cache/prometheus-operator-crds/$PROMETHEUS_OPERATOR_VERSION
  [[ -f $dest/.done ]] && return 0
  local dir
  dir=$(cd "$here/gotools/kube" && go mod download -json \
          "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$dest"
  cp "$dir"/example/prometheus-operator-crd/*.yaml "$dest/"
  chmod u+w "$dest"/*.yaml
  touch "$dest/.done"
}

kube_network_policies() {  # the module's own command, with gotools/kube-network-policies/host-daemon.patch
  # The patch: this kernel has no nft `queue` expression (CONFIG_NFT_QUEUE unset; nft_compat and the
  # xtables NFQUEUE target are built in), so packets reach the same nfnetlink queue through `xt NFQUEUE`;
  # a --kubeconfig flag (the command only knows the in-cluster config) and cleanup on SIGTERM, for a host
  # daemon. Built in a patched copy of the module (its own go.mod and go.sum pin the dependencies).
  local dir=kube-network-policies name=kube-network-policies key src mod started=$SECONDS
  key=$({ cat "$here/gotools/$dir"/go.mod "$here/gotools/$dir"/go.sum "$here/gotools/$dir"/host-daemon.patch
          echo "$GOFLAGS|$CGO_ENABLED|$(go env GOVERSION)"; } | sha256sum | cut -c1-16)
  [[ -x "$bin/$name" && "$(cat "$bin/.$name.key" 2>/dev/null)" == "$key" ]] && return 0
  echo "building $name from sigs.k8s.io/kube-network-policies (cold builds take minutes)" >&2
  mod=$(cd "$here/gotools/$dir" && go mod download -json sigs.k8s.io/kube-network-policies \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  src=$cache/src/$name.$$
  rm -rf "$src" && mkdir -p "$cache/src" && cp -r "$mod" "$src" && chmod -R u+w "$src"
  patch -s -p1 -d "$src" < "$here/gotools/$dir/host-daemon.patch"
  (cd "$src" && go build -ldflags "-s -w" -o "$bin/.$name.tmp.$$" ./cmd)
  mv "$bin/.$name.tmp.$$" "$bin/$name"
  echo "$key" > "$bin/.$name.key"
  rm -rf "$src"
  echo "built $name in $((SECONDS - started))s" >&2
}

argo_rollouts() {  # the module's own controller command and its CRDs, built in a copy of the module:
  # its go.mod replaces every k8s.io staging module (as k8s.io/kubernetes does), which only the main
  # module's go.mod can do, so it cannot be built from a wrapper module like the others.
  local name=rollouts-controller key src mod started=$SECONDS
  key=$(echo "$ARGO_ROLLOUTS_VERSION|$GOFLAGS|$CGO_ENABLED|$(go env GOVERSION)" | sha256sum | cut -c1-16)
  [[ -x "$bin/$name" && "$(cat "$bin/.$name.key" 2>/dev/null)" == "$key" ]] && return 0
  echo "building $name from github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION (cold builds take minutes)" >&2
  mod=$(cd "$here/gotools/kube" && go mod download -json "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  src=$cache/src/$name.$$
  rm -rf "$src" && mkdir -p "$cache/src" && cp -r "$mod" "$src" && chmod -R u+w "$src"
  (cd "$src" && go build -ldflags "-s -w" -o "$bin/.$name.tmp.$$" ./cmd/rollouts-controller)
  mv "$bin/.$name.tmp.$$" "$bin/$name"
  mkdir -p "$cache/argo-rollouts-crds/$ARGO_ROLLOUTS_VERSION"
  cp "$src"/manifests/crds/*-crd.yaml "$cache/argo-rollouts-crds/$ARGO_ROLLOUTS_VERSION/"
  echo "$key" > "$bin/.$name.key"
  rm -rf "$src"
  echo "built $name in $((SECONDS - started))s" >&2
}

helm_unittest() {  # helm-unittest as a helm plugin: $cache/helm-plugins/unittest (HELM_PLUGINS=$cache/helm-plugins)
  build untt helm-unittest github.com/helm-unittest/helm-unittest/cmd/helm-unittest "$(helm_ldflags)"
  local dest=$cache/helm-plugins/unittest key
  key=$(cat "$bin/.untt.key")
  [[ "$(cat "$dest/.key" 2>/dev/null)" == "$key" ]] && return 0
  mkdir -p "$dest"
  cp "$bin/untt" "$dest/untt.tmp.$$" && mv "$dest/untt.tmp.$$" "$dest/untt"
  # The module's own plugin.yaml names per-platform release binaries and an install hook that
  # downloads them; this one runs the binary built above.
  cat > "$dest/plugin.yaml" <<'YAML'
name: unittest
version: 1.1.2
usage: unittest for helm charts
description: helm-unittest, built from its Go module by tests/cluster/build-binaries.sh
ignoreFlags: false
command: $HELM_PLUGIN_DIR/untt
YAML
  echo "$key" > "$dest/.key"
}

one() {
  local name=$1
  case $name in
    etcd) build etcd etcd go.etcd.io/etcd/server/v3 \
            "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy)
          build "$name" kube "k8s.io/kubernetes/cmd/$name" "$(kube_ldflags)" ;;
    kwok) build kwok kwok sigs.k8s.io/kwok/cmd/kwok ;;
    helm) build helm helm helm.sh/helm/v3/cmd/helm "$(helm_ldflags)" ;;
    coredns) build coredns coredns . ;;  # the wrapper's own main: the plugins the Corefile uses
    pause) build pause pause modeldeploy.io/testcluster/pause ;;
    registry) build registry registry . \
                "-X github.com/distribution/distribution/v3/version.version=${REGISTRY_VERSION}" ;;
    kube-network-policies) kube_network_policies ;;
    gateway-api-crds) gateway_api_crds ;;
    prometheus-operator-crds) prometheus_operator_crds ;;
    helm-unittest) helm_unittest ;;
    argo-rollouts) argo_rollouts ;;
    *) echo "unknown binary: $name" >&2; exit 2 ;;
  esac
}

each() { for name in "$@"; do one "$name"; done; }

if [[ $# -gt 0 ]]; then
  each "$@"
else
  # Two lanes at once. One `go build` kept the 2 cores 77% busy in the cold install (process
  # accounting, CI 2026-12-03: 2,830 s of compiler and linker CPU in 1,839 s): links run on one core,
  # and module downloads on none. The Kubernetes binaries share one module and build cache entries,
  # so they stay in one lane, in order; the other modules share little with it or with each other.
  each etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy \
       gateway-api-crds prometheus-operator-crds &
  kube=$!
  each kube-network-policies kwok helm coredns registry pause helm-unittest &
  others=$!
  status=0
  wait "$kube" || status=$?
  wait "$others" || status=$?
  ((status == 0)) || exit "$status"
fi
echo "$bin"
