/* The device file over FUSE io_uring (Linux 6.14+): one queue per possible
 * CPU, each served by a thread pinned to its CPU.
 *
 * The kernel queues a request on the queue of the CPU its caller runs on
 * (fs/fuse/dev_uring.c, fuse_uring_task_to_queue: qid = task_cpu(current)),
 * so the reply is written and the next request fetched, in one
 * io_uring_enter, by a thread on the caller's CPU: no cross-CPU wake-up
 * whatever the scheduler did with the client.  libfuse 3.14 cannot
 * negotiate this, so the mount speaks the FUSE protocol itself: one file,
 * the device, answering the same commands from the same driver state
 * (kv_dev_command, under the same lock) into the same event ring as the
 * classic session (sessions.c).
 *
 * /dev/fuse is still read by one thread: FUSE_INIT (answered with
 * FUSE_OVER_IO_URING once every queue's ring exists: a mount that asked
 * and cannot register hangs), INTERRUPT and FORGET, and everything, should
 * the kernel not offer io_uring after all.  The facts behind each step:
 * benchmarks/URING_NOTES.md.
 *
 * An injected latency holds the request's ring entry: its reply is written
 * into the entry and committed when due, on the queue's own thread (its
 * ring is single-issuer), woken by a timeout SQE.  Other entries of the
 * queue, and other queues, go on serving.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "uring_proto.h"

/* Ring entries per queue: one for each request a CPU may have in flight,
 * a few held by an injected latency. */
#define QUEUE_DEPTH 8
/* Submission slots: each entry's command and, while held, its timeout. */
#define RING_SLOTS (4 * QUEUE_DEPTH)
#define SQE_SIZE 128
/* What FUSE_INIT tells the kernel; an entry's payload buffer must hold
 * max(8192, max_write, max_pages * page size) bytes (fuse_uring_create).
 * One page is plenty: our largest payload is 96 bytes. */
#define MAX_WRITE 4096
#define MAX_PAGES 1
#define PAYLOAD_SZ 8192
#define CLASSIC_BUF (128 * 1024 + 4096)
/* A held reply looks at the release flag at least this often. */
#define HELD_LOOK_NS 20000000ull
/* user_data of a timeout SQE (an entry's index is below it). */
#define TIMEOUT_TAG (1ull << 32)

enum { Q_STARTING, Q_PREPARED, Q_REGISTERED };

struct queue {
    struct kv_uring *u;
    int qid;
    pthread_t tid;
    int have_thread;
    int state;                  /* Q_*, or -errno */

    int ring_fd, fixed;
    unsigned *sq_tail, *sq_mask, *sq_array, sq_local, to_submit;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    char *sqes;
    size_t sq_map_sz, cq_map_sz, sqes_sz;
    char *sq_map, *cq_map;

    struct fuse_uring_req_header *hdr;  /* QUEUE_DEPTH of them */
    char *payload;                      /* QUEUE_DEPTH * PAYLOAD_SZ */
    size_t hdr_sz;
    struct iovec iov[QUEUE_DEPTH][2];
    uint32_t last_cmd[QUEUE_DEPTH];
    uint64_t commit_id[QUEUE_DEPTH];
    uint64_t held_due[QUEUE_DEPTH];     /* 0: not held */
    int held;
    int live;                           /* entries the kernel has not torn down */
    _Atomic int exited;
    _Atomic uint64_t served;            /* requests this queue answered */
    struct __kernel_timespec timeout[QUEUE_DEPTH];
};

struct kv_uring {
    struct kv_dev *d;
    int fuse_fd;
    int nr_queues;
    struct queue *queues;
    unsigned mode, uid, gid;
    char *mountpoint;
    pthread_t classic;
    int have_classic;
    int exit_fd;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int go;                     /* FUSE_INIT answered: the queues may register */
    _Atomic int ready;          /* 1: INIT answered and every queue registered; < 0: -errno */
    _Atomic int offered;        /* the kernel offered FUSE_OVER_IO_URING at INIT */
    _Atomic int exited;
    _Atomic int release;        /* send held replies now, hold no more */
    _Atomic int stopping;
    _Atomic uint64_t held_total;
};

