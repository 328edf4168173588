/*
 * madv_rfc: every line of the madvise RFC's "What a caller observes", as a
 * runtime written for the RFC would call it.
 *
 *   madv_rfc libc|syscall [rfc|stock|unchecked]
 *
 * libc: madvise(); syscall: syscall(SYS_madvise, ...).  The expectation set:
 *   rfc        served as the RFC says (under the supervisor)
 *   stock      a stock kernel, nothing in between: 104..106 are EINVAL
 *   unchecked  served, but the supervisor cannot look at our memory
 *              (another user): the EFAULT cases return 0 and reach apply()
 *
 * Output, one line each:
 *   ok NAME rc=R [errno=E]               the call returned what was expected
 *   FAIL NAME got ... want ...
 *   expect pid=TID advice=HOT addr=0x.. len=N      a call that must reach
 *   expect pid=TID advice=PREFETCH addr=0x.. t=T W=W   apply(), in order
 *   done pass=N fail=M
 * Exit 0 iff nothing failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MADV_KV_HOT 104
#define MADV_KV_EVICT 105
#define MADV_KV_PREFETCH 106

#define PREFETCH_LEN(t, w) (((uint64_t)(w) << 32) | (uint32_t)(t))

enum want { WANT_OK, WANT_EINVAL, WANT_EFAULT };

static int use_syscall;
static int mode_stock, mode_unchecked;
static int npass, nfail;

static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0 && write(1, buf, (size_t)n) < 0)
		exit(3);
}

static const char *ename(int e)
{
	static char other[32];

	switch (e) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case ENOSYS: return "ENOSYS";
	case ENOMEM: return "ENOMEM";
	case EINTR: return "EINTR";
	case EPERM: return "EPERM";
	default:
		snprintf(other, sizeof(other), "errno%d", e);
		return other;
	}
}

static const char *aname(uint64_t advice)
{
	switch ((int)advice) {
	case MADV_KV_HOT: return "HOT";
	case MADV_KV_EVICT: return "EVICT";
	default: return "PREFETCH";
	}
}

static long call(void *addr, uint64_t len, uint64_t advice)
{
	if (use_syscall)
		return syscall(SYS_madvise, addr, len, advice);
	return madvise(addr, (size_t)len, (int)advice);
}

/* One KV call: check what it returned against the RFC (adjusted for the
 * mode), and announce the hint when it must reach apply(). */
static void kv(const char *name, void *addr, uint64_t len, uint64_t advice, enum want want)
{
	long rc;
	int e;
	int want_err;

	if (mode_stock)
		want = WANT_EINVAL;
	else if (mode_unchecked && want == WANT_EFAULT)
		want = WANT_OK;
	want_err = want == WANT_OK ? 0 : want == WANT_EINVAL ? EINVAL : EFAULT;
	errno = 0;
	rc = call(addr, len, advice);
	e = rc == 0 ? 0 : errno;
	if ((rc == 0 && want_err == 0) || (rc == -1 && e == want_err)) {
		npass++;
		say("ok %s rc=%ld errno=%s\n", name, rc, ename(e));
	} else {
		nfail++;
		say("FAIL %s got rc=%ld errno=%s want %s\n", name, rc, ename(e), ename(want_err));
	}
	if (want == WANT_OK && rc == 0) {
		int a = (int)(uint32_t)advice;
		pid_t tid = gettid();
		if (a == MADV_KV_PREFETCH)
			say("expect pid=%d advice=PREFETCH addr=0x%llx t=%u W=%u\n", tid,
			    (unsigned long long)(uintptr_t)addr, (unsigned)(uint32_t)len,
			    (unsigned)(len >> 32));
		else
			say("expect pid=%d advice=%s addr=0x%llx len=%llu\n", tid, aname((uint64_t)a),
			    (unsigned long long)(uintptr_t)addr, (unsigned long long)len);
	}
}

