"""The runtime adapter: a trace drives the device model itself.

A small continuous-batching runtime on the device's simulated clock turns
each request of the trace into the hints a real integration would issue,
as BAR0 register writes in the driver's order, to ``kvcpu_dev.model``
in-process (no daemon, no ioctl):

- every ``step_stride`` decode steps of the running batch (default: every
  one): STEP_ADVANCE (the device clock advances ``step_stride *
  step_period``); the device's scan runs every ``scan_interval`` STEPs (the
  STEPs between supersede each other, as on a device whose scan is still
  pending);
- admission (prefill) of a request: its blocks are accessed in order and
  measured (HBM hit, T1 hit, reload, first use); a matched block (the
  device tracks it: the runtime's prefix cache knows it) gets SHARE_PREFIX,
  a new block MARK_HOT (which allocates it, in HBM while HBM has room);
- a matched block found below HBM with no reference is brought in by the
  runtime itself (the device never promotes into HBM): EVICT (reclaims the
  slow copy) then SHARE_PREFIX (allocates it anew, in HBM if there is room);
- before each executed scan: MARK_HOT on the running batch's blocks;
- queued requests (arrived, not admitted; the first ``lookahead``):
  PREFETCH of their tracked blocks with the target step of the next
  admission;
- a finished request: MARK_HOT on its blocks (their last use), then EVICT on
  the blocks it SHARE'd (one reference dropped).  Its own new blocks stay
  cached: every prompt block may be a later turn's prefix, so nothing is
  certainly private (the decode tokens' blocks are not in the trace).

Trace block b (its dense index, in order of first use) is the address range
``[b * block_bytes, (b + 1) * block_bytes)``; the device covers it with
``entries_per_block`` directory entries of ``block_bytes /
entries_per_block`` bytes.  HBM holds ``capacity`` trace blocks; the lower
tiers keep the model's defaults.  Requests are admitted in file order, so
the access sequence is the one every other policy sees.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..device import regs
from ..model import DeviceModel, ModelConfig
from ..model.config import HBM, T1
from ..model.hepc import Weights
from . import progress
from .result import Counts
from .traces import Trace

if TYPE_CHECKING:
    from .options import Options

WEIGHT_FIELDS = tuple(regs.DEFAULT_WEIGHTS)
WEIGHT_OFFSETS = regs.WEIGHT_REGS


@dataclass(frozen=True)
class AdapterConfig:
    """The runtime's and the device's parameters for one hepc run."""

    # HEPC registers (defaults: the documented register defaults)
    w_r: int = regs.DEFAULT_WEIGHTS["w_r"]
    w_f: int = regs.DEFAULT_WEIGHTS["w_f"]
    w_s: int = regs.DEFAULT_WEIGHTS["w_s"]
    w_d: int = regs.DEFAULT_WEIGHTS["w_d"]
    evict_thresh: int = regs.DEFAULT_WEIGHTS["evict_thresh"]
    prefetch_thresh: int = regs.DEFAULT_WEIGHTS["prefetch_thresh"]
    # the device model's own choices
    hot_protect_steps: int = 4
    r_decay_shift: int = 1
    step_period: float = 0.020  # seconds per decode step
    entries_per_block: int = 1  # directory entries per trace block (32: 2 MiB entries for 64 MiB blocks)
    # the runtime
    max_batch: int = 32  # requests decoding at once
    scan_interval: int = 16  # steps between executed scans
    lookahead: int = 8  # queued requests whose blocks are prefetched
    step_stride: int = 1  # decode steps per STEP_ADVANCE (the device's step unit)

    @property
    def step_seconds(self) -> float:
        """Device time per STEP: ``step_stride`` decode steps."""
        return self.step_period * self.step_stride

    def weights(self) -> Weights:
        return Weights(*(getattr(self, f) for f in WEIGHT_FIELDS))

    def replace(self, **overrides: Any) -> AdapterConfig:
        """A copy with ``overrides``; ValueError for an unknown key or a
        value of the wrong type or outside ADAPTER_LIMITS."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown hepc parameter {', '.join(sorted(unknown))}")
        for key, value in overrides.items():
            low, high = ADAPTER_LIMITS[key]
            kind = type(getattr(self, key))
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high
                    or (kind is int and isinstance(value, float) and not value.is_integer())):
                raise ValueError(f"hepc parameter {key} must be {'a whole number' if kind is int else 'a number'} "
                                 f"from {low} to {high}, got {str(value)[:40]}")
            overrides[key] = kind(value)
        return dataclasses.replace(self, **overrides)


#: What each adapter parameter may be (the registers' widths, the model's
#: own ranges, and a runtime that makes progress).
ADAPTER_LIMITS: dict[str, tuple[float, float]] = {
    **{f: (0, 255) for f in ("w_r", "w_f", "w_s", "w_d")},
    "evict_thresh": (0, 0xFFFF), "prefetch_thresh": (0, 0xFFFF),
    "hot_protect_steps": (0, 2**31), "r_decay_shift": (0, 8), "step_period": (1e-9, 3600.0),
    "entries_per_block": (1, 4096), "max_batch": (1, 1 << 16), "scan_interval": (1, 1 << 20),
    "lookahead": (0, 1 << 16), "step_stride": (1, 1 << 20),
}


