"""The recorder's batch encoder (recorder.frames, from the ring's rows)
against kvrec.encode (from decoded Events), on random commands: the same
bytes, and the same losses counted from the sequence numbers."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.bench.recorder import Recorder, frames
from kvcpu_dev.device import abi
from kvcpu_dev.device.tables import Advice, EventKind
from kvcpu_dev.driver.events import COLUMNS, CommandBatch
from kvcpu_dev.native._fuse import ffi

KINDS = [EventKind.IOCTL, EventKind.STORE, EventKind.RESET, EventKind.UNPLUG, EventKind.REPLUG]


def random_batch(rng: random.Random, n: int, first_seq: int = 1, gaps: bool = False) -> CommandBatch:
    buf = ffi.new("struct kv_event[]", n)
    raw = ffi.buffer(buf)
    cols = np.frombuffer(raw, dtype=COLUMNS)
    seq = first_seq
    for i in range(n):
        row = cols[i]
        row["seq"] = seq
        seq += 1 + (rng.randrange(3) if gaps and rng.random() < 0.2 else 0)
        row["t_ns"] = rng.randrange(1 << 64)
        row["kind"] = rng.choice(KINDS)
        row["cmd"] = rng.choice([*abi.BY_NUMBER, rng.randrange(1 << 32)])
        row["pid"] = rng.choice([0, 1, 4242, (1 << 31) - 1, -1])
        row["err"] = rng.choice([0, 0, 5, 22, 4095])
        row["fault"] = rng.randrange(1 << 32)
        row["latency_us"] = rng.randrange(1 << 32)
        row["service_ns"] = rng.randrange(1 << 32)
        row["aux"] = rng.choice([0, 0, *map(int, Advice)])
        row["size"] = size = rng.randrange(97)
        row["data"] = bytes(rng.randrange(256) for _ in range(size)).ljust(96, b"\0")
        row["nregs"] = nregs = rng.randrange(7)
        row["reg_seq"] = rng.randrange(1 << 63)
        row["reg_off"][:nregs] = [rng.randrange(1 << 32) for _ in range(nregs)]
        row["reg_val"][:nregs] = [rng.randrange(1 << 64) for _ in range(nregs)]
    batch = CommandBatch(raw, cols, 0, n)
    batch._keep = buf  # type: ignore[attr-defined]  # the rows' memory lives as long as the batch
    return batch


def comm_of(pid: int) -> bytes:
    """Names of every length, past the 255 bytes a record holds."""
    return bytes([65 + pid % 26]) * (pid % 300)


@pytest.mark.parametrize("seed", range(20))
def test_frames_are_what_encode_makes_of_each_event(seed):
    rng = random.Random(seed)
    batch = random_batch(rng, rng.randrange(1, 200))
    expect = b"".join(
        fmt.encode(ev.seq, ev.t_ns, ev.kind, ev.cmd, ev.pid, ev.errno, ev.data, ev.writes, ev.fault,
                   ev.latency_us, ev.service_ns, comm_of(ev.pid) if ev.pid > 0 else b"", ev.aux)
        for ev in batch.events())
    assert frames(batch.rows(), comm_of) == expect


@pytest.mark.parametrize("seed", range(10))
def test_a_batch_counts_what_its_events_one_by_one_count(tmp_path, seed):
    rng = random.Random(seed)
    whole, single = (Recorder(os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT, 0o600), tmp_path / name, "t")
                     for name in ("whole", "single"))
    seq = rng.randrange(1, 1000)
    for _ in range(5):
        batch = random_batch(rng, rng.randrange(1, 50), first_seq=seq, gaps=True)
        whole.take(batch)
        for ev in batch.events():
            single.command(ev)
        seq = batch.events()[-1].seq + 1 + rng.randrange(3)
    assert (whole.events, whole.lost) == (single.events, single.lost) and whole.lost > 0
    whole.close()
    single.close()
    assert (tmp_path / "whole").read_bytes() == (tmp_path / "single").read_bytes()
