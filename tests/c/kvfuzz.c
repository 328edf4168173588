/*
 * kvfuzz: random ioctls on a KV-CPU node, with the expected telemetry
 * tracked exactly (the spec: tests/live/conftest.py SpecDevice).
 *
 *   kvfuzz PATH N SEED
 *
 * Every call picks a command (one of the seven, or an unknown number: the
 * seven's type with another direction, size or number, or a foreign type)
 * and a pointer (a read-write buffer, a read-only page, NULL, an unmapped
 * page, a struct straddling into an unmapped page, a small integer).
 * Expected: a known command with a readable (for _IOW) or writable (for
 * _IOR) argument succeeds, or fails EINVAL for a zero-length block
 * command, and changes the telemetry as the spec says; the same command
 * with an argument the kernel cannot copy fails EFAULT and changes
 * nothing; an unknown number fails and changes nothing.
 *
 * Prints "calls=N ok=.. einval=.. efault=.. unknown=.. mismatches=M", then
 * the expected telemetry as fifteen name=value lines.  Exit 0 if every
 * call returned what was expected, 1 otherwise (the first mismatches are
 * described on stderr), 3 if the node cannot be opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kv_cpu.h>

static uint64_t rng;

static uint64_t next(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static uint64_t pick(uint64_t n) { return next() % n; }

static uint64_t value(void)
{
	switch (pick(6)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return UINT64_MAX;
	case 3: return pick(1 << 20);
	case 4: return 1ULL << pick(64);
	default: return next();
	}
}

enum { PTR_RW, PTR_RO, PTR_NULL, PTR_UNMAPPED, PTR_STRADDLE, PTR_SMALL, PTR_KINDS };

struct known {
	unsigned long cmd;
	int kind;      /* 0 step, 1..4 block (hot evict prefetch share), 5 weights, 6 telemetry */
	size_t size;
	int writes_to_user;
};

static const struct known KNOWN[] = {
	{ KV_CPU_STEP_ADVANCE, 0, sizeof(struct kv_cpu_step_info), 0 },
	{ KV_CPU_MARK_HOT, 1, sizeof(struct kv_cpu_block_info), 0 },
	{ KV_CPU_EVICT, 2, sizeof(struct kv_cpu_block_info), 0 },
	{ KV_CPU_PREFETCH, 3, sizeof(struct kv_cpu_block_info), 0 },
	{ KV_CPU_SHARE_PREFIX, 4, sizeof(struct kv_cpu_block_info), 0 },
	{ KV_CPU_SET_WEIGHTS, 5, sizeof(struct kv_cpu_weights_info), 0 },
	{ KV_CPU_GET_TELEMETRY, 6, sizeof(struct kv_cpu_telemetry_info), 1 },
};
#define NKNOWN (sizeof(KNOWN) / sizeof(KNOWN[0]))

static int is_known(unsigned long cmd)
{
	for (size_t i = 0; i < NKNOWN; i++)
		if (KNOWN[i].cmd == cmd)
			return 1;
	return 0;
}

