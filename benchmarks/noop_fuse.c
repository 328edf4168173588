/*
 * The baseline for the round-trip benchmark: the cheapest possible libfuse3
 * server of the same transport.  One file, "device", whose ioctl handler
 * answers every command at once (zeros for _IOR), served by libfuse's own
 * single-threaded loop.  Everything kvcpu-dev adds shows up as the ratio.
 *
 * usage: noop_fuse MOUNTPOINT   (runs until unmounted or signalled)
 *
 * Built with -DWORK_NS=N, each ioctl first spins N ns: a server with some
 * work per request, for bench_placement.py.
 */
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef WORK_NS
#define WORK_NS 0
#endif

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = ino == 1 ? S_IFDIR | 0755 : S_IFREG | 0600;
	st->st_nlink = 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != 1 || strcmp(name, "device")) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = 2;
	e.attr_timeout = e.entry_timeout = 3600;
	fill(2, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 3600);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	static const char zeros[4096];

	(void)ino; (void)cmd; (void)arg; (void)fi; (void)flags; (void)in_buf; (void)in_bufsz;
	if (WORK_NS) {
		struct timespec a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		do
			clock_gettime(CLOCK_MONOTONIC, &b);
		while ((b.tv_sec - a.tv_sec) * 1000000000L + b.tv_nsec - a.tv_nsec < WORK_NS);
	}
	fuse_reply_ioctl(req, 0, out_bufsz ? zeros : NULL, out_bufsz);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.ioctl = op_ioctl,
};

int main(int argc, char *argv[])
{
	char *fargv[] = { argv[0], "-o", "allow_other,default_permissions,fsname=noop", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se;
	int ret;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_set_signal_handlers(se) || fuse_session_mount(se, argv[1]))
		return 1;
	printf("ready\n");
	fflush(stdout);
	ret = fuse_session_loop(se);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	return ret ? 1 : 0;
}
