#!/usr/bin/env bash
# Fetches an Apache Kafka broker (KRaft mode) and its dependency closure from Maven Central into
# $MODELDEPLOY_CACHE/kafka/<version>/libs with the machine's mvn; idempotent (a finished fetch
# leaves a .complete marker and is not repeated). Prints the libs folder.
#   KAFKA_VERSION=4.1.1 tests/kafka/fetch-kafka.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${KAFKA_VERSION:-4.1.1}
cache=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/kafka/$version
if [[ -f $cache/.complete ]]; then
  echo "$cache/libs"
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch-kafka: mvn is missing (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: java is missing (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
rm -rf "$cache/libs.partial"
mkdir -p "$cache"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
  -Dkafka.version="$version" -DincludeScope=runtime -DoutputDirectory="$cache/libs.partial" >&2
rm -rf "$cache/libs"
mv "$cache/libs.partial" "$cache/libs"
touch "$cache/.complete"
echo "$cache/libs"
