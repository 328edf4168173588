/*
 * cuse_smoke: the smallest CUSE character device that answers ioctls, used
 * to prove that a real kernel's CUSE path works under User-Mode Linux
 * (scripts/uml/cuse-smoke.sh) before the kvcpu-dev daemon is run there.
 *
 * Creates /dev/kvsmoke0 (DEVNAME=kvsmoke0) and answers:
 *   KVSMOKE_GET  _IOR('K', 0x70, __u64)  -> 8 bytes: the stored value
 *   KVSMOKE_SET  _IOW('K', 0x71, __u64)  <- 8 bytes: store a value
 *   anything else                        -> ENOTTY
 * The stored value starts at 0x1122334455667788.
 *
 * Restricted ioctl mode (no CUSE_UNRESTRICTED_IOCTL): the kernel takes the
 * payload sizes from the _IOR/_IOW encoding, exactly as for the KV-CPU
 * ioctls, so in_buf/out_bufsz arrive already sized and no retry dance is
 * needed.  The retry branch below is kept so the server also behaves if
 * someone flips the flag.
 *
 * Build: gcc -Wall -O2 -o cuse_smoke cuse_smoke.c $(pkg-config --cflags --libs fuse3)
 * Run:   ./cuse_smoke -f          (foreground; SIGTERM/SIGINT remove the node)
 */
#define FUSE_USE_VERSION 35

#include <cuse_lowlevel.h>
#include <fuse_opt.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#define KVSMOKE_GET _IOR('K', 0x70, uint64_t)
#define KVSMOKE_SET _IOW('K', 0x71, uint64_t)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t value = 0x1122334455667788ULL;

static void smoke_open(fuse_req_t req, struct fuse_file_info *fi)
{
	fuse_reply_open(req, fi);
}

static void smoke_ioctl(fuse_req_t req, int cmd, void *arg,
			struct fuse_file_info *fi, unsigned int flags,
			const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	uint64_t v;
	(void)fi;

	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	switch ((unsigned int)cmd) {
	case KVSMOKE_GET:
		if (out_bufsz < sizeof(v)) {
			struct iovec iov = { arg, sizeof(v) };
			fuse_reply_ioctl_retry(req, NULL, 0, &iov, 1);
			return;
		}
		pthread_mutex_lock(&lock);
		v = value;
		pthread_mutex_unlock(&lock);
		fuse_reply_ioctl(req, 0, &v, sizeof(v));
		return;
	case KVSMOKE_SET:
		if (in_bufsz < sizeof(v)) {
			struct iovec iov = { arg, sizeof(v) };
			fuse_reply_ioctl_retry(req, &iov, 1, NULL, 0);
			return;
		}
		memcpy(&v, in_buf, sizeof(v));
		pthread_mutex_lock(&lock);
		value = v;
		pthread_mutex_unlock(&lock);
		fuse_reply_ioctl(req, 0, NULL, 0);
		return;
	default:
		fuse_reply_err(req, ENOTTY);
	}
}

static const struct cuse_lowlevel_ops smoke_ops = {
	.open = smoke_open,
	.ioctl = smoke_ioctl,
};

int main(int argc, char **argv)
{
	const char *dev_info_argv[] = { "DEVNAME=kvsmoke0" };
	struct cuse_info ci;

	memset(&ci, 0, sizeof(ci));
	ci.dev_info_argc = 1;
	ci.dev_info_argv = dev_info_argv;
	ci.flags = 0; /* restricted ioctls: sizes come from the ioctl number */

	/* Parses -f (foreground), -d (debug), -s (single-threaded), opens
	 * /dev/cuse, installs SIGTERM/SIGINT handlers and runs the loop. */
	return cuse_lowlevel_main(argc, argv, &ci, &smoke_ops, NULL);
}
