"""Who may open the node: the kernel decides from the mode and group the
daemon gives it (FUSE: default_permissions; CUSE: the character device),
exactly as for the driver's /dev/kvcpu0."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess

import pytest

pytestmark = pytest.mark.live

NOBODY = 65534
GROUP = 4242  # a gid nobody is not in unless we give it




@pytest.fixture
def open_daemons(open_dir, daemons):
    """``daemons`` with their directories in ``open_dir`` (set up after it,
    so torn down before it is removed)."""
    n = itertools.count()
    return lambda *extra: daemons(*extra, base_dir=open_dir / f"d{next(n)}")


@pytest.fixture
def as_nobody(open_dir, kvclient):
    """``as_nobody(node, *args, groups=[])`` runs kvclient as uid/gid 65534
    with those supplementary groups; returns its stdout (or "open EACCES")."""
    exe = open_dir / "kvclient"
    shutil.copy(kvclient, exe)
    os.chmod(exe, 0o755)

    def run(node, *args, groups=()):
        def drop() -> None:
            os.setgroups(list(groups))
            os.setgid(NOBODY)
            os.setuid(NOBODY)

        r = subprocess.run([str(exe), str(node), *map(str, args)], capture_output=True, text=True,
                           preexec_fn=drop, timeout=30)
        return r.stdout.strip()

    return run


def test_default_node_is_root_0600(dev):
    st = os.stat(dev.node)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)


@pytest.mark.parametrize("mode, group, groups, expect", [
    ("0600", None, [], "open EACCES"),
    ("0660", GROUP, [], "open EACCES"),
    ("0660", GROUP, [GROUP], "ok"),
    ("0666", None, [], "ok"),
], ids=["default", "group-only:outsider", "group-only:member", "world"])
def test_who_may_open(open_daemons, as_nobody, mode, group, groups, expect):
    extra = ["--mode", mode] + (["--group", str(group)] if group is not None else [])
    d = open_daemons(*extra)
    st = os.stat(d.node)
    assert stat.S_IMODE(st.st_mode) == int(mode, 8)
    assert st.st_gid == (group or 0)
    assert as_nobody(d.node, "step", 5, groups=groups) == expect
    assert d.telemetry()["step_count"] == (1 if expect == "ok" else 0)


def test_group_by_name(daemons):
    d = daemons("--mode", "0660", "--group", "nogroup")
    assert os.stat(d.node).st_gid == NOBODY


def test_unprivileged_user_reads_but_cannot_write_attributes(open_daemons):
    d = open_daemons("--mode", "0660", "--group", str(GROUP))
    script = (f"import os\nprint(open({str(d.attr_dir / 'w_d')!r}).read().strip())\n"
              f"try:\n    os.open({str(d.attr_dir / 'w_d')!r}, os.O_WRONLY)\n"
              "except PermissionError:\n    print('EACCES')\n")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 the unprivileged user can run")

    def drop() -> None:
        os.setgroups([GROUP])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    r = subprocess.run([python, "-c", script], capture_output=True, text=True, preexec_fn=drop,
                       timeout=30, cwd="/")
    assert r.stdout.split() == ["200", "EACCES"], r.stderr
    assert d.attr("w_d") == "200\n"


@pytest.mark.parametrize("mode, group, groups, expect", [
    ("0600", None, [], ["EACCES", "EACCES", "EACCES"]),
    ("0666", None, [], ["EACCES", "EACCES", "EACCES"]),  # others never
    ("0660", GROUP, [GROUP], ["read", "write", "write"]),
    ("0640", GROUP, [GROUP], ["read", "EACCES", "EACCES"]),
], ids=["default", "world-node", "group-rw", "group-ro"])
def test_large_views_and_controls_are_the_owners(open_daemons, mode, group, groups, expect):
    """`blocks` (megabytes to render) and the bench's control files go to
    the node's owner and group only, never to every local user."""
    extra = ["--mode", mode] + (["--group", str(group)] if group is not None else [])
    d = open_daemons(*extra)
    checks = [("blocks", "r"), ("faults", "w"), ("control", "w")]
    script = "import os, sys\nfor path, how in zip(sys.argv[1::2], sys.argv[2::2]):\n" \
             "    try:\n        os.close(os.open(path, os.O_RDONLY if how == 'r' else os.O_WRONLY))\n" \
             "        print('read' if how == 'r' else 'write')\n" \
             "    except PermissionError:\n        print('EACCES')\n"
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 the unprivileged user can run")

    def drop() -> None:
        os.setgroups(list(groups))
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    args = [a for name, how in checks for a in (str(d.attr_dir / name), how)]
    r = subprocess.run([python, "-c", script, *args], capture_output=True, text=True,
                       preexec_fn=drop, timeout=30, cwd="/")
    assert r.stdout.split() == expect, r.stderr
    assert stat.S_IMODE(os.stat(d.attr_dir / "blocks").st_mode) == 0o400 | (int(mode, 8) & 0o040)
