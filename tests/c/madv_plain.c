/*
 * madv_plain: a program that never uses advice 104..106 must behave the same
 * with the filter and without it.  It runs a deterministic mix of system
 * calls (getppid, read of /dev/zero, mmap/munmap, madvise with the usual
 * advice values and some invalid ones, mprotect, a pipe to a forked child,
 * threads, posix_spawn of /bin/echo) and prints what each returned.
 *
 *   madv_plain
 *
 * Every line but the last ("status Seccomp=S NoNewPrivs=N", the one thing
 * that differs under the filter) must be identical in both runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void result(const char *name, long rc)
{
	printf("%s rc=%ld errno=%d\n", name, rc, rc < 0 ? errno : 0);
}

static void *thread_main(void *arg)
{
	long *sum = arg;
	for (int i = 0; i < 1000; i++)
		*sum += syscall(SYS_getppid) > 0;
	return NULL;
}

int main(void)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const size_t len = 64 * page;
	long same = 0, got = 0, sums[4] = { 0 };
	pid_t ppid = getppid(), child;
	unsigned char *p, byte;
	unsigned long check = 0;
	pthread_t t[4];
	char buf[64];
	int zero, pfd[2], st;
	char *echo_argv[] = { "/bin/echo", "spawned", NULL };

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < 100000; i++)
		same += getppid() == ppid;
	printf("getppid same=%ld\n", same);

	zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	for (int i = 0; i < 10000; i++)
		got += read(zero, &byte, 1) == 1 && byte == 0;
	close(zero);
	printf("read_zero ok=%ld\n", got);

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 7);
	result("madv_dontneed", madvise(p, len / 2, MADV_DONTNEED));
	result("madv_willneed", madvise(p, len, MADV_WILLNEED));
	result("madv_normal", madvise(p, len, MADV_NORMAL));
	result("madv_random", madvise(p, len, MADV_RANDOM));
	result("madv_sequential", madvise(p, len, MADV_SEQUENTIAL));
	result("madv_cold", madvise(p + len / 2, page, MADV_COLD));
	result("madv_free", madvise(p + len - page, page, MADV_FREE));
	result("madv_dontfork", madvise(p, page, MADV_DONTFORK));
	result("madv_dofork", madvise(p, page, MADV_DOFORK));
	result("madv_103", madvise(p, page, 103));
	result("madv_107", madvise(p, page, 107));
	result("madv_bad_align", madvise(p + 1, page, MADV_DONTNEED));
	result("madv_syscall_4200", syscall(SYS_madvise, p, page, 4200L));
	for (size_t i = 0; i < len - page; i++)
		check = check * 31 + p[i];
	printf("checksum=%lu\n", check);
	result("mprotect", mprotect(p, page, PROT_READ));
	result("munmap", munmap(p, len));

	if (pipe(pfd) != 0)
		return 2;
	child = fork();
	if (child == 0) {
		const char msg[] = "from child";
		close(pfd[0]);
		_exit(write(pfd[1], msg, sizeof(msg)) == sizeof(msg) ? 0 : 1);
	}
	close(pfd[1]);
	memset(buf, 0, sizeof(buf));
	printf("pipe read=%zd '%s'\n", read(pfd[0], buf, sizeof(buf)), buf);
	close(pfd[0]);
	waitpid(child, &st, 0);
	printf("child status=%d\n", st);

	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, thread_main, &sums[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("threads %ld %ld %ld %ld\n", sums[0], sums[1], sums[2], sums[3]);

	if (posix_spawn(&child, echo_argv[0], NULL, NULL, echo_argv, environ) == 0) {
		waitpid(child, &st, 0);
		printf("spawn status=%d\n", st);
	}

	FILE *f = fopen("/proc/self/status", "r");
	char line[256], sec[32] = "?", nnp[32] = "?";
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		sscanf(line, "Seccomp: %31s", sec);
		sscanf(line, "NoNewPrivs: %31s", nnp);
	}
	if (f != NULL)
		fclose(f);
	printf("status Seccomp=%s NoNewPrivs=%s\n", sec, nnp);
	return 0;
}
