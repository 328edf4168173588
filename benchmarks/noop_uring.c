/*
 * The io_uring floor for the round-trip benchmarks: the cheapest FUSE server
 * of the FUSE-over-io_uring transport (Linux 6.14+), as noop_fuse.c is for
 * classic /dev/fuse.  No libfuse, no liburing: raw FUSE protocol on
 * /dev/fuse and raw io_uring syscalls (uring_proto.h has the kernel ABI that
 * Debian bookworm's headers lack; URING_NOTES.md the protocol).
 *
 * The mount's root is a single regular file (mode 0666), like the device
 * node: MOUNTPOINT must be a regular file (created if missing).  Every
 * request answers at once: GETATTR/SETATTR the file's attributes, OPEN,
 * RELEASE, FLUSH, DESTROY success, IOCTL (restricted, as the kernel sends it
 * for a file) success with zeros for the _IOR size, LOOKUP ENOENT, FORGET,
 * BATCH_FORGET and INTERRUPT no reply, anything else ENOSYS.
 *
 * FUSE_INIT asks for FUSE_OVER_IO_URING; then one queue per possible CPU is
 * registered (qid = CPU number, which is how the kernel picks a queue: the
 * CPU the calling task runs on), each served by a thread pinned to its CPU
 * that sleeps in io_uring_enter while idle.  The main thread keeps reading
 * /dev/fuse for what stays on the classic channel (INIT, FORGET, INTERRUPT,
 * anything sent before the queues are all registered).
 *
 * usage: noop_uring MOUNTPOINT   (runs until unmounted or signalled;
 *        SIGTERM/SIGINT unmount, SIGUSR1 prints the counters)
 * Prints "ready" on stdout once every queue is registered.  Counters, one
 * line per channel ("stats classic ...", "stats qN ..."), go to stderr on
 * SIGUSR1 and at exit: which opcodes each channel carried, and "offcpu", the
 * ring requests answered while the thread was not on its queue's CPU.
 *
 * If the kernel does not offer FUSE over io_uring in FUSE_INIT (enable_uring
 * is N, or the kernel predates it), it says so in one line and exits 1.
 * NOOP_URING_ASK=always asks anyway and stays on /dev/fuse if registering
 * fails (to observe what the kernel does).
 *
 * Build: gcc -O2 -Wall -o noop_uring noop_uring.c   (glibc 2.34+ needs no
 * -pthread; -DWORK_NS=N: each ioctl first spins N ns; -DQUEUE_DEPTH=N: ring
 * entries per queue, default 2; -DRING_FLAGS=...: io_uring_setup flags,
 * default SQE128|SINGLE_ISSUER|DEFER_TASKRUN, the fastest measured here)
 */
#define _GNU_SOURCE
#include "uring_proto.h"   /* kvcpu_dev/native/: the kernel ABI bookworm lacks */
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef WORK_NS
#define WORK_NS 0
#endif
#ifndef QUEUE_DEPTH
#define QUEUE_DEPTH 2
#endif
/* io_uring_setup flags (falls back to SQE128 alone where refused) */
#ifndef RING_FLAGS
#define RING_FLAGS (IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
#endif

/* What FUSE_INIT tells the kernel; the ring payload buffer must hold
 * max(8192, max_write, max_pages * page size) bytes (fuse_uring_create). */
#define MAX_WRITE 4096
#define MAX_PAGES 1
#define MIN_PAYLOAD 8192
#define CLASSIC_BUF (256 * 1024)
#define NOPS 64
#define SQE_SIZE 128

struct stats {
	uint64_t op[NOPS];
	uint64_t offcpu;
};

struct queue {
	int qid;
	pthread_t tid;
	int state; /* STARTING, PREPARED, REGISTERED, or -errno */
	struct stats stats;

	int ring_fd, fixed;
	unsigned *sq_tail, *sq_mask, *sq_array, sq_local, to_submit;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	char *sqes;

	size_t payload_sz;
	struct fuse_uring_req_header *hdr; /* QUEUE_DEPTH of them */
	char *payload;                     /* QUEUE_DEPTH * payload_sz */
	struct iovec iov[QUEUE_DEPTH][2];
	uint32_t last_cmd[QUEUE_DEPTH];
	uint64_t commit_id[QUEUE_DEPTH];
	int live;
};