/* -- answers, the same on both channels ------------------------------------------ */

static void fill_attr(struct kv_uring *u, struct fuse_attr *a)
{
    memset(a, 0, sizeof(*a));
    a->ino = FUSE_ROOT_ID;
    a->mode = S_IFREG | (u->mode & 07777);
    a->nlink = 1;
    a->uid = u->uid;
    a->gid = u->gid;
    a->blksize = 4096;
}

static int attr_reply(struct kv_uring *u, char *body)
{
    struct fuse_attr_out *o = (void *)body;

    memset(o, 0, sizeof(*o));
    o->attr_valid = 3600;
    fill_attr(u, &o->attr);
    return sizeof(*o);
}

/* One restricted ioctl: the command, and its reply (fuse_ioctl_out, then
 * GET_TELEMETRY's bytes) into body. */
static int ioctl_reply(struct kv_uring *u, const struct fuse_in_header *in, const struct fuse_ioctl_in *a,
                       const void *data, size_t data_len, char *body, int *error, uint64_t *delay_ns)
{
    struct kv_dev *d = u->d;
    struct fuse_ioctl_out *o = (void *)body;
    uint8_t *out = (uint8_t *)(o + 1);
    size_t outsz = a->out_size < sizeof(struct kv_cpu_telemetry_info) ? a->out_size
                                                                       : sizeof(struct kv_cpu_telemetry_info);
    int want_wake, err;

    if (a->flags & (FUSE_IOCTL_DIR | FUSE_IOCTL_UNRESTRICTED)) {   /* never for a file's restricted ioctl */
        *error = -ENOTTY;
        return 0;
    }
    err = kv_dev_command(d, KV_CALLER_SESSION, a->cmd, data, data_len < a->in_size ? data_len : a->in_size,
                         out, outsz, (int32_t)in->pid, &want_wake, delay_ns);
    if (want_wake)
        kv_wake(d, want_wake);  /* before the reply here: it may be held */
    if (err) {
        *error = -err;
        return 0;
    }
    memset(o, 0, sizeof(*o));
    return sizeof(*o) + (a->cmd == KV_CPU_GET_TELEMETRY ? outsz : 0);
}

/* The reply's body into body (at least PAYLOAD_SZ bytes): its length, or
 * -1 when the opcode takes no reply; *error 0 or -errno; *delay_ns an
 * injected latency. */
static int answer(struct kv_uring *u, const struct fuse_in_header *in, const void *op_in, const void *data,
                  size_t data_len, char *body, int *error, uint64_t *delay_ns)
{
    *error = 0;
    *delay_ns = 0;
    switch (in->opcode) {
    case FUSE_GETATTR:
        return attr_reply(u, body);
    case FUSE_SETATTR:      /* O_TRUNC is accepted and ignored, as on a character device */
        if (((const struct fuse_setattr_in *)op_in)->valid & ~(FATTR_SIZE | FATTR_FH | FATTR_LOCKOWNER)) {
            *error = -EPERM;
            return 0;
        }
        return attr_reply(u, body);
    case FUSE_OPEN: {
        struct fuse_open_out *o = (void *)body;

        if (!u->d->present) {
            *error = -ENODEV;
            return 0;
        }
        memset(o, 0, sizeof(*o));
        o->open_flags = FOPEN_DIRECT_IO;
        return sizeof(*o);
    }
    case FUSE_IOCTL:
        return ioctl_reply(u, in, op_in, data, data_len, body, error, delay_ns);
    case FUSE_READ:
    case FUSE_WRITE:        /* the driver has no read() and no write() */
        *error = -EINVAL;
        return 0;
    case FUSE_LOOKUP:
        *error = -ENOTDIR;
        return 0;
    case FUSE_RELEASE:
    case FUSE_DESTROY:
        return 0;
    case FUSE_FLUSH:    /* as libfuse without a flush handler: the kernel sends no more */
        *error = -ENOSYS;
        return 0;
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT:
        return -1;
    default:
        *error = -ENOSYS;
        return 0;
    }
}

