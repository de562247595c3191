#!/usr/bin/env bash
# Builds the sms-gateway image with no registry at all: the runtime base is made with
# debootstrap from the Debian mirror apt uses, the binary is built on this host, and
# deploy/Dockerfile's `prebuilt` target puts them together. With --test-images it also
# makes the images the stack test runs instead of the public ones (deploy/test/Dockerfile):
# Redis, the nginx edge, Prometheus and Alertmanager from Debian's packages, and
# stand-ins for Consul (the project's Consul API double) and Jaeger (an OTLP receiver).
#
#   deploy/build-local.sh [--image NAME] [--tag TAG] [--binary PATH] [--test-images]
#   deploy/build-local.sh --bases-only [--test-images]
#
#   --image, --tag   the image to build (default sms-gateway:latest, or $SMS_IMAGE:$SMS_TAG)
#   --binary PATH    use this sms-gateway binary instead of `cargo build --release`
#   --test-images    also build sms-test/{edge,redis,consul,jaeger,prometheus,alertmanager}:local
#   --bases-only     only make (or load from the cache) the debootstrapped bases
#
# The debootstrapped bases are cached: as images in the engine and as tarballs in
# $SMS_BUILD_CACHE (default ~/.cache/sms-gateway), so only the first run downloads
# anything; a change of the package lists below makes new ones. Needs root (or sudo) for
# debootstrap, the docker CLI and a running engine; set SMS_DEBIAN_MIRROR to override the
# mirror. Prints the image names and sizes at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SMS_IMAGE:-sms-gateway}
tag=${SMS_TAG:-latest}
binary=""
test_images=false
bases_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --test-images) test_images=true; shift ;;
    --bases-only) bases_only=true; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build-local.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

release=bookworm
cache=${SMS_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sms-gateway}
# The gateway's runtime base: what debian:bookworm-slim offers (glibc, sh, passwd,
# ca-certificates). The services' base adds the packages the other stack images run.
runtime_packages=ca-certificates
services_packages=ca-certificates,redis-server,nginx-light,prometheus,prometheus-alertmanager

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

log() { echo "build-local.sh: $*" >&2; }

# The Debian mirror apt is configured with (one-line or deb822 sources), for $release.
debian_mirror() {
  if [ -n "${SMS_DEBIAN_MIRROR:-}" ]; then
    echo "$SMS_DEBIAN_MIRROR"
    return
  fi
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local found
  found=$(awk -v rel="$release" '
    /^[[:space:]]*deb[[:space:]]/ {
      # deb [options] URI suite components
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == rel) { print $i; exit }
    }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (j = 2; j <= NF; j++) if ($j == rel && uri != "") { print uri; exit } }
    /^[[:space:]]*$/ { uri = "" }
  ' "${files[@]}" 2>/dev/null || true)
  echo "${found:-http://deb.debian.org/debian}"
}

# A short hash of the inputs of a base, so a changed package list makes a new one.
base_key() { printf '%s %s %s' "$release" "$1" "$(debian_mirror)" | sha256sum | cut -c1-10; }

# Makes (or reuses) the base image with the given package list; prints its name.
ensure_base() {
  local name=$1 packages=$2
  local key
  key=$(base_key "$packages")
  local ref="sms-local/${name}:${release}-${key}"
  local tarball="${cache}/${name}-${release}-${key}.tar"
  if docker image inspect "$ref" >/dev/null 2>&1; then
    log "base $ref: present"
  else
    if [ ! -s "$tarball" ]; then
      local mirror root started
      mirror=$(debian_mirror)
      mkdir -p "$cache/debs"
      root=$(mktemp -d "${cache}/rootfs.XXXXXX")
      started=$(date +%s)
      log "base $ref: debootstrap $release ($packages) from $mirror"
      # --cache-dir keeps the downloaded packages for the next base or run.
      $sudo debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        "$release" "$root" "$mirror" >"${root}.log" 2>&1 || {
        tail -20 "${root}.log" >&2
        $sudo rm -rf "$root"
        exit 1
      }
      # What debian:*-slim leaves out as well: package lists, docs, man pages, locales.
      $sudo rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
      $sudo find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
      # The engine supplies these per container.
      $sudo rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
      $sudo tar --numeric-owner -C "$root" -cf "${tarball}.tmp" .
      $sudo chown "$(id -u):$(id -g)" "${tarball}.tmp"
      mv "${tarball}.tmp" "$tarball"
      $sudo rm -rf "$root" "${root}.log"
      log "base $ref: debootstrap took $(($(date +%s) - started)) s"
    fi
    docker import --change 'CMD ["/bin/bash"]' "$tarball" "$ref" >/dev/null
    log "base $ref: imported from $tarball"
  fi
  echo "$ref"
}

