"""Least privilege for a running device, as swtpm does it.

Root is needed to mount the attribute file system, open /dev/cuse and
publish the node.  Once the node is published the daemon needs none of it:
``--runas USER`` drops to that user and its groups (capabilities go with
root; the bounding and ambient sets are emptied too), marks the process
not dumpable (another process of that user cannot ptrace it or read its
memory) and sets no_new_privs.  What needs root again at stop is done by
the privileged helper (helper.py), forked before any of this.

``--seccomp`` adds a filter denying what a running device never needs:
mounts, module, kexec, reboot, ptrace and execve calls, namespace and
identity changes, io_uring (all of it, or all but io_uring_enter where the
device file is served over FUSE io_uring), and so on (EPERM; a foreign
system-call ABI kills the process).  It is a plain classic-BPF program installed with
``seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC)``, so every
thread of the process gets it (and no_new_privs with it): no binding to
install, nothing compiled.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import platform
import pwd
import resource
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)  # the process's libc (find_library would run ldconfig: 10 ms)

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

#: What a running device never needs.  Numbers per architecture (checked
#: against the kernel headers by tests/test_privileges.py).
DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "execve", "execveat",
    "init_module", "finit_module", "delete_module",
    "reboot", "kexec_load", "kexec_file_load", "swapon", "swapoff",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "sethostname", "setdomainname",
    "acct", "bpf", "perf_event_open", "userfaultfd", "syslog", "quotactl",
    "keyctl", "add_key", "request_key",
    "setns", "unshare", "open_by_handle_at", "name_to_handle_at",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid",
    "iopl", "ioperm",
    # Set up before the filter, if at all: a running device makes no ring
    # and registers nothing.  (Ring operations themselves are not system
    # calls: a filter never sees them.)
    "io_uring_setup", "io_uring_register",
)
#: Denied too unless the device file is served over FUSE io_uring, whose
#: queues wait in it.
URING_ONLY = ("io_uring_enter",)

_X86_64 = dict(
    mount=165, umount2=166, pivot_root=155, chroot=161, ptrace=101, process_vm_readv=310,
    process_vm_writev=311, execve=59, execveat=322, init_module=175, finit_module=313,
    delete_module=176, reboot=169, kexec_load=246, kexec_file_load=320, swapon=167, swapoff=168,
    settimeofday=164, clock_settime=227, adjtimex=159, clock_adjtime=305, acct=163, bpf=321,
    perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249, setns=308,
    unshare=272, open_by_handle_at=304, name_to_handle_at=303, fsopen=430, fsconfig=431,
    fsmount=432, fspick=433, move_mount=429, open_tree=428, mount_setattr=442, iopl=172,
    ioperm=173, syslog=103, quotactl=179, sethostname=170, setdomainname=171, setuid=105,
    setgid=106, setreuid=113, setregid=114, setresuid=117, setresgid=119, setgroups=116,
    setfsuid=122, setfsgid=123, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
)
_AARCH64 = dict(
    mount=40, umount2=39, pivot_root=41, chroot=51, ptrace=117, process_vm_readv=270,
    process_vm_writev=271, execve=221, execveat=281, init_module=105, finit_module=273,
    delete_module=106, reboot=142, kexec_load=104, kexec_file_load=294, swapon=224, swapoff=225,
    settimeofday=170, clock_settime=112, adjtimex=171, clock_adjtime=266, acct=89, bpf=280,
    perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218, setns=268,
    unshare=97, open_by_handle_at=265, name_to_handle_at=264, fsopen=430, fsconfig=431,
    fsmount=432, fspick=433, move_mount=429, open_tree=428, mount_setattr=442, syslog=116,
    quotactl=60, sethostname=161, setdomainname=162, setuid=146, setgid=144, setreuid=145,
    setregid=143, setresuid=147, setresgid=149, setgroups=159, setfsuid=151, setfsgid=152,
    io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
)
#: machine -> (AUDIT_ARCH_*, seccomp(2)'s number, syscall numbers, x32 bit to refuse)
ARCHES = {
    "x86_64": (0xC000003E, 317, _X86_64, 0x40000000),
    "aarch64": (0xC00000B7, 277, _AARCH64, None),
}


class PrivilegeError(Exception):
    """Dropping privileges failed: the daemon must not go on."""


@dataclass(frozen=True)
class RunAs:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_user(user: str) -> RunAs:
    """USER (a name or a uid) with its primary group and supplementary groups."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"--runas: no user {user!r}") from None
    groups = tuple(sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid))))
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, groups)


