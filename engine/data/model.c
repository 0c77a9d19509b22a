/* model.c: models, the metadata layer (model.h).
 *
 * Parsing walks the `models:` ConfNode tree in three passes: each model's
 * own keys and properties (so every model name and key is known), then the
 * relations (belongs_to, has_n) which refer to other models, then the load
 * order. It stops at the first error, "FILE:LINE: what; hint", like
 * pipeline.c. Names of models and properties are SQL-friendly identifiers
 * of at most 63 bytes (PostgreSQL silently cuts longer ones, which could
 * make two columns one).
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
 * the loader's reports.
 *
 * CSV is PostgreSQL's COPY ... (FORMAT csv) with the default QUOTE and
 * ESCAPE '"': NULL is an empty unquoted field and every string is quoted,
 * so NULL and "" stay apart and CR, LF, commas and backslashes need nothing
 * more than the quotes. */
#include "model.h"

#include "json.h"
#include "pl.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define NAME_LEN_MAX 63          /* PostgreSQL's identifier limit (NAMEDATALEN - 1) */
#define STRING_LEN_DEFAULT 50    /* DataMapper's default String length */
#define VARCHAR_MAX 10485760     /* PostgreSQL's varchar(n) limit */
#define NUMERIC_PREC_MAX 1000    /* PostgreSQL's numeric(p) limit */
#define NUMERIC_INT_MAX 131072   /* digits before the point numeric can hold */
#define NUMERIC_FRAC_MAX 16383   /* digits after the point numeric can hold */
#define STACK_FIELDS 64          /* validate: fields looked up without malloc */
#define GOT_MAX 40               /* bytes of a bad value quoted in a message */

static const char *const type_names[] = {"serial", "integer", "bigint", "decimal", "boolean",
                                         "string", "text", "datetime", "date", "json", NULL};
static const char *const rule_names[] = {"required", "type", "length", "min", "max",
                                         "format", "drift", "unique", NULL};
static const char *const drift_names[] = {"reject", "ignore", "keep", NULL};
static const char *const format_names[] = {"none", "email", "url", "regex", NULL};

#define TYPE_LIST "serial, integer, bigint, decimal, boolean, string, text, datetime, date, json"

const char *model_rule_name(Rule r)
{
    return (unsigned)r < RULE_COUNT ? rule_names[r] : "unknown";
}

static int is_int_type(FieldType t)
{
    return t == FT_SERIAL || t == FT_INTEGER || t == FT_BIGINT;
}

static int is_num_type(FieldType t)
{
    return is_int_type(t) || t == FT_DECIMAL;
}

/* name_is says whether s[0..n) (not NUL-terminated) is exactly name. */
static int name_is(const char *name, const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && name[k] && name[k] == s[k])
        k++;
    return k == n && name[k] == '\0';
}

static int key_is(const msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && name_is(name, k->via.str.ptr, k->via.str.size);
}

/* member returns the value of map's first member named name, or NULL. */
static const msgpack_object *member(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, name))
            return &map->via.map.ptr[i].val;
    return NULL;
}

