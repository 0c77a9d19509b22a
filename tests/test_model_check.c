/* test_model_check.c: engine/data/model_check.c: validation of every rule
 * and type (rows built from JSON), drift policies, soft deletes, message
 * overrides, one field checked alone, and row keys. */
#include "t.h"
#include "t_model.h"
#include "pl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- validate */

static const char types_yaml[] =
    "models:\n"
    "  t:\n"
    "    properties:\n"
    "      id: {type: serial, key: true}\n"
    "      age: {type: integer, min: 0, max: 150}\n"
    "      big: bigint\n"
    "      price: {type: decimal, precision: 5, scale: 2, min: -100}\n"
    "      amount: decimal\n"
    "      ok: boolean\n"
    "      name: {type: string, length: [2, 5]}\n"
    "      note: text\n"
    "      short: string\n"
    "      site: {type: string, format: url}\n"
    "      mail: {type: text, format: email}\n"
    "      code: {type: string, format: regex, regex: \"^[A-Z]{2}[0-9]+$\"}\n"
    "      at: datetime\n"
    "      day: date\n"
    "      doc: json\n"
    "      req: {type: string, required: true, default: zz}\n";

static void integers_are_checked_never_coerced(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    V_OK(m, "{\"id\":1,\"age\":12}", NULL);
    V_BADN(m, "{\"id\":1,\"age\":\"12abc\"}", 1,
           "{\"field\":\"age\",\"rule\":\"type\",\"message\":\"age must be an integer (got the string \\\"12abc\\\")\"}");
    V_BAD(m, "{\"id\":1,\"age\":\"12\"}", "age must be an integer (got the string \\\"12\\\")");
    V_BAD(m, "{\"id\":1,\"age\":1.5}", "age must be an integer (got 1.5)");
    V_BAD(m, "{\"id\":1,\"age\":1e2}", "age must be an integer (got 1e2)");
    V_BAD(m, "{\"id\":1,\"age\":true}", "age must be an integer (got true)");
    V_BAD(m, "{\"id\":1,\"age\":[1]}", "age must be an integer (got a list)");
    V_BAD(m, "{\"id\":1,\"age\":-1}", "\"rule\":\"min\",\"message\":\"age must be at least 0\"");
    V_BAD(m, "{\"id\":1,\"age\":151}", "\"rule\":\"max\",\"message\":\"age must be at most 150\"");
    V_OK(m, "{\"id\":1,\"age\":150}", NULL);
    /* integer is int32; bigint and serial int64; bigger ones are not coerced */
    V_BAD(m, "{\"id\":1,\"age\":2147483648}", "age must be an integer from -2147483648 to 2147483647");
    V_OK(m, "{\"id\":1,\"big\":9223372036854775807}", NULL);
    V_OK(m, "{\"id\":1,\"big\":-9223372036854775808}", NULL);
    V_BAD(m, "{\"id\":1,\"big\":9223372036854775808}", "big must be an integer from -9223372036854775808 to 9223372036854775807 (got 9223372036854775808)");
    V_BAD(m, "{\"id\":1,\"big\":-9223372036854775809}", "(got -9223372036854775809)");
    V_BAD(m, "{\"id\":123456789012345678901234567890}", "id must be an integer from");
    V_BAD(m, "{\"id\":\"7\"}", "id must be an integer (got the string \\\"7\\\")");
    /* -0 arrives as a number ext; it is the integer 0 */
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(tm_validate(m, "{\"id\":-0,\"big\":1}", &out, &errs, &n));
    T_CHECK(strncmp(out.buf, "{\"id\":0,\"age\":null,\"big\":1,", strlen("{\"id\":0,\"age\":null,\"big\":1,")) == 0);
    sb_free(&out);
    sb_free(&errs);
    tm_fx_free(&fx);
}