static int fuse_fd = -1;
static const char *mountpoint;
static int nr_queues;
static struct queue *queues;
static struct stats classic_stats;
static size_t page_size;
static volatile sig_atomic_t stop_sig, dump_sig;
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static int go; /* FUSE_INIT answered: the queues may register */
enum { STARTING, PREPARED, REGISTERED };

static const char *const op_names[NOPS] = {
	[FUSE_LOOKUP] = "LOOKUP", [FUSE_FORGET] = "FORGET", [FUSE_GETATTR] = "GETATTR",
	[FUSE_SETATTR] = "SETATTR", [FUSE_OPEN] = "OPEN", [FUSE_READ] = "READ",
	[FUSE_WRITE] = "WRITE", [FUSE_STATFS] = "STATFS", [FUSE_RELEASE] = "RELEASE",
	[FUSE_FSYNC] = "FSYNC", [FUSE_GETXATTR] = "GETXATTR", [FUSE_LISTXATTR] = "LISTXATTR",
	[FUSE_FLUSH] = "FLUSH", [FUSE_INIT] = "INIT", [FUSE_ACCESS] = "ACCESS",
	[FUSE_INTERRUPT] = "INTERRUPT", [FUSE_DESTROY] = "DESTROY", [FUSE_IOCTL] = "IOCTL",
	[FUSE_POLL] = "POLL", [FUSE_BATCH_FORGET] = "BATCH_FORGET", [FUSE_FALLOCATE] = "FALLOCATE",
	[FUSE_LSEEK] = "LSEEK", [FUSE_SYNCFS] = "SYNCFS", [51] = "TMPFILE", [52] = "STATX",
};

static void count(struct stats *s, uint32_t opcode)
{
	unsigned i = opcode < NOPS ? opcode : NOPS - 1;

	__atomic_store_n(&s->op[i], s->op[i] + 1, __ATOMIC_RELAXED);
}

static void dump_one(const char *who, const struct stats *s)
{
	char line[2048];
	int n = snprintf(line, sizeof(line), "stats %s", who);

	for (int i = 0; i < NOPS; i++) {
		uint64_t v = __atomic_load_n(&s->op[i], __ATOMIC_RELAXED);

		if (!v)
			continue;
		if (op_names[i])
			n += snprintf(line + n, sizeof(line) - n, " %s=%llu", op_names[i], (unsigned long long)v);
		else
			n += snprintf(line + n, sizeof(line) - n, " op%d=%llu", i, (unsigned long long)v);
	}
	if (s != &classic_stats)
		n += snprintf(line + n, sizeof(line) - n, " offcpu=%llu",
			      (unsigned long long)__atomic_load_n(&s->offcpu, __ATOMIC_RELAXED));
	fprintf(stderr, "%s\n", line);
}

static void dump(void)
{
	char who[16];

	dump_one("classic", &classic_stats);
	for (int q = 0; queues && q < nr_queues; q++) {
		snprintf(who, sizeof(who), "q%d", q);
		dump_one(who, &queues[q].stats);
	}
	fflush(stderr);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		dump_sig = 1;
	else
		stop_sig = 1;
}

/* ---- the no-op answers, shared by both channels ---- */

static void fill_attr(struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = FUSE_ROOT_ID;
	a->mode = S_IFREG | 0666;
	a->nlink = 1;
	a->uid = getuid();
	a->gid = getgid();
	a->blksize = 4096;
}

static void spin(long ns)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000000L + b.tv_nsec - a.tv_nsec < ns);
}

/* The reply's body into body[0..body_max): its length, or -1 when the
 * opcode takes no reply; *error 0 or -errno. */
static int answer(const struct fuse_in_header *in, const void *op_in, char *body, size_t body_max,
		  int *error)
{
	*error = 0;
	switch (in->opcode) {
	case FUSE_GETATTR:
	case FUSE_SETATTR: {
		struct fuse_attr_out *o = (void *)body;

		memset(o, 0, sizeof(*o));
		o->attr_valid = 3600;
		fill_attr(&o->attr);
		return sizeof(*o);
	}
	case FUSE_OPEN: {
		struct fuse_open_out *o = (void *)body;

		memset(o, 0, sizeof(*o));
		o->open_flags = FOPEN_DIRECT_IO;
		return sizeof(*o);
	}
	case FUSE_IOCTL: {
		const struct fuse_ioctl_in *a = op_in;
		struct fuse_ioctl_out *o = (void *)body;
		size_t n = _IOC_DIR(a->cmd) & _IOC_READ ? a->out_size : 0;

		if (WORK_NS)
			spin(WORK_NS);
		if (a->flags & FUSE_IOCTL_UNRESTRICTED) { /* never for a regular file */
			*error = -ENOSYS;
			return 0;
		}
		if (n > body_max - sizeof(*o)) {
			*error = -EINVAL;
			return 0;
		}
		memset(o, 0, sizeof(*o) + n);
		return sizeof(*o) + n;
	}
	case FUSE_RELEASE:
	case FUSE_FLUSH:
	case FUSE_DESTROY:
		return 0;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		return -1;
	case FUSE_LOOKUP:
		*error = -ENOENT;
		return 0;
	default:
		*error = -ENOSYS;
		return 0;
	}
}

