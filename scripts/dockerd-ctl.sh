#!/usr/bin/env bash
# Start or stop a dockerd for tests, without ever touching a dockerd that
# somebody else started.
#
#   scripts/dockerd-ctl.sh start    # no-op if a daemon already answers
#   scripts/dockerd-ctl.sh stop     # stops only the dockerd *we* started
#   scripts/dockerd-ctl.sh status   # exit 0 if a daemon answers
#
# Why a pid file: CI machines start with nothing running, so the test run has
# to bring dockerd up and must take it down again afterwards, but a developer
# may already run their own dockerd (or systemd's) and stopping that would be
# rude.  "start" writes the pid file only when it launched dockerd itself, and
# "stop" acts only on that pid, after checking that it still is a dockerd.
#
# Environment:
#   KVCPU_DOCKERD_STATE  directory for pid file and log
#                        (default /run/kvcpu-dockerd)
#   KVCPU_DOCKERD_WAIT   seconds to wait for the daemon to answer (default 60)
#
# Where the kernel schedules real time by cgroup (cgroup v1 with RT group
# scheduling: the cpu controller has cpu.rt_runtime_us), a container gets
# real-time priority only from a budget its parent has: ours gives its
# containers' parent half of each CPU (kvcpu-dev's watcher takes at most
# that, docs/containers.md), and a container asks with --cpu-rt-runtime.
set -euo pipefail

state_dir=${KVCPU_DOCKERD_STATE:-/run/kvcpu-dockerd}
pid_file=$state_dir/dockerd.pid
log_file=$state_dir/dockerd.log
wait_s=${KVCPU_DOCKERD_WAIT:-60}

die() { echo "dockerd-ctl: $*" >&2; exit 1; }

daemon_answers() {
    # `docker info` talks to whatever DOCKER_HOST / default socket points at,
    # which is exactly what later `docker build/run` calls will use.
    timeout 10 docker info >/dev/null 2>&1
}

# Prints the pid from our pid file if that process is alive and still a
# dockerd (pids get reused; never kill a stranger).
our_pid() {
    [[ -r $pid_file ]] || return 1
    local pid
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == dockerd ]] || return 1
    echo "$pid"
}

cmd_start() {
    command -v dockerd >/dev/null || { echo "dockerd-ctl: dockerd not installed" >&2; exit 77; }
    command -v docker >/dev/null || { echo "dockerd-ctl: docker CLI not installed" >&2; exit 77; }
    if daemon_answers; then
        echo "dockerd-ctl: a docker daemon is already running; leaving it alone"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || { echo "dockerd-ctl: need root to start dockerd" >&2; exit 77; }
    mkdir -p "$state_dir"
    # Stale pid file from a killed run: our_pid() filters dead pids, but a
    # live dockerd that does not answer is broken; better to fail loudly.
    if pid=$(our_pid); then
        die "our dockerd (pid $pid) is running but not answering; see $log_file"
    fi
    rm -f "$pid_file"
    # setsid: own session so that the caller's Ctrl-C / process-group kill
    # does not take the daemon down half-way; </dev/null because CI has no
    # stdin.  dockerd starts and later stops its own containerd.
    # A real-time budget where the kernel needs one; dockerd refusing it
    # (its daemon.json sets one too) is no reason to have no dockerd.
    if [[ -e /sys/fs/cgroup/cpu/cpu.rt_runtime_us ]] && launch --cpu-rt-runtime=500000; then
        return 0
    fi
    launch || exit 1
}

# Starts dockerd with ARGS and waits until it answers; 1 if it exited.
launch() {
    setsid dockerd "$@" >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
    local pid=$! t=0
    while ! daemon_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            echo "dockerd-ctl: dockerd $* exited during startup; last log lines:" >&2
            tail -n 20 "$log_file" >&2 || true
            return 1
        fi
        (( t++ >= wait_s )) && die "dockerd did not answer within ${wait_s}s; see $log_file"
        sleep 1
    done
    echo "dockerd-ctl: started dockerd pid $pid (log $log_file)"
}

cmd_stop() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$pid_file"
        echo "dockerd-ctl: no dockerd started by us is running; nothing to stop"
        return 0
    fi
    kill -TERM "$pid"
    # dockerd stops running containers (10 s grace each) and containerd first.
    local t=0
    while kill -0 "$pid" 2>/dev/null; do
        if (( t++ >= 45 )); then
            echo "dockerd-ctl: dockerd $pid ignored SIGTERM for 45s; killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    rm -f "$pid_file"
    echo "dockerd-ctl: stopped dockerd pid $pid"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        if daemon_answers; then
            if pid=$(our_pid); then echo "running (ours, pid $pid)"; else echo "running (not ours)"; fi
        else
            echo "not running"; exit 1
        fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
