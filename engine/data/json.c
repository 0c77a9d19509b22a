/* json.c: JSON validation (yajl), UTF-8 checks and JSON writers.
 *
 * Validation runs yajl's streaming parser with no callbacks: nothing is
 * built, numbers are not converted (so a 30-digit integer is fine, as it is
 * in JSON), and only the grammar is checked. yajl's own UTF-8 check lets
 * overlong forms and encoded surrogates through, so the whole text is also
 * checked here against the Unicode table of well-formed sequences; the error
 * reported is whichever comes first in the text. yajl also takes a lone
 * UTF-16 surrogate escape ("\ud800" without its low half, or a low half
 * alone), which encodes no character (RFC 8259 section 8.2 leaves it to the
 * reader; PostgreSQL's text and jsonb cannot hold it), so the escapes of a
 * text yajl accepted are checked too.
 *
 * A text is valid far more often than not, so a small checker of our own
 * (valid_fast: the RFC's grammar, strict UTF-8, any escape that is
 * well-formed and no lone surrogate) runs first and yajl only when it
 * refuses, to accept what it could not be sure of or to word the error. It
 * never accepts what yajl, the UTF-8 scan and the surrogate scan refuse.
 * json_validate_slow (tests) turns it off. */
#include "json.h"

#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* ---------------------------------------------------------------- UTF-8 */

/* utf8_seq returns the length (1..4) of the well-formed UTF-8 sequence at
 * p[0..n), or 0 and a reason when there is none (Unicode 3.9, table 3-7). */
static size_t utf8_seq(const unsigned char *p, size_t n, const char **why)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c < 0xC2) {
        *why = c < 0xC0 ? "continuation byte without a lead byte" : "overlong encoding";
        return 0;
    }
    if (c < 0xE0) {
        len = 2;
    } else if (c < 0xF0) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* below: overlong */
        else if (c == 0xED)
            hi = 0x9F; /* above: UTF-16 surrogates */
    } else if (c < 0xF5) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* below: overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above: past U+10FFFF */
    } else {
        *why = "byte that never appears in UTF-8";
        return 0;
    }
    if (n < 2 || p[1] < lo || p[1] > hi) {
        if (n >= 2 && p[1] >= 0x80 && p[1] <= 0xBF)
            *why = c == 0xED ? "encoded UTF-16 surrogate"
                 : c == 0xF4 ? "code point past U+10FFFF" : "overlong encoding";
        else
            *why = "truncated sequence";
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (i >= n || p[i] < 0x80 || p[i] > 0xBF) {
            *why = "truncated sequence";
            return 0;
        }
    }
    return len;
}

static size_t utf8_scan(const unsigned char *p, size_t len, const char **why)
{
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, len - i, why);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

size_t json_utf8_bad(const void *buf, size_t len)
{
    const char *why;
    return utf8_scan(buf, len, &why);
}

size_t json_utf8_len(const void *p, size_t n)
{
    const char *why;
    return n ? utf8_seq(p, n, &why) : 0;
}

/* ------------------------------------------------------------ validation */

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t json_trim(const void *buf, size_t len, size_t *off)
{
    const unsigned char *p = buf;
    size_t a = 0, b = len;
    while (a < b && is_ws(p[a]))
        a++;
    while (b > a && is_ws(p[b - 1]))
        b--;
    *off = a;
    return b - a;
}