/* ---- the classic channel ---- */

static void classic_reply(const struct fuse_in_header *in, int error, const void *body, size_t len)
{
	struct fuse_out_header oh = { .len = sizeof(oh) + len, .error = error, .unique = in->unique };
	struct iovec iov[2] = { { &oh, sizeof(oh) }, { (void *)body, len } };

	/* ENOENT: the request was interrupted or aborted meanwhile */
	if (writev(fuse_fd, iov, len ? 2 : 1) < 0 && errno != ENOENT)
		perror("noop_uring: write /dev/fuse");
}

/* Answers FUSE_INIT; returns whether it asked for io_uring. */
static int do_init(const struct fuse_in_header *in, const struct fuse_init_in *a)
{
	uint64_t kflags = a->flags, flags;
	const char *ask = getenv("NOOP_URING_ASK");
	struct fuse_init_out o;
	int asked;

	if (a->flags & FUSE_INIT_EXT)
		kflags |= (uint64_t)a->flags2 << 32;
	asked = (kflags & FUSE_OVER_IO_URING) || (ask && !strcmp(ask, "always"));
	fprintf(stderr, "noop_uring: kernel FUSE %u.%u, FUSE_OVER_IO_URING %s in FUSE_INIT%s\n", a->major,
		a->minor, kflags & FUSE_OVER_IO_URING ? "offered" : "NOT offered",
		asked && !(kflags & FUSE_OVER_IO_URING) ? " (asking anyway: NOOP_URING_ASK=always)" : "");
	if (!asked) {
		fprintf(stderr, "noop_uring: the kernel does not offer FUSE over io_uring: as root, "
				"echo Y > /sys/module/fuse/parameters/enable_uring (Linux 6.14+, "
				"CONFIG_FUSE_IO_URING=y)\n");
		return 0;
	}
	memset(&o, 0, sizeof(o));
	o.major = FUSE_KERNEL_VERSION;
	o.minor = a->minor < URING_PROTO_MINOR ? a->minor : URING_PROTO_MINOR;
	o.max_readahead = a->max_readahead;
	flags = FUSE_INIT_EXT | FUSE_MAX_PAGES | FUSE_OVER_IO_URING;
	o.flags = (uint32_t)flags;
	o.flags2 = (uint32_t)(flags >> 32);
	o.max_background = 16;
	o.congestion_threshold = 12;
	o.max_write = MAX_WRITE;
	o.time_gran = 1;
	o.max_pages = MAX_PAGES;
	classic_reply(in, 0, &o, sizeof(o));
	return 1;
}

/* ---- the rings ---- */

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int ring_setup(struct queue *q)
{
	static const unsigned tries[] = { RING_FLAGS, IORING_SETUP_SQE128 };
	struct io_uring_params p;
	size_t sq_sz, cq_sz;
	char *sq, *cq;
	int fd = -1;

	for (unsigned i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i];
		fd = syscall(__NR_io_uring_setup, QUEUE_DEPTH, &p);
		if (fd >= 0 || errno != EINVAL)
			break;
	}
	if (fd < 0)
		return -errno;
	sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sq_sz = cq_sz = sq_sz > cq_sz ? sq_sz : cq_sz;
	sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		return -errno;
	cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			return -errno;
	}
	q->sqes = mmap(NULL, p.sq_entries * SQE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		       IORING_OFF_SQES);
	if (q->sqes == MAP_FAILED)
		return -errno;
	q->ring_fd = fd;
	q->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	q->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	q->sq_array = (unsigned *)(sq + p.sq_off.array);
	q->cq_head = (unsigned *)(cq + p.cq_off.head);
	q->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	q->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	q->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	q->sq_local = *q->sq_tail;
	/* A registered /dev/fuse spares the kernel a file lookup per SQE. */
	q->fixed = syscall(__NR_io_uring_register, fd, IORING_REGISTER_FILES, &fuse_fd, 1) == 0;
	return 0;
}

