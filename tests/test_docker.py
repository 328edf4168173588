"""kvcpu-dev in a container, end to end, on this machine's own dockerd.

What it does, in order (module-scoped fixtures, torn down in reverse even
when a test fails):

1. dockerd: uses the one that answers, or starts one with
   ``scripts/dockerd-ctl.sh start`` and stops it at the end.
2. the base image ``kvcpu-dev-base:local`` (``scripts/docker-image.sh``:
   Debian bookworm through mmdebstrap, no registry): reused when up to date;
   when the test had to build it from nothing it removes it at the end
   (``KVCPU_DOCKER_KEEP_BASE=1`` keeps it; a base image that existed before
   the test is always kept).
3. the project image from ``Dockerfile`` under a unique test tag, built with
   ``--network none`` (proof that it needs neither PyPI nor apt); always
   removed at the end, with any intermediate image its build left behind.
4. a container ``--device /dev/fuse --cap-add SYS_ADMIN`` running the image's
   entry point, ``kvcpu-dev --mock --foreground`` as PID 1; the client suite
   runs inside it through ``docker exec``: kvctl, Python ``fcntl``, a
   gcc-built C client, the attribute files, errnos, the HEALTHCHECK, and the
   live pytest suite (``tests/live``, FUSE transport) unless
   ``KVCPU_DOCKER_LIVE=0`` (the reduced form).
5. the recipes of docs/containers.md: the daemon started and stopped inside a
   runtime's own test container, a sidecar sharing its FUSE mount through a
   shared bind mount, and the one-line refusal without ``/dev/fuse``.
6. ``docker stop``: SIGTERM, exit code 0, "stopped" in the log.

Skips (with the reason) only where Docker cannot run at all: no docker CLI or
dockerd, not root and no daemon, no /dev/fuse on the host, or no way to build
the base image.  ``KVCPU_REQUIRE_DOCKER=1`` turns those skips into failures
(CI on machines that must run it).  Timings are printed at the end of the
module and written as JSON to ``$KVCPU_DOCKER_TIMINGS`` when that is set.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import NoReturn

import pytest

pytestmark = pytest.mark.docker

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BASE_TAG = os.environ.get("KVCPU_DOCKER_BASE", "kvcpu-dev-base:local")
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
IMAGE_TAG = f"kvcpu-dev-test:{RUN_ID}"
LABEL = f"kvcpu.test={RUN_ID}"
FUSE_OPTS = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"]
#: The legacy builder: its intermediate images are what the clean-up removes,
#: and --network none applies to every RUN step.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}

# The spec's ioctl numbers, written out in tests/kvspec.py (not imported
# from the package under test).
import hostcmd  # noqa: E402
from kvspec import HOT, STEP, TELEMETRY, WEIGHTS  # noqa: E402

TIMINGS: dict[str, float | str] = {}


def _skip_or_fail(reason: str) -> NoReturn:
    hostcmd.skip_or_fail("KVCPU_REQUIRE_DOCKER", reason)


def run(cmd: list[str], *, timeout: float = 120, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return hostcmd.run(cmd, timeout=timeout, check=check, env=env or DOCKER_ENV)


def quiet(cmd: list[str], timeout: float = 60,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str] | None:
    return hostcmd.quiet(cmd, timeout, env or DOCKER_ENV)


def image_id(ref: str) -> str | None:
    r = quiet(["docker", "image", "inspect", "--format", "{{.Id}}", ref])
    return r.stdout.strip() if r and r.returncode == 0 else None


def all_image_ids() -> set[str]:
    r = quiet(["docker", "images", "-aq", "--no-trunc"])
    return set(r.stdout.split()) if r and r.returncode == 0 else set()


def apparmor_opts() -> list[str]:
    """docker-default AppArmor denies mount(2); only matters where AppArmor is on."""
    try:
        on = pathlib.Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        on = False
    return ["--security-opt", "apparmor=unconfined"] if on else []


# -- fixtures: dockerd, images, the container --------------------------------------


@pytest.fixture(scope="module")
def timings(request):
    """Collects timings; prints them (and writes $KVCPU_DOCKER_TIMINGS) at the end."""
    start = time.monotonic()
    yield TIMINGS
    TIMINGS["module_total_s"] = round(time.monotonic() - start, 2)
    text = "docker timings: " + ", ".join(f"{k}={v}" for k, v in TIMINGS.items())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{text}", file=sys.stderr, flush=True)
    if os.environ.get("KVCPU_DOCKER_TIMINGS"):
        pathlib.Path(os.environ["KVCPU_DOCKER_TIMINGS"]).write_text(json.dumps(TIMINGS, indent=1) + "\n")


@pytest.fixture(scope="module")
def docker_lock(timings):
    """One run of this module at a time per machine: two runs would share
    the dockerd (the one that started it stops it under the other) and the
    base image (the one that built it removes it)."""
    if shutil.which("docker") is None:
        _skip_or_fail("the docker CLI is not installed (apt-get install docker.io)")
    if not os.path.exists("/dev/fuse"):
        _skip_or_fail("/dev/fuse is missing on this host: containers cannot mount FUSE")
    state = pathlib.Path(os.environ.get("KVCPU_DOCKERD_STATE", "/run/kvcpu-dockerd"))
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / "test.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        _skip_or_fail(f"cannot create the lock in {state}: {exc.strerror}")
    wait = float(os.environ.get("KVCPU_DOCKER_LOCK_WAIT", "1200"))
    t0 = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - t0 > wait:
                os.close(fd)
                pytest.fail(f"another run of tests/test_docker.py held {state / 'test.lock'} "
                            f"for more than {wait:.0f}s", pytrace=False)
            time.sleep(1)
    if time.monotonic() - t0 > 1:
        TIMINGS["waited_for_other_run_s"] = round(time.monotonic() - t0, 1)
    try:
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def dockerd(docker_lock):
    """A docker daemon that answers; stopped at the end only if started here."""
    status = quiet([str(SCRIPTS / "dockerd-ctl.sh"), "status"])
    answering = status is not None and status.returncode == 0
    started = False
    if not answering:
        if shutil.which("dockerd") is None:
            _skip_or_fail("no docker daemon answers and dockerd is not installed")
        if os.geteuid() != 0:
            _skip_or_fail("no docker daemon answers and starting one needs root")
        t0 = time.monotonic()
        r = quiet([str(SCRIPTS / "dockerd-ctl.sh"), "start"], timeout=120)
        if r is None or r.returncode == 77:
            _skip_or_fail(f"dockerd cannot run here: {(r.stderr if r else 'timed out').strip()}")
        if r.returncode != 0:
            pytest.fail(f"dockerd-ctl.sh start failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
        started = "started dockerd" in r.stdout
        TIMINGS["dockerd_start_s"] = round(time.monotonic() - t0, 2)
    TIMINGS["dockerd"] = "started by the test" if started else "already running"
    yield
    if started:
        quiet([str(SCRIPTS / "dockerd-ctl.sh"), "stop"], timeout=120)


@pytest.fixture(scope="module")
def base_image(dockerd, rootfs_cache):
    existed = image_id(BASE_TAG) is not None
    t0 = time.monotonic()
    r = quiet([str(SCRIPTS / "docker-image.sh"), "--tag", BASE_TAG], timeout=900,
              env={**DOCKER_ENV, "KVCPU_ROOTFS_CACHE": str(rootfs_cache)})  # the podman test's too
    if r is None:
        pytest.fail("scripts/docker-image.sh timed out after 900 s", pytrace=False)
    if r.returncode == 77:
        _skip_or_fail(f"cannot build the base image here: {r.stderr.strip()}")
    if r.returncode != 0:
        pytest.fail(f"scripts/docker-image.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)
    built = "built" in r.stdout and "up to date" not in r.stdout
    TIMINGS["base_image_s"] = round(time.monotonic() - t0, 2)
    TIMINGS["base_image"] = "built" if built else "reused"
    yield BASE_TAG
    if not existed and os.environ.get("KVCPU_DOCKER_KEEP_BASE") != "1":
        quiet(["docker", "image", "rm", BASE_TAG])


@pytest.fixture(scope="module")
def image(base_image):
    """The project image, built offline; removed at the end with any
    intermediate images its build (successful or not) left behind."""
    before = all_image_ids()
    base_id = image_id(base_image)
    try:
        t0 = time.monotonic()
        run(["docker", "build", "--network", "none", "--force-rm", "--label", LABEL,
             "--build-arg", f"BASE={base_image}", "-t", IMAGE_TAG, str(REPO)], timeout=600)
        TIMINGS["project_image_s"] = round(time.monotonic() - t0, 2)
        yield IMAGE_TAG
    finally:
        quiet(["docker", "image", "rm", "-f", IMAGE_TAG])
        for leftover in all_image_ids() - before:
            if leftover != base_id and _untagged(leftover):
                quiet(["docker", "image", "rm", "-f", leftover])


def _untagged(ident: str) -> bool:
    r = quiet(["docker", "image", "inspect", "--format", "{{json .RepoTags}}", ident])
    return r is not None and r.returncode == 0 and json.loads(r.stdout or "null") in (None, [])


def remove_container(name: str) -> None:
    quiet(["docker", "rm", "-f", "-v", name])


@pytest.fixture(scope="module")
def container(image):
    """The image's entry point in a container, ready: the node answers."""
    name = f"kvcpu-test-{RUN_ID}"
    try:
        t0 = time.monotonic()
        # --health-interval 1s: the image's 10 s is right for a fleet but would
        # make the test wait; the command probed is the image's own.
        # SYS_PTRACE: the live suite checks --runas daemons, which are not
        # dumpable; root sees their files only with it (docs/security.md).
        run(["docker", "run", "-d", "--name", name, "--label", LABEL, *FUSE_OPTS, *apparmor_opts(),
             "--cap-add", "SYS_PTRACE",
             "--health-interval", "1s", "--health-start-period", "0s", image])
        wait_answers(name)
        TIMINGS["container_run_to_ready_s"] = round(time.monotonic() - t0, 2)
        TIMINGS["container_start_to_ready_line_s"] = _ready_line_delay(name)
        yield name
    finally:
        remove_container(name)


