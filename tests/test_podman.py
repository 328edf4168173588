"""The device in a podman container through CDI, end to end, with Debian's
podman (4.3, CDI since 4.1) on this machine.

In order (module-scoped fixtures, torn down in reverse even when a test
fails):

1. the base image ``kvcpu-dev-base:local`` in podman's storage
   (``scripts/docker-image.sh --engine podman``: the Docker test's Debian
   rootfs, imported; reused from the session's rootfs cache when the Docker
   test built it, kept when it existed before, else removed at the end
   unless ``KVCPU_PODMAN_KEEP_BASE=1``);
2. the client image (``Dockerfile --target client``: kvctl and the client,
   no daemon) under a unique test tag, built with ``--network none``;
   always removed, with any container of this run;
3. a daemon on the host, FUSE transport (no CUSE here), started with
   ``--cdi``: podman 4.3 reads specs from /etc/cdi and /var/run/cdi only
   (no cdi_spec_dirs setting before podman 4.7), so the spec goes to
   /var/run/cdi under the daemon's unique name and leaves with it;
4. ``podman run --device kvcpu.dev/device=NAME IMAGE kvctl telemetry``, a
   command from the container seen by the host, and after the daemon's
   stop the name no longer resolves.

The CUSE spec (a device node rather than a bind mount) is checked against
CDI's schema in tests/test_cdi.py and with a real CUSE node under UML in
tests/live/test_cdi.py.

Skips (with the reason) only where podman cannot run this: not installed,
not root, no /dev/fuse, no way to build the base image.
``KVCPU_REQUIRE_PODMAN=1`` turns those skips into failures (.ci/run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from typing import NoReturn

import pytest
from hostcmd import quiet, run, skip_or_fail
from live.harness import Daemon, mounted, new_name

pytestmark = pytest.mark.podman

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BASE_TAG = os.environ.get("KVCPU_PODMAN_BASE", "kvcpu-dev-base:local")
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
IMAGE_TAG = f"kvcpu-client-test:{RUN_ID}"
LABEL = f"kvcpu.test={RUN_ID}"
CDI_DIR = pathlib.Path("/var/run/cdi")
#: podman raises a root container's open files to 1048576 and processes to
#: 4194304; where the host forbids that (this machine: runc's "error
#: setting rlimit type 7: operation not permitted"), nothing starts.
#: kvctl needs few of either.
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

TIMINGS: dict[str, float | str] = {}


def _skip_or_fail(reason: str) -> NoReturn:
    skip_or_fail("KVCPU_REQUIRE_PODMAN", reason)


def image_exists(ref: str) -> bool:
    return run(["podman", "image", "exists", ref], check=False).returncode == 0


@pytest.fixture(scope="module")
def timings(request):
    start = time.monotonic()
    yield TIMINGS
    TIMINGS["module_total_s"] = round(time.monotonic() - start, 2)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\npodman timings: " + ", ".join(f"{k}={v}" for k, v in TIMINGS.items()), file=sys.stderr,
              flush=True)


@pytest.fixture(scope="module")
def podman_lock(timings):
    """One run of this module at a time per machine (two would remove each
    other's base image); and the skips, before anything is built."""
    if shutil.which("podman") is None:
        _skip_or_fail("podman is not installed (apt-get install podman: scripts/setup.sh --test)")
    if os.geteuid() != 0:
        _skip_or_fail("the CDI test runs rootful podman and a daemon: it needs root")
    if not os.path.exists("/dev/fuse"):
        _skip_or_fail("/dev/fuse is missing: no daemon to hand to a container")
    state = pathlib.Path("/run/kvcpu-podman")
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "test.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def base_image(podman_lock, rootfs_cache):
    existed = image_exists(BASE_TAG)
    t0 = time.monotonic()
    r = run([str(SCRIPTS / "docker-image.sh"), "--engine", "podman", "--tag", BASE_TAG], timeout=900, check=False,
            env={**os.environ, "KVCPU_ROOTFS_CACHE": str(rootfs_cache)})
    if r.returncode == 77:
        _skip_or_fail(f"cannot build the base image here: {r.stderr.strip()}")
    if r.returncode != 0:
        pytest.fail(f"scripts/docker-image.sh --engine podman failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}",
                    pytrace=False)
    TIMINGS["base_image_s"] = round(time.monotonic() - t0, 2)
    TIMINGS["base_image"] = "reused" if "up to date" in r.stdout else \
        "imported from the session's rootfs" if "reusing the rootfs" in r.stdout else "built"
    yield BASE_TAG
    if not existed and os.environ.get("KVCPU_PODMAN_KEEP_BASE") != "1":
        quiet(["podman", "image", "rm", BASE_TAG])


@pytest.fixture(scope="module")
def image(base_image):
    """The client image, built offline; removed at the end with every
    container of this run."""
    try:
        t0 = time.monotonic()
        run(["podman", "build", "--network", "none", "--format", "docker", "--layers=false", "--target", "client",
             "--label", LABEL, "--build-arg", f"BASE={base_image}", "-t", IMAGE_TAG, str(REPO)], timeout=600)
        TIMINGS["client_image_s"] = round(time.monotonic() - t0, 2)
        yield IMAGE_TAG
    finally:
        left = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={LABEL}"], capture_output=True, text=True)
        for container in left.stdout.split():
            quiet(["podman", "rm", "-f", container])
        quiet(["podman", "image", "rm", "-f", IMAGE_TAG])


@pytest.fixture
def cdi_daemon(tmp_path):
    """A host daemon (FUSE) that wrote its CDI spec to /var/run/cdi."""
    d = Daemon(new_name(), tmp_path, transport="fuse")
    try:
        d.start("--cdi")
        yield d
    finally:
        d.cleanup()
        assert not mounted(d.attr_dir)
        with contextlib.suppress(FileNotFoundError):  # a failed test's, whatever happened
            (CDI_DIR / f"kvcpu.dev-{d.name}.json").unlink()


def podman_run(image: str, name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["podman", "run", "--rm", "--network", "none", *LIMITS, "--label", LABEL,
                "--device", f"kvcpu.dev/device={name}", image, *command], check=check, timeout=120)


def test_kvctl_telemetry_in_a_container_through_cdi(image, cdi_daemon):
    d = cdi_daemon
    spec = json.loads((CDI_DIR / f"kvcpu.dev-{d.name}.json").read_text())
    assert spec["kind"] == "kvcpu.dev/device" and spec["devices"][0]["name"] == d.name
    t0 = time.monotonic()
    r = podman_run(image, d.name, "kvctl", "telemetry")
    TIMINGS["podman_run_kvctl_telemetry_s"] = round(time.monotonic() - t0, 2)
    assert r.stdout.splitlines()[0].split() == ["current_step", "0"], r.stdout
    # The same device: a command from the container is the host's too.
    podman_run(image, d.name, "kvctl", "step", "77")
    assert d.telemetry()["current_step"] == 77 and d.telemetry()["step_count"] == 1
    # What the container sees: the FUSE device file bound at /dev/NAME, and $KVCPU_DEVICE.
    r = podman_run(image, d.name, "sh", "-c", f'echo "$KVCPU_DEVICE"; stat -c "%F %a" /dev/{d.name}')
    assert r.stdout.splitlines() == [f"/dev/{d.name}", "regular empty file 600"]


def test_the_name_no_longer_resolves_once_the_daemon_stops(image, cdi_daemon):
    d = cdi_daemon
    assert d.stop().returncode == 0
    assert not (CDI_DIR / f"kvcpu.dev-{d.name}.json").exists()
    r = podman_run(image, d.name, "kvctl", "telemetry", check=False)
    assert r.returncode != 0
    assert f"unresolvable CDI devices kvcpu.dev/device={d.name}" in r.stderr, r.stderr