static int hex_val(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* u_escape reads the \uXXXX escape at p[0..n) into *cp: 1, or 0 when
 * there is none. */
static int u_escape(const unsigned char *p, size_t n, unsigned *cp)
{
    if (n < 6 || p[0] != '\\' || p[1] != 'u')
        return 0;
    unsigned v = 0;
    for (int i = 2; i < 6; i++) {
        int h = hex_val(p[i]);
        if (h < 0)
            return 0;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return 1;
}

/* surrogate_scan returns the offset of the first lone UTF-16 surrogate
 * escape in p[0..len), a JSON text yajl accepted, or len when there is
 * none; *why says which half it is. */
static size_t surrogate_scan(const unsigned char *p, size_t len, const char **why)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_str) {
            in_str = p[i] == '"';
            continue;
        }
        if (p[i] == '"') {
            in_str = 0;
        } else if (p[i] == '\\' && i + 1 < len) {
            unsigned cp, lo;
            if (p[i + 1] != 'u' || !u_escape(p + i, len - i, &cp)) {
                i++; /* a one-character escape */
                continue;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                *why = "a low surrogate escape without a high one before it";
                return i;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (!u_escape(p + i + 6, len - i - 6, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    *why = "a high surrogate escape without a low one after it";
                    return i;
                }
                i += 6;
            }
            i += 5;
        }
    }
    return len;
}

/* yajl allocates through our wrappers: out of memory aborts (pl.h). */
static int json_validate0(const void *buf, size_t len, char *err, size_t errlen);

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

yajl_handle json_yajl_alloc(const yajl_callbacks *cb, void *ctx)
{
    yajl_alloc_funcs af = {ya_malloc, ya_realloc, ya_free, NULL}; /* yajl copies it */
    yajl_handle h = yajl_alloc(cb, &af, ctx);
    PL_ASSERT(h, "yajl_alloc returns a parser");
    return h;
}

/* excerpt writes up to 16 bytes of p[0..n) printably into out[32]. */
static void excerpt(const unsigned char *p, size_t n, char out[32])
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 16; i++)
        out[o++] = p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\'' ? (char)p[i] : '?';
    out[o] = '\0';
}

/* tidy copies yajl's message without its "lexical error: " or "parse
 * error: " prefix and its final period and newline. */
static void tidy(const char *m, char *out, size_t cap)
{
    const char *c = strstr(m, "error: ");
    if (c)
        m = c + 7;
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == '.' || m[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, m, n);
    out[n] = '\0';
}

static int validate_slow_only;

void json_validate_slow(int on)
{
    validate_slow_only = on;
}

typedef struct Vf {
    const unsigned char *p, *end;
} Vf;

static void vf_ws(Vf *v)
{
    while (v->p < v->end && is_ws(*v->p))
        v->p++;
}

static int vf_string(Vf *v)
{
    const unsigned char *p = v->p + 1, *end = v->end;
    const char *why;
    while (p < end && *p != '"') {
        unsigned c = *p;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (end - p < 2)
                return -1;
            c = p[1];
            if (c == 'u') {
                unsigned cp, lo;
                if (!u_escape(p, (size_t)(end - p), &cp) || (cp >= 0xDC00 && cp <= 0xDFFF))
                    return -1; /* a low surrogate alone: yajl's path words it */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (!u_escape(p + 6, (size_t)(end - p - 6), &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return -1; /* a high surrogate without its low half */
                    p += 6;
                }
                p += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                p += 2;
            } else {
                return -1;
            }
        } else if (c >= 0x80) {
            size_t k = utf8_seq(p, (size_t)(end - p), &why);
            if (!k)
                return -1;
            p += k;
        } else {
            p++;
        }
    }
    if (p >= end)
        return -1;
    v->p = p + 1;
    return 0;
}

static int vf_digits(Vf *v)
{
    if (v->p >= v->end || *v->p < '0' || *v->p > '9')
        return -1;
    while (v->p < v->end && *v->p >= '0' && *v->p <= '9')
        v->p++;
    return 0;
}

static int vf_number(Vf *v)
{
    if (v->p < v->end && *v->p == '-')
        v->p++;
    if (v->p < v->end && *v->p == '0')
        v->p++;
    else if (vf_digits(v))
        return -1;
    if (v->p < v->end && *v->p == '.') {
        v->p++;
        if (vf_digits(v))
            return -1;
    }
    if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
        v->p++;
        if (v->p < v->end && (*v->p == '+' || *v->p == '-'))
            v->p++;
        if (vf_digits(v))
            return -1;
    }
    return 0;
}

