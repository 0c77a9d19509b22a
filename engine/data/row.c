/* row.c: rows from JSON text (row_from_json); views, JSON out, fields and
 * merges are in row_view.c.
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
 * The fast path. Most texts are valid, so a single-pass parser of our own
 * (fj_*) reads them first and writes the msgpack straight into the output,
 * with the same rules (the strict grammar, UTF-8 by the table, surrogate
 * pairs, canonical integers, 64 levels) and the same bytes as packing the
 * events would give (minimal headers; a container's header is written
 * when its count is known, its elements moved up behind it). It gives up
 * on anything it does not accept, and then the yajl path above runs from
 * the start: it either accepts the text as well (the fast path is never
 * more lenient) or words the error. row_json_slow (tests) turns it off. */
#include "row.h"

#include "json.h"
#include "pl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ------------------------------------------------------ JSON to msgpack */

int row_sbuf_write(void *data, const char *buf, size_t len)
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

static void pack_events(const Parse *ps, msgpack_sbuffer *out)
{
    msgpack_packer pk;
    const char *bytes = ps->bytes.buf;

    msgpack_packer_init(&pk, out, row_sbuf_write);
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
    Parse ps;
    yajl_status st;
    int rc = PL_EINVAL;

    memset(&ps, 0, sizeof ps);
    ps.json = (const unsigned char *)json;
    ps.len = len;
    sb_init(&ps.bytes);
    ps.h = json_yajl_alloc(&parse_cbs, &ps);

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

/* --------------------------------------------------- JSON: the fast path */

static int json_slow_only;

void row_json_slow(int on)
{
    json_slow_only = on;
}

typedef struct Fj {
    const unsigned char *p, *end;
    msgpack_sbuffer *out;
    int depth;
} Fj;

static void fj_room(msgpack_sbuffer *o, size_t n)
{
    if (o->alloc - o->size >= n)
        return;
    size_t cap = o->alloc ? o->alloc : 256;
    PL_ASSERT(n < SIZE_MAX / 4 - o->size, "a msgpack buffer stays under SIZE_MAX / 4");
    while (cap - o->size < n)
        cap *= 2;
    o->data = xrealloc(o->data, cap);
    o->alloc = cap;
}

static void fj_put1(msgpack_sbuffer *o, unsigned c)
{
    fj_room(o, 1);
    o->data[o->size++] = (char)c;
}

/* fj_head writes the minimal header of a map (0x80, 0xde, 0xdf), array
 * (0x90, 0xdc, 0xdd) or str (0xa0, 0xd9, 0xda, 0xdb) of n into h; returns
 * its length. */
static size_t fj_head(unsigned char *h, int kind, size_t n)
{
    if (kind == 's') {
        if (n < 32) {
            h[0] = (unsigned char)(0xa0 | n);
            return 1;
        }
        if (n < 256) {
            h[0] = 0xd9;
            h[1] = (unsigned char)n;
            return 2;
        }
    } else if (n < 16) {
        h[0] = (unsigned char)((kind == 'm' ? 0x80 : 0x90) | n);
        return 1;
    }
    if (n < 65536) {
        h[0] = kind == 's' ? 0xda : kind == 'm' ? 0xde : 0xdc;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        return 3;
    }
    h[0] = kind == 's' ? 0xdb : kind == 'm' ? 0xdf : 0xdd;
    pl_put_be32(h + 1, (uint32_t)n);
    return 5;
}

/* fj_close writes the header of the container or string whose body began
 * at body (5 bytes were kept free before it) and moves the body up. */
static void fj_close(msgpack_sbuffer *o, size_t body, int kind, size_t n)
{
    unsigned char h[5];
    size_t hl = fj_head(h, kind, n), at = body - 5;
    memcpy(o->data + at, h, hl);
    if (hl < 5) {
        memmove(o->data + at + hl, o->data + body, o->size - body);
        o->size -= 5 - hl;
    }
}

static void fj_ws(Fj *f)
{
    while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
        f->p++;
}

static int fj_hex4(const unsigned char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* fj_string reads a string literal (f->p at its quote) into the output as
 * a msgpack str. */
static int fj_string(Fj *f)
{
    const unsigned char *p = ++f->p, *end = f->end;
    /* The common case: no escape, ASCII or well-formed UTF-8. */
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t k = json_utf8_len(p, (size_t)(end - p));
        if (!k)
            return -1;
        p += k;
    }
    if (p >= end || *p < 0x20)
        return -1;
    msgpack_sbuffer *o = f->out;
    if (*p == '"') {
        size_t n = (size_t)(p - f->p);
        unsigned char h[5];
        size_t hl = fj_head(h, 's', n);
        fj_room(o, hl + n);
        memcpy(o->data + o->size, h, hl);
        memcpy(o->data + o->size + hl, f->p, n);
        o->size += hl + n;
        f->p = p + 1;
        return 0;
    }
    /* Escapes: decode behind a 5-byte gap (nothing decodes longer than
     * its text), then write the header. */
    size_t raw = (size_t)(p - f->p);
    fj_room(o, 5 + raw + (size_t)(end - p));
    size_t body = o->size + 5;
    char *w = o->data + body;
    memcpy(w, f->p, raw);
    w += raw;
    while (p < end && *p != '"') {
        unsigned c = *p;
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t k = json_utf8_len(p, (size_t)(end - p));
            if (!k)
                return -1;
            memcpy(w, p, k);
            w += k;
            p += k;
            continue;
        }
        if (c != '\\') {
            *w++ = (char)c;
            p++;
            continue;
        }
        if (end - p < 2)
            return -1;
        uint32_t cp, lo;
        switch (p[1]) {
        case '"': *w++ = '"'; p += 2; break;
        case '\\': *w++ = '\\'; p += 2; break;
        case '/': *w++ = '/'; p += 2; break;
        case 'b': *w++ = '\b'; p += 2; break;
        case 'f': *w++ = '\f'; p += 2; break;
        case 'n': *w++ = '\n'; p += 2; break;
        case 'r': *w++ = '\r'; p += 2; break;
        case 't': *w++ = '\t'; p += 2; break;
        case 'u':
            if (end - p < 6 || fj_hex4(p + 2, &cp))
                return -1;
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || fj_hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            w += json_utf8_put(w, cp);
            break;
        default:
            return -1;
        }
    }
    if (p >= end)
        return -1;
    size_t n = (size_t)(w - (o->data + body));
    if (n > UINT32_MAX)
        return -1;
    o->size = body + n;
    fj_close(o, body, 's', n);
    f->p = p + 1;
    return 0;
}