/* field_index finds the field named s[0..n), trying position hint first. */
static int field_index(const Model *m, size_t hint, const char *s, size_t n)
{
    if (hint < m->nfields && name_is(m->fields[hint].name, s, n))
        return (int)hint;
    for (size_t j = 0; j < m->nfields; j++)
        if (name_is(m->fields[j].name, s, n))
            return (int)j;
    return -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* fmt_double writes d in the shortest %g form that reads back as d. */
static void fmt_double(char *t, size_t size, double d)
{
    for (int prec = 15;; prec++) {
        snprintf(t, size, "%.*g", prec, d);
        if (prec == 17 || strtod(t, NULL) == d)
            break;
    }
}

static void put_double(Strbuf *b, double d)
{
    char t[40];
    fmt_double(t, sizeof t, d);
    sb_adds(b, t);
}

/* ================================================================ errors */


static int lookup(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

/* ident_ok: a letter or _, then letters, digits or _, at most 63 bytes. */
static int ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_LEN_MAX || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* v_ident reads a name that is an identifier. */
static int v_ident(const ConfErr *l, const char *key, const ConfNode *n, const char **out)
{
    int rc = conf_as_name(l, key, n, out);
    if (rc)
        return rc;
    if (!ident_ok(*out))
        return conf_errat(l, n->line, "%s: '%.64s' is not a valid name; use 1 to %d of letters, "
                     "digits and _, starting with a letter or _", key, *out, NAME_LEN_MAX);
    return 0;
}

/* ============================================================ validation */

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
        sb_adds(e, rule_names[r]);
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
        fmt_double(buf, size, v->via.f64);
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
            if (!is_digit(s[i]))
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
    for (; i < n && (is_digit(s[i]) || s[i] == '.'); i++) {
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
        if (!is_digit(s[*i + (size_t)j]))
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

/* dt_parse checks an ISO 8601 date (with_time 0) or date-time: returns 0
 * (*zone: a zone was written), 1 when the form is wrong, 2 when the form is
 * right but the calendar or the clock has no such moment. */
static int dt_parse(const char *s, size_t n, int with_time, int *zone)
{
    size_t i = 0;
    int y, mo, d, hh = 0, mi = 0, ss = 0, zh = 0, zm = 0;

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
                while (i < n && is_digit(s[i]))
                    i++;
                if (i == f || i - f > 9)
                    return 1;
            }
        }
        if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
            *zone = 1;
        } else if (i < n && (s[i] == '+' || s[i] == '-')) {
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
    return 0;
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
            if (!is_digit(s[k]))
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

/* json_ok checks that every string in v (keys too) is UTF-8 without NULs,
 * and that there are no binary or foreign ext values: what jsonb can hold. */
static int json_ok(const msgpack_object *v)
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
            if (!json_ok(&v->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < v->via.map.size; i++)
            if (v->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR ||
                !json_ok(&v->via.map.ptr[i].key) || !json_ok(&v->via.map.ptr[i].val))
                return 0;
        return 1;
    default:
        return 1;
    }
}

static void pack_ext_number(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_ext(pk, n, ROW_EXT_NUMBER);
    msgpack_pack_ext_body(pk, s, n);
}

/* check_minmax checks a number against f's min and max. */
static int check_minmax(const Field *f, double d, Failures *c)
{
    char b[40];
    if (f->has_min && d < f->min) {
        fmt_double(b, sizeof b, f->min);
        vfail(c, f, f->name, strlen(f->name), RULE_MIN, "%s must be at least %s", f->name, b);
        return 1;
    }
    if (f->has_max && d > f->max) {
        fmt_double(b, sizeof b, f->max);
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
            fmt_double(t, sizeof t, v->via.f64);
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
            pack_ext_number(pk, v->via.str.ptr, v->via.str.size);
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
        if (r == 2) {
            vfail(c, f, name, nl, RULE_TYPE, dt ? "%s must be a real calendar date and time "
                  "(got %s)" : "%s must be a real calendar date (got %s)", name,
                  got(v, g, sizeof g));
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
    default: /* FT_JSON */
        if (!json_ok(v)) {
            vfail(c, f, name, nl, RULE_TYPE, "%s must be JSON whose strings are UTF-8 without "
                  "NUL characters (\\u0000), as jsonb requires", name);
            return 1;
        }
        msgpack_pack_object(pk, *v);
        return 0;
    }
}

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

/* is_drift says whether member kv of a row is undeclared (not a field, not
 * "_deleted"). */
static int is_drift(const Model *m, size_t i, const msgpack_object_kv *kv)
{
    if (kv->key.type != MSGPACK_OBJECT_STR)
        return 1;
    return field_index(m, i, kv->key.via.str.ptr, kv->key.via.str.size) < 0 &&
           !key_is(&kv->key, "_deleted");
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
        idx = field_index(m, i, k->via.str.ptr, k->via.str.size);
        if (idx >= 0) {
            if (val[idx])
                vfail(&c, NULL, k->via.str.ptr, k->via.str.size, RULE_TYPE, "%s appears twice "
                      "in the row; send each field once", m->fields[idx].name);
            else
                val[idx] = &kv[i].val;
        } else if (key_is(k, "_deleted")) {
            if (del)
                vfail(&c, NULL, "_deleted", 8, RULE_TYPE, "_deleted appears twice in the row; "
                      "send it once");
            del = &kv[i].val;
        } else {
            nundeclared++;
            if (m->drift == DRIFT_KEEP) {
                if (name_is(m->drift_column, k->via.str.ptr, k->via.str.size) &&
                    kv[i].val.type == MSGPACK_OBJECT_MAP && !driftmap) {
                    driftmap = &kv[i].val; /* a normalised row's drift, again */
                    ndrift += kv[i].val.via.map.size;
                } else {
                    ndrift++;
                }
            }
        }
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
    int idx = field_index(m, 0, name, nl);
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
        const msgpack_object *v = member(row, m->fields[m->key[k]].name);
        if (k)
            sb_add(out, "/", 1);
        if (!v || put_key_part(out, v)) {
            sb_setlen(out, len0);
            return PL_EINVAL;
        }
    }
    return 0;
}

/* ================================================================= load */

void model_sql_ident(Strbuf *out, const char *s)
{
    size_t run = 0, n = strlen(s);
    sb_add(out, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        run++;
        if (s[i] == '"') {
            sb_add(out, s + i + 1 - run, run);
            sb_add(out, "\"", 1);
            run = 0;
        }
    }
    sb_add(out, s + n - run, run);
    sb_add(out, "\"", 1);
}

void model_columns(const Model *m, Strbuf *out)
{
    for (size_t i = 0; i < m->nfields; i++) {
        if (i)
            sb_add(out, ",", 1);
        model_sql_ident(out, m->fields[i].name);
    }
    if (m->drift == DRIFT_KEEP) {
        if (m->nfields)
            sb_add(out, ",", 1);
        model_sql_ident(out, m->drift_column);
    }
}

/* csv_quoted appends s[0..n) as a quoted CSV field, quotes doubled. */
static void csv_quoted(Strbuf *out, const char *s, size_t n)
{
    const char *q;
    sb_add(out, "\"", 1);
    while ((q = memchr(s, '"', n))) {
        size_t k = (size_t)(q - s) + 1;
        sb_add(out, s, k);
        sb_add(out, "\"", 1);
        s += k;
        n -= k;
    }
    sb_add(out, s, n);
    sb_add(out, "\"", 1);
}

/* csv_json appends the JSON text of v as a quoted CSV field: the text is
 * written in place, then its quotes are doubled from the end backwards.
 * Returns 0, or row_put_object's PL_EFORMAT (out is then undone only by
 * the caller). */
static int csv_json(Strbuf *out, const msgpack_object *v)
{
    static const char qs[] = "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";
    size_t start, end, q = 0, add;
    int rc;

    sb_add(out, "\"", 1);
    start = out->len;
    if ((rc = row_put_object(out, v)))
        return rc;
    end = out->len;
    for (size_t i = start; i < end; i++)
        q += out->buf[i] == '"';
    for (add = q; add > 0;) {
        size_t k = add < sizeof qs - 1 ? add : sizeof qs - 1;
        sb_add(out, qs, k);
        add -= k;
    }
    for (size_t src = end, dst = end + q; q > 0 && src > start;) {
        char ch = out->buf[--src];
        out->buf[--dst] = ch;
        if (ch == '"') {
            out->buf[--dst] = '"';
            q--;
        }
    }
    sb_add(out, "\"", 1);
    return 0;
}

/* put_digits writes the decimal digits of mag (and a '-' when neg) at p;
 * returns the end. */
static char *put_digits(char *p, uint64_t mag, int neg)
{
    char t[21];
    size_t i = sizeof t;
    do {
        t[--i] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (neg)
        t[--i] = '-';
    memcpy(p, t + i, sizeof t - i);
    return p + (sizeof t - i);
}

/* csv_value appends sep (when not 0) and v as one CSV field; json: the
 * column is json, so any value is written as its JSON text. Returns 0 or
 * csv_json's PL_EFORMAT. */
static int csv_value(Strbuf *out, const msgpack_object *v, int json, char sep)
{
    char t[40], *p;

    sb_grow(out, 24);
    if (sep)
        out->buf[out->len++] = sep;
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (json)
        return csv_json(out, v);
    switch (v->type) {
    case MSGPACK_OBJECT_STR: {
        size_t n = v->via.str.size;
        if (memchr(v->via.str.ptr, '"', n)) {
            csv_quoted(out, v->via.str.ptr, n);
            break;
        }
        sb_grow(out, n + 2);
        p = out->buf + out->len;
        *p++ = '"';
        memcpy(p, v->via.str.ptr, n);
        p[n] = '"';
        out->len += n + 2;
        break;
    }
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        out->len = (size_t)(put_digits(out->buf + out->len, v->via.u64, 0) - out->buf);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        out->len = (size_t)(put_digits(out->buf + out->len, v->via.i64 < 0 ? (uint64_t)0 -
                                       (uint64_t)v->via.i64 : (uint64_t)v->via.i64,
                                       v->via.i64 < 0) - out->buf);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        out->buf[out->len++] = v->via.boolean ? 't' : 'f';
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(v->via.f64)) {
            fmt_double(t, sizeof t, v->via.f64);
            sb_adds(out, t);
        } else {
            sb_adds(out, isnan(v->via.f64) ? "NaN" : v->via.f64 > 0 ? "Infinity" : "-Infinity");
        }
        break;
    case MSGPACK_OBJECT_EXT:
        if (v->via.ext.type == ROW_EXT_NUMBER && row_is_json_number(v->via.ext.ptr, v->via.ext.size))
            sb_add(out, v->via.ext.ptr, v->via.ext.size);
        else if (v->via.ext.type == ROW_EXT_NUMBER) /* let the warehouse refuse it, visibly */
            csv_quoted(out, v->via.ext.ptr, v->via.ext.size);
        break;
    default: /* maps, lists, binary: their JSON text */
        return csv_json(out, v);
    }
    return 0;
}

int model_csv_row(const Model *m, const msgpack_object *row, int op, Strbuf *out)
{
    const msgpack_object_kv *kv;
    uint32_t size;
    size_t len0 = out->len;
    int inorder = 1, rc;

    if (!row || row->type != MSGPACK_OBJECT_MAP)
        return PL_EFORMAT;
    kv = row->via.map.ptr;
    size = row->via.map.size;
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        const msgpack_object *v;
        if (i < size && key_is(&kv[i].key, f->name)) {
            v = &kv[i].val;
        } else {
            inorder = 0;
            v = member(row, f->name);
        }
        if ((rc = csv_value(out, v, f->type == FT_JSON, i ? ',' : 0)))
            goto fail;
    }
    if (m->drift == DRIFT_KEEP) {
        size_t i = m->nfields;
        const msgpack_object *v;
        if (i < size && key_is(&kv[i].key, m->drift_column)) {
            v = &kv[i].val;
        } else {
            inorder = 0;
            v = member(row, m->drift_column);
        }
        if ((rc = csv_value(out, v, 1, i ? ',' : 0)))
            goto fail;
    }
    sb_grow(out, 3);
    if (op) {
        /* A row whose members are exactly the columns in order has no
         * "_deleted" member; any other row is searched for it. */
        const msgpack_object *d = NULL;
        if (!inorder || size != m->nfields + (m->drift == DRIFT_KEEP))
            d = member(row, "_deleted");
        if (m->nfields || m->drift == DRIFT_KEEP)
            out->buf[out->len++] = ',';
        out->buf[out->len++] = d && d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean ? 'd' : 'u';
    }
    out->buf[out->len++] = '\n';
    out->buf[out->len] = '\0';
    return 0;
fail:
    sb_setlen(out, len0);
    return rc;
}

