/* The blocks file's rows in C (rows.c): a column is a value per row, how
 * to write it, and which rows leave it empty ("-"). */

#define KVM_DECIMAL 0
#define KVM_HEX 1
#define KVM_NAME 2      /* names[value] */
#define KVM_FIELD_MAX 24  /* "0x" and 16 digits, 20 decimal digits, a name */

struct kvm_column {
	const uint64_t *values;
	const uint8_t *empty;  /* NULL: none is */
	int format;
};

/* Rows 0..n of the columns into out: the bytes written, or -1 when out
 * (cap bytes) is too small or a name is out of range. */
int64_t kvm_format_rows(char *out, int64_t cap, int64_t n, const struct kvm_column *cols, int ncols,
                        const char *const *names, int nnames);
