/* The watcher: a reader's request never waits out a flood.
 *
 * The threads that answer readers (the Python thread serving the attribute
 * mount, the metrics endpoint's two threads) yield to the fast path and its
 * clients: SCHED_IDLE, or raised to SCHED_OTHER while the ring fills
 * (driver/priority.py).  Neither is enough under a flood.  The kernel
 * shares the CPU between task groups first (an autogroup per session, a
 * cgroup per service), and gives a group's threads their share by their
 * recent load: a thread that slept until a reader came has almost none,
 * and under 8 STEP floods a `cat` of an attribute waited up to 180 ms in
 * the run queue, at nice 0 or at nice -10 alike, while it needed 2 ms of
 * CPU (its schedstat).  With autogroups off the same read took 7 ms.
 *
 * So this thread, SCHED_FIFO itself and asleep in poll(), watches each
 * reader-facing thread through a slot: an fd the thread polls (readable: a
 * request waits for it) and/or a mark saying since when a request waits
 * for it or is served by it (kv_mark_busy; the attribute session sets its
 * own, attrs_shim.c).  A request pending KV_WATCH_GRACE_MS while a watched
 * thread is runnable yet ran less than half of that time (want_boost)
 * makes every watched thread SCHED_RR (all of them, as the one starved may
 * wait for the GIL another holds) until no request is pending, for
 * KV_WATCH_BOOST_MAX_MS at most and then as long without; then each
 * returns to its own policy.  A thread running a long request itself is
 * left alone, a request served within the grace changes nothing (an idle
 * daemon's reads leave its scheduling alone), and the boosted threads
 * take at most half of a CPU from the clients, whatever the load. */

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* A starved thread's request waits longer than this; a served one does not. */
#define KV_WATCH_GRACE_MS 3
/* ... and a request pending this long is one its thread will not take. */
#define KV_WATCH_GIVE_UP_MS 1000
#define KV_WATCH_GIVEN_UP_LOOK_MS 100
/* The longest boost, and the rest after it (native/watch.c: want_boost). */
#define KV_WATCH_BOOST_MAX_MS 20

/* A mark is three words: since when a request waits for the thread or is
 * served by it (0: none), how many it has served, and whether setting it
 * wakes the watcher (a thread watched through no fd). */
static uint64_t marked_since(const struct kv_watch_slot *s)
{
    return s->mark ? __atomic_load_n(&s->mark[0], __ATOMIC_ACQUIRE) : 0;
}

static int set_policy(pid_t tid, int policy)
{
    struct sched_param p = { .sched_priority = policy == SCHED_RR ? 1 : 0 };

    return sched_setscheduler(tid, policy, &p);
}

/* Every watched thread to SCHED_RR (on) or back to its own policy (off).
 * The consumer's own is SCHED_OTHER: it is raised as a filling ring raises
 * it, and lowers itself once commands stop (driver/priority.py). */
static void boost(struct kv_dev *d, int on)
{
    if (on && atomic_load(&d->consumer_tid))
        kv_ring_raise(d);
    for (int i = 0; i < d->watch_count; i++) {
        struct kv_watch_slot *s = &d->watch[i];

        if (set_policy(s->tid, on ? SCHED_RR : s->policy) != 0 && on)
            atomic_fetch_add_explicit(&d->watch_refusals, 1, memory_order_relaxed);
    }
    if (on)
        atomic_fetch_add_explicit(&d->watch_raises, 1, memory_order_relaxed);
}

/* One look: poll the fds of the slots with nothing pending (a readable fd
 * already seen would return at once) and the kick, up to `ms`; update each
 * slot's pending time.  -1 when stopping. */
static int look(struct kv_dev *d, int ms)
{
    struct pollfd p[KV_WATCH_SLOTS + 1];
    int at[KV_WATCH_SLOTS + 1], n = 0;
    uint64_t now;

    for (int i = 0; i < d->watch_count; i++) {
        if (d->watch[i].fd >= 0 && !d->watch[i].pending_ns) {
            p[n] = (struct pollfd){ .fd = d->watch[i].fd, .events = POLLIN };
            at[n++] = i;
        }
    }
    p[n] = (struct pollfd){ .fd = d->watch_kick_fd, .events = POLLIN };
    if (poll(p, (nfds_t)n + 1, ms) < 0 && errno != EINTR)
        return -1;
    if (p[n].revents) {
        eventfd_t v;

        (void)eventfd_read(d->watch_kick_fd, &v);
        if (atomic_load(&d->watch_stopping))
            return -1;
    }
    now = kv_now_ns();
    for (int k = 0; k < n; k++) {
        if (p[k].revents & (POLLERR | POLLHUP | POLLNVAL))
            return -1;  /* the session is gone */
        if (p[k].revents & POLLIN)
            d->watch[at[k]].pending_ns = now;
    }
    return 0;
}

