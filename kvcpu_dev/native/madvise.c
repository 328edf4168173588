/* The supervisor half of `kvcpu-dev run` (madvise.h): one thread in the
 * daemon answering madvise(104..106) notifications from every listener
 * `run` hands over, on the C side: a valid hint goes straight to the
 * driver (kv_dev_madvise, driver.c), under the same lock as the node's
 * ioctls, and the driver's answer is the caller's.  No trip through the
 * node, no GIL.
 *
 * Per notification, in this order (the RFC's):
 *   1. start not page-aligned                 -> EINVAL
 *   2. len == 0 for HOT or EVICT               -> EINVAL
 *   3. NOTIF_ID_VALID (else: the caller is gone, drop it)
 *   4. first page not mapped in the caller    -> EFAULT
 *   5. NOTIF_ID_VALID again: the caller was alive throughout 3-5, so the
 *      pid we looked at named it (else drop; nothing is answered from a
 *      look at a reused pid)
 *   6. the driver -> 0 or errno (an injected fault's, ENODEV unplugged),
 *      answered now, or when due if a fault rule injected a latency: the
 *      answer is held (as delayed.c holds a node's reply) and the thread
 *      goes on serving everyone else.
 * SECCOMP_USER_NOTIF_FLAG_CONTINUE is never used: every notified call is
 * answered here and never runs in the kernel (which would say EINVAL).
 *
 * The thread poll()s (not epoll: a poll sleeper is woken with the waker's
 * wake flags, so SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP's "on this CPU"
 * reaches it) an eventfd for adds and stop, and the listeners.  It serves
 * all of them in turn: callers in many threads and processes are answered
 * one after the other, each in about the time of a round trip.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/seccomp.h>

#include "madvise.h"
#include "seccomp_arch.h"

/* Linux 6.6: wake the supervisor on the caller's CPU and the caller on the
 * supervisor's (Debian 12's 6.1 headers lack it). */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

