#!/usr/bin/env bash
# Smoke test of the Docker base image (scripts/docker-image.sh): /dev/fuse is
# visible, a FUSE mount over a regular file works and answers ioctls
# (scripts/uml/fuse_smoke.c, the shape of kvcpu-dev's FUSE fallback), and a
# venv + pip + cffi build against libfuse3 works, which is what
# `pip install .` of the project needs.
#
#   scripts/docker-smoke.sh [--no-pip]
#
# --no-pip skips the part that downloads from PyPI.
#
# Container options that matter (see scripts/uml/NOTES.md):
#   --device /dev/fuse --cap-add SYS_ADMIN   needed for a FUSE mount; no
#       --security-opt is needed on this host (no AppArmor in the kernel;
#       Docker's default seccomp profile allows mount(2) once SYS_ADMIN is
#       granted).  On an AppArmor host add --security-opt apparmor:unconfined.
#   -v <host CA bundle>:/etc/ssl/certs/ca-certificates.crt:ro  pip inside the
#       container goes through the same TLS-intercepting proxy as the host,
#       whose CA only the host's bundle trusts.
#
# Starts dockerd if needed and stops it again at the end only if it was not
# running before (and was started by scripts/dockerd-ctl.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tag=kvcpu-dev-base:local
pip=1
[[ ${1:-} == --no-pip ]] && pip=0

was_running=0
"$here/dockerd-ctl.sh" status >/dev/null 2>&1 && was_running=1
cleanup() { ((was_running)) || "$here/dockerd-ctl.sh" stop >/dev/null; }
trap cleanup EXIT

"$here/docker-image.sh" --tag "$tag"

ca_opts=()
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[[ -r $host_ca ]] && ca_opts=(-v "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro"
                             -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt)

# The inner script is passed with bash -c, not on stdin: CI has no stdin.
# shellcheck disable=SC2016  # expanded inside the container
inner='
set -euo pipefail
now() { echo "$EPOCHREALTIME"; }
el() { awk -v a="$1" -v b="$2" "BEGIN{printf \"%.3f\", b-a}"; }
python3 -c "import os, sys; assert os.path.exists(\"/dev/fuse\"); print(\"dev_fuse=True python=\" + sys.version.split()[0])"
work=$(mktemp -d)
gcc -Wall -O2 -o "$work/fuse_smoke" /smoke/fuse_smoke.c $(pkg-config --cflags --libs fuse3)
mnt=$work/kvsmoke0; : >"$mnt"
t0=$(now)
"$work/fuse_smoke" "$mnt" & srv=$!
for i in $(seq 500); do grep -q " $mnt fuse" /proc/mounts && break; sleep 0.01; done
grep -q " $mnt fuse" /proc/mounts || { echo "FAIL: FUSE mount did not appear"; exit 1; }
echo "fuse_mount_s=$(el "$t0" "$(now)")"
python3 - "$mnt" <<EOF
import fcntl, os, struct, sys, time
GET, SET = 0x80084B70, 0x40084B71
fd = os.open(sys.argv[1], os.O_RDWR)
assert struct.unpack("<Q", fcntl.ioctl(fd, GET, bytes(8)))[0] == 0x1122334455667788
fcntl.ioctl(fd, SET, struct.pack("<Q", 7))
assert struct.unpack("<Q", fcntl.ioctl(fd, GET, bytes(8)))[0] == 7
buf = bytearray(8); t = time.perf_counter()
for _ in range(2000): fcntl.ioctl(fd, GET, buf, True)
print("fuse_ioctl_us=%.1f" % ((time.perf_counter() - t) / 2000 * 1e6))
EOF
kill -TERM "$srv"; wait "$srv" || true
grep -q " $mnt fuse" /proc/mounts && { echo "FAIL: still mounted after server exit"; exit 1; }
if [ "$PIP" = 1 ]; then
  t0=$(now)
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q cffi setuptools
  cat >"$work/build_ffi.py" <<EOF
import cffi
ffi = cffi.FFI()
ffi.cdef("int fuse_version(void);")
ffi.set_source("_fusever", "#define FUSE_USE_VERSION 35\n#include <fuse_lowlevel.h>",
               libraries=["fuse3"], include_dirs=["/usr/include/fuse3"])
ffi.compile(tmpdir="$work", verbose=False)
EOF
  (cd "$work" && venv/bin/python build_ffi.py && venv/bin/python -c "import _fusever; print(\"cffi_fuse_version=%d\" % _fusever.lib.fuse_version())")
  echo "venv_pip_cffi_build_s=$(el "$t0" "$(now)")"
fi
echo "docker-smoke: PASS"
'

t0=$EPOCHREALTIME
docker run --rm --device /dev/fuse --cap-add SYS_ADMIN \
    "${ca_opts[@]}" -e PIP="$pip" \
    -v "$here/uml:/smoke:ro" \
    "$tag" bash -c "$inner" </dev/null
awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "docker_run_total_s=%.2f\n", b-a}'
