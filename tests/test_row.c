/* test_row.c: engine/data/row.c and row_view.c: JSON -> msgpack -> JSON round trips of hostile
 * values, compared byte for byte with the canonical form (row.c's header
 * comment: no whitespace, members in input order, only the mandatory
 * escapes plus DEL, raw UTF-8, numbers as written), parse errors with their
 * offsets, views, fields and merges. The seeded random round trips and the
 * fast parsers against yajl are in test_row_random.c. */
#include "t.h"
#include "t_row.h"
#include "json.h"
#include "pl.h"
#include "row.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

static void rt_check(const char *file, int line, const char *in, size_t n, const char *want,
                     size_t wn)
{
    Strbuf out, again;
    char err[200] = "";
    int rc;

    sb_init(&out);
    sb_init(&again);
    rc = tr_rt(in, n, &out, err, sizeof err);
    if (rc)
        t_fail(file, line, "round trip of %.*s: %s (%s)", (int)n, in, pl_strerror(rc), err);
    if (out.len != wn || memcmp(out.buf, want, wn) != 0)
        t_fail(file, line, "round trip of %.*s\n  gave %.*s (%zu bytes)\n  want %.*s (%zu bytes)",
               (int)n, in, (int)out.len, out.buf, out.len, (int)wn, want, wn);
    /* The canonical form is a fixed point. */
    rc = tr_rt(want, wn, &again, err, sizeof err);
    if (rc || again.len != wn || memcmp(again.buf, want, wn) != 0)
        t_fail(file, line, "canonical %.*s is not a fixed point: %.*s", (int)wn, want,
               (int)again.len, again.buf);
    sb_free(&out);
    sb_free(&again);
}

/* RT(in, want): string literals (they may hold NULs). */
#define RT(in, want) rt_check(__FILE__, __LINE__, in, sizeof(in) - 1, want, sizeof(want) - 1)
#define RT_SAME(in) RT(in, in)

/* pack converts json (must be valid) to msgpack in sb (reset first). */
static void pack(msgpack_sbuffer *sb, const char *json)
{
    char err[200];
    sb->size = 0;
    int rc = row_from_json(json, strlen(json), sb, err, sizeof err);
    if (rc)
        t_fail(__FILE__, __LINE__, "row_from_json(%s): %s", json, err);
}

/* bad_check: in must fail with PL_EINVAL and an error containing want. */
static void bad_check(const char *file, int line, const char *in, size_t n, const char *want)
{
    msgpack_sbuffer sb;
    char err[200] = "";
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, "x", 1); /* the output must stay as it was */
    rc = row_from_json(in, n, &sb, err, sizeof err);
    if (rc != PL_EINVAL)
        t_fail(file, line, "row_from_json(%.*s) returned %d, wanted PL_EINVAL", (int)n, in, rc);
    if (!strstr(err, want))
        t_fail(file, line, "row_from_json(%.*s): error '%s' lacks '%s'", (int)n, in, err, want);
    if (sb.size != 1)
        t_fail(file, line, "row_from_json(%.*s) wrote output on failure", (int)n, in);
    msgpack_sbuffer_destroy(&sb);
}

#define BAD(in, want) bad_check(__FILE__, __LINE__, in, sizeof(in) - 1, want)

/* ------------------------------------------------------------ round trips */

