/* Load shapes for bench_fastpath.py, beside ioctl_rtt.c's single round trip.
 *
 * usage: ioctl_load PATH flood SECONDS
 *            STEPs back to back for SECONDS (the n-th carries step n-1);
 *            prints how many succeeded, also when one fails (then exits 1)
 *        ioctl_load PATH burst ROUNDS HOTS GAP_US
 *            ROUNDS times: HOTS MARK_HOTs then one STEP (a decode step's
 *            hints), then GAP_US of quiet; prints the burst time quantiles
 *            p25 p50 p75 p99 max in ns
 *        ioctl_load PATH mixed SECONDS BLOCKS SEED
 *            random STEP / HOT / EVICT / PREFETCH / SHARE over BLOCKS blocks
 *            of 2 MiB, back to back for SECONDS (a stress test of the
 *            model); prints the commands, then each kind's count in that
 *            order, then the round trip's p50 p99 max in ns
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
			printf("%lld\n", n);  /* what the device acknowledged */
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

/* xorshift64*: the same stream for the same seed. */
static unsigned long long next_random(unsigned long long *s)
{
	unsigned long long x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

#define SAMPLES (1 << 20)

static int mixed(int fd, double seconds, unsigned long long blocks, unsigned long long seed)
{
	static const unsigned long cmds[5] = {
		KV_CPU_STEP_ADVANCE, KV_CPU_MARK_HOT, KV_CPU_EVICT, KV_CPU_PREFETCH, KV_CPU_SHARE_PREFIX,
	};
	long long until = now_ns() + (long long)(seconds * 1e9), n = 0, kinds[5] = { 0 };
	long long *t = calloc(SAMPLES, sizeof(*t));
	unsigned long long state = seed ? seed : 1, step = 0;
	struct kv_cpu_step_info s;
	struct kv_cpu_block_info b;
	int ns = 0;

	while (now_ns() < until) {
		unsigned long long r = next_random(&state);
		int k = r % 5;
		long long t0 = now_ns();
		void *arg = &b;

		if (k == 0) {
			s.step = ++step;
			arg = &s;
		} else {
			b.va = ((r >> 8) % blocks) << 21;
			b.len = 2 << 20;
			b.target_step = step + 1 + (r >> 40) % 8;
		}
		if (ioctl(fd, cmds[k], arg)) {
			perror("ioctl");
			return 1;
		}
		if ((n & 15) == 0 && ns < SAMPLES)
			t[ns++] = now_ns() - t0;
		kinds[k]++;
		n++;
	}
	qsort(t, ns, sizeof(*t), cmp);
	printf("%lld %lld %lld %lld %lld %lld %lld %lld %lld\n", n, kinds[0], kinds[1], kinds[2], kinds[3],
	       kinds[4], ns ? t[ns / 2] : 0, ns ? t[ns * 99 / 100] : 0, ns ? t[ns - 1] : 0);
	return 0;
}

int main(int argc, char **argv)
{
	int fd;

	if (argc < 4 || (strcmp(argv[2], "flood") && (strcmp(argv[2], "burst") || argc < 6) &&
	                 (strcmp(argv[2], "mixed") || argc < 6))) {
		fprintf(stderr, "usage: %s PATH flood SECONDS | PATH burst ROUNDS HOTS GAP_US | "
		        "PATH mixed SECONDS BLOCKS SEED\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	if (!strcmp(argv[2], "flood"))
		return flood(fd, atof(argv[3]));
	if (!strcmp(argv[2], "mixed"))
		return mixed(fd, atof(argv[3]), strtoull(argv[4], NULL, 0), strtoull(argv[5], NULL, 0));
	return burst(fd, atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
}
