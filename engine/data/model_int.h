/* model_int.h: what model.c, model_check.c, model_sql.c and model_json.c
 * share; not an API (model.h is). */
#ifndef PL_MODEL_INT_H
#define PL_MODEL_INT_H

#include "model.h"

#include <msgpack.h>
#include <stddef.h>

/* model_name_is says whether s[0..n) (not NUL-terminated) is exactly name. */
static inline int model_name_is(const char *name, const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && name[k] && name[k] == s[k])
        k++;
    return k == n && name[k] == '\0';
}

/* model_key_is says whether k is the string name. */
static inline int model_key_is(const msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && model_name_is(name, k->via.str.ptr, k->via.str.size);
}

static inline int model_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* model_member returns the value of map's first member named name, or NULL. */
const msgpack_object *model_member(const msgpack_object *map, const char *name);

/* model_field_index finds m's field named s[0..n), trying position hint
 * first (rows in declared order); -1 when m has none. */
int model_field_index(const Model *m, size_t hint, const char *s, size_t n);

/* model_fmt_double writes d in the shortest %g form that reads back as d. */
void model_fmt_double(char *t, size_t size, double d);

/* model_pack_number packs the JSON number s[0..n) as a ROW_EXT_NUMBER. */
void model_pack_number(msgpack_packer *pk, const char *s, size_t n);

/* model_check_default checks v, a default being parsed, against f's type
 * and rules as model_validate checks a value, packing its normalised form
 * into pk. Returns 0, or PL_EINVAL with the first failure's message in msg. */
int model_check_default(const Field *f, const msgpack_object *v, msgpack_packer *pk, char *msg,
                        size_t msglen);

#endif
