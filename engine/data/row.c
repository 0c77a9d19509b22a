/* row.c: staged rows: JSON <-> msgpack, views, fields and merges.
 *
 * JSON to msgpack. yajl's callback parser reads the text with its default
 * strictness (no comments, no trailing garbage, one value). Numbers arrive as
 * raw text (the yajl_number callback), so nothing goes through a double. A
 * msgpack map or array needs its element count before its elements, so the
 * callbacks record a flat pre-order list of events (containers carry a count
 * that grows as their elements arrive; strings and number texts live in one
 * byte buffer), and the packer then walks that list once.
 *
 * Strings. yajl checks escapes and, loosely, UTF-8, but it decodes a lone
 * UTF-16 surrogate escape into "?" or into an encoded surrogate. So each
 * string is decoded here again from its literal in the input; during a
 * callback yajl's byte count is the end of the current token, the closing
 * quote. UTF-8 is checked against the table of well-formed sequences (as
 * json_validate does), and a surrogate escape must be a high one followed by
 * a low one. A lone surrogate has no UTF-8 form (PostgreSQL text cannot hold
 * one either), so it is refused with its byte offset rather than replaced:
 * the row becomes a rejected row that says why, not a silently changed one.
 *
 * Numbers. An integer written canonically (not "-0") that fits int64, or
 * uint64 when not negative, becomes a msgpack int; any other number becomes
 * an ext of type ROW_EXT_NUMBER holding its JSON text as written ("0.1000",
 * "1E400", "-0", "12345678901234567890123").
 *
 * Canonical JSON: what row_to_json writes, so JSON -> msgpack -> JSON gives
 * this form and the form is a fixed point:
 *   - no whitespace anywhere;
 *   - object members in stored order (the input's; duplicate names kept);
 *   - strings: \" \\ \b \f \n \r \t escaped as such, other control
 *     characters and DEL as \u00xx (lowercase hex), everything else as raw
 *     UTF-8 ("\u00e9" and "é" both come back as "é", "\ud83d\ude00" as the
 *     raw 4-byte emoji, "\/" as "/");
 *   - integers in plain decimal; ext numbers verbatim;
 *   - true, false, null.
 * Values that JSON input never produces: float32/64 in the shortest %g form
 * that reads back to the same value (NaN and infinities as null), bin as a
 * base64 string, ext types other than ROW_EXT_NUMBER as null, and a map key
 * that is not a string as the string of its JSON text.
 *
 * msgpack to objects. Decoding is done here rather than by msgpack_unpack:
 * the library's unpacker has a fixed stack of 32 levels and refuses the rows
 * up to 64 deep that JSON may bring. Views point into the input bytes; the
 * zone holds only the object arrays. */
#include "row.h"

#include "json.h"
#include "pl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define ROW_MAX_DEPTH 64

/* ------------------------------------------------------ scalars as JSON */