static void strings_round_trip(void)
{
    RT_SAME("\"\"");
    RT_SAME("\"plain text\"");
    RT_SAME("\"é中文😀\"");
    RT("\"\\u00e9\\u4e2d\\u6587\\ud83d\\ude00\"", "\"é中文😀\"");
    RT("\"\\u00E9\\uD83D\\uDE00\"", "\"é😀\"");
    RT("\"a \\\"quoted\\\", comma\"", "\"a \\\"quoted\\\", comma\"");
    RT("\"line1\\nline2\\r\\n\\ttab\"", "\"line1\\nline2\\r\\n\\ttab\"");
    RT("\"back\\\\slash \\\\\\\" \\/ /\"", "\"back\\\\slash \\\\\\\" / /\"");
    RT("\"\\u0001\\u001F\\u0008\\u000c\\u000a\\u000D\\u0009\\u007F\x7f\"",
       "\"\\u0001\\u001f\\b\\f\\n\\r\\t\\u007f\\u007f\"");
    RT_SAME("\"nul\\u0000inside\\u0000\"");
    RT("\"\\u0041\\u00a0\\u2028\\ufeff\\uffff\"", "\"A\xc2\xa0\xe2\x80\xa8\xef\xbb\xbf\xef\xbf\xbf\"");
    RT("\"\\udbff\\udfff\"", "\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF */
    RT_SAME("{\"k\\\"\\\\\\n\\u0000é\":\"v\",\"\":\"\"}");
}

static void escapes_give_the_same_bytes(void)
{
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);

    pack(&a, "\"😀é\"");
    pack(&b, "\"\\ud83d\\ude00\\u00e9\"");
    T_EQ(a.size, b.size);
    T_CHECK(memcmp(a.data, b.data, a.size) == 0);
    T_CHECK(a.size == 7 && (unsigned char)a.data[0] == 0xa6); /* fixstr of 6 bytes */

    pack(&a, "\"a\\u0000b\"");
    T_CHECK(a.size == 4 && memcmp(a.data, "\xa3" "a\0b", 4) == 0);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void scalars_round_trip(void)
{
    RT_SAME("null");
    RT_SAME("true");
    RT_SAME("false");
    RT(" \t\r\n{ \"n\" : null , \"e\" : \"\" , \"t\" : true , \"f\" : false } \n",
       "{\"n\":null,\"e\":\"\",\"t\":true,\"f\":false}");
    RT_SAME("{\"a\":1,\"a\":2,\"a\":null}"); /* duplicate names kept in order */
}

static void numbers_round_trip(void)
{
    static const char *const same[] = {
        "0", "-1", "1", "127", "128", "-32", "-33", "255", "65536",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808",
        "18446744073709551615", "18446744073709551616", "-9223372036854775809",
        "12345678901234567890123", "-12345678901234567890123",
        "0.1", "1e400", "-1e400", "-0.0", "-0", "1.5e-7", "1E400", "0.1000", "1.0",
        "-1.5E+10", "0e0", "1e-400", "3.141592653589793238462643383279",
        "100000000000000000000000000000000000000000000000000000000000000000000",
    };
    Strbuf out;
    char err[200];

    sb_init(&out);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        T_OK(tr_rt(same[i], strlen(same[i]), &out, err, sizeof err));
        if (strcmp(out.buf, same[i]) != 0)
            t_fail(__FILE__, __LINE__, "number %s came back as %s", same[i], out.buf);
    }
    sb_free(&out);
    RT_SAME("[0,-1,9223372036854775807,-9223372036854775808,18446744073709551615,"
            "18446744073709551616,12345678901234567890123,0.1,1e400,-0.0,1.5e-7]");
}

