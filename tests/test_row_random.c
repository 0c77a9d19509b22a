/* test_row_random.c: engine/data/row.c and json.c on seeded random
 * documents: whole ones round trip (JSON -> msgpack -> JSON, byte for byte
 * with their canonical form), damaged ones are refused, and the fast parser
 * and validator answer exactly as yajl's path (the same bytes, or the same
 * error word for word). The hand-written cases are in test_row.c. */
#include "t.h"
#include "t_row.h"
#include "json.h"
#include "pl.h"
#include "row.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ------------------------------------------------ random round trips */

typedef struct Gen {
    uint64_t s;
    Strbuf in, want;
} Gen;

static uint64_t rnd(Gen *g)
{
    g->s ^= g->s << 13;
    g->s ^= g->s >> 7;
    g->s ^= g->s << 17;
    return g->s;
}

static unsigned below(Gen *g, unsigned n)
{
    return (unsigned)(rnd(g) % n);
}

/* ws adds optional JSON whitespace to the input only. */
static void ws(Gen *g)
{
    static const char w[] = " \t\n\r";
    if (below(g, 4) == 0)
        for (unsigned i = 1 + below(g, 3); i > 0; i--)
            sb_add(&g->in, &w[below(g, 4)], 1);
}

static void utf8(Strbuf *b, uint32_t cp)
{
    char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        o[0] = (char)(0xF0 | cp >> 18);
        o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_add(b, o, n);
}

static uint32_t code_point(Gen *g)
{
    static const uint32_t special[] = {0, '"', '\\', '/', '\b', '\f', '\n', '\r', '\t', 0x1f,
                                       0x7f, ',', ':', '{', ']', 0x2028, 0xfeff, 0xfffd,
                                       0xffff, 0x10ffff, 0x1f600, 0xe9, 0x4e2d};
    uint32_t cp;
    switch (below(g, 8)) {
    case 0: return special[below(g, sizeof special / sizeof special[0])];
    case 1: return below(g, 0x20);
    case 2: return 0x80 + below(g, 0x800 - 0x80);
    case 3:
        do
            cp = 0x800 + below(g, 0x10000 - 0x800);
        while (cp >= 0xD800 && cp <= 0xDFFF);
        return cp;
    case 4: return 0x10000 + below(g, 0x110000 - 0x10000);
    default: return 0x20 + below(g, 0x5f);
    }
}

/* gen_string writes a random string: in some escaped spelling, want in the
 * canonical one (worked out here independently of row.c). */
static void gen_string(Gen *g)
{
    unsigned n = below(g, 6) == 0 ? below(g, 60) : below(g, 10);
    sb_add(&g->in, "\"", 1);
    sb_add(&g->want, "\"", 1);
    for (unsigned i = 0; i < n; i++) {
        uint32_t cp = code_point(g);
        const char *shortesc = NULL, *canon = NULL;
        char u[16];
        switch (cp) {
        case '"': shortesc = canon = "\\\""; break;
        case '\\': shortesc = canon = "\\\\"; break;
        case '/': shortesc = "\\/"; break;
        case '\b': shortesc = canon = "\\b"; break;
        case '\f': shortesc = canon = "\\f"; break;
        case '\n': shortesc = canon = "\\n"; break;
        case '\r': shortesc = canon = "\\r"; break;
        case '\t': shortesc = canon = "\\t"; break;
        }
        /* want */
        if (canon) {
            sb_adds(&g->want, canon);
        } else if (cp < 0x20 || cp == 0x7f) {
            snprintf(u, sizeof u, "\\u%04x", (unsigned)cp);
            sb_adds(&g->want, u);
        } else {
            utf8(&g->want, cp);
        }
        /* in: raw where JSON allows it, else (or by chance) an escape */
        unsigned how = below(g, 3);
        if (how == 0 && cp >= 0x20 && cp != '"' && cp != '\\') {
            utf8(&g->in, cp);
        } else if (how == 1 && shortesc) {
            sb_adds(&g->in, shortesc);
        } else if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            snprintf(u, sizeof u, below(g, 2) ? "\\u%04x\\u%04x" : "\\u%04X\\u%04X",
                     (unsigned)(0xD800 + (v >> 10)), (unsigned)(0xDC00 + (v & 0x3ff)));
            sb_adds(&g->in, u);
        } else {
            snprintf(u, sizeof u, below(g, 2) ? "\\u%04x" : "\\u%04X", (unsigned)cp);
            sb_adds(&g->in, u);
        }
    }
    sb_add(&g->in, "\"", 1);
    sb_add(&g->want, "\"", 1);
}

