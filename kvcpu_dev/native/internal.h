/* Private to the native fast path: the device's state, and what ring.c,
 * driver.c, delayed.c and sessions.c share.  Python never sees this file
 * (kvcpu.h is the binding's declaration).
 *
 * Threads and locks.  `lock` covers the driver's state, BAR0, the faults
 * and the ring's producer side, as the driver holds one mutex over a
 * command's state update and register writes.  The ring's consumer side is
 * lock-free: the fast path never waits for Python's thread to take a lock.
 * A producer waits for Python only in lossless mode, when the ring is full,
 * and then without `lock` held (ring.c, kv_ring_wait_room), so Python can
 * always drain.  Lock order: lock, then room_lock or delay_lock; never the
 * other way round.
 */

#ifndef KVCPU_INTERNAL_H
#define KVCPU_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* pthread_setname_np */
#endif
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <linux/kv_cpu.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

#include "kvcpu.h"

/* Two runs' detail: the next run can open while the consumer is still on
 * the last one. */
#define KV_RUN_SLOTS 2

/* Ring slots kept for the consumer's own thread (Python's weight stores,
 * resets and seals), which drains right after it produces: a session
 * thread waits for room before the ring is this close to full. */
#define KV_RING_RESERVE 64

struct kv_run_slot {
    _Atomic int busy;           /* open, or published and not yet read */
    uint64_t count;
    uint64_t hist[KV_STEPS_BOUNDS + 1];
    uint64_t steps[KV_STEPS_TAIL];  /* circular: the run's step i at i % TAIL */
};

struct kv_delayed;              /* delayed.c */

/* delayed.c */

struct kv_dev {
    pthread_mutex_t lock;
    /* the driver's state (telemetry order) */
    uint64_t current_step, step_count, hot_count, evict_count, prefetch_count,
             share_count, last_va, last_len, last_target_step;
    uint32_t w[6];
    uint8_t bar0[4096];
    uint64_t reg_seq;           /* BAR0 writes so far */
    uint64_t ev_seq;            /* commands taken so far (kept, coalesced or dropped) */

    /* the event ring: head written by producers (under lock), tail by the
     * consumer */
    struct kv_event *slots;
    uint32_t cap;               /* a power of two */
    _Atomic uint64_t head, tail, dropped;
    int lossless;
    _Atomic uint32_t backlog;   /* at most this many events waiting (0: the ring's size) */
    int wake_fd;                /* eventfd, or -1 */
    _Atomic int armed;          /* the consumer sleeps: wake it on push */
    _Atomic int consumer_tid;   /* the consumer's thread, to raise (0: none) */
    _Atomic int raised;         /* it was raised and has not lowered itself */
    _Atomic uint64_t raises, raise_refusals;
    /* back-pressure: producers waiting for the consumer to make room */
    pthread_mutex_t room_lock;
    pthread_cond_t room;
    _Atomic int room_waiters;
    _Atomic uint64_t stalls, stall_ns;

    /* coalescing (kv_ring_coalesce): the open run */
    _Atomic int coalesce;       /* granted (read by the consumer without the lock) */
    _Atomic uint64_t break_seq; /* the last event that was not a plain STEP */
    uint64_t step_limit;        /* a STEP at or above it is not plain */
    struct kv_steps_head run;   /* run.count == 0: none open */
    uint64_t run_seq, run_reg_seq, run_t_ns;   /* its first command's */
    int32_t run_pid;
    unsigned run_slot;          /* where its detail goes */
    _Atomic uint64_t coalesced; /* STEPs that went into runs, ever */
    size_t nbounds;
    uint64_t bounds[KV_STEPS_BOUNDS];
    struct kv_run_slot slot[KV_RUN_SLOTS];

    /* the fast-path session */
    struct fuse_session *se;
    pthread_t thread;
    int have_thread;
    unsigned poll_us;
    _Atomic int stop, ready, exited;
    int exit_fd;                /* written when the thread returns, or -1 */
    _Atomic uint64_t served;
    unsigned mode, uid, gid;    /* the FUSE device file's attributes */
    struct kv_shared *shared;   /* what the helper reads, or NULL */

    /* replies held back by an injected latency (delayed.c) */
    pthread_mutex_t delay_lock;
    pthread_cond_t delay_cond;
    struct kv_delayed *delayed; /* by due time */
    uint64_t ndelayed;
    pthread_t delay_thread;
    int have_delay_thread;
    int delay_stop;

    /* the bench: injected faults, resets, surprise removal */
    struct kv_fault faults[KV_FAULT_MAX];
    uint32_t next_fault_id;
    uint32_t nfaults;           /* rules installed: no STEP coalesces then */
    uint64_t resets;
    int present;

