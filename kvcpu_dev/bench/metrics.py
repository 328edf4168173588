"""Prometheus metrics of a running device.

``Collector`` is read on every scrape: the ring listener's counters
(``stats.CommandStats``: commands by type and errno, a histogram of
server-side latency, faults that fired, controls), the fast path's own
(served, ring depth and drops; C calls under the device's mutex), the
fault rules, and the device model's counters (tier occupancy, DMA bytes by
direction and queues, prefetches on time and late, scan time).  The daemon
loads this module, and prometheus-client with it, on the first read of
``metrics`` or with ``--metrics``.

The same text is served at ``/metrics`` by ``--metrics HOST:PORT``
(httpd.py: a bounded server of our own; prometheus-client only renders)
and in the ``metrics`` attribute file, which ``kvctl top`` reads.  The
model is not thread-safe: the daemon hands the collector a view that reads
it on the daemon's own thread, after draining the ring (daemon/server.py,
Server.model_view), whichever thread scrapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector as _CollectorBase

from .httpd import MetricsServer, Watch
from .stats import BUCKETS, CommandStats, command_label

if TYPE_CHECKING:
    from ..driver.handle import NativeDriver

log = logging.getLogger("kvcpu_dev")

#: The model's counters as the collector reads them: its stats, tiers and
#: DMA records (model/views.py); None without a model.
ModelSnapshot: TypeAlias = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]
ModelView: TypeAlias = Callable[[], ModelSnapshot | None]


class Collector(_CollectorBase):
    """Builds every metric family at scrape time."""

    def __init__(self, driver: NativeDriver, stats: CommandStats, model_view: ModelView,
                 recording: Callable[[], tuple[bool, int]] | None = None):
        self.driver = driver
        self.stats = stats
        self.model_view = model_view
        self.recording = recording

    def collect(self) -> Iterator[Any]:
        s = self.stats
        c = CounterMetricFamily("kvcpu_commands", "Commands that reached the device, by type and errno",
                                labels=["command", "errno"])
        for (name, err), n in sorted(list(s.commands.items())):
            c.add_metric([name, err], n)
        yield c
        h = HistogramMetricFamily("kvcpu_command_latency_seconds",
                                  "Server-side command latency: time holding the device plus injected latency",
                                  labels=["command"])
        for name, counts in sorted(list(s.hist.items())):
            counts = list(counts)
            cum, buckets = 0, []
            for bound, n in zip((*(repr(b) for b in BUCKETS), "+Inf"), counts):
                cum += n
                buckets.append((bound, cum))
            h.add_metric([name], buckets, s.hist_sum_ns.get(name, 0) / 1e9)
        yield h
        f = CounterMetricFamily("kvcpu_faults_injected", "Commands an injected fault fired on",
                                labels=["command"])
        for name, n in sorted(list(s.faults.items())):
            f.add_metric([name], n)
        yield f
        ctl = CounterMetricFamily("kvcpu_controls", "Resets, surprise removals and replugs",
                                  labels=["control"])
        for name in ("reset", "unplug", "replug"):
            ctl.add_metric([name], s.controls.get(name, 0))
        yield ctl
        yield CounterMetricFamily("kvcpu_weight_stores", "sysfs weight stores", value=s.stores)
        yield from self._device()
        if self.recording is not None:
            on, events = self.recording()
            yield GaugeMetricFamily("kvcpu_recording", "1 while commands are being recorded", value=int(on))
            yield CounterMetricFamily("kvcpu_recorded_events", "Events written to the current recording",
                                      value=events)
        try:
            view = self.model_view()
        except (OSError, ValueError) as exc:
            log.info("metrics: model counters unavailable: %s", exc)
            view = None
        if view is not None:
            yield from _model_families(*view)

    def _device(self) -> Iterator[Any]:
        d = self.driver
        if d.handle is None:  # closed
            return
        ring = d.ring_stats()
        yield CounterMetricFamily("kvcpu_fastpath_requests", "Requests the fast path answered",
                                  value=ring["served"])
        yield GaugeMetricFamily("kvcpu_ring_capacity_events", "Event ring capacity", value=ring["ring_capacity"])
        yield GaugeMetricFamily("kvcpu_ring_depth_events", "Events waiting in the ring", value=ring["ring_depth"])
        yield CounterMetricFamily("kvcpu_ring_dropped_events", "Events the ring dropped when full",
                                  value=ring["ring_dropped"])
        yield CounterMetricFamily("kvcpu_events_lost", "Sequence gaps seen when draining the ring",
                                  value=ring["events_lost_seen"])
        yield GaugeMetricFamily("kvcpu_device_present", "0 while surprise-removed", value=int(d.present))
        yield CounterMetricFamily("kvcpu_device_resets", "Function-level resets", value=d.resets())
        rules = d.faults()
        yield GaugeMetricFamily("kvcpu_fault_rules", "Fault rules installed", value=len(rules))
        hits = CounterMetricFamily("kvcpu_fault_rule_hits", "Times each installed fault rule fired",
                                   labels=["id", "command"])
        for r in rules:
            hits.add_metric([str(r["id"]), command_label(r["cmd"]) if r["cmd"] else "any"], r["hits"])
        yield hits


def _model_families(stats: dict[str, Any], tiers: list[dict[str, Any]], dma: list[dict[str, Any]]) -> Iterator[Any]:
    def num(key: str) -> float:
        v = stats.get(key, 0)
        return v if isinstance(v, (int, float)) else 0

    occ = GaugeMetricFamily("kvcpu_model_tier_resident_blocks", "Blocks resident per tier", labels=["tier"])
    used = GaugeMetricFamily("kvcpu_model_tier_used_bytes", "Bytes resident or inbound per tier", labels=["tier"])
    cap = GaugeMetricFamily("kvcpu_model_tier_capacity_bytes", "Tier capacity", labels=["tier"])
    for t in tiers:
        occ.add_metric([str(t["tier"])], t.get("resident", 0))
        used.add_metric([str(t["tier"])], t.get("used_bytes", 0))
        cap.add_metric([str(t["tier"])], t.get("capacity_bytes", 0))
    yield from (occ, used, cap)
    moved = CounterMetricFamily("kvcpu_model_dma_transferred_bytes", "DMA bytes moved, by direction",
                                labels=["direction"])
    moved.add_metric(["down"], num("bytes_down"))  # towards slower tiers (evictions)
    moved.add_metric(["up"], num("bytes_up"))  # towards faster tiers (prefetches)
    yield moved
    queue = GaugeMetricFamily("kvcpu_model_dma_queue_depth", "Moves queued per DMA channel", labels=["channel"])
    for row in dma:
        if "channel" in row:
            queue.add_metric([str(row["channel"])], row.get("queued", 0))
    yield queue
    pf = CounterMetricFamily("kvcpu_model_prefetches", "PREFETCH targets judged at their step",
                             labels=["result"])
    pf.add_metric(["on_time"], num("prefetch_on_time"))
    pf.add_metric(["late"], num("prefetch_late"))
    pf.add_metric(["reclaimed"], num("prefetch_reclaimed_before_target"))
    yield pf
    yield CounterMetricFamily("kvcpu_model_scans", "HEPC scans run", value=num("scans"))
    yield CounterMetricFamily("kvcpu_model_scan_seconds", "Time spent in HEPC scans",
                              value=num("scan_ns_total") / 1e9)
    yield GaugeMetricFamily("kvcpu_model_last_scan_seconds", "Duration of the last scan",
                            value=num("last_scan_scan_ns") / 1e9)
    hints = CounterMetricFamily("kvcpu_model_hints", "Hints the model received", labels=["hint"])
    for k in ("hot", "evict", "prefetch", "share"):
        hints.add_metric([k], num(f"hint_{k}"))
    yield hints
    yield GaugeMetricFamily("kvcpu_model_live_blocks", "Live directory entries", value=num("live_entries"))
    yield GaugeMetricFamily("kvcpu_model_in_sync", "0 once the ring dropped commands the model never saw",
                            value=num("in_sync"))


class Metrics:
    """The registry, and the HTTP server when asked for."""

    def __init__(self, collector: Collector):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._httpd: MetricsServer | None = None
        self.address: tuple[str, int] | None = None

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, host: str, port: int, watch: Watch | None = None) -> None:
        """Serve /metrics on HOST:PORT (httpd.MetricsServer); OSError if
        the address cannot be bound."""
        httpd = MetricsServer(host, port, lambda: generate_latest(self.registry), watch=watch)
        httpd.start()
        self._httpd = httpd
        self.address = httpd.address

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.close()
            self._httpd = None


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (``[v6]:PORT``; port 0 picks a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics wants HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)