static void put_int(Strbuf *b, uint64_t mag, int neg)
{
    char t[21];
    size_t i = sizeof t;
    do {
        t[--i] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (neg)
        t[--i] = '-';
    sb_add(b, t + i, sizeof t - i);
}

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
        put_int(b, o->via.u64, 0);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        if (o->via.i64 < 0)
            put_int(b, 0 - (uint64_t)o->via.i64, 1);
        else
            put_int(b, (uint64_t)o->via.i64, 0);
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

/* ------------------------------------------------------ JSON to msgpack */

/* sbuf_write appends to a msgpack_sbuffer like msgpack_sbuffer_write, but
 * grows it through xrealloc: out of memory aborts instead of truncating. */
static int sbuf_write(void *data, const char *buf, size_t len)
{
    msgpack_sbuffer *sb = data;

    if (len == 0)
        return 0;
    if (sb->alloc - sb->size < len) {
        size_t cap = sb->alloc ? sb->alloc : 256;
        PL_ASSERT(len < SIZE_MAX / 4 - sb->size, "a msgpack buffer stays under SIZE_MAX / 4");
        while (cap - sb->size < len)
            cap *= 2;
        sb->data = xrealloc(sb->data, cap);
        sb->alloc = cap;
    }
    memcpy(sb->data + sb->size, buf, len);
    sb->size += len;
    return 0;
}

enum { EV_NIL, EV_TRUE, EV_FALSE, EV_UINT, EV_NEG, EV_NUM, EV_STR, EV_MAP, EV_ARRAY };

/* Ev: one value, in pre-order. EV_UINT: u is the value; EV_NEG: u is the
 * magnitude (1..2^63); EV_NUM, EV_STR: n bytes at off in Parse.bytes;
 * EV_MAP, EV_ARRAY: n members or elements. */
typedef struct Ev {
    unsigned char kind;
    uint32_t n;
    union {
        uint64_t u;
        size_t off;
    } v;
} Ev;

typedef struct Parse {
    yajl_handle h;
    const unsigned char *json;
    size_t len;
    Ev *ev;
    size_t nev, cap;
    Strbuf bytes;
    size_t open[ROW_MAX_DEPTH]; /* index in ev of each open container */
    int depth;
    /* Why the callbacks stopped the parse: why and at (a byte offset), or
     * utf8 set when a string held bytes that are not UTF-8. */
    const char *why;
    size_t at;
    int utf8;
} Parse;

/* stop records why the parse stops at byte at; callbacks return it (0). */
static int stop(Parse *ps, size_t at, const char *why)
{
    ps->why = why;
    ps->at = at;
    return 0;
}

/* ev_add appends an event; a value (not a key) counts in an open array. */
static Ev *ev_add(Parse *ps, int kind, int value)
{
    Ev *e;

    if (value && ps->depth > 0) {
        Ev *c = &ps->ev[ps->open[ps->depth - 1]];
        if (c->kind == EV_ARRAY) {
            if (c->n == UINT32_MAX)
                return NULL;
            c->n++;
        }
    }
    if (ps->nev == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->ev = xrealloc(ps->ev, ps->cap * sizeof *ps->ev);
    }
    e = &ps->ev[ps->nev++];
    e->kind = (unsigned char)kind;
    e->n = 0;
    e->v.u = 0;
    return e;
}

static int add_scalar(Parse *ps, int kind)
{
    if (!ev_add(ps, kind, 1))
        return stop(ps, yajl_get_bytes_consumed(ps->h), "more than 2^32-1 elements in an array");
    return 1;
}

static int cb_null(void *ctx)
{
    return add_scalar(ctx, EV_NIL);
}

static int cb_boolean(void *ctx, int v)
{
    return add_scalar(ctx, v ? EV_TRUE : EV_FALSE);
}

static int cb_number(void *ctx, const char *s, size_t n)
{
    Parse *ps = ctx;
    int neg = n > 0 && s[0] == '-', isint = 1;
    size_t i = (size_t)neg;
    uint64_t v = 0;
    Ev *e;

    /* Canonical integers only: "-0" would lose its sign, and yajl refuses
     * leading zeros already. */
    if (n == i || n - i > 20 || (s[i] == '0' && (n - i > 1 || neg)))
        isint = 0;
    for (; isint && i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (!is_digit(s[i]) || v > (UINT64_MAX - d) / 10)
            isint = 0;
        else
            v = v * 10 + d;
    }
    if (isint && neg && v > (uint64_t)INT64_MAX + 1)
        isint = 0;
    if (!isint && n > UINT32_MAX)
        return stop(ps, yajl_get_bytes_consumed(ps->h), "a number longer than 4 GiB");
    if (!(e = ev_add(ps, isint ? (neg ? EV_NEG : EV_UINT) : EV_NUM, 1)))
        return stop(ps, yajl_get_bytes_consumed(ps->h), "more than 2^32-1 elements in an array");
    if (isint) {
        e->v.u = v;
    } else {
        e->n = (uint32_t)n;
        e->v.off = ps->bytes.len;
        sb_add(&ps->bytes, s, n);
    }
    return 1;
}

/* literal_start returns the offset of the quote that opens the string
 * literal whose closing quote is at j[end]. Inside a literal a quote is
 * always escaped, that is preceded by an odd run of backslashes; the
 * opening quote follows a character outside the literal. */
static size_t literal_start(const unsigned char *j, size_t end)
{
    size_t i = end;
    while (i > 0) {
        size_t k;
        if (j[--i] != '"')
            continue;
        for (k = i; k > 0 && j[k - 1] == '\\'; k--)
            ;
        if ((i - k) % 2 == 0)
            return i;
    }
    PL_ASSERT(0, "a string literal has an opening quote");
}

/* add_string decodes the literal yajl has just read (it ends at yajl's byte
 * count) into bytes and appends its event. yajl has checked the grammar of
 * the literal (escapes, 4 hex digits, no raw control characters). */
static int add_string(Parse *ps, int value)
{
    const unsigned char *j = ps->json;
    size_t end = yajl_get_bytes_consumed(ps->h), i;
    Strbuf *b = &ps->bytes;
    char *o;
    Ev *e;

    PL_ASSERT(end >= 2 && end <= ps->len && j[end - 1] == '"',
              "yajl's byte count ends a string callback's literal");
    end--;
    i = literal_start(j, end) + 1;
    if (end - i > UINT32_MAX)
        return stop(ps, i - 1, "a string longer than 4 GiB");
    sb_grow(b, end - i); /* no escape decodes to more bytes than it takes */
    o = b->buf + b->len;
    while (i < end) {
        unsigned c = j[i];
        if (c == '\\') {
            uint32_t cp;
            c = j[i + 1];
            switch (c) {
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u':
                cp = json_hex4((const char *)j + i + 2);
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return stop(ps, i, "lone UTF-16 surrogate escape (a low one first)");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (end - i < 12 || j[i + 6] != '\\' || j[i + 7] != 'u' ||
                        (lo = json_hex4((const char *)j + i + 8)) < 0xDC00 || lo > 0xDFFF)
                        return stop(ps, i, "lone UTF-16 surrogate escape (a high one "
                                           "without a low one after it)");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                o += json_utf8_put(o, cp);
                i += 4;
                break;
            default: /* '"', '\\', '/' */
                *o++ = (char)c;
            }
            i += 2;
        } else if (c >= 0x80) {
            size_t k = json_utf8_len(j + i, end - i);
            if (!k) {
                ps->utf8 = 1;
                return stop(ps, i, "invalid UTF-8");
            }
            memcpy(o, j + i, k);
            o += k;
            i += k;
        } else {
            *o++ = (char)c;
            i++;
        }
    }
    if (!(e = ev_add(ps, EV_STR, value)))
        return stop(ps, end, "more than 2^32-1 elements in an array");
    e->v.off = b->len;
    e->n = (uint32_t)(o - (b->buf + b->len));
    b->len += e->n;
    b->buf[b->len] = '\0';
    return 1;
}

static int cb_string(void *ctx, const unsigned char *s, size_t n)
{
    (void)s, (void)n; /* decoded again from the literal: see add_string */
    return add_string(ctx, 1);
}

static int cb_map_key(void *ctx, const unsigned char *s, size_t n)
{
    Parse *ps = ctx;
    Ev *m = &ps->ev[ps->open[ps->depth - 1]];

    (void)s, (void)n;
    if (m->n == UINT32_MAX)
        return stop(ps, yajl_get_bytes_consumed(ps->h), "more than 2^32-1 members in an object");
    m->n++;
    return add_string(ps, 0);
}

static int open_container(Parse *ps, int kind)
{
    size_t at = yajl_get_bytes_consumed(ps->h) - 1; /* the bracket */

    if (ps->depth == ROW_MAX_DEPTH)
        return stop(ps, at, "nesting deeper than 64 levels");
    if (!ev_add(ps, kind, 1))
        return stop(ps, at, "more than 2^32-1 elements in an array");
    ps->open[ps->depth++] = ps->nev - 1;
    return 1;
}

static int cb_start_map(void *ctx)
{
    return open_container(ctx, EV_MAP);
}

static int cb_start_array(void *ctx)
{
    return open_container(ctx, EV_ARRAY);
}

static int cb_end(void *ctx)
{
    Parse *ps = ctx;
    ps->depth--;
    return 1;
}

static const yajl_callbacks parse_cbs = {
    cb_null, cb_boolean, NULL, NULL, cb_number, cb_string,
    cb_start_map, cb_map_key, cb_end, cb_start_array, cb_end,
};

/* yajl allocates through our wrappers: out of memory aborts (pl.h). */
static void *ya_malloc(void *ctx, size_t n)
{
    (void)ctx;
    return xmalloc(n);
}

static void *ya_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return xrealloc(p, n);
}

