/* The native fast path (see fastpath.h).
 *
 * The driver's semantics here mirror kvcpu_dev/core.py, the readable
 * specification; tests/test_fastpath.py ties the two together on random
 * command sequences.  Register offsets and the default weights come from
 * kvcpu_dev/regs.py (build.py generates the KV_REG_* and KV_DEFAULT_*
 * defines), the command numbers and structs from <linux/kv_cpu.h>.
 *
 * Threads: the fast-path thread answers requests; Python calls the kv_dev_*
 * and kv_ring_* functions from its own thread (cffi releases the GIL around
 * them).  One mutex covers the state, BAR0 and the ring's producer side, as
 * the driver holds one lock over a command's state update and register
 * writes.  The ring's consumer side is lock-free: the fast path never waits
 * for Python.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* pthread_setname_np */
#endif
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <cuse_lowlevel.h>
#include <linux/kv_cpu.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "fastpath.h"

#define KV_RUN_SLOTS 2

struct kv_run_slot {
    _Atomic int busy;           /* open, or published and not yet read */
    uint64_t count;
    uint64_t hist[KV_STEPS_BOUNDS + 1];
    uint64_t steps[KV_STEPS_TAIL];  /* circular: the run's step i at i % TAIL */
};

struct kv_dev {
    pthread_mutex_t lock;
    /* the driver's state (telemetry order) */
    uint64_t current_step, step_count, hot_count, evict_count, prefetch_count,
             share_count, last_va, last_len, last_target_step;
    uint32_t w[6];
    uint8_t bar0[4096];
    uint64_t reg_seq;           /* BAR0 writes so far */
    uint64_t ev_seq;            /* events made so far (kept or dropped) */

    /* event ring: head written by the producer (under lock), tail by the
     * consumer */
    struct kv_event *slots;
    uint32_t cap;               /* a power of two */
    _Atomic uint64_t head, tail, dropped;
    int wake_fd;                /* eventfd, or -1 */
    _Atomic int armed;          /* the consumer sleeps: wake it on push */
    _Atomic int consumer_tid;   /* the consumer's thread, to raise (0: none) */
    _Atomic int raised;         /* it was raised and has not lowered itself */
    _Atomic uint64_t raises, raise_refusals;

    /* coalescing (kv_ring_coalesce): the open run */
    _Atomic int coalesce;       /* granted (read by the consumer without the lock) */
    _Atomic uint64_t break_seq; /* the last event that was not a plain STEP */
    struct kv_steps_head run;   /* run.count == 0: none open */
    uint64_t run_seq, run_reg_seq, run_t_ns;   /* its first command's */
    int32_t run_pid;
    unsigned run_slot;          /* where its detail goes */
    _Atomic uint64_t coalesced; /* STEPs that went into runs, ever */
    size_t nbounds;
    uint64_t bounds[KV_STEPS_BOUNDS];
    /* A run's detail, from its first STEP until the consumer has read it
     * (kv_steps_detail): two, so the next run can open while the consumer
     * is still on the last one. */
    struct kv_run_slot slot[KV_RUN_SLOTS];

    /* fast-path session */
    struct fuse_session *se;
    pthread_t thread;
    int have_thread;
    unsigned poll_us;
    _Atomic int stop, ready, exited;
    int exit_fd;                /* written when the thread returns, or -1 */
    _Atomic uint64_t served;
    unsigned mode, uid, gid;    /* the FUSE device file's attributes */

    /* the bench: injected faults, resets, surprise removal */
    struct kv_fault faults[KV_FAULT_MAX];
    uint32_t next_fault_id;
    uint32_t nfaults;           /* rules installed: no STEP coalesces then */
    uint64_t resets;
    int present;
};

/* -- the event ring --------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The event being built by the command that holds the lock: a slot in the
 * ring, or a scratch copy when the ring is full (then dropped). */
struct kv_pending {
    struct kv_event *ev;
    struct kv_event scratch;
    int kept;
};

static void publish_run(struct kv_dev *d);