def recommended() -> dict[str, Any]:
    """The shipped recommendation (recommended.json) as stored."""
    stored: dict[str, Any] = json.loads(resources.files(__package__).joinpath("recommended.json").read_text())
    return stored


def config_for(setting: str, overrides: dict[str, Any] | None = None) -> AdapterConfig:
    """``default``: register defaults; ``recommended``: the shipped setting."""
    base = AdapterConfig()
    if setting == "recommended":
        base = base.replace(**recommended()["parameters"])
    elif setting != "default":
        raise ValueError(f"unknown hepc setting {setting!r}")
    return base.replace(**(overrides or {}))


def describe(policy: str, opts: Options) -> dict[str, Any]:
    setting = "default" if policy == "hepc-default" else "recommended"
    return dataclasses.asdict(config_for(setting, opts.hepc))


def run(trace: Trace, capacity: int, opts: Options, setting: str) -> Counts:
    """One hepc run of ``trace`` with HBM of ``capacity`` trace blocks."""
    return Adapter(trace, capacity, opts.block_bytes, config_for(setting, opts.hepc)).run()


def runs_of(blocks: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive block numbers as (first, count): one hint
    covers a run, as a runtime hints a contiguous range."""
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and out[-1][0] + out[-1][1] == b:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


@dataclass
class Running:
    index: int  # request index in the trace
    finish_step: int
    own: list[tuple[int, int]]  # runs it allocated (MARK_HOT)
    shared: list[tuple[int, int]]  # runs it holds a reference on (SHARE_PREFIX)


class Adapter:
    """One trace replayed through one DeviceModel."""

    def __init__(self, trace: Trace, capacity: int, block_bytes: int, cfg: AdapterConfig):
        self.trace, self.cfg, self.capacity = trace, cfg, capacity
        self.block_bytes = block_bytes
        self.e = cfg.entries_per_block
        if block_bytes % self.e:
            raise ValueError("block_bytes must be a multiple of entries_per_block")
        dense: dict[int, int] = {}
        self.requests = [[dense.setdefault(h, len(dense)) for h in r.hash_ids] for r in trace.requests]
        entries = min(2**24, max(64, (len(dense) + 1) * self.e))
        mcfg = ModelConfig().replace(
            entries=entries, block_size=block_bytes // self.e, step_period=cfg.step_seconds,
            hot_protect_steps=cfg.hot_protect_steps, r_decay_shift=cfg.r_decay_shift,
            hbm_capacity=capacity * block_bytes)
        self.m = DeviceModel(mcfg)
        self.step = 0
        self.counts = Counts()
        self.seen: set[int] = set()
        self.extra: dict[str, Any] = dict.fromkeys(("reloads_t1", "reloads_below_t1", "bring_in_hbm", "bring_in_spilled",
                                    "stuck_below_hbm", "runtime_reload_bytes", "steps", "scans",
                                    "queue_wait_steps"), 0)
        for off, field in zip(WEIGHT_OFFSETS, WEIGHT_FIELDS):
            self.m.mmio_write(off, getattr(cfg, field))

    # -- hints, in the driver's register order ------------------------------------------
    def _range(self, run: tuple[int, int]) -> tuple[int, int]:
        return run[0] * self.block_bytes, run[1] * self.block_bytes

    def hot(self, run: tuple[int, int]) -> None:
        va, n = self._range(run)
        self.m.mmio_write(regs.BOOST_ADDR, va)
        self.m.mmio_write(regs.BOOST_LEN, n)

    def share(self, run: tuple[int, int]) -> None:
        va, n = self._range(run)
        self.m.mmio_write(regs.SHARE_ADDR, va)
        self.m.mmio_write(regs.SHARE_LEN, n)

    def evict(self, run: tuple[int, int]) -> None:
        va, n = self._range(run)
        self.m.mmio_write(regs.IMEVICT_ADDR, va)
        self.m.mmio_write(regs.IMEVICT_LEN, n)

    def prefetch(self, run: tuple[int, int], target: int) -> None:
        va, n = self._range(run)
        self.m.mmio_write(regs.PREFETCH_ADDR, va)
        self.m.mmio_write(regs.PREFETCH_LEN, n)
        self.m.mmio_write(regs.PREFETCH_STEP, target)

    def advance(self, steps: int = 1) -> None:
        """STEP_ADVANCE; the scan runs when the step is a multiple of scan_interval."""
        self.step += steps
        scan = self.step % self.cfg.scan_interval == 0 or steps > 1
        if scan:
            for r in self.running:
                for run in r.own + r.shared:
                    self.hot(run)
        self.m.mmio_write(regs.STEP_ADVANCE, self.step)
        self.extra["steps"] += 1
        if scan:
            self.m.run_pending()
            self.extra["scans"] += 1

    # -- where a trace block is -----------------------------------------------------------
    def tier_of(self, b: int) -> int | None:
        """The slowest tier holding part of trace block ``b`` (None: untracked)."""
        index, tier = self.m.dir.index, self.m.dir.tier
        worst = -1
        for k in range(b * self.e, (b + 1) * self.e):
            i = index.get(k)
            if i is None:
                return None
            worst = max(worst, int(tier[i]))
        return worst

    def referenced(self, b: int) -> bool:
        i = self.m.dir.index.get(b * self.e)
        return i is not None and self.m.dir.ref[i] > 0

    # -- the runtime -------------------------------------------------------------------------
    def admit(self, index: int) -> Running:
        """Prefill: access, measure, bring in, hint."""
        m, c, x = self.m, self.counts, self.extra
        m.dma.advance_to(m.now_ns())
        blocks = self.requests[index]
        own, shared, bring = [], [], []
        duration = m.dma.duration
        for b in blocks:
            c.accesses += 1
            t = self.tier_of(b)
            if t is None:
                if b in self.seen:
                    c.reloads += 1  # tracked once, reclaimed since: recomputed
                self.seen.add(b)
                own.append(b)
                continue
            shared.append(b)
            if t == HBM:
                c.hits += 1
                continue
            c.reloads += 1
            if t == T1:
                c.t1_hits += 1
                x["reloads_t1"] += 1
            else:
                x["reloads_below_t1"] += 1
            c.stall_s += self.e * int(duration[t, HBM]) / 1e9
            if self.referenced(b):
                x["stuck_below_hbm"] += 1  # a running request holds it where it is
            else:
                bring.append(b)
        for run in runs_of(bring):
            self.evict(run)  # the runtime reads it into HBM; the slow copy is reclaimed
        x["runtime_reload_bytes"] += len(bring) * self.block_bytes
        own_runs, shared_runs = runs_of(own), runs_of(shared)
        for run in shared_runs:
            self.share(run)
        for run in own_runs:
            self.hot(run)
        for b in bring:
            x["bring_in_hbm" if self.tier_of(b) == HBM else "bring_in_spilled"] += 1
        req = self.trace.requests[index]
        decode = max(1, math.ceil(req.output_length / self.cfg.step_stride))
        return Running(index, self.step + decode, own_runs, shared_runs)

    def finish(self, r: Running) -> None:
        for run in r.own + r.shared:
            self.hot(run)
        for run in r.shared:
            self.evict(run)

    def prefetch_queue(self, queue: deque[int], prefetched: set[int]) -> None:
        """PREFETCH the tracked blocks of the first queued requests, targeted
        at the step they can be admitted at the earliest."""
        for pos, index in enumerate(queue):
            if pos >= self.cfg.lookahead:
                break
            if index in prefetched:
                continue
            prefetched.add(index)
            tracked = [b for b in self.requests[index] if (t := self.tier_of(b)) is not None and t > T1]
            target = self.step + 1 + pos // max(1, self.cfg.max_batch)
            for run in runs_of(tracked):
                self.prefetch(run, target)

    def run(self, show_progress: bool | None = False) -> Counts:
        cfg = self.cfg
        arrivals = [max(0, math.ceil(r.timestamp_ms / 1e3 / cfg.step_seconds)) for r in self.trace.requests]
        n = len(arrivals)
        self.running: list[Running] = []
        queue: deque[int] = deque()
        prefetched: set[int] = set()
        nxt = 0
        with progress.bar(n, "hepc", show_progress) as bar:
            while nxt < n or queue or self.running:
                while nxt < n and arrivals[nxt] <= self.step:
                    queue.append(nxt)
                    nxt += 1
                done = [r for r in self.running if r.finish_step <= self.step]
                if done:
                    self.running = [r for r in self.running if r.finish_step > self.step]
                    for r in done:
                        self.finish(r)
                while queue and len(self.running) < cfg.max_batch:
                    index = queue.popleft()
                    self.extra["queue_wait_steps"] += self.step - arrivals[index]
                    self.running.append(self.admit(index))
                    bar.update()
                self.prefetch_queue(queue, prefetched)
                if not self.running and not queue and nxt < n:
                    self.advance(max(1, arrivals[nxt] - self.step))  # idle: jump to the next arrival
                else:
                    self.advance()
        return self._result()

    def _result(self) -> Counts:
        self.m.run_pending()
        s = self.m.stats()
        c, x = self.counts, self.extra
        c.bytes_down = s["bytes_down"]
        c.bytes_up = s["bytes_up"] + x["runtime_reload_bytes"]
        c.evictions = int(self.m.dma.bytes_moved[HBM, T1] // self.m.block_size) // self.e
        c.prefetch_on_time = s["prefetch_on_time"]
        c.prefetch_late = s["prefetch_late"]
        x.update({k: s[k] for k in ("prefetch_reclaimed_before_target", "evict_candidates_total", "alloc_spilled",
                                    "scans_superseded", "prefetch_issued_hint", "prefetch_issued_scan",
                                    "evictions_issued", "blocks_reclaimed")})
        x["device_bytes_up"] = s["bytes_up"]
        x["end_blocks_per_tier"] = [s[f"{k}_blocks"] for k in ("hbm", "t1", "t2", "t3")]
        c.extra = x
        return c