/* Queues one FUSE uring command for entry e (the kernel reads the SQE when
 * io_uring_enter submits it). */
static void prep_cmd(struct queue *q, int e, uint32_t cmd_op)
{
	unsigned idx = q->sq_local & *q->sq_mask;
	struct io_uring_sqe *sqe = (void *)(q->sqes + (size_t)idx * SQE_SIZE);
	struct fuse_uring_cmd_req *req = (void *)sqe->cmd;

	memset(sqe, 0, SQE_SIZE);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->fixed ? 0 : fuse_fd;
	sqe->flags = q->fixed ? IOSQE_FIXED_FILE : 0;
	sqe->cmd_op = cmd_op;
	sqe->user_data = e;
	req->qid = q->qid;
	if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
		sqe->addr = (uintptr_t)q->iov[e];
		sqe->len = 2; /* iov[0] headers, iov[1] payload */
	} else {
		req->commit_id = q->commit_id[e];
	}
	q->last_cmd[e] = cmd_op;
	q->sq_array[idx] = idx;
	q->sq_local++;
	q->to_submit++;
}

static int submit_and_wait(struct queue *q, unsigned min_complete)
{
	int ret;

	__atomic_store_n(q->sq_tail, q->sq_local, __ATOMIC_RELEASE);
	do
		ret = sys_enter(q->ring_fd, q->to_submit, min_complete, IORING_ENTER_GETEVENTS);
	while (ret < 0 && errno == EINTR);
	if (ret < 0)
		return -errno;
	q->to_submit -= ret;
	return 0;
}