static void decimals_take_numbers_and_numeric_strings(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(tm_validate(m, "{\"id\":1,\"price\":\"123.45\",\"amount\":12345678901234567890.123456789}",
                  &out, &errs, &n));
    /* the string became a number (ext): written without quotes, as given */
    T_CHECK(strstr(out.buf, "\"price\":123.45,\"amount\":12345678901234567890.123456789,"));
    V_OK(m, "{\"id\":1,\"price\":999.99}", NULL);
    V_OK(m, "{\"id\":1,\"price\":1.230}", NULL);  /* trailing zeros are not digits lost */
    V_OK(m, "{\"id\":1,\"price\":1e2}", NULL);
    V_OK(m, "{\"id\":1,\"price\":-100}", NULL);
    V_OK(m, "{\"id\":1,\"price\":0.001e1}", NULL);
    V_OK(m, "{\"id\":1,\"amount\":\"-0.5E-3\"}", NULL);
    V_BAD(m, "{\"id\":1,\"price\":1000}", "price must be a number with at most 3 digits before the point and 2 after (got 1000)");
    V_BAD(m, "{\"id\":1,\"price\":1e3}", "at most 3 digits before the point");
    V_BAD(m, "{\"id\":1,\"price\":1.234}", "price must be a number with at most 3 digits");
    V_OK(m, "{\"id\":1,\"price\":0.0001e2}", NULL); /* 0.01 */
    V_BAD(m, "{\"id\":1,\"price\":0.0001e1}", "(got 0.0001e1)"); /* 0.001 */
    V_BAD(m, "{\"id\":1,\"price\":-100.01}", "price must be at least -100");
    V_BAD(m, "{\"id\":1,\"amount\":\"12.5x\"}", "amount must be a number (got the string \\\"12.5x\\\")");
    V_BAD(m, "{\"id\":1,\"amount\":\" 12\"}", "amount must be a number");
    V_BAD(m, "{\"id\":1,\"amount\":\"1 2\"}", "amount must be a number");
    V_BAD(m, "{\"id\":1,\"amount\":\"+1\"}", "amount must be a number");
    V_BAD(m, "{\"id\":1,\"amount\":\"\"}", "amount must be a number");
    V_BAD(m, "{\"id\":1,\"amount\":true}", "amount must be a number (got true)");
    V_BAD(m, "{\"id\":1,\"amount\":1e999999}", "too large or too precise for a numeric");
    sb_free(&out);
    sb_free(&errs);
    tm_fx_free(&fx);
}

static void strings_count_code_points_and_must_be_utf8(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    V_OK(m, "{\"id\":1,\"name\":\"éé\"}", NULL);               /* 2 characters, 4 bytes */
    V_OK(m, "{\"id\":1,\"name\":\"😀😀😀😀😀\"}", NULL);         /* 5 characters, 20 bytes */
    V_BAD(m, "{\"id\":1,\"name\":\"é\"}", "name must be at least 2 characters");
    V_BAD(m, "{\"id\":1,\"name\":\"abcdef\"}", "\"rule\":\"length\",\"message\":\"name must be at most 5 characters\"");
    V_BAD(m, "{\"id\":1,\"name\":12}", "name must be a string (got 12)");
    V_BAD(m, "{\"id\":1,\"name\":null,\"note\":false}", "note must be a string (got false)");
    /* string defaults to at most 50; text has no limit */
    char row[400], s51[52];
    memset(s51, 'x', 51);
    s51[51] = '\0';
    snprintf(row, sizeof row, "{\"id\":1,\"short\":\"%.50s\",\"note\":\"%s%s%s\"}", s51, s51, s51, s51);
    V_OK(m, row, NULL);
    snprintf(row, sizeof row, "{\"id\":1,\"short\":\"%s\"}", s51);
    V_BAD(m, row, "short must be at most 50 characters");
    V_BAD(m, "{\"id\":1,\"note\":\"a\\u0000b\"}", "note contains a NUL character");

    /* Invalid UTF-8 cannot come from JSON: pack it by hand. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    RowView v;
    Strbuf errs;
    size_t nerr = 0;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "id", 2);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "note", 4);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "ab\xff" "c", 4);
    T_OK(row_view(&v, sb.data, sb.size));
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    sb_init(&errs);
    T_ERR(model_validate(m, &v.root, &out, &errs, &nerr), PL_EINVAL);
    T_EQ(nerr, 1);
    T_CHECK(strstr(errs.buf, "{\"field\":\"note\",\"rule\":\"type\",\"message\":\"note is not valid UTF-8 (byte 2)"));
    T_EQ(out.size, 0); /* out is left as it was */
    /* A row that is not a map */
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    T_ERR(model_validate(m, &o, &out, &errs, &nerr), PL_EFORMAT);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&out);
    sb_free(&errs);
    tm_fx_free(&fx);
}

static void formats_email_url_regex(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    static const char *good_mail[] = {"a@b.co", "first.last+tag@mail.example.com",
                                      "ünï@exämple.de", "x_y@a-b.c.d"};
    static const char *bad_mail[] = {"plain", "@b.co", "a@", "a@b", "a@@b.co", "a@b@c.co",
                                     "a b@c.co", "a@b..co", "a@.b.co", "a@b.co.", "a@b_c.co",
                                     "a@b.co\\n"};
    static const char *good_url[] = {"http://example.com", "https://a.b/c?d=e#f",
                                     "HTTPS://x:8080/", "http://user:pw@host/path",
                                     "http://[::1]:80/", "http://localhost"};
    static const char *bad_url[] = {"example.com", "ftp://x.y", "http://", "http:///x",
                                    "http://a b/", "http://x:port/", "http://x:123456/",
                                    "https://:80/"};
    V_EACH(m, "mail", good_mail, NULL);
    V_EACH(m, "mail", bad_mail, "\"rule\":\"format\",\"message\":\"mail must be an email address");
    V_EACH(m, "site", good_url, NULL);
    V_EACH(m, "site", bad_url, "site must be an http:// or https:// URL");
    V_OK(m, "{\"id\":1,\"code\":\"NL123\"}", NULL);
    V_BAD(m, "{\"id\":1,\"code\":\"nl123\"}", "code must match ^[A-Z]{2}[0-9]+$ (got the string \\\"nl123\\\")");
    V_BAD(m, "{\"id\":1,\"code\":\"NL123 \"}", "code must match");
    tm_fx_free(&fx);
}

