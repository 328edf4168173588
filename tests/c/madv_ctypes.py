"""madv_ctypes: a Python runtime calling the RFC's madvise values through
ctypes, as a serving framework's block allocator would.

    python3 madv_ctypes.py [rfc|stock]

Output as madv_rfc.c: "ok NAME ...", "FAIL NAME ...", "expect pid=TID ..."
for every call that must reach apply(), then "done pass=N fail=M"; exit 0
iff nothing failed.  One of the calls comes from a second Python thread.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import sys
import threading

MADV_KV_HOT = 104
MADV_KV_EVICT = 105
MADV_KV_PREFETCH = 106
SYS_MADVISE = 28  # x86_64

libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.restype = ctypes.c_int
libc.syscall.restype = ctypes.c_long
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mmap.restype = ctypes.c_void_p
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

PAGE = mmap.PAGESIZE
stock = len(sys.argv) > 1 and sys.argv[1] == "stock"
counts = {"pass": 0, "fail": 0}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def prefetch_len(t: int, w: int) -> int:
    return (w << 32) | (t & 0xFFFFFFFF)


def kv(name: str, addr: int, length: int, advice: int, want: int,
       via_syscall: bool = False) -> None:
    if stock:
        want = errno.EINVAL
    ctypes.set_errno(0)
    if via_syscall:
        rc = libc.syscall(ctypes.c_long(SYS_MADVISE), ctypes.c_void_p(addr),
                          ctypes.c_size_t(length), ctypes.c_long(advice))
    else:
        rc = libc.madvise(addr, length, advice)
    err = 0 if rc == 0 else ctypes.get_errno()
    if err == want:
        counts["pass"] += 1
        say(f"ok {name} rc={rc} errno={errno.errorcode.get(err, err)}")
    else:
        counts["fail"] += 1
        say(f"FAIL {name} got rc={rc} errno={errno.errorcode.get(err, err)} want {want}")
    if rc == 0 and want == 0:
        tid = threading.get_native_id()
        if advice == MADV_KV_PREFETCH:
            say(f"expect pid={tid} advice=PREFETCH addr={addr:#x} "
                f"t={length & 0xFFFFFFFF} W={length >> 32}")
        else:
            kind = "HOT" if advice == MADV_KV_HOT else "EVICT"
            say(f"expect pid={tid} advice={kind} addr={addr:#x} len={length}")


def anon(length: int) -> int:
    addr = libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap")
    return int(addr)


def main() -> int:
    block = anon(16 << 20)
    # A Python mmap object's buffer, as a KV block allocator may hold it.
    buf = mmap.mmap(-1, 4 * PAGE)
    view = ctypes.c_char.from_buffer(buf)
    buf_addr = ctypes.addressof(view)
    kv("hot_block", block, 16 << 20, MADV_KV_HOT, 0)
    kv("evict_page", block, PAGE, MADV_KV_EVICT, 0)
    kv("hot_mmap_object", buf_addr, 4 * PAGE, MADV_KV_HOT, 0)
    for step, lookahead in ((1, 64), (42, 128), (0, 64), (0xFFFFFFFF, 256)):
        kv(f"prefetch_{step}_{lookahead}", block, prefetch_len(step, lookahead),
           MADV_KV_PREFETCH, 0)
    kv("prefetch_syscall", block, prefetch_len(7, 8), MADV_KV_PREFETCH, 0, via_syscall=True)
    kv("hot_unaligned", block + 8, PAGE, MADV_KV_HOT, errno.EINVAL)
    kv("evict_len0", block, 0, MADV_KV_EVICT, errno.EINVAL)
    gone = anon(PAGE)
    libc.munmap(gone, PAGE)
    kv("hot_unmapped", gone, PAGE, MADV_KV_HOT, errno.EFAULT)
    worker = threading.Thread(target=kv, args=("thread_evict", block, 8 * PAGE,
                                               MADV_KV_EVICT, 0))
    worker.start()
    worker.join()
    del view
    buf.close()
    say(f"done pass={counts['pass']} fail={counts['fail']}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