/* number_types: which numbers are msgpack ints and which keep their text. */
static void number_types(void)
{
    msgpack_sbuffer sb;
    RowView v;

    msgpack_sbuffer_init(&sb);
    pack(&sb, "[0,-1,-9223372036854775808,18446744073709551615,18446744073709551616,-0,"
              "-9223372036854775809,0.1,1e400]");
    T_OK(row_view(&v, sb.data, sb.size));
    T_EQ(v.root.type, MSGPACK_OBJECT_ARRAY);
    T_EQ(v.root.via.array.size, 9);
    const msgpack_object *a = v.root.via.array.ptr;
    T_CHECK(a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[0].via.u64 == 0);
    T_CHECK(a[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER && a[1].via.i64 == -1);
    T_CHECK(a[2].type == MSGPACK_OBJECT_NEGATIVE_INTEGER && a[2].via.i64 == INT64_MIN);
    T_CHECK(a[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[3].via.u64 == UINT64_MAX);
    static const char *const text[] = {"18446744073709551616", "-0", "-9223372036854775809",
                                       "0.1", "1e400"};
    for (int i = 0; i < 5; i++) {
        const msgpack_object *o = &a[4 + i];
        T_EQ(o->type, MSGPACK_OBJECT_EXT);
        T_EQ(o->via.ext.type, ROW_EXT_NUMBER);
        T_CHECK(o->via.ext.size == strlen(text[i]) &&
                memcmp(o->via.ext.ptr, text[i], o->via.ext.size) == 0);
    }
    row_view_free(&v);

    /* The ints are packed compactly: -1 is one byte, 2^64-1 is nine. */
    pack(&sb, "-1");
    T_CHECK(sb.size == 1 && (unsigned char)sb.data[0] == 0xff);
    pack(&sb, "18446744073709551615");
    T_CHECK(sb.size == 9 && (unsigned char)sb.data[0] == 0xcf);
    pack(&sb, "-9223372036854775808");
    T_CHECK(sb.size == 9 && (unsigned char)sb.data[0] == 0xd3);
    msgpack_sbuffer_destroy(&sb);
}

static void nesting_round_trip(void)
{
    RT_SAME("{}");
    RT_SAME("[]");
    RT_SAME("[[],{},[[]],{\"a\":{}}]");
    RT("{ \"a\" : { \"b\" : [ 1 , [ \"x\" , { } ] , { \"c\" : [ ] } ] } , \"d\" : [ [ [ ] ] ] }",
       "{\"a\":{\"b\":[1,[\"x\",{}],{\"c\":[]}]},\"d\":[[[]]]}");
}

/* -------------------------------------------------------------- errors */

static void invalid_json(void)
{
    BAD("{\"a\":1", "invalid JSON at byte 6");
    BAD("{\"a\":1} x", "invalid JSON at byte 8");
    BAD("{}{}", "invalid JSON at byte 2");
    BAD("{'a':1}", "invalid JSON at byte 1");
    BAD("[1,]", "invalid JSON at byte 3");
    BAD("[01]", "invalid JSON at byte ");
    BAD("{\"a\" 1}", "invalid JSON at byte 5");
    BAD("\"abc", "invalid JSON at byte 4");
    BAD("\"tab\there\"", "invalid JSON at byte 4");
    BAD("[1.]", "invalid JSON at byte ");
    BAD("[\"\\x\"]", "invalid JSON at byte ");
    BAD("nul", "invalid JSON at byte ");
    BAD("NaN", "invalid JSON at byte 0");
    BAD("// c\n1", "invalid JSON at byte 0");
    BAD("", "invalid JSON");
    BAD("   ", "invalid JSON");
}

static void invalid_utf8(void)
{
    BAD("\"a\xff\"", "invalid UTF-8 at byte 2");
    BAD("\"\xc0\xaf\"", "invalid UTF-8 at byte 1");           /* overlong */
    BAD("\"ab\xed\xa0\x80\"", "invalid UTF-8 at byte 3");     /* encoded surrogate */
    BAD("\"\xe4\xb8\"", "invalid UTF-8 at byte 1");           /* truncated */
    BAD("\"\xf4\x90\x80\x80\"", "invalid UTF-8 at byte 1");   /* past U+10FFFF */
    BAD("{\"k\xfe\":1}", "invalid UTF-8 at byte 3");          /* in a key */
    BAD("[\"é\",\"\x80\"]", "invalid UTF-8 at byte 7");
    BAD("[1,\xff]", "at byte 3");                             /* outside strings */
    /* Lone surrogate escapes have no UTF-8 form: refused, not replaced. */
    BAD("\"\\ud800\"", "invalid JSON at byte 1: lone UTF-16 surrogate");
    BAD("[\"x\\udc00\"]", "invalid JSON at byte 3: lone UTF-16 surrogate");
    BAD("\"\\ud83d\\u0041\"", "invalid JSON at byte 1: lone UTF-16 surrogate");
    BAD("\"\\ud83d\\ud83d\"", "invalid JSON at byte 1: lone UTF-16 surrogate");
    BAD("\"ab\\ud83d\"", "invalid JSON at byte 3: lone UTF-16 surrogate");
    BAD("{\"\\ude00\":1}", "invalid JSON at byte 2: lone UTF-16 surrogate");
    /* ... and json_validate, the listener's and qctl put's check, refuses
     * them too, at the same byte (a body it takes must decode). */
    static const struct { const char *in, *want; } lone[] = {
        {"\"\\ud800\"", "invalid JSON at byte 1: lone UTF-16 surrogate escape: a high"},
        {"[\"x\\udc00\"]", "invalid JSON at byte 3: lone UTF-16 surrogate escape: a low"},
        {"\"\\ud83d\\u0041\"", "invalid JSON at byte 1: lone UTF-16 surrogate"},
        {"\"\\ud83d\\ud83d\"", "invalid JSON at byte 1: lone UTF-16 surrogate"},
        {"{\"a\":\"\\\\\\ud83d\"}", "invalid JSON at byte 8: lone UTF-16 surrogate"},
        {"{\"\\ude00\":1}", "invalid JSON at byte 2: lone UTF-16 surrogate"},
    };
    for (size_t i = 0; i < sizeof lone / sizeof *lone; i++) {
        char err[200] = "";
        T_ERR(json_validate(lone[i].in, strlen(lone[i].in), err, sizeof err), PL_EINVAL);
        if (!strstr(err, lone[i].want))
            t_fail(__FILE__, __LINE__, "json_validate(%s): '%s' lacks '%s'", lone[i].in, err,
                   lone[i].want);
    }
    static const char pairs[] = "[\"\\ud83d\\ude00\",\"\\\\ud800\",\"\\uDBFF\\uDFFF\"]";
    T_OK(json_validate(pairs, sizeof pairs - 1, NULL, 0));
}

static void nested(Strbuf *b, int depth, int objects)
{
    sb_reset(b);
    for (int i = 0; i < depth; i++)
        sb_adds(b, objects ? "{\"a\":" : "[");
    sb_adds(b, "1");
    for (int i = 0; i < depth; i++)
        sb_adds(b, objects ? "}" : "]");
}

static void depth_limit(void)
{
    Strbuf in, out;
    msgpack_sbuffer sb;
    char err[200] = "";
    RowView v;

    sb_init(&in);
    sb_init(&out);
    msgpack_sbuffer_init(&sb);
    for (int objects = 0; objects < 2; objects++) {
        nested(&in, 64, objects);
        T_OK(tr_rt(in.buf, in.len, &out, err, sizeof err));
        T_CHECK(out.len == in.len && memcmp(out.buf, in.buf, in.len) == 0);
        /* Views go as deep (msgpack_unpack itself stops at 32). */
        sb.size = 0;
        T_OK(row_from_json(in.buf, in.len, &sb, err, sizeof err));
        T_OK(row_view(&v, sb.data, sb.size));
        row_view_free(&v);

        nested(&in, 65, objects);
        T_ERR(row_from_json(in.buf, in.len, &sb, err, sizeof err), PL_EINVAL);
        char want[80];
        snprintf(want, sizeof want, "invalid JSON at byte %d: nesting deeper than 64",
                 objects ? 64 * 5 : 64);
        if (!strstr(err, want))
            t_fail(__FILE__, __LINE__, "depth 65: '%s'", err);
    }
    /* msgpack deeper than 64 (not from JSON) is malformed for us. */
    msgpack_packer pk;
    sb.size = 0;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (int i = 0; i < 65; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    T_ERR(row_to_json(sb.data, sb.size, &out), PL_EFORMAT);
    T_ERR(row_view(&v, sb.data, sb.size), PL_EFORMAT);
    row_view_free(&v); /* a no-op after a failure */
    sb_free(&in);
    sb_free(&out);
    msgpack_sbuffer_destroy(&sb);
}

static void object_required(void)
{
    static const char *const no[] = {"[]", "[{}]", "1", "\"s\"", "null", "true", "1e400"};
    static const char *const what[] = {"an array", "an array", "a number", "a string", "null",
                                       "a boolean", "a number"};
    msgpack_sbuffer sb;
    char err[200];

    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        T_ERR(row_from_json_object(no[i], strlen(no[i]), &sb, err, sizeof err), PL_EINVAL);
        T_CHECK(strstr(err, "a row is a JSON object") && strstr(err, what[i]));
        T_EQ(sb.size, 0);
        T_OK(row_from_json(no[i], strlen(no[i]), &sb, err, sizeof err));
        sb.size = 0;
    }
    T_OK(row_from_json_object(" {} ", 4, &sb, err, sizeof err));
    T_CHECK(sb.size == 1 && (unsigned char)sb.data[0] == 0x80);
    T_ERR(row_from_json_object("{", 1, &sb, err, sizeof err), PL_EINVAL);
    T_CHECK(strstr(err, "invalid JSON at byte 1") != NULL);
    /* NULL err is fine. */
    T_ERR(row_from_json_object("[]", 2, &sb, NULL, 0), PL_EINVAL);
    T_ERR(row_from_json("\"\\ud800\"", 8, &sb, NULL, 0), PL_EINVAL);
    msgpack_sbuffer_destroy(&sb);
}

/* --------------------------------------------------- fields and merging */

static void fields(void)
{
    msgpack_sbuffer sb;
    RowView v;
    const msgpack_object *f;

    msgpack_sbuffer_init(&sb);
    pack(&sb, "{\"a\":{\"b\":{\"c\":1},\"x\":\"ax\"},\"a.b\":2,\"n\":null,\"s\":\"\","
              "\"d.e\":{\"f\":3},\"arr\":[1]}");
    T_OK(row_view(&v, sb.data, sb.size));
    /* Views point into the input bytes. */
    f = row_field(&v.root, "s");
    T_CHECK(f && f->type == MSGPACK_OBJECT_STR && f->via.str.size == 0);
    f = row_field(&v.root, "a.x");
    T_CHECK(f && f->type == MSGPACK_OBJECT_STR && f->via.str.ptr > sb.data &&
            f->via.str.ptr < sb.data + sb.size && memcmp(f->via.str.ptr, "ax", 2) == 0);
    /* A member literally named "a.b" wins over b inside a. */
    f = row_field(&v.root, "a.b");
    T_CHECK(f && f->type == MSGPACK_OBJECT_POSITIVE_INTEGER && f->via.u64 == 2);
    f = row_field(&v.root, "a.b.c");
    T_CHECK(f && f->type == MSGPACK_OBJECT_POSITIVE_INTEGER && f->via.u64 == 1);
    f = row_field(&v.root, "d.e.f");
    T_CHECK(f && f->via.u64 == 3);
    f = row_field(&v.root, "n");
    T_CHECK(f && f->type == MSGPACK_OBJECT_NIL); /* present, null */
    T_CHECK(row_field(&v.root, "missing") == NULL);
    T_CHECK(row_field(&v.root, "a.missing") == NULL);
    T_CHECK(row_field(&v.root, "n.x") == NULL);   /* through a non-map */
    T_CHECK(row_field(&v.root, "arr.0") == NULL); /* arrays are not walked */
    T_CHECK(row_field(&v.root, "a.") == NULL);
    T_CHECK(row_field(&v.root, "") == NULL);
    T_CHECK(row_field(&v.root.via.map.ptr[0].val, "b.c") != NULL);
    T_CHECK(row_field(&v.root.via.map.ptr[5].val, "x") == NULL); /* not a map */
    T_CHECK(row_field(NULL, "x") == NULL);
    row_view_free(&v);
    row_view_free(&v); /* twice is fine */
    row_view_free(NULL);
    msgpack_sbuffer_destroy(&sb);
}

static void field_text(void)
{
    static const struct {
        const char *name, *text;
    } want[] = {
        {"s", "a \"b\"\n/é"}, {"e", ""}, {"i", "42"}, {"neg", "-7"},
        {"min", "-9223372036854775808"}, {"max", "18446744073709551615"},
        {"big", "12345678901234567890123"}, {"dec", "0.1000"}, {"t", "true"},
        {"f", "false"}, {"n", "null"}, {"in.deep", "x"}, {"f64", "0.1"}, {"f32", "1.5"},
        {"nan", "null"},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    RowView v;
    Strbuf t;

    msgpack_sbuffer_init(&sb);
    pack(&sb, "{\"s\":\"a \\\"b\\\"\\n\\/é\",\"e\":\"\",\"i\":42,\"neg\":-7,"
              "\"min\":-9223372036854775808,\"max\":18446744073709551615,"
              "\"big\":12345678901234567890123,\"dec\":0.1000,\"t\":true,\"f\":false,"
              "\"n\":null,\"in\":{\"deep\":\"x\"},\"arr\":[],\"obj\":{}}");
    /* Append floats and a bin by hand (JSON never makes them), then give
     * the map its new size: 14 + 4 = 18 members take a map16 header. */
    T_EQ((unsigned char)sb.data[0], 0x8e);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, "f64", 3);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_str_with_body(&pk, "f32", 3);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_str_with_body(&pk, "nan", 3);
    msgpack_pack_double(&pk, NAN);
    msgpack_pack_str_with_body(&pk, "bin", 3);
    msgpack_pack_bin_with_body(&pk, "ab", 2);
    {
        msgpack_sbuffer fixed;
        msgpack_sbuffer_init(&fixed);
        msgpack_sbuffer_write(&fixed, "\xde\x00\x12", 3);
        msgpack_sbuffer_write(&fixed, sb.data + 1, sb.size - 1);
        msgpack_sbuffer_destroy(&sb);
        sb = fixed;
    }
    T_OK(row_view(&v, sb.data, sb.size));
    T_EQ(v.root.via.map.size, 18);
    sb_init(&t);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        sb_reset(&t);
        T_OK(row_field_text(&v.root, want[i].name, &t));
        if (strcmp(t.buf, want[i].text) != 0)
            t_fail(__FILE__, __LINE__, "field %s: '%s', wanted '%s'", want[i].name, t.buf,
                   want[i].text);
    }
    /* It appends. */
    sb_reset(&t);
    T_OK(row_field_text(&v.root, "i", &t));
    T_OK(row_field_text(&v.root, "neg", &t));
    T_CHECK(strcmp(t.buf, "42-7") == 0);
    sb_reset(&t);
    T_ERR(row_field_text(&v.root, "missing", &t), PL_EINVAL);
    T_ERR(row_field_text(&v.root, "arr", &t), PL_EINVAL);
    T_ERR(row_field_text(&v.root, "obj", &t), PL_EINVAL);
    T_ERR(row_field_text(&v.root, "in", &t), PL_EINVAL);
    T_ERR(row_field_text(&v.root, "bin", &t), PL_EINVAL);
    T_EQ(t.len, 0);
    row_view_free(&v);
    sb_free(&t);
    msgpack_sbuffer_destroy(&sb);
}

/* merged packs row_merge(base, src) and returns its JSON in out. */
static int merged(const char *base, const char *src, const char *const *from,
                  const char *const *to, size_t n, Strbuf *out, size_t *missing)
{
    msgpack_sbuffer a, b, m;
    RowView va, vb;
    int rc;

    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&m);
    pack(&a, base);
    pack(&b, src);
    T_OK(row_view(&va, a.data, a.size));
    T_OK(row_view(&vb, b.data, b.size));
    rc = row_merge(&va.root, &vb.root, from, to, n, &m, missing);
    sb_reset(out);
    if (rc == 0)
        T_OK(row_to_json(m.data, m.size, out));
    else
        T_EQ(m.size, 0);
    row_view_free(&va);
    row_view_free(&vb);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    msgpack_sbuffer_destroy(&m);
    return rc;
}