static void datetimes_and_dates_follow_the_calendar(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    static const char *good[] = {"2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456Z",
                                 "2026-01-31 12:00Z", "2024-02-29T00:00:00+02:00",
                                 "2026-12-31T23:59:59-08", "2026-06-01T05:30:00+0530",
                                 "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999z",
                                 "2026-01-31T12:00:00.123456000Z", "2026-01-31T12:00:00.1000000000Z",
                                 "0001-01-01T04:00:00+04:00", "9999-12-31T20:00:00-03:59",
                                 "0001-01-01T00:00:00-05:00"};
    static const char *calendar[] = {"2026-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
                                     "1900-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                                     "2026-04-31T00:00:00Z", "2026-01-31T24:00:00Z",
                                     "2026-01-31T12:60:00Z", "2026-01-31T12:00:61Z",
                                     "0000-01-01T00:00:00Z", "2026-01-31T12:00:00+16:00"};
    static const char *form[] = {"2026-01-31", "2026-1-31T12:00:00Z", "2026-01-31T12",
                                 "2026-01-31T12:00:00.Z", "2026-01-31T12:00:00ZZ",
                                 "2026-01-31T12:00:00+2", "31/01/2026 12:00", "",
                                 "2026-01-31T12:00:00 Z"};
    /* More than microseconds: PostgreSQL would round them (the first lands
     * on the next day), so they are refused unless the rest are zeros. */
    static const char *precision[] = {"2024-12-31T23:59:59.9999999Z", "2026-01-31T12:00:00.1234567890Z",
                                      "9999-12-31T23:59:59.999999999z", "2026-01-31T12:00:00.0000001Z"};
    /* The instant (UTC) outside the years 1 to 9999: a timestamp BC, or
     * past what the extract and most tools read. */
    static const char *range[] = {"0001-01-01T00:00:00+05:00", "0001-01-01T03:59:59+04:00",
                                  "9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59-00:01"};
    V_EACH(m, "at", good, NULL);
    V_EACH(m, "at", calendar, "at must be a real calendar date and time");
    V_EACH(m, "at", form, "at must be a date and time like 2026-01-31T12:00:00Z");
    V_EACH(m, "at", precision, "at has more than 6 fractional digits of a second that are not zeros");
    V_EACH(m, "at", range, "at falls outside the years 1 to 9999 in UTC");
    V_BAD(m, "{\"id\":1,\"at\":1700000000}", "at must be a date and time like 2026-01-31T12:00:00Z (got 1700000000)");
    /* no zone means UTC, and the normalised row says so */
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(tm_validate(m, "{\"id\":1,\"at\":\"2026-01-31T12:00:00\"}", &out, &errs, &n));
    T_CHECK(strstr(out.buf, "\"at\":\"2026-01-31T12:00:00Z\""));
    T_OK(tm_validate(m, "{\"id\":1,\"at\":\"2026-01-31T12:00:00+01:00\"}", &out, &errs, &n));
    T_CHECK(strstr(out.buf, "\"at\":\"2026-01-31T12:00:00+01:00\""));

    V_OK(m, "{\"id\":1,\"day\":\"2024-02-29\"}", NULL);
    V_BAD(m, "{\"id\":1,\"day\":\"2026-02-30\"}", "day must be a real calendar date (got the string \\\"2026-02-30\\\")");
    V_BAD(m, "{\"id\":1,\"day\":\"2026-02-28T00:00:00Z\"}", "day must be a date like 2026-01-31");
    V_BAD(m, "{\"id\":1,\"day\":20260228}", "day must be a date like 2026-01-31 (got 20260228)");
    sb_free(&out);
    sb_free(&errs);
    tm_fx_free(&fx);
}

