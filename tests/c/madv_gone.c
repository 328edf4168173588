/*
 * madv_gone: what a caller sees when the supervisor goes away (its listener
 * closed: stopped, or its process killed), or answers with an errno.
 *
 *   madv_gone N PAUSE_US
 *
 * Issues N HOT hints, PAUSE_US apart, and prints the results run-length
 * encoded in order, e.g. "gone 0*50 ENOSYS*150", then
 * "slowest_ms=M" (the longest single call).  Exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MADV_KV_HOT 104

static const char *ename(int e)
{
	static char other[32];

	switch (e) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case ENOSYS: return "ENOSYS";
	case EINTR: return "EINTR";
	case ENODEV: return "ENODEV";
	case EIO: return "EIO";
	case EBUSY: return "EBUSY";
	default:
		snprintf(other, sizeof(other), "errno%d", e);
		return other;
	}
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	long n, pause_us, run = 0;
	int last = -1;
	double slowest = 0;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;

	if (argc != 3 || (n = atol(argv[1])) < 1 || (pause_us = atol(argv[2])) < 0) {
		fprintf(stderr, "usage: madv_gone N PAUSE_US\n");
		return 64;
	}
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	printf("gone");
	for (long i = 0; i < n; i++) {
		double t0 = now_ms(), dt;
		int e = madvise(p, page, MADV_KV_HOT) == 0 ? 0 : errno;

		dt = now_ms() - t0;
		if (dt > slowest)
			slowest = dt;
		if (e != last && run > 0) {
			printf(" %s*%ld", ename(last), run);
			run = 0;
		}
		last = e;
		run++;
		if (pause_us > 0)
			usleep((useconds_t)pause_us);
	}
	printf(" %s*%ld\nslowest_ms=%.1f\n", ename(last), run, slowest);
	return 0;
}