/* Since when one of the slot's requests has waited, or been served (0:
 * none), after forgetting an fd whose requests were all taken.  A thread
 * that served one since the last look is keeping up: what waits on its fd
 * now waits from now (a reader of a large view keeps it readable a while). */
static uint64_t slot_pending(struct kv_watch_slot *s, uint64_t now)
{
    uint64_t served = s->mark ? __atomic_load_n(&s->mark[1], __ATOMIC_ACQUIRE) : 0;
    uint64_t since = marked_since(s);

    if (served != s->served) {
        s->served = served;
        s->given_up = 0;
        if (s->pending_ns)
            s->pending_ns = now;
    }
    if (s->pending_ns) {
        struct pollfd p = { .fd = s->fd, .events = POLLIN };

        if (poll(&p, 1, 0) == 1 && p.revents & POLLIN)
            since = since && since < s->pending_ns ? since : s->pending_ns;
        else
            s->pending_ns = 0;
    }
    if (!since)
        s->given_up = 0;
    return since < now ? since : now;  /* marked after `now` was read: fresh, not 584 years old */
}

/* The oldest request pending on any slot (0: none).  One pending for
 * KV_WATCH_GIVE_UP_MS is not a starved thread but one that will not take it
 * (gone, or stuck): it raises nobody until that thread serves again. */
static uint64_t oldest_pending(struct kv_dev *d, uint64_t now)
{
    uint64_t oldest = 0;

    for (int i = 0; i < d->watch_count; i++) {
        struct kv_watch_slot *s = &d->watch[i];
        uint64_t since = slot_pending(s, now);

        if (since && now - since >= KV_WATCH_GIVE_UP_MS * 1000000ull && !s->given_up) {
            s->given_up = 1;
            atomic_fetch_add_explicit(&d->watch_given_up, 1, memory_order_relaxed);
        }
        if (since && !s->given_up && (!oldest || since < oldest))
            oldest = since;
    }
    return oldest;
}

static int any_pending(const struct kv_dev *d)
{
    for (int i = 0; i < d->watch_count; i++)
        if (d->watch[i].pending_ns || marked_since(&d->watch[i]))
            return 1;
    return 0;
}

/* Whether a watched thread is starved: runnable ('R' in its /proc stat),
 * yet it ran less than half of the time since the last look (its CPU
 * clock, exact to the nanosecond; the run-queue wait the kernel reports
 * is only counted once a task runs, so a starved one shows none).  Each
 * slot keeps its thread's clock at the last look. */
static int any_starved(struct kv_dev *d, uint64_t now, uint64_t since)
{
    int starved = 0;

    for (int i = 0; i < d->watch_count; i++) {
        struct kv_watch_slot *s = &d->watch[i];
        struct timespec ts;
        char buf[256], *state;
        uint64_t cpu;
        ssize_t n;

        if (s->stat_fd < 0 || clock_gettime(s->clock, &ts) != 0)
            continue;
        cpu = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        n = pread(s->stat_fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            state = strrchr(buf, ')');
            if (state && state[1] == ' ' && state[2] == 'R' && s->cpu_ns && 2 * (cpu - s->cpu_ns) < now - since)
                starved = 1;
        }
        s->cpu_ns = cpu;
    }
    return starved;
}

/* When to raise the threads, and when to give them back. */
struct boosting {
    int on;
    uint64_t since;         /* when it began */
    uint64_t rested_until;  /* no new boost before (after a capped one) */
    uint64_t looked;        /* the last look */
};

/* A request pending `grace` is starved only if a watched thread is
 * runnable and ran less than half of the last look's interval: a thread
 * that runs a long request itself (a slow machine, a model view after a
 * huge hint) is not starved, and real time would only take the CPU from
 * the clients.  A boost lasts KV_WATCH_BOOST_MAX_MS at most, then rests as
 * long: the threads' real-time share is at most half of a CPU, whatever
 * the load. */
static int want_boost(struct kv_dev *d, struct boosting *b, uint64_t now, uint64_t oldest)
{
    /* the clocks are read from the look that sees a request on: idle looks
     * (a request come and gone) cost nothing */
    int starved = oldest && any_starved(d, now, b->looked);

    b->looked = now;
    if (!oldest || now - oldest < KV_WATCH_GRACE_MS * 1000000ull)
        return 0;
    if (b->on) {
        if (now - b->since < KV_WATCH_BOOST_MAX_MS * 1000000ull)
            return 1;
        b->rested_until = now + KV_WATCH_BOOST_MAX_MS * 1000000ull;
        atomic_fetch_add_explicit(&d->watch_capped, 1, memory_order_relaxed);
        return 0;
    }
    return now >= b->rested_until && starved;
}

