/*
 * FUSE over io_uring: the kernel ABI a raw server needs, for machines whose
 * <linux/fuse.h> predates it (Debian bookworm's linux-libc-dev 6.1 stops at
 * protocol 7.38; FUSE over io_uring is protocol 7.42, Linux 6.14).
 *
 * Written from the facts of upstream include/uapi/linux/fuse.h (7.42+) and
 * fs/fuse/dev_uring.c; see benchmarks/URING_NOTES.md for what each field
 * does and where the kernel reads it.  Layouts are checked below at compile
 * time.  The rest of the FUSE protocol (fuse_in_header, fuse_init_out, ...)
 * comes from the system's <linux/fuse.h>, unchanged since 7.38 for what we use.
 */
#ifndef KVCPU_URING_PROTO_H
#define KVCPU_URING_PROTO_H

#include <linux/fuse.h>
#include <linux/io_uring.h>
#include <stddef.h>
#include <stdint.h>

/* The protocol minor that introduced everything below. */
#define URING_PROTO_MINOR 42

/* fuse_init_in/out flags (64-bit: bits 32.. travel in flags2, which the
 * kernel reads only when FUSE_INIT_EXT is set in the 32-bit flags). */
#ifndef FUSE_INIT_EXT
#define FUSE_INIT_EXT (1 << 30)
#endif
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41) /* flags2 bit 9 */
#endif

#ifndef FUSE_URING_IN_OUT_HEADER_SZ /* newer <linux/fuse.h> has all of it */
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

/* Trailer of the per-entry header buffer.  Kernel -> server on fetch:
 * commit_id (the request's unique) and payload_sz (bytes of arguments in the
 * payload buffer).  Server -> kernel on commit: payload_sz (bytes of reply
 * arguments in the payload buffer, the fuse_out_header not counted). */
struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding; /* later kernels (7.46) call it offset: send 0 */
	uint64_t reserved;
};

/* The per-entry header buffer, iov[0] of a REGISTER.  in_out holds the
 * fuse_in_header on fetch and the server's fuse_out_header on commit;
 * op_in holds the request's first argument (the per-opcode struct, e.g.
 * fuse_ioctl_in); everything after that first argument is in the payload
 * buffer, iov[1]. */
struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ];
	char op_in[FUSE_URING_OP_IN_OUT_SZ];
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

/* sqe->cmd_op of an IORING_OP_URING_CMD on the /dev/fuse descriptor */
enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,         /* hand the kernel one entry */
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2, /* reply, and wait for the next */
};

/* In the 80-byte command area of a 128-byte SQE (sqe->cmd). */
struct fuse_uring_cmd_req {
	uint64_t flags;     /* 0 */
	uint64_t commit_id; /* COMMIT_AND_FETCH: the commit_id the fetch gave */
	uint16_t qid;       /* the queue (= CPU number) this ring serves */
	uint8_t padding[6];
};
#endif

_Static_assert(sizeof(struct fuse_uring_ent_in_out) == 32, "ent_in_out");
_Static_assert(offsetof(struct fuse_uring_ent_in_out, commit_id) == 8, "commit_id");
_Static_assert(offsetof(struct fuse_uring_ent_in_out, payload_sz) == 16, "payload_sz");
_Static_assert(sizeof(struct fuse_uring_req_header) == 288, "req_header");
_Static_assert(offsetof(struct fuse_uring_req_header, op_in) == 128, "op_in");
_Static_assert(offsetof(struct fuse_uring_req_header, ring_ent_in_out) == 256, "ring_ent_in_out");
_Static_assert(sizeof(struct fuse_uring_cmd_req) == 24, "cmd_req");
_Static_assert(offsetof(struct fuse_uring_cmd_req, qid) == 16, "qid");
_Static_assert(sizeof(struct fuse_uring_cmd_req) <= 80, "fits the SQE128 command area");
_Static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "sqe->cmd");
_Static_assert(offsetof(struct io_uring_sqe, cmd_op) == 8, "sqe->cmd_op");
_Static_assert(sizeof(struct fuse_init_out) == 64, "fuse_init_out");
_Static_assert(offsetof(struct fuse_init_out, flags2) == 32, "fuse_init_out.flags2");
_Static_assert(offsetof(struct fuse_init_in, flags2) == 16, "fuse_init_in.flags2");

#endif
