/*
 * fuse_smoke: the FUSE-only counterpart of cuse_smoke.c.  Mounts a FUSE
 * file system whose root *is* a regular file over an existing regular file
 * (the shape of kvcpu-dev's fallback when /dev/cuse is missing) and answers
 * the same two ioctls on it:
 *   KVSMOKE_GET  _IOR('K', 0x70, __u64)  -> 8 bytes
 *   KVSMOKE_SET  _IOW('K', 0x71, __u64)  <- 8 bytes
 * On a FUSE regular file the kernel always uses restricted ioctl mode, so
 * the sizes come from the ioctl number.
 *
 * Used by scripts/uml/cuse-smoke.sh (inside UML) and scripts/docker-smoke.sh
 * (inside a container) to check that a FUSE mount and FUSE ioctls work there.
 *
 * Build: gcc -Wall -O2 -o fuse_smoke fuse_smoke.c $(pkg-config --cflags --libs fuse3)
 * Run:   touch /tmp/kvsmoke0 && ./fuse_smoke /tmp/kvsmoke0
 *        (foreground, single-threaded; SIGTERM/SIGINT unmount and exit)
 */
#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define KVSMOKE_GET _IOR('K', 0x70, uint64_t)
#define KVSMOKE_SET _IOW('K', 0x71, uint64_t)

static uint64_t value = 0x1122334455667788ULL; /* single-threaded loop */

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	(void)fi;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&st, 0, sizeof(st));
	st.st_ino = ino;
	/* Must stay a regular file: libfuse mounts with rootmode taken from
	 * the mount point, and the kernel rejects a root that changes type. */
	st.st_mode = S_IFREG | 0666;
	st.st_nlink = 1;
	st.st_uid = getuid();
	st.st_gid = getgid();
	st.st_mtime = st.st_ctime = st.st_atime = time(NULL);
	fuse_reply_attr(req, &st, 1.0);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static void fs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned int flags,
		     const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	(void)ino;
	(void)fi;
	(void)arg;

	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	switch (cmd) {
	case KVSMOKE_GET:
		if (out_bufsz < sizeof(value)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		fuse_reply_ioctl(req, 0, &value, sizeof(value));
		return;
	case KVSMOKE_SET:
		if (in_bufsz < sizeof(value)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		memcpy(&value, in_buf, sizeof(value));
		fuse_reply_ioctl(req, 0, NULL, 0);
		return;
	default:
		fuse_reply_err(req, ENOTTY);
	}
}

static const struct fuse_lowlevel_ops fs_ops = {
	.getattr = fs_getattr,
	.open = fs_open,
	.ioctl = fs_ioctl,
};

int main(int argc, char **argv)
{
	char *fargv[] = { argv[0], NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, fargv);
	struct fuse_session *se;
	int ret = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT_FILE\n", argv[0]);
		return 2;
	}
	se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, argv[1]) == 0) {
			ret = fuse_session_loop(se) ? 1 : 0;
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	return ret;
}
