/*
 * kvclient: a KV-CPU client as a runtime writes it in C, built against
 * <linux/kv_cpu.h> (gcc -I uapi).  The test suite drives the device node
 * through it and asserts on what it prints.
 *
 *   kvclient PATH step N
 *   kvclient PATH hot|evict|share VA LEN [TARGET]     (struct zeroed first)
 *   kvclient PATH prefetch VA LEN TARGET
 *   kvclient PATH weights R F S D EVICT PREFETCH
 *   kvclient PATH telemetry         fifteen name=value lines, decimal
 *   kvclient PATH null CMD          ioctl(fd, KV_CPU_<CMD>, NULL)
 *   kvclient PATH raw NUMBER        ioctl(fd, NUMBER, zeroed 16 KiB buffer)
 *   kvclient PATH readwrite         read() and write() on the node
 *   kvclient PATH loop N            N mixed commands: step, hot, evict,
 *                                   prefetch, share, step, ...
 *   kvclient PATH mixed SECONDS BLOCKS SEED
 *                                   random step, hot, evict, prefetch and
 *                                   share over BLOCKS blocks of 2 MiB for
 *                                   SECONDS; prints "done N" and each
 *                                   kind's count in that order
 *   kvclient PATH wloop N           SET_WEIGHTS (k,k,k,k,k,k) for k = 1..N
 *   kvclient PATH tloop N           N GET_TELEMETRY; counts snapshots whose
 *                                   six weights differ
 *
 * Output: "ok" (exit 0) or "error ENAME" (exit 1) for one command; a failed
 * open prints "open ENAME" (exit 3); usage errors exit 64.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/kv_cpu.h>

static const char *ename(int e)
{
	static char other[32];

	switch (e) {
	case EINVAL: return "EINVAL";
	case ENOTTY: return "ENOTTY";
	case EFAULT: return "EFAULT";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ENOTCONN: return "ENOTCONN";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	}
	snprintf(other, sizeof(other), "E%d", e);
	return other;
}

static void usage(void)
{
	fprintf(stderr, "usage: kvclient PATH COMMAND [ARGS...] (see the source)\n");
	exit(64);
}

static unsigned long long num(const char *s)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *s == '\0' || *end != '\0') {
		fprintf(stderr, "kvclient: bad number %s\n", s);
		exit(64);
	}
	return v;
}

static int report(int rc)
{
	if (rc == 0) {
		puts("ok");
		return 0;
	}
	printf("error %s\n", ename(errno));
	return 1;
}

static int do_step(int fd, unsigned long long step)
{
	struct kv_cpu_step_info s;

	memset(&s, 0, sizeof(s));
	s.step = step;
	return ioctl(fd, KV_CPU_STEP_ADVANCE, &s);
}

static int do_block(int fd, unsigned long cmd, unsigned long long va,
		    unsigned long long len, unsigned long long target)
{
	struct kv_cpu_block_info b;

	memset(&b, 0, sizeof(b));
	b.va = va;
	b.len = len;
	b.target_step = target;
	return ioctl(fd, cmd, &b);
}

static int do_weights(int fd, const unsigned int v[6])
{
	struct kv_cpu_weights_info w;

	memset(&w, 0, sizeof(w));
	w.w_r = v[0];
	w.w_f = v[1];
	w.w_s = v[2];
	w.w_d = v[3];
	w.evict_thresh = v[4];
	w.prefetch_thresh = v[5];
	return ioctl(fd, KV_CPU_SET_WEIGHTS, &w);
}

static unsigned long block_cmd(const char *name)
{
	if (!strcmp(name, "hot")) return KV_CPU_MARK_HOT;
	if (!strcmp(name, "evict")) return KV_CPU_EVICT;
	if (!strcmp(name, "prefetch")) return KV_CPU_PREFETCH;
	if (!strcmp(name, "share")) return KV_CPU_SHARE_PREFIX;
	return 0;
}

static unsigned long any_cmd(const char *name)
{
	if (!strcmp(name, "step")) return KV_CPU_STEP_ADVANCE;
	if (!strcmp(name, "weights")) return KV_CPU_SET_WEIGHTS;
	if (!strcmp(name, "telemetry")) return KV_CPU_GET_TELEMETRY;
	return block_cmd(name);
}

static void print_telemetry(const struct kv_cpu_telemetry_info *t)
{
#define P(f) printf(#f "=%llu\n", (unsigned long long)t->f)
	P(current_step); P(step_count); P(hot_count); P(evict_count);
	P(prefetch_count); P(share_count); P(last_va); P(last_len);
	P(last_target_step); P(w_r); P(w_f); P(w_s); P(w_d);
	P(evict_thresh); P(prefetch_thresh);
#undef P
}

static int loop(int fd, unsigned long long n)
{
	for (unsigned long long i = 0; i < n; i++) {
		unsigned long long va = 0x100000000ULL + i * 4096;
		int rc;

		switch (i % 5) {
		case 0: rc = do_step(fd, i); break;
		case 1: rc = do_block(fd, KV_CPU_MARK_HOT, va, 4096, 0); break;
		case 2: rc = do_block(fd, KV_CPU_EVICT, va, 4096, 0); break;
		case 3: rc = do_block(fd, KV_CPU_PREFETCH, va, 4096, i); break;
		default: rc = do_block(fd, KV_CPU_SHARE_PREFIX, va, 4096, 0); break;
		}
		if (rc) {
			printf("error %s at %llu\n", ename(errno), i);
			return 1;
		}
	}
	printf("done %llu\n", n);
	return 0;
}

static int mixed(int fd, double seconds, unsigned long long blocks, unsigned long long seed)
{
	unsigned long long state = seed ? seed : 1, n = 0, kinds[5] = { 0 }, step = 0;
	struct timespec now;
	double until;

	clock_gettime(CLOCK_MONOTONIC, &now);
	until = now.tv_sec + now.tv_nsec / 1e9 + seconds;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec + now.tv_nsec / 1e9 >= until)
			break;
		state ^= state >> 12;	/* xorshift64 */
		state ^= state << 25;
		state ^= state >> 27;
		unsigned long long r = state * 0x2545F4914F6CDD1DULL;
		unsigned long long va = ((r >> 8) % blocks) << 21;
		int k = r % 5, rc;

		switch (k) {
		case 0: rc = do_step(fd, ++step); break;
		case 1: rc = do_block(fd, KV_CPU_MARK_HOT, va, 2 << 20, 0); break;
		case 2: rc = do_block(fd, KV_CPU_EVICT, va, 2 << 20, 0); break;
		case 3: rc = do_block(fd, KV_CPU_PREFETCH, va, 2 << 20, step + 1 + (r >> 40) % 8); break;
		default: rc = do_block(fd, KV_CPU_SHARE_PREFIX, va, 2 << 20, 0); break;
		}
		if (rc) {
			printf("error %s at %llu\n", ename(errno), n);
			return 1;
		}
		kinds[k]++;
		n++;
	}
	printf("done %llu %llu %llu %llu %llu %llu\n", n, kinds[0], kinds[1], kinds[2], kinds[3], kinds[4]);
	return 0;
}

