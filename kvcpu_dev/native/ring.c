/* The event ring: every command the device took, in order, for the one
 * consumer (the daemon's Python thread), and the runs of plain STEPs the
 * fast path coalesces into one event while the consumer allows it.
 *
 * The producers (session threads, and the consumer's own thread for
 * weight stores, resets and in-process calls) publish under the device's
 * lock; the consumer reads without it.  When the ring is full a lossy
 * device drops the event and counts it; a lossless one (the default) makes
 * a session's request wait until the consumer has made room, as a CPU's
 * MMIO write stalls while a device's command queue is full.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>


uint64_t kv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t used(struct kv_dev *d)
{
    return atomic_load(&d->head) - atomic_load(&d->tail);
}

/* ``whole``, or less while a listener bounds the backlog
 * (kv_ring_set_backlog). */
static uint64_t bounded(struct kv_dev *d, uint64_t whole)
{
    uint32_t backlog = atomic_load_explicit(&d->backlog, memory_order_relaxed);

    return backlog && backlog < whole ? backlog : whole;
}

/* The slots a session's request may fill: all but the consumer's reserve. */
static uint64_t session_limit(struct kv_dev *d)
{
    uint32_t reserve = d->cap >= 4 * KV_RING_RESERVE ? KV_RING_RESERVE : d->cap / 4;

    return bounded(d, d->cap - reserve);
}

static void publish_run(struct kv_dev *d);

/* -- back-pressure ------------------------------------------------------------- */

static int consumer_wake(struct kv_dev *d);

/* Raise the consumer (SCHED_IDLE) once, until it says it lowered itself. */
static int want_raise(struct kv_dev *d)
{
    return atomic_load_explicit(&d->consumer_tid, memory_order_relaxed) &&
           !atomic_exchange_explicit(&d->raised, 1, memory_order_acq_rel);
}

/* Wait, without the device's lock, until `need` events fit under `limit`
 * or the device stops.  The consumer is woken and raised first: it may be
 * asleep on its timer, or starved under SCHED_IDLE by the very load that
 * filled the ring. */
static void wait_room(struct kv_dev *d, uint64_t need, uint64_t limit)
{
    uint64_t t0 = kv_now_ns();
    struct timespec until;

    atomic_fetch_add_explicit(&d->stalls, 1, memory_order_relaxed);
    kv_wake(d, KV_WAKE_EVENTFD | (want_raise(d) ? KV_WAKE_RAISE : 0));
    pthread_mutex_lock(&d->room_lock);
    atomic_fetch_add(&d->room_waiters, 1);      /* seq_cst: before re-reading tail */
    while (used(d) + need > limit && !atomic_load(&d->stop)) {
        /* A bounded wait: a wake-up lost to a race costs 20 ms, not a hang. */
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 20000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&d->room, &d->room_lock, &until);
    }
    atomic_fetch_sub(&d->room_waiters, 1);
    pthread_mutex_unlock(&d->room_lock);
    atomic_fetch_add_explicit(&d->stall_ns, kv_now_ns() - t0, memory_order_relaxed);
}

void kv_ring_wake_waiters(struct kv_dev *d)
{
    if (atomic_load(&d->room_waiters)) {        /* seq_cst: after the tail moved */
        pthread_mutex_lock(&d->room_lock);
        pthread_cond_broadcast(&d->room);
        pthread_mutex_unlock(&d->room_lock);
    }
}

void kv_ring_make_room(struct kv_dev *d, enum kv_caller who)
{
    /* The consumer cannot wait for itself: it uses the reserve, and what
     * still does not fit is dropped and counted as in a lossy ring. */
    if (!d->lossless || who == KV_CALLER_CONSUMER)
        return;
    for (;;) {
        uint64_t need = d->run.count ? 2 : 1;  /* an open run is published first */

        if (used(d) + need <= session_limit(d) || atomic_load(&d->stop))
            return;
        pthread_mutex_unlock(&d->lock);
        wait_room(d, need, session_limit(d));
        pthread_mutex_lock(&d->lock);
    }
}

/* -- publishing events ------------------------------------------------------------- */

void kv_ev_begin(struct kv_dev *d, struct kv_pending *p, uint32_t kind, uint32_t cmd, int32_t pid)
{
    uint64_t h, t;

    if (d->run.count)
        publish_run(d);     /* the run came first */
    h = atomic_load_explicit(&d->head, memory_order_relaxed);
    t = atomic_load_explicit(&d->tail, memory_order_acquire);
    p->kept = h - t < d->cap;
    p->ev = p->kept ? &d->slots[h & (d->cap - 1)] : &p->scratch;
    p->ev->seq = ++d->ev_seq;
    p->ev->t_ns = kv_now_ns();
    p->ev->kind = kind;
    p->ev->cmd = cmd;
    p->ev->pid = pid;
    p->ev->err = 0;
    p->ev->size = 0;
    p->ev->nregs = 0;
    p->ev->fault = 0;
    p->ev->latency_us = 0;
    p->ev->service_ns = 0;
    p->ev->aux = 0;
    p->ev->reg_seq = d->reg_seq + 1;
}