/* Linux 6.11: ask /proc/PID/maps which VMA covers an address. */
#ifndef PROCMAP_QUERY
struct procmap_query {
    uint64_t size;
    uint64_t query_flags;
    uint64_t query_addr;
    uint64_t vma_start;
    uint64_t vma_end;
    uint64_t vma_flags;
    uint64_t vma_page_size;
    uint64_t vma_offset;
    uint64_t inode;
    uint32_t dev_major;
    uint32_t dev_minor;
    uint32_t vma_name_size;
    uint32_t build_id_size;
    uint64_t vma_name_addr;
    uint64_t build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define PROCMAP_QUERY_VMA_READABLE 0x01
#endif

enum { ST_RECEIVED, ST_APPLIED, ST_ANSWERED, ST_EINVAL, ST_EFAULT, ST_APPLY_ERR, ST_DROPPED,
       ST_UNCHECKED, ST_BY_MAPS, ST_HELD, ST_ADDED, ST_CLOSED, ST_N };

/* What a step decided: an errno to answer (>= 0), or drop the notification. */
#define DROP (-1)
/* The first page: mapped, or an errno, or we could not tell. */
#define MAPPED 0
#define UNKNOWN (-2)

struct listener {
    int fd;
    uint64_t serial;            /* never reused: held answers name their listener by it */
};

/* An answer held back by an injected latency, by due time. */
struct held {
    struct held *next;
    uint64_t due_ns;
    uint64_t serial;
    int fd;
    uint64_t id;
    int err;
};

struct kv_madv_sup {
    struct kv_dev *d;
    unsigned flags;
    uint64_t page_mask;
    int wake;                   /* eventfd: adds and stop */
    pthread_mutex_t lock;       /* pend, npend, stop */
    struct listener *pend;
    size_t npend, cap_pend;
    uint64_t next_serial;
    int stop;
    pthread_mutex_t stop_lock;  /* kv_madv_sup_stop from any thread, once */
    int started;
    pthread_t thread;
    /* the thread's own */
    struct listener *ls;
    size_t nls, cap_ls;
    struct pollfd *pfd;
    size_t cap_pfd;
    struct seccomp_notif *req;
    struct seccomp_notif_resp *resp;
    size_t reqsz, respsz;
    struct held *held;
    int no_procmap;             /* PROCMAP_QUERY said ENOTTY once */
    _Atomic size_t open;
    _Atomic uint64_t st[ST_N];
};

static void count(struct kv_madv_sup *s, int which)
{
    atomic_fetch_add_explicit(&s->st[which], 1, memory_order_relaxed);
}

static int id_valid(int fd, uint64_t id)
{
    return ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* process_vm_readv of one byte: what the RFC's kernel side does (it pins
 * the first page), so PROT_NONE, guard regions and VM_IO/PFNMAP mappings
 * say EFAULT as pinning would.  Needs PTRACE_MODE_ATTACH_REALCREDS on the
 * caller (same uid and Yama's consent, or CAP_SYS_PTRACE: a root daemon);
 * it faults the page in as a read would. */
static int check_read(pid_t pid, uint64_t addr)
{
    char byte;
    struct iovec local = { .iov_base = &byte, .iov_len = 1 };
    struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = 1 };

    if (process_vm_readv(pid, &local, 1, &remote, 1, 0) == 1)
        return MAPPED;
    if (errno == EFAULT)
        return EFAULT;
    if (errno == EPERM || errno == EACCES)
        return EPERM;   /* not allowed to look (or --seccomp denies the call) */
    return UNKNOWN;     /* ESRCH (gone: the next ID_VALID drops it), ENOMEM, ... */
}

/* PROCMAP_QUERY on /proc/PID/maps (Linux 6.11): needs only
 * PTRACE_MODE_READ_FSCREDS (same uid and dumpable, or CAP_SYS_PTRACE; Yama
 * does not restrict it) and touches no page.  A VMA without read
 * permission (PROT_NONE) is EFAULT, as with check_read; a guard region
 * inside a readable VMA is not seen. */
static int check_maps(struct kv_madv_sup *s, pid_t pid, uint64_t addr)
{
    struct procmap_query q;
    char path[32];
    int fd, r;

    if (s->no_procmap)
        return UNKNOWN;
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return UNKNOWN;
    memset(&q, 0, sizeof(q));
    q.size = sizeof(q);
    q.query_addr = addr;
    if (ioctl(fd, PROCMAP_QUERY, &q) == 0)
        r = (q.vma_flags & PROCMAP_QUERY_VMA_READABLE) ? MAPPED : EFAULT;
    else if (errno == ENOENT)
        r = EFAULT;     /* no VMA covers addr */
    else {
        if (errno == ENOTTY || errno == EINVAL)
            s->no_procmap = 1;      /* before 6.11 */
        r = UNKNOWN;
    }
    close(fd);
    if (r != UNKNOWN)
        count(s, ST_BY_MAPS);
    return r;
}

static int first_page(struct kv_madv_sup *s, pid_t pid, uint64_t addr)
{
    int r;

    if (pid <= 0)
        return UNKNOWN;     /* not in our pid namespace */
    if (s->flags & KV_MADV_SUP_CHECK_MAPS)
        return check_maps(s, pid, addr);
    r = check_read(pid, addr);
    if (r == EPERM)
        r = (s->flags & KV_MADV_SUP_CHECK_READ) ? UNKNOWN : check_maps(s, pid, addr);
    return r;
}

/* The checks, then the driver.  Returns the errno to answer or DROP; sets
 * *delay_ns to an injected latency for the answer and *wakep to what the
 * ring's consumer is owed once the caller has its answer. */
static int decide(struct kv_madv_sup *s, struct listener *l, const struct seccomp_notif *n,
                  uint64_t *delay_ns, int *wakep)
{
    const struct seccomp_data *sd = &n->data;
    int advice = (int)(uint32_t)sd->args[2];
    uint64_t addr = sd->args[0], len = sd->args[1];
    int r;

    if (sd->nr != __NR_madvise || sd->arch != KV_AUDIT_ARCH || advice < KV_MADV_HOT ||
        advice > KV_MADV_PREFETCH)
        return EINVAL;  /* not our filter's: what the stock kernel says */
    if (addr & s->page_mask) {
        count(s, ST_EINVAL);
        return EINVAL;
    }
    if (len == 0 && advice != KV_MADV_PREFETCH) {
        count(s, ST_EINVAL);
        return EINVAL;
    }
    if (!id_valid(l->fd, n->id))
        return DROP;
    r = first_page(s, (pid_t)n->pid, addr);
    if (!id_valid(l->fd, n->id))
        return DROP;
    if (r == EFAULT) {
        count(s, ST_EFAULT);
        return EFAULT;
    }
    if (r != MAPPED)
        count(s, ST_UNCHECKED);
    count(s, ST_APPLIED);
    r = kv_dev_madvise(s->d, advice, addr, len, (int32_t)n->pid, wakep, delay_ns);
    if (r < 0)
        r = -r;
    if (r > 4095)
        r = EIO;
    if (r)
        count(s, ST_APPLY_ERR);
    return r;
}

/* Answer notification `id` on `fd` with `err`.  -1: the listener is unusable. */
static int answer(struct kv_madv_sup *s, int fd, uint64_t id, int err)
{
    memset(s->resp, 0, s->respsz);
    s->resp->id = id;
    s->resp->val = 0;
    s->resp->error = err ? -err : 0;
    s->resp->flags = 0;     /* never SECCOMP_USER_NOTIF_FLAG_CONTINUE */
    while (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, s->resp) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == ENOENT) {
            count(s, ST_DROPPED);   /* gone, or a signal took it back */
            return 0;
        }
        return -1;
    }
    count(s, ST_ANSWERED);
    return 0;
}