static void count_served(struct kv_dev *d)
{
    uint64_t served = atomic_fetch_add_explicit(&d->served, 1, memory_order_relaxed) + 1;

    if (d->shared != NULL)
        __atomic_store_n(&d->shared->served, served, __ATOMIC_RELAXED);
}

/* -- the classic channel ---------------------------------------------------------------- */

static void classic_reply(struct kv_uring *u, const struct fuse_in_header *in, int error, const void *body,
                          size_t len)
{
    struct fuse_out_header oh = { .len = sizeof(oh) + len, .error = error, .unique = in->unique };
    struct iovec iov[2] = { { &oh, sizeof(oh) }, { (void *)body, len } };

    (void)!writev(u->fuse_fd, iov, len ? 2 : 1);  /* ENOENT: interrupted or aborted meanwhile */
}

/* FUSE_INIT: io_uring is asked for only if offered (flags2 bit 9) and
 * every queue's ring exists. */
static void answer_init(struct kv_uring *u, const struct fuse_in_header *in, const struct fuse_init_in *a)
{
    uint64_t kflags = a->flags, flags = FUSE_INIT_EXT | FUSE_MAX_PAGES;
    struct fuse_init_out o;
    int offered;

    if (a->flags & FUSE_INIT_EXT)
        kflags |= (uint64_t)a->flags2 << 32;
    offered = (kflags & FUSE_OVER_IO_URING) && u->nr_queues > 0;
    if (offered)
        flags |= FUSE_OVER_IO_URING;
    memset(&o, 0, sizeof(o));
    o.major = FUSE_KERNEL_VERSION;
    o.minor = a->minor < URING_PROTO_MINOR ? a->minor : URING_PROTO_MINOR;
    o.max_readahead = a->max_readahead;
    o.flags = (uint32_t)flags;
    o.flags2 = (uint32_t)(flags >> 32);
    o.max_background = 16;
    o.congestion_threshold = 12;
    o.max_write = MAX_WRITE;
    o.time_gran = 1;
    o.max_pages = MAX_PAGES;
    classic_reply(u, in, 0, &o, sizeof(o));
    atomic_store(&u->offered, offered);
    pthread_mutex_lock(&u->lock);
    u->go = 1;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
}

static int wait_queues(struct kv_uring *u, int from);

