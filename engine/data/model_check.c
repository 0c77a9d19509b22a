/* model_check.c: validating rows against a model (model_validate,
 * model_check_field) and the text of a row's key (model_row_key).
 *
 * Validation never coerces: a value has the type the property declares or
 * the row is rejected with the reason. The normalised row it writes differs
 * from the input only where the representation is fixed, never the value:
 * a decimal given as a string becomes a ROW_EXT_NUMBER, an integer given as
 * a number ext ("-0") becomes an int, and a datetime without a zone gets
 * the "Z" it means (a warehouse session in another TimeZone would read a
 * bare time in its own zone otherwise).
 *
 * The unique rule cannot be checked one row at a time; it reaches the
 * warehouse as a UNIQUE constraint, and messages: {unique: ...} is kept for
 * the loader's reports. */
#include "model.h"
#include "model_int.h"

#include "json.h"
#include "pl.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define NUMERIC_INT_MAX 131072   /* digits before the point numeric can hold */
#define NUMERIC_FRAC_MAX 16383   /* digits after the point numeric can hold */
#define STACK_FIELDS 64          /* validate: fields looked up without malloc */
#define GOT_MAX 40               /* bytes of a bad value quoted in a message */

/* ============================================================ failures */

/* Failures collects validation errors: as JSON members into errors, or (errors
 * NULL, for checking a default while parsing) the first message into text. */
typedef struct Failures {
    Strbuf *errors;
    size_t n;
    char *text;
    size_t textlen;
} Failures;

static void vfail(Failures *c, const Field *f, const char *fname, size_t fnlen, Rule r,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* vfail records that rule r failed for field fname[0..fnlen); f (may be
 * NULL) supplies an override of the built-in message fmt. */
static void vfail(Failures *c, const Field *f, const char *fname, size_t fnlen, Rule r,
                  const char *fmt, ...)
{
    char msg[512];
    const char *m = f ? f->messages[r] : NULL;

    if (!m) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        m = msg;
    }
    if (c->errors) {
        Strbuf *e = c->errors;
        if (e->len && e->buf[e->len - 1] != '[' && e->buf[e->len - 1] != ',')
            sb_add(e, ",", 1);
        sb_adds(e, "{\"field\":");
        sb_add_json_string(e, fname, fnlen);
        sb_adds(e, ",\"rule\":\"");
        sb_adds(e, model_rule_name(r));
        sb_adds(e, "\",\"message\":");
        sb_add_json_string(e, m, strlen(m));
        sb_add(e, "}", 1);
    } else if (c->n == 0 && c->text && c->textlen) {
        snprintf(c->text, c->textlen, "%s", m);
    }
    c->n++;
}

/* utf8_cut returns how many bytes of s[0..n), at most max, end on a
 * character boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    size_t i = 0;
    while (i < n) {
        size_t k = (unsigned char)s[i] < 0x80 ? 1 : json_utf8_len(s + i, n - i);
        if (!k)
            k = 1;
        if (i + k > max)
            break;
        i += k;
    }
    return i;
}

/* got describes value v for a message: the string "12abc", 1.5, true, a map. */
static const char *got(const msgpack_object *v, char *buf, size_t size)
{
    switch (v->type) {
    case MSGPACK_OBJECT_NIL:
        return "null";
    case MSGPACK_OBJECT_BOOLEAN:
        return v->via.boolean ? "true" : "false";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(buf, size, "%" PRIu64, v->via.u64);
        return buf;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(buf, size, "%" PRId64, v->via.i64);
        return buf;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        model_fmt_double(buf, size, v->via.f64);
        return buf;
    case MSGPACK_OBJECT_STR: {
        size_t k = utf8_cut(v->via.str.ptr, v->via.str.size, GOT_MAX);
        snprintf(buf, size, "the string \"%.*s%s\"", (int)k, v->via.str.ptr,
                 k < v->via.str.size ? "..." : "");
        return buf;
    }
    case MSGPACK_OBJECT_EXT:
        if (v->via.ext.type == ROW_EXT_NUMBER) {
            size_t k = v->via.ext.size < GOT_MAX ? v->via.ext.size : GOT_MAX;
            snprintf(buf, size, "%.*s%s", (int)k, v->via.ext.ptr,
                     k < v->via.ext.size ? "..." : "");
            return buf;
        }
        return "a binary value";
    case MSGPACK_OBJECT_BIN:
        return "a binary value";
    case MSGPACK_OBJECT_ARRAY:
        return "a list";
    case MSGPACK_OBJECT_MAP:
        return "an object";
    default:
        return "an unknown value";
    }
}

/* ============================================================== values */

/* int_of reads an integer value: 0 and *x, 1 not an integer, 2 an integer
 * outside int64. */
