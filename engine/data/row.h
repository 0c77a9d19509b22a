/* row.h: staged rows, and JSON <-> msgpack.
 *
 * A row is a msgpack map from field name (str) to value. Values round-trip
 * exactly with JSON: strings (any unicode, quotes, backslashes, newlines),
 * null versus "", true/false, integers that fit int64/uint64 as msgpack
 * ints, and every other number (big integers, decimals, exponents) as a
 * msgpack ext of type ROW_EXT_NUMBER holding the number's JSON text
 * verbatim, so 12345678901234567890123 and 0.1000 come back as written.
 * Nested objects and arrays are msgpack maps and arrays, at most 64 deep.
 * row_to_json writes the canonical form defined in row.c (no whitespace,
 * members in stored order, minimal escapes, raw UTF-8, numbers as written),
 * so JSON -> msgpack -> JSON is exact up to whitespace and escape spelling;
 * its strings are those of json.h's sb_add_json_string. */
#ifndef PL_ROW_H
#define PL_ROW_H

#include "json.h"
#include "strbuf.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define ROW_EXT_NUMBER 1
#define ROW_MAX_DEPTH 64   /* nesting of maps and arrays in a row */

/* row_from_json converts the JSON text (len bytes) into msgpack appended to
 * out (any JSON value; use row_from_json_object to require an object).
 * Returns 0, or PL_EINVAL with err: "invalid JSON at byte N: ..." / "invalid
 * UTF-8 at byte N". Nesting deeper than 64 is refused, and so is a lone
 * UTF-16 surrogate escape ("\ud800" without a low one after it), which has
 * no UTF-8 form. On failure out is left as it was; err may be NULL. */
int row_from_json(const char *json, size_t len, msgpack_sbuffer *out, char *err, size_t errlen);
int row_from_json_object(const char *json, size_t len, msgpack_sbuffer *out, char *err, size_t errlen);

/* row_json_slow(1) makes row_from_json use only its yajl-based parser,
 * (0) the fast one first (the default): a seam for tests that compare the
 * two. Not thread-safe; set it before any parse. */
void row_json_slow(int on);

/* row_to_json appends the JSON text of the msgpack value in mp (len bytes)
 * to b. Returns 0 or PL_EFORMAT for malformed msgpack (also: bytes after the
 * value, nesting deeper than 64, a ROW_EXT_NUMBER that is not a JSON
 * number); on failure b is left as it was. Binary (bin) values become base64
 * strings; floats the shortest text that reads back the same (NaN and
 * infinities null); other ext types null. */
int row_to_json(const void *mp, size_t len, Strbuf *b);

/* row_put_object appends the JSON text of o, a decoded value (a RowView's,
 * or msgpack_unpack's), to b in the canonical form of row_to_json. Returns
 * 0, or PL_EFORMAT when o holds what JSON cannot write (a ROW_EXT_NUMBER
 * that is not a JSON number); on failure b is left as it was. */
int row_put_object(Strbuf *b, const msgpack_object *o);

/* A decoded view of a row; views point into the input bytes. */
typedef struct RowView {
    msgpack_zone zone;      /* private */
    msgpack_object root;    /* read-only */
} RowView;

/* row_view decodes mp (exactly one value, up to 64 deep: msgpack_unpack
 * itself stops at 32) into v (init/clear v's zone itself); 0 or PL_EFORMAT.
 * Views point into mp and are valid while mp is. On failure v holds nothing.
 * row_view_free releases the zone; after a failed row_view, a second call,
 * or with NULL it is a no-op. */
int row_view(RowView *v, const void *mp, size_t len);
void row_view_free(RowView *v);

/* row_field returns the value of top-level field name of a map, or NULL.
 * A dotted path ("address.city") walks into nested maps; a field literally
 * named "address.city" wins. With repeated names the first one counts. */
const msgpack_object *row_field(const msgpack_object *map, const char *name);

/* row_field_text appends a scalar field as text (for URL templates and
 * conditions): strings as is, numbers as JSON writes them, true/false,
 * "null"; returns 0, or PL_EINVAL when the field is missing or not a
 * scalar. */
int row_field_text(const msgpack_object *map, const char *name, Strbuf *out);

/* row_merge writes into out a copy of map base with fields set from src:
 * for each i, field to[i] takes the value of field from[i] of src (a map);
 * fields of src that are missing are skipped (*missing counts them, may be
 * NULL; it is set, not added to). from[i] may be a dotted path; to[i] is a
 * top-level name, and when several to[] name one field the last found wins.
 * Other fields of base keep their order; new ones are appended in to[] order.
 * out is appended to and must not hold the bytes base or src view.
 * Returns 0, or PL_EINVAL when base or src is not a map. */
int row_merge(const msgpack_object *base, const msgpack_object *src, const char *const *from,
              const char *const *to, size_t n, msgpack_sbuffer *out, size_t *missing);

/* row_is_json_number says whether s[0..n) is a number by RFC 8259's grammar. */
int row_is_json_number(const char *s, size_t n);

/* row_pack_object packs o into pk (a copy of a decoded value). */
void row_pack_object(msgpack_packer *pk, const msgpack_object *o);

/* row_sbuf_write is a msgpack_packer write callback for a msgpack_sbuffer,
 * like msgpack_sbuffer_write, but it grows the buffer through xrealloc: out
 * of memory aborts (pl.h) instead of truncating the data. Returns 0. */
int row_sbuf_write(void *data, const char *buf, size_t len);

#endif
