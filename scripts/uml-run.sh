#!/usr/bin/env bash
# Run one command inside User-Mode Linux, a real Linux kernel (with CUSE)
# running as an ordinary process, and come back with its output and exit code.
#
#   scripts/uml-run.sh [options] -- CMD [ARGS...]
#
# Options:
#   --timeout SEC     kill UML after SEC seconds of wall time (default 600,
#                     env UML_RUN_TIMEOUT); exit 124 then.
#   --mem SIZE        guest memory (default 1G).
#   --venv DIR        put DIR/bin first on PATH and set VIRTUAL_ENV in the
#                     guest (the caller's PATH is passed anyway, so running
#                     this from an activated venv / from pytest in a venv
#                     already does the right thing).
#   --env NAME=VALUE  set a variable in the guest (repeatable).
#   --cwd DIR         working directory in the guest (default: $PWD).
#   --outdir DIR      keep the run's files there: stdout, stderr, rc,
#                     console.log (kernel + init), timings.  Default: a temp
#                     dir that is removed at exit.
#   -v, --verbose     harness progress and timings on stderr.
#
# Result: the command's stdout on our stdout, its stderr on our stderr, its
# exit code as ours.  Harness-level outcomes use codes a command rarely does:
#   77   UML cannot run here (no linux.uml, no modules, boot failed,
#        fuse.ko/cuse.ko would not load); one line on stderr says why.
#   124  timeout (UML was killed).
#   125  UML ran but the command's exit code never came back (guest crash).
#
# How it works: the guest boots with the host's / as its root over hostfs
# (rootfstype=hostfs), so every host path, the project checkout, the venv,
# /root/.pyenv and gcc included, is visible at the same path.  Its init is a
# bash script we generate in a host temp dir; it mounts what a normal system
# has, loads fuse.ko + cuse.ko, recreates the caller's environment and cwd,
# runs the command with stdin=/dev/null, writes stdout/stderr/rc back into
# the temp dir (hostfs writes land on the host), syncs and `poweroff -f`s.
#
# Findings on the dev machine (Debian bookworm host, kernel 6.18, 2 cores;
# numbers and details in scripts/uml/NOTES.md):
#   - UML kernel 6.1.176 (package user-mode-linux); modules in
#     /usr/lib/uml/modules/6.1.176/kernel/fs/fuse/{fuse,cuse}.ko.
#   - The kernel mounts devtmpfs on /dev itself (CONFIG_DEVTMPFS_MOUNT=y), so
#     the host's /dev is never touched; /dev/fuse (10,229) and /dev/cuse
#     (10,203) appear after the insmods; a CUSE server's node appears there
#     (major 252, mode 0600) and goes away when the server exits.
#   - Boot to init ~1.5 s, init setup ~1 s, poweroff ~0.5 s: a trivial
#     command costs ~2.5 s end to end.
#   - The guest sees the host's python (/root/.pyenv/...) and venvs; cffi and
#     trio import; gcc compiles and links; FUSE mounts work.  Avoid pyenv
#     *shims* on PATH (bash scripts that fork several times: seconds each);
#     use a venv or the real interpreter path.
#   - One CPU in the guest.  CPU-bound code runs near native speed, but each
#     syscall is trapped through ptrace: ~60 us instead of ~0.3 us.  Python
#     start-up ~0.4-0.8 s, `import trio` ~1.5 s, gcc of a small file ~2 s.
#   - Clock: CLOCK_REALTIME is the host's time; CLOCK_MONOTONIC starts at
#     boot; sleeps are accurate (1 ms sleep ~1.16 ms, 1 s sleep 1.0003 s).
#   - /tmp and everything else is the host's (hostfs, read-write, as host
#     root); /run and /dev/shm are guest-private tmpfs.  Unix sockets work
#     on both.  Loopback (127.0.0.1) works; there is no other network.
#   - Console output (kernel log + init) goes to a file via con0=null,fd:1;
#     no stdin and no tty needed.  "epollctl add err fd 1" in that log is
#     harmless (a regular file cannot be epolled).
#   - UML's RAM is a file in $TMPDIR or /dev/shm on the host; inside a
#     container with a 64 MiB /dev/shm, use a smaller --mem or set TMPDIR.
set -euo pipefail

timeout_s=${UML_RUN_TIMEOUT:-600}
mem=1G
venv=
cwd=$PWD
outdir=
verbose=0
extra_env=()

usage() { sed -n '2,27p' "$0" >&2; exit 2; }
say() { ((verbose)) && echo "uml-run: $*" >&2; return 0; }
cannot() { echo "uml-run: cannot run UML: $*" >&2; exit 77; }

