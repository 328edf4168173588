/* A request on the attribute mount raises the Python thread.
 *
 * The Python thread, which serves the attribute mount, runs under
 * SCHED_IDLE (driver/priority.py) and is raised when the ring fills.  A
 * flood of STEPs the fast path coalesces never fills the ring, and on a
 * machine it keeps busy the kernel gives the thread no time: a `cat` of an
 * attribute waited 565 ms under 8 flooding processes.  This thread sleeps
 * in poll() on the mount's /dev/fuse fd; a request still waiting
 * KV_WATCH_GRACE_NS later means Python is starved, and the thread raises
 * it as a filling ring does, then looks again only once Python has lowered
 * itself (the load over).  A request Python takes within the grace raises
 * nothing, so an idle daemon's reads leave its scheduling alone. */

#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* A starved thread's request waits longer than this; a served one does not. */
#define KV_WATCH_GRACE_MS 5
/* How often a raised thread is checked for having lowered itself. */
#define KV_WATCH_RAISED_MS 10

/* Wait up to `ms` for the stop eventfd; 1 if it was written. */
static int stopped(struct kv_dev *d, int ms)
{
    struct pollfd p = { .fd = d->watch_stop_fd, .events = POLLIN };

    return poll(&p, 1, ms) > 0;
}

static int request_waiting(struct kv_dev *d, int ms)
{
    struct pollfd p[2] = {
        { .fd = d->watch_fd, .events = POLLIN },
        { .fd = d->watch_stop_fd, .events = POLLIN },
    };

    if (poll(p, 2, ms) < 0)
        return errno == EINTR ? 0 : -1;
    if (p[1].revents || p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
        return -1;  /* stopping, or the session is gone */
    return p[0].revents & POLLIN ? 1 : 0;
}

static void *watch(void *arg)
{
    struct kv_dev *d = arg;
    int r;

    while ((r = request_waiting(d, -1)) >= 0) {
        if (!r || stopped(d, KV_WATCH_GRACE_MS))
            continue;
        r = request_waiting(d, 0);
        if (r < 0)
            break;
        if (!r)
            continue;  /* Python took it */
        if (atomic_load_explicit(&d->consumer_tid, memory_order_relaxed) &&
            !atomic_exchange_explicit(&d->raised, 1, memory_order_acq_rel)) {
            kv_wake(d, KV_WAKE_RAISE);
            atomic_fetch_add_explicit(&d->watch_raises, 1, memory_order_relaxed);
        }
        while (atomic_load(&d->raised))
            if (stopped(d, KV_WATCH_RAISED_MS))
                return NULL;
    }
    return NULL;
}

int kv_watch_start(struct kv_dev *d, int fd)
{
    sigset_t all, old;
    int err;

    if (d->have_watch_thread)
        return EBUSY;
    d->watch_stop_fd = eventfd(0, EFD_CLOEXEC);
    if (d->watch_stop_fd < 0)
        return errno;
    d->watch_fd = fd;
    sigfillset(&all);   /* signals stay with Python's main thread */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&d->watch_thread, NULL, watch, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        close(d->watch_stop_fd);
        d->watch_stop_fd = -1;
        return err;
    }
    d->have_watch_thread = 1;
    (void)pthread_setname_np(d->watch_thread, "kvcpu-watch");
    return 0;
}

void kv_watch_stop(struct kv_dev *d)
{
    if (!d->have_watch_thread)
        return;
    (void)eventfd_write(d->watch_stop_fd, 1);
    pthread_join(d->watch_thread, NULL);
    close(d->watch_stop_fd);
    d->watch_stop_fd = -1;
    d->have_watch_thread = 0;
}

uint64_t kv_watch_raises(struct kv_dev *d) { return atomic_load(&d->watch_raises); }
