/* A reader as a user runs one: its own process, reading a file whole (as
 * `cat` does) or scraping http://127.0.0.1:PORT/metrics, every PERIOD
 * seconds until SECONDS have passed, after an offset.  Prints one line a
 * read: its time and how long this process itself waited to run meanwhile
 * (its schedstat), in ms: what the daemon made it wait is the difference;
 * then when it began (CLOCK_MONOTONIC, s), to find what overlapped it.
 *
 *   read_loop file PATH PERIOD SECONDS OFFSET
 *   read_loop http PORT PERIOD SECONDS OFFSET
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ms this thread has waited on a run queue so far */
static double waited(void)
{
	unsigned long long run = 0, wait = 0;
	FILE *f = fopen("/proc/thread-self/schedstat", "r");

	if (f) {
		if (fscanf(f, "%llu %llu", &run, &wait) != 2)
			wait = 0;
		fclose(f);
	}
	return wait / 1e6;
}

static int read_file(const char *path)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		;
	close(fd);
	return n < 0 ? -1 : 0;
}

static int scrape(int port)
{
	static const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0
	    || write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
		if (s >= 0)
			close(s);
		return -1;
	}
	while ((n = read(s, buf, sizeof buf)) > 0)
		;
	close(s);
	return n < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	double period, end, t0, w0;
	int http;

	if (argc != 6 || (strcmp(argv[1], "file") && strcmp(argv[1], "http"))) {
		fprintf(stderr, "usage: %s file PATH|http PORT PERIOD SECONDS OFFSET\n", argv[0]);
		return 2;
	}
	http = !strcmp(argv[1], "http");
	period = atof(argv[3]);
	end = now() + atof(argv[4]);
	usleep((useconds_t)(atof(argv[5]) * 1e6));
	while (now() < end) {
		usleep((useconds_t)(period * 1e6));
		w0 = waited();
		t0 = now();
		if ((http ? scrape(atoi(argv[2])) : read_file(argv[2])) < 0) {
			perror(argv[2]);
			return 1;
		}
		printf("%.3f %.3f %.6f\n", (now() - t0) * 1e3, waited() - w0, t0);
		fflush(stdout);
	}
	return 0;
}