static void *classic_main(void *arg)
{
    struct kv_uring *u = arg;
    char *buf = malloc(CLASSIC_BUF);
    char *body = malloc(PAYLOAD_SZ);

    while (buf != NULL && body != NULL && !atomic_load(&u->stopping)) {
        const struct fuse_in_header *in = (const void *)buf;
        struct pollfd pfd = { .fd = u->fuse_fd, .events = POLLIN };
        ssize_t n = read(u->fuse_fd, buf, CLASSIC_BUF);

        if (n < 0) {
            if (errno == EAGAIN) {
                (void)poll(&pfd, 1, 100);   /* a bounded wait: stopping is seen */
                continue;
            }
            if (errno == EINTR || errno == ENOENT)
                continue;
            break;      /* ENODEV: unmounted or aborted */
        }
        if ((size_t)n < sizeof(*in))
            continue;
        if (in->opcode == FUSE_INIT) {
            answer_init(u, in, (const void *)(in + 1));
            if (atomic_load(&u->offered)) {
                int err = wait_queues(u, Q_PREPARED);

                atomic_store(&u->ready, err ? err : 1);
            } else {
                atomic_store(&u->ready, 1);     /* served here, classic */
            }
            continue;
        }
        /* Before the rings, after them (INTERRUPT, FORGET), or all of it
         * when io_uring was not offered.  An injected latency is slept
         * here: a path for kernels that said no, not for speed. */
        const void *op_in = in + 1;
        size_t arg_len = (size_t)n - sizeof(*in);
        const void *data = NULL;
        size_t data_len = 0;
        int error, len;
        uint64_t delay_ns;

        if (in->opcode == FUSE_IOCTL && arg_len >= sizeof(struct fuse_ioctl_in)) {
            data = (const char *)op_in + sizeof(struct fuse_ioctl_in);
            data_len = arg_len - sizeof(struct fuse_ioctl_in);
        }
        len = answer(u, in, op_in, data, data_len, body, &error, &delay_ns);
        if (delay_ns) {
            struct timespec ts = { .tv_sec = delay_ns / 1000000000u, .tv_nsec = delay_ns % 1000000000u };

            while (!atomic_load(&u->release) && nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        if (len >= 0)
            classic_reply(u, in, error, body, len);
        if (in->opcode != FUSE_FORGET && in->opcode != FUSE_BATCH_FORGET && in->opcode != FUSE_INTERRUPT)
            count_served(u->d);
    }
    free(buf);
    free(body);
    atomic_store(&u->exited, 1);
    if (u->exit_fd >= 0)
        (void)eventfd_write(u->exit_fd, 1);
    return NULL;
}

/* -- the rings ---------------------------------------------------------------------------- */

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int ring_setup(struct queue *q)
{
    static const unsigned tries[] = {
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,  /* fastest here */
        IORING_SETUP_SQE128,
    };
    struct io_uring_params p;
    int fd = -1;

    for (unsigned i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        fd = (int)syscall(__NR_io_uring_setup, RING_SLOTS, &p);
        if (fd >= 0 || errno != EINVAL)
            break;
    }
    if (fd < 0)
        return -errno;
    q->ring_fd = fd;
    q->sq_map_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    q->cq_map_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP)
        q->sq_map_sz = q->cq_map_sz = q->sq_map_sz > q->cq_map_sz ? q->sq_map_sz : q->cq_map_sz;
    q->sq_map = mmap(NULL, q->sq_map_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (q->sq_map == MAP_FAILED)
        return -errno;
    q->cq_map = q->sq_map;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        q->cq_map = mmap(NULL, q->cq_map_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                         IORING_OFF_CQ_RING);
        if (q->cq_map == MAP_FAILED)
            return -errno;
    }
    q->sqes_sz = p.sq_entries * SQE_SIZE;
    q->sqes = mmap(NULL, q->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (q->sqes == MAP_FAILED)
        return -errno;
    q->sq_tail = (unsigned *)(q->sq_map + p.sq_off.tail);
    q->sq_mask = (unsigned *)(q->sq_map + p.sq_off.ring_mask);
    q->sq_array = (unsigned *)(q->sq_map + p.sq_off.array);
    q->cq_head = (unsigned *)(q->cq_map + p.cq_off.head);
    q->cq_tail = (unsigned *)(q->cq_map + p.cq_off.tail);
    q->cq_mask = (unsigned *)(q->cq_map + p.cq_off.ring_mask);
    q->cqes = (struct io_uring_cqe *)(q->cq_map + p.cq_off.cqes);
    q->sq_local = *q->sq_tail;
    /* A registered /dev/fuse spares the kernel a file lookup per SQE. */
    q->fixed = syscall(__NR_io_uring_register, fd, IORING_REGISTER_FILES, &q->u->fuse_fd, 1) == 0;
    return 0;
}

static struct io_uring_sqe *next_sqe(struct queue *q, uint64_t user_data)
{
    unsigned idx = q->sq_local & *q->sq_mask;
    struct io_uring_sqe *sqe = (void *)(q->sqes + (size_t)idx * SQE_SIZE);

    memset(sqe, 0, SQE_SIZE);
    sqe->user_data = user_data;
    q->sq_array[idx] = idx;
    q->sq_local++;
    q->to_submit++;
    return sqe;
}

/* One FUSE uring command for entry e, submitted at the next enter. */
static void prep_cmd(struct queue *q, int e, uint32_t cmd_op)
{
    struct io_uring_sqe *sqe = next_sqe(q, (uint64_t)e);
    struct fuse_uring_cmd_req *req = (void *)sqe->cmd;

    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = q->fixed ? 0 : q->u->fuse_fd;
    sqe->flags = q->fixed ? IOSQE_FIXED_FILE : 0;
    sqe->cmd_op = cmd_op;
    req->qid = (uint16_t)q->qid;
    if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uintptr_t)q->iov[e];
        sqe->len = 2;   /* iov[0] headers, iov[1] payload */
    } else {
        req->commit_id = q->commit_id[e];
    }
    q->last_cmd[e] = cmd_op;
}