static void booleans_json_required_defaults(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    V_OK(m, "{\"id\":1,\"ok\":false}", NULL);
    V_BAD(m, "{\"id\":1,\"ok\":\"true\"}", "ok must be true or false (got the string \\\"true\\\")");
    V_BAD(m, "{\"id\":1,\"ok\":1}", "ok must be true or false (got 1)");
    V_OK(m, "{\"id\":1,\"doc\":{\"a\":[1,\"x\",null,{\"b\":2.50}]}}", NULL);
    V_OK(m, "{\"id\":1,\"doc\":\"just a string\"}", NULL);
    V_OK(m, "{\"id\":1,\"doc\":[]}", NULL);
    V_BAD(m, "{\"id\":1,\"doc\":{\"a\":\"x\\u0000y\"}}", "doc must be JSON whose strings are UTF-8 without NUL");
    V_BAD(m, "{\"id\":1,\"doc\":{\"a\\u0000\":1}}", "doc must be JSON");
    /* A key twice in one object: jsonb would keep the last value alone. */
    V_BAD(m, "{\"id\":1,\"doc\":{\"a\":1,\"a\":2}}", "doc holds an object with the key \\\"a\\\" twice");
    V_BAD(m, "{\"id\":1,\"doc\":[{\"x\":{\"b\":1,\"c\":0,\"b\":1}}]}", "the key \\\"b\\\" twice");
    V_BAD(m, "{\"id\":1,\"doc\":{\"\":1,\"\":1}}", "the key \\\"\\\" twice");
    {
        Strbuf big;
        sb_init(&big);
        sb_adds(&big, "{\"id\":1,\"doc\":{");
        for (int i = 0; i < 40; i++)
            sb_addf(&big, "\"k%d\":%d,", i, i);
        sb_adds(&big, "\"k17\":0}}");
        V_BAD(m, big.buf, "the key \\\"k17\\\" twice");
        sb_free(&big);
    }
    V_OK(m, "{\"id\":1,\"doc\":{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":3},{\"a\":4}]}}", NULL);

    /* Absent fields are nil, defaults filled, declaration order whatever the input order. */
    V_OK(m, "{\"note\":\"n\",\"id\":7}",
         "{\"id\":7,\"age\":null,\"big\":null,\"price\":null,\"amount\":null,\"ok\":null,"
         "\"name\":null,\"note\":\"n\",\"short\":null,\"site\":null,\"mail\":null,\"code\":null,"
         "\"at\":null,\"day\":null,\"doc\":null,\"req\":\"zz\"}");
    /* required: an explicit null is not absent, so the default does not apply */
    V_BADN(m, "{\"id\":7,\"req\":null}", 1, "{\"field\":\"req\",\"rule\":\"required\",\"message\":\"req is required\"}");
    /* key fields are required too */
    V_BADN(m, "{\"age\":1}", 1, "id is required");
    /* errors for several fields all come back */
    V_BADN(m, "{\"id\":\"x\",\"age\":-5,\"ok\":0,\"day\":\"x\"}", 4, "ok must be true or false");
    V_BAD(m, "{\"id\":1,\"id\":2}", "id appears twice in the row");
    tm_fx_free(&fx);
}

static const char seed_defaults_want[] =
    "{\"id\":1,\"tenant\":2,\"first_name\":\"Ada\",\"last_name\":\"Lovelace\",\"title\":null,"
    "\"email\":\"ada@example.com\",\"passhash\":null,\"salt\":null,\"permission\":1,"
    "\"phone\":null,\"mobile\":null,\"manager_id\":null,\"created_at\":\"2026-01-01T00:00:00Z\","
    "\"updated_at\":null,\"deleted_at\":\"2999-12-31T00:00:00Z\"}";

static void seed_rows_defaults_and_message_overrides(void)
{
    Fx fx;
    PARSE_OK(&fx, tm_seed_yaml);
    const Model *u = models_find(fx.ms, "users");
    V_OK(u, "{\"id\":1,\"tenant\":2,\"first_name\":\"Ada\",\"last_name\":\"Lovelace\","
            "\"email\":\"ada@example.com\",\"created_at\":\"2026-01-01T00:00:00Z\"}",
         seed_defaults_want);
    /* explicit values win over defaults */
    V_OK(u, "{\"id\":1,\"tenant\":2,\"first_name\":\"Ada\",\"last_name\":\"L\",\"permission\":5,"
            "\"created_at\":\"2026-01-01T00:00:00Z\"}", NULL);
    V_BAD(u, "{\"id\":1,\"tenant\":-1,\"first_name\":\"A\",\"last_name\":\"L\","
             "\"created_at\":\"2026-01-01T00:00:00Z\"}", "tenant must be at least 0");
    /* the file's messages replace the built-in ones, per rule */
    V_BADN(u, "{\"id\":1,\"tenant\":2,\"first_name\":\"A\",\"last_name\":\"L\",\"email\":\"a@b\","
              "\"created_at\":\"2026-01-01T00:00:00Z\"}", 1,
           "{\"field\":\"email\",\"rule\":\"length\",\"message\":\"Please, use an email address between 5 and 99 characters\"}");
    V_BADN(u, "{\"id\":1,\"tenant\":2,\"first_name\":\"A\",\"last_name\":\"L\",\"email\":\"not an email\","
              "\"created_at\":\"2026-01-01T00:00:00Z\"}", 1,
           "\"message\":\"Doesn't look like an email address to me\"");
    /* rules without an override keep the built-in message */
    V_BADN(u, "{\"id\":1,\"tenant\":2,\"last_name\":\"L\",\"created_at\":\"2026-01-01T00:00:00Z\"}", 1,
           "\"message\":\"first_name is required\"");
    V_BADN(u, "{\"id\":1,\"tenant\":2,\"first_name\":\"A\",\"last_name\":\"L\",\"email\":7,"
              "\"created_at\":\"2026-01-01T00:00:00Z\"}", 1, "email must be a string (got 7)");
    tm_fx_free(&fx);
}

