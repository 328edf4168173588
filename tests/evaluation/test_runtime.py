"""The runtime adapter driving the device model: access accounting,
the hints' effect on residency, determinism, and the shipped setting."""

from __future__ import annotations

import json

from click.testing import CliRunner

from kvcpu_dev.evaluation import lru, runtime
from kvcpu_dev.evaluation.cli import main
from kvcpu_dev.evaluation.runtime import Adapter, AdapterConfig, runs_of
from kvcpu_dev.evaluation.traces import Request, Trace

MiB = 2**20


def run(trace: Trace, capacity: int, **params):
    return Adapter(trace, capacity, 64 * MiB, AdapterConfig().replace(**params)).run()


def test_runs_of_consecutive_blocks():
    assert runs_of([4, 5, 6, 9, 2, 3]) == [(4, 3), (9, 1), (2, 2)]
    assert runs_of([]) == []


def test_a_device_that_never_evicts_reaches_the_infinite_cache(small_trace):
    c = run(small_trace, small_trace.unique_blocks, evict_thresh=0)
    assert c.accesses == len(small_trace.accesses)
    assert c.hits == len(small_trace.accesses) - small_trace.unique_blocks
    assert c.hits == lru.simulate(small_trace.accesses, small_trace.unique_blocks).hits


def test_default_weights_sink_every_unshared_block(small_trace):
    """With the register defaults every non-prefix block is a candidate at
    every step: blocks a request wrote sink once it finishes, so the next
    turn misses them even with HBM for every block."""
    c = run(small_trace, small_trace.unique_blocks)
    assert c.hits < len(small_trace.accesses) - small_trace.unique_blocks
    assert c.bytes_down > 0 and c.extra["evict_candidates_total"] > 0


def test_a_shared_prefix_stays_while_a_request_holds_it():
    # r1 and r2 overlap in time and share block 0: r2 finds it in HBM.
    reqs = [Request(0, 1024, 200, (0, 1)), Request(20, 1024, 5, (0, 2))]
    c = run(Trace("t", reqs), 4)
    assert (c.accesses, c.hits) == (4, 1)


def test_two_runs_are_identical(small_trace):
    a, b = run(small_trace, 20), run(small_trace, 20)
    assert a.as_dict() == b.as_dict()


def test_the_shipped_setting_loads():
    rec = runtime.recommended()
    assert rec["how"]
    cfg = runtime.config_for("recommended")
    assert cfg == AdapterConfig().replace(**rec["parameters"])
    assert runtime.config_for("default") == AdapterConfig()


def test_cli_runs_hepc(trace_file):
    res = CliRunner().invoke(main, [str(trace_file), "--capacity-blocks", "20,60", "--policies",
                                    "lru,hepc,hepc-default", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for name in ("hepc", "hepc-default"):
        s = out["policies"][name]
        assert len(s["hit_ratio"]) == 2 and len(s["extra"]) == 2
        assert all(0 <= h <= 1 for h in s["hit_ratio"] + s["t1_hit_ratio"])
    assert out["parameters"]["hepc"]["hepc-default"]["evict_thresh"] == 0x1000


def test_tune_reports_default_tuned_and_classic_on_the_held_out_part(small_trace):
    from kvcpu_dev.evaluation import tuning
    from kvcpu_dev.evaluation.policies import Options
    caps = [round(0.1 * small_trace.unique_blocks)]
    r = tuning.tune(small_trace, caps, Options(), budget=2, jobs=1, show_progress=False)
    assert {"lru", "arc", "prio-lru", "belady", "hepc-default", "hepc-tuned"} <= set(r["policies"])
    assert r["tuning"]["settings_tried"] == 3 and r["tuning"]["train"]["requests"] < len(small_trace.requests)
    best = r["policies"]["hepc-tuned"]["hit_ratio"][0]
    assert 0 <= best <= r["policies"]["belady"]["hit_ratio"][0]
