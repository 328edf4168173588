"""Daemon memory with many open `blocks` descriptors (issue 8's probe):
a full directory (65,536 entries), 300 descriptors each read once.

Run as root:  .venv/bin/python benchmarks/bench_attr_rss.py [REPO_ROOT]
(REPO_ROOT: a checkout with its own .venv, to measure another version side
by side; default this one).  Takes a few minutes: every open renders.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time

MARK_HOT = 0x40184B02
ENTRIES = 65536
DESCRIPTORS = 300


def rss_mb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else str(pathlib.Path(__file__).resolve().parent.parent)
    kvcpu_dev = f"{root}/.venv/bin/kvcpu-dev"
    base = pathlib.Path(tempfile.mkdtemp(prefix="kvrss-"))
    name = "kvrss0"
    paths = ["--name", name, "--run-dir", str(base / "run"), "--dev-dir", str(base / "dev")]
    (base / "dev").mkdir()
    subprocess.run([kvcpu_dev, "--mock", "--transport", "fuse", *paths, "--set", f"entries={ENTRIES}"],
                   check=True, stdout=subprocess.DEVNULL)
    pid = int((base / "run" / f"{name}.pid").read_text())
    fds: list[int] = []
    try:
        node = os.open(base / "dev" / name, os.O_RDWR)
        fcntl.ioctl(node, MARK_HOT, struct.pack("<3Q", 0, ENTRIES << 21, 0))
        os.close(node)
        blocks = base / "run" / name / "blocks"
        t0 = time.monotonic()
        size = len(blocks.read_bytes())
        print(f"{root}: blocks {size / 1e6:.1f} MB, one render {time.monotonic() - t0:.2f} s, "
              f"RSS {rss_mb(pid)} MB", flush=True)
        t0 = time.monotonic()
        for _ in range(DESCRIPTORS):
            fd = os.open(blocks, os.O_RDONLY)
            os.read(fd, 4096)
            fds.append(fd)
        print(f"  {DESCRIPTORS} open descriptors, each read once: RSS {rss_mb(pid)} MB "
              f"({time.monotonic() - t0:.0f} s)")
    finally:
        for fd in fds:
            os.close(fd)
        subprocess.run([kvcpu_dev, "--stop", *paths], stdout=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