/* from: a property reads a source field whose name is not an identifier,
 * or a path into nested objects; the column is the property. */
static void properties_read_their_source_fields(void)
{
    Fx fx;
    PARSE_OK(&fx, "models:\n"
                  "  movies:\n"
                  "    properties:\n"
                  "      title: {type: text, key: true, from: Title}\n"
                  "      us_gross: {type: bigint, from: \"US Gross\"}\n"
                  "      rating: {type: decimal, from: \"Rotten Tomatoes Rating\"}\n"
                  "      city: {type: string, from: address.city}\n"
                  "      zip: {type: string, from: \"address.zip.code\"}\n"
                  "  kept:\n"
                  "    drift: keep\n"
                  "    properties:\n"
                  "      id: {type: integer, key: true, from: \"ID #\"}\n");
    const Model *m = models_find(fx.ms, "movies"), *k = models_find(fx.ms, "kept");
    T_EQ(m->nfrom, 5);
    T_EQ(m->fields[3].npath, 2);
    /* the raw row: sources read, written under the columns' names */
    V_OK(m, "{\"Title\":\"Up\",\"US Gross\":293004164,\"Rotten Tomatoes Rating\":98,"
            "\"address\":{\"city\":\"Emeryville\",\"zip\":{\"code\":\"94608\"},\"x\":1}}",
         "{\"title\":\"Up\",\"us_gross\":293004164,\"rating\":98,\"city\":\"Emeryville\","
         "\"zip\":\"94608\"}");
    /* a normalised row validates to itself (read by the columns' names) */
    V_OK(m, "{\"title\":\"Up\",\"us_gross\":293004164,\"rating\":98,\"city\":\"Emeryville\","
            "\"zip\":\"94608\"}", NULL);
    /* a top-level field of the whole dotted name wins over the path */
    V_OK(m, "{\"Title\":\"A\",\"address.city\":\"Flat\",\"address\":{\"city\":\"Deep\"}}",
         "{\"title\":\"A\",\"us_gross\":null,\"rating\":null,\"city\":\"Flat\",\"zip\":null}");
    /* a path through something that is not an object has no value */
    V_OK(m, "{\"Title\":\"B\",\"address\":\"12 Main St\"}",
         "{\"title\":\"B\",\"us_gross\":null,\"rating\":null,\"city\":null,\"zip\":null}");
    /* rules apply to the source's value, named by the property */
    V_BAD(m, "{\"Title\":\"C\",\"US Gross\":\"lots\"}", "{\"field\":\"us_gross\",\"rule\":\"type\"");
    V_BAD(m, "{\"US Gross\":1}", "title is required");
    V_BAD(m, "{\"Title\":\"D\",\"US Gross\":1,\"US Gross\":2}", "US Gross appears twice");
    /* an undeclared field is drift; the sources are not */
    V_BAD(m, "{\"Title\":\"E\",\"Budget\":1}", "field 'Budget' is not declared");
    V_OK(k, "{\"ID #\":7,\"note\":\"x\"}", "{\"id\":7,\"extra\":{\"note\":\"x\"}}");
    /* the key of a raw row is read from its source */
    Strbuf key;
    msgpack_sbuffer sb;
    RowView v;
    sb_init(&key);
    msgpack_sbuffer_init(&sb);
    tm_pack_json(&sb, "{\"US Gross\":1,\"Title\":\"Toy Story\"}");
    T_OK(row_view(&v, sb.data, sb.size));
    T_OK(model_row_key(m, &v.root, &key));
    T_CHECK(strcmp(key.buf, "Toy Story") == 0);
    row_view_free(&v);
    sb_free(&key);
    msgpack_sbuffer_destroy(&sb);
    tm_fx_free(&fx);

    PARSE_ERR("models:\n  m:\n    properties:\n      US Gross: bigint\n", 4,
              "'US Gross' is not a valid property name (a property is a column): use 1 to 63 of "
              "letters, digits and _, starting with a letter or _; to read a source field of "
              "that name, name the property and give the field as from:, like us_gross: "
              "{type: ..., from: \"US Gross\"}");
    PARSE_ERR("models:\n  m:\n    properties:\n      a: {type: text, from: \"x..y\"}\n", 4,
              "from: 'x..y' has an empty step");
    PARSE_ERR("models:\n  m:\n    properties:\n      a: {type: text, from: \".x\"}\n", 4,
              "has an empty step");
    PARSE_ERR("models:\n  m:\n    properties:\n      a: {type: text, from: \"\"}\n", 4, "from:");
    PARSE_ERR("models:\n  m:\n    properties:\n      a: {type: text, from: a}\n", 4,
              "from: 'a' is the property's own name");
    PARSE_ERR("models:\n  m:\n    properties:\n      a: {type: text, from: b}\n      b: text\n",
              4, "from: 'b' reads field 'b', which is also the name of property 'b'");
}

