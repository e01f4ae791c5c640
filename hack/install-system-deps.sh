#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when one is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v go >/dev/null || need+=(golang-go)
command -v prometheus >/dev/null || need+=(prometheus)
# the label joiner's PostgreSQL tests run a private server from these binaries (initdb, pg_ctl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v setpriv >/dev/null || need+=(util-linux)
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing packages: ${need[*]} (install them, or run as root)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