def wait_answers(name: str) -> None:
    """Until the container's daemon answers kvctl telemetry (30 s)."""
    deadline = time.monotonic() + 30
    while True:
        probe = quiet(["docker", "exec", name, "kvctl", "telemetry"], timeout=10)
        if probe is not None and probe.returncode == 0:
            return
        state = quiet(["docker", "inspect", "--format", "{{.State.Status}}", name])
        if time.monotonic() > deadline or (state and state.stdout.strip() == "exited"):
            logs = quiet(["docker", "logs", name])
            pytest.fail(f"the container never answered kvctl telemetry:\n"
                        f"{logs.stdout if logs else ''}{logs.stderr if logs else ''}", pytrace=False)
        time.sleep(0.05)


def _ready_line_delay(name: str) -> float | str:
    """From the container's start (docker's clock) to the daemon's ready line."""
    started = run(["docker", "inspect", "--format", "{{.State.StartedAt}}", name]).stdout.strip()
    logs = run(["docker", "logs", "-t", name])
    for line in (logs.stdout + logs.stderr).splitlines():
        if " ready: " in line:
            return round((_ts(line.split()[0]) - _ts(started)).total_seconds(), 3)
    return "no ready line"


def _ts(text: str) -> datetime.datetime:
    # RFC 3339 with nanoseconds: cut to microseconds for fromisoformat.
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(m.group(1) + frac + zone)