    /* the watcher (watch.c): a starved reader's request raises its threads;
     * last, away from the fields each command touches */
    pthread_t watch_thread;
    int have_watch_thread, watch_kick_fd, watch_count;
    _Atomic int watch_stopping;
    struct kv_watch_slot {
        int fd, tid, policy;    /* fd: -1 if none; policy: the thread's own */
        uint64_t *mark;         /* or NULL: [0] busy since (ns), [1] served, [2] kick */
        uint64_t pending_ns;    /* the fd seen readable since (0: not) */
        uint64_t served;        /* mark[1] at the last look */
        int given_up;           /* pending too long: ignored until it serves */
        int stat_fd;            /* its /proc stat, or -1 (or looked at in another slot) */
        clockid_t clock;        /* its CPU clock */
        uint64_t cpu_ns;        /* ... at the last look */
    } watch[KV_WATCH_SLOTS];
    _Atomic uint64_t watch_raises, watch_refusals, watch_given_up, watch_capped;
};

/* The event being built by the command that holds the lock: a slot in the
 * ring, or a scratch copy when the ring is full (then dropped). */
struct kv_pending {
    struct kv_event *ev;
    struct kv_event scratch;
    int kept;
};

/* What a producer owes the consumer once the reply is out (kv_wake()). */
#define KV_WAKE_EVENTFD 1       /* it sleeps on the eventfd, or a request waits for room */
#define KV_WAKE_RAISE 2         /* it falls behind: raise its priority */

/* Who takes a command: a session thread may wait for room (lossless), the
 * consumer's own thread (an in-process call) may not. */
enum kv_caller { KV_CALLER_SESSION, KV_CALLER_CONSUMER };

uint64_t kv_now_ns(void);

/* ring.c */
void kv_ring_make_room(struct kv_dev *d, enum kv_caller who);   /* lock held; may drop and retake it */
void kv_ev_begin(struct kv_dev *d, struct kv_pending *p, uint32_t kind, uint32_t cmd, int32_t pid);
void kv_ev_data(struct kv_pending *p, const void *data, size_t size);
int kv_ev_end(struct kv_dev *d, struct kv_pending *p, int err, int plain);
void kv_wake(struct kv_dev *d, int flags);
/* A STEP a grant may coalesce (its step in *step); whether the open run
 * takes it; and the run's account of it once the driver did its work. */
int kv_plain_step(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz, uint64_t *step);
int kv_run_take(struct kv_dev *d, uint64_t t0, int *wakep);
void kv_run_add(struct kv_dev *d, uint64_t step, int32_t pid, uint64_t t0);
void kv_ring_wake_waiters(struct kv_dev *d);
/* Raise the consumer now (a reader waits for it: watch.c), unless it is
 * raised already; 1 if this call raised it. */
int kv_ring_raise(struct kv_dev *d);

/* watch.c: a mark's thread begins on a request, or a request waits for it
 * (busy=1; 1 if this call set the time: none was pending), or none does
 * any more (0).  kv_watch_busy is this and a kick for the watcher. */
int kv_mark_busy(uint64_t *mark, int busy);

/* driver.c */
void kv_dev_power_on(struct kv_dev *d);
/* One ioctl from `who`: 0 or an errno; `out` gets the reply (GET_TELEMETRY
 * only).  Sets *wakep to what the consumer is owed (kv_wake() it after
 * replying) and *delay_ns to an injected latency for the reply. */
int kv_dev_command(struct kv_dev *d, enum kv_caller who, uint32_t cmd, const uint8_t *in,
                   size_t insz, uint8_t *out, size_t outsz, int32_t pid, int *wakep,
                   uint64_t *delay_ns);

/* sessions.c: a session thread's stop signal, which only ends a blocking
 * call (EINTR) so that the thread sees it should stop. */
#define KV_WAKE_SIGNAL (SIGRTMIN + 5)
int kv_wake_signal_install(void);

/* A hint that came through madvise(2) (madvise.c): advice KV_MADV_*, the
 * caller's arguments as checked; 0 or the errno the call returns.  Sets
 * *wakep and *delay_ns as kv_dev_command does; may wait for room. */
int kv_dev_madvise(struct kv_dev *d, int advice, uint64_t addr, uint64_t len, int32_t pid,
                   int *wakep, uint64_t *delay_ns);

/* delayed.c */
void kv_delayed_init(struct kv_dev *d);
void kv_delayed_free(struct kv_dev *d);
int kv_delayed_start(struct kv_dev *d);
/* Reply to `req` with `err` (and `out` for GET_TELEMETRY) at `due_ns`. */
int kv_delayed_reply(struct kv_dev *d, fuse_req_t req, int err, const uint8_t *out,
                     size_t outsz, uint64_t due_ns);
/* Send every held reply now and end the thread. */
void kv_delayed_stop(struct kv_dev *d);
/* The reply a session owes a request, now. */
void kv_reply(fuse_req_t req, int err, const uint8_t *out, size_t outsz);
void kv_shared_note(struct kv_dev *d);  /* delay_lock held: publish delayed, delayed_due_ns */

#endif
