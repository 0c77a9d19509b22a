/* row_view.c: rows as msgpack: decoding into views, writing them as JSON
 * (row_to_json, row_put_object: the canonical form row.c describes), fields
 * (dotted paths) and merges.
 *
 * msgpack to objects. Decoding is done here rather than by msgpack_unpack:
 * the library's unpacker has a fixed stack of 32 levels and refuses the rows
 * up to 64 deep that JSON may bring. Views point into the input bytes; the
 * zone holds only the object arrays. */
#include "row.h"

#include "json.h"
#include "pl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ scalars as JSON */

/* put_double writes d in the shortest %g form that reads back as d (as a
 * float when single); JSON has no NaN or infinity, so those are null. */
static void put_double(Strbuf *b, double d, int single)
{
    char t[40];
    int prec = single ? 6 : 15, last = single ? 9 : 17;

    if (!isfinite(d)) {
        sb_adds(b, "null");
        return;
    }
    for (;; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, d);
        if (prec == last || (single ? strtof(t, NULL) == (float)d : strtod(t, NULL) == d))
            break;
    }
    sb_adds(b, t);
}

static void put_base64(Strbuf *b, const unsigned char *p, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o;

    sb_grow(b, (n + 2) / 3 * 4 + 2);
    o = b->buf + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = a[v >> 18 & 63];
        *o++ = a[v >> 12 & 63];
        *o++ = i + 1 < n ? a[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? a[v & 63] : '=';
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->buf);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int row_is_json_number(const char *s, size_t n)
{
    size_t i = 0, d;

    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !is_digit(s[i]))
        return 0;
    if (s[i++] != '0')
        while (i < n && is_digit(s[i]))
            i++;
    if (i < n && s[i] == '.') {
        d = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

/* ------------------------------------------------------ msgpack reading */

typedef struct Reader {
    const unsigned char *p;
    size_t len, off;
    msgpack_zone *zone;
} Reader;

/* rd_take returns the next n bytes and moves past them, or NULL. */
static const unsigned char *rd_take(Reader *r, size_t n)
{
    const unsigned char *q;
    if (r->len - r->off < n)
        return NULL;
    q = r->p + r->off;
    r->off += n;
    return q;
}

/* rd_uint reads a big-endian unsigned of w bytes into *v. */
static int rd_uint(Reader *r, size_t w, uint64_t *v)
{
    const unsigned char *q = rd_take(r, w);
    if (!q)
        return PL_EFORMAT;
    *v = 0;
    for (size_t i = 0; i < w; i++)
        *v = *v << 8 | q[i];
    return 0;
}

static int rd_obj(Reader *r, int depth, msgpack_object *o);

/* rd_items reads the n elements (or pairs) of a container at depth. */
static int rd_items(Reader *r, int depth, msgpack_object *o, int map, uint64_t n)
{
    void *mem = NULL;
    int rc;

    /* Every element takes at least one byte: a count larger than what is
     * left is malformed, and must not size an allocation. */
    if (depth >= ROW_MAX_DEPTH || n > (r->len - r->off) / (map ? 2 : 1))
        return PL_EFORMAT;
    if (n) {
        mem = msgpack_zone_malloc(r->zone, n * (map ? sizeof(msgpack_object_kv)
                                                    : sizeof(msgpack_object)));
        PL_ASSERT(mem, "out of memory (msgpack zone)");
    }
    if (map) {
        msgpack_object_kv *kv = mem;
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.size = (uint32_t)n;
        o->via.map.ptr = kv;
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_obj(r, depth + 1, &kv[i].key)) || (rc = rd_obj(r, depth + 1, &kv[i].val)))
                return rc;
    } else {
        msgpack_object *a = mem;
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.size = (uint32_t)n;
        o->via.array.ptr = a;
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_obj(r, depth + 1, &a[i])))
                return rc;
    }
    return 0;
}