static int int_of(const msgpack_object *v, int64_t *x)
{
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (v->via.u64 > INT64_MAX)
            return 2;
        *x = (int64_t)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *x = v->via.i64;
        return 0;
    case MSGPACK_OBJECT_EXT: {
        const char *s = v->via.ext.ptr;
        size_t n = v->via.ext.size, i = 0;
        uint64_t mag = 0;
        int neg = 0, big = 0;
        if (v->via.ext.type != ROW_EXT_NUMBER || !row_is_json_number(s, n))
            return 1;
        if (s[0] == '-') {
            neg = 1;
            i = 1;
        }
        for (; i < n; i++) {
            if (!model_is_digit(s[i]))
                return 1; /* a fraction or an exponent */
            if (mag > (UINT64_MAX - 9) / 10)
                big = 1;
            else
                mag = mag * 10 + (uint64_t)(s[i] - '0');
        }
        if (big || mag > (uint64_t)INT64_MAX + neg)
            return 2;
        *x = neg ? (int64_t)(0 - mag) : (int64_t)mag;
        return 0;
    }
    default:
        return 1;
    }
}

/* num_digits counts the digits of the JSON number s[0..n) before and after
 * the point, without leading or trailing zeros (1.500 has one after). */
static void num_digits(const char *s, size_t n, long long *intd, long long *fracd)
{
    size_t i = 0;
    long long nd = 0, point = -1, lead = 0, trail = 0, e = 0;
    int esign = 1, seen = 0;

    if (i < n && s[i] == '-')
        i++;
    for (; i < n && (model_is_digit(s[i]) || s[i] == '.'); i++) {
        if (s[i] == '.') {
            point = nd;
            continue;
        }
        if (s[i] == '0') {
            if (!seen)
                lead++;
            trail++;
        } else {
            seen = 1;
            trail = 0;
        }
        nd++;
    }
    if (point < 0)
        point = nd;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            esign = s[i++] == '-' ? -1 : 1;
        for (; i < n; i++)
            if (e < 1000000000)
                e = e * 10 + (s[i] - '0');
    }
    if (!seen) {
        *intd = *fracd = 0;
        return;
    }
    long long pp = point + esign * e;
    *intd = pp - lead > 0 ? pp - lead : 0;
    *fracd = (nd - trail) - pp > 0 ? (nd - trail) - pp : 0;
}

static int days_in(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

static int take_digits(const char *s, size_t n, size_t *i, int k, int *out)
{
    int v = 0;
    if (*i + (size_t)k > n)
        return 0;
    for (int j = 0; j < k; j++) {
        if (!model_is_digit(s[*i + (size_t)j]))
            return 0;
        v = v * 10 + (s[*i + (size_t)j] - '0');
    }
    *i += (size_t)k;
    *out = v;
    return 1;
}

static int take(const char *s, size_t n, size_t *i, char c)
{
    if (*i < n && s[*i] == c) {
        (*i)++;
        return 1;
    }
    return 0;
}

/* days_from_civil: days from 0000-03-01 of the proleptic Gregorian date
 * y-m-d (Howard Hinnant's algorithm), for comparing instants. */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe;
}

/* The fractional digits a warehouse timestamp keeps (PostgreSQL:
 * microseconds); more are refused unless they are zeros (PostgreSQL would
 * round them, and ...59.9999999Z would land on the next day). */
#define DT_FRAC_KEPT 6

enum { DT_OK, DT_FORM, DT_CALENDAR, DT_PRECISION, DT_RANGE };

/* dt_parse checks an ISO 8601 date (with_time 0) or date-time: returns
 * DT_OK (*zone: a zone was written), DT_FORM when the form is wrong,
 * DT_CALENDAR when the form is right but the calendar or the clock has no
 * such moment, DT_PRECISION when it has more than DT_FRAC_KEPT fractional
 * digits that are not all zeros, DT_RANGE when its instant (UTC, after its
 * zone) falls outside the years 1 to 9999, which a warehouse timestamp holds
 * (0001-01-01T00:00:00+05:00 is in year 0, 1 BC). */
