/* A request on the attribute mount raises the Python thread.
 *
 * The Python thread, which serves the attribute mount, runs under
 * SCHED_IDLE (driver/priority.py) and is raised when the ring fills.  A
 * flood of STEPs the fast path coalesces never fills the ring, and on a
 * machine it keeps busy the kernel gives the thread no time: a `cat` of an
 * attribute waited 565 ms under 8 flooding processes.  This thread sleeps
 * in poll() on the mount's /dev/fuse fd; a request still waiting
 * KV_WATCH_GRACE_MS later means Python is starved, and the thread raises
 * it as a filling ring does, and more: at nice KV_WATCH_NICE, so that a
 * reader's few requests do not each wait out the flood's time slices
 * (raised to nice 0 only, a `model_stats` read under 8 STEP floods still
 * took 230 ms), until no request has come for KV_WATCH_QUIET_MS.  A
 * request Python takes within the grace changes nothing, so an idle
 * daemon's reads leave its scheduling alone. */

#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

/* A starved thread's request waits longer than this; a served one does not. */
#define KV_WATCH_GRACE_MS 5
/* The boost while readers come, and how long without a request ends it. */
#define KV_WATCH_NICE (-10)
#define KV_WATCH_QUIET_MS 50

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

static void nice_to(struct kv_dev *d, int nice)
{
    (void)setpriority(PRIO_PROCESS, (id_t)atomic_load(&d->consumer_tid), nice);
}

/* Boosted: stay so while requests keep coming; 0 once none came for
 * KV_WATCH_QUIET_MS, -1 when stopping. */
static int while_readers_come(struct kv_dev *d)
{
    uint64_t last = kv_now_ns();
    int r;

    while (kv_now_ns() - last < KV_WATCH_QUIET_MS * 1000000ull) {
        r = request_waiting(d, KV_WATCH_GRACE_MS);
        if (r < 0)
            return -1;
        if (r) {  /* Python has yet to read it: look again a little later */
            last = kv_now_ns();
            if (stopped(d, KV_WATCH_GRACE_MS))
                return -1;
        }
    }
    return 0;
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
        if (!r || !atomic_load(&d->consumer_tid))
            continue;  /* Python took it, or it is not ours to raise */
        kv_ring_raise(d);
        nice_to(d, KV_WATCH_NICE);
        atomic_fetch_add_explicit(&d->watch_raises, 1, memory_order_relaxed);
        r = while_readers_come(d);
        nice_to(d, 0);
        if (r < 0)
            break;
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
