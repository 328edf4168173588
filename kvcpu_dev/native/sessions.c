/* The device's sessions: the FUSE mount whose root is the device file, and
 * the CUSE character device.  One C thread ("kvcpu-fast") receives their
 * requests and answers them from the driver's state (driver.c) without
 * ever taking Python's GIL; an injected latency's reply is handed to
 * delayed.c, so it holds back that request only.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <cuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>


static struct kv_dev *dev_of(fuse_req_t req) { return fuse_req_userdata(req); }

static void answer_ioctl(fuse_req_t req, uint32_t cmd, const void *in_buf,
                         size_t in_bufsz, size_t out_bufsz)
{
    struct kv_dev *d = dev_of(req);
    uint8_t out[sizeof(struct kv_cpu_telemetry_info)];
    size_t outsz = out_bufsz < sizeof(out) ? out_bufsz : sizeof(out);
    int want_wake;
    uint64_t delay_ns;
    int err = kv_dev_command(d, KV_CALLER_SESSION, cmd, in_buf, in_bufsz, out, outsz,
                             fuse_req_ctx(req)->pid, &want_wake, &delay_ns);

    if (cmd != KV_CPU_GET_TELEMETRY || err)
        outsz = 0;
    if (delay_ns == 0 || kv_delayed_reply(d, req, err, out, outsz, kv_now_ns() + delay_ns) != 0)
        kv_reply(req, err, out, outsz);
    if (want_wake)
        kv_wake(d, want_wake);     /* after the reply: the client goes first */
}

static void fast_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)conn;
    atomic_store(&((struct kv_dev *)userdata)->ready, 1);
}

static void cuse_init_done(void *userdata)
{
    atomic_store(&((struct kv_dev *)userdata)->ready, 1);
}

/* -- FUSE: a file system whose root is the device file itself, mounted on
 * top of the attribute mount's `device` entry. */

static void file_stat(struct kv_dev *d, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = FUSE_ROOT_ID;
    st->st_mode = S_IFREG | (d->mode & 07777);
    st->st_nlink = 1;
    st->st_uid = d->uid;
    st->st_gid = d->gid;
    st->st_blksize = 4096;
}

static void fast_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent; (void)name;
    fuse_reply_err(req, ENOTDIR);
}

static void fast_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;
    (void)ino; (void)fi;
    file_stat(dev_of(req), &st);
    fuse_reply_attr(req, &st, 3600.0);
}

static void fast_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
    /* O_TRUNC is accepted and ignored, as on a character device; modes and
     * owners are fixed. */
    if (to_set & ~FUSE_SET_ATTR_SIZE) {
        fuse_reply_err(req, EPERM);
        return;
    }
    fast_getattr(req, ino, fi);
    (void)attr;
}

static int open_device(fuse_req_t req, struct fuse_file_info *fi)
{
    if (!dev_of(req)->present) {
        fuse_reply_err(req, ENODEV);
        return 0;
    }
    fi->fh = 0;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    return fuse_reply_open(req, fi);
}

static void fast_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    open_device(req, fi);
}

/* The driver has no read() and no write(). */
static void no_io(fuse_req_t req) { fuse_reply_err(req, EINVAL); }

static void fast_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    (void)ino; (void)size; (void)off; (void)fi;
    no_io(req);
}

static void fast_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                       off_t off, struct fuse_file_info *fi)
{
    (void)ino; (void)buf; (void)size; (void)off; (void)fi;
    no_io(req);
}

static void fast_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino; (void)fi;
    fuse_reply_err(req, 0);
}

static void fast_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                       struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                       size_t in_bufsz, size_t out_bufsz)
{
    (void)ino; (void)arg; (void)fi;
    if (flags & FUSE_IOCTL_DIR)
        fuse_reply_err(req, ENOTTY);
    else
        answer_ioctl(req, cmd, in_buf, in_bufsz, out_bufsz);
}

static const struct fuse_lowlevel_ops fast_fuse_ops = {
    .init = fast_init,
    .lookup = fast_lookup,
    .getattr = fast_getattr,
    .setattr = fast_setattr,
    .open = fast_open,
    .read = fast_read,
    .write = fast_write,
    .release = fast_release,
    .ioctl = fast_ioctl,
};

/* -- CUSE: the real character device. */

static void cuse_open(fuse_req_t req, struct fuse_file_info *fi)
{
    open_device(req, fi);
}

static void cuse_read(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)size; (void)off; (void)fi;
    no_io(req);
}

static void cuse_write(fuse_req_t req, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)buf; (void)size; (void)off; (void)fi;
    no_io(req);
}

static void cuse_release(fuse_req_t req, struct fuse_file_info *fi)
{
    (void)fi;
    fuse_reply_err(req, 0);
}

static void cuse_ioctl(fuse_req_t req, int cmd, void *arg, struct fuse_file_info *fi,
                       unsigned int flags, const void *in_buf, size_t in_bufsz,
                       size_t out_bufsz)
{
    (void)arg; (void)fi; (void)flags;
    answer_ioctl(req, (uint32_t)cmd, in_buf, in_bufsz, out_bufsz);
}

