/*
 * madv_threads: several threads issue madvise(104..106) hints at once; every
 * one must be answered 0, and the supervisor must see each exactly once.
 *
 *   madv_threads NTHREADS NPER
 *
 * Thread i maps a page of its own and issues NPER hints: HOT, EVICT,
 * PREFETCH(t = j, W = i + 1), HOT, ... (j = 0 .. NPER-1).  Output:
 *   thread I tid=T addr=0x.. hot=A evict=B prefetch=C tsum=S W=W fail=F
 *   done threads=N hints=H fail=F
 * Exit 0 iff every hint returned 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MADV_KV_HOT 104
#define MADV_KV_EVICT 105
#define MADV_KV_PREFETCH 106

struct worker {
	pthread_t thread;
	int index;
	long nper;
	pid_t tid;
	void *page;
	long hot, evict, prefetch, fail;
	uint64_t tsum;
};

static pthread_barrier_t start;

static void *run(void *arg)
{
	struct worker *w = arg;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	w->tid = gettid();
	w->page = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->page == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	pthread_barrier_wait(&start);
	for (long j = 0; j < w->nper; j++) {
		long rc;
		switch (j % 3) {
		case 0:
			rc = madvise(w->page, page, MADV_KV_HOT);
			w->hot += rc == 0;
			break;
		case 1:
			/* half of them through syscall(2), as runtimes do both */
			rc = syscall(SYS_madvise, w->page, page, MADV_KV_EVICT);
			w->evict += rc == 0;
			break;
		default:
			rc = madvise(w->page, ((size_t)(w->index + 1) << 32) | (uint32_t)j,
				     MADV_KV_PREFETCH);
			if (rc == 0) {
				w->prefetch++;
				w->tsum += (uint64_t)j;
			}
		}
		if (rc != 0) {
			if (w->fail++ == 0)
				fprintf(stderr, "thread %d: hint %ld: errno %d\n", w->index, j, errno);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long n, nper, fail = 0, hints = 0;
	struct worker *ws;

	if (argc != 3 || (n = atol(argv[1])) < 1 || (nper = atol(argv[2])) < 0) {
		fprintf(stderr, "usage: madv_threads NTHREADS NPER\n");
		return 64;
	}
	ws = calloc((size_t)n, sizeof(*ws));
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (long i = 0; i < n; i++) {
		ws[i].index = (int)i;
		ws[i].nper = nper;
		if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) {
			perror("pthread_create");
			return 2;
		}
	}
	for (long i = 0; i < n; i++) {
		struct worker *w = &ws[i];
		pthread_join(w->thread, NULL);
		printf("thread %d tid=%d addr=%p hot=%ld evict=%ld prefetch=%ld tsum=%llu W=%d "
		       "fail=%ld\n", w->index, (int)w->tid, w->page, w->hot, w->evict, w->prefetch,
		       (unsigned long long)w->tsum, w->index + 1, w->fail);
		fail += w->fail;
		hints += w->hot + w->evict + w->prefetch;
	}
	printf("done threads=%ld hints=%ld fail=%ld\n", n, hints, fail);
	return fail ? 1 : 0;
}
