"""Who may open the node: the kernel decides from the mode and group the
daemon gives it (FUSE: default_permissions; CUSE: the character device),
exactly as for the driver's /dev/kvcpu0."""

from __future__ import annotations

import errno
import itertools
import os
import pathlib
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


def _as_member(script: str, *args: str, groups=(GROUP,)) -> subprocess.CompletedProcess[str]:
    """The system python3 as uid/gid 65534 with ``groups``: another local
    user, a member of the node's group."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 the unprivileged user can run")

    def drop() -> None:
        os.setgroups(list(groups))
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run([python, "-c", script, *args], capture_output=True, text=True,
                          preexec_fn=drop, timeout=30, cwd="/")


_OPEN_EACH = ("import os, sys\nfor path, how in zip(sys.argv[1::2], sys.argv[2::2]):\n"
              "    try:\n        os.close(os.open(path, os.O_RDONLY if how == 'r' else os.O_WRONLY))\n"
              "        print('read' if how == 'r' else 'write')\n"
              "    except PermissionError:\n        print('EACCES')\n")


@pytest.mark.parametrize("mode, group, extra, groups, expect", [
    ("0600", None, [], [], ["EACCES"] * 4),
    ("0666", None, [], [], ["EACCES"] * 4),  # others never
    ("0660", GROUP, [], [GROUP], ["read", "EACCES", "EACCES", "EACCES"]),
    ("0660", GROUP, ["--control-group"], [GROUP], ["read", "write", "write", "write"]),
    ("0640", GROUP, [], [GROUP], ["read", "EACCES", "EACCES", "EACCES"]),
    ("0660", GROUP, ["--control-group"], [], ["EACCES"] * 4),  # an outsider
], ids=["default", "world-node", "group-rw", "control-group", "group-ro", "control-group:outsider"])
def test_large_views_and_controls_are_the_owners(open_daemons, mode, group, extra, groups, expect):
    """`blocks` (megabytes to render) goes to the node's owner and group;
    the bench's controls (record, faults, control) to the owner alone, and
    to the group only with --control-group (issue 23 (5): with --mode 0660
    any member could record, add faults, reset and unplug for everyone).
    Before, group write on the node gave group write on the controls."""
    d = open_daemons("--mode", mode, *(["--group", str(group)] if group is not None else []), *extra)
    checks = [("blocks", "r"), ("faults", "w"), ("control", "w"), ("record", "w")]
    r = _as_member(_OPEN_EACH, *[a for name, how in checks for a in (str(d.attr_dir / name), how)], groups=groups)
    assert r.stdout.split() == expect, r.stderr
    assert stat.S_IMODE(os.stat(d.attr_dir / "blocks").st_mode) == 0o400 | (int(mode, 8) & 0o040)
    control_mode = 0o660 if extra else 0o600 | (int(mode, 8) & 0o040)
    for name in ("faults", "control", "record"):
        assert stat.S_IMODE(os.stat(d.attr_dir / name).st_mode) == control_mode, name


_RECORD = ("import os, sys\nattrs, line = sys.argv[1], sys.argv[2]\n"
           "fd = os.open(attrs + '/record', os.O_WRONLY)\n"
           "try:\n    os.write(fd, line.encode())\n    print('ok')\n"
           "except OSError as e:\n    print(os.strerror(e.errno))\n"
           "os.close(fd)\n"
           "print([l for l in open(attrs + '/record').read().splitlines() if l.startswith('last_error=')])\n")


def _acl_denying(path: pathlib.Path, uid: int) -> bool:
    """A POSIX access ACL (version 2, as setfacl writes it) denying ``uid``
    everything while the mode bits say 0777; False where the filesystem has
    no ACLs (UML's hostfs), so there is nothing such a path could hide."""
    import struct

    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 0, uid), (0x04, 7, 0xFFFFFFFF), (0x10, 7, 0xFFFFFFFF),
               (0x20, 7, 0xFFFFFFFF)]
    try:
        os.setxattr(path, "system.posix_acl_access",
                    struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries))
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        return False
    return True


