/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * KV-CPU LLM-memory device: userspace ABI.
 *
 * ABI-identical to the reference driver's include/uapi/linux/kv_cpu.h.
 * This file is also the single source of truth for kvcpu-dev's Python side:
 * kvcpu_dev.abi reads the structs and ioctl numbers from here.
 */
#ifndef _UAPI_LINUX_KV_CPU_H
#define _UAPI_LINUX_KV_CPU_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define KV_CPU_MAGIC 'K'

/* The current decode iteration. */
struct kv_cpu_step_info {
	__u64 step;
};

/* A KV block: runtime virtual address (never dereferenced), length in
 * bytes, and the step at which a PREFETCH block will be needed. */
struct kv_cpu_block_info {
	__u64 va;
	__u64 len;
	__u64 target_step;
};

/* HEPC weights (recency, frequency, step proximity, prefix/durability)
 * and the eviction and prefetch thresholds. */
struct kv_cpu_weights_info {
	__u32 w_r;
	__u32 w_f;
	__u32 w_s;
	__u32 w_d;
	__u32 evict_thresh;
	__u32 prefetch_thresh;
};

/* A consistent snapshot of the driver's state. */
struct kv_cpu_telemetry_info {
	__u64 current_step;
	__u64 step_count;
	__u64 hot_count;
	__u64 evict_count;
	__u64 prefetch_count;
	__u64 share_count;
	__u64 last_va;
	__u64 last_len;
	__u64 last_target_step;
	__u32 w_r;
	__u32 w_f;
	__u32 w_s;
	__u32 w_d;
	__u32 evict_thresh;
	__u32 prefetch_thresh;
};

#define KV_CPU_STEP_ADVANCE  _IOW(KV_CPU_MAGIC, 0x01, struct kv_cpu_step_info)
#define KV_CPU_MARK_HOT      _IOW(KV_CPU_MAGIC, 0x02, struct kv_cpu_block_info)
#define KV_CPU_EVICT         _IOW(KV_CPU_MAGIC, 0x03, struct kv_cpu_block_info)
#define KV_CPU_PREFETCH      _IOW(KV_CPU_MAGIC, 0x04, struct kv_cpu_block_info)
#define KV_CPU_SHARE_PREFIX  _IOW(KV_CPU_MAGIC, 0x05, struct kv_cpu_block_info)
#define KV_CPU_SET_WEIGHTS   _IOW(KV_CPU_MAGIC, 0x06, struct kv_cpu_weights_info)
#define KV_CPU_GET_TELEMETRY _IOR(KV_CPU_MAGIC, 0x07, struct kv_cpu_telemetry_info)

#endif /* _UAPI_LINUX_KV_CPU_H */