/* fj_number reads a number as cb_number would have it. */
static int fj_number(Fj *f)
{
    const unsigned char *s = f->p, *p = s, *end = f->end;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit((char)*p))
        return -1;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit((char)*p))
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit((char)*p))
            return -1;
        while (p < end && is_digit((char)*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit((char)*p))
            return -1;
        while (p < end && is_digit((char)*p))
            p++;
    }
    size_t n = (size_t)(p - s);
    f->p = p;
    /* As cb_number: canonical integers that fit become ints. */
    int neg = s[0] == '-', isint = 1;
    size_t i = (size_t)neg;
    uint64_t v = 0;
    if (n - i > 20 || (s[i] == '0' && (n - i > 1 || neg)))
        isint = 0;
    for (; isint && i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (!is_digit((char)s[i]) || v > (UINT64_MAX - d) / 10)
            isint = 0;
        else
            v = v * 10 + d;
    }
    if (isint && neg && v > (uint64_t)INT64_MAX + 1)
        isint = 0;
    msgpack_sbuffer *o = f->out;
    fj_room(o, 9 + 6 + n);
    unsigned char *w = (unsigned char *)o->data + o->size;
    if (!isint) {
        if (n > UINT32_MAX)
            return -1;
        size_t hl;
        switch (n) {
        case 1: w[0] = 0xd4; hl = 1; break;
        case 2: w[0] = 0xd5; hl = 1; break;
        case 4: w[0] = 0xd6; hl = 1; break;
        case 8: w[0] = 0xd7; hl = 1; break;
        case 16: w[0] = 0xd8; hl = 1; break;
        default:
            if (n < 256) {
                w[0] = 0xc7;
                w[1] = (unsigned char)n;
                hl = 2;
            } else if (n < 65536) {
                w[0] = 0xc8;
                w[1] = (unsigned char)(n >> 8);
                w[2] = (unsigned char)n;
                hl = 3;
            } else {
                w[0] = 0xc9;
                pl_put_be32(w + 1, (uint32_t)n);
                hl = 5;
            }
        }
        w[hl] = ROW_EXT_NUMBER;
        memcpy(w + hl + 1, s, n);
        o->size += hl + 1 + n;
        return 0;
    }
    size_t l;
    if (!neg) {
        if (v < 128) {
            w[0] = (unsigned char)v;
            l = 1;
        } else if (v < 256) {
            w[0] = 0xcc;
            w[1] = (unsigned char)v;
            l = 2;
        } else if (v < 65536) {
            w[0] = 0xcd;
            w[1] = (unsigned char)(v >> 8);
            w[2] = (unsigned char)v;
            l = 3;
        } else if (v <= UINT32_MAX) {
            w[0] = 0xce;
            pl_put_be32(w + 1, (uint32_t)v);
            l = 5;
        } else {
            w[0] = 0xcf;
            pl_put_be64(w + 1, v);
            l = 9;
        }
    } else {
        int64_t d = -(int64_t)(v - 1) - 1;
        if (d >= -32) {
            w[0] = (unsigned char)(int8_t)d;
            l = 1;
        } else if (d >= -128) {
            w[0] = 0xd0;
            w[1] = (unsigned char)(int8_t)d;
            l = 2;
        } else if (d >= -32768) {
            w[0] = 0xd1;
            w[1] = (unsigned char)((uint16_t)(int16_t)d >> 8);
            w[2] = (unsigned char)(uint16_t)(int16_t)d;
            l = 3;
        } else if (d >= INT32_MIN) {
            w[0] = 0xd2;
            pl_put_be32(w + 1, (uint32_t)(int32_t)d);
            l = 5;
        } else {
            w[0] = 0xd3;
            pl_put_be64(w + 1, (uint64_t)d);
            l = 9;
        }
    }
    o->size += l;
    return 0;
}