static int dt_parse(const char *s, size_t n, int with_time, int *zone)
{
    size_t i = 0;
    int y, mo, d, hh = 0, mi = 0, ss = 0, zh = 0, zm = 0, zsign = 1, lost = 0;

    *zone = 0;
    if (!take_digits(s, n, &i, 4, &y) || !take(s, n, &i, '-') ||
        !take_digits(s, n, &i, 2, &mo) || !take(s, n, &i, '-') || !take_digits(s, n, &i, 2, &d))
        return 1;
    if (with_time) {
        if (i >= n || (s[i] != 'T' && s[i] != 't' && s[i] != ' '))
            return 1;
        i++;
        if (!take_digits(s, n, &i, 2, &hh) || !take(s, n, &i, ':') ||
            !take_digits(s, n, &i, 2, &mi))
            return 1;
        if (take(s, n, &i, ':')) {
            if (!take_digits(s, n, &i, 2, &ss))
                return 1;
            if (take(s, n, &i, '.')) {
                size_t f = i;
                while (i < n && model_is_digit(s[i])) {
                    if (i - f >= DT_FRAC_KEPT && s[i] != '0')
                        lost = 1;
                    i++;
                }
                if (i == f || i - f > 32)
                    return DT_FORM;
            }
        }
        if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
            *zone = 1;
        } else if (i < n && (s[i] == '+' || s[i] == '-')) {
            zsign = s[i] == '-' ? -1 : 1;
            i++;
            if (!take_digits(s, n, &i, 2, &zh))
                return 1;
            if (take(s, n, &i, ':')) {
                if (!take_digits(s, n, &i, 2, &zm))
                    return 1;
            } else if (i < n && !take_digits(s, n, &i, 2, &zm)) {
                return 1;
            }
            *zone = 1;
        }
    }
    if (i != n)
        return 1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo))
        return 2;
    if (hh > 23 || mi > 59 || ss > 59 || zh > 15 || zm > 59)
        return 2;
    if (lost)
        return DT_PRECISION;
    if (with_time) {
        /* The instant in minutes (a zone is whole minutes): local time
         * minus the zone's offset. */
        long long at = days_from_civil(y, mo, d) * 1440 + hh * 60 + mi - zsign * (zh * 60 + zm);
        if (at < days_from_civil(1, 1, 1) * 1440 || at >= days_from_civil(10000, 1, 1) * 1440)
            return DT_RANGE;
    }
    return DT_OK;
}

/* email_ok: a practical check: one @, a local part, a dotted domain of
 * non-empty labels, no spaces or control characters. */
static int email_ok(const char *s, size_t n)
{
    const char *at = memchr(s, '@', n);
    size_t a, labels = 0, len = 0;

    if (!at)
        return 0;
    a = (size_t)(at - s);
    if (a == 0 || a + 1 >= n || memchr(at + 1, '@', n - a - 1))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
            return 0;
    for (size_t i = a + 1; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (len == 0)
                return 0; /* leading, trailing or doubled dot */
            labels++;
            len = 0;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '-' || c >= 0x80))
            return 0;
        len++;
    }
    return labels >= 2;
}

/* url_ok: http:// or https://, a host, an optional port, then anything
 * without spaces or control characters. */
static int url_ok(const char *s, size_t n)
{
    size_t i, h, end;

    if (n > 7 && strncasecmp(s, "http://", 7) == 0)
        i = 7;
    else if (n > 8 && strncasecmp(s, "https://", 8) == 0)
        i = 8;
    else
        return 0;
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)s[k] <= 0x20 || s[k] == 0x7f)
            return 0;
    for (end = i; end < n && s[end] != '/' && s[end] != '?' && s[end] != '#'; end++)
        ;
    for (h = end; h > i && s[h - 1] != '@'; h--)
        ;
    /* host[:port] is s[h..end) */
    if (h < end && s[h] == '[') { /* an IPv6 literal */
        const char *c = memchr(s + h, ']', end - h);
        if (!c || c == s + h + 1)
            return 0;
        h = (size_t)(c - s) + 1;
        if (h < end && s[h] != ':')
            return 0;
    } else {
        size_t k = h;
        while (k < end && s[k] != ':')
            k++;
        if (k == h)
            return 0;
        h = k;
    }
    if (h < end) { /* :port */
        if (h + 1 == end || end - h - 1 > 5)
            return 0;
        for (size_t k = h + 1; k < end; k++)
            if (!model_is_digit(s[k]))
                return 0;
    }
    return 1;
}

/* regex_ok matches s[0..n) (no NULs) against f's regex. */
static int regex_ok(const Field *f, const char *s, size_t n)
{
    char stack[512], *buf = n < sizeof stack ? stack : xmalloc(n + 1);
    memcpy(buf, s, n);
    buf[n] = '\0';
    int ok = regexec(&f->regex, buf, 0, NULL, 0) == 0;
    if (buf != stack)
        free(buf);
    return ok;
}

/* key_cmp orders map keys (strings) by their bytes, for json_ok. */
static int key_cmp(const void *a, const void *b)
{
    const msgpack_object_str *x = *(const msgpack_object_str *const *)a,
                             *y = *(const msgpack_object_str *const *)b;
    size_t n = x->size < y->size ? x->size : y->size;
    int c = n ? memcmp(x->ptr, y->ptr, n) : 0;
    return c ? c : (x->size > y->size) - (x->size < y->size);
}