while (($#)); do
    case $1 in
        --timeout) timeout_s=${2:?}; shift ;;
        --mem) mem=${2:?}; shift ;;
        --venv) venv=${2:?}; shift ;;
        --env) extra_env+=("${2:?}"); shift ;;
        --cwd) cwd=${2:?}; shift ;;
        --outdir) outdir=${2:?}; shift ;;
        -v|--verbose) verbose=1 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        *) break ;;
    esac
    shift
done
(($#)) || usage
[[ $timeout_s =~ ^[0-9]+$ ]] || { echo "uml-run: --timeout must be whole seconds" >&2; exit 2; }
cwd=$(cd "$cwd" && pwd -P)
# The guest mounts its own /proc, /sys, /dev and /run over the host's.
case $cwd/ in
    /proc/*|/sys/*|/dev/*|/run/*) echo "uml-run: --cwd $cwd is hidden inside the guest" >&2; exit 2 ;;
esac

uml=${UML_BINARY:-$(command -v linux.uml || true)}
[[ -n $uml && -x $uml ]] || cannot "linux.uml not found (apt-get install user-mode-linux)"
kver=$("$uml" --version 2>/dev/null | tail -n1) || true
[[ -n $kver ]] || cannot "$uml --version printed nothing"
moddir=/usr/lib/uml/modules/$kver/kernel/fs/fuse
[[ -r $moddir/fuse.ko && -r $moddir/cuse.ko ]] || cannot "no fuse.ko/cuse.ko in $moddir"
command -v insmod >/dev/null || cannot "insmod not found (apt-get install kmod)"
command -v poweroff >/dev/null || cannot "poweroff not found"

# The run directory must be on a host path the guest sees unchanged, i.e.
# not under /proc, /sys, /dev or /run (the guest mounts its own there).
if [[ -n $outdir ]]; then
    mkdir -p "$outdir"
    run=$(cd "$outdir" && pwd -P)
    rm -f "$run"/{stdout,stderr,rc,rc.tmp,booted,cmd_start,cmd_end,setup_failed,console.log,timings}
    keep=1
else
    run=$(mktemp -d "${TMPDIR:-/tmp}/uml-run.XXXXXX")
    run=$(cd "$run" && pwd -P)
    keep=0
fi
case $run/ in
    /proc/*|/sys/*|/dev/*|/run/*) cannot "run dir $run is hidden inside the guest; use --outdir elsewhere" ;;
esac

uml_pid=
# UML is a tree of host processes (kernel + one per guest address space),
# all in the process group that setsid gave it: kill the group, then give
# the helpers a moment to be gone so that nothing outlives us.
reap_group() {
    local pgid=$1 i
    kill -KILL -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        pgrep -g "$pgid" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
}
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    if [[ -n $uml_pid ]]; then
        reap_group "$uml_pid"
        wait "$uml_pid" 2>/dev/null || true
    fi
    ((keep)) || rm -rf "$run"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the guest's environment -------------------------------------------------
# Re-create every exported variable of the caller, quoted with printf %q (the
# init script is bash, so $'...' quoting is fine).  Variables that describe
# this shell rather than the caller's intent are skipped.
{
    while IFS= read -r name; do
        case $name in
            _|SHLVL|PWD|OLDPWD|BASHOPTS|SHELLOPTS|BASH_*|TERM|TERMCAP|COLUMNS|LINES|INVOCATION_ID|JOURNAL_STREAM|NOTIFY_SOCKET) continue ;;
        esac
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e)
    if [[ -n $venv ]]; then
        venv_abs=$(cd "$venv" && pwd -P)
        printf 'export VIRTUAL_ENV=%q\n' "$venv_abs"
        printf 'export PATH=%q\n' "$venv_abs/bin:$PATH"
        echo 'unset PYTHONHOME'
    fi
    for kv in "${extra_env[@]}"; do
        [[ $kv == *=* ]] || { echo "uml-run: --env wants NAME=VALUE, got $kv" >&2; exit 2; }
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
} >"$run/env.sh"
# The caller's environment may hold tokens; keep it private and remove it
# after the run even when --outdir keeps the rest.
chmod 600 "$run/env.sh"

cmd_quoted=$(printf '%q ' "$@")

# --- the guest's init ----------------------------------------------------------
# Runs as PID 1: it must never exit (the kernel would panic and UML would
# sit there), so every path ends in poweroff -f, with sysrq as a fallback.
cat >"$run/init.sh" <<EOF
#!/bin/bash
# Generated by scripts/uml-run.sh: init of a throw-away UML guest.
R=$(printf %q "$run")
halt() { sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 10; }
setup_failed() { echo "\$*" >"\$R/setup_failed"; echo "uml init: \$*"; halt; }
trap halt EXIT
date +%s.%N >"\$R/booted"
mount -t proc proc /proc || setup_failed "mount /proc failed"
mount -t sysfs sysfs /sys || setup_failed "mount /sys failed"
# CONFIG_DEVTMPFS_MOUNT makes the kernel mount /dev before init; mount it
# ourselves only if some other UML build did not.
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev || setup_failed "mount /dev failed"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /run is guest-private: a pid file or socket written there by a daemon
# under test must not land on the host's /run through hostfs.
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/user
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ln -sf /proc/self/fd/0 /dev/stdin 2>/dev/null
ln -sf /proc/self/fd/1 /dev/stdout 2>/dev/null
ln -sf /proc/self/fd/2 /dev/stderr 2>/dev/null
insmod $(printf %q "$moddir/fuse.ko") || setup_failed "insmod fuse.ko failed"
insmod $(printf %q "$moddir/cuse.ko") || setup_failed "insmod cuse.ko failed"
[ -c /dev/cuse ] || setup_failed "/dev/cuse did not appear after insmod cuse.ko"
ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || echo "uml init: could not bring up lo"
hostname uml 2>/dev/null
. "\$R/env.sh"
cd $(printf %q "$cwd") || setup_failed "cd $cwd failed in guest"
date +%s.%N >"\$R/cmd_start"
$cmd_quoted </dev/null >"\$R/stdout" 2>"\$R/stderr"
echo \$? >"\$R/rc.tmp"
date +%s.%N >"\$R/cmd_end"
mv "\$R/rc.tmp" "\$R/rc"
EOF
chmod +x "$run/init.sh"

# --- boot --------------------------------------------------------------------
# con=null con0=null,fd:1: no console input at all (CI has no stdin), all
# console output to our fd 1, which is the log file.  uml_dir keeps UML's
# pid/mconsole files in the run dir instead of ~/.uml.  setsid: own process
# group, so one kill reaches every UML host process.
t_start=$(date +%s.%N)
say "booting $uml ($kver), mem=$mem, timeout ${timeout_s}s, run dir $run"
setsid "$uml" mem="$mem" rootfstype=hostfs rootflags=/ rw \
    init="$run/init.sh" con=null con0=null,fd:1 uml_dir="$run" umid=uml-run \
    </dev/null >"$run/console.log" 2>&1 &
uml_pid=$!

SECONDS=0
timed_out=0
while kill -0 "$uml_pid" 2>/dev/null; do
    if ((SECONDS >= timeout_s)); then
        timed_out=1
        kill -KILL -- "-$uml_pid" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
uml_rc=0
# 2>/dev/null: bash's own "Killed ..." job notice after a timeout.
wait "$uml_pid" 2>/dev/null || uml_rc=$?
reap_group "$uml_pid"
uml_pid=
t_end=$(date +%s.%N)

# --- report --------------------------------------------------------------------
timing() {
    local b c s e
    b=$(cat "$run/booted" 2>/dev/null || echo "")
    s=$(cat "$run/cmd_start" 2>/dev/null || echo "")
    e=$(cat "$run/cmd_end" 2>/dev/null || echo "")
    c=$(awk -v a="$t_start" -v z="$t_end" 'BEGIN{printf "%.2f", z-a}')
    echo "total_s=$c"
    [[ -n $b ]] && awk -v a="$t_start" -v b="$b" 'BEGIN{printf "boot_to_init_s=%.2f\n", b-a}'
    [[ -n $s && -n $e ]] && awk -v s="$s" -v e="$e" 'BEGIN{printf "command_s=%.2f\n", e-s}'
    [[ -n $b && -n $s ]] && awk -v b="$b" -v s="$s" 'BEGIN{printf "init_setup_s=%.2f\n", s-b}'
    return 0
}
rm -f "$run/env.sh"
timing >"$run/timings"
say "$(tr '\n' ' ' <"$run/timings")"

[[ -f $run/stdout ]] && cat "$run/stdout"
[[ -f $run/stderr ]] && cat "$run/stderr" >&2

if ((timed_out)); then
    echo "uml-run: timeout after ${timeout_s}s; UML killed (console: last lines below)" >&2
    tail -n 15 "$run/console.log" >&2 || true
    exit 124
fi
if [[ -f $run/setup_failed ]]; then
    cannot "guest setup failed: $(<"$run/setup_failed")"
fi
if [[ ! -f $run/booted ]]; then
    echo "uml-run: UML exited ($uml_rc) before init ran; console tail:" >&2
    tail -n 15 "$run/console.log" >&2 || true
    cannot "UML did not boot (exit $uml_rc)"
fi
if [[ ! -f $run/rc ]]; then
    echo "uml-run: the command's exit code never came back (UML exit $uml_rc); console tail:" >&2
    tail -n 15 "$run/console.log" >&2 || true
    exit 125
fi
exit "$(<"$run/rc")"
