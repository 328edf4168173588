/* Load shapes for bench_fastpath.py, beside ioctl_rtt.c's single round trip.
 *
 * usage: ioctl_load PATH flood SECONDS
 *            STEPs back to back for SECONDS; prints how many succeeded
 *        ioctl_load PATH burst ROUNDS HOTS GAP_US
 *            ROUNDS times: HOTS MARK_HOTs then one STEP (a decode step's
 *            hints), then GAP_US of quiet; prints the burst time quantiles
 *            p25 p50 p75 p99 max in ns
 */
#include <linux/kv_cpu.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

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

static int flood(int fd, double seconds)
{
	struct kv_cpu_step_info step = { 0 };
	long long until = now_ns() + (long long)(seconds * 1e9), n = 0;

	while (now_ns() < until) {
		step.step = n;
		if (ioctl(fd, KV_CPU_STEP_ADVANCE, &step)) {
			perror("ioctl");
			return 1;
		}
		n++;
	}
	printf("%lld\n", n);
	return 0;
}

static int burst(int fd, int rounds, int hots, int gap_us)
{
	struct kv_cpu_step_info step = { 0 };
	struct kv_cpu_block_info block = { .len = 2 << 20 };
	long long *t = calloc(rounds, sizeof(*t));

	for (int r = 0; r < rounds; r++) {
		long long t0 = now_ns();

		for (int h = 0; h < hots; h++) {
			block.va = (unsigned long long)h << 21;
			if (ioctl(fd, KV_CPU_MARK_HOT, &block)) {
				perror("ioctl");
				return 1;
			}
		}
		step.step = r;
		if (ioctl(fd, KV_CPU_STEP_ADVANCE, &step)) {
			perror("ioctl");
			return 1;
		}
		t[r] = now_ns() - t0;
		usleep(gap_us);
	}
	qsort(t, rounds, sizeof(*t), cmp);
	printf("%lld %lld %lld %lld %lld\n", t[rounds / 4], t[rounds / 2], t[3 * rounds / 4],
	       t[rounds * 99 / 100], t[rounds - 1]);
	return 0;
}

int main(int argc, char **argv)
{
	int fd;

	if (argc < 4 || (strcmp(argv[2], "flood") && (strcmp(argv[2], "burst") || argc < 6))) {
		fprintf(stderr, "usage: %s PATH flood SECONDS | PATH burst ROUNDS HOTS GAP_US\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	if (!strcmp(argv[2], "flood"))
		return flood(fd, atof(argv[3]));
	return burst(fd, atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
}
