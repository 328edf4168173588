#!/usr/bin/env bash
# Build (once) the local base image for kvcpu-dev's container tests, for
# Docker or podman: Debian bookworm, python3 + venv + headers, gcc, libfuse3
# (fuse3, libfuse3-dev, pkg-config) and every Python dependency of the
# project as a Debian package (cffi, trio, click, numpy, pytest,
# hypothesis), so that the project's Dockerfile installs it with no network
# at all.
#
#   scripts/docker-image.sh [--engine docker|podman] [--rebuild] [--tag NAME:TAG]
#
# KVCPU_ROOTFS_CACHE=DIR keeps the rootfs tarball in DIR (named by the
# recipe's hash) and reuses it: the test suite builds it once for the
# Docker and the podman test, and removes DIR at its end.
#
# Why not `docker build FROM debian`: no image registry is reachable here.
# Debian's package mirror is, so mmdebstrap assembles a minimal rootfs from
# .debs and streams it as a tarball into `docker import`.  mmdebstrap rather
# than debootstrap: it resolves with apt, downloads in parallel, writes a
# tarball to stdout (no temp rootfs on disk) and is ~2x faster.
#
# Idempotent: the image carries a label with a hash of the recipe below; an
# image with the same tag and the same hash is reused (seconds), a different
# hash (recipe edited) triggers a rebuild.
#
# Docker: starts dockerd if none answers (via scripts/dockerd-ctl.sh) and
# leaves it running for the caller's `docker run`s; the caller stops it with
# `scripts/dockerd-ctl.sh stop` (which only stops a dockerd we started).
# podman needs no daemon.
#
# Exit codes: 0 ok, 77 cannot build here (no docker/dockerd or podman, no
# apt), 1 error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tag=kvcpu-dev-base:local
rebuild=0
engine=docker
while (($#)); do
    case $1 in
        --rebuild) rebuild=1 ;;
        --tag) tag=${2:?--tag needs a value}; shift ;;
        --engine) engine=${2:?--engine needs docker or podman}; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "docker-image: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

suite=bookworm
mirror=${KVCPU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${KVCPU_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# What the project needs to build its cffi extension against libfuse3 and
# to run it, all from Debian so that neither the image build nor `docker
# build` of the project (Dockerfile) touches PyPI:
#   build: python3-dev gcc libc6-dev pkg-config libfuse3-dev, python3-cffi
#          (cffi 1.15 in bookworm), python3-setuptools, python3-wheel, and
#          python3-venv (its pip wheel installs the project offline into a
#          venv with --system-site-packages)
#   run:   fuse3 (fusermount3), python3-trio, python3-click, python3-numpy,
#          python3-prometheus-client (--metrics), python3-rich (kvctl top)
#   test:  python3-pytest, python3-hypothesis (the live suite in a container)
# No python3-pip: Debian marks the system python externally managed anyway.
# ca-certificates: pip over https inside the container, should a user want it.
# procps/psmisc: pgrep/fuser for tests that poke at daemons.
packages=(
    python3 python3-venv python3-dev
    gcc libc6-dev pkg-config
    fuse3 libfuse3-dev
    python3-cffi python3-setuptools python3-wheel
    python3-trio python3-click python3-numpy
    python3-prometheus-client python3-rich
    python3-pytest python3-hypothesis
    ca-certificates procps psmisc
)
# Bump when something outside the package list changes the result.
recipe_version=1
recipe="v$recipe_version $suite $mirror ${packages[*]}"
recipe_hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)

case $engine in
    docker)
        if ! command -v docker >/dev/null; then
            echo "docker-image: docker CLI not installed; cannot build" >&2
            exit 77
        fi
        "$here/dockerd-ctl.sh" start ;;
    podman)
        if ! command -v podman >/dev/null; then
            echo "docker-image: podman not installed; cannot build" >&2
            exit 77
        fi ;;
    *) echo "docker-image: --engine is docker or podman, not $engine" >&2; exit 2 ;;
esac

existing=$($engine image inspect --format '{{ index .Config.Labels "kvcpu.recipe" }}' "$tag" 2>/dev/null || true)
old_id=$($engine image inspect --format '{{ .Id }}' "$tag" 2>/dev/null || true)
if ((!rebuild)) && [[ $existing == "$recipe_hash" ]]; then
    echo "docker-image: $tag is up to date (recipe $recipe_hash); reusing it"
    exit 0
fi

cached=
if [[ -n ${KVCPU_ROOTFS_CACHE:-} ]]; then
    cached=$KVCPU_ROOTFS_CACHE/kvcpu-rootfs-$recipe_hash.tar
fi

if [[ -z $cached || ! -s $cached ]] && ! command -v mmdebstrap >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "docker-image: mmdebstrap missing and cannot apt-get install it" >&2
        exit 77
    fi
    echo "docker-image: installing mmdebstrap"
    # -o ...=false on update: a stale third-party list must not block us.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap </dev/null >/dev/null
fi

echo "docker-image: building $tag from Debian $suite for $engine (recipe $recipe_hash)"
start=$(date +%s)
# Explicit mirror lines: mmdebstrap reads sources from stdin when stdin is
# not a tty, and CI runs us with stdin closed/null.
# --dpkgopt path-exclude: docs, man pages and translations are ~25% of the
# rootfs and nothing in a test container reads them.
# --aptopt: no recommends keeps gcc from pulling in the world.
# The customize hook writes the apt sources so that derived images (or a
# developer poking around) can `apt-get install` more.
# $1 is the rootfs path, expanded by mmdebstrap's hook shell, not by us.
# shellcheck disable=SC2016
cleanup_hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*'
if [[ -n $cached && -s $cached ]]; then
    echo "docker-image: reusing the rootfs $cached"
    rootfs=$cached
else
    if [[ -n $cached ]]; then  # built beside where it is kept: the move is a rename
        mkdir -p "$KVCPU_ROOTFS_CACHE"
        built=$(mktemp "$KVCPU_ROOTFS_CACHE/.kvcpu-rootfs.XXXXXX.tar")
    else
        built=$(mktemp "${TMPDIR:-/tmp}/kvcpu-rootfs.XXXXXX.tar")
    fi
    trap 'rm -f "$built"' EXIT
    mmdebstrap \
        --variant=minbase \
        --include="$(IFS=,; echo "${packages[*]}")" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook="$cleanup_hook" \
        --quiet \
        "$suite" "$built" \
        "deb $mirror $suite main" \
        "deb $mirror $suite-updates main" \
        "deb $security_mirror $suite-security main" \
        </dev/null
    rootfs=$built
    if [[ -n $cached ]]; then  # kept for the next engine or run (KVCPU_ROOTFS_CACHE)
        mv "$built" "$cached"
        rootfs=$cached
    fi
fi
# A tarball file rather than a pipe: a failed mmdebstrap must not leave a
# half-imported image behind under our tag.
quiet=()
[[ $engine == podman ]] && quiet=(--quiet)  # no progress on stderr
$engine import "${quiet[@]}" \
    --change "LABEL kvcpu.recipe=$recipe_hash" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$rootfs" "$tag" >/dev/null
# The previous build lost its tag; drop it unless a container still uses it.
new_id=$($engine image inspect --format '{{ .Id }}' "$tag")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    $engine image rm "$old_id" >/dev/null 2>&1 || true
fi
end=$(date +%s)
size=$($engine image inspect --format '{{ .Size }}' "$tag")
echo "docker-image: built $tag in $((end - start))s, $((size / 1024 / 1024)) MiB"