static void hold(struct kv_madv_sup *s, struct listener *l, uint64_t id, int err, uint64_t due_ns)
{
    struct held *h = calloc(1, sizeof(*h)), **at;

    if (h == NULL) {
        (void)answer(s, l->fd, id, err);    /* late is better than never */
        return;
    }
    h->due_ns = due_ns;
    h->serial = l->serial;
    h->fd = l->fd;
    h->id = id;
    h->err = err;
    for (at = &s->held; *at != NULL && (*at)->due_ns <= due_ns; at = &(*at)->next)
        ;
    h->next = *at;
    *at = h;
    count(s, ST_HELD);
}

/* Send the held answers due by `now` (every one if now == UINT64_MAX). */
static void send_due(struct kv_madv_sup *s, uint64_t now)
{
    while (s->held != NULL && s->held->due_ns <= now) {
        struct held *h = s->held;

        s->held = h->next;
        (void)answer(s, h->fd, h->id, h->err);  /* a dead listener is closed at its next poll */
        free(h);
    }
}

/* One notification.  -1: the listener is unusable. */
static int serve_one(struct kv_madv_sup *s, struct listener *l)
{
    uint64_t delay_ns = 0;
    int r, want_wake = 0, dead = 0;

    memset(s->req, 0, s->reqsz);    /* RECV wants it zeroed */
    if (ioctl(l->fd, SECCOMP_IOCTL_NOTIF_RECV, s->req) != 0) {
        /* ENOENT: the caller was killed or interrupted before we got it. */
        return (errno == EINTR || errno == ENOENT) ? 0 : -1;
    }
    count(s, ST_RECEIVED);
    r = decide(s, l, s->req, &delay_ns, &want_wake);
    if (r == DROP) {
        count(s, ST_DROPPED);
    } else if (delay_ns) {
        hold(s, l, s->req->id, r, kv_now_ns() + delay_ns);
    } else {
        dead = answer(s, l->fd, s->req->id, r);
    }
    if (want_wake)
        kv_wake(s->d, want_wake);   /* after the answer: the caller goes first */
    return dead;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    size_t n = *cap ? *cap : 4;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    q = realloc(*p, n * elem);
    if (q == NULL)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static void close_listener(struct kv_madv_sup *s, struct listener *l)
{
    /* Answers held for it go nowhere: its callers are gone (hang-up), or
     * it failed. */
    for (struct held **at = &s->held; *at != NULL;) {
        if ((*at)->serial == l->serial) {
            struct held *h = *at;

            *at = h->next;
            free(h);
        } else {
            at = &(*at)->next;
        }
    }
    close(l->fd);
    atomic_fetch_sub(&s->open, 1);
    count(s, ST_CLOSED);
}

/* Take the listeners added since; 1 if asked to stop. */
static int take_pending(struct kv_madv_sup *s)
{
    int stop;

    pthread_mutex_lock(&s->lock);
    if (s->npend > 0 &&
        grow((void **)&s->ls, &s->cap_ls, s->nls + s->npend, sizeof(*s->ls)) == 0) {
        memcpy(s->ls + s->nls, s->pend, s->npend * sizeof(*s->pend));
        s->nls += s->npend;
        s->npend = 0;
    }
    stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

static void *sup_thread(void *arg)
{
    struct kv_madv_sup *s = arg;

    for (;;) {
        struct timespec ts, *timeout = NULL;
        uint64_t v;
        size_t i, j;

        if (take_pending(s))
            break;
        if (grow((void **)&s->pfd, &s->cap_pfd, s->nls + 1, sizeof(*s->pfd)) != 0) {
            usleep(1000);
            continue;
        }
        s->pfd[0].fd = s->wake;
        s->pfd[0].events = POLLIN;
        s->pfd[0].revents = 0;
        for (i = 0; i < s->nls; i++) {
            s->pfd[i + 1].fd = s->ls[i].fd;
            s->pfd[i + 1].events = POLLIN;
            s->pfd[i + 1].revents = 0;
        }
        if (s->held != NULL) {
            uint64_t now = kv_now_ns(), due = s->held->due_ns;
            uint64_t wait = due > now ? due - now : 0;

            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            timeout = &ts;
        }
        if (ppoll(s->pfd, s->nls + 1, timeout, NULL) < 0)
            continue;   /* EINTR */
        if (s->pfd[0].revents & POLLIN) {
            if (read(s->wake, &v, sizeof(v)) < 0) {
                /* EAGAIN: someone else's wake-up was already read */
            }
        }
        for (i = j = 0; i < s->nls; i++) {
            short re = s->pfd[i + 1].revents;
            int dead = 0;

            if (re & POLLIN)
                dead = serve_one(s, &s->ls[i]) != 0;
            else if (re & (POLLHUP | POLLERR | POLLNVAL))
                dead = 1;   /* every task under the filter is gone */
            if (dead)
                close_listener(s, &s->ls[i]);
            else
                s->ls[j++] = s->ls[i];
        }
        s->nls = j;
        if (s->held != NULL)
            send_due(s, kv_now_ns());
    }
    send_due(s, UINT64_MAX);    /* a stop never waits for a latency */
    for (size_t i = 0; i < s->nls; i++)
        close_listener(s, &s->ls[i]);
    s->nls = 0;
    return NULL;
}

struct kv_madv_sup *kv_madv_sup_new(struct kv_dev *d, unsigned flags)
{
    struct seccomp_notif_sizes sz;
    struct kv_madv_sup *s;
    long page = sysconf(_SC_PAGESIZE);

    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz) != 0)
        return NULL;    /* before 5.0: no user notification */
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->d = d;
    s->flags = flags;
    s->page_mask = (uint64_t)(page > 0 ? page : 4096) - 1;
    /* The kernel's structs may be larger than our headers' (newer kernel):
     * size the buffers by what it says, never smaller than ours. */
    s->reqsz = sz.seccomp_notif > sizeof(*s->req) ? sz.seccomp_notif : sizeof(*s->req);
    s->respsz = sz.seccomp_notif_resp > sizeof(*s->resp) ? sz.seccomp_notif_resp
                                                          : sizeof(*s->resp);
    s->req = calloc(1, s->reqsz);
    s->resp = calloc(1, s->respsz);
    s->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->req == NULL || s->resp == NULL || s->wake < 0) {
        int e = errno;
        if (s->wake >= 0)
            close(s->wake);
        free(s->req);
        free(s->resp);
        free(s);
        errno = e;
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->stop_lock, NULL);
    return s;
}

