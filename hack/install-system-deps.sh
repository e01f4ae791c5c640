#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when one is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v go >/dev/null || need+=(golang-go)
command -v prometheus >/dev/null || need+=(prometheus)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)  # the Kafka broker of the stream tests
command -v mvn >/dev/null || need+=(maven)  # fetches that broker from Maven Central
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Kafka broker (jars from Maven Central, cached under $MODELDEPLOY_CACHE/kafka).
"$(dirname "$0")/../tests/kafka/fetch-kafka.sh" >/dev/null
