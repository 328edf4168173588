/*
 * madv_nested: a program that wants a seccomp listener of its own (as
 * container runtimes and sandboxes do).  The kernel allows one listener per
 * filter chain, so under the madvise filter (while its supervisor holds the
 * listener) this fails with EBUSY.
 *
 *   madv_nested     prints "nested_listener ok" or "nested_listener EBUSY"
 *                   (or "... errnoN"); exit 0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = allow };
	long fd;

	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd >= 0)
		printf("nested_listener ok\n");
	else if (errno == EBUSY)
		printf("nested_listener EBUSY\n");
	else
		printf("nested_listener errno%d\n", errno);
	return 0;
}
