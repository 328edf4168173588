"""Record -> evaluate: a recording of a runtime's real ioctl stream
(``.kvrec``, kvcpu_dev/bench/kvrec.py) measured like a trace.

The access sequence (what every policy is fed):

- the recording's commands in record order; only commands the device
  accepted (errno 0: a refused or fault-injected command never reached the
  device, and an unplugged device answers ENODEV);
- each accepted hint of an *access kind* (default MARK_HOT and SHARE_PREFIX:
  the two hints the device itself treats as an access, setting the block's
  last access step) is split into device blocks of ``block_size`` bytes
  (the recorded model configuration's, default 2 MiB; ``--block-mib``
  overrides it): block number ``va // block_size``, every block with a byte
  in ``[va, va + len)``, ascending, as the model maps a hint.  Each block
  is one access.  A hint spanning more than MAX_HINT_BLOCKS blocks (more
  than the default directory holds: a runtime hints its own blocks, not
  the address space) is left out of the sequence and counted
  (``hints_too_large``); its register writes still reach hepc's model.
  A recording of more than MAX_ACCESSES accesses is refused with one line
  (a larger block size gives fewer);
- a function-level reset (a reset record) starts a new *segment*: the
  device forgot everything, so every policy starts each segment with an
  empty cache, and the counts are summed over segments.

prio-lru takes its priorities from the hints: a block accessed through
SHARE_PREFIX gets 100 (the runtime says it is a shared prefix), any other
access 35.  The trace mode's rule (shared = first used by an earlier
request) needs request boundaries, which a recording does not have.

``hepc`` here is the device as the runtime drove it: the recorded BAR0
register writes (the driver's, in its order: hints, STEPs, SET_WEIGHTS and
sysfs weight stores) go to a fresh DeviceModel on the simulated clock, as
``kvctl replay --model`` does (a STEP's scan runs before the next command;
a reset starts the model over), with HBM sized to each capacity; the other
tiers, the directory size and the rest of the configuration are the
recorded ones.  Just before an access hint's writes, each of its blocks is
looked up: in HBM it is a hit, in T1 a T1 hit, anywhere else (or untracked)
a miss.  What the device does on a miss is whatever the hint and the scans
do (MARK_HOT allocates an untracked block in HBM if there is room; nothing
promotes a block into HBM): the "a miss brings it in" of the classic
policies does not apply to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..bench import kvrec as fmt
from ..device import abi
from ..device.regs import U64
from . import arc, belady, lru, priolru, progress
from .result import Counts, EvalResult, add_bytes
from .traces import MAX_ACCESSES

if TYPE_CHECKING:
    from ..model import DeviceModel
    from ..model.config import ModelConfig

#: Hints that count as accesses by default, and every one that may.
DEFAULT_ACCESS_HINTS = ("HOT", "SHARE")
HINT_COMMANDS = {"HOT": abi.KV_CPU_MARK_HOT, "SHARE": abi.KV_CPU_SHARE_PREFIX,
                 "PREFETCH": abi.KV_CPU_PREFETCH, "EVICT": abi.KV_CPU_EVICT}
#: A single hint spanning more device blocks than this is left out of the
#: access sequence (and counted): the default directory's size.
MAX_HINT_BLOCKS = 1 << 16
CLASSIC = ("lru", "arc", "prio-lru", "belady")
POLICIES = CLASSIC + ("hepc",)


def is_recording(path: str | Path) -> bool:
    """True if the file starts with the recording format's magic (never
    waits on a FIFO: a special file is not one)."""
    try:
        fd = fmt.open_regular(path)
    except (OSError, ValueError):
        return False
    with open(fd, "rb") as f:
        return f.read(len(fmt.MAGIC)) == fmt.MAGIC


def parse_access_hints(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().upper() for p in text.split(",") if p.strip()))
    aliases = {"MARK_HOT": "HOT", "SHARE_PREFIX": "SHARE"}
    names = tuple(aliases.get(n, n) for n in names)
    unknown = [n for n in names if n not in HINT_COMMANDS]
    if unknown or not names:
        raise ValueError(f"access hints must be some of {', '.join(HINT_COMMANDS)}, got {text!r}")
    return names


@dataclass
class Sequence:
    """A recording's access sequence and what the HEPC replay needs."""

    name: str
    path: Path  # read again, record by record, by each hepc run
    block_size: int
    config: ModelConfig  # clock sim, block size as used
    access_hints: tuple[str, ...]
    segments: list[list[int]] = field(default_factory=list)  # block numbers, split at resets
    priorities: list[list[int]] = field(default_factory=list)  # prio-lru's, per access
    damage: fmt.Damage = field(default_factory=fmt.Damage)  # what the reader skipped
    commands: int = 0  # ioctl records
    refused: int = 0  # ioctls with an errno (not applied by the device)
    hints: dict[str, int] = field(default_factory=dict)  # accepted access hints by kind
    resets: int = 0
    seq_gaps: int = 0  # events the recorder's ring lost (seq numbers skipped)
    lost: int = 0  # events the stop marks say were lost
    hints_too_large: int = 0  # access hints over MAX_HINT_BLOCKS blocks, left out
    wanted: dict[int, str] = field(init=False)  # ioctl number -> access hint name

    def __post_init__(self) -> None:
        self.wanted = {HINT_COMMANDS[n]: n for n in self.access_hints}

    def span(self, r: fmt.Record) -> tuple[int, int] | None:
        """(first block, count) of an accepted access hint, else None."""
        if r.kind != fmt.KIND_IOCTL or r.errno or r.cmd not in self.wanted:
            return None
        f = r.fields
        if not f or not f["len"]:
            return None
        first = f["va"] // self.block_size
        last = (min(f["va"] + f["len"], U64 + 1) - 1) // self.block_size
        n = last - first + 1
        return None if n > MAX_HINT_BLOCKS else (first, n)

    @property
    def accesses(self) -> int:
        return sum(map(len, self.segments))

    @property
    def unique_blocks(self) -> int:
        return sum(len(set(s)) for s in self.segments)