void kv_ev_data(struct kv_pending *p, const void *data, size_t size)
{
    if (size > KV_EV_DATA)
        size = KV_EV_DATA;
    memcpy(p->ev->data, data, size);
    p->ev->size = (uint32_t)size;
}

/* KV_WAKE_EVENTFD if the consumer asked to be woken by the next event
 * (kv_ring_arm, kv_ring_watch): once. */
static int consumer_wake(struct kv_dev *d)
{
    return atomic_exchange_explicit(&d->armed, 0, memory_order_acq_rel) ? KV_WAKE_EVENTFD : 0;
}

/* Publish the event; returns KV_WAKE_* flags for kv_wake().  Anything but
 * a plain STEP ends the consumer's grant to coalesce. */
int kv_ev_end(struct kv_dev *d, struct kv_pending *p, int err, int plain)
{
    uint64_t h;
    int flags;

    p->ev->err = err;
    if (!plain) {
        atomic_store_explicit(&d->break_seq, p->ev->seq, memory_order_relaxed);
        atomic_store_explicit(&d->coalesce, 0, memory_order_relaxed);
    }
    if (!p->kept) {
        atomic_fetch_add_explicit(&d->dropped, 1, memory_order_relaxed);
        return 0;
    }
    h = atomic_load_explicit(&d->head, memory_order_relaxed) + 1;
    atomic_store_explicit(&d->head, h, memory_order_release);
    flags = consumer_wake(d);
    /* A quarter full (of the ring, or of a listener's backlog), which a
     * 10 ms drain never lets happen to a single client:
     * the consumer (SCHED_IDLE) is starved by a load that leaves no CPU
     * idle.  It cannot notice by itself, since it does not run; the
     * producer raises it, once, and it lowers itself when quiet
     * (driver/priority.py). */
    if (h - atomic_load_explicit(&d->tail, memory_order_relaxed) >= bounded(d, d->cap) / 4 && want_raise(d))
        flags |= KV_WAKE_RAISE;
    return flags;
}

void kv_wake(struct kv_dev *d, int flags)
{
    if (flags & KV_WAKE_EVENTFD && d->wake_fd >= 0)
        (void)eventfd_write(d->wake_fd, 1);
    if (flags & KV_WAKE_RAISE) {
        struct sched_param normal = { .sched_priority = 0 };

        /* Refused without CAP_SYS_NICE (a container, --runas): counted, and
         * not retried until the consumer says it lowered itself. */
        if (sched_setscheduler(atomic_load(&d->consumer_tid), SCHED_OTHER, &normal) == 0)
            atomic_fetch_add_explicit(&d->raises, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&d->raise_refusals, 1, memory_order_relaxed);
    }
}

int kv_ring_raise(struct kv_dev *d)
{
    if (!want_raise(d))
        return 0;
    kv_wake(d, KV_WAKE_RAISE);
    return 1;
}

void kv_ring_raise_when_behind(struct kv_dev *d, int tid) { atomic_store(&d->consumer_tid, tid); }
void kv_ring_lowered(struct kv_dev *d) { atomic_store(&d->raised, 0); }
uint64_t kv_ring_raises(struct kv_dev *d) { return atomic_load(&d->raises); }
uint64_t kv_ring_raise_refusals(struct kv_dev *d) { return atomic_load(&d->raise_refusals); }

/* -- coalesced runs of STEPs ------------------------------------------------ */

/* The open run becomes one KV_EV_STEPS event (lock held), in order: it
 * came after everything in the ring.  Its detail stays in its slot until
 * the consumer reads it; a run the full ring drops frees its slot.  Waking
 * a watching consumer is the caller's (consumer_wake), after the reply. */
static void publish_run(struct kv_dev *d)
{
    uint64_t h = atomic_load_explicit(&d->head, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&d->tail, memory_order_acquire);
    struct kv_run_slot *slot = &d->slot[d->run_slot];
    struct kv_steps_head head = d->run;

    slot->count = head.count;
    d->run.count = 0;
    if (h - t >= d->cap) {
        atomic_fetch_add_explicit(&d->dropped, head.count, memory_order_relaxed);
        atomic_store_explicit(&slot->busy, 0, memory_order_relaxed);
        return;
    }
    struct kv_event *ev = &d->slots[h & (d->cap - 1)];

    memset(ev, 0, sizeof(*ev));
    ev->seq = d->run_seq;
    ev->t_ns = d->run_t_ns;
    ev->kind = KV_EV_STEPS;
    ev->cmd = KV_CPU_STEP_ADVANCE;
    ev->pid = d->run_pid;
    ev->reg_seq = d->run_reg_seq;
    ev->aux = d->run_slot;
    memcpy(ev->data, &head, sizeof(head));
    ev->size = sizeof(head);
    atomic_store_explicit(&d->head, h + 1, memory_order_release);
}