static void merge(void)
{
    static const char *const from[] = {"lat", "lon", "absent", "geo.q", "gone", "lat"};
    static const char *const to[] = {"lat", "geo_lon", "x", "quality", "name", "lat2"};
    Strbuf out;
    size_t missing = 99;

    sb_init(&out);
    T_OK(merged("{\"name\":\"A \\\"q\\\"\",\"lat\":null,\"n\":1}",
                "{\"lat\":51.5,\"lon\":-0.12,\"geo\":{\"q\":\"high\"},\"extra\":[1]}",
                from, to, 6, &out, &missing));
    T_CHECK(strcmp(out.buf, "{\"name\":\"A \\\"q\\\"\",\"lat\":51.5,\"n\":1,\"geo_lon\":-0.12,"
                            "\"quality\":\"high\",\"lat2\":51.5}") == 0);
    T_EQ(missing, 2); /* absent, gone: name keeps its value */

    /* Nothing to set: a copy. A later to[] naming the same field wins. */
    T_OK(merged("{\"a\":1,\"b\":[{}]}", "{}", from, to, 0, &out, &missing));
    T_CHECK(strcmp(out.buf, "{\"a\":1,\"b\":[{}]}") == 0);
    T_EQ(missing, 0);
    static const char *const f2[] = {"x", "y", "x"};
    static const char *const t2[] = {"a", "new", "new"};
    T_OK(merged("{\"a\":1}", "{\"x\":\"X\",\"y\":\"Y\"}", f2, t2, 3, &out, NULL));
    T_CHECK(strcmp(out.buf, "{\"a\":\"X\",\"new\":\"X\"}") == 0);

    /* Values keep their exact form: big numbers, NULs, unicode. */
    static const char *const f3[] = {"v"};
    static const char *const t3[] = {"w"};
    T_OK(merged("{}", "{\"v\":[12345678901234567890123,\"\\u0000é\",-0.0,{\"k\":null}]}", f3,
                t3, 1, &out, &missing));
    T_CHECK(strcmp(out.buf, "{\"w\":[12345678901234567890123,\"\\u0000é\",-0.0,{\"k\":null}]}") == 0);

    T_ERR(merged("[]", "{}", f3, t3, 1, &out, &missing), PL_EINVAL);
    T_ERR(merged("{}", "1", f3, t3, 1, &out, &missing), PL_EINVAL);
    sb_free(&out);
}

