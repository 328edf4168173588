"""``kvcpu-dev --mock --cdi``: the CDI spec's life beside a real daemon, in
a private --cdi-dir: written once the node answers and named on the ready
line, removed on stop (by the helper when the daemon dropped root), left by
a kill -9 until the next start or --stop, and a foreign spec for the name
refused.  The spec's content against CDI's schema: tests/test_cdi.py; the
spec used by podman: tests/test_podman.py."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest

from live.harness import alive, wait_until

pytestmark = pytest.mark.live


def spec_path(d):
    return d.run_dir.parent / "cdi" / f"kvcpu.dev-{d.name}.json"


def start_with_cdi(daemons, *extra):
    d = daemons(start=False)
    result = d.start("--cdi-dir", str(spec_path(d).parent), *extra)
    return d, result


def test_written_on_start_named_on_the_ready_line_removed_on_stop(daemons):
    d, result = start_with_cdi(daemons)
    path = spec_path(d)
    assert f"; CDI kvcpu.dev/device={d.name} in {path} (pid" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    (device,) = json.loads(path.read_text())["devices"]
    edits = device["containerEdits"]
    assert device["name"] == d.name and edits["env"] == [f"KVCPU_DEVICE=/dev/{d.name}"]
    if d.transport != "cuse":  # the device file, over /dev/fuse or io_uring
        assert edits["mounts"] == [{"hostPath": str(d.attr_dir / "device"), "containerPath": f"/dev/{d.name}",
                                    "options": ["bind"]}]
    else:  # the character device the kernel made, with its numbers
        (node,) = edits["deviceNodes"]
        rdev = os.stat(d.node).st_rdev
        assert (node["path"], node["hostPath"], node["type"]) == (f"/dev/{d.name}", str(d.node), "c")
        assert (node["major"], node["minor"]) == (os.major(rdev), os.minor(rdev))
    assert d.stop().returncode == 0
    assert not path.exists()


def test_a_daemon_that_dropped_root_has_its_helper_remove_it(daemons):
    d, _ = start_with_cdi(daemons, "--runas", "nobody")
    assert spec_path(d).exists()
    assert d.stop().returncode == 0
    assert not spec_path(d).exists()


def test_after_a_kill_the_next_stop_removes_it(daemons):
    d, _ = start_with_cdi(daemons)
    pid = d.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(pid), timeout=5)
    assert spec_path(d).exists()  # nothing ran to remove it
    r = d.cli("--stop", "--cdi-dir", str(spec_path(d).parent))
    assert r.returncode == 1 and f"a stale CDI spec {spec_path(d)})" in r.stderr
    assert not spec_path(d).exists()


def test_a_spec_for_the_name_that_is_not_ours_is_refused(daemons):
    d = daemons(start=False)
    path = spec_path(d)
    path.parent.mkdir(parents=True)
    foreign = {"cdiVersion": "0.5.0", "kind": "kvcpu.dev/device", "devices": [
        {"name": d.name, "containerEdits": {"mounts": [{"hostPath": "/elsewhere/device",
                                                        "containerPath": f"/dev/{d.name}"}]}}]}
    path.write_text(json.dumps(foreign))
    result = d.start("--cdi-dir", str(path.parent), check=False)
    assert result.returncode == 1
    assert result.stderr == (f"kvcpu-dev: {path} exists and is not this device's (another --run-dir or "
                             "--dev-dir?); remove it, or choose another --name\n")
    assert json.loads(path.read_text()) == foreign  # left as it was
    assert not d.attr_dir.exists() and not d.link.is_symlink()