/* rd_blob reads a str, bin or ext body of n bytes (ext: after its type). */
static int rd_blob(Reader *r, msgpack_object *o, msgpack_object_type t, uint64_t n, int ext)
{
    const unsigned char *q;
    int8_t et = 0;

    if (ext) {
        if (!(q = rd_take(r, 1)))
            return PL_EFORMAT;
        et = (int8_t)*q;
    }
    if (!(q = rd_take(r, n)))
        return PL_EFORMAT;
    o->type = t;
    if (ext) {
        o->via.ext.type = et;
        o->via.ext.size = (uint32_t)n;
        o->via.ext.ptr = (const char *)q;
    } else {
        o->via.str.size = (uint32_t)n; /* bin has the same layout */
        o->via.str.ptr = (const char *)q;
    }
    return 0;
}

static void set_int(msgpack_object *o, int64_t v)
{
    if (v < 0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = v;
    } else {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = (uint64_t)v;
    }
}

static int rd_obj(Reader *r, int depth, msgpack_object *o)
{
    const unsigned char *q = rd_take(r, 1);
    unsigned c;
    uint64_t v;
    int rc;

    if (!q)
        return PL_EFORMAT;
    c = *q;
    if (c <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = c;
        return 0;
    }
    if (c >= 0xe0) {
        set_int(o, (int8_t)c);
        return 0;
    }
    if (c <= 0x8f)
        return rd_items(r, depth, o, 1, c & 0x0f);
    if (c <= 0x9f)
        return rd_items(r, depth, o, 0, c & 0x0f);
    if (c <= 0xbf)
        return rd_blob(r, o, MSGPACK_OBJECT_STR, c & 0x1f, 0);

    switch (c) {
    case 0xc0:
        o->type = MSGPACK_OBJECT_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = c == 0xc3;
        return 0;
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        if ((rc = rd_uint(r, 1u << (c - 0xc4), &v)))
            return rc;
        return rd_blob(r, o, MSGPACK_OBJECT_BIN, v, 0);
    case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32 */
        if ((rc = rd_uint(r, 1u << (c - 0xc7), &v)))
            return rc;
        return rd_blob(r, o, MSGPACK_OBJECT_EXT, v, 1);
    case 0xca: { /* float 32 */
        float f;
        uint32_t u;
        if ((rc = rd_uint(r, 4, &v)))
            return rc;
        u = (uint32_t)v;
        memcpy(&f, &u, 4);
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = f;
        return 0;
    }
    case 0xcb: /* float 64 */
        if ((rc = rd_uint(r, 8, &v)))
            return rc;
        o->type = MSGPACK_OBJECT_FLOAT64;
        memcpy(&o->via.f64, &v, 8);
        return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8..64 */
        if ((rc = rd_uint(r, 1u << (c - 0xcc), &v)))
            return rc;
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = v;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: { /* int 8..64 */
        unsigned w = 1u << (c - 0xd0);
        if ((rc = rd_uint(r, w, &v)))
            return rc;
        if (w < 8 && v >> (8 * w - 1)) /* sign-extend */
            v |= ~(uint64_t)0 << (8 * w);
        set_int(o, (int64_t)v);
        return 0;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
        return rd_blob(r, o, MSGPACK_OBJECT_EXT, 1u << (c - 0xd4), 1);
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
        if ((rc = rd_uint(r, 1u << (c - 0xd9), &v)))
            return rc;
        return rd_blob(r, o, MSGPACK_OBJECT_STR, v, 0);
    case 0xdc: case 0xdd: /* array 16/32 */
        if ((rc = rd_uint(r, 2u << (c - 0xdc), &v)))
            return rc;
        return rd_items(r, depth, o, 0, v);
    case 0xde: case 0xdf: /* map 16/32 */
        if ((rc = rd_uint(r, 2u << (c - 0xde), &v)))
            return rc;
        return rd_items(r, depth, o, 1, v);
    default: /* 0xc1: never used */
        return PL_EFORMAT;
    }
}

/* decode reads exactly one value from mp[0..len) into o; arrays in zone. */
static int decode(const void *mp, size_t len, msgpack_zone *zone, msgpack_object *o)
{
    Reader r = {mp, len, 0, zone};
    int rc = rd_obj(&r, 0, o);
    if (rc == 0 && r.off != len)
        rc = PL_EFORMAT; /* bytes after the value */
    return rc;
}

static void zone_init(msgpack_zone *z)
{
    if (!msgpack_zone_init(z, 4096))
        PL_ASSERT(0, "out of memory (msgpack zone)");
}

int row_view(RowView *v, const void *mp, size_t len)
{
    int rc;

    zone_init(&v->zone);
    rc = decode(mp, len, &v->zone, &v->root);
    if (rc) {
        msgpack_zone_destroy(&v->zone);
        memset(v, 0, sizeof *v); /* row_view_free: a no-op now */
        v->root.type = MSGPACK_OBJECT_NIL;
    }
    return rc;
}

void row_view_free(RowView *v)
{
    /* chunk_size is 0 only in a view already freed or never decoded. */
    if (!v || v->zone.chunk_size == 0)
        return;
    msgpack_zone_destroy(&v->zone);
    memset(&v->zone, 0, sizeof v->zone);
    v->root.type = MSGPACK_OBJECT_NIL;
}

/* ------------------------------------------------------ msgpack to JSON */

static int put_value(Strbuf *b, const msgpack_object *o);

static int put_key(Strbuf *b, const msgpack_object *k)
{
    Strbuf t;
    int rc;

    if (k->type == MSGPACK_OBJECT_STR) {
        sb_add_json_string(b, k->via.str.ptr, k->via.str.size);
        return 0;
    }
    sb_init(&t);
    rc = put_value(&t, k);
    if (rc == 0)
        sb_add_json_string(b, t.buf, t.len);
    sb_free(&t);
    return rc;
}

static int put_value(Strbuf *b, const msgpack_object *o)
{
    int rc;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        sb_add(b, "null", 4);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        sb_adds(b, o->via.boolean ? "true" : "false");
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        sb_add_u64(b, o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        sb_add_i64(b, o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
        put_double(b, o->via.f64, 1);
        return 0;
    case MSGPACK_OBJECT_FLOAT64:
        put_double(b, o->via.f64, 0);
        return 0;
    case MSGPACK_OBJECT_STR:
        sb_add_json_string(b, o->via.str.ptr, o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        put_base64(b, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_EXT:
        if (o->via.ext.type != ROW_EXT_NUMBER) {
            sb_add(b, "null", 4);
            return 0;
        }
        /* Written verbatim: it must be a JSON number, or the output would
         * not be JSON. */
        if (!row_is_json_number(o->via.ext.ptr, o->via.ext.size))
            return PL_EFORMAT;
        sb_add(b, o->via.ext.ptr, o->via.ext.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        sb_add(b, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                sb_add(b, ",", 1);
            if ((rc = put_value(b, &o->via.array.ptr[i])))
                return rc;
        }
        sb_add(b, "]", 1);
        return 0;
    case MSGPACK_OBJECT_MAP:
        sb_add(b, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                sb_add(b, ",", 1);
            if ((rc = put_key(b, &o->via.map.ptr[i].key)))
                return rc;
            sb_add(b, ":", 1);
            if ((rc = put_value(b, &o->via.map.ptr[i].val)))
                return rc;
        }
        sb_add(b, "}", 1);
        return 0;
    }
    return PL_EFORMAT;
}

int row_put_object(Strbuf *b, const msgpack_object *o)
{
    size_t start = b->len;
    int rc = put_value(b, o);

    if (rc)
        sb_setlen(b, start);
    return rc;
}

int row_to_json(const void *mp, size_t len, Strbuf *b)
{
    msgpack_zone zone;
    msgpack_object o;
    size_t start = b->len;
    int rc;

    zone_init(&zone);
    if ((rc = decode(mp, len, &zone, &o)))
        goto fail;
    if ((rc = put_value(b, &o)))
        goto fail;
    msgpack_zone_destroy(&zone);
    return 0;
fail:
    sb_setlen(b, start);
    msgpack_zone_destroy(&zone);
    return rc;
}

/* --------------------------------------------------- fields and merging */

static int key_is(const msgpack_object *k, const char *s, size_t n)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           (n == 0 || memcmp(k->via.str.ptr, s, n) == 0);
}

/* find returns the value of the first member of map named s[0..n). */
static const msgpack_object *find(const msgpack_object *map, const char *s, size_t n)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, s, n))
            return &map->via.map.ptr[i].val;
    return NULL;
}

/* find_path: a member named by the whole path wins; otherwise each dot in
 * turn splits it into a member holding a map and the path inside that map,
 * so "a.b" finds a member literally named "a.b" as well as b inside a. */
static const msgpack_object *find_path(const msgpack_object *map, const char *s, size_t n)
{
    const msgpack_object *v = find(map, s, n);

    if (v)
        return v;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '.')
            continue;
        v = find(map, s, i);
        if (v && v->type == MSGPACK_OBJECT_MAP && (v = find_path(v, s + i + 1, n - i - 1)))
            return v;
    }
    return NULL;
}

