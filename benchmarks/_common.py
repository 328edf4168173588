"""Shared by the benchmarks: building the C helpers, starting a private
daemon, and printing results with their targets."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
KVCPU_DEV = pathlib.Path(sys.executable).with_name("kvcpu-dev")


def build_c(source: str, out_dir: pathlib.Path, fuse: bool = False, defines: dict[str, int] | None = None,
            name: str | None = None) -> pathlib.Path:
    out = out_dir / (name or pathlib.Path(source).stem)
    cmd = ["gcc", "-O2", "-Wall", "-I", str(ROOT / "uapi"), "-o", str(out), str(BENCH / source)]
    cmd += [f"-D{key}={value}" for key, value in (defines or {}).items()]
    if fuse:
        cmd += subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                              capture_output=True, text=True).stdout.split()
    subprocess.run(cmd, check=True)
    return out


def client_us(argv: list) -> list[float]:
    """Run a C client (ioctl_rtt, ioctl_load) and take the nanoseconds it
    prints, in microseconds: p25 p50 p75 p99 max."""
    out = subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout
    return [int(v) / 1000.0 for v in out.split()]


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (sched_setaffinity on a pid moves only its
    main thread; the fast path answers on another)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cpus)


def pinned(cpu: int | None, argv: list) -> list[str]:
    argv = [str(a) for a in argv]
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def noop_server(binary: pathlib.Path, mountpoint: pathlib.Path, cpu: int | None = None) -> subprocess.Popen:
    """The no-op server, started as a daemon is: in a session of its own.

    `kvcpu-dev --mock` forks and calls setsid(), and with autogroup
    scheduling (on here, and on most desktop and cloud kernels) a new
    session is a task group of its own, so every switch between a client
    and the daemon goes through the group hierarchy.  A server left in the
    benchmark's session skips that: the same no-op server measured 1.08-1.14x
    slower on one CPU when started with setsid.  Compare like with like."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(pinned(cpu, [binary, mountpoint]), stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    proc.stdout.readline()  # "ready"
    return proc


@contextlib.contextmanager
def daemon(name: str, base: pathlib.Path, cpu: int | None = None, extra: tuple = ()) -> Iterator[dict]:
    """A kvcpu-dev on private paths; always stopped and unmounted after."""
    paths = {"run": base / "run", "dev": base / "dev"}
    paths["dev"].mkdir(parents=True, exist_ok=True)
    common = ["--name", name, "--run-dir", paths["run"], "--dev-dir", paths["dev"]]
    t0 = time.perf_counter()
    subprocess.run(pinned(cpu, [KVCPU_DEV, "--mock", *common, *extra]), check=True,
                   stdout=subprocess.DEVNULL)
    started = time.perf_counter() - t0
    pid = int((paths["run"] / f"{name}.pid").read_text())
    try:
        yield {"node": paths["dev"] / name, "pid": pid, "start_s": started,
               "attr_dir": paths["run"] / name}
    finally:
        subprocess.run([KVCPU_DEV, "--stop", *map(str, common)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        subprocess.run(["umount", "-l", str(paths["run"] / name)], stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def scratch() -> Iterator[pathlib.Path]:
    path = pathlib.Path(tempfile.mkdtemp(prefix="kvbench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Report:
    """Rows of (what, figure, target, ok); exit status 1 if any target fails."""

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple[str, str, str, bool | None]] = []

    def add(self, what: str, figure: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append((what, figure, target, ok))

    def finish(self) -> int:
        print(f"\n{self.title}")
        width = max(len(r[0]) for r in self.rows)
        for what, figure, target, ok in self.rows:
            mark = "" if ok is None else ("  ok" if ok else "  MISSED")
            tgt = f"  (target {target})" if target else ""
            print(f"  {what:<{width}}  {figure}{tgt}{mark}")
        failed = [r for r in self.rows if r[3] is False]
        return 1 if failed else 0


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99_beside_blocks_reader(rtt: pathlib.Path, node: pathlib.Path, blocks: pathlib.Path,
                             batches: int) -> tuple[float, float, float]:
    """STEP p99 at a 2 ms cadence alone and while a process reads the
    ``blocks`` attribute in a loop, alternated batch by batch.  Returns the
    medians (us) alone and beside it, and the worst batch's ratio."""
    quiet, loud = [], []
    for _ in range(batches):
        quiet.append(client_us([rtt, node, 1000, "step", 2000])[3])
        reader = subprocess.Popen([sys.executable, "-c", "import sys\nwhile True:\n    open(sys.argv[1], 'rb').read()",
                                   str(blocks)])
        try:
            time.sleep(0.3)
            loud.append(client_us([rtt, node, 1000, "step", 2000])[3])
        finally:
            reader.kill()
            reader.wait()
    worst = max(lo / q for lo, q in zip(loud, quiet))
    return statistics.median(quiet), statistics.median(loud), worst
