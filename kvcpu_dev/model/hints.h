/* The model's hint doorbells in C (hints.c): what Python sees, and the
 * cffi declaration.  Every pointer is a numpy array the Python model owns
 * (model/fast.py fills this in); the engine keeps no state of its own
 * beyond the index mirror and the logs Python replays after each call. */

struct kvm_channel {
	int32_t *entry;  /* -1: cancelled */
	int8_t *src, *dst;
	int64_t *ready;
	int64_t slots;
	int64_t *sc;     /* head, tail, free_at, completed, cancelled (dma.CHANNEL_SCALARS) */
};

struct kvm {
	/* the directory's field arrays (rtbd.Directory) */
	int64_t size;
	uint8_t *live, *r, *f, *ref, *prefix, *dirty, *hot, *armed;
	uint64_t *block, *hint_va, *hint_len;
	int8_t *tier, *mv_dst, *mv_chan;
	uint16_t *priority, *request_id;
	uint32_t *last_access, *hot_step, *target, *gen;
	int64_t *arrived_ns, *mv_pos;
	int32_t *released;
	int64_t *free;   /* released entries, high-water mark */

	/* the block -> entry index, mirrored (open addressing, linear probing) */
	uint64_t *keys;
	int32_t *vals;   /* entry + 1; 0: an empty slot (untouched zero pages cost no memory) */
	uint64_t mask;
	int64_t count;

	/* the DMA engine (dma.DmaEngine) */
	struct kvm_channel chan[2];
	int64_t *capacity, *resident, *inbound, *bytes_in, *bytes_out;
	int64_t *bytes_moved;  /* [src * 4 + dst] */
	int64_t *duration;     /* [src * 4 + dst] */
	int64_t *tally;        /* moves completed, refcounted demotions */
	int64_t block_size;

	/* the model (device.DeviceModel) */
	int64_t *arm_seq;
	int64_t *counts;       /* added to DeviceModel.counts, in COUNTERS order */
	int initial_tier;
	int sim;               /* the simulated clock */
	int64_t heap_limit;    /* a prefetch heap longer than this is pruned (in Python) */

	uint64_t *latch;       /* device.LATCHES: BOOST_ADDR, IMEVICT_ADDR, PREFETCH_ADDR, PREFETCH_LEN, SHARE_ADDR */

	/* copied in and out around each call */
	uint32_t step32, window;
	int64_t t0, wall_ns, sim_ns, event_ns, arms;
	int64_t targets_len, windowed_len;  /* the heaps' lengths, pushes logged included */

	/* what Python replays after a call: index changes ... */
	uint64_t *log_block;
	int32_t *log_entry;    /* -1: the block was released */
	int64_t log_len, log_cap;
	/* ... and prefetch heap pushes (heap 0: targets, 1: windowed) */
	uint32_t *push_target;
	int64_t *push_seq;
	int32_t *push_entry;
	int8_t *push_heap;
	int64_t push_len, push_cap;
};

/* Apply commands start..end (each nregs[k] register writes, at t_ns[k]) as
 * DeviceModel.mmio_write would, stopping before the first command this
 * engine does not take (a STEP, a register other than a hint's, a hint
 * over 64 blocks or more, ...).  Returns where it stopped. */
int64_t kvm_apply(struct kvm *m, const int64_t *t_ns, const uint32_t *nregs, const uint32_t *reg_off,
                  const uint64_t *reg_val, int64_t regs_per_command, int64_t start, int64_t end);

/* The index mirror, for Python's own allocations and releases. */
int32_t kvm_index_get(struct kvm *m, uint64_t block);
void kvm_index_put(struct kvm *m, uint64_t block, int32_t entry);
void kvm_index_del(struct kvm *m, uint64_t block);