/* dup_key returns a key that map m (string keys) holds twice, or NULL. */
static const msgpack_object_str *dup_key(const msgpack_object *m)
{
    uint32_t n = m->via.map.size;
    const msgpack_object_kv *kv = m->via.map.ptr;
    if (n < 2)
        return NULL;
    if (n <= 16) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = 0; j < i; j++)
                if (kv[i].key.via.str.size == kv[j].key.via.str.size &&
                    (kv[i].key.via.str.size == 0 || memcmp(kv[i].key.via.str.ptr, kv[j].key.via.str.ptr,
                           kv[i].key.via.str.size) == 0))
                    return &kv[i].key.via.str;
        return NULL;
    }
    const msgpack_object_str **k = xmalloc(n * sizeof *k), *d = NULL;
    for (uint32_t i = 0; i < n; i++)
        k[i] = &kv[i].key.via.str;
    qsort(k, n, sizeof *k, key_cmp);
    for (uint32_t i = 1; i < n && !d; i++)
        if (key_cmp(&k[i - 1], &k[i]) == 0)
            d = k[i];
    free(k);
    return d;
}

/* json_ok checks that every string in v (keys too) is UTF-8 without NULs,
 * and that there are no binary or foreign ext values: what jsonb can hold;
 * and that no object holds a key twice (jsonb would keep the last one
 * alone: a value lost without a word), setting *dup to it (0 then). */
static int json_ok(const msgpack_object *v, const msgpack_object_str **dup)
{
    switch (v->type) {
    case MSGPACK_OBJECT_STR:
        return json_utf8_bad(v->via.str.ptr, v->via.str.size) == v->via.str.size &&
               !memchr(v->via.str.ptr, 0, v->via.str.size);
    case MSGPACK_OBJECT_EXT:
        return v->via.ext.type == ROW_EXT_NUMBER && row_is_json_number(v->via.ext.ptr, v->via.ext.size);
    case MSGPACK_OBJECT_BIN:
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(v->via.f64);
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < v->via.array.size; i++)
            if (!json_ok(&v->via.array.ptr[i], dup))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < v->via.map.size; i++)
            if (v->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR ||
                !json_ok(&v->via.map.ptr[i].key, dup) || !json_ok(&v->via.map.ptr[i].val, dup))
                return 0;
        if ((*dup = dup_key(v)) != NULL)
            return 0;
        return 1;
    default:
        return 1;
    }
}

/* check_minmax checks a number against f's min and max. */
static int check_minmax(const Field *f, double d, Failures *c)
{
    char b[40];
    if (f->has_min && d < f->min) {
        model_fmt_double(b, sizeof b, f->min);
        vfail(c, f, f->name, strlen(f->name), RULE_MIN, "%s must be at least %s", f->name, b);
        return 1;
    }
    if (f->has_max && d > f->max) {
        model_fmt_double(b, sizeof b, f->max);
        vfail(c, f, f->name, strlen(f->name), RULE_MAX, "%s must be at most %s", f->name, b);
        return 1;
    }
    return 0;
}

/* check_decimal checks a decimal value; the number's text is s[0..n). */
static int check_decimal(const Field *f, const msgpack_object *v, const char *s, size_t n, Failures *c)
{
    const char *name = f->name;
    size_t nl = strlen(name);
    long long intd, fracd;
    char g[GOT_MAX + 40], stack[64], *t;
    double d;

    num_digits(s, n, &intd, &fracd);
    if (f->precision && (fracd > f->scale || intd > (long long)(f->precision - f->scale))) {
        vfail(c, f, name, nl, RULE_TYPE, "%s must be a number with at most %u digits before "
              "the point and %u after (got %s)", name, f->precision - f->scale, f->scale,
              got(v, g, sizeof g));
        return 1;
    }
    if (intd > NUMERIC_INT_MAX || fracd > NUMERIC_FRAC_MAX) {
        vfail(c, f, name, nl, RULE_TYPE, "%s is too large or too precise for a numeric column "
              "(got %s)", name, got(v, g, sizeof g));
        return 1;
    }
    if (!f->has_min && !f->has_max)
        return 0;
    t = n < sizeof stack ? stack : xmalloc(n + 1);
    memcpy(t, s, n);
    t[n] = '\0';
    d = strtod(t, NULL);
    if (t != stack)
        free(t);
    return check_minmax(f, d, c);
}

/* check_value checks v (not nil) against f's type and rules and packs its
 * normalised form into pk. Returns 0, or 1 after recording the failure. */