static void ev_begin(struct kv_dev *d, struct kv_pending *p, uint32_t kind,
                     uint32_t cmd, int32_t pid)
{
    uint64_t h, t;

    if (d->run.count)
        publish_run(d);     /* the run came first */
    h = atomic_load_explicit(&d->head, memory_order_relaxed);
    t = atomic_load_explicit(&d->tail, memory_order_acquire);
    p->kept = h - t < d->cap;
    p->ev = p->kept ? &d->slots[h & (d->cap - 1)] : &p->scratch;
    p->ev->seq = ++d->ev_seq;
    p->ev->t_ns = now_ns();
    p->ev->kind = kind;
    p->ev->cmd = cmd;
    p->ev->pid = pid;
    p->ev->err = 0;
    p->ev->size = 0;
    p->ev->nregs = 0;
    p->ev->fault = 0;
    p->ev->latency_us = 0;
    p->ev->service_ns = 0;
    p->ev->reserved = 0;
    p->ev->reg_seq = d->reg_seq + 1;
}

static void ev_data(struct kv_pending *p, const void *data, size_t size)
{
    if (size > KV_EV_DATA)
        size = KV_EV_DATA;
    memcpy(p->ev->data, data, size);
    p->ev->size = (uint32_t)size;
}

/* What the producer owes the consumer once the reply is out (wake()). */
#define KV_WAKE_EVENTFD 1       /* it sleeps on the eventfd */
#define KV_WAKE_RAISE 2         /* it falls behind: raise its priority */

/* KV_WAKE_EVENTFD if the consumer asked to be woken by the next event
 * (kv_ring_arm, kv_ring_watch): once. */
static int consumer_wake(struct kv_dev *d)
{
    return atomic_exchange_explicit(&d->armed, 0, memory_order_acq_rel) ? KV_WAKE_EVENTFD : 0;
}

/* Publish the event; returns KV_WAKE_* flags for wake().  Anything but a
 * plain STEP ends the consumer's grant to coalesce. */
static int ev_end(struct kv_dev *d, struct kv_pending *p, int err, int plain)
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
    /* A quarter full, which a 10 ms drain never lets happen to a single
     * client: the consumer (SCHED_IDLE) is starved by a load that leaves no
     * CPU idle.  It cannot notice by itself, since it does not
     * run; the producer raises it, once, and it lowers itself when quiet
     * (server.PythonPriority). */
    if (h - atomic_load_explicit(&d->tail, memory_order_relaxed) >= d->cap / 4 &&
        atomic_load_explicit(&d->consumer_tid, memory_order_relaxed) &&
        !atomic_exchange_explicit(&d->raised, 1, memory_order_acq_rel))
        flags |= KV_WAKE_RAISE;
    return flags;
}

static void wake(struct kv_dev *d, int flags)
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

void kv_ring_raise_when_behind(struct kv_dev *d, int tid)
{
    atomic_store(&d->consumer_tid, tid);
}

void kv_ring_lowered(struct kv_dev *d)
{
    atomic_store(&d->raised, 0);
}

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
    ev->reserved = d->run_slot;
    memcpy(ev->data, &head, sizeof(head));
    ev->size = sizeof(head);
    atomic_store_explicit(&d->head, h + 1, memory_order_release);
}

/* The STEP the grant covers: it succeeds, fires no fault, and the model
 * reads it without truncating it to 32 bits. */
static int plain_step(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz,
                      uint64_t *step)
{
    struct kv_cpu_step_info info;

    if (cmd != KV_CPU_STEP_ADVANCE || insz != sizeof(info) || !d->present || d->nfaults)
        return 0;
    memcpy(&info, in, sizeof(info));
    *step = info.step;
    return info.step <= 0xFFFFFFFFu;
}

int kv_ring_coalesce(struct kv_dev *d, uint64_t seen_seq, const uint64_t *bounds_ns,
                     size_t nbounds)
{
    int granted;

    /* Not while the consumer sleeps on the eventfd (a run wakes nobody),
     * nor with a break it has not seen; and the consumer, under SCHED_IDLE,
     * never waits for the lock: it asks again at its next look. */
    if (nbounds > KV_STEPS_BOUNDS || atomic_load(&d->armed) || atomic_load(&d->break_seq) > seen_seq)
        return 0;
    if (pthread_mutex_trylock(&d->lock) != 0)
        return 0;
    granted = atomic_load(&d->break_seq) <= seen_seq && !atomic_load(&d->armed);
    if (granted) {  /* not coalescing, so no run is open: the bounds may change */
        memcpy(d->bounds, bounds_ns, nbounds * sizeof(*bounds_ns));
        d->nbounds = nbounds;
    }
    atomic_store_explicit(&d->coalesce, granted, memory_order_relaxed);
    pthread_mutex_unlock(&d->lock);
    return granted;
}