/* A request arrived in entry e: answer it in place and commit. */
static void serve(struct queue *q, int e)
{
	struct fuse_uring_req_header *h = &q->hdr[e];
	struct fuse_in_header in = *(struct fuse_in_header *)h->in_out;
	struct fuse_out_header *oh = (struct fuse_out_header *)h->in_out;
	int error, len;

	count(&q->stats, in.opcode);
	if (sched_getcpu() != q->qid)
		__atomic_store_n(&q->stats.offcpu, q->stats.offcpu + 1, __ATOMIC_RELAXED);
	q->commit_id[e] = h->ring_ent_in_out.commit_id;
	len = answer(&in, h->op_in, q->payload + e * q->payload_sz, q->payload_sz, &error);
	if (len < 0) /* no-reply opcodes never come over a ring; commit an empty one */
		len = 0;
	oh->len = sizeof(*oh) + len;
	oh->error = error;
	oh->unique = in.unique;
	h->ring_ent_in_out.payload_sz = len;
	prep_cmd(q, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
}

/* Reaps the CQ; returns the first unexpected error, 0 otherwise. */
static int reap(struct queue *q)
{
	unsigned head = *q->cq_head, tail = __atomic_load_n(q->cq_tail, __ATOMIC_ACQUIRE);
	int err = 0;

	for (; head != tail; head++) {
		struct io_uring_cqe *cqe = &q->cqes[head & *q->cq_mask];
		int e = (int)cqe->user_data, res = cqe->res;

		if (res == 0) {
			serve(q, e);
		} else if (res == -EINTR || res == -EAGAIN) {
			prep_cmd(q, e, q->last_cmd[e]);
		} else {
			/* ENOTCONN, ECONNABORTED: torn down (unmount, abort); anything
			 * else is an error */
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
	pthread_mutex_lock(&start_lock);
	q->state = state;
	pthread_cond_broadcast(&start_cond);
	pthread_mutex_unlock(&start_lock);
}

/* Waits until every queue has left ``from``; returns the first failure. */
static int wait_queues(int from)
{
	int err = 0;

	pthread_mutex_lock(&start_lock);
	for (int q = 0; q < nr_queues; q++) {
		while (queues[q].state == from)
			pthread_cond_wait(&start_cond, &start_lock);
		if (queues[q].state < 0 && !err)
			err = queues[q].state;
	}
	pthread_mutex_unlock(&start_lock);
	return err;
}

static void *queue_main(void *arg)
{
	struct queue *q = arg;
	char name[16];
	cpu_set_t cpus;
	size_t hdr_sz;
	int err;

	snprintf(name, sizeof(name), "noop-uring-q%d", q->qid);
	pthread_setname_np(pthread_self(), name);
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	if (pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus))
		fprintf(stderr, "noop_uring: q%d: cannot pin to CPU %d (offline?), serving unpinned\n", q->qid,
			q->qid);

	/* After pinning, so the buffers are first touched on the queue's CPU. */
	err = ring_setup(q);
	if (err) {
		fprintf(stderr, "noop_uring: q%d: io_uring_setup: %s\n", q->qid, strerror(-err));
		set_state(q, err);
		return NULL;
	}
	hdr_sz = (QUEUE_DEPTH * sizeof(*q->hdr) + page_size - 1) & ~(page_size - 1);
	q->hdr = mmap(NULL, hdr_sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	q->payload = mmap(NULL, QUEUE_DEPTH * q->payload_sz, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (q->hdr == MAP_FAILED || q->payload == MAP_FAILED) {
		set_state(q, -ENOMEM);
		return NULL;
	}
	for (int e = 0; e < QUEUE_DEPTH; e++) {
		q->iov[e][0] = (struct iovec){ &q->hdr[e], sizeof(q->hdr[e]) };
		q->iov[e][1] = (struct iovec){ q->payload + e * q->payload_sz, q->payload_sz };
		prep_cmd(q, e, FUSE_IO_URING_CMD_REGISTER);
	}
	q->live = QUEUE_DEPTH;
	/* The ring exists before FUSE_INIT is answered (a server that asks
	 * for io_uring and then cannot register leaves every request of the
	 * mount waiting); REGISTER only after (it needs the connection
	 * initialized, fuse_uring_cmd: EAGAIN before). */
	set_state(q, PREPARED);
	pthread_mutex_lock(&start_lock);
	while (!go)
		pthread_cond_wait(&start_cond, &start_lock);
	pthread_mutex_unlock(&start_lock);
	/* REGISTER runs inline in the submitting io_uring_enter; a refusal
	 * (EOPNOTSUPP when enable_uring is N, EINVAL for a short buffer) is a
	 * CQE right away. */
	err = submit_and_wait(q, 0);
	if (!err)
		err = reap(q);
	if (!err && q->live < QUEUE_DEPTH)
		err = -ENOTCONN;
	set_state(q, err ? err : REGISTERED);
	if (err)
		return NULL;

	while (q->live > 0) {
		err = submit_and_wait(q, 1); /* sleeps here while idle */
		if (err) {
			fprintf(stderr, "noop_uring: q%d: io_uring_enter: %s\n", q->qid, strerror(-err));
			break;
		}
		err = reap(q);
		if (err)
			fprintf(stderr, "noop_uring: q%d: ring entry failed: %s\n", q->qid, strerror(-err));
	}
	close(q->ring_fd);
	return NULL;
}

static int possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	int lo, hi = -1, max = 0;
	char sep;

	/* "0-1", "0", "0-3,8-11": the kernel's nr_queues is the count, the qid
	 * the CPU number, so a gap would leave qids past the count: refuse. */
	if (f) {
		while (fscanf(f, "%d", &lo) == 1) {
			hi = lo;
			if (fscanf(f, "%c", &sep) == 1 && sep == '-' && fscanf(f, "%d", &hi) == 1)
				fscanf(f, "%c", &sep);
			max += hi - lo + 1;
			if (hi + 1 != max) {
				fclose(f);
				return -1;
			}
		}
		fclose(f);
	}
	return max > 0 ? max : (int)sysconf(_SC_NPROCESSORS_CONF);
}

/* Starts one thread per queue, each pinned to its CPU, and waits until each
 * has its ring and buffers (or failed); returns 0 or the first failure. */
static int prepare_queues(void)
{
	size_t payload_sz = MAX_WRITE > MIN_PAYLOAD ? MAX_WRITE : MIN_PAYLOAD;
	int err;

	if (MAX_PAGES * page_size > payload_sz)
		payload_sz = MAX_PAGES * page_size;
	queues = calloc(nr_queues, sizeof(*queues));
	for (int q = 0; q < nr_queues; q++) {
		queues[q].qid = q;
		queues[q].payload_sz = payload_sz;
		if (pthread_create(&queues[q].tid, NULL, queue_main, &queues[q])) {
			perror("noop_uring: pthread_create");
			exit(1);
		}
	}
	err = wait_queues(STARTING);
	if (err)
		fprintf(stderr, "noop_uring: cannot set up io_uring: %s%s\n", strerror(-err),
			err == -EPERM ? " (kernel.io_uring_disabled, or a seccomp filter?)" : "");
	return err;
}

/* After FUSE_INIT: every queue registers its entries; returns 0 or the
 * first failure. */
static int register_queues(void)
{
	int err;

	pthread_mutex_lock(&start_lock);
	go = 1;
	pthread_cond_broadcast(&start_cond);
	pthread_mutex_unlock(&start_lock);
	err = wait_queues(PREPARED);
	if (err)
		fprintf(stderr, "noop_uring: FUSE_IO_URING_CMD_REGISTER failed: %s%s\n", strerror(-err),
			err == -EOPNOTSUPP ? " (fuse-io-uring disabled: as root, echo Y > "
					     "/sys/module/fuse/parameters/enable_uring)" : "");
	else
		fprintf(stderr, "noop_uring: %d queue(s) registered, %d entries each, payload %zu bytes\n",
			nr_queues, QUEUE_DEPTH, queues[0].payload_sz);
	return err;
}

int main(int argc, char *argv[])
{
	static char buf[CLASSIC_BUF] __attribute__((aligned(4096)));
	static char body[MIN_PAYLOAD];
	const char *ask = getenv("NOOP_URING_ASK");
	int ask_always = ask && !strcmp(ask, "always");
	struct sigaction sa;
	sigset_t block, waitmask;
	char opts[256];
	struct stat st;
	int status = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	mountpoint = argv[1];
	page_size = sysconf(_SC_PAGESIZE);
	if (stat(mountpoint, &st)) {
		int fd = open(mountpoint, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);

		if (fd < 0) {
			perror(mountpoint);
			return 1;
		}
		close(fd);
	} else if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "noop_uring: %s: MOUNTPOINT must be a regular file (the mount's root is a file)\n",
			mountpoint);
		return 2;
	}
	nr_queues = possible_cpus();
	if (nr_queues <= 0) {
		fprintf(stderr, "noop_uring: possible CPUs are not numbered 0..N-1; the kernel's queue "
				"numbering would not match\n");
		return 1;
	}

	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fuse_fd < 0) {
		perror("/dev/fuse");
		return 1;
	}
	/* Signals only while the main thread waits in ppoll (the queue
	 * threads inherit the blocked mask). */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGUSR1);
	if (prepare_queues())
		return 1;

	snprintf(opts, sizeof(opts), "fd=%d,rootmode=100666,user_id=%u,group_id=%u,allow_other,default_permissions",
		 fuse_fd, getuid(), getgid());
	if (mount("noop_uring", mountpoint, "fuse.noop_uring", MS_NOSUID | MS_NODEV, opts)) {
		perror("noop_uring: mount");
		return 1;
	}

	for (;;) {
		struct pollfd pfd = { .fd = fuse_fd, .events = POLLIN };
		const struct fuse_in_header *in = (void *)buf;
		ssize_t n;

		if (dump_sig) {
			dump_sig = 0;
			dump();
		}
		if (stop_sig)
			break;
		n = read(fuse_fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EAGAIN) {
				if (ppoll(&pfd, 1, NULL, &waitmask) < 0 && errno != EINTR) {
					perror("noop_uring: ppoll");
					break;
				}
				continue;
			}
			if (errno == EINTR || errno == ENOENT)
				continue;
			if (errno != ENODEV) /* ENODEV: unmounted or aborted */
				perror("noop_uring: read /dev/fuse");
			break;
		}
		if ((size_t)n < sizeof(*in))
			continue;
		count(&classic_stats, in->opcode);
		if (in->opcode == FUSE_INIT) {
			if (!do_init(in, (const void *)(in + 1))) {
				status = 1;
				break;
			}
			if (register_queues() && !ask_always) {
				status = 1;
				break;
			}
			printf("ready\n");
			fflush(stdout);
		} else {
			int error, len = answer(in, in + 1, body, sizeof(body), &error);

			if (len >= 0)
				classic_reply(in, error, body, len);
		}
	}
	if (stop_sig || status)
		umount2(mountpoint, MNT_DETACH);
	dump();
	if (!stop_sig && !status) /* unmounted: the rings were torn down too */
		for (int q = 0; queues && q < nr_queues; q++)
			if (queues[q].state == REGISTERED)
				pthread_join(queues[q].tid, NULL);
	return status;
}