static unsigned long unknown_number(void)
{
	unsigned long cmd;

	do {
		unsigned dir = pick(4), size = 0, nr, type = 'K';

		switch (pick(4)) {
		case 0: size = pick(4) ? KNOWN[pick(NKNOWN)].size : 0; break;
		case 1: size = pick(4097); break;
		case 2: size = pick(1 << 14); break;
		default: size = (unsigned[]){ 1, 7, 8, 9, 16, 23, 24, 25, 95, 96, 97, 128 }[pick(12)];
		}
		nr = pick(3) ? 1 + pick(7) : pick(256);
		if (pick(8) == 0)
			type = 0xC0 + pick(0x40); /* a foreign type no VFS ioctl uses */
		cmd = _IOC(dir, type, nr, size);
	} while (is_known(cmd));
	return cmd;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned long calls, ok = 0, einval = 0, efault = 0, unknown = 0, bad = 0;
	struct kv_cpu_telemetry_info t, got;
	unsigned char *rw, *ro, *hole, *straddle;
	int fd;

	if (argc != 4)
		return 64;
	calls = strtoul(argv[2], NULL, 0);
	rng = strtoull(argv[3], NULL, 0) * 0x9E3779B97F4A7C15ULL + 1;

	fd = open(argv[1], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("open %s\n", strerror(errno));
		return 3;
	}
	/* rw: 4 pages; ro: 1 page; hole: 1 unmapped page; straddle: a mapped page then a hole */
	rw = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	hole = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rw == MAP_FAILED || ro == MAP_FAILED || hole == MAP_FAILED)
		return 2;
	straddle = hole;
	munmap(hole + page, page);
	hole += page;
	if (ioctl(fd, KV_CPU_GET_TELEMETRY, &t) != 0) {
		printf("error initial telemetry %s\n", strerror(errno));
		return 1;
	}
	memset(ro, 0x5a, page);
	mprotect(ro, page, PROT_READ);

	for (unsigned long i = 0; i < calls; i++) {
		int known = pick(2) == 0;
		const struct known *k = known ? &KNOWN[pick(NKNOWN)] : NULL;
		unsigned long cmd = known ? k->cmd : unknown_number();
		int kind = pick(PTR_KINDS);
		unsigned char *arg;
		int rc, err, want;
		size_t size = known ? k->size : 0;

		for (size_t j = 0; j < 32; j++) { /* 256 bytes of edge values and noise */
			uint64_t v = value();

			memcpy(rw + 8 * j, &v, sizeof(v));
		}
		if (known && k->kind >= 1 && k->kind <= 4 && pick(4) == 0)
			((struct kv_cpu_block_info *)rw)->len = 0;
		switch (kind) {
		case PTR_RW: arg = rw + 8 * pick(16); break;
		case PTR_RO: arg = ro + 8 * pick(16); break;
		case PTR_NULL: arg = NULL; break;
		case PTR_UNMAPPED: arg = hole + 8 * pick(16); break;
		case PTR_STRADDLE: arg = straddle + page - (size > 1 ? 1 + pick(size - 1) : 1); break;
		default: arg = (unsigned char *)(uintptr_t)(1 + pick(4095)); break;
		}
		rc = ioctl(fd, cmd, arg);
		err = rc == 0 ? 0 : errno;
		if (!known) {
			unknown++;
			if (rc == 0) {
				if (bad++ < 10)
					fprintf(stderr, "call %lu: unknown 0x%lx succeeded\n", i, cmd);
			}
			continue;
		}
		{
			int readable = kind == PTR_RW || kind == PTR_RO;
			int writable = kind == PTR_RW;

			want = (k->writes_to_user ? writable : readable) ? 0 : EFAULT;
		}
		if (want == 0) {
			switch (k->kind) {
			case 0: {
				struct kv_cpu_step_info s;

				memcpy(&s, arg, sizeof(s));
				t.current_step = s.step;
				t.step_count++;
				t.last_target_step = s.step;
				break;
			}
			case 1: case 2: case 3: case 4: {
				struct kv_cpu_block_info b;

				memcpy(&b, arg, sizeof(b));
				if (b.len == 0) {
					want = EINVAL;
					break;
				}
				if (k->kind == 1) t.hot_count++;
				if (k->kind == 2) t.evict_count++;
				if (k->kind == 3) t.prefetch_count++;
				if (k->kind == 4) t.share_count++;
				t.last_va = b.va;
				t.last_len = b.len;
				t.last_target_step = b.target_step;
				break;
			}
			case 5: {
				struct kv_cpu_weights_info w;

				memcpy(&w, arg, sizeof(w));
				t.w_r = w.w_r; t.w_f = w.w_f; t.w_s = w.w_s; t.w_d = w.w_d;
				t.evict_thresh = w.evict_thresh;
				t.prefetch_thresh = w.prefetch_thresh;
				break;
			}
			case 6:
				if (memcmp(arg, &t, sizeof(t)) != 0 && bad++ < 10)
					fprintf(stderr, "call %lu: telemetry differs from the expectation\n", i);
				break;
			}
		}
		if (err != want) {
			if (bad++ < 10)
				fprintf(stderr, "call %lu: cmd 0x%lx ptr kind %d: got %s, want %s\n", i, cmd, kind,
					err ? strerror(err) : "success", want ? strerror(want) : "success");
			continue;
		}
		if (want == 0)
			ok++;
		else if (want == EINVAL)
			einval++;
		else
			efault++;
	}
	if (ioctl(fd, KV_CPU_GET_TELEMETRY, &got) != 0 || memcmp(&got, &t, sizeof(t)) != 0) {
		if (bad++ < 10)
			fprintf(stderr, "final telemetry differs from the expectation\n");
	}
	printf("calls=%lu ok=%lu einval=%lu efault=%lu unknown=%lu mismatches=%lu\n", calls, ok, einval,
	       efault, unknown, bad);
	printf("current_step=%llu\nstep_count=%llu\nhot_count=%llu\nevict_count=%llu\n"
	       "prefetch_count=%llu\nshare_count=%llu\nlast_va=%llu\nlast_len=%llu\n"
	       "last_target_step=%llu\nw_r=%u\nw_f=%u\nw_s=%u\nw_d=%u\nevict_thresh=%u\nprefetch_thresh=%u\n",
	       (unsigned long long)t.current_step, (unsigned long long)t.step_count,
	       (unsigned long long)t.hot_count, (unsigned long long)t.evict_count,
	       (unsigned long long)t.prefetch_count, (unsigned long long)t.share_count,
	       (unsigned long long)t.last_va, (unsigned long long)t.last_len,
	       (unsigned long long)t.last_target_step, t.w_r, t.w_f, t.w_s, t.w_d, t.evict_thresh,
	       t.prefetch_thresh);
	close(fd);
	return bad ? 1 : 0;
}