/* Wake this queue's thread at `when` (or sooner, to look at the release
 * flag) for held entry e. */
static void prep_timeout(struct queue *q, int e, uint64_t when)
{
    uint64_t look = kv_now_ns() + HELD_LOOK_NS;
    struct io_uring_sqe *sqe = next_sqe(q, TIMEOUT_TAG | (uint64_t)e);

    if (when > look)
        when = look;
    q->timeout[e].tv_sec = (long long)(when / 1000000000u);
    q->timeout[e].tv_nsec = (long long)(when % 1000000000u);
    sqe->opcode = IORING_OP_TIMEOUT;
    sqe->addr = (uintptr_t)&q->timeout[e];
    sqe->len = 1;
    sqe->timeout_flags = IORING_TIMEOUT_ABS;    /* CLOCK_MONOTONIC, as kv_now_ns() */
}

static void publish_held(struct kv_uring *u, int delta, uint64_t due)
{
    uint64_t held = atomic_fetch_add(&u->held_total, (uint64_t)(int64_t)delta) + (uint64_t)(int64_t)delta;
    struct kv_shared *s = u->d->shared;

    if (s != NULL) {
        if (delta > 0 && due > __atomic_load_n(&s->delayed_due_ns, __ATOMIC_RELAXED))
            __atomic_store_n(&s->delayed_due_ns, due, __ATOMIC_RELAXED);
        __atomic_store_n(&s->delayed, held, __ATOMIC_RELEASE);
    }
}