static int check_value(const Field *f, const msgpack_object *v, msgpack_packer *pk, Failures *c)
{
    const char *name = f->name;
    size_t nl = strlen(name);
    char g[GOT_MAX + 40];

    switch (f->type) {
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT: {
        int64_t x = 0, lo = f->type == FT_INTEGER ? INT32_MIN : INT64_MIN,
                hi = f->type == FT_INTEGER ? INT32_MAX : INT64_MAX;
        int r = int_of(v, &x);
        if (r == 1) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be an integer (got %s)", name,
                  got(v, g, sizeof g));
            return 1;
        }
        if (r == 2 || x < lo || x > hi) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be an integer from %" PRId64 " to %" PRId64
                  " (got %s)", name, lo, hi, got(v, g, sizeof g));
            return 1;
        }
        if ((f->has_min || f->has_max) && check_minmax(f, (double)x, c))
            return 1;
        msgpack_pack_int64(pk, x);
        return 0;
    }
    case FT_DECIMAL: {
        char t[40];
        switch (v->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            snprintf(t, sizeof t, "%s", got(v, g, sizeof g));
            if (check_decimal(f, v, t, strlen(t), c))
                return 1;
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            if (!isfinite(v->via.f64)) {
                vfail(c, f, name, nl, RULE_TYPE, "%s must be a finite number (got %s)", name,
                      got(v, g, sizeof g));
                return 1;
            }
            model_fmt_double(t, sizeof t, v->via.f64);
            if (check_decimal(f, v, t, strlen(t), c))
                return 1;
            break;
        case MSGPACK_OBJECT_EXT:
            if (v->via.ext.type != ROW_EXT_NUMBER || !row_is_json_number(v->via.ext.ptr, v->via.ext.size))
                goto notnum;
            if (check_decimal(f, v, v->via.ext.ptr, v->via.ext.size, c))
                return 1;
            break;
        case MSGPACK_OBJECT_STR:
            if (!row_is_json_number(v->via.str.ptr, v->via.str.size))
                goto notnum;
            if (check_decimal(f, v, v->via.str.ptr, v->via.str.size, c))
                return 1;
            model_pack_number(pk, v->via.str.ptr, v->via.str.size);
            return 0;
        default:
            goto notnum;
        }
        msgpack_pack_object(pk, *v);
        return 0;
    notnum:
        vfail(c, f, name, nl, RULE_TYPE, "%s must be a number (got %s)", name, got(v, g, sizeof g));
        return 1;
    }
    case FT_BOOLEAN:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be true or false (got %s)", name,
                  got(v, g, sizeof g));
            return 1;
        }
        msgpack_pack_object(pk, *v);
        return 0;
    case FT_STRING:
    case FT_TEXT: {
        const char *s = v->via.str.ptr;
        size_t n = v->via.str.size, i = 0;
        uint64_t cp = 0;
        if (v->type != MSGPACK_OBJECT_STR) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be a string (got %s)", name,
                  got(v, g, sizeof g));
            return 1;
        }
        while (i < n) {
            unsigned char b = (unsigned char)s[i];
            size_t k = 1;
            if (b >= 0x80 && !(k = json_utf8_len(s + i, n - i))) {
                vfail(c, f, name, nl, RULE_TYPE, "%s is not valid UTF-8 (byte %zu); send text "
                      "as UTF-8", name, i);
                return 1;
            }
            if (b == 0) {
                vfail(c, f, name, nl, RULE_TYPE, "%s contains a NUL character (\\u0000), which "
                      "PostgreSQL text cannot hold; remove it", name);
                return 1;
            }
            i += k;
            cp++;
        }
        if (f->has_length && cp < f->len_min) {
            vfail(c, f, name, nl, RULE_LENGTH, "%s must be at least %" PRIu64 " characters",
                  name, f->len_min);
            return 1;
        }
        if (f->has_length && cp > f->len_max) {
            vfail(c, f, name, nl, RULE_LENGTH, "%s must be at most %" PRIu64 " characters",
                  name, f->len_max);
            return 1;
        }
        if (f->format == FF_EMAIL && !email_ok(s, n)) {
            vfail(c, f, name, nl, RULE_FORMAT, "%s must be an email address like "
                  "name@example.com (got %s)", name, got(v, g, sizeof g));
            return 1;
        }
        if (f->format == FF_URL && !url_ok(s, n)) {
            vfail(c, f, name, nl, RULE_FORMAT, "%s must be an http:// or https:// URL (got %s)",
                  name, got(v, g, sizeof g));
            return 1;
        }
        if (f->format == FF_REGEX && !regex_ok(f, s, n)) {
            vfail(c, f, name, nl, RULE_FORMAT, "%s must match %.200s (got %s)", name,
                  f->regex_src, got(v, g, sizeof g));
            return 1;
        }
        msgpack_pack_object(pk, *v);
        return 0;
    }
    case FT_DATETIME:
    case FT_DATE: {
        int dt = f->type == FT_DATETIME, zone = 0, r = 1;
        if (v->type == MSGPACK_OBJECT_STR)
            r = dt_parse(v->via.str.ptr, v->via.str.size, dt, &zone);
        if (r == 1) {
            vfail(c, f, name, nl, RULE_TYPE, dt ? "%s must be a date and time like "
                  "2026-01-31T12:00:00Z (got %s)" : "%s must be a date like 2026-01-31 (got %s)",
                  name, got(v, g, sizeof g));
            return 1;
        }
        if (r == DT_CALENDAR) {
            vfail(c, f, name, nl, RULE_TYPE, dt ? "%s must be a real calendar date and time "
                  "(got %s)" : "%s must be a real calendar date (got %s)", name,
                  got(v, g, sizeof g));
            return 1;
        }
        if (r == DT_PRECISION) {
            vfail(c, f, name, nl, RULE_TYPE, "%s has more than %d fractional digits of a "
                  "second that are not zeros (got %s); the warehouse keeps microseconds and "
                  "would round it: send at most %d digits", name, DT_FRAC_KEPT,
                  got(v, g, sizeof g), DT_FRAC_KEPT);
            return 1;
        }
        if (r == DT_RANGE) {
            vfail(c, f, name, nl, RULE_TYPE, "%s falls outside the years 1 to 9999 in UTC "
                  "(got %s); a warehouse timestamp would hold it as a year BC or beyond "
                  "9999: send a time inside them", name, got(v, g, sizeof g));
            return 1;
        }
        if (dt && !zone) { /* no zone means UTC: say so for the warehouse */
            msgpack_pack_str(pk, v->via.str.size + 1);
            msgpack_pack_str_body(pk, v->via.str.ptr, v->via.str.size);
            msgpack_pack_str_body(pk, "Z", 1);
        } else {
            msgpack_pack_object(pk, *v);
        }
        return 0;
    }
    default: { /* FT_JSON */
        const msgpack_object_str *dup = NULL;
        int ok = json_ok(v, &dup);
        if (!ok && dup) {
            Strbuf k;
            sb_init(&k);
            sb_add_json_string(&k, dup->ptr, dup->size > 100 ? 100 : dup->size);
            vfail(c, f, name, nl, RULE_TYPE, "%s holds an object with the key %s twice; jsonb "
                  "would keep only the last value: send each key once", name, k.buf);
            sb_free(&k);
            return 1;
        }
        if (!ok) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be JSON whose strings are UTF-8 without "
                  "NUL characters (\\u0000), as jsonb requires", name);
            return 1;
        }
        msgpack_pack_object(pk, *v);
        return 0;
    }
    }
}

