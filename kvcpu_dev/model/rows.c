/* The blocks file's rows in C.  model_text.block_pieces is the format's
 * specification: a list of Python ints per column, each field str() or
 * "{:#x}", a tier by name, "-" for an empty field, one space between
 * fields and a newline after each row.  Formatting 100,000 rows that way
 * took 300 ms of the daemon's only Python thread, while every other
 * reader waited; this writes the same bytes from the snapshot's arrays
 * (model/rows.py; tests/model/test_fast_rows.py compares the two). */
#include <stdint.h>
#include <string.h>

#include "rows.h"

static char *decimal(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *hex(char *p, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";
	int shift = 60;

	*p++ = '0';
	*p++ = 'x';
	while (shift > 0 && !(v >> shift))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*p++ = digits[(v >> shift) & 15];
	return p;
}

int64_t kvm_format_rows(char *out, int64_t cap, int64_t n, const struct kvm_column *cols, int ncols,
                        const char *const *names, int nnames)
{
	char *p = out;

	for (int64_t row = 0; row < n; row++) {
		if (cap - (p - out) < (int64_t)ncols * KVM_FIELD_MAX + 1)
			return -1;
		for (int c = 0; c < ncols; c++) {
			const struct kvm_column *col = &cols[c];
			uint64_t v = col->values[row];

			if (c)
				*p++ = ' ';
			if (col->empty && col->empty[row]) {
				*p++ = '-';
			} else if (col->format == KVM_HEX) {
				p = hex(p, v);
			} else if (col->format == KVM_NAME) {
				size_t len;

				if (v >= (uint64_t)nnames || (len = strlen(names[v])) > KVM_FIELD_MAX)
					return -1;
				memcpy(p, names[v], len);
				p += len;
			} else {
				p = decimal(p, v);
			}
		}
		*p++ = '\n';
	}
	return p - out;
}
