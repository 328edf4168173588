#!/usr/bin/env bash
# Idempotent set-up on Debian: system packages, then a venv in .venv with
# kvcpu-dev installed (editable) and its test tools.  Safe to run again:
# each step is skipped when already done.
#   --test   also what the integration tests use: User-Mode Linux (a kernel
#            with CUSE), Docker and mmdebstrap (a local base image)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc kmod util-linux)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# Python.h for the cffi extension (a pyenv or other built Python has its own).
[[ -f $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h ]] \
  || missing+=(python3-dev)
if [[ ${1:-} == --test ]]; then
  # By the programs the tests run, not the package names (Docker CE instead
  # of docker.io is fine), and by the daemon, not the client: a machine may
  # ship a `docker` client with no dockerd behind it.
  have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]; }
  have linux.uml || missing+=(user-mode-linux)
  have dockerd || missing+=(docker.io)
  have mmdebstrap || missing+=(mmdebstrap)
  have promtool || missing+=(prometheus)  # promtool check metrics (the bench's /metrics test)
fi
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] && SUDO= || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Reinstall only when the package definition or the native binding changed.
stamp=.venv/.kvcpu-installed
want=$(cat pyproject.toml setup.py kvcpu_dev/native/build.py kvcpu_dev/native/*.[ch] kvcpu_dev/device/regs.py | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
built=(kvcpu_dev/native/_fuse*.so)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -e ${built[0]} ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# Byte-compiled, as a regular (not editable) install is: where
# PYTHONDONTWRITEBYTECODE is set (containers, this CI) Python would compile
# every module of ours at every start, ~80 ms of a ~0.3 s daemon start and
# of each kvctl command.  Up-to-date files are skipped.
.venv/bin/python -m compileall -q -j0 kvcpu_dev kvctl

# `sudo kvcpu-dev` and `kvctl` from anywhere, as the README promises.
if [[ $(id -u) == 0 && -d /usr/local/bin ]]; then
  for cmd in kvcpu-dev kvctl; do
    ln -sfn "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
  done
fi