/* sql_literal appends s[0..n) as a standard SQL string literal. */
static void sql_literal(Strbuf *out, const char *s, size_t n)
{
    const char *q;
    sb_add(out, "'", 1);
    while ((q = memchr(s, '\'', n))) {
        size_t k = (size_t)(q - s) + 1;
        sb_add(out, s, k);
        sb_add(out, "'", 1);
        s += k;
        n -= k;
    }
    sb_add(out, s, n);
    sb_add(out, "'", 1);
}

/* put_default appends f's default as a SQL literal. */
static void put_default(Strbuf *out, const Field *f)
{
    RowView v;
    if (row_view(&v, f->default_mp.data, f->default_mp.size)) {
        sb_adds(out, "NULL");
        return;
    }
    const msgpack_object *o = &v.root;
    if (f->type == FT_JSON) {
        Strbuf t = SB_INIT;
        int rc = row_put_object(&t, o);
        PL_ASSERT(rc == 0, "a default is JSON: parse_default checked it");
        sql_literal(out, t.buf, t.len);
        sb_adds(out, "::jsonb");
        sb_free(&t);
    } else if (o->type == MSGPACK_OBJECT_STR) {
        sql_literal(out, o->via.str.ptr, o->via.str.size);
    } else if (o->type == MSGPACK_OBJECT_EXT) {
        if (o->via.ext.type == ROW_EXT_NUMBER && row_is_json_number(o->via.ext.ptr, o->via.ext.size))
            sb_add(out, o->via.ext.ptr, o->via.ext.size);
        else
            sql_literal(out, o->via.ext.ptr, o->via.ext.size);
    } else {
        int rc = row_put_object(out, o); /* integers, booleans */
        PL_ASSERT(rc == 0, "an integer or a boolean is JSON");
    }
    row_view_free(&v);
}

static void put_sql_type(Strbuf *out, const Field *f)
{
    switch (f->type) {
    case FT_SERIAL: /* the source's ids are copied, never generated here */
    case FT_BIGINT:
        sb_adds(out, "bigint");
        break;
    case FT_INTEGER:
        sb_adds(out, "integer");
        break;
    case FT_DECIMAL:
        if (f->precision)
            sb_addf(out, "numeric(%u,%u)", f->precision, f->scale);
        else
            sb_adds(out, "numeric");
        break;
    case FT_BOOLEAN:
        sb_adds(out, "boolean");
        break;
    case FT_STRING:
        sb_addf(out, "varchar(%" PRIu64 ")", f->len_max);
        break;
    case FT_TEXT:
        sb_adds(out, "text");
        break;
    case FT_DATETIME:
        sb_adds(out, "timestamptz");
        break;
    case FT_DATE:
        sb_adds(out, "date");
        break;
    default:
        sb_adds(out, "jsonb");
    }
}

static void put_cols(Strbuf *out, const Model *m, const size_t *idx, size_t n)
{
    sb_add(out, "(", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_adds(out, ", ");
        model_sql_ident(out, m->fields[idx[i]].name);
    }
    sb_add(out, ")", 1);
}

void model_ddl(const Models *ms, const Model *m, Strbuf *out)
{
    const char *sep = "\n  ";

    sb_adds(out, "CREATE TABLE IF NOT EXISTS ");
    model_sql_ident(out, m->table);
    sb_adds(out, " (");
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        sb_adds(out, sep);
        sep = ",\n  ";
        model_sql_ident(out, f->name);
        sb_add(out, " ", 1);
        put_sql_type(out, f);
        if (f->required || f->key)
            sb_adds(out, " NOT NULL");
        if (f->has_default) {
            sb_adds(out, " DEFAULT ");
            put_default(out, f);
        }
    }
    if (m->drift == DRIFT_KEEP) {
        sb_adds(out, sep);
        sep = ",\n  ";
        model_sql_ident(out, m->drift_column);
        sb_adds(out, " jsonb");
    }
    if (m->nkey) {
        sb_adds(out, sep);
        sb_adds(out, "PRIMARY KEY ");
        put_cols(out, m, m->key, m->nkey);
    }
    for (size_t i = 0; i < m->nfields; i++) {
        if (!m->fields[i].unique || (m->nkey == 1 && m->key[0] == i))
            continue;
        sb_adds(out, sep);
        sb_adds(out, "UNIQUE ");
        put_cols(out, m, &i, 1);
    }
    for (size_t r = 0; r < m->nrels; r++) {
        const Relation *rel = &m->rels[r];
        const Model *p = rel->has_n ? NULL : models_find(ms, rel->model);
        if (!p)
            continue;
        sb_adds(out, sep);
        sb_adds(out, "FOREIGN KEY (");
        for (size_t i = 0; i < rel->nfields; i++) {
            if (i)
                sb_adds(out, ", ");
            model_sql_ident(out, rel->fields[i]);
        }
        sb_adds(out, ") REFERENCES ");
        model_sql_ident(out, p->table);
        sb_add(out, " ", 1);
        put_cols(out, p, p->key, p->nkey);
    }
    sb_adds(out, "\n);\n");
}

