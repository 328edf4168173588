/* The attribute mount's libfuse helpers (attrs_shim.c) and the Python
 * callbacks its operations table calls.  Also part of the cffi
 * declaration: build.py turns the callbacks' section into an
 * extern "Python+C" block, so the callbacks are declared once, here. */

struct fuse_session *kv_fuse_new(const char *mount_opts, void *userdata);
int kv_fuse_mount(struct fuse_session *se, const char *mountpoint);
/* Receive one request and answer it (fuse_session_receive_buf's result);
 * while it is answered, `mark` (a watcher's, kvcpu.h: kv_watch_add) says
 * since when, and counts it once answered.  `mark` may be NULL. */
int kv_fuse_serve_one(struct fuse_session *se, struct fuse_buf *buf, uint64_t *mark);
int kv_reply_attr(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                  unsigned uid, unsigned gid, uint64_t size, double timeout);
int kv_reply_entry(fuse_req_t req, fuse_ino_t ino, unsigned mode, unsigned nlink,
                   unsigned uid, unsigned gid, uint64_t size, double timeout);
int kv_reply_open(fuse_req_t req, struct fuse_file_info *fi, uint64_t fh,
                  int direct_io);
size_t kv_add_direntry(fuse_req_t req, char *buf, size_t bufsize,
                       const char *name, fuse_ino_t ino, unsigned mode, off_t off);

/* KV_PYTHON_CALLBACKS */
void kv_ll_init(void *userdata, struct fuse_conn_info *conn);
void kv_ll_lookup(fuse_req_t, fuse_ino_t, const char *);
void kv_ll_getattr(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
void kv_ll_setattr(fuse_req_t, fuse_ino_t, struct stat *, int, struct fuse_file_info *);
void kv_ll_open(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
void kv_ll_read(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
void kv_ll_write(fuse_req_t, fuse_ino_t, const char *, size_t, off_t, struct fuse_file_info *);
void kv_ll_release(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
void kv_ll_opendir(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
void kv_ll_readdir(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);
void kv_ll_ioctl(fuse_req_t, fuse_ino_t, unsigned int, void *, struct fuse_file_info *,
                 unsigned, const void *, size_t, size_t);