def read_recording(path: str | Path, access_hints: tuple[str, ...] = DEFAULT_ACCESS_HINTS,
                   block_size: int | None = None, config_path: Path | None = None) -> Sequence:
    """Read a recording and derive its access sequence (see the module doc).
    ValueError (one line) for what cannot be evaluated."""
    from ..bench.replay import model_config_for, recorded_model_config

    path = Path(path)
    with fmt.Reader(path) as reader:
        recorded = None if config_path is not None else recorded_model_config(reader)
    config = model_config_for(recorded, config_path)
    if block_size is not None:
        config = config.replace(block_size=block_size)
    bs = config.block_size
    seq = Sequence(path.name, path, bs, config, access_hints, segments=[[]], priorities=[[]],
                   hints=dict.fromkeys(access_hints, 0))
    wanted = seq.wanted
    last_seq = None
    total = 0
    with fmt.Reader(path) as reader:
        for r in reader:
            if r.kind == fmt.KIND_MARK:
                meta = r.meta
                if meta.get("mark") == "stop":
                    seq.lost += int(meta.get("lost") or 0)
                continue
            if last_seq is not None and r.seq > last_seq + 1:
                seq.seq_gaps += r.seq - last_seq - 1
            last_seq = r.seq
            if r.kind == fmt.KIND_RESET:
                seq.resets += 1
                if seq.segments[-1]:
                    seq.segments.append([])
                    seq.priorities.append([])
                continue
            if r.kind != fmt.KIND_IOCTL:
                continue
            seq.commands += 1
            if r.errno:
                seq.refused += 1
                continue
            span = seq.span(r)
            if span is None:
                seq.hints_too_large += r.cmd in wanted and bool(r.fields.get("len"))
                continue
            first, n = span
            total += n
            if total > MAX_ACCESSES:
                raise ValueError(f"{path.name}: more than {MAX_ACCESSES} block accesses of {bs} bytes: "
                                 "give a larger --block-mib")
            kind = wanted[r.cmd]
            seq.hints[kind] += 1
            seq.segments[-1].extend(range(first, first + n))
            prio = priolru.PREFIX_PRIORITY if kind == "SHARE" else priolru.DEFAULT_PRIORITY
            seq.priorities[-1].extend([prio] * n)
    seq.damage = reader.damage
    return seq


# -- the classic policies, segment by segment ---------------------------------------------


def _add(total: Counts, c: Counts) -> Counts:
    for f in dataclasses.fields(Counts):
        if f.name != "extra":
            setattr(total, f.name, getattr(total, f.name) + getattr(c, f.name))
    return total


def run_classic(seq: Sequence, name: str, capacity: int) -> Counts:
    total = Counts()
    for blocks, prios in zip(seq.segments, seq.priorities):
        if not blocks:
            continue
        if name == "lru":
            c = lru.simulate(blocks, capacity)
        elif name == "arc":
            c = arc.simulate(blocks, capacity)
        elif name == "prio-lru":
            c = priolru.simulate(blocks, capacity, priorities=prios)
        elif name == "belady":
            c = belady.simulate(blocks, capacity)
        else:
            raise ValueError(f"not a classic policy: {name}")
        _add(total, c)
    return add_bytes(total, seq.block_size)


# -- HEPC: the recorded register writes through the model ---------------------------------

_SUMMED = ("bytes_up", "bytes_down", "prefetch_on_time", "prefetch_late", "prefetch_reclaimed_before_target",
           "evict_candidates_total", "alloc_spilled", "dir_full", "scans", "scans_superseded",
           "evictions_issued", "prefetch_issued_hint", "prefetch_issued_scan", "blocks_reclaimed",
           "unknown_reg_writes")