def _prctl(option: int, arg: int = 0) -> int:
    res: int = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                      ctypes.c_ulong(0), ctypes.c_ulong(0))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def set_no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


#: What a daemon dropped to a user keeps of the scheduler, as limits (the
#: kernel's own unprivileged rules, sched(7)): real-time priority 1, the
#: lowest, for the watcher's bounded boosts of starved reader threads, and
#: nice 0, to leave SCHED_IDLE (the drainer, native/ring.c).  What
#: limits.conf gives an audio group, less: no nice below 0, no higher
#: real-time priority, and only for the daemon's own threads.
KEPT_LIMITS = {"RLIMIT_RTPRIO": 1, "RLIMIT_NICE": 20}


def keep_scheduling() -> str | None:
    """Set the limits the dropped daemon keeps (KEPT_LIMITS), hard and soft,
    while still root.  Raising a hard limit needs CAP_SYS_RESOURCE; without
    it (a container, a sandbox) returns why, and reader threads will not be
    raised under floods (readers_boost_refused)."""
    for name, value in KEPT_LIMITS.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (OSError, ValueError) as exc:  # ValueError: "not allowed to raise maximum limit"
            return f"readers are not raised under floods (cannot keep {name} {value}: {exc})"
    return None


def drop_to(who: RunAs) -> None:
    """Become ``who`` for good (every thread: glibc applies set*id to all),
    with no capabilities left in any set, not dumpable, no_new_privs."""
    try:
        for cap in range(_last_cap() + 1):  # the bounding set needs CAP_SETPCAP: first
            try:
                _prctl(PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: no such capability here
                    raise
        try:
            _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError:
            pass  # no ambient capabilities in this kernel
        os.setgroups(list(who.groups))
        os.setresgid(who.gid, who.gid, who.gid)
        os.setresuid(who.uid, who.uid, who.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot become {who.user}: {exc.strerror or exc}") from None
    if os.getresuid() != (who.uid,) * 3 or os.getresgid() != (who.gid,) * 3:
        raise PrivilegeError(f"cannot become {who.user}: the ids did not change")
    if who.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"became {who.user} but could return to root")
    _prctl(PR_SET_DUMPABLE, 0)
    set_no_new_privs()


def filter_program(machine: str | None = None, uring: bool = False) -> bytes:
    """The classic-BPF program (struct sock_filter[]) for this machine;
    ``uring``: the device file is served over FUSE io_uring."""
    arch, _, numbers, x32_bit = ARCHES[machine or platform.machine()]
    names = DENIED if uring else DENIED + URING_ONLY
    denied = sorted({numbers[name] for name in names if name in numbers})
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI (i386 on x86_64...)
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    checks: list[tuple[int, int]] = []
    if x32_bit is not None:
        checks.append((_JGE_K, x32_bit))
    checks += [(_JEQ_K, nr) for nr in denied]
    deny_at = len(prog) + len(checks) + 1  # after the checks and the ALLOW
    for op, k in checks:
        prog.append((op, deny_at - len(prog) - 1, 0, k))
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM))
    assert all(jt < 256 for _, jt, _, _ in prog)
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(uring: bool = False) -> None:
    """The filter, on every thread of this process (TSYNC)."""
    machine = platform.machine()
    if machine not in ARCHES:
        raise PrivilegeError(f"--seccomp: no system-call table for {machine}")
    nr_seccomp = ARCHES[machine][1]
    program = filter_program(machine, uring)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    set_no_new_privs()
    res = _libc.syscall(ctypes.c_long(nr_seccomp), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                        ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if res != 0:
        err = ctypes.get_errno()
        if res > 0:
            raise PrivilegeError(f"--seccomp: thread {res} could not take the filter")
        raise PrivilegeError(f"--seccomp: {os.strerror(err)}")


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def status_lines(pid: int | str = "self") -> dict[str, str]:
    """Uid, Gid, Groups, CapEff, CapPrm, CapBnd, NoNewPrivs, Seccomp of a process."""
    wanted = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
              "Seccomp", "Seccomp_filters")
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = " ".join(value.split())
    return out
