/* The launcher half of `kvcpu-dev run` (madvise.h): fork, install the
 * filter in the child, hand its listener to the parent, exec CMD on the
 * parent's word.  Runs in the `run` process, never in the daemon.
 *
 * Between fork and exec the child makes system calls only (no malloc, no
 * stdio, no locks), so the parent may be multi-threaded.
 */
#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "madvise.h"
#include "seccomp_arch.h"

#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)           /* Linux 4.17 */
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)   /* Linux 5.19 */
#endif


/* The low 32 bits of args[2] (madvise's int advice; the kernel ignores the
 * high half, and so does the filter). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG2_LO (offsetof(struct seccomp_data, args) + 2 * sizeof(uint64_t))
#else
#define ARG2_LO (offsetof(struct seccomp_data, args) + 2 * sizeof(uint64_t) + 4)
#endif

/* Every decision but madvise's is taken on arch and nr alone, so the
 * kernel's seccomp action cache proves ALLOW for every other system call and
 * skips the program for them (Linux 5.11+). */
static struct sock_filter filter_code[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KV_AUDIT_ARCH, 0, 5),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG2_LO),
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, KV_MADV_HOT, 0, 1),
    BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, KV_MADV_PREFETCH, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
};

/* What the child sends with the fd. */
struct hello {
    int32_t err;        /* 0, or the errno that stopped it */
    uint32_t info;      /* KV_MADV_INFO_* */
};

static int install(unsigned flags, unsigned *info)
{
    struct sock_fprog prog = {
        .len = sizeof(filter_code) / sizeof(filter_code[0]),
        .filter = filter_code,
    };
    /* SPEC_ALLOW: this filter is a shim, not a sandbox.  Without it a kernel
     * booted with spec_store_bypass_disable=seccomp (the default before
     * 5.16) or spectre_v2_user=seccomp turns on SSBD/STIBP for CMD, slowing
     * all of its code, not just its system calls. */
    unsigned long f = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    int fd;

    if (!(flags & KV_MADV_SPAWN_INTERRUPTIBLE))
        f |= SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    if (flags & KV_MADV_SPAWN_NNP) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            return -errno;
        *info |= KV_MADV_INFO_NNP;
    }
    for (;;) {
        fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, f, &prog);
        if (fd >= 0)
            break;
        if (errno == EINVAL && (f & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)) {
            f &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;   /* before 5.19 */
            continue;
        }
        if (errno == EINVAL && (f & SECCOMP_FILTER_FLAG_SPEC_ALLOW)) {
            f &= ~SECCOMP_FILTER_FLAG_SPEC_ALLOW;           /* before 4.17 */
            continue;
        }
        /* The kernel's own rule: no_new_privs, or CAP_SYS_ADMIN in the
         * task's user namespace.  Asking is exact where capget() is not. */
        if (errno == EACCES && !(*info & KV_MADV_INFO_NNP)) {
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
                return -errno;
            *info |= KV_MADV_INFO_NNP;
            continue;
        }
        return -errno;
    }
    if (f & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
        *info |= KV_MADV_INFO_KILLABLE;
    if (f & SECCOMP_FILTER_FLAG_SPEC_ALLOW)
        *info |= KV_MADV_INFO_SPEC_ALLOW;
    return fd;
}

static void send_hello(int sock, const struct hello *h, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = (void *)h, .iov_len = sizeof(*h) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (fd >= 0) {
        memset(&u, 0, sizeof(u));
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof(u.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static __attribute__((noreturn)) void child_main(int sock, char *const argv[], unsigned flags)
{
    struct hello h = { 0, 0 };
    sigset_t none;
    char go;
    ssize_t n;
    int fd, e;

    /* CMD starts as a shell would start it, whatever the launcher blocked or
     * ignored (Python ignores SIGPIPE and SIGXFSZ). */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);

    fd = install(flags, &h.info);
    if (fd < 0) {
        h.err = -fd;
        send_hello(sock, &h, -1);
        _exit(125);
    }
    send_hello(sock, &h, fd);
    close(fd);  /* CMD must not hold its own listener */
    do
        n = read(sock, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(125);     /* the launcher gave up: never run CMD unsupervised */
    execvp(argv[0], argv);
    e = errno;
    while (write(sock, &e, sizeof(e)) < 0 && errno == EINTR)
        ;
    _exit(e == ENOENT ? 127 : 126);
}

static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

int kv_madv_spawn(char *const argv[], unsigned flags, struct kv_madv_child *c)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct hello h = { 0, 0 };
    struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
    };
    struct cmsghdr *cm;
    int sv[2], fd = -1;
    ssize_t n;
    pid_t pid;

    c->pid = -1;
    c->listener = c->ctl = -1;
    c->info = 0;
    if (argv == NULL || argv[0] == NULL)
        return -EINVAL;
    /* SEQPACKET: the hello arrives whole, and EOF says the child is gone (or
     * exec'd: the child's end is close-on-exec). */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (pid == 0) {
        close(sv[0]);
        child_main(sv[1], argv, flags);
    }
    close(sv[1]);
    memset(&u, 0, sizeof(u));
    do
        n = recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    if (n != (ssize_t)sizeof(h) || h.err != 0 || fd < 0) {
        int e = n < 0 ? errno : h.err != 0 ? h.err : ECHILD;
        if (fd >= 0)
            close(fd);
        close(sv[0]);
        reap(pid);
        return -e;
    }
    c->pid = pid;
    c->listener = fd;
    c->ctl = sv[0];
    c->info = h.info;
    return 0;
}

int kv_madv_go(struct kv_madv_child *c)
{
    char go = 'g';
    int e = 0;
    ssize_t n;

    if (c->ctl < 0)
        return -EBADF;
    do
        n = send(c->ctl, &go, 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        e = errno;
        close(c->ctl);
        c->ctl = -1;
        return -(e ? e : ECHILD);
    }
    /* EOF: exec closed the child's end.  An int: exec failed with it. */
    do
        n = recv(c->ctl, &e, sizeof(e), 0);
    while (n < 0 && errno == EINTR);
    close(c->ctl);
    c->ctl = -1;
    if (n == 0)
        return 0;
    if (n == (ssize_t)sizeof(e) && e > 0)
        return -e;
    return -ECHILD;
}

void kv_madv_cancel(struct kv_madv_child *c)
{
    if (c->ctl >= 0) {
        close(c->ctl);
        c->ctl = -1;
    }
    if (c->pid > 0) {
        reap(c->pid);
        c->pid = -1;
    }
}