static void *watch(void *arg)
{
    struct kv_dev *d = arg;
    const uint64_t grace = KV_WATCH_GRACE_MS * 1000000ull;
    struct boosting b = { .looked = kv_now_ns() };
    int wait_ms = -1;

    while (look(d, wait_ms) == 0) {
        uint64_t now = kv_now_ns(), oldest = oldest_pending(d, now);
        int want = want_boost(d, &b, now, oldest);

        if (want != b.on) {
            b.on = want;
            b.since = now;
            boost(d, want);
        }
        /* Asleep until a request comes, unless one is pending: look again
         * when it would be starved, or while boosted or resting, every
         * grace; while one given up on is, now and then, for its thread to
         * serve again. */
        if (oldest)
            wait_ms = b.on || now < b.rested_until || now - oldest >= grace
                ? KV_WATCH_GRACE_MS : (int)((grace - (now - oldest)) / 1000000ull) + 1;
        else
            wait_ms = any_pending(d) ? KV_WATCH_GIVEN_UP_LOOK_MS : -1;
    }
    if (b.on)
        boost(d, 0);
    return NULL;
}

static int duplicate_tid(const struct kv_dev *d, int tid)
{
    for (int i = 0; i < d->watch_count; i++)
        if (d->watch[i].tid == tid)
            return 1;
    return 0;
}

int kv_watch_add(struct kv_dev *d, int fd, int tid, int policy, uint64_t *mark)
{
    struct kv_watch_slot *s;

    if (d->have_watch_thread)
        return -EBUSY;
    if (d->watch_count == KV_WATCH_SLOTS)
        return -ENOSPC;
    s = &d->watch[d->watch_count];
    *s = (struct kv_watch_slot){ .fd = fd, .tid = tid, .policy = policy, .mark = mark, .stat_fd = -1 };
    if (!duplicate_tid(d, tid)) {  /* a thread looked at once */
        char path[64];

        snprintf(path, sizeof path, "/proc/self/task/%d", tid);
        if (access(path, F_OK) == 0)  /* ours: its own clock */
            s->clock = (clockid_t)((~(unsigned)tid << 3) | 6);  /* the kernel's per-thread CPUCLOCK_SCHED */
        else if (clock_getcpuclockid(tid, &s->clock) != 0)  /* another process's (the tests') */
            return d->watch_count++;
        snprintf(path, sizeof path, "/proc/%d/stat", tid);
        s->stat_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (mark)
        mark[2] = fd < 0;
    return d->watch_count++;
}

int kv_watch_start(struct kv_dev *d)
{
    struct sched_param fifo = { .sched_priority = 1 };
    sigset_t all, old;
    int err;

    if (d->have_watch_thread)
        return EBUSY;
    d->watch_kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->watch_kick_fd < 0)
        return errno;
    atomic_store(&d->watch_stopping, 0);
    sigfillset(&all);   /* signals stay with Python's main thread */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&d->watch_thread, NULL, watch, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        close(d->watch_kick_fd);
        d->watch_kick_fd = -1;
        return err;
    }
    d->have_watch_thread = 1;
    (void)pthread_setname_np(d->watch_thread, "kvcpu-watch");
    /* Set here, so that the caller knows on return.  Refused without
     * CAP_SYS_NICE: the watcher then shares the starved threads' lot, still
     * helps when it gets the CPU, and its boosts will be refused too. */
    if (pthread_setschedparam(d->watch_thread, SCHED_FIFO, &fifo) != 0)
        atomic_fetch_add_explicit(&d->watch_refusals, 1, memory_order_relaxed);
    return 0;
}

int kv_mark_busy(uint64_t *mark, int busy)
{
    uint64_t none = 0;

    if (!busy) {
        __atomic_fetch_add(&mark[1], 1, __ATOMIC_RELEASE);
        __atomic_store_n(&mark[0], 0, __ATOMIC_RELEASE);
        return 0;
    }
    /* the oldest waiting request's time is kept */
    return __atomic_compare_exchange_n(&mark[0], &none, kv_now_ns(), 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

void kv_watch_busy(struct kv_dev *d, uint64_t *mark, int busy)
{
    if (kv_mark_busy(mark, busy) && mark[2] && d->watch_kick_fd >= 0)
        (void)eventfd_write(d->watch_kick_fd, 1);
}

void kv_watch_stop(struct kv_dev *d)
{
    if (d->have_watch_thread) {
        atomic_store(&d->watch_stopping, 1);
        (void)eventfd_write(d->watch_kick_fd, 1);
        pthread_join(d->watch_thread, NULL);
        close(d->watch_kick_fd);
        d->watch_kick_fd = -1;
        d->have_watch_thread = 0;
    }
    for (int i = 0; i < d->watch_count; i++)
        if (d->watch[i].stat_fd >= 0)
            close(d->watch[i].stat_fd);
    d->watch_count = 0;
}

uint64_t kv_watch_raises(struct kv_dev *d) { return atomic_load(&d->watch_raises); }
uint64_t kv_watch_refusals(struct kv_dev *d) { return atomic_load(&d->watch_refusals); }
uint64_t kv_watch_given_up(struct kv_dev *d) { return atomic_load(&d->watch_given_up); }
uint64_t kv_watch_capped(struct kv_dev *d) { return atomic_load(&d->watch_capped); }