static void drift_reject_ignore_keep(void)
{
    Fx fx;
    PARSE_OK(&fx, "models:\n"
                  "  r: {properties: {id: {type: integer, key: true}, a: string}}\n"
                  "  i: {drift: ignore, properties: {id: {type: integer, key: true}, a: string}}\n"
                  "  k: {drift: keep, properties: {id: {type: integer, key: true}, a: string}}\n"
                  "  k2: {drift: keep, drift_column: more, properties: {id: integer}}\n");
    const Model *r = models_find(fx.ms, "r"), *i = models_find(fx.ms, "i"),
                *k = models_find(fx.ms, "k"), *k2 = models_find(fx.ms, "k2");
    V_BADN(r, "{\"id\":1,\"a\":\"x\",\"zip\":\"1234\",\"why\":null}", 2,
           "{\"field\":\"zip\",\"rule\":\"drift\",\"message\":\"field 'zip' is not declared in model 'r'; declare it under properties: or set drift: ignore or keep\"}");
    V_OK(r, "{\"id\":1,\"a\":\"x\"}", "{\"id\":1,\"a\":\"x\"}");
    V_OK(i, "{\"zip\":\"1234\",\"id\":1,\"more\":{\"x\":1}}", "{\"id\":1,\"a\":null}");
    V_OK(k, "{\"zip\":\"1234\",\"id\":1,\"more\":{\"x\":1}}",
         "{\"id\":1,\"a\":null,\"extra\":{\"zip\":\"1234\",\"more\":{\"x\":1}}}");
    V_OK(k, "{\"id\":1}", "{\"id\":1,\"a\":null,\"extra\":null}");
    /* a normalised row validates to itself (its drift column is unpacked again) */
    V_OK(k, "{\"id\":1,\"a\":null,\"extra\":{\"zip\":\"1234\",\"more\":{\"x\":1}}}",
         "{\"id\":1,\"a\":null,\"extra\":{\"zip\":\"1234\",\"more\":{\"x\":1}}}");
    V_OK(k2, "{\"id\":1,\"extra\":2}", "{\"id\":1,\"more\":{\"extra\":2}}");
    /* drift errors are not raised for soft deletes (only the key counts) */
    V_OK(r, "{\"id\":1,\"zip\":1,\"_deleted\":true}", "{\"id\":1,\"_deleted\":true}");

    Strbuf cols;
    sb_init(&cols);
    model_columns(k2, &cols);
    T_CHECK(strcmp(cols.buf, "\"id\",\"more\"") == 0);
    sb_free(&cols);
    tm_fx_free(&fx);
}

/* check_one runs model_check_field on the JSON value json of field name:
 * returns its result, with the normalised value (JSON) or the errors. */
static int check_one(const Model *m, const char *name, const char *json, Strbuf *out)
{
    msgpack_sbuffer in, norm;
    msgpack_sbuffer_init(&in);
    msgpack_sbuffer_init(&norm);
    T_OK(row_from_json(json, strlen(json), &in, NULL, 0));
    RowView v;
    T_OK(row_view(&v, in.data, in.size));
    msgpack_packer pk;
    msgpack_packer_init(&pk, &norm, msgpack_sbuffer_write);
    Strbuf errs;
    sb_init(&errs);
    size_t n = 99;
    int rc = model_check_field(m, name, &v.root, &pk, &errs, &n);
    sb_reset(out);
    if (rc == 0) {
        T_EQ(n, 0);
        T_EQ(errs.len, 0);
        T_OK(row_to_json(norm.data, norm.size, out));
    } else {
        T_EQ(rc, PL_EINVAL);
        T_CHECK(n >= 1);
        T_EQ(norm.size, 0);
        sb_add(out, errs.buf, errs.len);
    }
    row_view_free(&v);
    sb_free(&errs);
    msgpack_sbuffer_destroy(&in);
    msgpack_sbuffer_destroy(&norm);
    return rc;
}

/* One field checked alone (data merged from outside: an async callback),
 * with the rules and messages model_validate uses for it in a row. */