/* pack_object_copies_every_type: a view packed again gives the same bytes. */
static void pack_object_copies_every_type(void)
{
    msgpack_sbuffer a, b;
    msgpack_packer pa, pb;
    RowView v;

    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    msgpack_packer_init(&pa, &a, msgpack_sbuffer_write);
    msgpack_packer_init(&pb, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pa, 2);
    msgpack_pack_str_with_body(&pa, "all", 3);
    msgpack_pack_array(&pa, 17);
    msgpack_pack_nil(&pa);
    msgpack_pack_true(&pa);
    msgpack_pack_false(&pa);
    msgpack_pack_uint64(&pa, 0);
    msgpack_pack_uint64(&pa, 200);
    msgpack_pack_int64(&pa, -1);
    msgpack_pack_int64(&pa, -200);
    msgpack_pack_int64(&pa, INT64_MIN);
    msgpack_pack_uint64(&pa, UINT64_MAX);
    msgpack_pack_float(&pa, 1.25f);
    msgpack_pack_double(&pa, -0.1);
    msgpack_pack_str_with_body(&pa, "", 0);
    msgpack_pack_str_with_body(&pa, "a\0b", 3);
    msgpack_pack_bin_with_body(&pa, "\x00\xff", 2);
    msgpack_pack_ext_with_body(&pa, "1e400", 5, ROW_EXT_NUMBER);
    msgpack_pack_ext_with_body(&pa, "xyz", 3, -3);
    msgpack_pack_map(&pa, 0);
    msgpack_pack_int(&pa, 7); /* a non-string key */
    msgpack_pack_array(&pa, 0);
    T_OK(row_view(&v, a.data, a.size));
    row_pack_object(&pb, &v.root);
    T_EQ(b.size, a.size);
    T_CHECK(memcmp(a.data, b.data, a.size) == 0);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

/* --------------------------------------- msgpack that JSON never makes */

static Strbuf to_json(msgpack_sbuffer *sb)
{
    Strbuf b;
    sb_init(&b);
    T_OK(row_to_json(sb->data, sb->size, &b));
    return b;
}

static void other_msgpack_to_json(void)
{
    static const struct {
        double d;
        const char *text;
    } dbl[] = {
        {0.1, "0.1"}, {1.0, "1"}, {-0.0, "-0"}, {1e300, "1e+300"}, {5e-324, "4.94065645841247e-324"},
        {0.30000000000000004, "0.30000000000000004"}, {123456.789, "123456.789"},
        {INFINITY, "null"}, {-INFINITY, "null"}, {NAN, "null"},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    Strbuf b;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < sizeof dbl / sizeof dbl[0]; i++) {
        sb.size = 0;
        msgpack_pack_double(&pk, dbl[i].d);
        b = to_json(&sb);
        if (strcmp(b.buf, dbl[i].text) != 0)
            t_fail(__FILE__, __LINE__, "double %d: %s, wanted %s", (int)i, b.buf, dbl[i].text);
        if (isfinite(dbl[i].d))
            T_CHECK(strtod(b.buf, NULL) == dbl[i].d);
        sb_free(&b);
    }
    sb.size = 0;
    msgpack_pack_array(&pk, 3);
    msgpack_pack_float(&pk, 0.1f);
    msgpack_pack_float(&pk, 16777216.0f);
    msgpack_pack_float(&pk, NAN);
    b = to_json(&sb);
    T_CHECK(strcmp(b.buf, "[0.1,16777216,null]") == 0);
    sb_free(&b);

    /* bin: base64; other ext types: null; non-string keys: their text. */
    sb.size = 0;
    msgpack_pack_array(&pk, 7);
    msgpack_pack_bin_with_body(&pk, "", 0);
    msgpack_pack_bin_with_body(&pk, "f", 1);
    msgpack_pack_bin_with_body(&pk, "fo", 2);
    msgpack_pack_bin_with_body(&pk, "foo", 3);
    msgpack_pack_bin_with_body(&pk, "\xff\xfe\x00\x01", 4);
    msgpack_pack_ext_with_body(&pk, "abc", 3, 5);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_int(&pk, -5);
    msgpack_pack_true(&pk);
    msgpack_pack_nil(&pk);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "q\"", 2);
    msgpack_pack_int(&pk, 2);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_int(&pk, 3);
    b = to_json(&sb);
    if (strcmp(b.buf, "[\"\",\"Zg==\",\"Zm8=\",\"Zm9v\",\"//4AAQ==\",null,"
                      "{\"-5\":true,\"null\":1,\"q\\\"\":2,\"[\\\"x\\\"]\":3}]") != 0)
        t_fail(__FILE__, __LINE__, "got %s", b.buf);
    sb_free(&b);

    /* str8/16/32 and the wide int forms decode as the narrow ones do. */
    sb.size = 0;
    msgpack_sbuffer_write(&sb, "\x94\xd9\x01x\xda\x00\x01y\xdb\x00\x00\x00\x01z\xd0\x05", 16);
    b = to_json(&sb);
    T_CHECK(strcmp(b.buf, "[\"x\",\"y\",\"z\",5]") == 0);
    sb_free(&b);
    msgpack_sbuffer_destroy(&sb);
}

