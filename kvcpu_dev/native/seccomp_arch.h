/* The seccomp filter's architecture check, shared by the launcher that
 * installs the filter (launch.c) and the supervisor that reads its
 * notifications (madvise.c): both must name the same native ABI. */
#ifndef KV_SECCOMP_ARCH_H
#define KV_SECCOMP_ARCH_H

#include <linux/audit.h>

/* The native ABI only: other arches (i386 compat, ...) and x32 (its numbers
 * carry __X32_SYSCALL_BIT) fall through to ALLOW. */
#if defined(__x86_64__)
#define KV_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KV_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define KV_AUDIT_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KV_AUDIT_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define KV_AUDIT_ARCH AUDIT_ARCH_S390X
#else
#error "no AUDIT_ARCH for this architecture"
#endif

#endif