static int fj_word(Fj *f, const char *w, size_t n, unsigned byte)
{
    if ((size_t)(f->end - f->p) < n || memcmp(f->p, w, n) != 0)
        return -1;
    f->p += n;
    fj_put1(f->out, byte);
    return 0;
}

static int fj_value(Fj *f)
{
    if (f->p >= f->end)
        return -1;
    switch (*f->p) {
    case '"':
        return fj_string(f);
    case 't':
        return fj_word(f, "true", 4, 0xc3);
    case 'f':
        return fj_word(f, "false", 5, 0xc2);
    case 'n':
        return fj_word(f, "null", 4, 0xc0);
    case '{':
    case '[': {
        int map = *f->p == '{';
        if (f->depth == ROW_MAX_DEPTH)
            return -1;
        f->depth++;
        f->p++;
        msgpack_sbuffer *o = f->out;
        fj_room(o, 5);
        o->size += 5;
        size_t body = o->size, n = 0;
        fj_ws(f);
        if (f->p < f->end && *f->p == (map ? '}' : ']')) {
            f->p++;
        } else {
            for (;;) {
                if (map) {
                    if (f->p >= f->end || *f->p != '"' || fj_string(f))
                        return -1;
                    fj_ws(f);
                    if (f->p >= f->end || *f->p != ':')
                        return -1;
                    f->p++;
                    fj_ws(f);
                }
                if (fj_value(f))
                    return -1;
                if (++n > UINT32_MAX)
                    return -1;
                fj_ws(f);
                if (f->p >= f->end)
                    return -1;
                if (*f->p == ',') {
                    f->p++;
                    fj_ws(f);
                    continue;
                }
                if (*f->p != (map ? '}' : ']'))
                    return -1;
                f->p++;
                break;
            }
        }
        fj_close(o, body, map ? 'm' : 'a', n);
        f->depth--;
        return 0;
    }
    default:
        return fj_number(f);
    }
}

/* fast_from_json: the fast path; 0, or -1 with out as it was. */
static int fast_from_json(const char *json, size_t len, int object, msgpack_sbuffer *out)
{
    size_t start = out->size;
    Fj f = {(const unsigned char *)json, (const unsigned char *)json + len, out, 0};
    fj_ws(&f);
    if (object && (f.p >= f.end || *f.p != '{'))
        goto fail;
    if (fj_value(&f))
        goto fail;
    fj_ws(&f);
    if (f.p != f.end)
        goto fail;
    return 0;
fail:
    out->size = start;
    return -1;
}

static int from_json0(const char *json, size_t len, int object, msgpack_sbuffer *out,
                      char *err, size_t errlen);

int row_from_json(const char *json, size_t len, msgpack_sbuffer *out, char *err, size_t errlen)
{
    if (!json_slow_only && fast_from_json(json, len, 0, out) == 0)
        return 0;
    return from_json0(json, len, 0, out, err, errlen);
}

int row_from_json_object(const char *json, size_t len, msgpack_sbuffer *out, char *err,
                         size_t errlen)
{
    if (!json_slow_only && fast_from_json(json, len, 1, out) == 0)
        return 0;
    return from_json0(json, len, 1, out, err, errlen);
}
