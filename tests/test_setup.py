"""The set-up scripts a newcomer runs first (issue 22): every command the
package defines is linked, the test set-up's packages leave no service
enabled or running, CI turns every suite's skip into a failure, and the
README says what the test set-up installs and how long the suite takes."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def test_ci_requires_every_suite_that_can_skip():
    """A suite skipped in CI passes without testing anything (the eval
    tests were skipped everywhere): every KVCPU_REQUIRE_* a test or the
    plugin reads is exported by .ci/run."""
    read: set[str] = set()
    for path in [*REPO.glob("tests/**/*.py"), *REPO.glob("kvcpu_dev/**/*.py")]:
        if path.name != "test_setup.py":
            read |= set(re.findall(r"KVCPU_REQUIRE_[A-Z]+", path.read_text()))
    ci = (REPO / ".ci" / "run").read_text()
    exported = set(re.findall(r"(KVCPU_REQUIRE_[A-Z]+)=1", ci))
    assert {"KVCPU_REQUIRE_EVAL", "KVCPU_REQUIRE_PODMAN", "KVCPU_REQUIRE_PROMTOOL"} <= read
    assert read <= exported, f"not required in CI: {sorted(read - exported)}"


def test_every_command_of_the_package_is_linked(tmp_path):
    """The README runs kvcpu-eval as it runs kvctl: set-up links each
    [project.scripts] entry, not a list of its own."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "kvcpu-eval" in scripts
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv (scripts/setup.sh makes it)")
    subprocess.run(["bash", str(SCRIPTS / "link-commands.sh"), str(tmp_path)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(scripts)
    for name in scripts:
        assert os.readlink(tmp_path / name) == str(REPO / ".venv" / "bin" / name)


# -- scripts/install-packages.sh against stand-ins for apt, dpkg and systemctl -----

STUBS = {
    # dpkg-query -W: what is installed (after the install, the new packages too)
    "dpkg-query": """#!/bin/sh
echo 'ii  base-files'
[ -e "$STATE/installed" ] && sed 's/^/ii  /' "$STATE/installed"
exit 0
""",
    # apt-get: what it was asked, and whether a policy-rc.d forbade starts meanwhile
    "apt-get": """#!/bin/sh
echo "apt-get $*" >> "$STATE/log"
case "$1" in update) exit 0 ;; esac
if [ -x "$KVCPU_POLICY_RC_D" ]; then "$KVCPU_POLICY_RC_D" docker start; echo "policy $?" >> "$STATE/log"; \
else echo "policy none" >> "$STATE/log"; fi
printf 'docker.io\\ncontainerd\\n' > "$STATE/installed"
""",
    "dpkg": """#!/bin/sh
case "$2" in
  docker.io) printf '/usr/bin/dockerd\\n/lib/systemd/system/docker.service\\n/lib/systemd/system/docker.socket\\n' ;;
  containerd) printf '/lib/systemd/system/containerd.service\\n/lib/systemd/system/ctr@.service\\n' ;;
esac
""",
    # systemctl: every unit enabled and running until told otherwise
    "systemctl": """#!/bin/sh
case "$1" in
  is-enabled) grep -qx "$2" "$STATE/disabled" 2>/dev/null && echo disabled || echo enabled ;;
  is-active) ! grep -qx "$3" "$STATE/stopped" 2>/dev/null ;;
  disable) echo "$3" >> "$STATE/disabled"; echo "systemctl disable $3" >> "$STATE/log" ;;
  stop) echo "$2" >> "$STATE/stopped"; echo "systemctl stop $2" >> "$STATE/log" ;;
esac
""",
    "sudo": '#!/bin/sh\nexec "$@"\n',
}


def install(tmp_path: pathlib.Path, systemd_runs: bool, policy_exists: bool = False) -> list[str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    policy = tmp_path / "policy-rc.d"
    if policy_exists:
        policy.write_text("#!/bin/sh\nexit 0\n")
        policy.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state),
           "KVCPU_POLICY_RC_D": str(policy), "KVCPU_SYSTEMD_DIR": str(tmp_path if systemd_runs else tmp_path / "no")}
    r = subprocess.run(["bash", str(SCRIPTS / "install-packages.sh"), "docker.io"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    if not policy_exists:
        assert not policy.exists(), "the install's policy-rc.d was left behind"
    else:
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"  # the machine's own, untouched
    return (state / "log").read_text().splitlines()


def test_the_test_packages_leave_no_service_enabled_or_running(tmp_path):
    log = install(tmp_path, systemd_runs=True)
    assert log[:3] == ["apt-get update -q", "apt-get install -y -q --no-install-recommends docker.io",
                       "policy 101"]  # no service may start during the install
    units = ["containerd.service", "docker.service", "docker.socket"]  # a dependency's too; no template
    assert log[3:] == [f"systemctl {verb} {unit}" for unit in units for verb in ("disable", "stop")]


def test_without_systemd_running_units_are_disabled_not_stopped(tmp_path):
    log = install(tmp_path, systemd_runs=False, policy_exists=True)
    assert log[2] == "policy 0"  # the machine's policy-rc.d decides, as it is
    assert log[3:] == ["systemctl disable containerd.service", "systemctl disable docker.service",
                       "systemctl disable docker.socket"]