static void wake(struct kv_madv_sup *s)
{
    uint64_t one = 1;

    if (write(s->wake, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is saturated, the thread will wake anyway */
    }
}

int kv_madv_sup_add(struct kv_madv_sup *s, int listener)
{
    struct listener l = { listener, 0 };
    int r;

    if (listener < 0)
        return -EINVAL;
    if (!(s->flags & KV_MADV_SUP_NO_SYNC_WAKE)) {
        uint64_t f = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
        /* Before 6.6 this fails (EINVAL/ENOTTY): no matter, it is a hint. */
        (void)ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, f);
    }
    pthread_mutex_lock(&s->lock);
    if (s->stop)
        r = -ESHUTDOWN;
    else if (atomic_load(&s->open) >= KV_MADV_MAX_LISTENERS)
        r = -EMFILE;
    else
        r = grow((void **)&s->pend, &s->cap_pend, s->npend + 1, sizeof(*s->pend));
    if (r == 0) {
        l.serial = ++s->next_serial;
        s->pend[s->npend++] = l;
        atomic_fetch_add(&s->open, 1);
        count(s, ST_ADDED);
    }
    pthread_mutex_unlock(&s->lock);
    if (r != 0) {
        close(listener);
        return r;
    }
    wake(s);
    return 0;
}