void models_ddl(const Models *ms, Strbuf *out)
{
    for (size_t k = 0; k < ms->n; k++)
        model_ddl(ms, &ms->m[ms->order[k]], out);
}

/* ================================================================= JSON */

static void json_key(Strbuf *out, int first, const char *k)
{
    if (!first)
        sb_add(out, ",", 1);
    sb_add_json_string(out, k, strlen(k));
    sb_add(out, ":", 1);
}

static void json_str(Strbuf *out, const char *s)
{
    if (s)
        sb_add_json_string(out, s, strlen(s));
    else
        sb_adds(out, "null");
}

static void json_num(Strbuf *out, int has, double d)
{
    if (has)
        put_double(out, d);
    else
        sb_adds(out, "null");
}

static void field_json(Strbuf *out, const Field *f)
{
    sb_add(out, "{", 1);
    json_key(out, 1, "name");
    json_str(out, f->name);
    json_key(out, 0, "type");
    json_str(out, type_names[f->type]);
    json_key(out, 0, "required");
    sb_adds(out, f->required || f->key ? "true" : "false");
    json_key(out, 0, "key");
    sb_adds(out, f->key ? "true" : "false");
    json_key(out, 0, "unique");
    sb_adds(out, f->unique ? "true" : "false");
    json_key(out, 0, "length");
    if (f->has_length)
        sb_addf(out, "[%" PRIu64 ",%" PRIu64 "]", f->len_min, f->len_max);
    else
        sb_adds(out, "null");
    json_key(out, 0, "min");
    json_num(out, f->has_min, f->min);
    json_key(out, 0, "max");
    json_num(out, f->has_max, f->max);
    json_key(out, 0, "precision");
    if (f->precision)
        sb_addf(out, "%u", f->precision);
    else
        sb_adds(out, "null");
    json_key(out, 0, "scale");
    if (f->precision)
        sb_addf(out, "%u", f->scale);
    else
        sb_adds(out, "null");
    json_key(out, 0, "format");
    json_str(out, f->format == FF_NONE ? NULL : format_names[f->format]);
    json_key(out, 0, "regex");
    json_str(out, f->format == FF_REGEX ? f->regex_src : NULL);
    json_key(out, 0, "default");
    if (!f->has_default || row_to_json(f->default_mp.data, f->default_mp.size, out))
        sb_adds(out, "null");
    json_key(out, 0, "paranoid");
    sb_adds(out, f->paranoid ? "true" : "false");
    json_key(out, 0, "messages");
    sb_add(out, "{", 1);
    for (int r = 0, first = 1; r < RULE_COUNT; r++)
        if (f->messages[r]) {
            json_key(out, first, rule_names[r]);
            json_str(out, f->messages[r]);
            first = 0;
        }
    sb_adds(out, "}}");
}

void models_json(const Models *ms, Strbuf *out)
{
    sb_adds(out, "{\"models\":[");
    for (size_t i = 0; i < ms->n; i++) {
        const Model *m = &ms->m[i];
        if (i)
            sb_add(out, ",", 1);
        sb_add(out, "{", 1);
        json_key(out, 1, "name");
        json_str(out, m->name);
        json_key(out, 0, "table");
        json_str(out, m->table);
        json_key(out, 0, "drift");
        json_str(out, drift_names[m->drift]);
        json_key(out, 0, "drift_column");
        json_str(out, m->drift == DRIFT_KEEP ? m->drift_column : NULL);
        json_key(out, 0, "key");
        sb_add(out, "[", 1);
        for (size_t k = 0; k < m->nkey; k++) {
            if (k)
                sb_add(out, ",", 1);
            json_str(out, m->fields[m->key[k]].name);
        }
        sb_add(out, "]", 1);
        json_key(out, 0, "paranoid");
        json_str(out, m->paranoid >= 0 ? m->fields[m->paranoid].name : NULL);
        json_key(out, 0, "fields");
        sb_add(out, "[", 1);
        for (size_t k = 0; k < m->nfields; k++) {
            if (k)
                sb_add(out, ",", 1);
            field_json(out, &m->fields[k]);
        }
        sb_add(out, "]", 1);
        for (int hn = 0; hn < 2; hn++) {
            int first = 1;
            json_key(out, 0, hn ? "has_n" : "belongs_to");
            sb_add(out, "[", 1);
            for (size_t r = 0; r < m->nrels; r++) {
                const Relation *rel = &m->rels[r];
                if (rel->has_n != hn)
                    continue;
                if (!first)
                    sb_add(out, ",", 1);
                first = 0;
                sb_add(out, "{", 1);
                json_key(out, 1, "name");
                json_str(out, rel->name);
                json_key(out, 0, "model");
                json_str(out, rel->model);
                if (hn) {
                    json_key(out, 0, "through");
                    json_str(out, rel->through);
                } else {
                    const Model *p = models_find(ms, rel->model);
                    json_key(out, 0, "fields");
                    sb_add(out, "[", 1);
                    for (size_t k = 0; k < rel->nfields; k++) {
                        if (k)
                            sb_add(out, ",", 1);
                        json_str(out, rel->fields[k]);
                    }
                    sb_add(out, "]", 1);
                    json_key(out, 0, "references");
                    sb_add(out, "[", 1);
                    for (size_t k = 0; p && k < p->nkey; k++) {
                        if (k)
                            sb_add(out, ",", 1);
                        json_str(out, p->fields[p->key[k]].name);
                    }
                    sb_add(out, "]", 1);
                }
                sb_add(out, "}", 1);
            }
            sb_add(out, "]", 1);
        }
        sb_add(out, "}", 1);
    }
    sb_adds(out, "],\"load_order\":[");
    for (size_t k = 0; k < ms->n; k++) {
        if (k)
            sb_add(out, ",", 1);
        json_str(out, ms->m[ms->order[k]].name);
    }
    sb_adds(out, "]}");
}

/* ================================================================ parse */

static const char *const model_keys[] = {"table", "drift", "drift_column", "properties",
                                         "belongs_to", "has_n", NULL};
static const char *const prop_keys[] = {"type", "required", "key", "unique", "length", "min",
                                        "max", "format", "regex", "default", "paranoid",
                                        "precision", "scale", "messages", NULL};
static const char *const bt_keys[] = {"model", "fields", NULL};
static const char *const hn_keys[] = {"model", "through", NULL};

/* pick reads a word of list (with a did-you-mean), returning its index. */
static int pick(const ConfErr *l, const char *key, const ConfNode *n, const char *const *list,
                int *out)
{
    char lb[300];
    const char *s, *near;
    int rc = conf_as_name(l, key, n, &s), i;
    if (rc)
        return rc;
    if ((i = lookup(list, s)) >= 0) {
        *out = i;
        return 0;
    }
    if ((near = conf_nearest(s, list)))
        return conf_errat(l, n->line, "%s: unknown %s '%.64s'; did you mean '%s'?", key, key, s, near);
    return conf_errat(l, n->line, "%s: unknown %s '%.64s'; use one of %s", key, key, s,
                 conf_words(list, lb, sizeof lb));
}