int model_check_default(const Field *f, const msgpack_object *v, msgpack_packer *pk, char *msg,
                        size_t msglen)
{
    Failures c = {.text = msg, .textlen = msglen};
    check_value(f, v, pk, &c);
    return c.n ? PL_EINVAL : 0;
}

/* ================================================================ rows */

/* pack_now packs the time now as an ISO 8601 UTC string. */
static void pack_now(msgpack_packer *pk)
{
    uint64_t ms = pl_now_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char buf[40];
    gmtime_r(&t, &tm);
    int k = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (unsigned)(ms % 1000));
    msgpack_pack_str(pk, (size_t)k);
    msgpack_pack_str_body(pk, buf, (size_t)k);
}

static void pack_name(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* ---------------------------------------------------------------- sources */

/* source_is says whether a row's top-level field k is a source of m (a
 * property's from:, or the first step of a dotted one). */
static int source_is(const Model *m, const msgpack_object *k)
{
    for (size_t j = 0; m->nfrom && j < m->nfields; j++) {
        const Field *f = &m->fields[j];
        if (f->from && (model_key_is(k, f->from) || model_key_is(k, f->path[0])))
            return 1;
    }
    return 0;
}

/* source_value returns f's value in row from its source: the top-level
 * field named the whole from:, else its path through nested objects;
 * NULL when the row has none (or f has no from:). */
static const msgpack_object *source_value(const Field *f, const msgpack_object *row)
{
    if (!f->from)
        return NULL;
    const msgpack_object *v = model_member(row, f->from);
    if (v || f->npath < 2)
        return v;
    v = row;
    for (size_t i = 0; v && i < f->npath; i++)
        v = v->type == MSGPACK_OBJECT_MAP ? model_member(v, f->path[i]) : NULL;
    return v;
}

/* is_drift says whether member kv of a row is undeclared (not a field, not
 * a source, not "_deleted"). */
static int is_drift(const Model *m, size_t i, const msgpack_object_kv *kv)
{
    if (kv->key.type != MSGPACK_OBJECT_STR)
        return 1;
    return model_field_index(m, i, kv->key.via.str.ptr, kv->key.via.str.size) < 0 &&
           !model_key_is(&kv->key, "_deleted") && !source_is(m, &kv->key);
}

int model_validate(const Model *m, const msgpack_object *row, msgpack_sbuffer *out,
                   Strbuf *errors, size_t *nerrors)
{
    const msgpack_object *stack[STACK_FIELDS], **val = stack, *del = NULL, *driftmap = NULL;
    const msgpack_object_kv *kv;
    msgpack_packer pk;
    Failures c = {.errors = errors};
    size_t size0 = out->size, ndrift = 0, nundeclared = 0;
    char g[GOT_MAX + 40];
    int deleted = 0;

    if (nerrors)
        *nerrors = 0;
    if (!row || row->type != MSGPACK_OBJECT_MAP)
        return PL_EFORMAT;
    if (m->nfields > STACK_FIELDS)
        val = xmalloc(m->nfields * sizeof *val);
    memset(val, 0, m->nfields * sizeof *val);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);

    /* Find each field's value: by position first (normalised rows and
     * sources that keep the declared order), else by name. */
    kv = row->via.map.ptr;
    for (uint32_t i = 0; i < row->via.map.size; i++) {
        const msgpack_object *k = &kv[i].key;
        int idx = -1;
        if (k->type != MSGPACK_OBJECT_STR) {
            vfail(&c, NULL, "", 0, RULE_TYPE, "a field name must be a string (got %s)",
                  got(k, g, sizeof g));
            continue;
        }
        idx = model_field_index(m, i, k->via.str.ptr, k->via.str.size);
        if (idx >= 0) {
            if (val[idx])
                vfail(&c, NULL, k->via.str.ptr, k->via.str.size, RULE_TYPE, "%s appears twice "
                      "in the row; send each field once", m->fields[idx].name);
            else
                val[idx] = &kv[i].val;
        } else if (m->nfrom && source_is(m, k)) {
            /* a source: found through source_value below */
            for (size_t j = 0; j < m->nfields; j++)
                if (m->fields[j].from && model_key_is(k, m->fields[j].from) &&
                    source_value(&m->fields[j], row) != &kv[i].val)
                    vfail(&c, NULL, k->via.str.ptr, k->via.str.size, RULE_TYPE, "%.*s appears "
                          "twice in the row; send each field once", (int)utf8_cut(k->via.str.ptr,
                          k->via.str.size, 64), k->via.str.ptr);
        } else if (model_key_is(k, "_deleted")) {
            if (del)
                vfail(&c, NULL, "_deleted", 8, RULE_TYPE, "_deleted appears twice in the row; "
                      "send it once");
            del = &kv[i].val;
        } else {
            nundeclared++;
            if (m->drift == DRIFT_KEEP) {
                if (model_name_is(m->drift_column, k->via.str.ptr, k->via.str.size) &&
                    kv[i].val.type == MSGPACK_OBJECT_MAP && !driftmap) {
                    driftmap = &kv[i].val; /* a normalised row's drift, again */
                    ndrift += kv[i].val.via.map.size;
                } else {
                    ndrift++;
                }
            }
        }
    }
    /* A property with from: takes its source's value when the row has it
     * (a raw row), else its own name's (a normalised row). */
    for (size_t j = 0; m->nfrom && j < m->nfields; j++) {
        const msgpack_object *sv = source_value(&m->fields[j], row);
        if (sv)
            val[j] = sv;
    }
    if (del && del->type == MSGPACK_OBJECT_BOOLEAN)
        deleted = del->via.boolean;
    else if (del && del->type != MSGPACK_OBJECT_NIL)
        vfail(&c, NULL, "_deleted", 8, RULE_TYPE, "_deleted must be true or false (got %s)",
              got(del, g, sizeof g));

    if (deleted) {
        /* A soft delete: the key identifies the row; nothing else counts. */
        const Field *pf = m->paranoid >= 0 ? &m->fields[m->paranoid] : NULL;
        if (m->nkey == 0) {
            vfail(&c, NULL, "_deleted", 8, RULE_TYPE, "model '%s' has no key, so a row cannot "
                  "be deleted; mark the fields that identify a row with key: true", m->name);
            goto done;
        }
        msgpack_pack_map(&pk, (uint32_t)(m->nkey + (pf && !pf->key) + 1));
        for (size_t i = 0; i < m->nfields; i++) {
            const Field *f = &m->fields[i];
            if (!f->key && f != pf)
                continue;
            pack_name(&pk, f->name);
            if (val[i] && val[i]->type != MSGPACK_OBJECT_NIL)
                check_value(f, val[i], &pk, &c);
            else if (f->key)
                vfail(&c, f, f->name, strlen(f->name), RULE_REQUIRED, "%s is required (it is "
                      "part of the key)", f->name);
            else
                pack_now(&pk);
        }
        pack_name(&pk, "_deleted");
        msgpack_pack_true(&pk);
        goto done;
    }

    if (nundeclared && m->drift == DRIFT_REJECT)
        for (uint32_t i = 0; i < row->via.map.size; i++)
            if (kv[i].key.type == MSGPACK_OBJECT_STR && is_drift(m, i, &kv[i]))
                vfail(&c, NULL, kv[i].key.via.str.ptr, kv[i].key.via.str.size, RULE_DRIFT,
                      "field '%.*s' is not declared in model '%s'; declare it under properties:"
                      " or set drift: ignore or keep", (int)utf8_cut(kv[i].key.via.str.ptr,
                      kv[i].key.via.str.size, 64), kv[i].key.via.str.ptr, m->name);

    msgpack_pack_map(&pk, (uint32_t)(m->nfields + (m->drift == DRIFT_KEEP)));
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        const msgpack_object *v = val[i];
        pack_name(&pk, f->name);
        if (!v && f->has_default) {
            msgpack_sbuffer_write(out, f->default_mp.data, f->default_mp.size);
            continue;
        }
        if (!v || v->type == MSGPACK_OBJECT_NIL) {
            if (f->required || f->key)
                vfail(&c, f, f->name, strlen(f->name), RULE_REQUIRED, "%s is required", f->name);
            msgpack_pack_nil(&pk);
            continue;
        }
        check_value(f, v, &pk, &c);
    }
    if (m->drift == DRIFT_KEEP) {
        pack_name(&pk, m->drift_column);
        if (!ndrift) {
            msgpack_pack_nil(&pk);
        } else {
            msgpack_pack_map(&pk, (uint32_t)ndrift);
            for (uint32_t i = 0; i < row->via.map.size; i++) {
                if (kv[i].key.type != MSGPACK_OBJECT_STR || !is_drift(m, i, &kv[i]))
                    continue;
                if (&kv[i].val == driftmap) {
                    for (uint32_t j = 0; j < driftmap->via.map.size; j++) {
                        msgpack_pack_object(&pk, driftmap->via.map.ptr[j].key);
                        msgpack_pack_object(&pk, driftmap->via.map.ptr[j].val);
                    }
                    continue;
                }
                msgpack_pack_object(&pk, kv[i].key);
                msgpack_pack_object(&pk, kv[i].val);
            }
        }
    }