static const struct cuse_lowlevel_ops fast_cuse_ops = {
    .init_done = cuse_init_done,
    .open = cuse_open,
    .read = cuse_read,
    .write = cuse_write,
    .release = cuse_release,
    .ioctl = cuse_ioctl,
};

struct fuse_session *kv_fast_fuse_new(struct kv_dev *d, const char *mount_opts,
                                      unsigned mode, unsigned uid, unsigned gid)
{
    char *argv[] = { "kvcpu-dev", "-o", (char *)mount_opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct fuse_session *se;

    d->mode = mode;
    d->uid = uid;
    d->gid = gid;
    se = fuse_session_new(&args, &fast_fuse_ops, sizeof(fast_fuse_ops), d);
    fuse_opt_free_args(&args);
    return se;
}

/* Like cuse_lowlevel_setup() without its daemonizing and signal handlers,
 * which belong to the Python daemon. */
struct fuse_session *kv_fast_cuse_new(struct kv_dev *d, const char *devname)
{
    char devarg[128];
    const char *dev_info_argv[] = { devarg };
    struct cuse_info ci;
    char *argv[] = { "kvcpu-dev", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(1, argv);
    struct fuse_session *se;

    snprintf(devarg, sizeof(devarg), "DEVNAME=%s", devname);
    memset(&ci, 0, sizeof(ci));
    ci.dev_info_argc = 1;
    ci.dev_info_argv = dev_info_argv;
    ci.flags = 0;               /* restricted ioctls */
    se = cuse_lowlevel_new(&args, &ci, &fast_cuse_ops, d);
    fuse_opt_free_args(&args);
    return se;
}

/* -- the thread ------------------------------------------------------------------ */

/* The thread's name (at most 15 characters), as ps -L, top -H and perf show it. */
#define KV_FAST_THREAD_NAME "kvcpu-fast"

static void on_wake_signal(int sig) { (void)sig; }

int kv_wake_signal_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_wake_signal;     /* no SA_RESTART: a blocking call returns EINTR */
    sigemptyset(&sa.sa_mask);
    return sigaction(KV_WAKE_SIGNAL, &sa, NULL) == 0 ? 0 : errno;
}

/* After a reply, watch the descriptor for up to poll_us before blocking
 * again: a burst is then served without a wake-up. */
static void spin(struct kv_dev *d, int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    uint64_t until = kv_now_ns() + (uint64_t)d->poll_us * 1000u;

    while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
        if (poll(&pfd, 1, 0) != 0 || kv_now_ns() >= until)
            return;
    }
}

static void *serve(void *arg)
{
    struct kv_dev *d = arg;
    struct fuse_session *se = d->se;
    struct fuse_buf buf = { .mem = NULL };
    int fd = fuse_session_fd(se);

    while (!atomic_load(&d->stop)) {
        int res = fuse_session_receive_buf(se, &buf);
        if (res == -EINTR || res == -EAGAIN)
            continue;
        if (res <= 0)   /* 0: unmounted or released; < 0: device gone */
            break;
        fuse_session_process_buf(se, &buf);
        uint64_t served = atomic_fetch_add_explicit(&d->served, 1, memory_order_relaxed) + 1;
        if (d->shared != NULL)
            __atomic_store_n(&d->shared->served, served, __ATOMIC_RELAXED);
        if (d->poll_us)
            spin(d, fd);
    }
    free(buf.mem);
    atomic_store(&d->exited, 1);
    if (d->exit_fd >= 0)
        (void)eventfd_write(d->exit_fd, 1);
    return NULL;
}

int kv_fast_start(struct kv_dev *d, struct fuse_session *se, unsigned poll_us, int exit_fd)
{
    sigset_t all, old;
    int err = kv_wake_signal_install();

    if (err)
        return err;
    err = kv_delayed_start(d);
    if (err)
        return err;
    d->se = se;
    d->poll_us = poll_us;
    d->exit_fd = exit_fd;
    fcntl(fuse_session_fd(se), F_SETFL,
          fcntl(fuse_session_fd(se), F_GETFL) & ~O_NONBLOCK);
    /* The thread takes no signal but its own wake-up: SIGTERM and friends
     * stay with Python's main thread. */
    sigfillset(&all);
    sigdelset(&all, KV_WAKE_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&d->thread, NULL, serve, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0) {
        d->have_thread = 1;
        (void)pthread_setname_np(d->thread, KV_FAST_THREAD_NAME);
    }
    return err;
}

int kv_fast_ready(struct kv_dev *d) { return atomic_load(&d->ready); }
int kv_fast_exited(struct kv_dev *d) { return atomic_load(&d->exited); }

void kv_fast_release_held(struct kv_dev *d)
{
    kv_delayed_stop(d);
}

void kv_fast_stop(struct kv_dev *d)
{
    if (d->have_thread) {
        atomic_store(&d->stop, 1);
        kv_ring_wake_waiters(d);    /* a request waiting for room gives up waiting */
        /* The signal may land just before the thread blocks again: repeat
         * it until the thread is gone. */
        while (!atomic_load(&d->exited)) {
            pthread_kill(d->thread, KV_WAKE_SIGNAL);
            usleep(1000);
        }
        pthread_join(d->thread, NULL);
        d->have_thread = 0;
    }
    kv_delayed_stop(d);     /* held replies go out now, before the session goes */
}
