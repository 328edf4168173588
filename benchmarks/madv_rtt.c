/*
 * madv_rtt: a madvise hint and a STEP_ADVANCE ioctl side by side, in one
 * process (run it under `kvcpu-dev run`), or the filter's cost on a loop
 * of cheap system calls.
 *
 *   madv_rtt NODE rtt COUNT BATCHES
 *       BATCHES batches, each timing COUNT calls of every kind one at a
 *       time, in ABBA order across batches (ioctl, hot, prefetch; then
 *       prefetch, hot, ioctl; ...).  One line per batch:
 *         batch B ioctl P50 hot P50 prefetch P50      (nanoseconds, medians)
 *   madv_rtt - loop COUNT
 *       COUNT getppid() and COUNT 1-byte reads of /dev/zero, timed as a
 *       whole:  loop getppid NS read NS  (nanoseconds per call)
 */
#define _GNU_SOURCE
#include <linux/kv_cpu.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MADV_KV_HOT 104
#define MADV_KV_PREFETCH 106

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

static long long median(long long *t, int n)
{
	qsort(t, n, sizeof(*t), cmp);
	return t[n / 2];
}

static int fd;
static char *page;
static uint64_t step;

static int once(int kind)
{
	struct kv_cpu_step_info s;

	step++;
	switch (kind) {
	case 0:
		s.step = step;
		return ioctl(fd, KV_CPU_STEP_ADVANCE, &s);
	case 1:
		return madvise(page, 4096, MADV_KV_HOT);
	default:
		return madvise(page, ((size_t)64 << 32) | (uint32_t)step, MADV_KV_PREFETCH);
	}
}

static int rtt(int n, int batches)
{
	static const char *names[3] = { "ioctl", "hot", "prefetch" };
	long long *t = calloc(n, sizeof(*t)), med[3];

	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	page[0] = 1;
	for (int i = 0; i < 200; i++)	/* warm-up: every path once */
		if (once(i % 3)) {
			perror("warm-up");
			return 1;
		}
	for (int b = 0; b < batches; b++) {
		for (int j = 0; j < 3; j++) {
			int kind = b % 2 ? 2 - j : j;

			for (int i = 0; i < n; i++) {
				long long t0 = now_ns();

				if (once(kind)) {
					perror(names[kind]);
					return 1;
				}
				t[i] = now_ns() - t0;
			}
			med[kind] = median(t, n);
		}
		printf("batch %d ioctl %lld hot %lld prefetch %lld\n", b, med[0], med[1], med[2]);
		fflush(stdout);
	}
	return 0;
}

static int loop(long n)
{
	long long t0, t1, t2;
	long sum = 0;
	char byte;
	int zero = open("/dev/zero", O_RDONLY);

	t0 = now_ns();
	for (long i = 0; i < n; i++)
		sum += syscall(SYS_getppid) > 0;
	t1 = now_ns();
	for (long i = 0; i < n; i++)
		sum += read(zero, &byte, 1);
	t2 = now_ns();
	printf("loop getppid %.1f read %.1f (%ld)\n", (double)(t1 - t0) / n, (double)(t2 - t1) / n, sum);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[2], "rtt")) {
		fd = open(argv[1], O_RDWR);
		if (fd < 0) {
			perror(argv[1]);
			return 1;
		}
		return rtt(atoi(argv[3]), atoi(argv[4]));
	}
	if (argc == 4 && !strcmp(argv[2], "loop"))
		return loop(atol(argv[3]));
	fprintf(stderr, "usage: madv_rtt NODE rtt COUNT BATCHES | madv_rtt - loop COUNT\n");
	return 2;
}