/* parse_default turns the default's text into a msgpack value of f's type
 * and checks it against f's own rules. */
static int parse_default(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64], msg[300] = "", jerr[200];
    const char *s = n->value;
    size_t len;
    msgpack_sbuffer raw;
    msgpack_packer pk;
    RowView v;
    Failures c = {.text = msg, .textlen = sizeof msg};
    int rc = 0;

    if (n->type != CONF_SCALAR)
        return conf_errat(l, n->line, "default: expected a single value (got %s)%s",
                     conf_desc(n, buf, sizeof buf), f->type == FT_JSON ? "; write a json default as "
                     "JSON text in quotes, like default: '{\"a\": 1}'" : "");
    if (conf_is_null(n))
        return conf_errat(l, n->line, "default: is empty; give a value or remove default:");
    len = strlen(s);
    msgpack_sbuffer_init(&raw);
    msgpack_packer_init(&pk, &raw, msgpack_sbuffer_write);
    switch (f->type) {
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT: {
        char *end;
        long long x;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (!(is_digit(s[0]) || ((s[0] == '-' || s[0] == '+') && is_digit(s[1]))) || *end ||
            errno) {
            rc = conf_errat(l, n->line, "default: expected a whole number for %s property (got %s)",
                       type_names[f->type], conf_desc(n, buf, sizeof buf));
            goto out;
        }
        msgpack_pack_int64(&pk, x);
        break;
    }
    case FT_DECIMAL:
        if (!row_is_json_number(s, len)) {
            rc = conf_errat(l, n->line, "default: expected a number like 12.50 (got %s)",
                       conf_desc(n, buf, sizeof buf));
            goto out;
        }
        pack_ext_number(&pk, s, len);
        break;
    case FT_BOOLEAN: {
        int b;
        if ((rc = conf_as_bool(l, "default", n, &b)))
            goto out;
        if (b)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        break;
    }
    case FT_JSON:
        if (row_from_json(s, len, &raw, jerr, sizeof jerr)) {
            rc = conf_errat(l, n->line, "default: is not valid JSON (%s); write JSON text in quotes, "
                       "like default: '{\"a\": 1}'", jerr);
            goto out;
        }
        break;
    default:
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, s, len);
    }
    if (row_view(&v, raw.data, raw.size)) {
        rc = conf_errat(l, n->line, "default: cannot be stored; write a simpler value");
        goto out;
    }
    msgpack_packer_init(&pk, &f->default_mp, msgpack_sbuffer_write);
    f->default_mp.size = 0;
    check_value(f, &v.root, &pk, &c);
    row_view_free(&v);
    if (c.n) {
        rc = conf_errat(l, n->line, "default: %.64s breaks the property's own rules: %s; fix the "
                   "default or the rule", s, msg);
        goto out;
    }
    f->has_default = 1;
    f->default_text = s;
out:
    msgpack_sbuffer_destroy(&raw);
    return rc;
}

static int parse_length(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64];
    unsigned long long a = 0, b;
    int rc;

    if (n->type == CONF_SCALAR) {
        if ((rc = conf_as_uint(l, "length", n, 1, VARCHAR_MAX, &b)))
            return rc;
    } else if (n->type == CONF_SEQ && n->n == 2) {
        if ((rc = conf_as_uint(l, "length's minimum", n->kids[0], 0, VARCHAR_MAX, &a)) ||
            (rc = conf_as_uint(l, "length's maximum", n->kids[1], 1, VARCHAR_MAX, &b)))
            return rc;
        if (a > b)
            return conf_errat(l, n->line, "length: the minimum %llu is more than the maximum %llu; "
                         "write [min, max]", a, b);
    } else {
        return conf_errat(l, n->line, "length: expected a number of characters or [min, max] "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    }
    f->has_length = 1;
    f->len_min = a;
    f->len_max = b;
    return 0;
}

static int parse_messages(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64], lb[200];
    int rc;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "messages: expected a map of rule: text, like {length: "
                     "\"...\"} (got %s)", conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        const char *near, *k = n->keys[i];
        int r = lookup(rule_names, k);
        if (r < 0) {
            if ((near = conf_nearest(k, rule_names)))
                return conf_errat(l, n->kids[i]->line, "messages: unknown rule '%.64s'; did you "
                             "mean '%s'?", k, near);
            return conf_errat(l, n->kids[i]->line, "messages: unknown rule '%.64s'; the rules are %s",
                         k, conf_words(rule_names, lb, sizeof lb));
        }
        snprintf(buf, sizeof buf, "messages: %s", k);
        if ((rc = conf_as_name(l, buf, n->kids[i], &f->messages[r])))
            return rc;
    }
    return 0;
}