static void digits(Gen *g, Strbuf *b, unsigned n, int lead)
{
    for (unsigned i = 0; i < n; i++) {
        char c = (char)('0' + (i == 0 && lead ? 1 + below(g, 9) : below(g, 10)));
        sb_add(b, &c, 1);
    }
}

static void gen_number(Gen *g)
{
    static const char *const edge[] = {
        "0", "-0", "-0.0", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "18446744073709551615", "18446744073709551616",
        "-9223372036854775809", "99999999999999999999", "1e400", "0.1", "1.5e-7", "0E0",
    };
    Strbuf t;
    sb_init(&t);
    switch (below(g, 6)) {
    case 0:
        sb_adds(&t, edge[below(g, sizeof edge / sizeof edge[0])]);
        break;
    case 1: /* any int64 */
        sb_addf(&t, "%lld", (long long)rnd(g));
        break;
    case 2: /* any uint64 */
        sb_addf(&t, "%llu", (unsigned long long)rnd(g));
        break;
    case 3: /* small */
        sb_addf(&t, "%d", (int)below(g, 2000) - 1000);
        break;
    default: /* a decimal, big integer or exponent */
        if (below(g, 2))
            sb_add(&t, "-", 1);
        if (below(g, 3) == 0)
            sb_add(&t, "0", 1);
        else
            digits(g, &t, 1 + below(g, 30), 1);
        if (below(g, 2)) {
            sb_add(&t, ".", 1);
            digits(g, &t, 1 + below(g, 20), 0);
        }
        if (below(g, 2)) {
            sb_add(&t, below(g, 2) ? "e" : "E", 1);
            if (below(g, 2))
                sb_add(&t, below(g, 2) ? "+" : "-", 1);
            digits(g, &t, 1 + below(g, 4), 0);
        }
    }
    sb_add(&g->in, t.buf, t.len);
    sb_add(&g->want, t.buf, t.len);
    sb_free(&t);
}

static void gen_value(Gen *g, int depth)
{
    unsigned k = below(g, depth < 6 ? 10 : 6);
    ws(g);
    switch (k) {
    case 0: sb_adds(&g->in, "null"); sb_adds(&g->want, "null"); break;
    case 1: sb_adds(&g->in, "true"); sb_adds(&g->want, "true"); break;
    case 2: sb_adds(&g->in, "false"); sb_adds(&g->want, "false"); break;
    case 3: case 4: gen_number(g); break;
    case 5: gen_string(g); break;
    case 6: case 7: { /* object */
        unsigned n = below(g, 6);
        sb_add(&g->in, "{", 1);
        sb_add(&g->want, "{", 1);
        for (unsigned i = 0; i < n; i++) {
            if (i) {
                ws(g);
                sb_add(&g->in, ",", 1);
                sb_add(&g->want, ",", 1);
            }
            ws(g);
            gen_string(g);
            ws(g);
            sb_add(&g->in, ":", 1);
            sb_add(&g->want, ":", 1);
            gen_value(g, depth + 1);
        }
        ws(g);
        sb_add(&g->in, "}", 1);
        sb_add(&g->want, "}", 1);
        break;
    }
    default: { /* array */
        unsigned n = below(g, 6);
        sb_add(&g->in, "[", 1);
        sb_add(&g->want, "[", 1);
        for (unsigned i = 0; i < n; i++) {
            if (i) {
                ws(g);
                sb_add(&g->in, ",", 1);
                sb_add(&g->want, ",", 1);
            }
            gen_value(g, depth + 1);
        }
        ws(g);
        sb_add(&g->in, "]", 1);
        sb_add(&g->want, "]", 1);
    }
    }
    ws(g);
}

