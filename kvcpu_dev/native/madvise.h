/* madvise(MADV_KV_HOT/EVICT/PREFETCH) on a stock kernel, through seccomp
 * user notification: `kvcpu-dev run -- CMD` (daemon/run.py).
 *
 * Two halves:
 *  - the launcher (launch.c), in the `run` process: forks a child that
 *    installs a filter sending madvise(addr, len, 104|105|106) to a listener
 *    fd and allowing every other system call, hands the listener back, and
 *    execs CMD on the word;
 *  - the supervisor (madvise.c), one thread in the daemon ("kvcpu-madv"):
 *    serves every listener handed to it, checks each call as the RFC says
 *    (unaligned start: EINVAL; len == 0 for HOT/EVICT: EINVAL; first page
 *    not mapped: EFAULT), and gives the valid ones to the driver
 *    (kv_dev_madvise in driver.c: the same lock, faults, counters, ring and
 *    register writes as the node's ioctls); the driver's answer is the
 *    caller's.
 *
 * The advice values KV_MADV_HOT/EVICT/PREFETCH are generated from
 * device/tables.py (Advice).  Like kvcpu.h this file is also the cffi
 * declaration: plain C types only, no includes.
 */

/* -- the launcher -------------------------------------------------------------- */

#define KV_MADV_SPAWN_NNP 1             /* no_new_privs even with CAP_SYS_ADMIN */
#define KV_MADV_SPAWN_INTERRUPTIBLE 2   /* no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV */

#define KV_MADV_INFO_NNP 1              /* the child set no_new_privs */
#define KV_MADV_INFO_KILLABLE 2         /* the filter waits killable once received */
#define KV_MADV_INFO_SPEC_ALLOW 4       /* ... and turns on no speculation mitigation */

struct kv_madv_child {
    int pid;         /* the child, waiting before exec until kv_madv_go(); the
                        caller reaps it */
    int listener;    /* the filter's listener (close-on-exec): hand it to the
                        daemon, then close this copy */
    int ctl;         /* the control socket (-1 after kv_madv_go/kv_madv_cancel) */
    unsigned info;   /* KV_MADV_INFO_* */
};

/* Fork a child that installs the filter, sends its listener back and waits.
 * It resets its signal mask and SIGPIPE/SIGXFSZ to their defaults, as a
 * shell starts a command.  0, or -errno (nothing is left behind): EACCES,
 * EPERM, EINVAL, ENOSYS from seccomp(2) (no user notification), EBUSY (the
 * chain already has a listener: a nested run, a container runtime's). */
int kv_madv_spawn(char *const argv[], unsigned flags, struct kv_madv_child *c);
/* Let the child execvp(argv[0], argv).  0: exec'd; -errno: it failed (the
 * child exits 127 for ENOENT, 126 otherwise).  Closes c->ctl. */
int kv_madv_go(struct kv_madv_child *c);
/* The child exits 125 without exec'ing, and is reaped. */
void kv_madv_cancel(struct kv_madv_child *c);

/* -- the supervisor ------------------------------------------------------------ */

#define KV_MADV_SUP_NO_SYNC_WAKE 1      /* don't set SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP */
#define KV_MADV_SUP_CHECK_MAPS 2        /* first page: PROCMAP_QUERY only */
#define KV_MADV_SUP_CHECK_READ 4        /* first page: process_vm_readv only */
/* (default: process_vm_readv, and PROCMAP_QUERY where that is refused) */

#define KV_MADV_MAX_LISTENERS 1024      /* kv_madv_sup_add says EMFILE past it */

struct kv_madv_stats {
    uint64_t received;    /* notifications received */
    uint64_t applied;     /* given to the driver */
    uint64_t answered;    /* answers the kernel took */
    uint64_t einval;      /* answered EINVAL by the RFC's checks */
    uint64_t efault;      /* answered EFAULT by the RFC's checks */
    uint64_t apply_err;   /* the driver answered an errno (a fault, unplugged) */
    uint64_t dropped;     /* the caller was gone (or took it back) before the answer */
    uint64_t unchecked;   /* first page not checked: no permission to look */
    uint64_t by_maps;     /* first page checked with PROCMAP_QUERY */
    uint64_t held;        /* answers held back by an injected latency */
    uint64_t added;       /* listeners added */
    uint64_t closed;      /* listeners closed */
};

struct kv_madv_sup;

/* A supervisor for device `d` (not started).  NULL with errno set: ENOSYS
 * or EINVAL when the kernel has no seccomp user notification. */
struct kv_madv_sup *kv_madv_sup_new(struct kv_dev *d, unsigned flags);
/* Hand it a listener (it owns the fd from now on, even on error), from any
 * thread, before or after start.  0 or -errno. */
int kv_madv_sup_add(struct kv_madv_sup *s, int listener);
/* Start the thread "kvcpu-madv".  0 or -errno. */
int kv_madv_sup_start(struct kv_madv_sup *s);
/* Send every held answer, stop and join the thread, close every listener:
 * a caller waiting for an answer, and every later call, gets ENOSYS.
 * Idempotent.  Before the device's state is freed. */
void kv_madv_sup_stop(struct kv_madv_sup *s);
void kv_madv_sup_free(struct kv_madv_sup *s);
void kv_madv_sup_stats(struct kv_madv_sup *s, struct kv_madv_stats *out);
size_t kv_madv_sup_listeners(struct kv_madv_sup *s);