static int vf_word(Vf *v, const char *w, size_t n)
{
    if ((size_t)(v->end - v->p) < n || memcmp(v->p, w, n) != 0)
        return -1;
    v->p += n;
    return 0;
}

/* vf_value checks one value; depth-bounded (a deeper text goes to yajl). */
static int vf_value(Vf *v, int depth)
{
    if (v->p >= v->end)
        return -1;
    switch (*v->p) {
    case '"':
        return vf_string(v);
    case 't':
        return vf_word(v, "true", 4);
    case 'f':
        return vf_word(v, "false", 5);
    case 'n':
        return vf_word(v, "null", 4);
    case '{':
    case '[': {
        int map = *v->p == '{';
        if (depth >= 256)
            return -1;
        v->p++;
        vf_ws(v);
        if (v->p < v->end && *v->p == (map ? '}' : ']')) {
            v->p++;
            return 0;
        }
        for (;;) {
            if (map) {
                if (v->p >= v->end || *v->p != '"' || vf_string(v))
                    return -1;
                vf_ws(v);
                if (v->p >= v->end || *v->p != ':')
                    return -1;
                v->p++;
                vf_ws(v);
            }
            if (vf_value(v, depth + 1))
                return -1;
            vf_ws(v);
            if (v->p >= v->end)
                return -1;
            if (*v->p == ',') {
                v->p++;
                vf_ws(v);
                continue;
            }
            if (*v->p != (map ? '}' : ']'))
                return -1;
            v->p++;
            return 0;
        }
    }
    default:
        return vf_number(v);
    }
}

static int valid_fast(const void *buf, size_t len)
{
    Vf v = {buf, (const unsigned char *)buf + len};
    vf_ws(&v);
    if (vf_value(&v, 0))
        return -1;
    vf_ws(&v);
    return v.p == v.end ? 0 : -1;
}

int json_validate(const void *buf, size_t len, char *err, size_t errlen)
{
    if (!validate_slow_only && valid_fast(buf, len) == 0)
        return 0;
    return json_validate0(buf, len, err, errlen);
}

static int json_validate0(const void *buf, size_t len, char *err, size_t errlen)
{
    const unsigned char *p = buf;
    const char *why = NULL;
    size_t off, n = json_trim(buf, len, &off);
    size_t bad = utf8_scan(p, len, &why);
    yajl_handle h = NULL;
    yajl_status st = yajl_status_ok;
    size_t at = 0;
    int eof = 0;
    char msg[160] = "", near[32];

    if (n == 0 && bad == len) {
        if (err && errlen)
            snprintf(err, errlen, "invalid JSON: no value (the text is %s)",
                     len ? "only whitespace" : "empty");
        return PL_EINVAL;
    }
    h = json_yajl_alloc(NULL, NULL);
    st = yajl_parse(h, p, len);
    if (st != yajl_status_ok) {
        /* yajl reports how far it read: the bad token ends just before,
         * except inside a string, where it stops at the bad character. */
        unsigned char *e = yajl_get_error(h, 0, p, len);
        at = yajl_get_bytes_consumed(h);
        if (!strstr((const char *)e, "inside string"))
            at = at ? at - 1 : 0;
        yajl_free_error(h, e);
    } else {
        st = yajl_complete_parse(h);
        if (st != yajl_status_ok) {
            /* At the end yajl does not say where: an unfinished value ends
             * at the end; anything else is about the last token. */
            at = off + n;
            unsigned char *e = yajl_get_error(h, 0, p, len);
            eof = strstr((const char *)e, "premature EOF") != NULL;
            yajl_free_error(h, e);
            if (!eof)
                while (at > off && !is_ws(p[at - 1]))
                    at--;
        }
    }
    if (st != yajl_status_ok) {
        unsigned char *e = yajl_get_error(h, 0, p, len);
        tidy((const char *)e, msg, sizeof msg);
        yajl_free_error(h, e);
    }
    yajl_free(h);

    if (bad < len && (st == yajl_status_ok || bad <= at)) {
        if (err && errlen)
            snprintf(err, errlen, "invalid UTF-8 at byte %zu: %s (byte 0x%02x)",
                     bad, why, p[bad]);
        return PL_EINVAL;
    }
    if (st == yajl_status_ok) {
        const char *sw = NULL;
        size_t at_s = surrogate_scan(p, len, &sw);
        if (at_s == len)
            return 0;
        if (err && errlen) {
            excerpt(p + at_s, len - at_s, near);
            snprintf(err, errlen, "invalid JSON at byte %zu: lone UTF-16 surrogate escape: %s "
                     "(near '%s'); it encodes no character", at_s, sw, near);
        }
        return PL_EINVAL;
    }
    if (!err || !errlen)
        return PL_EINVAL;
    if (eof) {
        size_t from = off + n > 16 ? off + n - 16 : off;
        excerpt(p + from, off + n - from, near);
        snprintf(err, errlen, "invalid JSON at byte %zu: the text ends inside a value "
                              "(it ends with '%s')", at, near);
    } else {
        excerpt(p + at, len - at, near);
        snprintf(err, errlen, "invalid JSON at byte %zu: %s (near '%s')", at, msg, near);
    }
    return PL_EINVAL;
}

