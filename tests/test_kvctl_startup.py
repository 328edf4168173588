"""kvctl's driver commands start without the heavy imports (issue 10):
no click, no cffi, no numpy, no trio, no model.  A regression here costs
every `kvctl step` tens of milliseconds."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("click", "cffi", "numpy", "trio", "kvctl.group", "kvcpu_dev.model", "kvcpu_dev.native._fuse")


def test_the_reference_commands_import_nothing_heavy() -> None:
    code = "import sys; from kvctl import cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