static void random_round_trips(void)
{
    Gen g = {.s = 0x9E3779B97F4A7C15ull};
    Strbuf out;
    char err[200];

    sb_init(&g.in);
    sb_init(&g.want);
    sb_init(&out);
    for (int doc = 0; doc < 4000; doc++) {
        sb_reset(&g.in);
        sb_reset(&g.want);
        gen_value(&g, 0);
        if (json_validate(g.in.buf, g.in.len, err, sizeof err) != 0)
            t_fail(__FILE__, __LINE__, "doc %d: the generator made bad JSON: %s", doc, err);
        int rc = tr_rt(g.in.buf, g.in.len, &out, err, sizeof err);
        if (rc)
            t_fail(__FILE__, __LINE__, "doc %d: %s (%s)\n%s", doc, pl_strerror(rc), err, g.in.buf);
        if (out.len != g.want.len || memcmp(out.buf, g.want.buf, out.len) != 0)
            t_fail(__FILE__, __LINE__, "doc %d: %s\n  gave %s\n  want %s", doc, g.in.buf, out.buf,
                   g.want.buf);
        rc = tr_rt(g.want.buf, g.want.len, &out, err, sizeof err);
        T_CHECK(rc == 0 && out.len == g.want.len && memcmp(out.buf, g.want.buf, out.len) == 0);
    }
    sb_free(&g.in);
    sb_free(&g.want);
    sb_free(&out);
}

/* random_damage: a valid document with bytes changed either still parses
 * (then json_validate agrees and the output is canonical) or is refused
 * with PL_EINVAL and a message; never anything else. */
static void random_damage(void)
{
    static const char junk[] = "\"\\{}[],:u0dD8e-.\xff\xc3\xed\x80 ";
    Gen g = {.s = 0xD1B54A32D192ED03ull};
    Strbuf out, again;
    char err[200];
    int ok = 0, refused = 0;

    sb_init(&g.in);
    sb_init(&g.want);
    sb_init(&out);
    sb_init(&again);
    for (int doc = 0; doc < 3000; doc++) {
        sb_reset(&g.in);
        sb_reset(&g.want);
        gen_value(&g, 0);
        for (unsigned k = 1 + below(&g, 3); k > 0; k--) {
            size_t at = below(&g, (unsigned)g.in.len);
            g.in.buf[at] = below(&g, 2) ? junk[below(&g, sizeof junk - 1)] : (char)rnd(&g);
        }
        if (below(&g, 4) == 0)
            g.in.len = below(&g, (unsigned)g.in.len + 1); /* truncated */
        err[0] = '\0';
        int rc = tr_rt(g.in.buf, g.in.len, &out, err, sizeof err);
        if (rc == 0) {
            ok++;
            T_OK(json_validate(g.in.buf, g.in.len, NULL, 0));
            T_OK(tr_rt(out.buf, out.len, &again, err, sizeof err));
            T_CHECK(again.len == out.len && memcmp(again.buf, out.buf, out.len) == 0);
        } else {
            refused++;
            T_EQ(rc, PL_EINVAL);
            T_CHECK(strncmp(err, "invalid ", 8) == 0);
        }
    }
    T_CHECK(ok > 100 && refused > 100);
    sb_free(&g.in);
    sb_free(&g.want);
    sb_free(&out);
    sb_free(&again);
}

/* fast_path_matches_yajl: row_from_json's own parser (the default) and
 * the yajl-based one (row_json_slow) give the same bytes, or the same
 * refusal and message, on valid documents, damaged ones, and the edges. */
static int parse_as(int slow, const char *in, size_t n, int object, msgpack_sbuffer *out, char *err,
                    size_t errlen)
{
    row_json_slow(slow);
    out->size = 0;
    err[0] = '\0';
    int rc = object ? row_from_json_object(in, n, out, err, errlen) : row_from_json(in, n, out, err, errlen);
    row_json_slow(0);
    return rc;
}

