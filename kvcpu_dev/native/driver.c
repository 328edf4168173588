/* The driver's semantics in C, and the bench's controls over them.
 *
 * kvcpu_dev/device/spec.py is the readable specification of the same
 * semantics; tests/test_fastpath.py ties the two together on random command
 * sequences.  Register offsets and the default weights come from
 * device/regs.py, event kinds and fault modes from device/tables.py
 * (build.py generates the KV_* defines), the command numbers and structs
 * from <linux/kv_cpu.h>.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* -- BAR0 and the state ----------------------------------------------------- */

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

/* `window`: a madvise PREFETCH's lookahead W, written to PREFETCH_WINDOW
 * before the STEP doorbell (NULL: a STEP as the driver makes it). */
static int run_command(struct kv_dev *d, struct kv_pending *p, uint32_t cmd,
                       const uint8_t *in, uint8_t *out, size_t outsz, const uint64_t *window)
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
        if (window != NULL)
            write64(d, p, KV_REG_PREFETCH_WINDOW, *window);
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
        kv_ev_data(p, &u.telemetry, sizeof(u.telemetry));
        return 0;
    default:
        memcpy(&u.block, in, sizeof(u.block));
        return block_command(d, p, cmd, &u.block);
    }
}

/* -- injected faults ---------------------------------------------------------- */

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
        case KV_FAULT_PROBABILITY: hit = (next_random(&f->seed) >> 32) < f->prob; break;
        default: hit = 1; break;
        }
        if (hit && fired == NULL) {
            f->hits++;
            fired = f;
        }
    }
    return fired;
}

/* -- one command ------------------------------------------------------------------ */

/* One command; `aux` and `window` as kv_dev_madvise() gives them (0 and
 * NULL for the node's ioctls). */
static int command(struct kv_dev *d, enum kv_caller who, uint32_t cmd, const uint8_t *in,
                   size_t insz, uint8_t *out, size_t outsz, int32_t pid, uint32_t aux,
                   const uint64_t *window, int *wakep, uint64_t *delay_ns)
{
    struct kv_pending p;
    struct kv_fault *f = NULL;
    int size = payload_size(cmd);
    uint64_t t0, step = 0;
    int err, plain;

    *wakep = 0;
    *delay_ns = 0;
    pthread_mutex_lock(&d->lock);
    /* A hint that came through madvise is never coalesced (a PREFETCH
     * carries its window; every one is its own event, marked). */
    plain = aux == 0 && kv_plain_step(d, cmd, in, insz, &step);
    if (plain && kv_run_take(d, t0 = kv_now_ns(), wakep)) {
        /* The driver's work, and no event: the run accounts for the STEP. */
        set_step(d, step);
        bar0_store(d, KV_REG_STEP_ADVANCE, step);
        kv_run_add(d, step, pid, t0);
        pthread_mutex_unlock(&d->lock);
        return 0;
    }
    kv_ring_make_room(d, who);
    kv_ev_begin(d, &p, KV_EV_IOCTL, cmd, pid);
    p.ev->aux = aux;
    t0 = p.ev->t_ns;
    if (size > 0)
        kv_ev_data(&p, in, insz);
    if (!d->present)
        err = ENODEV;   /* surprise removal: what a gone device answers */
    else if ((f = fire(d, cmd)) != NULL && f->err)
        err = f->err;   /* injected: the command does nothing */
    else if (size < 0)
        err = ENOTTY;
    else if (size > 0 && insz != (size_t)size)
        err = EINVAL;   /* only an unrestricted transport can deliver this */
    else
        err = run_command(d, &p, cmd, in, out, outsz, window);
    if (f != NULL) {
        p.ev->fault = f->id;
        p.ev->latency_us = (uint32_t)(f->latency_ns / 1000u);
        *delay_ns = f->latency_ns;
    }
    p.ev->service_ns = (uint32_t)(kv_now_ns() - t0);
    *wakep = kv_ev_end(d, &p, err, plain);
    pthread_mutex_unlock(&d->lock);
    return err;
}

int kv_dev_command(struct kv_dev *d, enum kv_caller who, uint32_t cmd, const uint8_t *in,
                   size_t insz, uint8_t *out, size_t outsz, int32_t pid, int *wakep,
                   uint64_t *delay_ns)
{
    return command(d, who, cmd, in, insz, out, outsz, pid, 0, NULL, wakep, delay_ns);
}

/* madvise(addr, len, advice) as the RFC's device handler takes it: HOT and
 * EVICT are the driver's MARK_HOT and EVICT on {addr, len, target_step 0};
 * PREFETCH (len = W << 32 | t) is one STEP_ADVANCE to t whose register
 * writes are PREFETCH_WINDOW = W, then the STEP doorbell.  The same fault
 * rules, counters, ring and lock as the ioctls; the event's aux is the
 * advice. */
int kv_dev_madvise(struct kv_dev *d, int advice, uint64_t addr, uint64_t len, int32_t pid,
                   int *wakep, uint64_t *delay_ns)
{
    if (advice == KV_MADV_PREFETCH) {
        struct kv_cpu_step_info st = { .step = (uint32_t)len };
        uint64_t window = len >> 32;

        return command(d, KV_CALLER_SESSION, KV_CPU_STEP_ADVANCE, (const uint8_t *)&st,
                       sizeof(st), NULL, 0, pid, KV_MADV_PREFETCH, &window, wakep, delay_ns);
    }
    struct kv_cpu_block_info b = { .va = addr, .len = len, .target_step = 0 };

    return command(d, KV_CALLER_SESSION, advice == KV_MADV_HOT ? KV_CPU_MARK_HOT : KV_CPU_EVICT,
                   (const uint8_t *)&b, sizeof(b), NULL, 0, pid, (uint32_t)advice, NULL,
                   wakep, delay_ns);
}

/* An in-process call (Python's thread, which is the ring's consumer: it
 * never waits for room).  An injected latency is slept here, in the
 * caller, with nothing held. */
int kv_dev_ioctl(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz,
                 uint8_t *out, size_t outsz, int32_t pid)
{
    int want_wake;
    uint64_t delay_ns;
    int err = kv_dev_command(d, KV_CALLER_CONSUMER, cmd, in, insz, out, outsz, pid,
                             &want_wake, &delay_ns);
    struct timespec ts = { .tv_sec = delay_ns / 1000000000u, .tv_nsec = delay_ns % 1000000000u };

    while (delay_ns && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    if (want_wake)
        kv_wake(d, want_wake);
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
void kv_dev_power_on(struct kv_dev *d)
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

/* A control event (the consumer's thread, lock held): no registers, no
 * payload. */
static void control_event(struct kv_dev *d, uint32_t kind)
{
    struct kv_pending p;

    kv_ev_begin(d, &p, kind, 0, 0);
    int flags = kv_ev_end(d, &p, 0, 0);

    if (flags)
        kv_wake(d, flags);
}

void kv_dev_reset(struct kv_dev *d)
{
    pthread_mutex_lock(&d->lock);
    kv_dev_power_on(d);
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
    kv_ev_begin(d, &p, KV_EV_STORE, index, 0);
    d->w[index] = value;
    kv_ev_data(&p, &value, sizeof(value));
    write_weights(d, &p);
    want_wake = kv_ev_end(d, &p, 0, 0);
    pthread_mutex_unlock(&d->lock);
    if (want_wake)
        kv_wake(d, want_wake);
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
