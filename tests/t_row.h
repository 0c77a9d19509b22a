/* t_row.h: what the row tests share (test_row.c, test_row_random.c). */
#ifndef T_ROW_H
#define T_ROW_H

#include "strbuf.h"

#include <stddef.h>

/* tr_rt converts in[0..n) to msgpack (row_from_json) and back to JSON
 * (row_to_json) into out, reset first: 0, or the parse error (err set). */
int tr_rt(const char *in, size_t n, Strbuf *out, char *err, size_t errlen);

#endif