void kv_ring_seal(struct kv_dev *d, int stop)
{
    pthread_mutex_lock(&d->lock);
    if (d->run.count)
        publish_run(d);
    if (stop)
        atomic_store_explicit(&d->coalesce, 0, memory_order_relaxed);
    pthread_mutex_unlock(&d->lock);
}

uint64_t kv_ring_coalesced(struct kv_dev *d) { return atomic_load(&d->coalesced); }

int kv_ring_coalescing(struct kv_dev *d) { return atomic_load(&d->coalesce); }

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

size_t kv_ring_read(struct kv_dev *d, struct kv_event *out, size_t max)
{
    uint64_t t = atomic_load_explicit(&d->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&d->head, memory_order_acquire);
    size_t n = h - t < max ? (size_t)(h - t) : max;

    for (size_t i = 0; i < n; i++)
        out[i] = d->slots[(t + i) & (d->cap - 1)];
    atomic_store_explicit(&d->tail, t + n, memory_order_release);
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
uint64_t kv_dev_served(struct kv_dev *d) { return atomic_load(&d->served); }

uint64_t kv_ring_depth(struct kv_dev *d)
{
    return atomic_load(&d->head) - atomic_load(&d->tail);
}

/* -- the driver's semantics (core.py is the specification) ------------------ */

static void bar0_store(struct kv_dev *d, uint32_t off, uint64_t value)
{
    memcpy(d->bar0 + off, &value, 8);   /* little-endian hosts only, as BAR0 */
    d->reg_seq++;
}

static void write64(struct kv_dev *d, struct kv_pending *p, uint32_t off, uint64_t value)
{
    bar0_store(d, off, value);
    p->ev->reg_off[p->ev->nregs] = off;
    p->ev->reg_val[p->ev->nregs] = value;
    p->ev->nregs++;
}

static const uint32_t weight_regs[6] = {
    KV_REG_WEIGHT_R, KV_REG_WEIGHT_F, KV_REG_WEIGHT_S,
    KV_REG_WEIGHT_D, KV_REG_EVICT_THRESH, KV_REG_PREFETCH_THRESH,
};

static void write_weights(struct kv_dev *d, struct kv_pending *p)
{
    for (int i = 0; i < 6; i++)
        write64(d, p, weight_regs[i], d->w[i]);
}

static void telemetry(struct kv_dev *d, struct kv_cpu_telemetry_info *t)
{
    t->current_step = d->current_step;
    t->step_count = d->step_count;
    t->hot_count = d->hot_count;
    t->evict_count = d->evict_count;
    t->prefetch_count = d->prefetch_count;
    t->share_count = d->share_count;
    t->last_va = d->last_va;
    t->last_len = d->last_len;
    t->last_target_step = d->last_target_step;
    t->w_r = d->w[0];
    t->w_f = d->w[1];
    t->w_s = d->w[2];
    t->w_d = d->w[3];
    t->evict_thresh = d->w[4];
    t->prefetch_thresh = d->w[5];
}

static void set_step(struct kv_dev *d, uint64_t step)
{
    d->current_step = step;
    d->step_count++;
    d->last_target_step = step;
}

/* The histogram bucket of a service time: the first bound >= ns, or +Inf
 * (Prometheus' `le`; the bench's bisect_left). */
size_t kv_steps_bucket(const struct kv_dev *d, uint64_t ns)
{
    size_t b = 0;

    while (b < d->nbounds && ns > d->bounds[b])
        b++;
    return b;
}

/* A run is published at its next STEP once it is KV_RUN_NS old, so the
 * model keeps a decode loop's cadence (server.DRAIN_POLL_S); a flood's run
 * (KV_RUN_FLOOD STEPs or more) only once it is KV_RUN_FLOOD_NS old, so a
 * flood costs Python one run per server.COALESCED_POLL_S. */
#define KV_RUN_NS 10000000u
#define KV_RUN_FLOOD_NS 100000000u

/* A plain STEP under the grant: the driver's work and its register write,
 * no event; it joins the open run (lock held).  Returns 0, untouched, when
 * no slot is free for a new run: the consumer has not read the last two.
 * Sets *wakep when it published the last run to a watching consumer. */
static int coalesce_step(struct kv_dev *d, uint64_t step, int32_t pid, int *wakep)
{
    struct kv_steps_head *r = &d->run;
    struct kv_run_slot *slot;
    uint64_t t0 = now_ns(), ns;

    /* An old run is published for the consumer's periodic drain to find
     * without the lock, if the other slot is free for the next run; if not,
     * the consumer is behind, and the run goes on growing instead. */
    if (r->count && t0 - d->run_t_ns >= (r->count >= KV_RUN_FLOOD ? KV_RUN_FLOOD_NS : KV_RUN_NS) &&
        !atomic_load_explicit(&d->slot[(d->run_slot + 1) % KV_RUN_SLOTS].busy, memory_order_acquire)) {
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
    slot = &d->slot[d->run_slot];
    d->ev_seq++;
    atomic_fetch_add_explicit(&d->coalesced, 1, memory_order_relaxed);
    set_step(d, step);
    bar0_store(d, KV_REG_STEP_ADVANCE, step);
    slot->steps[r->count % KV_STEPS_TAIL] = step;
    if (step > r->top)
        r->top = step;
    r->last = step;
    r->last_t_ns = t0;
    r->count++;
    d->run_pid = pid;
    ns = now_ns() - t0;
    r->service_ns += ns;
    slot->hist[kv_steps_bucket(d, ns)]++;
    return 1;
}

/* A block command: its counter and its register sequence (doorbell last). */
static int block_command(struct kv_dev *d, struct kv_pending *p, uint32_t cmd,
                         const struct kv_cpu_block_info *b)
{
    uint64_t *counter;
    uint32_t regs[3];
    int n = 2;

    switch (cmd) {
    case KV_CPU_MARK_HOT:
        counter = &d->hot_count; regs[0] = KV_REG_BOOST_ADDR; regs[1] = KV_REG_BOOST_LEN;
        break;
    case KV_CPU_EVICT:
        counter = &d->evict_count; regs[0] = KV_REG_IMEVICT_ADDR; regs[1] = KV_REG_IMEVICT_LEN;
        break;
    case KV_CPU_PREFETCH:
        counter = &d->prefetch_count; regs[0] = KV_REG_PREFETCH_ADDR;
        regs[1] = KV_REG_PREFETCH_LEN; regs[2] = KV_REG_PREFETCH_STEP; n = 3;
        break;
    default: /* KV_CPU_SHARE_PREFIX */
        counter = &d->share_count; regs[0] = KV_REG_SHARE_ADDR; regs[1] = KV_REG_SHARE_LEN;
        break;
    }
    if (b->len == 0)
        return EINVAL;
    (*counter)++;
    d->last_va = b->va;
    d->last_len = b->len;
    d->last_target_step = b->target_step;
    uint64_t values[3] = { b->va, b->len, b->target_step };
    for (int i = 0; i < n; i++)
        write64(d, p, regs[i], values[i]);
    return 0;
}

/* The payload size a write-direction command takes, 0 for GET_TELEMETRY,
 * -1 for a command the driver does not know. */
static int payload_size(uint32_t cmd)
{
    switch (cmd) {
    case KV_CPU_STEP_ADVANCE: return sizeof(struct kv_cpu_step_info);
    case KV_CPU_MARK_HOT:
    case KV_CPU_EVICT:
    case KV_CPU_PREFETCH:
    case KV_CPU_SHARE_PREFIX: return sizeof(struct kv_cpu_block_info);
    case KV_CPU_SET_WEIGHTS: return sizeof(struct kv_cpu_weights_info);
    case KV_CPU_GET_TELEMETRY: return 0;
    default: return -1;
    }
}

static int run_command(struct kv_dev *d, struct kv_pending *p, uint32_t cmd,
                       const uint8_t *in, uint8_t *out, size_t outsz)
{
    union {
        struct kv_cpu_step_info step;
        struct kv_cpu_block_info block;
        struct kv_cpu_weights_info weights;
        struct kv_cpu_telemetry_info telemetry;
    } u;

    switch (cmd) {
    case KV_CPU_STEP_ADVANCE:
        memcpy(&u.step, in, sizeof(u.step));
        set_step(d, u.step.step);
        write64(d, p, KV_REG_STEP_ADVANCE, u.step.step);
        return 0;
    case KV_CPU_SET_WEIGHTS:
        memcpy(&u.weights, in, sizeof(u.weights));
        memcpy(d->w, &u.weights, sizeof(d->w));
        write_weights(d, p);
        return 0;
    case KV_CPU_GET_TELEMETRY:
        telemetry(d, &u.telemetry);
        if (outsz > sizeof(u.telemetry))
            outsz = sizeof(u.telemetry);
        memcpy(out, &u.telemetry, outsz);
        ev_data(p, &u.telemetry, sizeof(u.telemetry));
        return 0;
    default:
        memcpy(&u.block, in, sizeof(u.block));
        return block_command(d, p, cmd, &u.block);
    }
}

/* xorshift64*: a fault's own seeded stream, so a run is reproducible. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* The first rule that fires for `cmd`, or NULL.  Every matching rule
 * counts the command as seen, fired or not. */
static struct kv_fault *fire(struct kv_dev *d, uint32_t cmd)
{
    struct kv_fault *fired = NULL;

    for (int i = 0; i < KV_FAULT_MAX; i++) {
        struct kv_fault *f = &d->faults[i];
        int hit;

        if (f->id == 0 || (f->cmd != 0 && f->cmd != cmd))
            continue;
        f->seen++;
        switch (f->mode) {
        case KV_FAULT_COUNT: hit = f->hits < f->n; break;
        case KV_FAULT_EVERY: hit = f->n && f->seen % f->n == 0; break;
        case KV_FAULT_PROB: hit = (next_random(&f->seed) >> 32) < f->prob; break;
        default: hit = 1; break;
        }
        if (hit && fired == NULL) {
            f->hits++;
            fired = f;
        }
    }
    return fired;
}

/* One ioctl: 0 or an errno; `out` gets the reply (GET_TELEMETRY only).
 * Sets *wake when the consumer asked to be woken (do it after replying),
 * and *delay_ns to an injected latency (slept outside the lock). */
static int dev_ioctl(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz,
                     uint8_t *out, size_t outsz, int32_t pid, int *wakep, uint64_t *delay_ns)
{
    struct kv_pending p;
    struct kv_fault *f = NULL;
    int size = payload_size(cmd);
    uint64_t t0, step;
    int err, plain;

    pthread_mutex_lock(&d->lock);
    plain = plain_step(d, cmd, in, insz, &step);
    *wakep = 0;
    if (plain && atomic_load_explicit(&d->coalesce, memory_order_relaxed) &&
        coalesce_step(d, step, pid, wakep)) {
        pthread_mutex_unlock(&d->lock);
        *delay_ns = 0;
        return 0;
    }
    ev_begin(d, &p, KV_EV_IOCTL, cmd, pid);
    t0 = p.ev->t_ns;
    if (size > 0)
        ev_data(&p, in, insz);
    if (!d->present)
        err = ENODEV;   /* surprise removal: what a gone device answers */
    else if ((f = fire(d, cmd)) != NULL && f->err)
        err = f->err;   /* injected: the command does nothing */
    else if (size < 0)
        err = ENOTTY;
    else if (size > 0 && insz != (size_t)size)
        err = EINVAL;   /* only an unrestricted transport can deliver this */
    else
        err = run_command(d, &p, cmd, in, out, outsz);
    *delay_ns = 0;
    if (f != NULL) {
        p.ev->fault = f->id;
        p.ev->latency_us = (uint32_t)(f->latency_ns / 1000u);
        *delay_ns = f->latency_ns;
    }
    p.ev->service_ns = (uint32_t)(now_ns() - t0);
    *wakep = ev_end(d, &p, err, plain);
    pthread_mutex_unlock(&d->lock);
    return err;
}

static void delay(uint64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u };

    while (ns && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int kv_dev_ioctl(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz,
                 uint8_t *out, size_t outsz, int32_t pid)
{
    int want_wake;
    uint64_t delay_ns;
    int err = dev_ioctl(d, cmd, in, insz, out, outsz, pid, &want_wake, &delay_ns);

    delay(delay_ns);
    if (want_wake)
        wake(d, want_wake);
    return err;
}

/* -- the bench's controls --------------------------------------------------- */

int kv_fault_add(struct kv_dev *d, const struct kv_fault *f)
{
    int id = -ENOSPC;

    if (f->mode < KV_FAULT_COUNT || f->mode > KV_FAULT_ALWAYS || f->err < 0 || f->err > 4095)
        return -EINVAL;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < KV_FAULT_MAX; i++) {
        if (d->faults[i].id == 0) {
            d->faults[i] = *f;
            d->faults[i].id = ++d->next_fault_id;
            d->faults[i].seen = d->faults[i].hits = 0;
            id = (int)d->faults[i].id;
            d->nfaults++;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return id;
}

int kv_fault_del(struct kv_dev *d, uint32_t id)
{
    int err = ENOENT;

    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < KV_FAULT_MAX; i++) {
        if (id != 0 && d->faults[i].id == id) {
            memset(&d->faults[i], 0, sizeof(d->faults[i]));
            d->nfaults--;
            err = 0;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return err;
}

void kv_fault_clear(struct kv_dev *d)
{
    pthread_mutex_lock(&d->lock);
    memset(d->faults, 0, sizeof(d->faults));
    d->nfaults = 0;
    pthread_mutex_unlock(&d->lock);
}

size_t kv_fault_list(struct kv_dev *d, struct kv_fault *out, size_t max)
{
    size_t n = 0;

    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < KV_FAULT_MAX && n < max; i++)
        if (d->faults[i].id)
            out[n++] = d->faults[i];
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* The driver's state at load (and after a function-level reset). */
static void power_on_state(struct kv_dev *d)
{
    d->current_step = d->step_count = d->hot_count = d->evict_count = 0;
    d->prefetch_count = d->share_count = d->last_va = d->last_len = 0;
    d->last_target_step = 0;
    d->w[0] = KV_DEFAULT_W_R;
    d->w[1] = KV_DEFAULT_W_F;
    d->w[2] = KV_DEFAULT_W_S;
    d->w[3] = KV_DEFAULT_W_D;
    d->w[4] = KV_DEFAULT_EVICT_THRESH;
    d->w[5] = KV_DEFAULT_PREFETCH_THRESH;
    memset(d->bar0, 0, sizeof(d->bar0));
}

/* A control event (call with the lock held): no registers, no payload. */
static void control_event(struct kv_dev *d, uint32_t kind)
{
    struct kv_pending p;

    ev_begin(d, &p, kind, 0, 0);
    int flags = ev_end(d, &p, 0, 0);

    if (flags)
        wake(d, flags);
}

void kv_dev_reset(struct kv_dev *d)
{
    pthread_mutex_lock(&d->lock);
    power_on_state(d);
    d->resets++;
    control_event(d, KV_EV_RESET);
    pthread_mutex_unlock(&d->lock);
}

void kv_dev_set_present(struct kv_dev *d, int present)
{
    pthread_mutex_lock(&d->lock);
    if (d->present != !!present) {
        d->present = !!present;
        control_event(d, present ? KV_EV_REPLUG : KV_EV_UNPLUG);
    }
    pthread_mutex_unlock(&d->lock);
}

int kv_dev_present(struct kv_dev *d) { return d->present; }
uint64_t kv_dev_resets(struct kv_dev *d) { return d->resets; }

int kv_dev_store_weight(struct kv_dev *d, uint32_t index, uint32_t value)
{
    struct kv_pending p;
    int want_wake;

    if (index >= 6)
        return EINVAL;
    pthread_mutex_lock(&d->lock);
    ev_begin(d, &p, KV_EV_STORE, index, 0);
    d->w[index] = value;
    ev_data(&p, &value, sizeof(value));
    write_weights(d, &p);
    want_wake = ev_end(d, &p, 0, 0);
    pthread_mutex_unlock(&d->lock);
    if (want_wake)
        wake(d, want_wake);
    return 0;
}

void kv_dev_telemetry(struct kv_dev *d, uint8_t *out96)
{
    struct kv_cpu_telemetry_info t;
    pthread_mutex_lock(&d->lock);
    telemetry(d, &t);
    pthread_mutex_unlock(&d->lock);
    memcpy(out96, &t, sizeof(t));
}

void kv_dev_bar0(struct kv_dev *d, uint8_t *out4096)
{
    pthread_mutex_lock(&d->lock);
    memcpy(out4096, d->bar0, sizeof(d->bar0));
    pthread_mutex_unlock(&d->lock);
}

struct kv_dev *kv_dev_new(uint32_t ring_events, int wake_fd)
{
    struct kv_dev *d = calloc(1, sizeof(*d));
    uint32_t cap = 1;

    if (d == NULL)
        return NULL;
    while (cap < ring_events && cap < (1u << 24))
        cap <<= 1;
    d->slots = calloc(cap, sizeof(struct kv_event));
    if (d->slots == NULL) {
        free(d);
        return NULL;
    }
    d->cap = cap;
    pthread_mutex_init(&d->lock, NULL);
    power_on_state(d);
    d->present = 1;
    d->wake_fd = wake_fd;
    d->exit_fd = -1;
    return d;
}

void kv_dev_free(struct kv_dev *d)
{
    if (d == NULL)
        return;
    kv_fast_stop(d);
    pthread_mutex_destroy(&d->lock);
    free(d->slots);
    free(d);
}

/* -- the fast-path session -------------------------------------------------- */

static struct kv_dev *dev_of(fuse_req_t req) { return fuse_req_userdata(req); }

static void answer_ioctl(fuse_req_t req, uint32_t cmd, const void *in_buf,
                         size_t in_bufsz, size_t out_bufsz)
{
    struct kv_dev *d = dev_of(req);
    uint8_t out[sizeof(struct kv_cpu_telemetry_info)];
    size_t outsz = out_bufsz < sizeof(out) ? out_bufsz : sizeof(out);
    int want_wake;
    uint64_t delay_ns;
    int err = dev_ioctl(d, cmd, in_buf, in_bufsz, out, outsz, fuse_req_ctx(req)->pid,
                        &want_wake, &delay_ns);

    delay(delay_ns);    /* an injected latency holds this request, not the lock */
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_ioctl(req, 0, cmd == KV_CPU_GET_TELEMETRY ? out : NULL,
                         cmd == KV_CPU_GET_TELEMETRY ? outsz : 0);
    if (want_wake)
        wake(d, want_wake);     /* after the reply: the client goes first */
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

/* FUSE: a file system whose root is the device file itself, mounted on
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

static void fast_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if (!dev_of(req)->present) {
        fuse_reply_err(req, ENODEV);
        return;
    }
    fi->fh = 0;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

static void fast_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    (void)ino; (void)size; (void)off; (void)fi;
    fuse_reply_err(req, EINVAL);    /* the driver has no read() */
}

static void fast_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                       off_t off, struct fuse_file_info *fi)
{
    (void)ino; (void)buf; (void)size; (void)off; (void)fi;
    fuse_reply_err(req, EINVAL);    /* nor write() */
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

/* CUSE: the real character device. */

static void cuse_open(fuse_req_t req, struct fuse_file_info *fi)
{
    if (!dev_of(req)->present) {
        fuse_reply_err(req, ENODEV);
        return;
    }
    fi->fh = 0;
    fi->direct_io = 1;
    fuse_reply_open(req, fi);
}

static void cuse_read(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)size; (void)off; (void)fi;
    fuse_reply_err(req, EINVAL);
}

static void cuse_write(fuse_req_t req, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)buf; (void)size; (void)off; (void)fi;
    fuse_reply_err(req, EINVAL);
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

/* The thread's name (at most 15 characters), as ps -L, top -H and perf show it. */
#define KV_FAST_THREAD_NAME "kvcpu-fast"

/* The stop signal only interrupts the thread's blocking read. */
#define KV_WAKE_SIGNAL (SIGRTMIN + 5)

static void on_wake_signal(int sig) { (void)sig; }

/* After a reply, watch the descriptor for up to poll_us before blocking
 * again: a burst is then served without a wake-up. */
static void spin(struct kv_dev *d, int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    uint64_t until = now_ns() + (uint64_t)d->poll_us * 1000u;

    while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
        if (poll(&pfd, 1, 0) != 0 || now_ns() >= until)
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
        atomic_fetch_add_explicit(&d->served, 1, memory_order_relaxed);
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
    struct sigaction sa;
    sigset_t all, old;
    int err;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_wake_signal;     /* no SA_RESTART: read() returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(KV_WAKE_SIGNAL, &sa, NULL) != 0)
        return errno;
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

void kv_fast_stop(struct kv_dev *d)
{
    if (!d->have_thread)
        return;
    atomic_store(&d->stop, 1);
    /* The signal may land just before the thread blocks again: repeat it
     * until the thread is gone. */
    while (!atomic_load(&d->exited)) {
        pthread_kill(d->thread, KV_WAKE_SIGNAL);
        usleep(1000);
    }
    pthread_join(d->thread, NULL);
    d->have_thread = 0;
}