done:
    if (val != stack)
        free(val);
    if (nerrors)
        *nerrors = c.n;
    if (c.n) {
        out->size = size0;
        return PL_EINVAL;
    }
    return 0;
}

int model_check_field(const Model *m, const char *name, const msgpack_object *v,
                      msgpack_packer *pk, Strbuf *errors, size_t *nerrors)
{
    Failures c = {.errors = errors};
    size_t nl = strlen(name);
    int idx = model_field_index(m, 0, name, nl);
    if (idx < 0) {
        if (m->drift == DRIFT_REJECT)
            vfail(&c, NULL, name, nl, RULE_DRIFT, "field '%.*s' is not declared in model '%s'; "
                  "declare it under properties: or set drift: ignore or keep",
                  (int)utf8_cut(name, nl, 64), name, m->name);
        else
            msgpack_pack_object(pk, *v);
    } else {
        const Field *f = &m->fields[idx];
        if (v->type == MSGPACK_OBJECT_NIL) {
            if (f->required || f->key)
                vfail(&c, f, f->name, nl, RULE_REQUIRED, "%s is required", f->name);
            else
                msgpack_pack_nil(pk);
        } else {
            check_value(f, v, pk, &c);
        }
    }
    if (nerrors)
        *nerrors = c.n;
    return c.n ? PL_EINVAL : 0;
}