/* parse_field reads property name (node n) of model m into f. */
static int parse_field(const ConfErr *ml, Model *m, Field *f, const char *name, const ConfNode *n)
{
    char buf[64], lb[300];
    const ConfNode *v, *tn;
    const char *tname;
    ConfErr l = *ml;
    int rc, t;

    snprintf(l.pfx, sizeof l.pfx, "%.100sproperty '%.64s': ", ml->pfx, name);
    f->name = name;
    f->line = n->line;
    if (!ident_ok(name))
        return conf_errat(&l, n->line, "'%.64s' is not a valid property name; use 1 to %d of "
                     "letters, digits and _, starting with a letter or _", name, NAME_LEN_MAX);
    if (strcmp(name, "_deleted") == 0)
        return conf_errat(&l, n->line, "_deleted is reserved for soft deletes; rename the property");
    if (n->type == CONF_SCALAR && !conf_is_null(n)) {
        tn = n; /* the short form, name: string */
    } else if (n->type == CONF_MAP) {
        if ((rc = conf_keys_check(&l, n, "a property", prop_keys)))
            return rc;
        if (!(tn = conf_get(n, "type")))
            return conf_errat(&l, n->line, "type: is required; use one of " TYPE_LIST);
    } else {
        return conf_errat(&l, n->line, "expected a map like {type: string, required: true} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    }
    if ((rc = conf_as_name(&l, "type", tn, &tname)))
        return rc;
    if ((t = lookup(type_names, tname)) < 0) {
        const char *near = conf_nearest(tname, type_names);
        if (near)
            return conf_errat(&l, tn->line, "type: unknown type '%.64s'; did you mean '%s'?", tname,
                         near);
        return conf_errat(&l, tn->line, "type: unknown type '%.64s'; use one of %s", tname,
                     conf_words(type_names, lb, sizeof lb));
    }
    f->type = (FieldType)t;
    if (n->type != CONF_MAP)
        goto defaults;

    if (((v = conf_get(n, "required")) && (rc = conf_as_bool(&l, "required", v, &f->required))) ||
        ((v = conf_get(n, "key")) && (rc = conf_as_bool(&l, "key", v, &f->key))) ||
        ((v = conf_get(n, "unique")) && (rc = conf_as_bool(&l, "unique", v, &f->unique))) ||
        ((v = conf_get(n, "paranoid")) && (rc = conf_as_bool(&l, "paranoid", v, &f->paranoid))))
        return rc;
    if (f->key && f->type == FT_JSON)
        return conf_errat(&l, conf_get(n, "key")->line, "key: a json property cannot be part of the "
                     "key; use a scalar type (string, integer, ...)");
    if (f->paranoid) {
        if (f->type != FT_DATETIME)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: a soft-delete property "
                         "must be a datetime (this one is %s); change type: to datetime",
                         type_names[f->type]);
        if (f->key)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: the soft-delete "
                         "property cannot be part of the key; remove key: or paranoid:");
        if (m->paranoid >= 0)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: model already has a "
                         "soft-delete property '%s'; keep one", m->fields[m->paranoid].name);
        m->paranoid = (int)(f - m->fields);
    }
    if ((v = conf_get(n, "length"))) {
        if (f->type != FT_STRING && f->type != FT_TEXT)
            return conf_errat(&l, v->line, "length: only string and text properties have a length "
                         "(this one is %s); remove it%s", type_names[f->type],
                         is_num_type(f->type) ? " or use min: and max:" : "");
        if ((rc = parse_length(&l, f, v)))
            return rc;
    }
    for (int mx = 0; mx < 2; mx++) {
        const char *k = mx ? "max" : "min";
        if (!(v = conf_get(n, k)))
            continue;
        if (!is_num_type(f->type))
            return conf_errat(&l, v->line, "%s: only number properties have a %s (this one is %s)%s",
                         k, k, type_names[f->type], f->type == FT_STRING || f->type == FT_TEXT
                         ? "; use length: for the number of characters" : "; remove it");
        if ((rc = conf_as_num(&l, k, v, -INFINITY, INFINITY, NULL, mx ? &f->max : &f->min)))
            return rc;
        *(mx ? &f->has_max : &f->has_min) = 1;
    }
    if (f->has_min && f->has_max && f->min > f->max)
        return conf_errat(&l, conf_get(n, "max")->line, "max: %g is less than min: %g; swap them",
                     f->max, f->min);
    for (int pr = 0; pr < 2; pr++) {
        const char *k = pr ? "scale" : "precision";
        unsigned long long u;
        if (!(v = conf_get(n, k)))
            continue;
        if (f->type != FT_DECIMAL)
            return conf_errat(&l, v->line, "%s: only decimal properties have a %s (this one is %s); "
                         "remove it", k, k, type_names[f->type]);
        if ((rc = conf_as_uint(&l, k, v, pr ? 0 : 1, NUMERIC_PREC_MAX, &u)))
            return rc;
        *(pr ? &f->scale : &f->precision) = (unsigned)u;
    }
    if (conf_get(n, "scale") && !f->precision)
        return conf_errat(&l, conf_get(n, "scale")->line, "scale: needs precision: too (the total "
                     "number of digits), like {precision: 10, scale: 2}");
    if (f->scale > f->precision)
        return conf_errat(&l, conf_get(n, "scale")->line, "scale: %u is more than precision: %u; "
                     "scale counts the digits after the point, precision all of them",
                     f->scale, f->precision);
    if ((v = conf_get(n, "format")) || conf_get(n, "regex")) {
        const ConfNode *rn = conf_get(n, "regex");
        int fmt = FF_REGEX;
        if (f->type != FT_STRING && f->type != FT_TEXT)
            return conf_errat(&l, (v ? v : rn)->line, "%s: only string and text properties have a "
                         "format (this one is %s); remove it", v ? "format" : "regex",
                         type_names[f->type]);
        if (v && (rc = pick(&l, "format", v, format_names, &fmt)))
            return rc;
        if (fmt == FF_NONE)
            return conf_errat(&l, v->line, "format: none is the same as no format; remove format:");
        if (fmt == FF_REGEX && !rn)
            return conf_errat(&l, v->line, "format: regex needs regex: too, like regex: "
                         "\"^[A-Z]{2}[0-9]+$\" (a POSIX extended regex)");
        if (fmt != FF_REGEX && rn)
            return conf_errat(&l, rn->line, "regex: only with format: regex (this one is format: "
                         "%s); remove one of them", format_names[fmt]);
        if (fmt == FF_REGEX) {
            char rerr[200];
            if ((rc = conf_as_name(&l, "regex", rn, &f->regex_src)))
                return rc;
            int e = regcomp(&f->regex, f->regex_src, REG_EXTENDED | REG_NOSUB);
            if (e) {
                regerror(e, &f->regex, rerr, sizeof rerr);
                regfree(&f->regex);
                return conf_errat(&l, rn->line, "regex: cannot compile '%.100s': %s; write a POSIX "
                             "extended regex, like ^[A-Z]{2}[0-9]+$", f->regex_src, rerr);
            }
        }
        f->format = (FieldFormat)fmt;
    }
    if ((v = conf_get(n, "messages")) && (rc = parse_messages(&l, f, v)))
        return rc;
defaults:
    if (f->type == FT_STRING && !f->has_length) {
        f->has_length = 1;
        f->len_min = 0;
        f->len_max = STRING_LEN_DEFAULT;
    }
    if ((v = conf_get(n, "default")) && (rc = parse_default(&l, f, v)))
        return rc;
    return 0;
}

