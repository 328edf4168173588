"""cffi build script for ``kvcpu_dev.native._fuse``: the C fast path and
the attribute mount's binding of libfuse3's low-level and CUSE APIs,
compiled against the system headers (API mode).

API mode rather than ABI mode because ``struct stat``, ``fuse_file_info``
(bitfields) and the ops tables must match the C compiler's layout exactly;
cffi checks that at build time instead of trusting a hand-written copy.

The sources, one concern each, each calling only those before it:
ring.c (the event ring and coalesced runs), watch.c (a starved attribute
request raises the Python thread, as a filling ring does), driver.c (the driver's
semantics and the bench's controls), delayed.c (replies held by an
injected latency), sessions.c (the device's FUSE and CUSE sessions and
their thread), uring.c (the device file over FUSE io_uring, one queue
per CPU; uring_proto.h the kernel ABI bookworm's headers lack), device.c
(one device's life: made, shared, freed), and apart, attrs_shim.c (the
attribute mount's helpers), and madvise.c and launch.c (madvise.h:
``kvcpu-dev run``'s supervisor, calling the driver, and its launcher);
internal.h is their
private header, kvcpu.h and attrs_shim.h what Python sees.  Facts Python also states (registers, default weights,
event kinds, fault modes, run timings) are generated here as ``KV_*``
defines from kvcpu_dev/device/regs.py and tables.py, never typed twice.
"""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import cffi

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent
#: <linux/kv_cpu.h>: the command numbers and structs, as C clients see them.
UAPI_INCLUDE = PACKAGE / "uapi"
SOURCES = ("ring.c", "watch.c", "driver.c", "delayed.c", "sessions.c", "uring.c", "device.c", "attrs_shim.c",
           "madvise.c", "launch.c")
#: What Python sees: also the cffi declaration.
PUBLIC_HEADERS = ("kvcpu.h", "attrs_shim.h", "madvise.h")
#: attrs_shim.h's marker before the callbacks Python defines.
CALLBACKS_MARKER = "/* KV_PYTHON_CALLBACKS */"

#: libfuse3's types and calls that the Python side uses.
LIBFUSE_CDEF = r"""
typedef int... off_t;
typedef int... uid_t;
typedef int... gid_t;
typedef int... pid_t;
typedef uint64_t fuse_ino_t;
typedef struct fuse_req *fuse_req_t;
struct fuse_session;
struct fuse_conn_info;
struct fuse_pollhandle;
struct fuse_file_info { int flags; uint64_t fh; ...; };
struct fuse_buf { size_t size; void *mem; ...; };
/* Who made a request (the attribute stores' caller). */
struct fuse_ctx { uid_t uid; gid_t gid; pid_t pid; ...; };
struct stat { ...; };

#define FUSE_IOCTL_DIR ...
#define FUSE_SET_ATTR_SIZE ...

void *fuse_req_userdata(fuse_req_t req);
const struct fuse_ctx *fuse_req_ctx(fuse_req_t req);
int fuse_reply_err(fuse_req_t req, int err);
int fuse_reply_buf(fuse_req_t req, const char *buf, size_t size);
int fuse_reply_write(fuse_req_t req, size_t count);

int fuse_session_fd(struct fuse_session *se);
int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf);
void fuse_session_process_buf(struct fuse_session *se, const struct fuse_buf *buf);
void fuse_session_unmount(struct fuse_session *se);
void fuse_session_destroy(struct fuse_session *se);
void free(void *);
"""

#: The oldest libfuse the binding is built against (Debian bookworm has 3.14).
FUSE_MIN_VERSION = "3.10"


def _check_fuse_version() -> None:
    """One line, not a compiler error, when libfuse3 is too old."""
    _pkg_config("--modversion")  # pkg-config and fuse3.pc present, or that message
    if subprocess.run(["pkg-config", f"--atleast-version={FUSE_MIN_VERSION}", "fuse3"],
                      capture_output=True).returncode != 0:
        found = " ".join(_pkg_config("--modversion"))
        raise SystemExit(f"kvcpu-dev: libfuse3 >= {FUSE_MIN_VERSION} is needed, found {found} (pkg-config fuse3)")


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "fuse3"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            "kvcpu-dev: building the libfuse3 binding needs pkg-config and "
            "libfuse3-dev and python3-dev (apt-get install fuse3 libfuse3-dev pkg-config python3-dev): " + str(exc)) from None
    return shlex.split(out)


def generated_defines() -> dict[str, int]:
    """KV_REG_*, KV_DEFAULT_* (device/regs.py) and the shared tables
    (device/tables.py: KV_EV_*, KV_FAULT_*, KV_RUN_*).  Imported from the
    source tree itself, so the build needs no installed kvcpu_dev; neither
    module loads cffi, numpy or the C extension."""
    sys.path.insert(0, str(PACKAGE.parent))
    try:
        from kvcpu_dev.device import regs, tables
    finally:
        sys.path.pop(0)
    defines = {f"KV_REG_{name}": offset for offset, name in regs.NAMES.items()}
    defines.update({f"KV_DEFAULT_{field.upper()}": value for field, value in regs.DEFAULT_WEIGHTS.items()})
    defines.update(tables.c_defines())
    return defines


def cdef(defines: dict[str, int]) -> str:
    """The binding's declaration: libfuse's part, the generated constants
    (their values come from the compiler), and the public headers, with
    attrs_shim.h's callbacks made Python's."""
    shim = (HERE / "attrs_shim.h").read_text()
    helpers, _, callbacks = shim.partition(CALLBACKS_MARKER)
    constants = "".join(f"#define {name} ...\n" for name in defines)
    return (LIBFUSE_CDEF + constants + (HERE / "kvcpu.h").read_text() + (HERE / "madvise.h").read_text() + helpers
            + 'extern "Python+C" {\n' + callbacks + "}\n")


def builder() -> cffi.FFI:
    _check_fuse_version()
    defines = generated_defines()
    ffi = cffi.FFI()
    ffi.cdef(cdef(defines))
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs")
    ffi.set_source(
        "kvcpu_dev.native._fuse",
        '#define FUSE_USE_VERSION 35\n#include <fuse_lowlevel.h>\n#include <sys/stat.h>\n'
        + "".join(f'#include "{h}"\n' for h in PUBLIC_HEADERS),
        sources=[str((HERE / s).relative_to(PACKAGE.parent)) for s in SOURCES],
        define_macros=[(name, str(value)) for name, value in defines.items()],
        include_dirs=[str(HERE), str(UAPI_INCLUDE)]
        + [f[2:] for f in cflags if f.startswith("-I")],
        extra_compile_args=[f for f in cflags if not f.startswith("-I")]
        + ["-O2", "-Wall", "-Wno-unused-parameter"],
        libraries=[f[2:] for f in libs if f.startswith("-l")] + ["pthread"],
        library_dirs=[f[2:] for f in libs if f.startswith("-L")],
    )
    return ffi


ffibuilder = builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