def run_hepc(seq: Sequence, capacity: int) -> Counts:
    """Replay the recording's register writes with HBM of ``capacity``
    blocks, measuring each access hint's blocks just before its writes."""
    from ..model import DeviceModel
    from ..model.config import HBM, T1

    config = seq.config.replace(hbm_capacity=capacity * seq.block_size, clock="sim")
    c = Counts()
    x: dict[str, int] = dict.fromkeys(_SUMMED, 0)
    x["evictions_hbm"] = 0
    seen: set[int] = set()

    def tally(m: DeviceModel) -> None:
        m.run_pending()
        s = m.stats()
        for k in _SUMMED:
            x[k] += int(s.get(k, 0))
        x["evictions_hbm"] += int(m.dma.bytes_moved[HBM, T1] // m.block_size)

    m = DeviceModel(config)
    with fmt.Reader(seq.path) as reader:
        for r in reader:
            if r.kind == fmt.KIND_RESET:
                tally(m)
                m = DeviceModel(config)
                seen = set()
                continue
            _hepc_record(m, seq, r, c, seen)
    tally(m)
    c.bytes_up, c.bytes_down = x.pop("bytes_up"), x.pop("bytes_down")
    c.prefetch_on_time, c.prefetch_late = x.pop("prefetch_on_time"), x.pop("prefetch_late")
    c.evictions = x.pop("evictions_hbm")
    c.extra = x
    return c


def _hepc_record(m: DeviceModel, seq: Sequence, r: fmt.Record, c: Counts, seen: set[int]) -> None:
    """One record through the model: an access hint's blocks looked up just
    before its register writes."""
    from ..model.config import HBM, T1

    if r.writes and m.has_pending():
        m.run_pending()  # the last STEP's scan, before what follows it
    span = seq.span(r)
    if span is not None:
        m.dma.advance_to(m.now_ns())  # moves finished by now have landed
        index, tier, duration = m.dir.index, m.dir.tier, m.dma.duration
        first, n = span
        for b in range(first, first + n):
            c.accesses += 1
            e = index.get(b)
            t = None if e is None else int(tier[e])
            if t == HBM:
                c.hits += 1
            else:
                if t is not None or b in seen:
                    c.reloads += 1  # its data is somewhere below (or was: recomputed)
                if t == T1:
                    c.t1_hits += 1
                if t is not None:
                    c.stall_s += int(duration[t, HBM]) / 1e9
            seen.add(b)
    for _seq, offset, value in r.writes:
        m.mmio_write(offset, value)


# -- all of it -----------------------------------------------------------------------------


def parse_capacities(text: str, seq: Sequence) -> list[int]:
    """As for traces (N, N%), plus ``hbm``: the recorded HBM in blocks."""
    from .runner import parse_capacities as parse

    out = []
    for part in text.split(","):
        if part.strip().lower() == "hbm":
            out.append(max(1, seq.config.tiers[0].capacity // seq.block_size))
        elif part.strip():
            out += parse(part, seq.unique_blocks)
    return out


def evaluate(seq: Sequence, capacities: list[int], policies: list[str],
             show_progress: bool | None = None) -> EvalResult:
    """The result in the shape of ``kvcpu-eval --json`` (plus ``source``
    and ``recording``)."""
    from .runner import series

    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise ValueError(f"policy {', '.join(bad)} does not apply to a recording (known: {', '.join(POLICIES)}; "
                         "hepc is the device as the recording drove it)")
    result: EvalResult = {
        "trace": seq.name,
        "source": "recording",
        "requests": seq.commands,
        "accesses": seq.accesses,
        "unique_blocks": seq.unique_blocks,
        "capacity_blocks": list(capacities),
        "block_bytes": seq.block_size,
        "recording": {
            "access_hints": list(seq.access_hints),
            "hints": seq.hints,
            "commands": seq.commands,
            "refused": seq.refused,
            "resets": seq.resets,
            "segments": len([s for s in seq.segments if s]),
            "events_lost": max(seq.seq_gaps, seq.lost),
            "hints_too_large": seq.hints_too_large,
            "skipped_bytes": seq.damage.skipped,
        },
        "policies": {},
    }
    work = [(p, cap) for p in policies for cap in capacities]
    runs: dict[str, list[Counts]] = {p: [] for p in policies}
    with progress.bar(len(work), "kvcpu-eval", show_progress) as bar:
        for p, cap in work:
            bar.set_postfix_str(f"{p} @ {cap}")
            runs[p].append(run_hepc(seq, cap) if p == "hepc" else run_classic(seq, p, cap))
            bar.update()
    for p in policies:
        result["policies"][p] = series(runs[p])
    return result
