"""The human-facing outputs: a text table for the terminal, a markdown page
and a plot of hit ratio against capacity, one line per policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .result import EvalResult

GiB = 2**30


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _percents(result: EvalResult) -> list[float] | None:
    """The capacities as percentages of the unique blocks, if all were asked so."""
    asked = result.get("capacity_asked") or []
    if len(asked) != len(result["capacity_blocks"]) or not all(a.endswith("%") for a in asked):
        return None
    return [float(a[:-1]) for a in asked]


def capacity_labels(result: EvalResult) -> list[str]:
    """Each capacity as asked, with its size in blocks: "2% (1234 blocks)"."""
    asked = result.get("capacity_asked") or []
    caps = result["capacity_blocks"]
    if len(asked) != len(caps):
        asked = [""] * len(caps)
    return [f"{a} ({c} blocks)" if a and a != str(c) else f"{c} blocks" for a, c in zip(asked, caps)]


def hit_table(result: EvalResult) -> list[list[str]]:
    """Rows: a header, then one per policy with its hit ratio per capacity."""
    caps = result["capacity_blocks"]
    rows = [["policy"] + capacity_labels(result)]
    for name, s in result["policies"].items():
        cells = []
        for i in range(len(caps)):
            cell = _pct(s["hit_ratio"][i])
            if s["t1_hits"][i]:
                cell += f" (+T1 {_pct(s['t1_hit_ratio'][i])})"
            cells.append(cell)
        rows.append([name] + cells)
    return rows


def movement_table(result: EvalResult) -> list[list[str]]:
    """Rows: bytes moved, prefetches and stall, per policy and capacity."""
    rows = [["policy", "capacity", "GiB up", "GiB down", "prefetch on time", "prefetch late", "stall s"]]
    for name, s in result["policies"].items():
        for i, cap in enumerate(result["capacity_blocks"]):
            rows.append([name, str(cap), f"{s['bytes_up'][i] / GiB:.0f}", f"{s['bytes_down'][i] / GiB:.0f}",
                         str(s["prefetch_on_time"][i]), str(s["prefetch_late"][i]), f"{s['stall_s'][i]:.1f}"])
    return rows


def text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def summary(result: EvalResult) -> str:
    if result.get("source") == "recording":
        r = result["recording"]
        hints = ", ".join(f"{n} {k}" for k, n in r["hints"].items())
        lost = f"; {r['events_lost']} events lost by the recorder" if r["events_lost"] else ""
        if r.get("hints_too_large"):
            lost += f"; {r['hints_too_large']} hints spanning too many blocks left out"
        if r.get("skipped_bytes"):
            lost += f"; {r['skipped_bytes']} damaged bytes skipped"
        return (f"{result['trace']}: recording, {r['commands']} commands ({r['refused']} refused), "
                f"access hints {hints}, {r['segments']} segment(s){lost}; {result['accesses']} block accesses "
                f"of {result['block_bytes']} bytes, {result['unique_blocks']} unique blocks (infinite cache: "
                f"{_pct(1 - result['unique_blocks'] / max(1, result['accesses']))})")
    return (f"{result['trace']}: {result['requests']} requests, {result['accesses']} block accesses, "
            f"{result['unique_blocks']} unique blocks (infinite cache: "
            f"{_pct(1 - result['unique_blocks'] / max(1, result['accesses']))})")


def write_markdown(result: EvalResult, path: Path, plot: Path | None = None, command: str | None = None) -> None:
    parts = [f"# kvcpu-eval: {result['trace']}", "", summary(result), ""]
    if command:
        parts += ["```sh", command, "```", ""]
    parts += ["## Block hit ratio (fast tier)", "", markdown(hit_table(result)), ""]
    if plot:
        parts += [f"![hit ratio against capacity]({plot.name if plot.parent == path.parent else plot})", ""]
    parts += ["## Data movement", "", markdown(movement_table(result)), ""]
    parts += ["## Parameters", "", "```json", json.dumps(result.get("parameters", {}), indent=2, sort_keys=True),
              "```", ""]
    path.write_text("\n".join(parts))


def write_plot(result: EvalResult, path: Path) -> None:
    """Hit ratio against capacity (matplotlib, no display): see figure()."""
    fig = figure(result)
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(result: EvalResult) -> Any:
    """One line per policy, and for a policy with T1 hits (hepc) a dotted
    one for its hits in HBM or T1; capacities asked as percentages on a
    percent axis; the legend beside the plot, never over a line (Belady
    rises in the top left corner, where a legend inside would sit)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("kvcpu-eval: --plot needs matplotlib (pip install 'kvcpu-dev[eval]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    percents = _percents(result)
    xs: list[float] = percents if percents is not None else [float(c) for c in result["capacity_blocks"]]
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    for name, s in result["policies"].items():
        style = "--" if name == "belady" else "-"
        (line,) = ax.plot(xs, [100 * h for h in s["hit_ratio"]], style, marker="o", label=name)
        t1 = s.get("t1_hit_ratio") or []
        if any(t1):
            ax.plot(xs, [100 * (h + t) for h, t in zip(s["hit_ratio"], t1)], ":", marker=".",
                    color=line.get_color(), label=f"{name}: HBM or T1")
    ax.axhline(100 * (1 - result["unique_blocks"] / max(1, result["accesses"])), color="grey", lw=0.8, ls=":",
               label="infinite cache")
    if percents is not None:
        ax.set_xlabel(f"fast-tier capacity (% of the {result['unique_blocks']} unique blocks)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}%"))
    else:
        ax.set_xlabel("fast-tier capacity (trace blocks)")
    ax.set_ylabel("block hit ratio (%)")
    ax.set_title(result["trace"])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    return fig