static void same_parse(const char *in, size_t n, int object, int doc)
{
    msgpack_sbuffer a, b;
    char ea[200], eb[200];
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    int ra = parse_as(0, in, n, object, &a, ea, sizeof ea);
    int rb = parse_as(1, in, n, object, &b, eb, sizeof eb);
    if (ra != rb || a.size != b.size || (a.size && memcmp(a.data, b.data, a.size)) || strcmp(ea, eb))
        t_fail(__FILE__, __LINE__, "doc %d (object %d): fast %d [%s] %zu bytes, yajl %d [%s] %zu bytes: "
               "%.*s", doc, object, ra, ea, a.size, rb, eb, b.size, (int)(n < 300 ? n : 300), in);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void fast_path_matches_yajl(void)
{
    static const char *const edges[] = {
        "", " ", "{}", "[]", "{ }", "[ ]", "\"\"", "0", "-0", "01", "-", "1.", ".5", "+1", "1e", "1e+",
        "1E-0", "-0.0e00", "tru", "truex", "nul", "[1,]", "{\"a\":1,}", "{\"a\"}", "{\"a\":}", "{1:2}",
        "[1 2]", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
        "\"\\ud83d\\ude00\"", "\"\\u0000\"", "\"a\\qb\"", "\"\t\"", "\"\x7f\"", "\"\xc3\xa9\"",
        "\"\xc3\"", "\"\xe0\x80\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\f1", "1\v",
        "[1]x", "{\"a\":1}{}", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
        "-9223372036854775809", "127", "128", "255", "256", "65535", "65536", "4294967295",
        "4294967296", "-32", "-33", "-128", "-129", "-32768", "-32769", "-2147483648", "-2147483649",
        "12345678", "1234567890123456", "\"0123456789012345678901234567890\"",
        "\"01234567890123456789012345678901\"", "\"\\n0123456789012345678901234567890123\"",
        /* what issue 13 refuses: lone surrogates (yajl's path words them),
         * a key twice (kept twice: the model's json check refuses it), more
         * than microseconds (a string here: the model refuses it) */
        "\"\\ud83d\\ud83d\"", "\"ab\\ud83d\"", "{\"\\ude00\":1}", "[\"x\\udc00\"]",
        "{\"a\":\"\\\\\\ud83d\"}", "\"\\\\ud800\"", "\"\\uDBFF\\uDFFF\"", "\"\\ud800\\u\"",
        "\"\\ud800\\", "{\"a\":1,\"a\":2}", "{\"d\":{\"b\":1,\"c\":0,\"b\":1}}", "{\"\":1,\"\":1}",
        "{\"at\":\"2024-12-31T23:59:59.9999999Z\"}",
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        for (int object = 0; object < 2; object++)
            same_parse(edges[i], strlen(edges[i]), object, -(int)i - 1);
    /* containers and strings around the header sizes: 15/16, 31/32, 255/256, 65535/65536 */
    Strbuf b;
    sb_init(&b);
    static const unsigned sizes[] = {15, 16, 31, 32, 255, 256, 65535, 65536};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned n = sizes[k];
        sb_reset(&b);
        sb_add(&b, "[", 1);
        for (unsigned i = 0; i < n; i++)
            sb_adds(&b, i ? ",1" : "1");
        sb_add(&b, "]", 1);
        same_parse(b.buf, b.len, 0, (int)n);
        sb_reset(&b);
        sb_add(&b, "{", 1);
        for (unsigned i = 0; i < n; i++)
            sb_addf(&b, "%s\"k%u\":%u", i ? "," : "", i, i);
        sb_add(&b, "}", 1);
        same_parse(b.buf, b.len, 1, (int)n);
        sb_reset(&b);
        sb_add(&b, "\"", 1);
        for (unsigned i = 0; i < n; i++)
            sb_add(&b, i % 7 ? "x" : "\\n", i % 7 ? 1 : 2);
        sb_add(&b, "\"", 1);
        same_parse(b.buf, b.len, 0, (int)n);
    }
    /* 64 and 65 levels */
    for (int d = 63; d <= 66; d++) {
        sb_reset(&b);
        for (int i = 0; i < d; i++)
            sb_add(&b, i % 2 ? "[" : "{\"a\":", i % 2 ? 1 : 5);
        sb_adds(&b, "1");
        for (int i = d - 1; i >= 0; i--)
            sb_add(&b, i % 2 ? "]" : "}", 1);
        same_parse(b.buf, b.len, 1, 1000 + d);
    }
    sb_free(&b);
    /* random documents, whole and damaged */
    static const char junk[] = "\"\\{}[],:u0dD8e-.\xff\xc3\xed\x80 \t";
    Gen g = {.s = 0x2545F4914F6CDD1Dull};
    sb_init(&g.in);
    sb_init(&g.want);
    for (int doc = 0; doc < 6000; doc++) {
        sb_reset(&g.in);
        sb_reset(&g.want);
        gen_value(&g, 0);
        if (doc % 2) {
            for (unsigned k = 1 + below(&g, 3); k > 0; k--) {
                size_t at = below(&g, (unsigned)g.in.len);
                g.in.buf[at] = below(&g, 2) ? junk[below(&g, sizeof junk - 1)] : (char)rnd(&g);
            }
            if (below(&g, 4) == 0)
                g.in.len = below(&g, (unsigned)g.in.len + 1);
        }
        same_parse(g.in.buf, g.in.len, doc % 4 < 2, doc);
    }
    sb_free(&g.in);
    sb_free(&g.want);
}

/* validate_fast_matches_yajl: json_validate's own checker and yajl with
 * the UTF-8 scan agree on every text (and word refusals alike). */
static void same_validate(const char *in, size_t n, int doc)
{
    char ea[200] = "", eb[200] = "";
    json_validate_slow(0);
    int ra = json_validate(in, n, ea, sizeof ea);
    json_validate_slow(1);
    int rb = json_validate(in, n, eb, sizeof eb);
    json_validate_slow(0);
    if (ra != rb || strcmp(ea, eb))
        t_fail(__FILE__, __LINE__, "doc %d: fast %d [%s], yajl %d [%s]: %.*s", doc, ra, ea, rb, eb,
               (int)(n < 300 ? n : 300), in);
}

static void validate_fast_matches_yajl(void)
{
    static const char *const edges[] = {
        "", " ", "{}", "[]", "\"\\ud800\"", "\"\\udc00x\"", "\"\\u00zz\"", "01", "-", "1.", "1e", "-0",
        "\f1", "1\v", " 1 ", "[1,]", "{\"a\"}", "\"\xed\xa0\x80\"", "\"\xc3\"", "\"\t\"", "tru", "nulll",
        "/*c*/1", "[1]//", "\xef\xbb\xbf" "1", "{\"a\":1,\"a\":2}", "1 2", "\"\\/\"", "\"\\x\"",
        /* lone surrogates: yajl takes them, the surrogate scan refuses them */
        "\"\\ud800\\u0041\"", "\"\\ud83d\\ud83d\"", "\"ab\\ud83d\"", "{\"\\ude00\":1}",
        "[\"x\\udc00\"]", "{\"a\":\"\\\\\\ud83d\"}", "\"\\ud800\\u\"", "\"\\ud800\\", "\"\\ud800",
        "\"\\ud83d\\ude00\"", "\"\\\\ud800\"", "\"\\uDBFF\\uDFFF\"", "\"\\ud800\\udbff\"",
        "\"\\udfff\\ud800\"", "{\"\\ud800\":1}", "{\"a\":{\"b\":1,\"b\":2}}",
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        same_validate(edges[i], strlen(edges[i]), -(int)i - 1);
    Strbuf b;
    sb_init(&b);
    for (int d = 1; d < 400; d += d < 60 ? 1 : 37) {
        sb_reset(&b);
        for (int i = 0; i < d; i++)
            sb_adds(&b, i % 2 ? "[" : "{\"k\":");
        sb_adds(&b, "0");
        for (int i = d - 1; i >= 0; i--)
            sb_adds(&b, i % 2 ? "]" : "}");
        same_validate(b.buf, b.len, 2000 + d);
    }
    sb_free(&b);
    static const char junk[] = "\"\\{}[],:u0dD8e-.\xff\xc3\xed\x80 \t\f";
    Gen g = {.s = 0x5851F42D4C957F2Dull};
    sb_init(&g.in);
    sb_init(&g.want);
    for (int doc = 0; doc < 6000; doc++) {
        sb_reset(&g.in);
        sb_reset(&g.want);
        gen_value(&g, 0);
        if (doc % 2) {
            for (unsigned k = 1 + below(&g, 3); k > 0; k--) {
                size_t at = below(&g, (unsigned)g.in.len);
                g.in.buf[at] = below(&g, 2) ? junk[below(&g, sizeof junk - 1)] : (char)rnd(&g);
            }
            if (below(&g, 4) == 0)
                g.in.len = below(&g, (unsigned)g.in.len + 1);
        }
        same_validate(g.in.buf, g.in.len, doc);
    }
    sb_free(&g.in);
    sb_free(&g.want);
}

static const TCase cases[] = {
    T_CASE(random_round_trips),
    T_CASE(random_damage),
    T_CASE(fast_path_matches_yajl),
    T_CASE(validate_fast_matches_yajl),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "row_random", cases);
}