int kv_madv_sup_start(struct kv_madv_sup *s)
{
    sigset_t all, old;
    int r;

    if (s->started)
        return -EALREADY;
    /* The thread takes no signals: the daemon's go to Python's thread and
     * never cut a poll() short. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(&s->thread, NULL, sup_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return -r;
    (void)pthread_setname_np(s->thread, "kvcpu-madv");
    s->started = 1;
    return 0;
}

void kv_madv_sup_stop(struct kv_madv_sup *s)
{
    pthread_mutex_lock(&s->stop_lock);
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    if (s->started) {
        pthread_join(s->thread, NULL);
        s->started = 0;
    }
    /* Listeners added but never taken (stopped before, or never started). */
    for (;;) {
        struct listener l;

        pthread_mutex_lock(&s->lock);
        if (s->npend == 0) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        l = s->pend[--s->npend];
        pthread_mutex_unlock(&s->lock);
        close_listener(s, &l);
    }
    pthread_mutex_unlock(&s->stop_lock);
}

void kv_madv_sup_free(struct kv_madv_sup *s)
{
    if (s == NULL)
        return;
    kv_madv_sup_stop(s);
    close(s->wake);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->stop_lock);
    free(s->pend);
    free(s->ls);
    free(s->pfd);
    free(s->req);
    free(s->resp);
    free(s);
}

void kv_madv_sup_stats(struct kv_madv_sup *s, struct kv_madv_stats *o)
{
    uint64_t v[ST_N];

    for (int i = 0; i < ST_N; i++)
        v[i] = atomic_load_explicit(&s->st[i], memory_order_relaxed);
    o->received = v[ST_RECEIVED];
    o->applied = v[ST_APPLIED];
    o->answered = v[ST_ANSWERED];
    o->einval = v[ST_EINVAL];
    o->efault = v[ST_EFAULT];
    o->apply_err = v[ST_APPLY_ERR];
    o->dropped = v[ST_DROPPED];
    o->unchecked = v[ST_UNCHECKED];
    o->by_maps = v[ST_BY_MAPS];
    o->held = v[ST_HELD];
    o->added = v[ST_ADDED];
    o->closed = v[ST_CLOSED];
}

size_t kv_madv_sup_listeners(struct kv_madv_sup *s)
{
    return atomic_load(&s->open);
}