# BuildKit runs the Dockerfiles (RUN --mount, COPY --chmod). A docker CLI of version 23+
# needs the buildx plugin for it; an older CLI has BuildKit built in (DOCKER_BUILDKIT=1).
# Uses the first docker on PATH that can.
build_cli=""
pick_build_cli() {
  if docker buildx version >/dev/null 2>&1; then
    build_cli=docker
    return
  fi
  local candidate major
  while read -r candidate; do
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
      build_cli=$candidate
      return
    fi
  done < <(type -ap docker)
  echo "build-local.sh: no docker CLI with BuildKit: install the buildx plugin" >&2
  exit 1
}
docker_build() { DOCKER_BUILDKIT=1 "$build_cli" build --progress=plain "$@"; }

docker info >/dev/null 2>&1 || { echo "build-local.sh: the Docker engine is not reachable" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || { echo "build-local.sh: debootstrap is not installed" >&2; exit 1; }
pick_build_cli
mkdir -p "$cache"

started=$(date +%s)
runtime_base=$(ensure_base debian "$runtime_packages")
services_base=""
if $test_images; then
  services_base=$(ensure_base debian-services "$services_packages")
fi
if $bases_only; then
  log "bases ready in $(($(date +%s) - started)) s"
  exit 0
fi

if [ -z "$binary" ]; then
  log "cargo build --release --locked --bin sms-gateway"
  cargo build --release --locked --bin sms-gateway
  binary=target/release/sms-gateway
fi

# A small context: the binaries and the files the Dockerfiles copy, not the repository
# (whose .dockerignore keeps target/ out).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/prebuilt" "$context/deploy/test"
cp "$binary" "$context/prebuilt/sms-gateway"
cp deploy/docker-entrypoint.sh "$context/deploy/"
log "image ${image}:${tag}"
docker_build -f deploy/Dockerfile --target prebuilt \
  --build-arg RUNTIME_BASE="$runtime_base" -t "${image}:${tag}" "$context" >"$context/build.log" 2>&1 || {
  cat "$context/build.log" >&2
  exit 1
}

built=("${image}:${tag}")
if $test_images; then
  log "cargo build --locked --example consul_double --example otlp_receiver"
  cargo build --locked --example consul_double --example otlp_receiver
  cp target/debug/examples/consul_double target/debug/examples/otlp_receiver "$context/prebuilt/"
  cp deploy/test/consul-entrypoint.sh "$context/deploy/test/"
  for part in edge redis consul jaeger prometheus alertmanager; do
    log "image sms-test/${part}:local"
    docker_build -f deploy/test/Dockerfile --target "$part" \
      --build-arg RUNTIME_BASE="$runtime_base" --build-arg SERVICES_BASE="$services_base" \
      -t "sms-test/${part}:local" "$context" >"$context/build.log" 2>&1 || {
      cat "$context/build.log" >&2
      exit 1
    }
    built+=("sms-test/${part}:local")
  done
fi

log "done in $(($(date +%s) - started)) s"
for ref in "${built[@]}"; do
  size=$(docker image inspect --format '{{.Size}}' "$ref")
  echo "${ref} $((size / 1000000)) MB"
done
