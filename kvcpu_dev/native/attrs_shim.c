/* The attribute mount's side of the libfuse binding: the operations table
 * whose entries are Python callbacks (cffi's extern "Python+C", defined in
 * kvcpu_dev/transport/libfuse.py), and the small helpers that keep
 * bitfields, fuse_args and struct stat out of Python.  The device's own
 * sessions are answered in C (sessions.c), never here.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attrs_shim.h"

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
struct fuse_session *kv_fuse_new(const char *mount_opts, void *userdata)
{
    char *argv[] = { "kvcpu-dev", "-o", (char *)mount_opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct fuse_session *se;

    se = fuse_session_new(&args, &kv_fuse_ops, sizeof(kv_fuse_ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

int kv_fuse_mount(struct fuse_session *se, const char *mountpoint)
{
    return fuse_session_mount(se, mountpoint);
}

int kv_fuse_serve_one(struct fuse_session *se, struct fuse_buf *buf, uint64_t *mark)
{
    int res = fuse_session_receive_buf(se, buf);

    if (res > 0) {
        if (mark)
            (void)kv_mark_busy(mark, 1);  /* the fd woke the watcher already: no kick */
        fuse_session_process_buf(se, buf);
        if (mark)
            (void)kv_mark_busy(mark, 0);
    }
    return res;
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

int kv_reply_attr(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                         unsigned uid, unsigned gid, uint64_t size, double timeout)
{
    struct stat st;
    kv_fill_stat(&st, ino, mode, nlink, uid, gid, size);
    return fuse_reply_attr(req, &st, timeout);
}

int kv_reply_entry(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
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

int kv_reply_open(fuse_req_t req, struct fuse_file_info *fi, uint64_t fh,
                         int direct_io)
{
    fi->fh = fh;
    fi->direct_io = direct_io ? 1 : 0;
    fi->nonseekable = 0;
    fi->keep_cache = 0;
    return fuse_reply_open(req, fi);
}

size_t kv_add_direntry(fuse_req_t req, char *buf, size_t bufsize,
                              const char *name, fuse_ino_t ino, unsigned mode, off_t off)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = mode;
    return fuse_add_direntry(req, buf, bufsize, name, &st, off);
}