static void ya_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void pack_events(const Parse *ps, msgpack_sbuffer *out)
{
    msgpack_packer pk;
    const char *bytes = ps->bytes.buf;

    msgpack_packer_init(&pk, out, sbuf_write);
    for (size_t i = 0; i < ps->nev; i++) {
        const Ev *e = &ps->ev[i];
        switch (e->kind) {
        case EV_NIL: msgpack_pack_nil(&pk); break;
        case EV_TRUE: msgpack_pack_true(&pk); break;
        case EV_FALSE: msgpack_pack_false(&pk); break;
        case EV_UINT: msgpack_pack_uint64(&pk, e->v.u); break;
        case EV_NEG: msgpack_pack_int64(&pk, -(int64_t)(e->v.u - 1) - 1); break;
        case EV_NUM:
            msgpack_pack_ext(&pk, e->n, ROW_EXT_NUMBER);
            msgpack_pack_ext_body(&pk, bytes + e->v.off, e->n);
            break;
        case EV_STR:
            msgpack_pack_str(&pk, e->n);
            msgpack_pack_str_body(&pk, bytes + e->v.off, e->n);
            break;
        case EV_MAP: msgpack_pack_map(&pk, e->n); break;
        case EV_ARRAY: msgpack_pack_array(&pk, e->n); break;
        }
    }
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case EV_NIL: return "null";
    case EV_TRUE: case EV_FALSE: return "a boolean";
    case EV_UINT: case EV_NEG: case EV_NUM: return "a number";
    case EV_STR: return "a string";
    case EV_ARRAY: return "an array";
    }
    return "an object";
}

