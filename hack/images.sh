#!/usr/bin/env bash
# Builds the serving and operator images without a Docker daemon, exports OCI archives and pushes them.
#
#   hack/images.sh [serving|operator]...        (no argument: both)
#
# Environment:
#   REGISTRY           where to push (default 10.244.0.1:5000, the local cluster's registry; plain HTTP)
#   PUSH               1 (default) pushes to $REGISTRY; 0 builds and exports only
#   REGISTRY_AUTH_FILE the login buildah pushes with (buildah's own; default: where `buildah login` saves it)
#   EXPORT             1 (default) writes the OCI archives; 0 skips them (the test sessions and the demo
#                      push or read buildah's storage instead: the serving archive took 27-62 s per source edit)
#   MODELDEPLOY_CACHE  cache root (default ~/.cache/modeldeploy); everything lives in $MODELDEPLOY_CACHE/images
#   TLS_VERIFY         verify the registry's TLS certificate: false for the local cluster's registry and
#                      loopback addresses (plain HTTP), true for any other registry unless set
#   CA_BUNDLE          CA bundle the build trusts for PyPI (default: $SSL_CERT_FILE or the system bundle)
#   BASE_EPOCH         any string: a new value makes the Debian base again (security updates), e.g.
#                      BASE_EPOCH=$(date +%Y-%m) for a monthly base; unset, the base is made once
#
# How: buildah (`bud --pull-never --isolation chroot`, overlay storage in the cache folder) builds
# serving/Dockerfile and operator/Dockerfile unchanged, with their base images given as build arguments:
# here no public registry is reachable, so the bases are made from Debian packages (mmdebstrap minbase
# with python3, made an OCI image by umoci, copied into buildah's storage by skopeo). The build base is
# that base plus python3-pip and a C compiler with Python's headers (the final stage has neither). Bases
# are cached by their recipe; images by a stamp hashing the Dockerfile, every file it copies, the base
# image ids and the build arguments: a warm run with unchanged inputs builds nothing. The revision label
# is not part of the stamp (it would rebuild every commit): it names the commit the image was first built
# from, whose inputs are the current ones.
#
# Output: $REGISTRY/modeldeploy/<name>:<chart appVersion> in buildah's storage and in the registry, and
# $MODELDEPLOY_CACHE/images/archives/<name>-<version>.oci.tar. The last lines (stdout) are
# `<name> <image reference> <image id>`, one per image.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}
DIR=$CACHE/images
STORAGE=$DIR/storage
RUNROOT=$DIR/run
REGISTRY=${REGISTRY:-10.244.0.1:5000}
PUSH=${PUSH:-1}
EXPORT=${EXPORT:-1}
# Plain HTTP (no TLS verification) for the local cluster's registry and loopback ones; verified TLS for
# any other registry unless TLS_VERIFY=false.
case $REGISTRY in
  10.244.0.1:* | 127.* | localhost | localhost:*) TLS_VERIFY=${TLS_VERIFY:-false} ;;
  *) TLS_VERIFY=${TLS_VERIFY:-true} ;;