/* A non-KV call: must return what the kernel says for it (plain errno). */
static void plain(const char *name, void *addr, size_t len, int advice, int want_err)
{
	long rc;
	int e;

	errno = 0;
	rc = call(addr, len, (uint64_t)(unsigned)advice);
	e = rc == 0 ? 0 : errno;
	if ((rc == 0 && want_err == 0) || (rc == -1 && e == want_err)) {
		npass++;
		say("ok %s rc=%ld errno=%s\n", name, rc, ename(e));
	} else {
		nfail++;
		say("FAIL %s got rc=%ld errno=%s want %s\n", name, rc, ename(e), ename(want_err));
	}
}

static void check(const char *name, int cond)
{
	if (cond) {
		npass++;
		say("ok %s\n", name);
	} else {
		nfail++;
		say("FAIL %s\n", name);
	}
}

static void *map(size_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	return p;
}

/* A page that was mapped a moment ago (a later mmap may take the address
 * again: use it at once). */
static char *just_unmapped(size_t page)
{
	char *p = map(page, PROT_READ | PROT_WRITE);

	munmap(p, page);
	return p;
}

int main(int argc, char **argv)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const size_t mib16 = 16u << 20;
	char *p4, *p16, *gone, *two, *hole, *none, *ro, *file;
	char tmpl[] = "/tmp/madv_rfc.XXXXXX";
	int fd;

	if (argc < 2 || (strcmp(argv[1], "libc") != 0 && strcmp(argv[1], "syscall") != 0)) {
		fprintf(stderr, "usage: madv_rfc libc|syscall [rfc|stock|unchecked]\n");
		return 64;
	}
	use_syscall = strcmp(argv[1], "syscall") == 0;
	if (argc > 2) {
		mode_stock = strcmp(argv[2], "stock") == 0;
		mode_unchecked = strcmp(argv[2], "unchecked") == 0;
	}

	p4 = map(page, PROT_READ | PROT_WRITE);
	memset(p4, 0x5a, page);
	p16 = map(mib16, PROT_READ | PROT_WRITE);   /* never touched */

	/* A valid call on mapped, page-aligned memory returns 0. */
	kv("hot_4k", p4, page, MADV_KV_HOT, WANT_OK);
	kv("evict_4k", p4, page, MADV_KV_EVICT, WANT_OK);
	kv("hot_16m", p16, mib16, MADV_KV_HOT, WANT_OK);
	kv("evict_16m", p16, mib16, MADV_KV_EVICT, WANT_OK);
	kv("prefetch_1_64", p4, PREFETCH_LEN(1, 64), MADV_KV_PREFETCH, WANT_OK);
	kv("prefetch_42_128", p4, PREFETCH_LEN(42, 128), MADV_KV_PREFETCH, WANT_OK);
	kv("prefetch_0_64", p4, PREFETCH_LEN(0, 64), MADV_KV_PREFETCH, WANT_OK);
	kv("prefetch_max_256", p16, PREFETCH_LEN(0xFFFFFFFFu, 256), MADV_KV_PREFETCH, WANT_OK);
	/* PREFETCH has no len == 0 check: len is (W << 32) | t. */
	kv("prefetch_0_0", p4, PREFETCH_LEN(0, 0), MADV_KV_PREFETCH, WANT_OK);
	/* len is not rounded or range-checked beyond != 0 (the RFC lists no
	 * such check; apply() gets it as given). */
	kv("hot_len_100", p4, 100, MADV_KV_HOT, WANT_OK);
	kv("evict_len_huge", p4, UINT64_C(1) << 63, MADV_KV_EVICT, WANT_OK);

	/* An unaligned start: EINVAL, checked before anything else. */
	kv("hot_unaligned_1", p4 + 1, page, MADV_KV_HOT, WANT_EINVAL);
	kv("evict_unaligned_half", p4 + page / 2, page, MADV_KV_EVICT, WANT_EINVAL);
	kv("prefetch_unaligned_last", p4 + page - 1, PREFETCH_LEN(1, 64), MADV_KV_PREFETCH,
	   WANT_EINVAL);
	kv("hot_unaligned_16m", p16 + 8, mib16 - page, MADV_KV_HOT, WANT_EINVAL);

	/* len == 0 for HOT or EVICT: EINVAL. */
	kv("hot_len0", p4, 0, MADV_KV_HOT, WANT_EINVAL);
	kv("evict_len0", p4, 0, MADV_KV_EVICT, WANT_EINVAL);

	/* A start that is not mapped (just unmapped): EFAULT. */
	gone = just_unmapped(page);
	kv("hot_unmapped", gone, page, MADV_KV_HOT, WANT_EFAULT);
	kv("evict_unmapped", gone, page, MADV_KV_EVICT, WANT_EFAULT);
	kv("prefetch_unmapped", gone, PREFETCH_LEN(7, 64), MADV_KV_PREFETCH, WANT_EFAULT);
	kv("hot_null", NULL, page, MADV_KV_HOT, WANT_EFAULT);
	kv("hot_noncanonical", (void *)(uintptr_t)UINT64_C(0x8000000000000000), page, MADV_KV_HOT,
	   WANT_EFAULT);

	/* The order of the checks. */
	kv("order_unaligned_unmapped", gone + 1, page, MADV_KV_HOT, WANT_EINVAL);
	kv("order_unaligned_len0", p4 + 1, 0, MADV_KV_EVICT, WANT_EINVAL);
	kv("order_len0_unmapped", gone, 0, MADV_KV_HOT, WANT_EINVAL);

	/* Only the first page is looked at. */
	two = map(2 * page, PROT_READ | PROT_WRITE);
	munmap(two + page, page);
	kv("first_mapped_rest_not", two, 2 * page, MADV_KV_HOT, WANT_OK);
	hole = map(2 * page, PROT_READ | PROT_WRITE);
	munmap(hole, page);
	kv("first_unmapped_rest_mapped", hole, 2 * page, MADV_KV_EVICT, WANT_EFAULT);

	/* Mappings of other kinds: read-only and file-backed are mapped; PROT_NONE
	 * cannot be pinned (nor read), so EFAULT as the kernel side would say. */
	ro = map(page, PROT_READ);
	kv("hot_readonly", ro, page, MADV_KV_HOT, WANT_OK);
	none = map(page, PROT_NONE);
	kv("hot_prot_none", none, page, MADV_KV_HOT, WANT_EFAULT);
	fd = mkstemp(tmpl);
	if (fd < 0 || ftruncate(fd, (off_t)page) != 0) {
		perror("mkstemp");
		return 2;
	}
	unlink(tmpl);
	file = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (file == MAP_FAILED) {
		perror("mmap file");
		return 2;
	}
	kv("evict_file_shared", file, page, MADV_KV_EVICT, WANT_OK);

	/* The advice is madvise's int: the high half of the register is not
	 * looked at (by the kernel, nor by the filter). */
	if (use_syscall)
		kv("hot_advice_high_bits", p4, page, UINT64_C(0xabcd000000000000) | MADV_KV_HOT, WANT_OK);

	/* Other advice values keep their normal meaning: HOT then DONTNEED, and
	 * the page faults back in zero-filled. */
	memset(p4, 0xab, page);
	kv("hot_before_dontneed", p4, page, MADV_KV_HOT, WANT_OK);
	plain("dontneed", p4, page, MADV_DONTNEED, 0);
	check("dontneed_zero_filled", p4[0] == 0 && p4[page - 1] == 0);
	p4[1] = 7;
	check("dontneed_writable", p4[1] == 7);
	plain("willneed", p16, mib16, MADV_WILLNEED, 0);
	plain("normal", p4, page, MADV_NORMAL, 0);
	plain("dontneed_unaligned", p4 + 1, page, MADV_DONTNEED, EINVAL);
	plain("unknown_107", p4, page, 107, EINVAL);
	plain("unknown_103_plus_4096", p4, page, 4096 + MADV_KV_HOT, EINVAL);
	plain("negative_advice", p4, page, -MADV_KV_HOT, EINVAL);
	plain("dontneed_unmapped", just_unmapped(page), page, MADV_DONTNEED, ENOMEM);

	say("done pass=%d fail=%d\n", npass, nfail);
	return nfail ? 1 : 0;
}
