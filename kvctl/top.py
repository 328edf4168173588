"""``kvctl top``: a live view of one device.

Its source is the daemon's ``metrics`` attribute file: the same Prometheus
text ``--metrics`` serves, so top needs no port and no --metrics, and what
it shows is what a scrape shows.  Rates and latency percentiles are over
the last refresh interval (the first refresh: latencies since the device
started, no rate); a command idle over the interval has no percentiles
("-"), not its old ones; a percentile is interpolated inside its
histogram bucket, as PromQL's histogram_quantile does.  ``faults`` and ``control`` are read when the
user may (they are the owner's).

On a terminal it redraws in place with rich; otherwise (a pipe, a file,
a test) it prints plain lines, one block per refresh.
"""

from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Any

PERCENTILES = (0.5, 0.9, 0.99)


class TopError(Exception):
    pass


class Sample:
    """One reading of the metrics file."""

    def __init__(self, text: str, t: float):
        from prometheus_client.parser import text_string_to_metric_families

        self.t = t
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.values[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(k[1]), v) for k, v in self.values.items() if k[0] == name]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """buckets: (upper bound, cumulative count), sorted; seconds."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            span = count - prev_count
            frac = (rank - prev_count) / span if span > 0 else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.2f}s"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def view(cur: Sample, prev: Sample | None, extras: dict[str, str]) -> dict[str, Any]:
    """What one refresh shows, as plain data (rendered by both outputs)."""
    dt = cur.t - prev.t if prev is not None else 0.0
    commands: dict[str, dict[str, float]] = {}
    for labels, value in cur.series("kvcpu_commands_total"):
        name, err = labels["command"], labels["errno"]
        row = commands.setdefault(name, {"total": 0.0, "errors": 0.0, "delta": 0.0})
        row["total"] += value
        if err != "none":
            row["errors"] += value
        before = prev.get("kvcpu_commands_total", **labels) if prev is not None else 0.0
        row["delta"] += value - before
    rows = []
    for name in sorted(commands):
        row = commands[name]
        buckets: dict[float, float] = {}
        for labels, value in cur.series("kvcpu_command_latency_seconds_bucket"):
            if labels.get("command") == name:
                before = prev.get("kvcpu_command_latency_seconds_bucket", **labels) if prev else 0.0
                buckets[float(labels["le"])] = value - before if prev is not None else value
        ordered = sorted(buckets.items())
        rows.append({
            "command": name, "total": int(row["total"]), "errors": int(row["errors"]),
            "rate": row["delta"] / dt if dt > 0 else None,
            **{f"p{round(q * 100)}": _quantile(q, ordered) for q in PERCENTILES},
        })
    tiers = [{"tier": labels["tier"], "resident": int(v),
              "used": cur.get("kvcpu_model_tier_used_bytes", tier=labels["tier"]),
              "capacity": cur.get("kvcpu_model_tier_capacity_bytes", tier=labels["tier"])}
             for labels, v in cur.series("kvcpu_model_tier_resident_blocks")]
    dma = {labels["channel"]: int(v) for labels, v in cur.series("kvcpu_model_dma_queue_depth")}
    return {
        "window": f"over the last {dt:.2g} s" if prev is not None else "since the device started",
        "rows": rows, "tiers": tiers, "dma_queue": dma,
        "dma_down": cur.get("kvcpu_model_dma_transferred_bytes_total", direction="down"),
        "dma_up": cur.get("kvcpu_model_dma_transferred_bytes_total", direction="up"),
        "prefetch_on_time": int(cur.get("kvcpu_model_prefetches_total", result="on_time")),
        "prefetch_late": int(cur.get("kvcpu_model_prefetches_total", result="late")),
        "ring_dropped": int(cur.get("kvcpu_ring_dropped_events_total")),
        "present": int(cur.get("kvcpu_device_present")),
        "resets": int(cur.get("kvcpu_device_resets_total")),
        "fault_rules": int(cur.get("kvcpu_fault_rules")),
        "faults_injected": int(sum(v for _, v in cur.series("kvcpu_faults_injected_total"))),
        "recording": int(cur.get("kvcpu_recording")),
        "faults": extras.get("faults", ""),
    }


def plain(v: dict[str, Any]) -> list[str]:
    lines = [f"device present={v['present']} resets={v['resets']} ring_dropped={v['ring_dropped']} "
             f"recording={v['recording']} fault_rules={v['fault_rules']} faults_injected={v['faults_injected']}",
             f"commands: rate and latency {v['window']}"]
    for r in v["rows"]:
        rate = "-" if r["rate"] is None else f"{r['rate']:.1f}"
        lines.append(f"command {r['command']} total={r['total']} errors={r['errors']} rate={rate}/s "
                     f"p50={_fmt_s(r['p50'])} p90={_fmt_s(r['p90'])} p99={_fmt_s(r['p99'])}")
    for t in v["tiers"]:
        lines.append(f"tier {t['tier']} resident={t['resident']} used={_fmt_bytes(t['used'])} "
                     f"capacity={_fmt_bytes(t['capacity'])}")
    if v["tiers"]:
        queues = " ".join(f"ch{c}={q}" for c, q in sorted(v["dma_queue"].items()))
        lines.append(f"dma queued {queues} down={_fmt_bytes(v['dma_down'])} up={_fmt_bytes(v['dma_up'])} "
                     f"prefetch on_time={v['prefetch_on_time']} late={v['prefetch_late']}")
    for rule in v["faults"].splitlines():
        lines.append(f"fault {rule}")
    return lines


def rich_view(v: dict[str, Any], where: str) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    state = "[green]present[/]" if v["present"] else "[red]UNPLUGGED[/]"
    head.add_row(f"[b]{where}[/]", state, f"resets {v['resets']}", f"ring drops {v['ring_dropped']}",
                 "[red]recording[/]" if v["recording"] else "not recording")
    cmds = Table(title=f"commands (rate and latency {v['window']})", expand=True)
    for col in ("command", "total", "errors", "rate/s", "p50", "p90", "p99"):
        cmds.add_column(col, justify="left" if col == "command" else "right")
    for r in v["rows"]:
        cmds.add_row(r["command"], str(r["total"]), str(r["errors"]),
                     "-" if r["rate"] is None else f"{r['rate']:.1f}",
                     _fmt_s(r["p50"]), _fmt_s(r["p90"]), _fmt_s(r["p99"]))
    parts: list[Any] = [head, cmds]
    if v["tiers"]:
        tiers = Table(title="tiers", expand=True)
        for col in ("tier", "resident blocks", "used", "capacity"):
            tiers.add_column(col, justify="left" if col == "tier" else "right")
        for t in v["tiers"]:
            tiers.add_row(t["tier"], str(t["resident"]), _fmt_bytes(t["used"]), _fmt_bytes(t["capacity"]))
        parts.append(tiers)
        queues = "  ".join(f"channel {c}: {q} queued" for c, q in sorted(v["dma_queue"].items()))
        parts.append(f"DMA {queues}  down {_fmt_bytes(v['dma_down'])}  up {_fmt_bytes(v['dma_up'])}  "
                     f"prefetch on time {v['prefetch_on_time']}, late {v['prefetch_late']}")
    faults = v["faults"].strip() or "none"
    parts.append(f"faults ({v['faults_injected']} injected): {faults}")
    return Group(*parts)


def _read_optional(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _sample(attr_dir: pathlib.Path) -> Sample:
    path = attr_dir / "metrics"
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopError(f"read {path}: {exc.strerror}") from None
    return Sample(text, time.monotonic())


def run(attr_dir: pathlib.Path, interval: float, count: int | None) -> None:
    prev: Sample | None = None
    n = 0
    tty = sys.stdout.isatty()
    live = None
    if tty:
        from rich.live import Live

        live = Live(refresh_per_second=max(1, round(1 / interval)), screen=False)
        live.start()
    try:
        while count is None or n < count:
            if n:
                time.sleep(interval)
            cur = _sample(attr_dir)
            v = view(cur, prev, {"faults": _read_optional(attr_dir / "faults")})
            if live is not None:
                live.update(rich_view(v, str(attr_dir)))
            else:
                sys.stdout.write("\n".join(plain(v)) + "\n\n")
                sys.stdout.flush()
            prev = cur
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