/* The STEP a grant covers: it succeeds, fires no fault, and is below the
 * limit the consumer granted (the model's next deadline, or 2^32: the
 * directory's 32-bit step field). */
int kv_plain_step(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz, uint64_t *step)
{
    struct kv_cpu_step_info info;

    if (cmd != KV_CPU_STEP_ADVANCE || insz != sizeof(info) || !d->present || d->nfaults)
        return 0;
    memcpy(&info, in, sizeof(info));
    *step = info.step;
    return info.step < d->step_limit;
}

int kv_ring_coalesce(struct kv_dev *d, uint64_t seen_seq, const uint64_t *bounds_ns,
                     size_t nbounds, uint64_t step_limit)
{
    int granted;

    /* Not while the consumer sleeps on the eventfd (a run wakes nobody),
     * nor with a break it has not seen; and the consumer, under SCHED_IDLE,
     * never waits for the lock: it asks again at its next look. */
    if (nbounds > KV_STEPS_BOUNDS || step_limit == 0 || atomic_load(&d->armed) ||
        atomic_load(&d->break_seq) > seen_seq)
        return 0;
    if (pthread_mutex_trylock(&d->lock) != 0)
        return 0;
    granted = atomic_load(&d->break_seq) <= seen_seq && !atomic_load(&d->armed);
    if (granted) {  /* not coalescing, so no run is open: the bounds may change */
        memcpy(d->bounds, bounds_ns, nbounds * sizeof(*bounds_ns));
        d->nbounds = nbounds;
        d->step_limit = step_limit;
    }
    atomic_store_explicit(&d->coalesce, granted, memory_order_relaxed);
    pthread_mutex_unlock(&d->lock);
    return granted;
}

uint64_t kv_ring_seal(struct kv_dev *d, int stop)
{
    uint64_t seq;

    pthread_mutex_lock(&d->lock);
    if (d->run.count)
        publish_run(d);
    if (stop)
        atomic_store_explicit(&d->coalesce, 0, memory_order_relaxed);
    seq = d->ev_seq;
    pthread_mutex_unlock(&d->lock);
    return seq;
}

uint64_t kv_ring_coalesced(struct kv_dev *d) { return atomic_load(&d->coalesced); }
int kv_ring_coalescing(struct kv_dev *d) { return atomic_load(&d->coalesce); }

/* The histogram bucket of a service time: the first bound >= ns, or +Inf
 * (Prometheus' `le`; the bench's bisect_left). */
size_t kv_steps_bucket(const struct kv_dev *d, uint64_t ns)
{
    size_t b = 0;

    while (b < d->nbounds && ns > d->bounds[b])
        b++;
    return b;
}

/* Whether a plain STEP goes into the open run (lock held): the consumer
 * granted coalescing and a slot is free for the run (the consumer has not
 * left the last two unread).  If so the caller does the driver's work and
 * then kv_run_add(); if not, the STEP is an event like any other.  Sets
 * *wakep when it published the last run to a watching consumer.
 *
 * A run is published at its next STEP once it is KV_RUN_NS old, so the
 * model keeps a decode loop's cadence; a flood's run (KV_RUN_FLOOD STEPs or
 * more) only once it is KV_RUN_FLOOD_NS old, so a flood costs Python one
 * event per KV_RUN_FLOOD_NS. */
int kv_run_take(struct kv_dev *d, uint64_t t0, int *wakep)
{
    struct kv_steps_head *r = &d->run;

    if (!atomic_load_explicit(&d->coalesce, memory_order_relaxed))
        return 0;
    /* An old run is published for the consumer's periodic drain to find
     * without the lock, if the other slot is free for the next run and the
     * ring has room; if not, the consumer is behind, and the run goes on
     * growing instead. */
    if (r->count && t0 - d->run_t_ns >= (r->count >= KV_RUN_FLOOD ? KV_RUN_FLOOD_NS : KV_RUN_NS) &&
        !atomic_load_explicit(&d->slot[(d->run_slot + 1) % KV_RUN_SLOTS].busy, memory_order_acquire) &&
        used(d) < session_limit(d)) {
        publish_run(d);
        *wakep = consumer_wake(d);
    }
    if (r->count == 0) {
        unsigned i = 0;

        while (i < KV_RUN_SLOTS && atomic_load_explicit(&d->slot[i].busy, memory_order_acquire))
            i++;
        if (i == KV_RUN_SLOTS)
            return 0;
        d->run_slot = i;
        atomic_store_explicit(&d->slot[i].busy, 1, memory_order_relaxed);
        memset(d->slot[i].hist, 0, sizeof(d->slot[i].hist));
        d->run_seq = d->ev_seq + 1;
        d->run_reg_seq = d->reg_seq + 1;
        d->run_t_ns = t0;
        r->top = 0;
        r->service_ns = 0;
    }
    return 1;
}

