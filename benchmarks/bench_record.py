"""The bench's costs: the round trip with recording on vs off, a flood
with recording on vs off, what a kill -9 mid-flood loses, and ``kvctl
replay --speed max`` throughput.

Run as root:  .venv/bin/python benchmarks/bench_record.py [--count N] [--rounds R]
                  [--clients C] [--seconds S]

Flood: C processes (default 8) send STEPs back to back, the
n-th of each carrying step n-1, for S seconds, with a recording on and off
in alternated rounds on one daemon; meanwhile the ``telemetry`` attribute
is read every 0.2 s (its worst time is reported).  Each on round's file is
then read back: every STEP each client had acknowledged must be in it, in
order, and ``lost=`` must be 0.  Kill: the same flood with ``--record``,
the daemon killed -9 after 2 s; the file is compared with what each client
had acknowledged when its next ioctl failed: the acknowledged STEPs
missing from it, and the time they span at the flood's rate.

Recording on and off are alternated round by round on one daemon (``kvctl
record start`` appends to the same file, ``stop``), so the machine's noise
hits both alike; the figure is the ratio of the medians of the per-round
median round trips.  Placement as bench_node.py's "apart": the daemon on
the last CPU, the client on the first.  Replay: the recording made here
(every ``on`` round's STEPs, several sessions: not checkable, since the
``off`` rounds' STEPs are missing from it) replayed with ``--speed max``
against a fresh daemon; commands per second as kvctl reports them, which includes
its per-command Python cost.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import time

from _common import Report, build_c, client_us, daemon, median, pinned, scratch, set_affinity

from kvcpu_dev.bench import kvrec as fmt

KVCTL = os.path.join(os.path.dirname(sys.executable), "kvctl")


def rtt(client, node, count: int, cpu) -> float:
    return client_us(pinned(cpu, [client, node, count, "step"]))[1]  # the median


def kvctl(node, *args) -> str:
    return subprocess.run([KVCTL, "--device", str(node), *map(str, args)], check=True,
                          capture_output=True, text=True).stdout


def flood(load, d: dict, clients: int, seconds: float) -> tuple[dict[int, int], float, float]:
    """``clients`` flooding STEPs; the telemetry attribute read meanwhile.
    Returns what each client (by pid) had acknowledged, ioctls per second
    and the slowest attribute read in seconds."""
    procs = [subprocess.Popen([str(load), str(d["node"]), "flood", str(seconds)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(clients)]
    t0 = time.monotonic()
    worst = 0.0
    while time.monotonic() - t0 < seconds:
        r0 = time.perf_counter()
        (d["attr_dir"] / "telemetry").read_bytes()
        worst = max(worst, time.perf_counter() - r0)
        time.sleep(0.2)
    acked = {p.pid: int(p.communicate()[0].strip() or 0) for p in procs}
    return acked, sum(acked.values()) / (time.monotonic() - t0), worst


def recorded_steps(path) -> tuple[dict[int, list[int]], list[fmt.Record]]:
    """The last session's STEPs by requester, and its records."""
    with fmt.Reader(path) as reader:
        records = list(reader)
    starts = [i for i, r in enumerate(records) if r.kind == fmt.KIND_MARK and r.meta.get("mark") == "start"]
    session = records[starts[-1]:] if starts else records
    steps: dict[int, list[int]] = collections.defaultdict(list)
    for r in session:
        if r.kind == fmt.KIND_IOCTL and not r.errno and r.name == "STEP":
            steps[r.pid].append(r.step)
    return steps, session


def check_file(path, acked: dict[int, int]) -> tuple[int, int, int]:
    """Acknowledged STEPs missing from the file, STEPs out of order, and
    the ``lost`` its stop mark states."""
    steps, session = recorded_steps(path)
    missing = disorder = 0
    for pid, n in acked.items():
        got = steps.get(pid, [])
        missing += max(0, n - len(got))
        disorder += sum(1 for i, v in enumerate(got) if v != i)
    stops = [r.meta for r in session if r.kind == fmt.KIND_MARK and r.meta.get("mark") == "stop"]
    return missing, disorder, stops[-1]["lost"] if stops else -1


