"""Helpers for the model tests: a model that checks its invariants after
every operation, and hints written in the driver's register order."""

from __future__ import annotations

from kvcpu_dev.device import regs
from kvcpu_dev.model import DeviceModel, ModelConfig

MiB = 2**20


class CheckedModel(DeviceModel):
    """A DeviceModel that runs check_invariants() after every register write,
    scan and read, so any test driving it checks them after every op."""

    def mmio_write(self, offset: int, value: int) -> None:
        super().mmio_write(offset, value)
        self.check_invariants()

    def run_pending(self) -> bool:
        ran = super().run_pending()
        self.check_invariants()
        return ran

    def stats(self) -> dict:
        out = super().stats()
        self.check_invariants()
        return out


def hot(m, va, length):
    m.mmio_write(regs.BOOST_ADDR, va)
    m.mmio_write(regs.BOOST_LEN, length)


def evict(m, va, length):
    m.mmio_write(regs.IMEVICT_ADDR, va)
    m.mmio_write(regs.IMEVICT_LEN, length)


def prefetch(m, va, length, target):
    m.mmio_write(regs.PREFETCH_ADDR, va)
    m.mmio_write(regs.PREFETCH_LEN, length)
    m.mmio_write(regs.PREFETCH_STEP, target)


def share(m, va, length):
    m.mmio_write(regs.SHARE_ADDR, va)
    m.mmio_write(regs.SHARE_LEN, length)


def set_weights(m, w_r, w_f, w_s, w_d, evict_thresh, prefetch_thresh):
    for off, v in zip((regs.WEIGHT_R, regs.WEIGHT_F, regs.WEIGHT_S, regs.WEIGHT_D, regs.EVICT_THRESH, regs.PREFETCH_THRESH),
                      (w_r, w_f, w_s, w_d, evict_thresh, prefetch_thresh)):
        m.mmio_write(off, v)


def step(m, n, run=True):
    m.mmio_write(regs.STEP_ADVANCE, n)
    if run:
        m.run_pending()


def small_config(**overrides) -> ModelConfig:
    """64 entries of 1 MiB; tiers of 8, 16, 32 and 64 blocks, with round
    transfer times so tests can reason about the clock."""
    base = dict(
        entries=64, block_size=MiB, step_period=0.001,
        hbm_capacity=8 * MiB, hbm_bandwidth=2**40, hbm_latency=0,
        t1_capacity=16 * MiB, t1_bandwidth=2**40, t1_latency=0,
        t2_capacity=32 * MiB, t2_bandwidth=2**30, t2_latency=0,  # 1 MiB in ~0.98 ms
        t3_capacity=64 * MiB, t3_bandwidth=2**30, t3_latency=0,
    )
    base.update(overrides)
    return ModelConfig().replace(**base)
