/*
 * abi_dump: what a C compiler makes of <linux/kv_cpu.h>, one fact a line,
 * for tests/test_abi.py to compare with kvcpu_dev.device.abi:
 *
 *   magic 75
 *   ioctl KV_CPU_STEP_ADVANCE 1074285313
 *   sizeof kv_cpu_step_info 8
 *   offsetof kv_cpu_step_info step 0
 *   fieldsize kv_cpu_step_info step 8
 *   ioc NAME NUMBER          (the kernel's _IO* macros on sample arguments)
 *
 * The header is included twice: its include guard must make that harmless.
 */
#include <stddef.h>
#include <stdio.h>

#include <linux/kv_cpu.h>
#include <linux/kv_cpu.h>

#define IOCTL(name) printf("ioctl %s %lu\n", #name, (unsigned long)(name))
#define SIZE(s) printf("sizeof %s %zu\n", #s, sizeof(struct s))
#define FIELD(s, f) \
	printf("offsetof %s %s %zu\nfieldsize %s %s %zu\n", #s, #f, \
	       offsetof(struct s, f), #s, #f, sizeof(((struct s *)0)->f))
#define IOC(label, value) printf("ioc %s %lu\n", label, (unsigned long)(value))

int main(void)
{
	printf("magic %d\n", KV_CPU_MAGIC);

	IOCTL(KV_CPU_STEP_ADVANCE);
	IOCTL(KV_CPU_MARK_HOT);
	IOCTL(KV_CPU_EVICT);
	IOCTL(KV_CPU_PREFETCH);
	IOCTL(KV_CPU_SHARE_PREFIX);
	IOCTL(KV_CPU_SET_WEIGHTS);
	IOCTL(KV_CPU_GET_TELEMETRY);

	SIZE(kv_cpu_step_info);
	FIELD(kv_cpu_step_info, step);

	SIZE(kv_cpu_block_info);
	FIELD(kv_cpu_block_info, va);
	FIELD(kv_cpu_block_info, len);
	FIELD(kv_cpu_block_info, target_step);

	SIZE(kv_cpu_weights_info);
	FIELD(kv_cpu_weights_info, w_r);
	FIELD(kv_cpu_weights_info, w_f);
	FIELD(kv_cpu_weights_info, w_s);
	FIELD(kv_cpu_weights_info, w_d);
	FIELD(kv_cpu_weights_info, evict_thresh);
	FIELD(kv_cpu_weights_info, prefetch_thresh);

	SIZE(kv_cpu_telemetry_info);
	FIELD(kv_cpu_telemetry_info, current_step);
	FIELD(kv_cpu_telemetry_info, step_count);
	FIELD(kv_cpu_telemetry_info, hot_count);
	FIELD(kv_cpu_telemetry_info, evict_count);
	FIELD(kv_cpu_telemetry_info, prefetch_count);
	FIELD(kv_cpu_telemetry_info, share_count);
	FIELD(kv_cpu_telemetry_info, last_va);
	FIELD(kv_cpu_telemetry_info, last_len);
	FIELD(kv_cpu_telemetry_info, last_target_step);
	FIELD(kv_cpu_telemetry_info, w_r);
	FIELD(kv_cpu_telemetry_info, w_f);
	FIELD(kv_cpu_telemetry_info, w_s);
	FIELD(kv_cpu_telemetry_info, w_d);
	FIELD(kv_cpu_telemetry_info, evict_thresh);
	FIELD(kv_cpu_telemetry_info, prefetch_thresh);

	/* The generic encoding on arguments the tests use for unknown commands. */
	IOC("_IO:75:127:0", _IO('K', 0x7F));
	IOC("_IOW:75:8:8", _IOW('K', 0x08, __u64));
	IOC("_IOR:75:7:8", _IOR('K', 0x07, __u64));
	IOC("_IOWR:75:7:96", _IOWR('K', 0x07, struct kv_cpu_telemetry_info));
	IOC("_IOW:76:1:8", _IOW('L', 0x01, __u64));
	IOC("_IOR:75:255:16383", _IOC(_IOC_READ, 'K', 0xFF, 16383));
	return 0;
}
