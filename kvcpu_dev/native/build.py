"""cffi build script for ``kvcpu_dev.native._fuse``: libfuse3's low-level
and CUSE APIs, compiled against the system headers (API mode).

API mode rather than ABI mode because ``struct stat``, ``fuse_file_info``
(bitfields) and the ops tables must match the C compiler's layout exactly;
cffi checks that at build time instead of trusting a hand-written copy.
The few C helpers below keep bitfields, ``fuse_args`` and ``struct stat``
out of Python.
"""

from __future__ import annotations

import pathlib
import runpy
import shlex
import subprocess

import cffi

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent
#: <linux/kv_cpu.h>: the command numbers and structs, as C clients see them.
UAPI_INCLUDE = PACKAGE / "uapi"
#: The fast path's declarations are also its cffi cdef.
FASTPATH_H = HERE / "fastpath.h"
FASTPATH_C = HERE / "fastpath.c"

CDEF = r"""
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
struct stat { ...; };

struct fuse_lowlevel_ops {
    void (*init)(void *userdata, struct fuse_conn_info *conn);
    void (*lookup)(fuse_req_t req, fuse_ino_t parent, const char *name);
    void (*getattr)(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
    void (*setattr)(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                    int to_set, struct fuse_file_info *fi);
    void (*open)(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
    void (*read)(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                 struct fuse_file_info *fi);
    void (*write)(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                  off_t off, struct fuse_file_info *fi);
    void (*release)(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
    void (*opendir)(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
    void (*readdir)(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi);
    void (*ioctl)(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                  struct fuse_file_info *fi, unsigned flags,
                  const void *in_buf, size_t in_bufsz, size_t out_bufsz);
    ...;
};

#define FUSE_IOCTL_DIR ...
#define FUSE_SET_ATTR_SIZE ...

/* Who made a request (the attribute stores' caller). */
struct fuse_ctx { uid_t uid; gid_t gid; pid_t pid; ...; };
const struct fuse_ctx *fuse_req_ctx(fuse_req_t req);

void *fuse_req_userdata(fuse_req_t req);
int fuse_reply_err(fuse_req_t req, int err);
int fuse_reply_buf(fuse_req_t req, const char *buf, size_t size);
int fuse_reply_write(fuse_req_t req, size_t count);
int fuse_reply_ioctl(fuse_req_t req, int result, const char *buf, size_t size);

int fuse_session_fd(struct fuse_session *se);
int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf);
void fuse_session_process_buf(struct fuse_session *se, const struct fuse_buf *buf);
void fuse_session_unmount(struct fuse_session *se);
void fuse_session_destroy(struct fuse_session *se);
void free(void *);

/* Helpers (defined below in SOURCE). */
struct fuse_session *kv_fuse_new(const char *mount_opts, void *userdata);
int kv_fuse_mount(struct fuse_session *se, const char *mountpoint);
int kv_reply_attr(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                  unsigned uid, unsigned gid, uint64_t size, double timeout);
int kv_reply_entry(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                   unsigned uid, unsigned gid, uint64_t size, double timeout);
int kv_reply_open(fuse_req_t req, struct fuse_file_info *fi, uint64_t fh,
                  int direct_io);
size_t kv_add_direntry(fuse_req_t req, char *buf, size_t bufsize,
                       const char *name, fuse_ino_t ino, unsigned mode, off_t off);

extern "Python" {
    void kv_ll_init(void *userdata, struct fuse_conn_info *conn);
    void kv_ll_lookup(fuse_req_t, fuse_ino_t, const char *);
    void kv_ll_getattr(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
    void kv_ll_setattr(fuse_req_t, fuse_ino_t, struct stat *, int, struct fuse_file_info *);
    void kv_ll_open(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
    void kv_ll_read(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
    void kv_ll_write(fuse_req_t, fuse_ino_t, const char *, size_t, off_t,
                     struct fuse_file_info *);
    void kv_ll_release(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
    void kv_ll_opendir(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
    void kv_ll_readdir(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
    void kv_ll_ioctl(fuse_req_t, fuse_ino_t, unsigned int, void *,
                     struct fuse_file_info *, unsigned, const void *, size_t, size_t);
}
"""

