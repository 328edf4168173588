/* The native fast path as Python sees it: the driver's state and ioctl
 * semantics in C (driver.c), the event ring that hands every command to
 * Python (ring.c), replies held back by an injected latency (delayed.c),
 * and the sessions a C thread answers without ever taking the GIL
 * (sessions.c).  The private state is in internal.h.
 *
 * This header is also the cffi declaration (build.py feeds it to cdef), so
 * it holds only what Python uses, in plain C types cffi can parse.  The
 * KV_EV_* event kinds, KV_FAULT_* modes, KV_RUN_* timings, KV_REG_*
 * registers and KV_DEFAULT_* weights are not defined here: build.py
 * generates them from kvcpu_dev/device/tables.py and regs.py.
 */

#define KV_EV_DATA 96   /* the largest payload: the telemetry reply */
#define KV_EV_REGS 6    /* the most register writes of one command */

/* One command as the device saw it.  `seq` numbers every command the
 * producer took, so a gap in what the consumer reads is a lost event. */
struct kv_event {
    uint64_t seq;
    uint64_t t_ns;       /* CLOCK_MONOTONIC when the command ran */
    uint32_t kind;       /* KV_EV_* */
    uint32_t cmd;        /* the ioctl number as the client passed it */
    int32_t pid;         /* the requester (0: in-process) */
    int32_t err;         /* 0, or the errno the client got */
    uint32_t size;       /* bytes used in data */
    uint32_t nregs;      /* register writes, in the driver's order */
    uint32_t fault;      /* the id of the injected fault that fired, or 0 */
    uint32_t latency_us; /* injected latency, microseconds */
    uint32_t service_ns; /* time the command held the device */
    uint32_t aux;        /* KV_EV_STEPS: the run's detail slot; KV_EV_IOCTL: the
                            madvise advice it came through (KV_MADV_*), 0: the node */
    uint64_t reg_seq;    /* BAR0 write number of regs[0] (1-based) */
    uint8_t data[96];    /* the payload copied in; GET_TELEMETRY: the reply */
    uint32_t reg_off[6];
    uint64_t reg_val[6];
};

/* A KV_EV_STEPS event: `seq`, `t_ns` and `reg_seq` are the run's first
 * command's, `cmd` is STEP_ADVANCE, `pid` the last requester's, and `data`
 * holds this head.  The run took seq .. seq + count - 1. */
struct kv_steps_head {
    uint64_t count;         /* commands in the run */
    uint64_t top;           /* the largest step among them */
    uint64_t last;          /* the last step (STEP_ADVANCE's value after it) */
    uint64_t last_t_ns;     /* when the last one ran */
    uint64_t service_ns;    /* their service times, summed */
};

#define KV_STEPS_TAIL 4096  /* a run's last steps kept, for the register trace */
#define KV_STEPS_BOUNDS 32  /* the most service-time histogram bounds */

struct kv_dev;

/* Injected faults: a rule matches a command (0: any) and fires by count,
 * period or seeded probability (mode: KV_FAULT_*); it answers `err` (0:
 * none, the command runs) after `latency_ns`, which holds back that
 * request's reply and nothing else.  Up to KV_FAULT_MAX rules. */
#define KV_FAULT_MAX 16

struct kv_fault {
    uint32_t id;            /* given by kv_fault_add */
    uint32_t cmd;
    int32_t err;
    uint32_t mode;
    uint64_t n;
    uint64_t prob;
    uint64_t seed;
    uint64_t latency_ns;
    uint64_t seen;          /* matching commands so far */
    uint64_t hits;          /* times it fired */
};

/* What a watcher in another process (the privileged helper's request
 * timeout) may read of a running device without asking it anything: a
 * MAP_SHARED page the daemon made before forking the helper. */
struct kv_shared {
    uint64_t served;        /* requests the sessions answered */
    uint64_t delayed;       /* replies held back by an injected latency now */
    uint64_t delayed_due_ns;/* CLOCK_MONOTONIC when the last of them is due */
};

/* Device state.  `lossless`: when the ring is full, a request waits for
 * room (as a stalled MMIO write would) instead of its event being dropped. */