def dexec(name: str, script: str, *, timeout: float = 60, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A shell script inside the container (bash, in the image's WORKDIR)."""
    env_opts = [opt for k, v in (env or {}).items() for opt in ("-e", f"{k}={v}")]
    return run(["docker", "exec", *env_opts, name, "bash", "-c", script], timeout=timeout, check=check)


def telemetry(name: str) -> dict[str, int]:
    values: dict[str, int] = json.loads(dexec(name, "kvctl telemetry --json").stdout)
    return values


# -- the client suite inside the container ------------------------------------------


def test_node_and_mount(container):
    out = dexec(container, "readlink /dev/kvcpu0; cat /run/kvcpu/kvcpu0.pid; "
                           "awk '$2 == \"/run/kvcpu/kvcpu0\" {print $3}' /proc/mounts; "
                           "ps -o comm= -p 1").stdout.split()
    assert out == ["/run/kvcpu/kvcpu0/device", "1", "fuse.kvcpu", "kvcpu-dev"], out


def test_kvctl_commands_and_counters(container):
    before = telemetry(container)
    dexec(container, "set -e; kvctl step 128; kvctl hot 0x7f0000000000 0x200000; "
                     "kvctl evict 0x7f0000200000 0x1000; kvctl prefetch 0x7f0000400000 0x2000 130; "
                     "kvctl share 0x7f0000600000 0x3000")
    after = telemetry(container)
    for counter in ("step_count", "hot_count", "evict_count", "prefetch_count", "share_count"):
        assert after[counter] == before[counter] + 1, counter
    assert after["current_step"] == 128
    assert (after["last_va"], after["last_len"]) == (0x7f0000600000, 0x3000)
    table = dexec(container, "kvctl telemetry").stdout
    assert re.search(r"^current_step\s+128$", table, re.M), table


def test_kvctl_errors(container):
    r = dexec(container, "kvctl hot 0x1000 0", check=False)
    assert (r.returncode, r.stderr.strip()) == (1, "ioctl HOT: Invalid argument")
    r = dexec(container, "kvctl --device /dev/nonexistent step 1", check=False)
    assert r.returncode == 1 and "No such file or directory" in r.stderr


PY_CLIENT = r"""
import errno, fcntl, json, os, struct
T = struct.Struct("<9Q6I")
fd = os.open("/dev/kvcpu0", os.O_RDWR)
def tel():
    return T.unpack(fcntl.ioctl(fd, %(TELEMETRY)d, bytes(T.size)))
def err(cmd, arg):
    try:
        fcntl.ioctl(fd, cmd, arg)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
t0 = tel()
fcntl.ioctl(fd, %(STEP)d, struct.pack("<Q", 4242))
fcntl.ioctl(fd, %(HOT)d, struct.pack("<3Q", 0x10000, 0x2000, 0))
t1 = tel()
out = dict(
    step=t1[0], step_delta=t1[1] - t0[1], hot_delta=t1[2] - t0[2],
    last=[t1[6], t1[7]],
    zero_len=err(%(HOT)d, struct.pack("<3Q", 0x20000, 0, 0)),
    unknown_io=err(0x4B7F, 0),
    unknown_iow=err(0x40084B7E, bytes(8)),
    hot_after=tel()[2] - t1[2],
)
fcntl.ioctl(fd, %(WEIGHTS)d, struct.pack("<6I", 3, 1, 2, 200, 0x2000, 0xE000))
out["weights"] = list(tel()[9:])
fcntl.ioctl(fd, %(WEIGHTS)d, struct.pack("<6I", 1, 1, 2, 200, 4096, 57344))
print(json.dumps(out))
""" % dict(STEP=STEP, HOT=HOT, WEIGHTS=WEIGHTS, TELEMETRY=TELEMETRY)  # noqa: UP031 (braces in the code)


def test_python_fcntl_ioctls_and_errnos(container):
    r = dexec(container, f"python3 -c {shlex.quote(PY_CLIENT)}")
    out = json.loads(r.stdout)
    assert out == dict(step=4242, step_delta=1, hot_delta=1, last=[0x10000, 0x2000],
                       zero_len="EINVAL", unknown_io="ENOTTY", unknown_iow="ENOTTY", hot_after=0,
                       weights=[3, 1, 2, 200, 0x2000, 0xE000]), out


#: Used only if tests/c/kvclient.c is not in the image.
TINY_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kv_cpu.h>
int main(void)
{
	int fd = open("/dev/kvcpu0", O_RDWR);
	if (fd < 0) { perror("open"); return 3; }
	__u64 step = 77;
	struct kv_cpu_telemetry_info t;
	if (ioctl(fd, KV_CPU_STEP_ADVANCE, &step) || ioctl(fd, KV_CPU_GET_TELEMETRY, &t)) {
		perror("ioctl"); return 1;
	}
	printf("current_step=%llu\n", (unsigned long long)t.current_step);
	printf("unknown=%s\n", ioctl(fd, _IO('K', 0x7f)) < 0 && errno == ENOTTY ? "ENOTTY" : "?");
	return 0;
}
"""


def test_c_client(container):
    gcc = "gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I uapi"
    if dexec(container, "test -f tests/c/kvclient.c", check=False).returncode == 0:
        out = dexec(container, f"set -e; {gcc} -o /tmp/kvclient tests/c/kvclient.c; "
                               "/tmp/kvclient /dev/kvcpu0 step 77; "
                               "/tmp/kvclient /dev/kvcpu0 telemetry | grep '^current_step='; "
                               "/tmp/kvclient /dev/kvcpu0 hot 0x1000 0 || true; "
                               "/tmp/kvclient /dev/kvcpu0 raw 0x4b7f || true; "
                               "/tmp/kvclient /dev/kvcpu0 null step || true").stdout.split()
        assert out == ["ok", "current_step=77", "error", "EINVAL", "error", "ENOTTY",
                       "error", "EFAULT"], out
    else:
        out = dexec(container, f"set -e; cat > /tmp/tiny.c <<'EOF'\n{TINY_C}\nEOF\n"
                               f"{gcc} -o /tmp/tiny /tmp/tiny.c; /tmp/tiny").stdout.split()
        assert out == ["current_step=77", "unknown=ENOTTY"], out


def test_attribute_files(container):
    attrs = "/run/kvcpu/kvcpu0"
    t = telemetry(container)
    assert dexec(container, f"cat {attrs}/current_step").stdout.strip() == str(t["current_step"])
    dexec(container, f"echo 0x2000 > {attrs}/evict_thresh")
    assert telemetry(container)["evict_thresh"] == 0x2000
    assert dexec(container, f"cat {attrs}/evict_thresh").stdout.strip() == "8192"
    bad = dexec(container, f"python3 -c 'import os; os.write(os.open(\"{attrs}/evict_thresh\", os.O_WRONLY), b\"zz\\n\")'",
                check=False)
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr, bad.stderr
    dexec(container, f"echo 4096 > {attrs}/evict_thresh")
    lines = dexec(container, f"cat {attrs}/telemetry").stdout
    assert "evict_thresh=4096" in lines.split(), lines


def test_healthcheck_reports_healthy(container):
    deadline = time.monotonic() + 30
    while True:
        status = run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container]).stdout.strip()
        if status == "healthy" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == "healthy"


def test_live_suite_inside_container(container):
    """tests/live, as on the host, in the container (FUSE: no CUSE in here)."""
    if os.environ.get("KVCPU_DOCKER_LIVE", "1") == "0":
        pytest.skip("KVCPU_DOCKER_LIVE=0: reduced form, live suite not run in the container")
    if dexec(container, "ls tests/live/test_*.py >/dev/null 2>&1", check=False).returncode != 0:
        pytest.skip("tests/live has no tests in this checkout")
    t0 = time.monotonic()
    r = dexec(container, "python3 -m pytest tests/live -q -rs -p no:cacheprovider",
              env={"KVCPU_TEST_TRANSPORT": "fuse", "KVCPU_IN_CONTAINER": "1"}, timeout=900, check=False)
    TIMINGS["live_suite_in_container_s"] = round(time.monotonic() - t0, 2)
    summary = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    TIMINGS["live_suite_result"] = summary.strip("= ")
    assert r.returncode == 0, f"{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    # Every skip must be a declared container gap: test_hardening's
    # --request-timeout with --runas and the limits --runas keeps (no
    # CAP_SYS_RESOURCE), and test_uring's read-only parameter.
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("known gap in a container" in line for line in skips), "\n".join(skips)
    assert " passed" in summary and len(skips) <= 5, summary


# -- the recipes in docs/containers.md --------------------------------------------


def test_runtime_ci_recipe(image):
    """A runtime's own test job: start in the background, test, stop."""
    script = ("set -e; kvcpu-dev --mock; "
              "python3 -c 'from kvcpu_dev.client import KvCpu\n"
              "with KvCpu() as d:\n d.step(9)\n assert d.telemetry().current_step == 9'; "
              "kvctl step 10; kvcpu-dev --stop; test ! -e /dev/kvcpu0; "
              "! grep -q kvcpu /proc/mounts; echo recipe-ok")
    name = f"kvcpu-recipe-{RUN_ID}"
    try:
        r = run(["docker", "run", "--rm", "--name", name, "--label", LABEL, *FUSE_OPTS, *apparmor_opts(),
                 "--entrypoint", "bash", image, "-c", script], timeout=120)
    finally:
        remove_container(name)
    assert r.stdout.strip().splitlines()[-1] == "recipe-ok"


def test_sidecar_through_shared_bind_mount(image):
    """The emulator's FUSE mount reaches another, unprivileged container only
    through a host directory that is a shared mount (propagation)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a shared bind mount on the host")
    share = pathlib.Path(tempfile.mkdtemp(prefix="kvcpu-share-"))
    server, client = f"kvcpu-side-{RUN_ID}", f"kvcpu-client-{RUN_ID}"
    mounted = False
    try:
        run(["mount", "--bind", str(share), str(share)], env=os.environ.copy())
        mounted = True
        run(["mount", "--make-rshared", str(share)], env=os.environ.copy())
        run(["docker", "run", "-d", "--name", server, "--label", LABEL, *FUSE_OPTS, *apparmor_opts(),
             "-v", f"{share}:/run/kvcpu:rshared", image])
        deadline = time.monotonic() + 30
        while not (share / "kvcpu0" / "device").exists():
            assert time.monotonic() < deadline, "the sidecar's mount never reached the host"
            time.sleep(0.05)
        # No /dev/fuse, no capability: opening a FUSE file needs neither.
        r = run(["docker", "run", "--rm", "--name", client, "--label", LABEL,
                 "-v", f"{share}:/run/kvcpu:rslave", "-e", "KVCPU_DEVICE=/run/kvcpu/kvcpu0/device",
                 "--entrypoint", "bash", image, "-c",
                 "set -e; kvctl step 31; kvctl telemetry --json; cat /run/kvcpu/kvcpu0/current_step"])
        lines = r.stdout.strip().splitlines()
        assert json.loads(lines[0])["current_step"] == 31 and lines[1] == "31", r.stdout
        run(["docker", "stop", server], timeout=60)
        assert not (share / "kvcpu0" / "device").exists()
        assert str(share / "kvcpu0") not in pathlib.Path("/proc/self/mounts").read_text()
    finally:
        remove_container(client)
        remove_container(server)
        if mounted:
            for _ in range(3):  # the server's mount first, should it linger
                with open("/proc/self/mounts") as f:
                    inside = [ln.split()[1] for ln in f if ln.split()[1].startswith(str(share))]
                if not inside:
                    break
                for path in sorted(inside, key=len, reverse=True):
                    quiet(["umount", "-l", path])
        shutil.rmtree(share, ignore_errors=True)


def test_refuses_clearly_without_fuse(image):
    name = f"kvcpu-nofuse-{RUN_ID}"
    try:
        r = run(["docker", "run", "--rm", "--name", name, "--label", LABEL, image], check=False, timeout=60)
    finally:
        remove_container(name)
    assert r.returncode == 1
    assert "kvcpu-dev: cannot create kvcpu0: cannot mount FUSE" in r.stderr, r.stderr


#: The watcher's policy, read inside the container (the daemon is PID 1).
WATCHER_POLICY = """python3 -c "import glob, os
print(*[os.sched_getscheduler(int(comm.split('/')[4])) for comm in glob.glob('/proc/1/task/*/comm')
        if open(comm).read().strip() == 'kvcpu-watch'])"
"""


def test_without_sys_nice_says_readers_may_wait(container):
    """Docker's default capabilities have not got CAP_SYS_NICE: the daemon
    serves, its watcher is not real-time, and its log says why once."""
    logs = run(["docker", "logs", container])
    text = logs.stdout + logs.stderr
    assert text.count("kvcpu0: no real-time priority (CAP_SYS_NICE, or a cgroup's cpu.rt_runtime_us)") == 1, text
    assert dexec(container, WATCHER_POLICY).stdout.strip() == str(os.SCHED_OTHER)


#: A kernel that schedules real time by cgroup (v1 with RT group scheduling,
#: as here) gives a container none unless it asks and its parent has some
#: (scripts/dockerd-ctl.sh starts dockerd so).
RT_BUDGET = ["--cpu-rt-runtime", "500000"] if os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us") else []


def test_sys_nice_gives_the_watcher_real_time(image):
    name = f"kvcpu-nice-{RUN_ID}"
    try:
        r = run(["docker", "run", "-d", "--name", name, "--label", LABEL, *FUSE_OPTS, *apparmor_opts(),
                 "--cap-add", "SYS_NICE", *RT_BUDGET, image], check=False)
        if r.returncode and RT_BUDGET and TIMINGS.get("dockerd") != "started by the test":
            pytest.skip(f"this dockerd gives its containers no real-time budget: {r.stderr.strip()}")
        assert r.returncode == 0, r.stderr
        wait_answers(name)
        assert dexec(name, WATCHER_POLICY).stdout.strip() == str(os.SCHED_FIFO)
        logs = run(["docker", "logs", name])
        assert "real-time" not in logs.stdout + logs.stderr, logs.stdout + logs.stderr
    finally:
        remove_container(name)


# -- last: docker stop ---------------------------------------------------------------


def test_docker_stop_is_clean(container):
    t0 = time.monotonic()
    run(["docker", "stop", "--time", "10", container], timeout=60)
    stop_s = TIMINGS["docker_stop_s"] = round(time.monotonic() - t0, 2)
    code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", container]).stdout.strip()
    logs = run(["docker", "logs", container])
    text = logs.stdout + logs.stderr
    assert code == "0", text
    assert "kvcpu0: SIGTERM received, stopping" in text, text
    assert re.search(r"kvcpu0 stopped \(\d+ steps, \d+ register writes\)", text), text
    # SIGTERM, not the SIGKILL after the grace period.
    assert stop_s < 9, stop_s