static void one_field_is_checked_alone(void)
{
    Fx fx;
    PARSE_OK(&fx, "models:\n"
                  "  u:\n"
                  "    properties:\n"
                  "      id: {type: integer, key: true}\n"
                  "      person_id: {type: string, length: 40, messages: {length: too long}}\n"
                  "      score: {type: decimal, precision: 4, scale: 3}\n"
                  "      at: {type: datetime}\n"
                  "      mail: {type: string, format: email, required: true}\n"
                  "  i: {drift: ignore, properties: {id: {type: integer, key: true}}}\n");
    const Model *u = models_find(fx.ms, "u"), *i = models_find(fx.ms, "i");
    Strbuf out;
    sb_init(&out);
    T_OK(check_one(u, "person_id", "\"abc\"", &out));
    T_CHECK(strcmp(out.buf, "\"abc\"") == 0);
    T_ERR(check_one(u, "person_id", "{\"a\":1}", &out), PL_EINVAL);
    T_CHECK(strstr(out.buf, "\"field\":\"person_id\",\"rule\":\"type\""));
    T_CHECK(strstr(out.buf, "person_id must be a string (got an object)"));
    T_ERR(check_one(u, "person_id", "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", &out), PL_EINVAL);
    T_CHECK(strcmp(out.buf, "{\"field\":\"person_id\",\"rule\":\"length\",\"message\":\"too long\"}") == 0);
    T_OK(check_one(u, "score", "\"0.875\"", &out)); /* a number in a string: a number now */
    T_CHECK(strcmp(out.buf, "0.875") == 0);
    T_ERR(check_one(u, "score", "12.5", &out), PL_EINVAL);
    T_OK(check_one(u, "at", "\"2026-01-02T03:04:05\"", &out)); /* no zone: UTC, said */
    T_CHECK(strcmp(out.buf, "\"2026-01-02T03:04:05Z\"") == 0);
    T_ERR(check_one(u, "at", "\"2026-02-30T00:00:00Z\"", &out), PL_EINVAL);
    T_ERR(check_one(u, "mail", "\"nope\"", &out), PL_EINVAL);
    T_CHECK(strstr(out.buf, "\"rule\":\"format\""));
    T_OK(check_one(u, "person_id", "null", &out));
    T_CHECK(strcmp(out.buf, "null") == 0);
    T_ERR(check_one(u, "mail", "null", &out), PL_EINVAL); /* required */
    T_CHECK(strstr(out.buf, "\"rule\":\"required\""));
    T_ERR(check_one(u, "id", "null", &out), PL_EINVAL);   /* a key */
    T_ERR(check_one(u, "zip", "\"1234\"", &out), PL_EINVAL); /* undeclared, drift: reject */
    T_CHECK(strstr(out.buf, "\"rule\":\"drift\""));
    T_OK(check_one(i, "zip", "{\"x\":[1]}", &out));       /* drift: ignore takes it */
    T_CHECK(strcmp(out.buf, "{\"x\":[1]}") == 0);
    sb_free(&out);
    tm_fx_free(&fx);
}

static void soft_deletes_keep_the_key_and_the_time(void)
{
    Fx fx;
    PARSE_OK(&fx, tm_seed_yaml);
    const Model *u = models_find(fx.ms, "users"), *t = models_find(fx.ms, "tenants");
    V_OK(u, "{\"tenant\":2,\"id\":1,\"_deleted\":true,\"deleted_at\":\"2026-03-01T10:00:00Z\","
            "\"first_name\":12,\"junk\":1}",
         "{\"id\":1,\"tenant\":2,\"deleted_at\":\"2026-03-01T10:00:00Z\",\"_deleted\":true}");
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(tm_validate(u, "{\"id\":1,\"tenant\":2,\"_deleted\":true}", &out, &errs, &n));
    /* the time now, as an ISO 8601 UTC string */
    T_CHECK(strncmp(out.buf, "{\"id\":1,\"tenant\":2,\"deleted_at\":\"20", 35) == 0);
    T_CHECK(strlen(out.buf) == strlen("{\"id\":1,\"tenant\":2,\"deleted_at\":\"2026-03-01T10:00:00.000Z\",\"_deleted\":true}"));
    T_OK(tm_validate(u, "{\"id\":1,\"tenant\":2,\"_deleted\":true}", &out, &errs, &n));
    T_CHECK(strstr(out.buf, "Z\",\"_deleted\":true}"));
    V_BADN(u, "{\"id\":1,\"_deleted\":true}", 1, "tenant is required (it is part of the key)");
    V_BAD(u, "{\"id\":1,\"tenant\":\"2\",\"_deleted\":true}", "tenant must be an integer");
    V_BAD(u, "{\"id\":1,\"tenant\":2,\"_deleted\":true,\"deleted_at\":\"yesterday\"}", "deleted_at must be a date and time");
    V_BAD(u, "{\"id\":1,\"tenant\":2,\"_deleted\":\"yes\"}", "_deleted must be true or false");
    /* _deleted: false (or null) is an ordinary row */
    V_BAD(u, "{\"id\":1,\"tenant\":2,\"_deleted\":false}", "first_name is required");
    /* a model without a paranoid field: key and the flag */
    V_OK(t, "{\"id\":5,\"_deleted\":true}", "{\"id\":5,\"_deleted\":true}");
    sb_free(&out);
    sb_free(&errs);
    tm_fx_free(&fx);

    PARSE_OK(&fx, "models:\n  nokey: {properties: {a: string}}\n");
    V_BAD(models_find(fx.ms, "nokey"), "{\"a\":\"x\",\"_deleted\":true}", "model 'nokey' has no key, so a row cannot be deleted");
    tm_fx_free(&fx);
}