/* ================================================================ keys */

/* put_key_part appends a key value as text; '/' and '%' are escaped as
 * %2F and %25 so that "a/b" in one field differs from "a" then "b". */
static int put_key_part(Strbuf *out, const msgpack_object *v)
{
    switch (v->type) {
    case MSGPACK_OBJECT_STR: {
        const char *s = v->via.str.ptr;
        size_t n = v->via.str.size, run = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] != '/' && s[i] != '%') {
                run++;
                continue;
            }
            sb_add(out, s + i - run, run);
            run = 0;
            sb_adds(out, s[i] == '/' ? "%2F" : "%25");
        }
        sb_add(out, s + n - run, run);
        return 0;
    }
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
    case MSGPACK_OBJECT_BOOLEAN:
        return row_put_object(out, v);
    case MSGPACK_OBJECT_EXT:
        if (v->via.ext.type != ROW_EXT_NUMBER)
            return PL_EINVAL;
        sb_add(out, v->via.ext.ptr, v->via.ext.size);
        return 0;
    default:
        return PL_EINVAL;
    }
}

int model_row_key(const Model *m, const msgpack_object *row, Strbuf *out)
{
    size_t len0 = out->len;
    if (!row || row->type != MSGPACK_OBJECT_MAP || m->nkey == 0)
        return PL_EINVAL;
    for (size_t k = 0; k < m->nkey; k++) {
        const Field *f = &m->fields[m->key[k]];
        const msgpack_object *v = source_value(f, row);
        if (!v)
            v = model_member(row, f->name);
        if (k)
            sb_add(out, "/", 1);
        if (!v || put_key_part(out, v)) {
            sb_setlen(out, len0);
            return PL_EINVAL;
        }
    }
    return 0;
}