/* --------------------------------------------------------------- writers */

void sb_add_json_string(Strbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;

    sb_grow(b, n + 2);
    b->buf[b->len++] = '"';
    while (i < n) {
        unsigned char c = p[i];
        const char *esc = NULL;
        char u[7];
        size_t k = 1;

        if (c >= 0x80) {
            k = json_utf8_len(p + i, n - i);
            if (!k) {
                esc = "\\ufffd";
                k = 1;
            }
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c < 0x20 || c == 0x7F) {
            switch (c) {
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            default:
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            sb_add(b, p + i - run, run);
            run = 0;
            sb_adds(b, esc);
        } else {
            run += k;
        }
        i += k;
    }
    sb_add(b, p + i - run, run);
    sb_add(b, "\"", 1);
}

void json_put_string(FILE *f, const char *s, size_t n)
{
    Strbuf b = SB_INIT;

    sb_add_json_string(&b, s, n);
    fwrite(b.buf, 1, b.len, f);
    sb_free(&b);
}

void json_put_text(FILE *f, const void *buf, size_t len)
{
    const char *p = buf;
    size_t a = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n' || p[i] == '\r') {
            fwrite(p + a, 1, i - a, f);
            putc(' ', f);
            a = i + 1;
        }
    }
    fwrite(p + a, 1, len - a, f);
}

/* ---------------------------------------------------------------- reader */

/* These walk a text json_validate accepted: they need not check grammar. */

static size_t skip_ws(const char *b, size_t len, size_t i)
{
    while (i < len && is_ws((unsigned char)b[i]))
        i++;
    return i;
}

/* string_end returns the index after the literal that starts at b[i]. */
static size_t string_end(const char *b, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (b[i] == '\\')
            i++;
        else if (b[i] == '"')
            return i + 1;
    }
    return len;
}