static void many_fields_take_the_heap_path(void)
{
    Strbuf y, row, out, errs;
    size_t n;
    Fx fx;
    sb_init(&y);
    sb_init(&row);
    sb_init(&out);
    sb_init(&errs);
    sb_adds(&y, "models:\n  wide:\n    properties:\n      id: {type: integer, key: true}\n");
    sb_adds(&row, "{\"id\":1");
    for (int i = 0; i < 100; i++) {
        sb_addf(&y, "      f%d: {type: integer, required: true}\n", i);
        sb_addf(&row, ",\"f%d\":%d", 99 - i, i); /* out of order */
    }
    sb_adds(&row, "}");
    PARSE_OK(&fx, y.buf);
    const Model *m = models_find(fx.ms, "wide");
    T_OK(tm_validate(m, row.buf, &out, &errs, &n));
    T_CHECK(strncmp(out.buf, "{\"id\":1,\"f0\":99,\"f1\":98,", 24) == 0);
    T_CHECK(strstr(out.buf, ",\"f99\":0}"));
    T_ERR(tm_validate(m, "{\"id\":1}", &out, &errs, &n), PL_EINVAL);
    T_EQ(n, 100);
    tm_errs_are_json(__FILE__, __LINE__, &errs, n);
    sb_free(&y);
    sb_free(&row);
    sb_free(&out);
    sb_free(&errs);
    tm_fx_free(&fx);
}

/* ----------------------------------------------------------------- keys */

static int row_key(const Model *m, const char *json, Strbuf *out)
{
    msgpack_sbuffer sb;
    RowView v;
    msgpack_sbuffer_init(&sb);
    tm_pack_json(&sb, json);
    T_OK(row_view(&v, sb.data, sb.size));
    sb_reset(out);
    int rc = model_row_key(m, &v.root, out);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void row_keys_join_key_fields(void)
{
    Fx fx;
    Strbuf k;
    sb_init(&k);
    PARSE_OK(&fx, tm_seed_yaml);
    const Model *u = models_find(fx.ms, "users"), *t = models_find(fx.ms, "tenants");
    T_OK(row_key(u, "{\"tenant\":3,\"id\":7,\"x\":1}", &k));
    T_CHECK(strcmp(k.buf, "7/3") == 0);
    T_OK(row_key(t, "{\"id\":12345678901234567890123}", &k));
    T_CHECK(strcmp(k.buf, "12345678901234567890123") == 0);
    T_OK(row_key(t, "{\"id\":-5}", &k));
    T_CHECK(strcmp(k.buf, "-5") == 0);
    T_OK(row_key(t, "{\"id\":\"a/b%c\"}", &k)); /* '/' and '%' escaped: keys stay unambiguous */
    T_CHECK(strcmp(k.buf, "a%2Fb%25c") == 0);
    sb_adds(&k, "keep");
    T_ERR(row_key(u, "{\"id\":7}", &k), PL_EINVAL);
    T_EQ(k.len, 0);
    T_ERR(row_key(u, "{\"id\":7,\"tenant\":null}", &k), PL_EINVAL);
    T_ERR(row_key(u, "{\"id\":7,\"tenant\":[1]}", &k), PL_EINVAL);
    sb_free(&k);
    tm_fx_free(&fx);
}

static const TCase cases[] = {
    T_CASE(integers_are_checked_never_coerced),
    T_CASE(decimals_take_numbers_and_numeric_strings),
    T_CASE(strings_count_code_points_and_must_be_utf8),
    T_CASE(formats_email_url_regex),
    T_CASE(datetimes_and_dates_follow_the_calendar),
    T_CASE(booleans_json_required_defaults),
    T_CASE(seed_rows_defaults_and_message_overrides),
    T_CASE(properties_read_their_source_fields),
    T_CASE(drift_reject_ignore_keep),
    T_CASE(one_field_is_checked_alone),
    T_CASE(soft_deletes_keep_the_key_and_the_time),
    T_CASE(many_fields_take_the_heap_path),
    T_CASE(row_keys_join_key_fields),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "model_check", cases);
}
