"""The ``kvcpu-dev`` command: ``kvcpu-dev run ...`` (run.py, which starts a
program and loads neither click, trio nor numpy), else the daemon's own
command line (cli.py)."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        from .run import main as run

        sys.exit(run(sys.argv[2:]))
    from .cli import main as daemon

    daemon()


if __name__ == "__main__":  # python -m kvcpu_dev.daemon.entry (a copy of the package run by another user)
    main()