static void malformed_msgpack(void)
{
    static const struct {
        const char *p;
        size_t n;
    } bad[] = {
        {"", 0}, {"\xc1", 1}, {"\x92\x01", 2}, {"\xa5" "abc", 4}, {"\xcd\x01", 2},
        {"\x01\x02", 2},                                 /* bytes after the value */
        {"\xdd\xff\xff\xff\xff\x01", 6},                 /* a count past the end */
        {"\xdf\x00\x00\x00\x02\x01\x02\x03", 8},
        {"\xd4\x01", 2}, {"\xc7\x05\x01" "12", 5},
        {"\xd5\x01" "1x", 4}, {"\xc7\x02\x01" "1.", 5}, /* ext number text not a number */
        {"\xc7\x00\x01", 3},
    };
    Strbuf b;
    RowView v;

    sb_init(&b);
    sb_adds(&b, "kept");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = row_to_json(bad[i].p, bad[i].n, &b);
        if (rc != PL_EFORMAT)
            t_fail(__FILE__, __LINE__, "case %zu: %d", i, rc);
        T_CHECK(strcmp(b.buf, "kept") == 0); /* a failed append leaves b as it was */
    }
    /* A view does not check ext texts; the rest it refuses too. */
    for (size_t i = 0; i < 10; i++)
        T_ERR(row_view(&v, bad[i].p, bad[i].n), PL_EFORMAT);
    T_OK(row_view(&v, "\xd5\x01" "1x", 4));
    row_view_free(&v);
    sb_free(&b);
}