def test_a_member_records_only_where_the_member_could_write(open_dir, open_daemons, kvclient):
    """Issue 23 (5): as a member of the node's group, `record start
    /root-only-0700-dir/x.kvrec` made root create the file there, and
    `record start` on root's own 0600 recording made root append to it.
    Now a start written by anyone but root is opened with the writer's own
    uid and groups; root's own starts keep root's rules."""
    d = open_daemons("--mode", "0660", "--group", str(GROUP), "--control-group")
    root_only = open_dir / "rootonly"
    root_only.mkdir(mode=0o700)
    inner = root_only / "open"  # writable by all, but behind a directory the member cannot search
    inner.mkdir()
    os.chmod(inner, 0o777)
    shared = open_dir / "shared"  # sticky and world-writable, holding root's recording
    shared.mkdir()
    os.chmod(shared, 0o1777)
    mine = open_dir / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    (open_dir / "link").symlink_to(mine)
    os.lchown(open_dir / "link", NOBODY, NOBODY)
    acl = open_dir / "acl"
    acl.mkdir()
    os.chmod(acl, 0o777)
    has_acl = _acl_denying(acl, NOBODY)
    from kvcpu_dev.bench import kvrec as fmt

    roots = shared / "root.kvrec"  # root's own 0600 recording, where the member may create files
    roots.write_bytes(fmt.header_bytes())
    os.chmod(roots, 0o600)
    rootdir = open_dir / "rootdir"  # and one in root's own directory, made by the daemon
    rootdir.mkdir(mode=0o755)
    assert d.write_attr("record", f"start {rootdir}/r.kvrec\n".encode()) == 0
    assert d.write_attr("record", b"stop\n") == 0
    before = roots.read_bytes(), (rootdir / "r.kvrec").read_bytes()

    refusals = {
        root_only / "x.kvrec": "uid 65534 may not create files in",
        inner / "x.kvrec": "rootonly is not searchable by uid 65534",
        roots: "is not a private file of uid 65534's",
        rootdir / "r.kvrec": "uid 65534 may not create files in",
        open_dir / "link" / "x.kvrec": "is not a directory (a symlink or a file)",
        **({acl / "x.kvrec": "has an access ACL"} if has_acl else {}),
        mine / "x.txt": "must be named *.kvrec",
        open_dir / "x.kvrec": "uid 65534 may not create files in",
    }
    for path, why in refusals.items():
        r = _as_member(_RECORD, str(d.attr_dir), f"start {path}\n")
        assert r.stdout.splitlines()[0] == "Invalid argument" and why in r.stdout, (path, r.stdout, r.stderr)
        assert "state=off" in d.attr("record")
    assert not (root_only / "x.kvrec").exists() and not (inner / "x.kvrec").exists()
    assert sorted(p.name for p in shared.iterdir()) == ["root.kvrec"]
    assert (roots.read_bytes(), (rootdir / "r.kvrec").read_bytes()) == before
    assert list(acl.iterdir()) == [] and list(mine.iterdir()) == []

    target = mine / "run.kvrec"
    for step in (5, 6):  # created, then appended to
        r = _as_member(_RECORD, str(d.attr_dir), f"start {target}\n")
        assert r.stdout.splitlines()[0] == "ok", r.stdout + r.stderr
        assert d.write_attr("faults", b"clear\n") == 0  # a control for root too
        assert subprocess.run([str(kvclient), str(d.node), "step", str(step)], capture_output=True).returncode == 0
        r = _as_member(_RECORD, str(d.attr_dir), "stop\n")
        assert r.stdout.splitlines()[0] == "ok", r.stdout
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    assert [r.step for r in fmt.read(target).commands()] == [5, 6]


def test_root_keeps_root_s_rules(open_dir, open_daemons):
    """A start root writes is checked as before: the member's directory is
    not root's, so root refuses to record there."""
    d = open_daemons("--mode", "0660", "--group", str(GROUP), "--control-group")
    mine = open_dir / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    assert d.write_attr("record", f"start {mine}/r.kvrec\n".encode()) == errno.EINVAL
    assert "owned by uid 65534" in d.attr("record")