esac
SOURCE_URL=${SOURCE_URL:-https://github.com/modeldeploy/modeldeploy}
# The CA bundle the build stage trusts for PyPI (a TLS-inspecting proxy's CA lives there); handed to the
# build as a secret, so it is in no layer. Empty: the base image's own trust store.
CA_BUNDLE=${CA_BUNDLE-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
VERSION=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$ROOT/charts/modeldeploy/Chart.yaml")
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
SUITE=bookworm
RUNTIME_PACKAGES=python3,ca-certificates
# gcc, libc6-dev and Python's headers compile serving's C extension modules (serving/hatch_build.py) in
# the build stage only; the runtime base and the final stages get no compiler.
BUILD_EXTRA_PACKAGES=python3-pip,gcc,libc6-dev,libpython3.11-dev
# Docs, manuals and translations out of the bases (licenses stay), as Debian's own slim images do.
DPKG_OPTS=(
  "path-exclude=/usr/share/doc/*" "path-include=/usr/share/doc/*/copyright"
  "path-exclude=/usr/share/man/*" "path-exclude=/usr/share/info/*" "path-exclude=/usr/share/locale/*"
  "path-exclude=/usr/share/lintian/*"
)

IMAGES=("$@")
[[ ${#IMAGES[@]} -eq 0 ]] && IMAGES=(serving operator)

log() { printf '%s images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# TMPDIR: buildah keeps RUN --mount=type=cache folders (uv's download cache) under it, so they live in
# the cache folder too (an empty cache folder is a cold build).
bh() { TMPDIR=$DIR/tmp buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver overlay "$@"; }
CS="containers-storage:[overlay@$STORAGE+$RUNROOT]"
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

[[ $(id -u) -eq 0 ]] || die "buildah's overlay storage and mmdebstrap need root here (run as root)"
for tool in buildah skopeo umoci mmdebstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-system-deps.sh (make system-deps)"
done
[[ -n $VERSION ]] || die "no appVersion in charts/modeldeploy/Chart.yaml"
mkdir -p "$DIR/archives" "$DIR/stamps" "$DIR/tmp"
exec 9>"$DIR/lock"
flock 9  # one build at a time per cache (a test session and a make run may overlap)

image_id() { bh inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }

# A base image from Debian packages, cached by its recipe. Prints its reference.
base_image() {
  local name=$1 packages=$2 key ref tmp started
  key=$(printf '%s\n' "base-recipe-2 merged-usr-hook" "$SUITE" minbase "$packages" "${DPKG_OPTS[@]}" \
    ${BASE_EPOCH:+"epoch=$BASE_EPOCH"} | sha256sum | cut -c1-16)
  ref=localhost/modeldeploy/$name:$key
  if [[ -n $(image_id "$ref") ]]; then
    echo "$ref"
    return
  fi
  started=$(now)
  log "making $ref from Debian packages ($SUITE minbase + $packages)"
  tmp=$(mktemp -d "$DIR/tmp/base.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  local opts=()
  for opt in "${DPKG_OPTS[@]}"; do opts+=("--dpkgopt=$opt"); done
  # The merged-usr hook makes /usr merged without the usrmerge package (and the 50 MB of Perl it needs).
  mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" "${opts[@]}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --format=tar "$SUITE" "$tmp/rootfs.tar" >&2
  umoci init --layout "$tmp/oci"
  umoci new --image "$tmp/oci:base"
  umoci raw add-layer --image "$tmp/oci:base" "$tmp/rootfs.tar"
  umoci config --image "$tmp/oci:base" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.cmd python3 \
    --config.label "org.opencontainers.image.description=Debian $SUITE minbase + $packages (mmdebstrap)"
  skopeo copy --quiet "oci:$tmp/oci:base" "$CS$ref" >&2
  log "made $ref in $(since "$started")s"
  echo "$ref"
}

# The build stage's base: the runtime base plus pip (from the same Debian mirror), so both stages have
# the same Python at the same path, which the virtualenv copied between them relies on.
build_base() {
  local runtime=$1 runtime_id=$2 key ref ctr started
  key=$(printf '%s\n' "build-recipe-1" "$runtime_id" "$BUILD_EXTRA_PACKAGES" | sha256sum | cut -c1-16)
  ref=localhost/modeldeploy/python-build:$key
  if [[ -n $(image_id "$ref") ]]; then
    echo "$ref"
    return
  fi
  started=$(now)
  log "making $ref: $runtime + $BUILD_EXTRA_PACKAGES"
  ctr=$(bh from --pull-never --quiet "$runtime")
  bh run --isolation chroot "$ctr" -- sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends ${BUILD_EXTRA_PACKAGES//,/ } >/dev/null \
    && rm -rf /var/lib/apt/lists/*" >&2
  bh commit --quiet "$ctr" "$ref" >/dev/null
  bh rm "$ctr" >/dev/null
  log "made $ref in $(since "$started")s"
  echo "$ref"
}

# The files a Dockerfile COPYs from the build context (not --from another stage), one per line.
copied_files() {
  local dockerfile=$1 path
  awk 'toupper($1) == "COPY" && $0 !~ /--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$dockerfile" |
    while read -r path; do
      path=${path%/}
      [[ -e $ROOT/$path ]] || die "$dockerfile copies $path, which does not exist"
      if [[ -d $ROOT/$path ]]; then
        # What .dockerignore leaves out of the build context: bytecode, and C extension modules an
        # editable install compiled in place (the image compiles its own).
        (cd "$ROOT" && find "$path" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.so')
      else
        echo "$path"
      fi
    done | sort -u
}

# The content-addressed stamp of one image: every input that changes what the build produces.
stamp_of() {
  local dockerfile=$1 runtime_id=$2 build_id=$3
  {
    echo "stamp-1 version=$VERSION source=$SOURCE_URL runtime=$runtime_id build=$build_id"
    (cd "$ROOT" && sha256sum "${dockerfile#"$ROOT"/}" .dockerignore)
    copied_files "$dockerfile" | (cd "$ROOT" && xargs -r sha256sum)
  } | sha256sum | cut -c1-16
}

started_all=$(now)
t=$(now)
RUNTIME_BASE=$(base_image python-runtime "$RUNTIME_PACKAGES")
RUNTIME_ID=$(image_id "$RUNTIME_BASE")
BUILD_BASE=$(build_base "$RUNTIME_BASE" "$RUNTIME_ID")
BUILD_ID=$(image_id "$BUILD_BASE")
log "bases ready in $(since "$t")s: $RUNTIME_BASE, $BUILD_BASE"

results=()
for name in "${IMAGES[@]}"; do
  case $name in
    serving | operator) ;;
    *) die "unknown image $name (serving or operator)" ;;
  esac
  dockerfile=$ROOT/$name/Dockerfile
  ref=$REGISTRY/modeldeploy/$name:$VERSION
  stamp=$(stamp_of "$dockerfile" "$RUNTIME_ID" "$BUILD_ID")
  stamped=localhost/modeldeploy/$name:stamp-$stamp
  t=$(now)
  if [[ -n $(image_id "$stamped") ]]; then
    log "$name: inputs unchanged (stamp $stamp): not rebuilt"
  else
    log "$name: building (stamp $stamp)"
    secret=()
    [[ -n $CA_BUNDLE && -s $CA_BUNDLE ]] && secret=(--secret "id=ca-bundle,src=$CA_BUNDLE")
    # One retry: a RUN step failed once (2026-12-02, two image builds at once on the machine) with
    # "Close_Fd sealing memfd copy: Device or resource busy", a transient EBUSY from sealing the memfd
    # copy of the runtime binary; the layers already built are reused (--layers).
    for attempt in 1 2; do
      bh bud --quiet --pull-never --isolation chroot --layers "${secret[@]}" \
        --build-arg "PYTHON_IMAGE=$RUNTIME_BASE" --build-arg "BUILD_IMAGE=$BUILD_BASE" \
        --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE_URL" \
        -f "$dockerfile" -t "$stamped" "$ROOT" >&2 && break
      [[ $attempt == 2 ]] && exit 1
      log "$name: build failed; trying once more"
    done
    # Older stamps of this image are superseded: remove all but the newest two, so that switching between
    # two checkouts (worktrees) reuses their builds while old stamps no longer pile up. A name as the
    # argument of `buildah images` must match a tag exactly ("image not known" for a bare name, and
    # the error was ignored: until 2026-12-04 nothing was removed, ~20 stale stamps and their layers
    # filled the disk), so filter by reference.
    bh images --noheading --format '{{.CreatedAtRaw}}|{{.Name}}:{{.Tag}}' --filter "reference=localhost/modeldeploy/$name" |
      { grep "|localhost/modeldeploy/$name:stamp-" || true; } | sort -r | cut -d'|' -f2 |
      { grep -v ":stamp-$stamp\$" || true; } | tail -n +3 | while read -r old; do
        bh rmi "$old" >/dev/null || log "$name: could not remove the superseded $old"
      done
    log "$name: built in $(since "$t")s"
  fi
  bh tag "$stamped" "$ref"
  id=$(image_id "$stamped")

  archive=$DIR/archives/$name-$VERSION.oci.tar
  if [[ $EXPORT == 1 && ( ! -f $archive || $(cat "$DIR/stamps/$name.archive" 2>/dev/null) != "$stamp" ) ]]; then
    t=$(now)
    rm -f "$archive"
    bh push --quiet "$stamped" "oci-archive:$archive:modeldeploy/$name:$VERSION" >&2
    echo "$stamp" >"$DIR/stamps/$name.archive"
    log "$name: exported $archive in $(since "$t")s"
  fi

  if [[ $PUSH == 1 ]]; then
    t=$(now)
    bh push --quiet --tls-verify="$TLS_VERIFY" "$stamped" "docker://$ref" >&2 ||
      die "push to $REGISTRY failed (is the registry up? PUSH=0 builds without pushing)"
    log "$name: pushed $ref in $(since "$t")s"
  fi
  results+=("$name $ref $id")
done
log "done in $(since "$started_all")s"
printf '%s\n' "${results[@]}"