/* parse_model reads model i's own keys and properties (pass 1). */
static int parse_model(const ConfErr *ml, Models *ms, size_t i, const char *name, const ConfNode *n)
{
    char buf[64];
    const ConfNode *props, *v;
    Model *m = &ms->m[i];
    ConfErr l = *ml;
    int rc, d;

    snprintf(l.pfx, sizeof l.pfx, "model '%.64s': ", name);
    m->name = m->table = name;
    m->line = n->line;
    m->paranoid = -1;
    m->drift_column = "extra";
    if (!ident_ok(name))
        return conf_errat(&l, n->line, "'%.64s' is not a valid model name; use 1 to %d of letters, "
                     "digits and _, starting with a letter or _", name, NAME_LEN_MAX);
    if (n->type != CONF_MAP)
        return conf_errat(&l, n->line, "expected a map with properties: (got %s)",
                     conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(&l, n, "a model", model_keys)))
        return rc;
    if ((v = conf_get(n, "table"))) {
        if ((rc = conf_as_name(&l, "table", v, &m->table)))
            return rc;
        if (strchr(m->table, '.'))
            return conf_errat(&l, v->line, "table: '%.64s' names a schema; give the table alone and "
                         "choose the schema with the target's search_path", m->table);
        if (strlen(m->table) > NAME_LEN_MAX)
            return conf_errat(&l, v->line, "table: '%.64s...' is longer than %d bytes, which "
                         "PostgreSQL would cut; shorten it", m->table, NAME_LEN_MAX);
    }
    for (size_t j = 0; j < i; j++)
        if (strcmp(ms->m[j].table, m->table) == 0)
            return conf_errat(&l, v ? v->line : n->line, "table '%s' is already the table of model "
                         "'%s'; give each model its own table:", m->table, ms->m[j].name);
    if ((v = conf_get(n, "drift"))) {
        if ((rc = pick(&l, "drift", v, drift_names, &d)))
            return rc;
        m->drift = (DriftPolicy)d;
    }
    if ((v = conf_get(n, "drift_column"))) {
        if (m->drift != DRIFT_KEEP)
            return conf_errat(&l, v->line, "drift_column: is only used with drift: keep; remove it "
                         "or set drift: keep");
        if ((rc = v_ident(&l, "drift_column", v, &m->drift_column)))
            return rc;
    }
    if (!(props = conf_get(n, "properties")))
        return conf_errat(&l, n->line, "properties: is required; declare the fields, like "
                     "properties: {id: {type: serial, key: true}}");
    if (props->type != CONF_MAP || props->n == 0)
        return conf_errat(&l, props->line, "properties: expected a map of name: {type: ...} (got %s)",
                     props->type == CONF_MAP ? "an empty map" : conf_desc(props, buf, sizeof buf));
    m->fields = xcalloc(props->n, sizeof *m->fields);
    m->nfields = props->n;
    for (size_t j = 0; j < props->n; j++)
        if ((rc = parse_field(&l, m, &m->fields[j], props->keys[j], props->kids[j])))
            return rc;
    m->key = xcalloc(props->n, sizeof *m->key);
    for (size_t j = 0; j < props->n; j++)
        if (m->fields[j].key)
            m->key[m->nkey++] = j;
    if (m->drift == DRIFT_KEEP)
        for (size_t j = 0; j < m->nfields; j++)
            if (strcmp(m->fields[j].name, m->drift_column) == 0)
                return conf_errat(&l, m->fields[j].line, "property '%s' is also the drift column "
                             "(drift_column: %s); give drift_column: another name",
                             m->drift_column, m->drift_column);
    return 0;
}

static int same_kind(FieldType a, FieldType b)
{
    if (is_int_type(a) && is_int_type(b))
        return 1;
    if ((a == FT_STRING || a == FT_TEXT) && (b == FT_STRING || b == FT_TEXT))
        return 1;
    return a == b;
}

/* model_ref reads a reference to a declared model (with a did-you-mean). */
static int model_ref(const ConfErr *l, const Models *ms, const char *key, const ConfNode *v,
                     const char **out)
{
    const char *s;
    int rc = conf_as_name(l, key, v, &s);
    if (rc)
        return rc;
    if (models_find(ms, s)) {
        *out = s;
        return 0;
    }
    ConfNear nr = CONF_NEAR(s);
    for (size_t i = 0; i < ms->n; i++)
        conf_near_try(&nr, ms->m[i].name);
    if (nr.best)
        return conf_errat(l, v->line, "%s: model '%.64s' is not declared; did you mean '%s'?", key, s,
                     nr.best);
    return conf_errat(l, v->line, "%s: model '%.64s' is not declared; declare it under models: or "
                 "fix the name", key, s);
}

