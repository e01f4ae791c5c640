#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, an npm package) into
# $MODELDEPLOY_CACHE/azurite/<version> with the machine's npm; idempotent (a finished install leaves a
# .complete marker and is not repeated). Prints the path of its blob server's entry point, which the
# Azure Blob tests run with node on 127.0.0.1 (tests/integration/serving/test_storage_azure_identity.py).
#   AZURITE_VERSION=3.37.0 tests/azure/fetch-azurite.sh
set -euo pipefail
version=${AZURITE_VERSION:-3.37.0}
cache=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/azurite/$version
entry=$cache/node_modules/azurite/dist/src/blob/main.js
if [[ -f $cache/.complete ]]; then
  echo "$entry"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-azurite: npm is missing (apt-get install nodejs npm)" >&2; exit 1; }
rm -rf "$cache.partial"
mkdir -p "$cache.partial"
# --ignore-scripts: Azurite needs no install step of its own; nothing from the registry runs here.
npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$cache.partial" "azurite@$version" >&2
rm -rf "$cache"
mv "$cache.partial" "$cache"
touch "$cache/.complete"
echo "$entry"