static int from_json0(const char *json, size_t len, int object, msgpack_sbuffer *out,
                      char *err, size_t errlen)
{
    yajl_alloc_funcs af = {ya_malloc, ya_realloc, ya_free, NULL};
    Parse ps;
    yajl_status st;
    int rc = PL_EINVAL;

    memset(&ps, 0, sizeof ps);
    ps.json = (const unsigned char *)json;
    ps.len = len;
    sb_init(&ps.bytes);
    ps.h = yajl_alloc(&parse_cbs, &af, &ps);
    PL_ASSERT(ps.h, "yajl_alloc returns a parser");

    st = yajl_parse(ps.h, ps.json, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(ps.h);
    if (st != yajl_status_ok) {
        /* UTF-8 errors and yajl's own: json_validate words them (the same
         * first bad byte, and the same grammar error, as here). */
        if (ps.why && !ps.utf8) {
            if (err && errlen)
                snprintf(err, errlen, "invalid JSON at byte %zu: %s", ps.at, ps.why);
        } else if (json_validate(json, len, err, errlen) == 0 && err && errlen) {
            snprintf(err, errlen, "invalid JSON at byte %zu", ps.utf8 ? ps.at : len);
        }
        goto fail;
    }
    PL_ASSERT(ps.nev > 0 && ps.depth == 0, "a parsed JSON text is one whole value");
    if (object && ps.ev[0].kind != EV_MAP) {
        if (err && errlen)
            snprintf(err, errlen, "invalid row: a row is a JSON object, not %s",
                     kind_name(ps.ev[0].kind));
        goto fail;
    }
    pack_events(&ps, out);
    rc = 0;
fail:
    yajl_free(ps.h);
    free(ps.ev);
    sb_free(&ps.bytes);
    return rc;
}

int row_from_json(const char *json, size_t len, msgpack_sbuffer *out, char *err, size_t errlen)
{
    return from_json0(json, len, 0, out, err, errlen);
}

int row_from_json_object(const char *json, size_t len, msgpack_sbuffer *out, char *err,
                         size_t errlen)
{
    return from_json0(json, len, 1, out, err, errlen);
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

    msgpack_packer_init(&pk, out, sbuf_write);
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
