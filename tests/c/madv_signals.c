/*
 * madv_signals: hints issued while a timer signal keeps arriving.  What a
 * caller sees when a signal lands while its madvise waits for the
 * supervisor depends on whether the filter waits killable once received
 * (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) and on SA_RESTART.
 *
 *   madv_signals N INTERVAL_US restart|norestart
 *
 * Output: "signals tid=T n=N ok=A eintr=B other=C sigs=S" (A + B + C = N);
 * exit 0.  The runner compares A with the hints the supervisor applied.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#define MADV_KV_HOT 104

static volatile sig_atomic_t sigs;

static void on_alarm(int sig)
{
	(void)sig;
	sigs++;
}

int main(int argc, char **argv)
{
	long n, us, ok = 0, eintr = 0, other = 0;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct sigaction sa;
	struct itimerval it;
	void *p;

	if (argc != 4 || (n = atol(argv[1])) < 1 || (us = atol(argv[2])) < 1) {
		fprintf(stderr, "usage: madv_signals N INTERVAL_US restart|norestart\n");
		return 64;
	}
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = strcmp(argv[3], "restart") == 0 ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	it.it_interval.tv_sec = it.it_value.tv_sec = 0;
	it.it_interval.tv_usec = it.it_value.tv_usec = us;
	setitimer(ITIMER_REAL, &it, NULL);
	for (long i = 0; i < n; i++) {
		if (madvise(p, page, MADV_KV_HOT) == 0)
			ok++;
		else if (errno == EINTR)
			eintr++;
		else
			other++;
	}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	printf("signals tid=%d n=%ld ok=%ld eintr=%ld other=%ld sigs=%ld\n", (int)gettid(), n, ok,
	       eintr, other, (long)sigs);
	return 0;
}