struct kv_dev *kv_dev_new(uint32_t ring_events, int wake_fd, int lossless);
void kv_dev_free(struct kv_dev *d);
void kv_dev_share(struct kv_dev *d, struct kv_shared *shared);
int kv_dev_ioctl(struct kv_dev *d, uint32_t cmd, const uint8_t *in, size_t insz,
                 uint8_t *out, size_t outsz, int32_t pid);
int kv_dev_store_weight(struct kv_dev *d, uint32_t index, uint32_t value);
void kv_dev_telemetry(struct kv_dev *d, uint8_t *out96);
void kv_dev_bar0(struct kv_dev *d, uint8_t *out4096);

int kv_fault_add(struct kv_dev *d, const struct kv_fault *f);  /* id, or -errno */
int kv_fault_del(struct kv_dev *d, uint32_t id);
void kv_fault_clear(struct kv_dev *d);
size_t kv_fault_list(struct kv_dev *d, struct kv_fault *out, size_t max);
void kv_dev_reset(struct kv_dev *d);
void kv_dev_set_present(struct kv_dev *d, int present);
int kv_dev_present(struct kv_dev *d);
uint64_t kv_dev_resets(struct kv_dev *d);

/* The event ring (single consumer: the Python thread). */
size_t kv_ring_read(struct kv_dev *d, struct kv_event *out, size_t max);
/* The consumer will sleep on the eventfd: seals the open run and ends the
 * grant (a run wakes nobody); returns 1 if events are waiting. */
int kv_ring_arm(struct kv_dev *d);
/* While a flood's runs are coalesced: wake the consumer on the next event
 * (a published run, or whatever ended the grant), without ending it; 0
 * when it has woken by its own timer. */
void kv_ring_watch(struct kv_dev *d, int on);
uint64_t kv_ring_dropped(struct kv_dev *d);
uint64_t kv_ring_depth(struct kv_dev *d);
uint32_t kv_ring_capacity(struct kv_dev *d);
uint64_t kv_ring_head_seq(struct kv_dev *d);   /* the last command taken */
int kv_ring_lossless(struct kv_dev *d);
/* Lossless: at most `events` commands answered and not yet read (0: the
 * ring's capacity), so that a consumer that persists them (a recorder)
 * loses at most that many to a kill. */
void kv_ring_set_backlog(struct kv_dev *d, uint32_t events);
/* Requests that waited for room in a full ring, and for how long in all. */
uint64_t kv_ring_stalls(struct kv_dev *d);
uint64_t kv_ring_stall_ns(struct kv_dev *d);
/* The consumer thread (tid) runs under SCHED_IDLE; once the ring is a
 * quarter full the producer sets it to SCHED_OTHER, and counts it, until the
 * consumer says it lowered itself again. */
void kv_ring_raise_when_behind(struct kv_dev *d, int tid);
void kv_ring_lowered(struct kv_dev *d);
uint64_t kv_ring_raises(struct kv_dev *d);
uint64_t kv_ring_raise_refusals(struct kv_dev *d);  /* no CAP_SYS_NICE */
/* The watcher (watch.c): a thread that answers readers is watched through
 * an fd it polls (-1: none) and/or a mark (NULL: none; three words, see
 * watch.c); a request pending 3 ms while a watched thread is runnable and
 * not running makes every watched thread SCHED_RR until none is (for 20 ms
 * at most, then as long without; a request pending 1 s is given up), then
 * gives each back its `policy` (the consumer's: SCHED_OTHER, raised).  Add threads before
 * kv_watch_start (a slot, or -errno); stopped by kv_watch_stop, or
 * kv_dev_free.  kv_watch_start returns an errno on failure. */
#define KV_WATCH_SLOTS 4
int kv_watch_add(struct kv_dev *d, int fd, int tid, int policy, uint64_t *mark);
int kv_watch_start(struct kv_dev *d);
void kv_watch_stop(struct kv_dev *d);
/* A request waits for the mark's thread or is being served by it (busy=1:
 * the first such call since the last busy=0 sets the time), or none does
 * any more (0). */
void kv_watch_busy(struct kv_dev *d, uint64_t *mark, int busy);
uint64_t kv_watch_raises(struct kv_dev *d);
uint64_t kv_watch_refusals(struct kv_dev *d);   /* no CAP_SYS_NICE */
/* Requests pending 1 s: their thread will not take them (gone, stuck), and
 * they raise nobody until it serves again. */