static size_t value_end(const char *b, size_t len, size_t i)
{
    if (i >= len)
        return len;
    if (b[i] == '"')
        return string_end(b, len, i);
    if (b[i] == '{' || b[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = b[i];
            if (c == '"') {
                i = string_end(b, len, i);
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return len;
    }
    while (i < len && !is_ws((unsigned char)b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']')
        i++;
    return i;
}

int json_object_next(const char *b, size_t len, size_t *pos, JsonSpan *key, JsonSpan *val)
{
    size_t i = *pos, e;

    if (i == 0) {
        i = skip_ws(b, len, 0);
        if (i >= len || b[i] != '{')
            return -1;
        i++;
    }
    i = skip_ws(b, len, i);
    if (i < len && b[i] == ',')
        i = skip_ws(b, len, i + 1);
    if (i >= len || b[i] != '"') {
        *pos = len;
        return 0;
    }
    e = string_end(b, len, i);
    key->p = b + i;
    key->n = e - i;
    i = skip_ws(b, len, e);
    i = skip_ws(b, len, i + 1); /* past ':' */
    e = value_end(b, len, i);
    val->p = b + i;
    val->n = e - i;
    *pos = e;
    return 1;
}

int json_span_is(JsonSpan s, const char *word)
{
    size_t n = strlen(word);
    return s.n == n + 2 && s.p[0] == '"' && memcmp(s.p + 1, word, n) == 0;
}

/* span_u32 reads the number span v into *out: 0, or -1 when it is not a
 * whole number 0..UINT32_MAX (digits only: a JSON number with a sign, a
 * fraction or an exponent is not one). */
static int span_u32(JsonSpan v, uint32_t *out)
{
    char num[24];
    if (v.n == 0 || v.n >= sizeof num)
        return -1;
    for (size_t i = 0; i < v.n; i++)
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
    memcpy(num, v.p, v.n);
    num[v.n] = '\0';
    errno = 0;
    unsigned long long p = strtoull(num, NULL, 10);
    if (errno || p > UINT32_MAX)
        return -1;
    *out = (uint32_t)p;
    return 0;
}

int json_job_read(const char *buf, size_t len, JsonJob *j, char *why, size_t whyn)
{
    JsonSpan k, v;
    size_t pos = 0;
    int got = 0, rc = 0;
    memset(j, 0, sizeof *j);
    while (rc == 0 && (got = json_object_next(buf, len, &pos, &k, &v)) == 1) {
        if (json_span_is(k, "body")) {
            j->body = v;
        } else if (json_span_is(k, "priority")) {
            if (span_u32(v, &j->pri) != 0) {
                snprintf(why, whyn, "\"priority\" must be a whole number from 0 to %u",
                         UINT32_MAX);
                rc = JSON_JOB_PRIORITY;
            } else {
                j->has_pri = 1;
            }
        } else if (json_span_is(k, "key")) {
            free(j->key);
            j->key = NULL;
            j->keylen = 0;
            if (v.p[0] == '"') {
                j->key = json_string_decode(v.p, v.n, &j->keylen);
                if (j->keylen == 0 || j->keylen > QUEUE_KEY_MAX) {
                    snprintf(why, whyn, "\"key\" is %zu bytes; use 1 to %d, or null", j->keylen,
                             QUEUE_KEY_MAX);
                    rc = JSON_JOB_KEY;
                }
            } else if (!(v.n == 4 && !memcmp(v.p, "null", 4))) {
                snprintf(why, whyn, "\"key\" must be a string or null");
                rc = JSON_JOB_KEY;
            }
        }
    }
    if (rc == 0 && got < 0) {
        snprintf(why, whyn, "not a JSON object");
        rc = JSON_JOB_NOT_OBJECT;
    } else if (rc == 0 && !j->body.p) {
        snprintf(why, whyn, "no \"body\"");
        rc = JSON_JOB_NO_BODY;
    }
    if (rc) {
        free(j->key);
        j->key = NULL;
    }
    return rc;
}

unsigned json_hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = (unsigned char)p[i];
        v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

size_t json_utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *json_string_decode(const char *lit, size_t n, size_t *outlen)
{
    /* Every escape is at least as long as what it decodes to. */
    char *out = xmalloc(n + 1);
    size_t o = 0, end = n > 0 ? n - 1 : 0; /* the closing quote */

    for (size_t i = 1; i < end; i++) {
        if (lit[i] != '\\') {
            out[o++] = lit[i];
            continue;
        }
        char c = lit[++i];
        switch (c) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t cp = json_hex4(lit + i + 1);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < end && lit[i + 1] == '\\' &&
                lit[i + 2] == 'u') {
                uint32_t lo = json_hex4(lit + i + 3);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD;
            o += json_utf8_put(out + o, cp);
            break;
        }
        default: /* '"', '\\', '/' */
            out[o++] = c;
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}
