"""The seccomp filter and the privilege drop, in forked children (no
daemon): the system-call numbers match the kernel headers, the filter
denies what it lists and nothing a device needs, and the drop leaves no
way back to root."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import subprocess

import pytest

from kvcpu_dev.daemon import privileges

HEADERS = {"x86_64": "#include <asm/unistd_64.h>\n",
           "aarch64": "#define __BITS_PER_LONG 64\n#include <asm-generic/unistd.h>\n"}


@pytest.mark.parametrize("machine", sorted(privileges.ARCHES))
def test_syscall_numbers_match_the_kernel_headers(machine):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to read the headers with")
    _, nr_seccomp, numbers, _ = privileges.ARCHES[machine]
    names = sorted(numbers) + ["seccomp"]
    source = HEADERS[machine] + "".join(f"{name} __NR_{name}\n" for name in names)
    out = subprocess.run([gcc, "-E", "-P", "-"], input=source, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"kernel headers for {machine} are not installed")
    found = dict(line.split() for line in out.stdout.splitlines() if line.strip() and line.split()[0] in names)
    for name in names:
        want = nr_seccomp if name == "seccomp" else numbers[name]
        assert found[name] == str(want), f"{machine} {name}: header says {found[name]}, we say {want}"
    assert set(privileges.DENIED) - set(numbers) <= {"iopl", "ioperm"}  # x86 only


def _in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 98
        try:
            code = fn()
        except BaseException:  # noqa: BLE001
            code = 99
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(platform.machine() not in privileges.ARCHES, reason="no table for this machine")
def test_the_filter_denies_what_it_lists_and_nothing_else():
    libc = ctypes.CDLL(None, use_errno=True)

    def child() -> int:
        privileges.install_seccomp()
        failures = 0
        try:
            os.execv("/bin/true", ["true"])
        except PermissionError:
            pass
        else:
            failures |= 1
        if libc.mount(b"none", b"/mnt", b"tmpfs", 0, None) != -1 or ctypes.get_errno() != errno.EPERM:
            failures |= 2
        if libc.umount2(b"/", 2) != -1 or ctypes.get_errno() != errno.EPERM:
            failures |= 4
        if libc.unshare(0x00020000) != -1 or ctypes.get_errno() != errno.EPERM:  # CLONE_NEWNS
            failures |= 8
        if libc.ptrace(16, os.getppid(), None, None) != -1 or ctypes.get_errno() != errno.EPERM:  # ATTACH
            failures |= 16
        # what a device does still works: files, pipes, threads, signals
        r, w = os.pipe()
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
        import threading

        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        with open("/proc/self/status") as f:
            status = f.read()
        if "Seccomp:\t2" not in status or "NoNewPrivs:\t1" not in status:
            failures |= 32
        return failures

    assert _in_child(child) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drop_leaves_no_way_back():
    who = privileges.resolve_user("nobody")

    def child() -> int:
        privileges.drop_to(who)
        s = privileges.status_lines()
        if s["Uid"] != "65534 65534 65534 65534" or s["CapEff"] != "0000000000000000":
            return 1
        if s["CapBnd"] != "0000000000000000" or s["NoNewPrivs"] != "1":
            return 2
        try:
            os.setuid(0)
        except PermissionError:
            return 0
        return 3

    assert _in_child(child) == 0


def test_unknown_user():
    with pytest.raises(privileges.PrivilegeError, match="no user 'no-such-user-kvt'"):
        privileges.resolve_user("no-such-user-kvt")


@pytest.mark.skipif(platform.machine() not in privileges.ARCHES, reason="no table for this machine")
@pytest.mark.parametrize("uring", [False, True], ids=["classic", "uring"])
def test_the_filter_lets_a_ring_wait_only_where_the_device_is_served_over_io_uring(uring):
    """io_uring_setup and io_uring_register are never needed once the
    device runs; io_uring_enter only by the io_uring transport's queues."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr = privileges.ARCHES[platform.machine()][2]

    def child() -> int:
        privileges.install_seccomp(uring=uring)
        failures = 0
        for bit, name in enumerate(("io_uring_setup", "io_uring_register", "io_uring_enter")):
            # Arguments no kernel accepts: the filter's EPERM, or the kernel's own error.
            res = libc.syscall(ctypes.c_long(nr[name]), ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(0),
                               ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
            denied = res == -1 and ctypes.get_errno() == errno.EPERM
            if denied != (name != "io_uring_enter" or not uring):
                failures |= 1 << bit
        return failures

    assert _in_child(child) == 0