static int wloop(int fd, unsigned long long n)
{
	for (unsigned long long k = 1; k <= n; k++) {
		unsigned int v[6] = { k, k, k, k, k, k };

		if (do_weights(fd, v)) {
			printf("error %s at %llu\n", ename(errno), k);
			return 1;
		}
	}
	printf("done %llu\n", n);
	return 0;
}

static int tloop(int fd, unsigned long long n)
{
	unsigned long long inconsistent = 0, changes = 0;
	unsigned int last = 0;

	for (unsigned long long i = 0; i < n; i++) {
		struct kv_cpu_telemetry_info t;

		memset(&t, 0xAB, sizeof(t));
		if (ioctl(fd, KV_CPU_GET_TELEMETRY, &t)) {
			printf("error %s at %llu\n", ename(errno), i);
			return 1;
		}
		if (t.w_f != t.w_r || t.w_s != t.w_r || t.w_d != t.w_r ||
		    t.evict_thresh != t.w_r || t.prefetch_thresh != t.w_r)
			inconsistent++;
		if (i && t.w_r != last)
			changes++;
		last = t.w_r;
	}
	printf("inconsistent %llu changes %llu\n", inconsistent, changes);
	return 0;
}

int main(int argc, char **argv)
{
	static char big[16384];
	const char *cmd;
	int fd;

	if (argc < 3)
		usage();
	cmd = argv[2];
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		printf("open %s\n", ename(errno));
		return 3;
	}
	if (!strcmp(cmd, "step") && argc == 4)
		return report(do_step(fd, num(argv[3])));
	if (block_cmd(cmd) && (argc == 6 || (argc == 5 && strcmp(cmd, "prefetch"))))
		return report(do_block(fd, block_cmd(cmd), num(argv[3]), num(argv[4]),
				       argc == 6 ? num(argv[5]) : 0));
	if (!strcmp(cmd, "weights") && argc == 9) {
		unsigned int v[6];

		for (int i = 0; i < 6; i++)
			v[i] = (unsigned int)num(argv[3 + i]);
		return report(do_weights(fd, v));
	}
	if (!strcmp(cmd, "telemetry") && argc == 3) {
		struct kv_cpu_telemetry_info t;

		memset(&t, 0xAB, sizeof(t));
		if (ioctl(fd, KV_CPU_GET_TELEMETRY, &t))
			return report(-1);
		print_telemetry(&t);
		return 0;
	}
	if (!strcmp(cmd, "null") && argc == 4) {
		if (!any_cmd(argv[3]))
			usage();
		return report(ioctl(fd, any_cmd(argv[3]), NULL));
	}
	if (!strcmp(cmd, "raw") && argc == 4)
		return report(ioctl(fd, (unsigned long)num(argv[3]), big));
	if (!strcmp(cmd, "readwrite") && argc == 3) {
		char buf[8] = { 0 };
		ssize_t r = read(fd, buf, sizeof(buf));

		printf("read %s\n", r < 0 ? ename(errno) : "ok");
		r = write(fd, buf, sizeof(buf));
		printf("write %s\n", r < 0 ? ename(errno) : "ok");
		return 0;
	}
	if (!strcmp(cmd, "loop") && argc == 4)
		return loop(fd, num(argv[3]));
	if (!strcmp(cmd, "mixed") && argc == 6)
		return mixed(fd, atof(argv[3]), num(argv[4]), num(argv[5]));
	if (!strcmp(cmd, "wloop") && argc == 4)
		return wloop(fd, num(argv[3]));
	if (!strcmp(cmd, "tloop") && argc == 4)
		return tloop(fd, num(argv[3]));
	usage();
	return 64;
}
