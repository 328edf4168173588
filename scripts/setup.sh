#!/usr/bin/env bash
# Idempotent set-up on Debian: system packages, then a venv in .venv with
# kvcpu-dev installed (editable) and its test tools.  Safe to run again:
# each step is skipped when already done.
#   (alone)  the device: fuse3 libfuse3-dev pkg-config gcc kmod util-linux
#            (and python3-venv, python3-dev if missing); .venv with the test
#            extra; kvcpu-dev, kvctl and kvcpu-eval linked into /usr/local/bin
#   --test   also what the whole suite needs (each missing one only), none
#            left enabled or running (scripts/install-packages.sh):
#              user-mode-linux  a kernel with CUSE (tests/test_uml.py)
#              docker.io        dockerd, started by tests/test_docker.py
#              mmdebstrap       the containers' Debian base image
#              podman           the CDI test (tests/test_podman.py)
#              promtool         the metrics test's check of the exposition:
#                               the one program, taken out of Debian's
#                               prometheus package into .venv/bin (not the
#                               server, its exporters or their services)
#            and the eval extra in .venv (matplotlib, tqdm: kvcpu-eval's
#            plot and its tests).  The README's "The two commands" has the
#            sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc kmod util-linux)
if [[ $(id -u) == 0 ]]; then SUDO=(); else SUDO=(sudo); fi
test_setup=0
[[ ${1:-} == --test ]] && test_setup=1

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# Python.h for the cffi extension (a pyenv or other built Python has its own).
[[ -f $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h ]] \
  || missing+=(python3-dev)
# By the programs the tests run, not the package names (Docker CE instead
# of docker.io is fine), and by the daemon, not the client: a machine may
# ship a `docker` client with no dockerd behind it.
have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]; }
if ((test_setup)); then
  have linux.uml || missing+=(user-mode-linux)
  have dockerd || missing+=(docker.io)
  have mmdebstrap || missing+=(mmdebstrap)
  have podman || missing+=(podman)
fi
if ((${#missing[@]})); then
  bash scripts/install-packages.sh "${missing[@]}"
fi

# Reinstall only when the package definition or the native binding changed,
# or when the extras asked for are not all in.  The stamp: hash, extras.
extras=test
((test_setup)) && extras=test,eval
stamp=.venv/.kvcpu-installed
want=$(cat pyproject.toml setup.py kvcpu_dev/native/build.py kvcpu_dev/native/*.[ch] kvcpu_dev/model/hints_build.py kvcpu_dev/model/hints.[ch] kvcpu_dev/device/regs.py kvcpu_dev/device/model_text.py kvcpu_dev/device/tables.py | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
had= had_extras=
[[ -f $stamp ]] && read -r had had_extras < "$stamp"
built=(kvcpu_dev/native/_fuse*.so) model_built=(kvcpu_dev/model/_hints*.so)
if [[ $had != "$want" || ! -e ${built[0]} || ! -e ${model_built[0]} || ! $had_extras =~ ^$extras ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$want $extras" > "$stamp"
fi

# promtool alone, where no promtool is installed: apt-get download (verified
# by apt) and one file out of the package, no maintainer script run.
if ((test_setup)) && ! have promtool && [[ ! -x .venv/bin/promtool ]]; then
  echo "setup: promtool from Debian's prometheus package into .venv/bin (the program only)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && { apt-get download -q -o APT::Sandbox::User="$(id -un)" prometheus >/dev/null 2>&1 \
     || { "${SUDO[@]}" apt-get update -q >/dev/null && apt-get download -q -o APT::Sandbox::User="$(id -un)" prometheus >/dev/null; }; })
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > .venv/bin/promtool.new
  chmod 0755 .venv/bin/promtool.new
  mv .venv/bin/promtool.new .venv/bin/promtool
fi

# Byte-compiled, as a regular (not editable) install is: where
# PYTHONDONTWRITEBYTECODE is set (containers, this CI) Python would compile
# every module of ours at every start, ~80 ms of a ~0.3 s daemon start and
# of each kvctl command.  Up-to-date files are skipped.
.venv/bin/python -m compileall -q -j0 kvcpu_dev kvctl

# `sudo kvcpu-dev`, `kvctl` and `kvcpu-eval` from anywhere, as the README promises.
if [[ $(id -u) == 0 && -d /usr/local/bin ]]; then
  bash scripts/link-commands.sh /usr/local/bin
fi