const msgpack_object *row_field(const msgpack_object *map, const char *name)
{
    return name ? find_path(map, name, strlen(name)) : NULL;
}

int row_field_text(const msgpack_object *map, const char *name, Strbuf *out)
{
    const msgpack_object *v = row_field(map, name);

    if (!v)
        return PL_EINVAL;
    switch (v->type) {
    case MSGPACK_OBJECT_STR:
        sb_add(out, v->via.str.ptr, v->via.str.size);
        return 0;
    case MSGPACK_OBJECT_NIL:
    case MSGPACK_OBJECT_BOOLEAN:
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return put_value(out, v);
    case MSGPACK_OBJECT_EXT:
        return v->via.ext.type == ROW_EXT_NUMBER ? put_value(out, v) : PL_EINVAL;
    default:
        return PL_EINVAL;
    }
}

void row_pack_object(msgpack_packer *pk, const msgpack_object *o)
{
    msgpack_pack_object(pk, *o);
}

/* setting returns the value that field k of base takes in a merge: that of
 * the last to[i] naming it, or NULL when none does. */
static const msgpack_object *setting(const msgpack_object *k, const char *const *to,
                                     const msgpack_object *const *val, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (val[i] && key_is(k, to[i], strlen(to[i])))
            return val[i];
    return NULL;
}

