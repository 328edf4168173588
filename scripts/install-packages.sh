#!/usr/bin/env bash
# Install Debian packages for kvcpu-dev's set-up, and leave nothing their
# maintainer scripts would start: no recommends; no service started during
# the install (a policy-rc.d that says no, unless the machine has one);
# and every unit the install enabled (dependencies included: docker.io
# brings containerd) disabled again, and stopped where systemd runs.  The
# tests need dockerd and podman only as programs they start and stop
# themselves; a user who wants Docker's service enables it.
#
#   scripts/install-packages.sh PACKAGE...
#
# Environment, for its own test: KVCPU_POLICY_RC_D (default
# /usr/sbin/policy-rc.d), KVCPU_SYSTEMD_DIR (default /run/systemd/system,
# which exists where systemd runs).
set -euo pipefail
(($#)) || exit 0
if [[ $(id -u) == 0 ]]; then SUDO=(); else SUDO=(sudo); fi
policy=${KVCPU_POLICY_RC_D:-/usr/sbin/policy-rc.d}
systemd_dir=${KVCPU_SYSTEMD_DIR:-/run/systemd/system}

installed() {
    dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort
}
before=$(installed)

if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# kvcpu-dev scripts/install-packages.sh: no service starts during its install\nexit 101\n' \
        | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 0755 "$policy"
    trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi
echo "setup: installing $* (no recommends; no service left enabled or running)"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"

command -v systemctl >/dev/null || exit 0
added=$(comm -13 <(echo "$before") <(installed))
# shellcheck disable=SC2086  # one package name a word
units=$(for p in $added; do dpkg -L "$p" 2>/dev/null || true; done \
    | grep -E '^/(usr/)?lib/systemd/system/[^/@]+\.(service|socket|timer)$' | xargs -r -n1 basename | sort -u)
for unit in $units; do
    if [[ $(systemctl is-enabled "$unit" 2>/dev/null || true) == enabled ]]; then
        "${SUDO[@]}" systemctl disable --quiet "$unit"
        echo "setup: disabled $unit (installed for the tests, which start what they need)"
    fi
    if [[ -d $systemd_dir ]] && systemctl is-active --quiet "$unit" 2>/dev/null; then
        "${SUDO[@]}" systemctl stop "$unit"
        echo "setup: stopped $unit"
    fi
done
