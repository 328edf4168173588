/*
 * madv_ids: who am I.  Installed setuid root, it shows what no_new_privs
 * does to a setuid program run under the filter by an unprivileged user.
 *
 *   madv_ids      prints "uid=U euid=E NoNewPrivs=N Seccomp=S"
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	char line[256], sec[32] = "?", nnp[32] = "?";
	FILE *f = fopen("/proc/self/status", "r");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		sscanf(line, "Seccomp: %31s", sec);
		sscanf(line, "NoNewPrivs: %31s", nnp);
	}
	if (f != NULL)
		fclose(f);
	printf("uid=%d euid=%d NoNewPrivs=%s Seccomp=%s\n", (int)getuid(), (int)geteuid(), nnp, sec);
	return 0;
}
