/*
 * madv_forkexec: the filter follows fork, threads, exec and posix_spawn;
 * every process and thread under it reaches the same supervisor.
 *
 *   madv_forkexec PROG [ARGS...]
 *
 * The parent issues HOT; child 1 (fork) issues EVICT and then execs PROG
 * ARGS; child 2 (fork, no exec) issues PREFETCH(t=5, W=9) and starts a
 * thread that issues HOT; child 3 is posix_spawn(PROG ARGS) (vfork-style
 * clone); the parent issues EVICT after they all exit.  Output as madv_rfc:
 * "expect pid=TID ..." for each hint of its own, "FAIL ..." on an error,
 * then "done fail=N" (N counts the children's failures too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MADV_KV_HOT 104
#define MADV_KV_EVICT 105
#define MADV_KV_PREFETCH 106

extern char **environ;

static char *page;
static size_t pagesz;
static int fails;

static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0 && write(1, buf, (size_t)n) < 0)
		_exit(3);
}

static void hint(const char *who, int advice, uint64_t len)
{
	if (madvise(page, (size_t)len, advice) != 0) {
		say("FAIL %s advice=%d errno=%d\n", who, advice, errno);
		fails++;
	} else if (advice == MADV_KV_PREFETCH) {
		say("expect pid=%d advice=PREFETCH addr=%p t=%u W=%u\n", (int)gettid(), page,
		    (unsigned)(uint32_t)len, (unsigned)(len >> 32));
	} else {
		say("expect pid=%d advice=%s addr=%p len=%llu\n", (int)gettid(),
		    advice == MADV_KV_HOT ? "HOT" : "EVICT", page, (unsigned long long)len);
	}
}

static void *thread_hot(void *arg)
{
	(void)arg;
	hint("child2-thread", MADV_KV_HOT, pagesz);
	return NULL;
}

static int reap(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 1;
	return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(int argc, char **argv)
{
	pid_t c1, c2, c3;
	pthread_t t;

	if (argc < 2) {
		fprintf(stderr, "usage: madv_forkexec PROG [ARGS...]\n");
		return 64;
	}
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	page = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return 2;
	hint("parent", MADV_KV_HOT, pagesz);

	c1 = fork();
	if (c1 == 0) {
		hint("child1", MADV_KV_EVICT, pagesz);
		execvp(argv[1], &argv[1]);
		say("FAIL exec %s errno=%d\n", argv[1], errno);
		_exit(1);
	}
	if (reap(c1)) {
		say("FAIL child1 (exec'd %s) failed\n", argv[1]);
		fails++;
	}
	c2 = fork();
	if (c2 == 0) {
		hint("child2", MADV_KV_PREFETCH, ((uint64_t)9 << 32) | 5);
		pthread_create(&t, NULL, thread_hot, NULL);
		pthread_join(t, NULL);
		_exit(fails ? 1 : 0);
	}
	if (reap(c2)) {
		say("FAIL child2 failed\n");
		fails++;
	}
	if (posix_spawnp(&c3, argv[1], NULL, NULL, &argv[1], environ) != 0 || reap(c3)) {
		say("FAIL child3 (posix_spawn %s) failed\n", argv[1]);
		fails++;
	}
	hint("parent-after", MADV_KV_EVICT, pagesz);
	say("done fail=%d\n", fails);
	return fails ? 1 : 0;
}
