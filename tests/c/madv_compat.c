/*
 * madv_compat: the filter notifies the native ABI only.  From a 64-bit
 * x86 process, `int $0x80` enters the i386 compat table (audit arch I386)
 * and a syscall number with __X32_SYSCALL_BIT set is x32's: madvise(104)
 * through either must reach the kernel untouched, and the kernel answers as
 * it would without the filter (compat: EINVAL; x32: EINVAL, or ENOSYS where
 * the kernel has no x32 ABI).
 *
 *   madv_compat     prints "i386 rc=R errno=E" and "x32 rc=R errno=E"
 *                   (or "skip" off x86_64); exit 0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
#if defined(__x86_64__)
	/* below 4 GiB, so that the 32-bit ABI can name it */
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
		       -1, 0);
	long rc;

	if (p == MAP_FAILED)
		return 2;
	/* i386 __NR_madvise is 219 */
	__asm__ volatile("int $0x80"
			 : "=a"(rc)
			 : "0"(219L), "b"((long)(unsigned long)p), "c"(4096L), "d"(104L)
			 : "memory", "r8", "r9", "r10", "r11");
	printf("i386 rc=%ld errno=%ld\n", rc < 0 ? -1L : rc, rc < 0 ? -rc : 0L);
	errno = 0;
	rc = syscall(0x40000000L | SYS_madvise, p, 4096L, 104L);
	printf("x32 rc=%ld errno=%d\n", rc, rc < 0 ? errno : 0);
#else
	printf("skip\n");
#endif
	return 0;
}