static int parse_belongs_to(const ConfErr *ml, const Models *ms, const Model *m, Relation *r,
                            const char *name, const ConfNode *n)
{
    char buf[64], keys[300];
    const ConfNode *v;
    const Model *p;
    ConfErr l = *ml;
    int rc;

    snprintf(l.pfx, sizeof l.pfx, "%.100sbelongs_to '%.64s': ", ml->pfx, name);
    r->name = name;
    r->line = n->line;
    if (!ident_ok(name))
        return conf_errat(&l, n->line, "'%.64s' is not a valid relation name; use letters, digits "
                     "and _", name);
    if (n->type != CONF_MAP)
        return conf_errat(&l, n->line, "expected a map like {model: tenants, fields: [tenant_id]} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(&l, n, "a belongs_to", bt_keys)))
        return rc;
    if (!(v = conf_get(n, "model")))
        return conf_errat(&l, n->line, "model: is required; name the parent model");
    if ((rc = model_ref(&l, ms, "model", v, &r->model)))
        return rc;
    p = models_find(ms, r->model);
    keys[0] = '\0';
    for (size_t k = 0, o = 0; k < p->nkey && o < sizeof keys; k++) {
        int w = snprintf(keys + o, sizeof keys - o, "%s%s", k ? ", " : "",
                         p->fields[p->key[k]].name);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    if (p->nkey == 0)
        return conf_errat(&l, v->line, "model '%s' has no key to refer to; mark its identifying "
                     "fields with key: true", p->name);
    if (!(v = conf_get(n, "fields")))
        return conf_errat(&l, n->line, "fields: is required; list this model's columns that hold "
                     "the key of '%s' (%s), like fields: [%s_id]", p->name, keys, name);
    if (v->type == CONF_SCALAR && !conf_is_null(v)) {
        r->fields = xcalloc(1, sizeof *r->fields);
        r->fields[0] = v->value;
        r->nfields = 1;
    } else if (v->type == CONF_SEQ) {
        r->fields = xcalloc(v->n ? v->n : 1, sizeof *r->fields);
        for (size_t k = 0; k < v->n; k++)
            if ((rc = conf_as_name(&l, "fields item", v->kids[k], &r->fields[r->nfields++])))
                return rc;
    } else {
        return conf_errat(&l, v->line, "fields: expected a list of this model's columns (got %s)",
                     conf_desc(v, buf, sizeof buf));
    }
    if (r->nfields != p->nkey)
        return conf_errat(&l, v->line, "fields: lists %zu column%s but the key of '%s' has %zu (%s); "
                     "list one column per key field, in that order", r->nfields,
                     r->nfields == 1 ? "" : "s", p->name, p->nkey, keys);
    for (size_t k = 0; k < r->nfields; k++) {
        int fi = field_index(m, SIZE_MAX, r->fields[k], strlen(r->fields[k]));
        const Field *pf = &p->fields[p->key[k]];
        if (fi < 0)
            return conf_errat(&l, v->line, "fields: '%.64s' is not a property of model '%s'; "
                         "declare it under properties: (like {type: %s})", r->fields[k],
                         m->name, type_names[pf->type == FT_SERIAL ? FT_BIGINT : pf->type]);
        if (!same_kind(m->fields[fi].type, pf->type))
            return conf_errat(&l, v->line, "fields: '%s' is %s but the key field '%s' of '%s' is %s; "
                         "make the types match", r->fields[k], type_names[m->fields[fi].type],
                         pf->name, p->name, type_names[pf->type]);
    }
    return 0;
}

static int parse_has_n(const ConfErr *ml, const Models *ms, Relation *r, const char *name,
                       const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    ConfErr l = *ml;
    int rc;

    snprintf(l.pfx, sizeof l.pfx, "%.100shas_n '%.64s': ", ml->pfx, name);
    r->name = name;
    r->line = n->line;
    r->has_n = 1;
    if (n->type != CONF_MAP && !conf_is_null(n))
        return conf_errat(&l, n->line, "expected a map like {model: authorities, through: ...} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if (n->type == CONF_MAP && (rc = conf_keys_check(&l, n, "a has_n", hn_keys)))
        return rc;
    if ((v = conf_get(n, "model"))) {
        if ((rc = model_ref(&l, ms, "model", v, &r->model)))
            return rc;
    } else if (models_find(ms, name)) {
        r->model = models_find(ms, name)->name;
    } else {
        return conf_errat(&l, n->line, "model '%.64s' is not declared; declare it under models: or "
                     "give model:", name);
    }
    if ((v = conf_get(n, "through")) && (rc = model_ref(&l, ms, "through", v, &r->through)))
        return rc;
    return 0;
}

/* parse_rels reads model i's belongs_to and has_n (pass 2). */
static int parse_rels(const ConfErr *ml, Models *ms, size_t i, const ConfNode *n)
{
    char buf[64];
    Model *m = &ms->m[i];
    const ConfNode *bt = conf_get(n, "belongs_to"), *hn = conf_get(n, "has_n");
    ConfErr l = *ml;
    int rc;

    snprintf(l.pfx, sizeof l.pfx, "model '%.64s': ", m->name);
    if (bt && bt->type != CONF_MAP)
        return conf_errat(&l, bt->line, "belongs_to: expected a map of name: {model: ..., fields: "
                     "[...]} (got %s)", conf_desc(bt, buf, sizeof buf));
    if (hn && hn->type != CONF_MAP)
        return conf_errat(&l, hn->line, "has_n: expected a map of name: {model: ...} (got %s)",
                     conf_desc(hn, buf, sizeof buf));
    size_t nb = bt ? bt->n : 0, nh = hn ? hn->n : 0;
    m->rels = xcalloc(nb + nh + 1, sizeof *m->rels);
    m->nrels = nb + nh;
    for (size_t k = 0; k < nb; k++)
        if ((rc = parse_belongs_to(&l, ms, m, &m->rels[k], bt->keys[k], bt->kids[k])))
            return rc;
    for (size_t k = 0; k < nh; k++) {
        if (bt && conf_get(bt, hn->keys[k]))
            return conf_errat(&l, hn->kids[k]->line, "'%.64s' is both a belongs_to and a has_n; "
                         "rename one", hn->keys[k]);
        if ((rc = parse_has_n(&l, ms, &m->rels[nb + k], hn->keys[k], hn->kids[k])))
            return rc;
    }
    return 0;
}

/* parent_pending returns a belongs_to of model i whose parent (another
 * model) is not placed yet, or NULL. */
static const Relation *parent_pending(const Models *ms, size_t i, const char *placed)
{
    const Model *m = &ms->m[i];
    for (size_t r = 0; r < m->nrels; r++) {
        const Relation *rel = &m->rels[r];
        if (rel->has_n || strcmp(rel->model, m->name) == 0)
            continue;
        size_t p = (size_t)(models_find(ms, rel->model) - ms->m);
        if (!placed[p])
            return rel;
    }
    return NULL;
}

/* order_models puts parents before children, file order among equals. */
static int order_models(const ConfErr *l, Models *ms)
{
    char *placed = xcalloc(ms->n + 1, 1);
    size_t *path = NULL;
    int rc = 0;

    ms->order = xcalloc(ms->n + 1, sizeof *ms->order);
    for (size_t k = 0; k < ms->n; k++) {
        size_t pick_i = SIZE_MAX;
        for (size_t i = 0; i < ms->n && pick_i == SIZE_MAX; i++)
            if (!placed[i] && !parent_pending(ms, i, placed))
                pick_i = i;
        if (pick_i == SIZE_MAX) {
            /* Every model left waits for another one left: walk up to a repeat. */
            size_t cur = 0, len = 0, start = 0;
            char cyc[400];
            size_t o = 0;
            path = xcalloc(ms->n + 1, sizeof *path);
            while (placed[cur])
                cur++;
            for (;;) {
                size_t j;
                for (j = 0; j < len && path[j] != cur; j++)
                    ;
                if (j < len) {
                    start = j;
                    break;
                }
                path[len++] = cur;
                const Relation *rel = parent_pending(ms, cur, placed);
                cur = (size_t)(models_find(ms, rel->model) - ms->m);
            }
            cyc[0] = '\0';
            for (size_t j = start; j <= len && o < sizeof cyc; j++) {
                int w = snprintf(cyc + o, sizeof cyc - o, "%s%s", j > start ? " -> " : "",
                                 ms->m[j < len ? path[j] : path[start]].name);
                if (w < 0)
                    break;
                o += (size_t)w;
            }
            const Relation *first = parent_pending(ms, path[start], placed);
            rc = conf_errat(l, first->line, "belongs_to makes a cycle between models: %s; a parent "
                       "is loaded before its children, so one of these must be a plain column "
                       "instead of a belongs_to", cyc);
            goto out;
        }
        placed[pick_i] = 1;
        ms->order[k] = pick_i;
    }
out:
    free(path);
    free(placed);
    return rc;
}

int models_parse(const char *file, const ConfNode *node, Models **out, char *err, size_t errlen)
{
    char buf[64];
    ConfErr l = conf_err(file, err, errlen);
    Models *ms;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!node || node->type != CONF_MAP || node->n == 0)
        return conf_errat(&l, node ? node->line : 1, "models: expected a map of models, like models: "
                     "{users: {properties: {id: {type: serial, key: true}}}} (got %s)",
                     !node ? "nothing" : node->type == CONF_MAP ? "an empty map"
                                                                : conf_desc(node, buf, sizeof buf));
    ms = xcalloc(1, sizeof *ms);
    ms->m = xcalloc(node->n, sizeof *ms->m);
    for (size_t i = 0; i < node->n; i++) {
        ms->n = i + 1;
        if ((rc = parse_model(&l, ms, i, node->keys[i], node->kids[i])))
            goto fail;
    }
    for (size_t i = 0; i < node->n; i++)
        if ((rc = parse_rels(&l, ms, i, node->kids[i])))
            goto fail;
    if ((rc = order_models(&l, ms)))
        goto fail;
    *out = ms;
    return 0;
fail:
    models_free(ms);
    return rc;
}

void models_free(Models *ms)
{
    if (!ms)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        Model *m = &ms->m[i];
        for (size_t j = 0; j < m->nfields; j++) {
            if (m->fields[j].format == FF_REGEX)
                regfree(&m->fields[j].regex);
            msgpack_sbuffer_destroy(&m->fields[j].default_mp);
        }
        for (size_t r = 0; r < m->nrels; r++)
            free(m->rels[r].fields);
        free(m->fields);
        free(m->key);
        free(m->rels);
    }
    free(ms->m);
    free(ms->order);
    free(ms);
}

const Model *models_find(const Models *ms, const char *name)
{
    for (size_t i = 0; ms && name && i < ms->n; i++)
        if (strcmp(ms->m[i].name, name) == 0)
            return &ms->m[i];
    return NULL;
}
