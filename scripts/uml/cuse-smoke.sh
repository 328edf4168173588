#!/usr/bin/env bash
# Smoke test of the UML harness: inside User-Mode Linux, build the tiny CUSE
# server (cuse_smoke.c), start it, wait for /dev/kvsmoke0 to be a character
# device, talk to it with Python's fcntl.ioctl, stop it and check that the
# node goes away.  Then the same for a FUSE mount over a regular file
# (fuse_smoke.c), the transport kvcpu-dev falls back to without CUSE.
#
#   scripts/uml/cuse-smoke.sh [uml-run options, e.g. --timeout 300 -v]
#
# Prints key=value lines (timings in seconds, ioctl cost in microseconds)
# and ends with "cuse-smoke: PASS"; exit 0 on success, 77 if UML cannot
# run here, anything else on failure.  The guest half is this same file run
# with --guest by scripts/uml-run.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ ${1:-} != --guest ]]; then
    exec "$here/../uml-run.sh" "$@" -- "$here/cuse-smoke.sh" --guest
fi

# ----------------------------------------------------------------- guest --
fail() { echo "cuse-smoke: FAIL: $*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

[[ -c /dev/cuse ]] || fail "/dev/cuse missing (is this running inside UML?)"
# /run is a guest-private tmpfs (see uml-run.sh): build products and the
# FUSE mount point vanish with the guest and never litter the host.
work=$(mktemp -d /run/cuse-smoke.XXXXXX)
echo "kernel=$(uname -r) python=$(command -v python3)"
t0=$(now)
python3 -c pass || fail "python3 does not run"
echo "python_start_s=$(elapsed "$t0" "$(now)")"

t0=$(now)
for prog in cuse_smoke fuse_smoke; do
    # shellcheck disable=SC2046  # pkg-config output is meant to split
    gcc -Wall -O2 -o "$work/$prog" "$here/$prog.c" $(pkg-config --cflags --libs fuse3) \
        || fail "gcc $prog.c"
done
t1=$(now)
echo "build_both_s=$(elapsed "$t0" "$t1")"

# Python side: what a runtime does (os.open + fcntl.ioctl with bytes).
ioctl_check() {
    python3 - "$1" <<'EOF'
import errno, fcntl, os, struct, sys, time
GET, SET, BAD = 0x80084B70, 0x40084B71, 0x80084B7F
path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
(v,) = struct.unpack("<Q", fcntl.ioctl(fd, GET, bytes(8)))
assert v == 0x1122334455667788, hex(v)
fcntl.ioctl(fd, SET, struct.pack("<Q", 0xDEADBEEF))
(v,) = struct.unpack("<Q", fcntl.ioctl(fd, GET, bytes(8)))
assert v == 0xDEADBEEF, hex(v)
try:
    fcntl.ioctl(fd, BAD, bytes(8))
    raise SystemExit("unknown ioctl did not fail")
except OSError as e:
    assert e.errno == errno.ENOTTY, e
buf = bytearray(8)
n = 2000
t = time.perf_counter()
for _ in range(n):
    fcntl.ioctl(fd, GET, buf, True)
per = (time.perf_counter() - t) / n * 1e6
nul = os.open("/dev/null", os.O_RDWR)
t = time.perf_counter()
for _ in range(n):
    try:
        fcntl.ioctl(nul, GET, buf, True)
    except OSError:
        pass
base = (time.perf_counter() - t) / n * 1e6
os.close(nul)
os.close(fd)
print(f"ioctl_us={per:.1f} devnull_ioctl_us={base:.1f}")
EOF
}

# --- CUSE ------------------------------------------------------------------
t0=$(now)
"$work/cuse_smoke" -f &
srv=$!
for ((i = 0; i < 1000; i++)); do
    [[ -c /dev/kvsmoke0 ]] && break
    kill -0 "$srv" 2>/dev/null || fail "cuse_smoke exited before creating /dev/kvsmoke0"
    sleep 0.01
done
[[ -c /dev/kvsmoke0 ]] || fail "/dev/kvsmoke0 did not appear within 10 s"
t1=$(now)
echo "cuse_node_appear_s=$(elapsed "$t0" "$t1")"
echo "cuse_node=$(stat -c '%F major=%t minor=%T mode=%a' /dev/kvsmoke0)"
out=$(ioctl_check /dev/kvsmoke0) || fail "ioctl on /dev/kvsmoke0: $out"
echo "cuse_${out// / cuse_}"
t0=$(now)
kill -TERM "$srv"
wait "$srv" || true
for ((i = 0; i < 500; i++)); do
    [[ -e /dev/kvsmoke0 ]] || break
    sleep 0.01
done
[[ -e /dev/kvsmoke0 ]] && fail "/dev/kvsmoke0 still exists 5 s after the server exited"
t1=$(now)
echo "cuse_node_gone_s=$(elapsed "$t0" "$t1")"

# --- FUSE mount over a regular file ----------------------------------------
mnt=$work/kvsmoke0
: >"$mnt"
t0=$(now)
"$work/fuse_smoke" "$mnt" &
srv=$!
for ((i = 0; i < 1000; i++)); do
    grep -q " $mnt fuse" /proc/mounts && break
    kill -0 "$srv" 2>/dev/null || fail "fuse_smoke exited before mounting"
    sleep 0.01
done
grep -q " $mnt fuse" /proc/mounts || fail "FUSE mount on $mnt did not appear within 10 s"
t1=$(now)
echo "fuse_mount_s=$(elapsed "$t0" "$t1")"
out=$(ioctl_check "$mnt") || fail "ioctl on FUSE file $mnt: $out"
echo "fuse_${out// / fuse_}"
kill -TERM "$srv"
wait "$srv" || true
grep -q " $mnt fuse" /proc/mounts && fail "FUSE mount still present after the server exited"

rm -rf "$work"
echo "cuse-smoke: PASS"
