#!/usr/bin/env bash
# The container test by hand, one command: tests/test_docker.py, verbose,
# with its timings printed at the end.
#
#   sudo scripts/docker-test.sh [--reduced] [--keep-base] [PYTEST ARGS...]
#
# It starts dockerd if none answers (and stops it again), builds the base
# image kvcpu-dev-base:local if missing (about 75 s; removed again at the end
# if it built it, unless --keep-base), builds the project image from
# Dockerfile under a unique test tag with --network none (removed at the
# end), runs `kvcpu-dev --mock --foreground` in a container with
# --device /dev/fuse --cap-add SYS_ADMIN, and runs the client suite inside:
# kvctl, Python fcntl, a gcc-built C client, attribute files, errnos, the
# HEALTHCHECK, the live pytest suite (tests/live) and the recipes of
# docs/containers.md, then `docker stop` (SIGTERM, exit 0).  Nothing is left
# running or mounted, even on failure.
#
#   --reduced     skip the live suite inside the container (KVCPU_DOCKER_LIVE=0)
#   --keep-base   keep a base image built by this run (KVCPU_DOCKER_KEEP_BASE=1)
#
# Set-up first (scripts/setup.sh --test: docker.io, mmdebstrap, the .venv).
# A skip becomes a failure here (KVCPU_REQUIRE_DOCKER=1): asked for by hand,
# the test must run.  Exit code: pytest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

args=()
while (($#)); do
    case $1 in
        --reduced) export KVCPU_DOCKER_LIVE=0 ;;
        --keep-base) export KVCPU_DOCKER_KEEP_BASE=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done

if [[ $(id -u) != 0 ]]; then
    echo "docker-test: run as root (sudo): it may start dockerd and makes a shared bind mount" >&2
    exit 1
fi
bash scripts/setup.sh --test >/dev/null
export KVCPU_REQUIRE_DOCKER=1
start=$(date +%s)
rc=0
.venv/bin/python -m pytest tests/test_docker.py -v -p no:cacheprovider "${args[@]}" </dev/null || rc=$?
echo "docker-test: exit $rc after $(( $(date +%s) - start ))s"
exit "$rc"