/* appended says whether to[i] is a new field of the merge: found in src,
 * not in base, and not named again by a later to[j]. */
static int appended(const msgpack_object *base, const char *const *to,
                    const msgpack_object *const *val, size_t n, size_t i)
{
    if (!val[i] || find(base, to[i], strlen(to[i])))
        return 0;
    for (size_t j = i + 1; j < n; j++)
        if (val[j] && strcmp(to[j], to[i]) == 0)
            return 0;
    return 1;
}

int row_merge(const msgpack_object *base, const msgpack_object *src, const char *const *from,
              const char *const *to, size_t n, msgpack_sbuffer *out, size_t *missing)
{
    const msgpack_object **val = NULL;
    msgpack_packer pk;
    size_t lost = 0, added = 0;
    int rc = PL_EINVAL;

    if (!base || !src || base->type != MSGPACK_OBJECT_MAP || src->type != MSGPACK_OBJECT_MAP)
        goto fail;
    val = xcalloc(n ? n : 1, sizeof *val);
    for (size_t i = 0; i < n; i++)
        if (!(val[i] = row_field(src, from[i])))
            lost++;
    for (size_t i = 0; i < n; i++)
        added += (size_t)appended(base, to, val, n, i);
    if (added > UINT32_MAX - base->via.map.size)
        goto fail;

    msgpack_packer_init(&pk, out, row_sbuf_write);
    msgpack_pack_map(&pk, base->via.map.size + (uint32_t)added);
    for (uint32_t k = 0; k < base->via.map.size; k++) {
        const msgpack_object_kv *kv = &base->via.map.ptr[k];
        const msgpack_object *v = setting(&kv->key, to, val, n);
        row_pack_object(&pk, &kv->key);
        row_pack_object(&pk, v ? v : &kv->val);
    }
    for (size_t i = 0; i < n; i++) {
        if (!appended(base, to, val, n, i))
            continue;
        msgpack_pack_str(&pk, strlen(to[i]));
        msgpack_pack_str_body(&pk, to[i], strlen(to[i]));
        row_pack_object(&pk, val[i]);
    }
    rc = 0;
fail:
    free(val);
    if (missing)
        *missing = lost;
    return rc;
}