SOURCE = r"""
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <cuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void kv_ll_init(void *userdata, struct fuse_conn_info *conn);
static void kv_ll_lookup(fuse_req_t, fuse_ino_t, const char *);
static void kv_ll_getattr(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void kv_ll_setattr(fuse_req_t, fuse_ino_t, struct stat *, int, struct fuse_file_info *);
static void kv_ll_open(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void kv_ll_read(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
static void kv_ll_write(fuse_req_t, fuse_ino_t, const char *, size_t, off_t,
                        struct fuse_file_info *);
static void kv_ll_release(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void kv_ll_opendir(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void kv_ll_readdir(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
static void kv_ll_ioctl(fuse_req_t, fuse_ino_t, unsigned int, void *,
                        struct fuse_file_info *, unsigned, const void *, size_t, size_t);

static const struct fuse_lowlevel_ops kv_fuse_ops = {
    .init = kv_ll_init,
    .lookup = kv_ll_lookup,
    .getattr = kv_ll_getattr,
    .setattr = kv_ll_setattr,
    .open = kv_ll_open,
    .read = kv_ll_read,
    .write = kv_ll_write,
    .release = kv_ll_release,
    .opendir = kv_ll_opendir,
    .readdir = kv_ll_readdir,
    .ioctl = kv_ll_ioctl,
};

/* fuse_session_new() wants argv-style options; build them here. */
static struct fuse_session *kv_fuse_new(const char *mount_opts, void *userdata)
{
    char *argv[] = { "kvcpu-dev", "-o", (char *)mount_opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct fuse_session *se;

    se = fuse_session_new(&args, &kv_fuse_ops, sizeof(kv_fuse_ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

static int kv_fuse_mount(struct fuse_session *se, const char *mountpoint)
{
    return fuse_session_mount(se, mountpoint);
}

static void kv_fill_stat(struct stat *st, fuse_ino_t ino, unsigned mode,
                         unsigned nlink, unsigned uid, unsigned gid, uint64_t size)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = mode;
    st->st_nlink = nlink;
    st->st_uid = uid;
    st->st_gid = gid;
    st->st_size = size;
    st->st_blksize = 4096;
}

static int kv_reply_attr(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                         unsigned uid, unsigned gid, uint64_t size, double timeout)
{
    struct stat st;
    kv_fill_stat(&st, ino, mode, nlink, uid, gid, size);
    return fuse_reply_attr(req, &st, timeout);
}

static int kv_reply_entry(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                          unsigned uid, unsigned gid, uint64_t size, double timeout)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = ino;
    e.generation = 1;
    e.attr_timeout = timeout;
    e.entry_timeout = timeout;
    kv_fill_stat(&e.attr, ino, mode, nlink, uid, gid, size);
    return fuse_reply_entry(req, &e);
}

static int kv_reply_open(fuse_req_t req, struct fuse_file_info *fi, uint64_t fh,
                         int direct_io)
{
    fi->fh = fh;
    fi->direct_io = direct_io ? 1 : 0;
    fi->nonseekable = 0;
    fi->keep_cache = 0;
    return fuse_reply_open(req, fi);
}

static size_t kv_add_direntry(fuse_req_t req, char *buf, size_t bufsize,
                              const char *name, fuse_ino_t ino, unsigned mode, off_t off)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = mode;
    return fuse_add_direntry(req, buf, bufsize, name, &st, off);
}
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


def register_defines() -> list[tuple[str, str]]:
    """KV_REG_* and KV_DEFAULT_* for the C fast path, from regs.py: one
    table for the core, the model and the C code.  regs.py is read as a
    file (it imports only the standard library), not as a package import,
    so the build needs no installed kvcpu_dev."""
    regs = runpy.run_path(str(PACKAGE / "device" / "regs.py"))
    defines = [(f"KV_REG_{name}", hex(offset)) for offset, name in regs["NAMES"].items()]
    defines += [(f"KV_DEFAULT_{field.upper()}", hex(value))
                for field, value in regs["DEFAULT_WEIGHTS"].items()]
    return defines


def builder() -> cffi.FFI:
    _check_fuse_version()
    ffi = cffi.FFI()
    ffi.cdef(CDEF + FASTPATH_H.read_text())
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs")
    ffi.set_source(
        "kvcpu_dev.native._fuse",
        SOURCE + '#include "fastpath.h"\n',
        sources=[str(FASTPATH_C.relative_to(PACKAGE.parent))],
        define_macros=register_defines(),
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