static void commit(struct queue *q, int e)
{
    if (q->held_due[e]) {
        q->held_due[e] = 0;
        q->held--;
        publish_held(q->u, -1, 0);
    }
    prep_cmd(q, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
}

/* Submit what is queued and wait for min_complete completions; -EINTR
 * when the stop signal came (the caller looks at `stopping`). */
static int submit_and_wait(struct queue *q, unsigned min_complete)
{
    int ret;

    __atomic_store_n(q->sq_tail, q->sq_local, __ATOMIC_RELEASE);
    ret = sys_enter(q->ring_fd, q->to_submit, min_complete, IORING_ENTER_GETEVENTS);
    if (ret < 0)
        return -errno;
    q->to_submit -= (unsigned)ret;
    return 0;
}

/* A request arrived in entry e: answer it in place, and commit it now or
 * when an injected latency says. */
static void serve_entry(struct queue *q, int e)
{
    struct fuse_uring_req_header *h = &q->hdr[e];
    struct fuse_in_header in = *(struct fuse_in_header *)h->in_out;
    struct fuse_out_header *oh = (struct fuse_out_header *)h->in_out;
    char *payload = q->payload + (size_t)e * PAYLOAD_SZ;
    uint32_t data_len = h->ring_ent_in_out.payload_sz;
    uint8_t data[KV_EV_DATA];
    uint64_t delay_ns;
    int error, len;

    q->commit_id[e] = h->ring_ent_in_out.commit_id;
    if (data_len > sizeof(data))
        data_len = sizeof(data);
    memcpy(data, payload, data_len);    /* the reply is written over it */
    len = answer(q->u, &in, h->op_in, data, data_len, payload, &error, &delay_ns);
    if (len < 0)    /* no-reply opcodes never come over a ring: commit an empty one */
        len = 0;
    oh->len = sizeof(*oh) + (uint32_t)len;
    oh->error = error;
    oh->unique = in.unique;
    h->ring_ent_in_out.payload_sz = (uint32_t)len;
    count_served(q->u->d);
    atomic_fetch_add_explicit(&q->served, 1, memory_order_relaxed);
    if (delay_ns && !atomic_load(&q->u->release)) {
        q->held_due[e] = kv_now_ns() + delay_ns;
        q->held++;
        publish_held(q->u, 1, q->held_due[e]);
        prep_timeout(q, e, q->held_due[e]);
    } else {
        commit(q, e);
    }
}

/* Reap the completion queue; returns the first unexpected error. */
static int reap(struct queue *q)
{
    unsigned head = *q->cq_head, tail = __atomic_load_n(q->cq_tail, __ATOMIC_ACQUIRE);
    int err = 0;

    for (; head != tail; head++) {
        struct io_uring_cqe *cqe = &q->cqes[head & *q->cq_mask];
        uint64_t tag = cqe->user_data;
        int res = cqe->res;

        if (tag & TIMEOUT_TAG) {
            int e = (int)(tag & (TIMEOUT_TAG - 1));

            if (q->held_due[e]) {
                if (atomic_load(&q->u->release) || kv_now_ns() >= q->held_due[e])
                    commit(q, e);
                else
                    prep_timeout(q, e, q->held_due[e]);     /* a look at the release flag only */
            }
            continue;
        }
        if (res == 0) {
            serve_entry(q, (int)tag);
        } else if (res == -EINTR || res == -EAGAIN) {
            prep_cmd(q, (int)tag, q->last_cmd[tag]);
        } else {
            /* ENOTCONN, ECONNABORTED, ECANCELED: torn down (unmount, abort) */
            q->live--;
            if (res != -ENOTCONN && res != -ECONNABORTED && res != -ECANCELED && !err)
                err = res;
        }
    }
    __atomic_store_n(q->cq_head, head, __ATOMIC_RELEASE);
    return err;
}

static void set_state(struct queue *q, int state)
{
    struct kv_uring *u = q->u;

    pthread_mutex_lock(&u->lock);
    q->state = state;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
}

/* Until every queue has left state `from`; returns the first failure. */
static int wait_queues(struct kv_uring *u, int from)
{
    int err = 0;

    pthread_mutex_lock(&u->lock);
    for (int i = 0; i < u->nr_queues; i++) {
        while (u->queues[i].state == from)
            pthread_cond_wait(&u->cond, &u->lock);
        if (u->queues[i].state < 0 && !err)
            err = u->queues[i].state;
    }
    pthread_mutex_unlock(&u->lock);
    return err;
}

static void *queue_main(void *arg)
{
    struct queue *q = arg;
    struct kv_uring *u = q->u;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char name[16];
    cpu_set_t cpus;
    int err;

    snprintf(name, sizeof(name), "kvcpu-uring%d", q->qid);
    pthread_setname_np(pthread_self(), name);
    CPU_ZERO(&cpus);
    CPU_SET(q->qid, &cpus);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);  /* an offline CPU: unpinned */
    /* After pinning, so the buffers are first touched on the queue's CPU. */
    err = ring_setup(q);
    q->hdr_sz = (QUEUE_DEPTH * sizeof(*q->hdr) + page - 1) & ~(page - 1);
    q->hdr = err ? MAP_FAILED : mmap(NULL, q->hdr_sz, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    q->payload = q->hdr == MAP_FAILED ? MAP_FAILED
                                      : mmap(NULL, QUEUE_DEPTH * PAYLOAD_SZ, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (!err && (q->hdr == MAP_FAILED || q->payload == MAP_FAILED))
        err = -ENOMEM;
    if (err) {
        set_state(q, err);
        return NULL;
    }
    for (int e = 0; e < QUEUE_DEPTH; e++) {
        q->iov[e][0] = (struct iovec){ &q->hdr[e], sizeof(q->hdr[e]) };
        q->iov[e][1] = (struct iovec){ q->payload + (size_t)e * PAYLOAD_SZ, PAYLOAD_SZ };
        prep_cmd(q, e, FUSE_IO_URING_CMD_REGISTER);
    }
    q->live = QUEUE_DEPTH;
    /* The ring exists before FUSE_INIT is answered; REGISTER only after
     * (fuse_uring_cmd: EAGAIN before the connection is initialized). */
    set_state(q, Q_PREPARED);
    pthread_mutex_lock(&u->lock);
    while (!u->go && !atomic_load(&u->stopping))
        pthread_cond_wait(&u->cond, &u->lock);
    pthread_mutex_unlock(&u->lock);
    if (!atomic_load(&u->offered) || atomic_load(&u->stopping)) {
        set_state(q, -EOPNOTSUPP);
        return NULL;
    }
    /* REGISTER runs inline in the submitting enter: a refusal is a CQE
     * at once. */
    while ((err = submit_and_wait(q, 0)) == -EINTR && !atomic_load(&u->stopping))
        ;
    if (!err)
        err = reap(q);
    if (!err && q->live < QUEUE_DEPTH)
        err = -ENOTCONN;
    set_state(q, err ? err : Q_REGISTERED);
    if (err)
        return NULL;
    while (q->live > 0 && !atomic_load(&u->stopping)) {
        err = submit_and_wait(q, 1);    /* asleep here while idle */
        if (err && err != -EINTR)
            break;
        (void)reap(q);
    }
    q->exited = 1;
    return NULL;
}

static void unmap_queue(struct queue *q)
{
    if (q->hdr != NULL && q->hdr != MAP_FAILED)
        munmap(q->hdr, q->hdr_sz);
    if (q->payload != NULL && q->payload != MAP_FAILED)
        munmap(q->payload, QUEUE_DEPTH * PAYLOAD_SZ);
    if (q->sqes != NULL && q->sqes != MAP_FAILED)
        munmap(q->sqes, q->sqes_sz);
    if (q->cq_map != NULL && q->cq_map != MAP_FAILED && q->cq_map != q->sq_map)
        munmap(q->cq_map, q->cq_map_sz);
    if (q->sq_map != NULL && q->sq_map != MAP_FAILED)
        munmap(q->sq_map, q->sq_map_sz);
    if (q->ring_fd > 0)
        close(q->ring_fd);
    memset(&q->hdr, 0, sizeof(*q) - offsetof(struct queue, hdr));    /* a second call finds nothing */
    q->ring_fd = -1;
    q->sq_map = q->cq_map = q->sqes = NULL;
}

/* The kernel's queue count is the number of possible CPUs, and the qid a
 * request goes to the CPU number: numbering with holes would not match. */
static int possible_cpus(void)
{
    FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
    int lo, hi, max = 0;
    char sep;

    if (f == NULL)
        return (int)sysconf(_SC_NPROCESSORS_CONF);
    while (fscanf(f, "%d", &lo) == 1) {
        hi = lo;
        if (fscanf(f, "%c", &sep) == 1 && sep == '-' && fscanf(f, "%d", &hi) == 1)
            (void)!fscanf(f, "%c", &sep);
        max += hi - lo + 1;
        if (hi + 1 != max) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return max;
}

/* -- the API (kvcpu.h) ------------------------------------------------------------------------ */

struct kv_uring *kv_uring_new(struct kv_dev *d, unsigned mode, unsigned uid, unsigned gid, int *errp)
{
    struct kv_uring *u = calloc(1, sizeof(*u));
    sigset_t all, old;
    int err = 0;

    if (u == NULL) {
        *errp = ENOMEM;
        return NULL;
    }
    u->d = d;
    u->mode = mode;
    u->uid = uid;
    u->gid = gid;
    u->exit_fd = -1;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    u->nr_queues = possible_cpus();
    u->fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (u->nr_queues <= 0)
        err = ERANGE;
    else if (u->fuse_fd < 0)
        err = errno;
    else if ((u->queues = calloc((size_t)u->nr_queues, sizeof(*u->queues))) == NULL)
        err = ENOMEM;
    if (!err)
        err = kv_wake_signal_install();
    sigfillset(&all);   /* signals stay with Python's main thread, but the stop's wake-up */
    sigdelset(&all, KV_WAKE_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; !err && i < u->nr_queues; i++) {
        struct queue *q = &u->queues[i];

        q->u = u;
        q->qid = i;
        err = pthread_create(&q->tid, NULL, queue_main, q);
        q->have_thread = err == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!err)
        err = -wait_queues(u, Q_STARTING);
    if (err) {
        kv_uring_free(u);
        *errp = err;
        return NULL;
    }
    return u;
}

int kv_uring_mount(struct kv_uring *u, const char *mountpoint, const char *source, const char *fstype)
{
    char opts[256];

    snprintf(opts, sizeof(opts), "fd=%d,rootmode=%o,user_id=0,group_id=0,allow_other,default_permissions",
             u->fuse_fd, S_IFREG);
    if (mount(source, mountpoint, fstype, MS_NOSUID | MS_NODEV, opts) != 0)
        return errno;
    u->mountpoint = strdup(mountpoint);
    return 0;
}

int kv_uring_start(struct kv_uring *u, int exit_fd)
{
    sigset_t all, old;
    int err;

    u->exit_fd = exit_fd;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&u->classic, NULL, classic_main, u);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0) {
        u->have_classic = 1;
        (void)pthread_setname_np(u->classic, "kvcpu-fuse");
    }
    return err;
}

int kv_uring_ready(struct kv_uring *u) { return atomic_load(&u->ready); }
int kv_uring_active(struct kv_uring *u) { return atomic_load(&u->offered) && atomic_load(&u->ready) == 1; }
int kv_uring_exited(struct kv_uring *u) { return atomic_load(&u->exited); }
int kv_uring_queues(struct kv_uring *u) { return u->nr_queues; }

size_t kv_uring_served(struct kv_uring *u, uint64_t *out, size_t max)
{
    size_t n = (size_t)u->nr_queues < max ? (size_t)u->nr_queues : max;

    for (size_t i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&u->queues[i].served, memory_order_relaxed);
    return n;
}

void kv_uring_release_held(struct kv_uring *u)
{
    atomic_store(&u->release, 1);
    /* Each queue's thread commits what it holds at its next look. */
    for (int i = 0; i < 100 && atomic_load(&u->held_total); i++)
        usleep(2000);
}

void kv_uring_stop(struct kv_uring *u)
{
    kv_uring_release_held(u);
    atomic_store(&u->stopping, 1);
    pthread_mutex_lock(&u->lock);
    pthread_cond_broadcast(&u->cond);   /* queues still waiting for INIT */
    pthread_mutex_unlock(&u->lock);
    kv_ring_wake_waiters(u->d);     /* a request waiting for room gives up waiting */
    if (u->mountpoint != NULL) {
        (void)umount2(u->mountpoint, MNT_DETACH);
        free(u->mountpoint);
        u->mountpoint = NULL;
    }
    if (u->have_classic) {  /* it sees `stopping` within its 100 ms poll */
        pthread_join(u->classic, NULL);
        u->have_classic = 0;
    }
    /* A queue's thread sleeps in io_uring_enter: the wake-up signal ends
     * the wait (repeated: it may land before the thread is back in it). */
    for (int i = 0; u->queues != NULL && i < u->nr_queues; i++) {
        struct queue *q = &u->queues[i];

        if (!q->have_thread)
            continue;
        while (q->state == Q_REGISTERED && !atomic_load(&q->exited)) {
            pthread_kill(q->tid, KV_WAKE_SIGNAL);
            usleep(1000);
        }
        pthread_join(q->tid, NULL);
        q->have_thread = 0;
    }
    /* Closing the rings cancels their commands; closing the last /dev/fuse
     * reference aborts the connection: a client still holding the file
     * gets ENOTCONN. */
    for (int i = 0; u->queues != NULL && i < u->nr_queues; i++)
        unmap_queue(&u->queues[i]);
    if (u->fuse_fd >= 0) {
        close(u->fuse_fd);
        u->fuse_fd = -1;
    }
}

void kv_uring_free(struct kv_uring *u)
{
    if (u == NULL)
        return;
    kv_uring_stop(u);
    free(u->queues);
    pthread_mutex_destroy(&u->lock);
    pthread_cond_destroy(&u->cond);
    free(u);
}