def flood_section(report: Report, load, tmp, clients: int, seconds: float, rounds: int) -> None:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    reads: dict[str, list[float]] = {"on": [], "off": []}
    missing = disorder = lost = 0
    with daemon("kvbrec2", tmp / "c") as d:
        for r in range(rounds):
            for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                rec = tmp / f"flood{r}.kvrec"
                if state == "on":
                    kvctl(d["node"], "record", "start", rec)
                acked, rate, worst = flood(load, d, clients, seconds)
                if state == "on":
                    kvctl(d["node"], "record", "stop")
                    m, o, n = check_file(rec, acked)
                    missing, disorder, lost = missing + m, disorder + o, lost + n
                    rec.unlink()
                rates[state].append(rate)
                reads[state].append(worst)
    on, off = median(rates["on"]), median(rates["off"])
    report.add(f"{clients} clients flooding STEPs, recording off (median of {rounds} rounds)", f"{off:,.0f} ioctls/s")
    report.add("the same, recording on", f"{on:,.0f} ioctls/s ({off / on:.2f}x slower; rounds: "
               + ", ".join(f"{x:,.0f}" for x in rates["on"]) + ")")
    report.add("acknowledged STEPs missing from the files, out of order; lost=",
               f"{missing}, {disorder}; {lost}", "0", missing == 0 and disorder == 0 and lost == 0)
    report.add("slowest telemetry attribute read during the flood, recording on / off",
               f"{max(reads['on']) * 1e3:.1f} / {max(reads['off']) * 1e3:.1f} ms")


def kill_section(report: Report, load, tmp, clients: int) -> None:
    rec = tmp / "killed.kvrec"
    with daemon("kvbrec3", tmp / "k", extra=("--record", str(rec))) as d:
        procs = [subprocess.Popen([str(load), str(d["node"]), "flood", "30"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for _ in range(clients)]
        time.sleep(2.0)
        killed_ns = time.monotonic_ns()
        os.kill(d["pid"], signal.SIGKILL)
        acked = {p.pid: int(p.communicate(timeout=30)[0].strip() or 0) for p in procs}
    steps, session = recorded_steps(rec)
    missing = sum(max(0, n - len(steps.get(pid, []))) for pid, n in acked.items())
    rate = sum(acked.values()) / 2.0
    last_ns = max((r.t_ns for r in session), default=killed_ns)
    report.add("kill -9 after 2 s of the flood with --record: acknowledged STEPs missing from the file",
               f"{missing} of {sum(acked.values()):,} (~{missing / rate * 1e3:.1f} ms of the flood at "
               f"{rate:,.0f}/s; the last record {(killed_ns - last_ns) / 1e6:.1f} ms before the kill)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000, help="ioctls per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8, help="flooding processes")
    ap.add_argument("--seconds", type=float, default=3.0, help="per flood round")
    ap.add_argument("--flood-rounds", type=int, default=4)
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    last = ncpu - 1
    server_cpus, cpu = ({last}, 0) if ncpu > 1 else ({0}, None)
    report = Report("recording and replay")
    with scratch() as tmp:
        os.chmod(tmp, 0o755)
        client = build_c("ioctl_rtt.c", tmp)
        load = build_c("ioctl_load.c", tmp)
        rec = tmp / "bench.kvrec"
        with daemon("kvbrec0", tmp / "a") as d:
            set_affinity(d["pid"], server_cpus)
            node = d["node"]
            rtt(client, node, 500, cpu)  # warm up
            on, off = [], []
            for r in range(args.rounds):
                for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    if state == "on":
                        kvctl(node, "record", "start", rec)
                        on.append(rtt(client, node, args.count, cpu))
                        kvctl(node, "record", "stop")
                    else:
                        off.append(rtt(client, node, args.count, cpu))
            lost = kvctl(node, "record")
        ratio = median(on) / median(off)
        report.add("round trip, recording off (median of round medians)", f"{median(off):.1f} us")
        report.add("round trip, recording on", f"{median(on):.1f} us")
        report.add("recording on / off", f"{ratio:.3f}x", "<= 1.05x", ratio <= 1.05)
        report.add("recorder state after the last round", lost.strip().replace("\n", " "))
        with daemon("kvbrec1", tmp / "b") as d:
            set_affinity(d["pid"], server_cpus)
            out = subprocess.run(pinned(cpu, [KVCTL, "--device", d["node"], "replay", rec,
                                              "--speed", "max"]),
                                 capture_output=True, text=True)
            line = (out.stdout or out.stderr).strip()
            m = re.search(r"replayed (\d+) commands in ([\d.]+) s \((\d+)/s\)", line)
            if out.returncode == 0 and m:
                report.add("replay --speed max", f"{m.group(3)} commands/s "
                           f"({m.group(1)} in {m.group(2)} s)")
            else:
                report.add("replay --speed max", line, ok=False)
        flood_section(report, load, tmp, args.clients, args.seconds, args.flood_rounds)
        kill_section(report, load, tmp, args.clients)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