/* ---------------------------------------------------------------- Strbuf */

/* json_string: sb_add_json_string escapes what JSON needs and replaces
 * bytes that are not UTF-8. */
static void json_string(void)
{
    Strbuf b = SB_INIT;

    sb_add_json_string(&b, "ok\xff\xc3\xa9\xed\xa0\x80\x7f\x1b", 10);
    T_CHECK(strcmp(b.buf, "\"ok\\ufffd\xc3\xa9\\ufffd\\ufffd\\ufffd\\u007f\\u001b\"") == 0);
    sb_free(&b);
}

/* job_lines: the NDJSON job form that qctl import and the bulk endpoint
 * read (json_job_read): members, defaults, and the first thing wrong. */
static void job_lines(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *why;
    } bad[] = {
        {"[1,2]", JSON_JOB_NOT_OBJECT, "not a JSON object"},
        {"{\"bdy\":1}", JSON_JOB_NO_BODY, "no \"body\""},
        {"{\"body\":1,\"key\":\"\"}", JSON_JOB_KEY, "\"key\" is 0 bytes; use 1 to 200, or null"},
        {"{\"body\":1,\"key\":7}", JSON_JOB_KEY, "\"key\" must be a string or null"},
        {"{\"body\":1,\"priority\":-1}", JSON_JOB_PRIORITY,
         "\"priority\" must be a whole number from 0 to 4294967295"},
        {"{\"body\":1,\"priority\":4294967296}", JSON_JOB_PRIORITY, "\"priority\" must be"},
        {"{\"body\":1,\"priority\":1e3}", JSON_JOB_PRIORITY, "\"priority\" must be"},
        {"{\"body\":1,\"priority\":\"5\"}", JSON_JOB_PRIORITY, "\"priority\" must be"},
        {"{\"body\":1,\"priority\":123456789012345678901234567}", JSON_JOB_PRIORITY,
         "\"priority\" must be"},
        /* the first wrong member, before a missing body */
        {"{\"key\":\"k\",\"priority\":0.5}", JSON_JOB_PRIORITY, "\"priority\" must be"},
        {"{\"key\":false,\"priority\":0.5}", JSON_JOB_KEY, "\"key\" must be"},
    };
    JsonJob j;
    char why[160];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        T_OK(json_validate(bad[i].in, strlen(bad[i].in), why, sizeof why));
        T_EQ(json_job_read(bad[i].in, strlen(bad[i].in), &j, why, sizeof why), bad[i].rc);
        T_CHECK(strncmp(why, bad[i].why, strlen(bad[i].why)) == 0);
        T_CHECK(j.key == NULL);
    }
    const char *in = "{\"x\":[1],\"body\": {\"a\" : 1} ,\"key\":\"k\\u0000\"}";
    T_OK(json_job_read(in, strlen(in), &j, why, sizeof why));
    T_CHECK(j.body.n == strlen("{\"a\" : 1}") && memcmp(j.body.p, "{\"a\" : 1}", j.body.n) == 0);
    T_CHECK(!j.has_pri && j.keylen == 2 && memcmp(j.key, "k\0", 2) == 0);
    free(j.key);
    in = "{\"priority\":7,\"key\":\"a\",\"body\":2,\"key\":null,\"priority\":4294967295}";
    T_OK(json_job_read(in, strlen(in), &j, why, sizeof why));
    T_CHECK(j.has_pri && j.pri == 4294967295u && j.key == NULL && j.keylen == 0);
    T_CHECK(j.body.n == 1 && j.body.p[0] == '2');
}

static const TCase cases[] = {
    T_CASE(strings_round_trip),
    T_CASE(escapes_give_the_same_bytes),
    T_CASE(scalars_round_trip),
    T_CASE(numbers_round_trip),
    T_CASE(number_types),
    T_CASE(nesting_round_trip),
    T_CASE(invalid_json),
    T_CASE(invalid_utf8),
    T_CASE(depth_limit),
    T_CASE(object_required),
    T_CASE(fields),
    T_CASE(field_text),
    T_CASE(merge),
    T_CASE(pack_object_copies_every_type),
    T_CASE(other_msgpack_to_json),
    T_CASE(malformed_msgpack),
    T_CASE(json_string),
    T_CASE(job_lines),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "row", cases);
}