uint64_t kv_watch_given_up(struct kv_dev *d);
/* Boosts ended at their longest (20 ms), to rest as long. */
uint64_t kv_watch_capped(struct kv_dev *d);
uint64_t kv_dev_served(struct kv_dev *d);

/* Coalescing: while granted, a plain STEP (it succeeds, no fault rule is
 * installed, the step is below `step_limit`) writes no event; it joins the
 * open run, which becomes one KV_EV_STEPS event (its `aux`: where its
 * detail is) when anything else happens or at kv_ring_seal().  Any other
 * command ends the grant.  kv_ring_coalesce grants it (returns 1) only if
 * every event after `seen_seq` is a plain STEP: the consumer's view up to
 * there is what it decided on.  `bounds_ns` (ascending, at most
 * KV_STEPS_BOUNDS) bucket the runs' service times. */
int kv_ring_coalesce(struct kv_dev *d, uint64_t seen_seq, const uint64_t *bounds_ns,
                     size_t nbounds, uint64_t step_limit);
/* Publish the open run, if any; `stop`: and end the grant.  Returns the
 * last command taken: every one up to it is in the ring now, or dropped. */
uint64_t kv_ring_seal(struct kv_dev *d, int stop);
int kv_ring_coalescing(struct kv_dev *d);
uint64_t kv_ring_coalesced(struct kv_dev *d);  /* STEPs that went into runs */
/* A published run's histogram (nbounds + 1 buckets, the last one +Inf) and
 * its last min(count, KV_STEPS_TAIL) steps, oldest first; returns how many
 * steps, and frees the slot for another run.  Read each run's once. */
size_t kv_steps_detail(struct kv_dev *d, uint32_t slot, uint64_t *hist, size_t nhist,
                       uint64_t *steps, size_t nsteps);
size_t kv_steps_bucket(const struct kv_dev *d, uint64_t ns);   /* a run's bucket for ns */

/* The fast-path session: the device file's own FUSE mount, or CUSE. */
struct fuse_session *kv_fast_fuse_new(struct kv_dev *d, const char *mount_opts,
                                      unsigned mode, unsigned uid, unsigned gid);
struct fuse_session *kv_fast_cuse_new(struct kv_dev *d, const char *devname);
/* exit_fd: an eventfd the thread writes when it returns, or -1.  The thread
 * is named "kvcpu-fast" (ps -L, top -H). */
int kv_fast_start(struct kv_dev *d, struct fuse_session *se, unsigned poll_us, int exit_fd);
int kv_fast_ready(struct kv_dev *d);      /* INIT done */
int kv_fast_exited(struct kv_dev *d);     /* the thread returned (session ended) */
/* Replies held by an injected latency go out now, and later ones are not
 * held: the first step of a stop, while the session can still carry them. */
void kv_fast_release_held(struct kv_dev *d);
/* Stop and join the thread (and release what it held). */
void kv_fast_stop(struct kv_dev *d);

/* The device file over FUSE io_uring (uring.c): one queue per possible CPU,
 * a thread pinned to each.  new: /dev/fuse opened, the rings and threads
 * made (0 or an errno in *err); mount: mount(2) of the device file (from a
 * thread other than the one serving the attribute mount it lies in);
 * start: the /dev/fuse reader that answers INIT (io_uring is asked for
 * only if the kernel offers it) and what the rings do not carry.  ready:
 * 1 once INIT is answered and every queue registered, -errno if
 * registering failed; active: the rings carry the requests. */
struct kv_uring;
struct kv_uring *kv_uring_new(struct kv_dev *d, unsigned mode, unsigned uid, unsigned gid, int *err);
int kv_uring_mount(struct kv_uring *u, const char *mountpoint, const char *source, const char *fstype);
int kv_uring_start(struct kv_uring *u, int exit_fd);
int kv_uring_ready(struct kv_uring *u);
int kv_uring_active(struct kv_uring *u);
int kv_uring_exited(struct kv_uring *u);
int kv_uring_queues(struct kv_uring *u);
size_t kv_uring_served(struct kv_uring *u, uint64_t *out, size_t max);  /* per queue, by CPU */
void kv_uring_release_held(struct kv_uring *u);
void kv_uring_stop(struct kv_uring *u);     /* unmount, join every thread */
void kv_uring_free(struct kv_uring *u);