/* A STEP the run took (kv_run_take), once the driver has done its work:
 * its step, requester and service time, in the run's place of an event. */
void kv_run_add(struct kv_dev *d, uint64_t step, int32_t pid, uint64_t t0)
{
    struct kv_steps_head *r = &d->run;
    struct kv_run_slot *slot = &d->slot[d->run_slot];
    uint64_t ns = kv_now_ns() - t0;

    d->ev_seq++;
    atomic_fetch_add_explicit(&d->coalesced, 1, memory_order_relaxed);
    slot->steps[r->count % KV_STEPS_TAIL] = step;
    if (step > r->top)
        r->top = step;
    r->last = step;
    r->last_t_ns = t0;
    r->count++;
    d->run_pid = pid;
    r->service_ns += ns;
    slot->hist[kv_steps_bucket(d, ns)]++;
}

/* Lock-free: a published run's slot is the consumer's until it frees it
 * here (the ring's release of the event covers the slot's contents).  The
 * consumer thread runs under SCHED_IDLE: preempted while holding the lock,
 * it would stall every client behind a load that leaves no CPU idle. */
size_t kv_steps_detail(struct kv_dev *d, uint32_t slot, uint64_t *hist, size_t nhist,
                       uint64_t *steps, size_t nsteps)
{
    struct kv_run_slot *r = &d->slot[slot % KV_RUN_SLOTS];
    size_t n = r->count < KV_STEPS_TAIL ? (size_t)r->count : KV_STEPS_TAIL;

    if (nhist > KV_STEPS_BOUNDS + 1)
        nhist = KV_STEPS_BOUNDS + 1;
    memcpy(hist, r->hist, nhist * sizeof(*hist));
    if (n > nsteps)
        n = nsteps;
    for (size_t i = 0; i < n; i++)
        steps[i] = r->steps[(r->count - n + i) % KV_STEPS_TAIL];
    atomic_store_explicit(&r->busy, 0, memory_order_release);
    return n;
}

/* -- the consumer's side -------------------------------------------------------------- */

size_t kv_ring_read(struct kv_dev *d, struct kv_event *out, size_t max)
{
    uint64_t t = atomic_load_explicit(&d->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&d->head, memory_order_acquire);
    size_t n = h - t < max ? (size_t)(h - t) : max;

    for (size_t i = 0; i < n; i++)
        out[i] = d->slots[(t + i) & (d->cap - 1)];
    atomic_store(&d->tail, t + n);      /* seq_cst: then look for waiters */
    if (n)
        kv_ring_wake_waiters(d);
    return n;
}

void kv_ring_watch(struct kv_dev *d, int on)
{
    atomic_store_explicit(&d->armed, on, memory_order_seq_cst);
}

int kv_ring_arm(struct kv_dev *d)
{
    kv_ring_seal(d, 1);
    atomic_store_explicit(&d->armed, 1, memory_order_seq_cst);
    return atomic_load_explicit(&d->head, memory_order_seq_cst) !=
           atomic_load_explicit(&d->tail, memory_order_relaxed);
}

uint64_t kv_ring_dropped(struct kv_dev *d) { return atomic_load(&d->dropped); }
uint32_t kv_ring_capacity(struct kv_dev *d) { return d->cap; }
uint64_t kv_ring_depth(struct kv_dev *d) { return used(d); }
int kv_ring_lossless(struct kv_dev *d) { return d->lossless; }

void kv_ring_set_backlog(struct kv_dev *d, uint32_t events)
{
    atomic_store(&d->backlog, events);
    kv_ring_wake_waiters(d);    /* a larger bound lets waiting requests on */
}
uint64_t kv_ring_stalls(struct kv_dev *d) { return atomic_load(&d->stalls); }
uint64_t kv_ring_stall_ns(struct kv_dev *d) { return atomic_load(&d->stall_ns); }
uint64_t kv_dev_served(struct kv_dev *d) { return atomic_load(&d->served); }

uint64_t kv_ring_head_seq(struct kv_dev *d)
{
    uint64_t seq;

    pthread_mutex_lock(&d->lock);
    seq = d->ev_seq;
    pthread_mutex_unlock(&d->lock);
    return seq;
}
