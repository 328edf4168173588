/*
 * Times ioctl round trips on a device node, one at a time, and prints the
 * median and quartiles in nanoseconds.  Written in C so the client side adds
 * as little as possible to what is measured.
 *
 * usage: ioctl_rtt PATH COUNT [step|telemetry] [INTERVAL_US]
 * With INTERVAL_US, one ioctl is issued every INTERVAL_US microseconds
 * (absolute deadlines, so a slow answer does not shift the schedule).
 */
#include <linux/kv_cpu.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct kv_cpu_step_info step = { 0 };
	struct kv_cpu_telemetry_info tel;
	int telemetry, fd, i, n;
	long long *t, interval_ns, next;

	if (argc < 3) {
		fprintf(stderr, "usage: %s PATH COUNT [step|telemetry]\n", argv[0]);
		return 2;
	}
	n = atoi(argv[2]);
	telemetry = argc > 3 && !strcmp(argv[3], "telemetry");
	interval_ns = argc > 4 ? atoll(argv[4]) * 1000LL : 0;
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	t = calloc(n, sizeof(*t));
	next = now_ns();
	for (i = 0; i < n; i++) {
		long long t0;
		int r;

		if (interval_ns) {
			struct timespec ts;

			next += interval_ns;
			ts.tv_sec = next / 1000000000LL;
			ts.tv_nsec = next % 1000000000LL;
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
		t0 = now_ns();

		step.step = i;
		r = telemetry ? ioctl(fd, KV_CPU_GET_TELEMETRY, &tel)
			      : ioctl(fd, KV_CPU_STEP_ADVANCE, &step);
		t[i] = now_ns() - t0;
		if (r) {
			perror("ioctl");
			return 1;
		}
	}
	qsort(t, n, sizeof(*t), cmp);
	printf("%lld %lld %lld %lld %lld\n", t[n / 4], t[n / 2], t[3 * n / 4],
	       t[n * 99 / 100], t[n - 1]);
	return 0;
}
