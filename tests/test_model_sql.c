/* test_model_sql.c: engine/data/model_sql.c and model_json.c: CSV for COPY
 * with hostile values (checked byte for byte and by reading it back with a
 * CSV reader that follows PostgreSQL's rules), the JSON a value is written
 * as, DDL text and the JSON export. */
#include "t.h"
#include "t_model.h"
#include "pl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ CSV */

static const char csv_yaml[] =
    "models:\n"
    "  things:\n"
    "    drift: keep\n"
    "    properties:\n"
    "      id: {type: bigint, key: true}\n"
    "      s: text\n"
    "      n: integer\n"
    "      d: decimal\n"
    "      b: boolean\n"
    "      j: json\n"
    "      t: datetime\n";

/* csv_of validates json (must be valid) and returns its CSV line in out. */
static void csv_of(const Model *m, const char *json, int op, Strbuf *out)
{
    msgpack_sbuffer in, mp;
    RowView v, nv;
    Strbuf errs;
    size_t n;
    msgpack_sbuffer_init(&in);
    msgpack_sbuffer_init(&mp);
    sb_init(&errs);
    tm_pack_json(&in, json);
    T_OK(row_view(&v, in.data, in.size));
    if (model_validate(m, &v.root, &mp, &errs, &n))
        t_fail(__FILE__, __LINE__, "%s: %s", json, errs.buf);
    T_OK(row_view(&nv, mp.data, mp.size));
    sb_reset(out);
    T_OK(model_csv_row(m, &nv.root, op, out));
    /* the lookup by name (members in another order) gives the same line */
    Strbuf again;
    msgpack_sbuffer rev;
    msgpack_packer pk;
    RowView rv;
    msgpack_sbuffer_init(&rev);
    msgpack_packer_init(&pk, &rev, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, nv.root.via.map.size);
    for (uint32_t i = nv.root.via.map.size; i-- > 0;) {
        msgpack_pack_object(&pk, nv.root.via.map.ptr[i].key);
        msgpack_pack_object(&pk, nv.root.via.map.ptr[i].val);
    }
    T_OK(row_view(&rv, rev.data, rev.size));
    sb_init(&again);
    T_OK(model_csv_row(m, &rv.root, op, &again));
    if (strcmp(again.buf, out->buf) != 0)
        t_fail(__FILE__, __LINE__, "by name %s\n by position %s", again.buf, out->buf);
    row_view_free(&rv);
    msgpack_sbuffer_destroy(&rev);
    sb_free(&again);
    row_view_free(&nv);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&in);
    msgpack_sbuffer_destroy(&mp);
    sb_free(&errs);
}

#define CSV_IS(m, json, op, want) do { \
        csv_of(m, json, op, &line); \
        if (strcmp(line.buf, want) != 0) \
            t_fail(__FILE__, __LINE__, "CSV of %s\n  gave [%s]\n  want [%s]", json, line.buf, want); \
    } while (0)

static void csv_rows_of_hostile_values(void)
{
    Fx fx;
    Strbuf line;
    sb_init(&line);
    PARSE_OK(&fx, csv_yaml);
    const Model *m = models_find(fx.ms, "things");

    Strbuf cols;
    sb_init(&cols);
    model_columns(m, &cols);
    T_CHECK(strcmp(cols.buf, "\"id\",\"s\",\"n\",\"d\",\"b\",\"j\",\"t\",\"extra\"") == 0);
    sb_free(&cols);

    /* NULL versus the empty string */
    CSV_IS(m, "{\"id\":1,\"s\":\"\"}", 0, "1,\"\",,,,,,\n");
    CSV_IS(m, "{\"id\":1,\"s\":null}", 0, "1,,,,,,,\n");
    /* quotes doubled; commas, CR, LF, backslashes and unicode as they are */
    CSV_IS(m, "{\"id\":1,\"s\":\"a \\\"q\\\", c\\r\\nl\\\\b \\\\. é😀\"}", 0,
           "1,\"a \"\"q\"\", c\r\nl\\b \\. é😀\",,,,,,\n");
    CSV_IS(m, "{\"id\":1,\"s\":\"\\\"\"}", 0, "1,\"\"\"\",,,,,,\n");
    CSV_IS(m, "{\"id\":1,\"s\":\"\\\\.\"}", 0, "1,\"\\.\",,,,,,\n");
    /* numbers as written, big ones too; booleans t/f */
    CSV_IS(m, "{\"id\":-9223372036854775808,\"n\":-7,\"d\":12345678901234567890123.4500,\"b\":true}", 0,
           "-9223372036854775808,,-7,12345678901234567890123.4500,t,,,\n");
    CSV_IS(m, "{\"id\":9223372036854775807,\"d\":\"-1E-7\",\"b\":false}", 0,
           "9223372036854775807,,,-1E-7,f,,,\n");
    /* json as its JSON text, quoted, whatever its JSON type */
    CSV_IS(m, "{\"id\":1,\"j\":{\"k\":\"v \\\"q\\\", x\",\"n\":[1,2.50,null,true]}}", 0,
           "1,,,,,\"{\"\"k\"\":\"\"v \\\"\"q\\\"\", x\"\",\"\"n\"\":[1,2.50,null,true]}\",,\n");
    CSV_IS(m, "{\"id\":1,\"j\":\"x\"}", 0, "1,,,,,\"\"\"x\"\"\",,\n");
    CSV_IS(m, "{\"id\":1,\"j\":true}", 0, "1,,,,,\"true\",,\n");
    CSV_IS(m, "{\"id\":1,\"j\":12.0}", 0, "1,,,,,\"12.0\",,\n");
    CSV_IS(m, "{\"id\":1,\"j\":null}", 0, "1,,,,,,,\n");
    /* datetimes quoted as normalised; drift kept as JSON; the op column */
    CSV_IS(m, "{\"id\":1,\"t\":\"2026-01-31 12:00:00.5+01:00\"}", 0, "1,,,,,,\"2026-01-31 12:00:00.5+01:00\",\n");
    CSV_IS(m, "{\"id\":1,\"t\":\"2026-01-31T12:00\"}", 0, "1,,,,,,\"2026-01-31T12:00Z\",\n");
    CSV_IS(m, "{\"id\":1,\"zz\":\"a,\\\"b\\\"\"}", 1, "1,,,,,,,\"{\"\"zz\"\":\"\"a,\\\"\"b\\\"\"\"\"}\",u\n");
    CSV_IS(m, "{\"id\":1,\"_deleted\":true}", 1, "1,,,,,,,,d\n");
    CSV_IS(m, "{\"id\":1,\"_deleted\":false}", 1, "1,,,,,,,,u\n");

    /* a row that is not a map */
    msgpack_object o = {.type = MSGPACK_OBJECT_NIL};
    T_ERR(model_csv_row(m, &o, 0, &line), PL_EFORMAT);
    sb_free(&line);
    tm_fx_free(&fx);
}

/* pack_str packs s as a msgpack str. */
static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* JSON that model.c writes for a value (a json column's CSV field, a key
 * part) is row.c's canonical JSON (row_put_object): a float32 at its own
 * precision, not a double's, and a number extension that is not a JSON
 * number refused (PL_EFORMAT, the line left as it was), never written as
 * null. Rows from JSON never hold either: both come from msgpack made
 * elsewhere (or damaged). */
static void value_json_is_rows_json(void)
{
    Fx fx;
    Strbuf line = SB_INIT;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    RowView v;

    PARSE_OK(&fx, csv_yaml);
    const Model *m = models_find(fx.ms, "things");
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "id");
    msgpack_pack_int64(&pk, 1);
    pack_str(&pk, "j");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_float(&pk, 0.1f);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_float(&pk, 16777216.0f);
    T_OK(row_view(&v, sb.data, sb.size));
    T_OK(model_csv_row(m, &v.root, 0, &line));
    if (strcmp(line.buf, "1,,,,,\"[0.1,0.1,16777216]\",,\n") != 0)
        t_fail(__FILE__, __LINE__, "CSV of a json float32: [%s]", line.buf);
    row_view_free(&v);

    sb.size = 0;
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "id");
    msgpack_pack_int64(&pk, 2);
    pack_str(&pk, "j");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "x");
    msgpack_pack_ext(&pk, 5, ROW_EXT_NUMBER);
    msgpack_pack_ext_body(&pk, "1.2.3", 5);
    T_OK(row_view(&v, sb.data, sb.size));
    size_t before = line.len;
    T_ERR(model_csv_row(m, &v.root, 0, &line), PL_EFORMAT);
    T_EQ(line.len, before);
    row_view_free(&v);
    tm_fx_free(&fx);

    PARSE_OK(&fx, "models:\n"
                  "  prices:\n"
                  "    properties:\n"
                  "      p: {type: decimal, key: true}\n");
    m = models_find(fx.ms, "prices");
    sb.size = 0;
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "p");
    msgpack_pack_float(&pk, 0.1f);
    T_OK(row_view(&v, sb.data, sb.size));
    sb_reset(&line);
    T_OK(model_row_key(m, &v.root, &line));
    if (strcmp(line.buf, "0.1") != 0)
        t_fail(__FILE__, __LINE__, "key of a float32: [%s]", line.buf);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
    sb_free(&line);
    tm_fx_free(&fx);
}

/* csv_read reads one record of PostgreSQL CSV at *p into fields (NULL for
 * an unquoted empty field); returns the number of fields. */
static size_t csv_read(const char **p, char **fields, size_t max)
{
    const char *s = *p;
    size_t nf = 0;
    for (;;) {
        T_CHECK(nf < max);
        if (*s == '"') {
            Strbuf f;
            sb_init(&f);
            for (s++;; s++) {
                T_CHECK(*s);
                if (*s == '"' && s[1] == '"') {
                    sb_add(&f, "\"", 1);
                    s++;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    sb_add(&f, s, 1);
                }
            }
            fields[nf++] = strdup(f.buf);
            sb_free(&f);
        } else {
            const char *e = s + strcspn(s, ",\n");
            T_CHECK(*e != '\0');
            T_CHECK(!memchr(s, '"', (size_t)(e - s)) && !memchr(s, '\r', (size_t)(e - s)));
            fields[nf++] = e == s ? NULL : strndup(s, (size_t)(e - s));
            s = e;
        }
        if (*s == ',') {
            s++;
            continue;
        }
        T_CHECK(*s == '\n');
        *p = s + 1;
        return nf;
    }
}

/* A seeded random round trip: hostile strings written as CSV read back
 * exactly, several rows to a buffer. */
static void csv_random_strings_read_back(void)
{
    static const char *const parts[] = {"\"", "\"\"", ",", "\r", "\n", "\r\n", "\\", "\\.",
                                        "é", "😀", " ", "a", "NULL", "", "'", "\t", "\\N"};
    Fx fx;
    Strbuf buf, want[50];
    msgpack_sbuffer mp;
    msgpack_packer pk;
    RowView v;
    unsigned seed = 12345;

    PARSE_OK(&fx, "models:\n  s: {properties: {a: text, b: text, c: integer}}\n");
    const Model *m = models_find(fx.ms, "s");
    sb_init(&buf);
    msgpack_sbuffer_init(&mp);
    for (int round = 0; round < 40; round++) {
        sb_reset(&buf);
        for (int r = 0; r < 50; r++) {
            sb_init(&want[r]);
            int k = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 12;
            for (int i = 0; i < k; i++)
                sb_adds(&want[r], parts[((seed = seed * 1103515245u + 12345u) >> 16) %
                                       (sizeof parts / sizeof *parts)]);
            mp.size = 0;
            msgpack_packer_init(&pk, &mp, msgpack_sbuffer_write);
            msgpack_pack_map(&pk, 3);
            msgpack_pack_str(&pk, 1);
            msgpack_pack_str_body(&pk, "a", 1);
            msgpack_pack_str(&pk, want[r].len);
            msgpack_pack_str_body(&pk, want[r].buf, want[r].len);
            msgpack_pack_str(&pk, 1);
            msgpack_pack_str_body(&pk, "b", 1);
            msgpack_pack_nil(&pk);
            msgpack_pack_str(&pk, 1);
            msgpack_pack_str_body(&pk, "c", 1);
            msgpack_pack_int64(&pk, -r);
            T_OK(row_view(&v, mp.data, mp.size));
            T_OK(model_csv_row(m, &v.root, 0, &buf));
            row_view_free(&v);
        }
        const char *p = buf.buf;
        for (int r = 0; r < 50; r++) {
            char *f[3];
            char num[16];
            T_EQ(csv_read(&p, f, 3), 3);
            if (!f[0] || strcmp(f[0], want[r].buf) != 0)
                t_fail(__FILE__, __LINE__, "row %d: read back [%s], wrote [%s]", r,
                       f[0] ? f[0] : "(null)", want[r].buf);
            T_CHECK(f[1] == NULL);
            snprintf(num, sizeof num, "%d", -r);
            T_CHECK(f[2] && strcmp(f[2], num) == 0);
            for (int i = 0; i < 3; i++)
                free(f[i]);
            sb_free(&want[r]);
        }
        T_CHECK(*p == '\0');
    }
    sb_free(&buf);
    msgpack_sbuffer_destroy(&mp);
    tm_fx_free(&fx);
}

/* ------------------------------------------------------------------ DDL */

static void contains(const char *file, int line, const char *text, const char *want)
{
    if (!strstr(text, want))
        t_fail(file, line, "DDL lacks [%s]:\n%s", want, text);
}
#define HAS(text, want) contains(__FILE__, __LINE__, text, want)

static void ddl_has_types_keys_and_references(void)
{
    Fx fx;
    Strbuf d;
    sb_init(&d);
    PARSE_OK(&fx, tm_seed_yaml);
    const Model *u = models_find(fx.ms, "users");
    model_ddl(fx.ms, u, &d);
    HAS(d.buf, "CREATE TABLE IF NOT EXISTS \"users\" (\n");
    HAS(d.buf, "\"id\" bigint NOT NULL,\n");
    HAS(d.buf, "\"tenant\" integer NOT NULL,\n");
    HAS(d.buf, "\"first_name\" varchar(50) NOT NULL,\n");
    HAS(d.buf, "\"title\" varchar(50),\n");
    HAS(d.buf, "\"email\" varchar(99),\n");
    HAS(d.buf, "\"permission\" integer DEFAULT 1,\n");
    HAS(d.buf, "\"phone\" varchar(50),\n");
    HAS(d.buf, "\"created_at\" timestamptz NOT NULL,\n");
    HAS(d.buf, "\"deleted_at\" timestamptz DEFAULT '2999-12-31T00:00:00Z',\n");
    HAS(d.buf, "PRIMARY KEY (\"id\", \"tenant\")");
    HAS(d.buf, "UNIQUE (\"email\")");
    HAS(d.buf, "FOREIGN KEY (\"tenant\") REFERENCES \"tenants\" (\"id\")");
    HAS(d.buf, "FOREIGN KEY (\"manager_id\", \"tenant\") REFERENCES \"users\" (\"id\", \"tenant\")");
    T_CHECK(d.len > 4 && strcmp(d.buf + d.len - 4, "\n);\n") == 0);
    T_CHECK(!strstr(d.buf, "authorities")); /* has n makes no column */

    /* every model, parents first */
    sb_reset(&d);
    models_ddl(fx.ms, &d);
    const char *t = strstr(d.buf, "EXISTS \"tenants\""), *us = strstr(d.buf, "EXISTS \"users\""),
               *a = strstr(d.buf, "EXISTS \"authorities\""),
               *s = strstr(d.buf, "EXISTS \"subscriptions\"");
    T_CHECK(t && us && a && s && t < us && us < a && a < s);
    tm_fx_free(&fx);

    PARSE_OK(&fx, "models:\n"
                  "  odd:\n"
                  "    table: 'we\"ird'\n"
                  "    drift: keep\n"
                  "    drift_column: rest\n"
                  "    properties:\n"
                  "      k: {type: string, key: true, unique: true, length: 10}\n"
                  "      who: {type: string, default: \"O'Brien\"}\n"
                  "      price: {type: decimal, precision: 10, scale: 2, default: -12.50}\n"
                  "      n: {type: decimal, default: '1e3'}\n"
                  "      flag: {type: boolean, default: yes}\n"
                  "      doc: {type: json, default: '{\"a\": [1, \"it''s\"]}'}\n"
                  "      day: {type: date, default: 2026-01-31}\n"
                  "      body: {type: text, length: [1, 5000], required: true}\n"
                  "      big: {type: bigint, default: -9223372036854775808}\n");
    sb_reset(&d);
    model_ddl(fx.ms, models_find(fx.ms, "odd"), &d);
    HAS(d.buf, "CREATE TABLE IF NOT EXISTS \"we\"\"ird\" (");
    HAS(d.buf, "\"k\" varchar(10) NOT NULL,");
    HAS(d.buf, "\"who\" varchar(50) DEFAULT 'O''Brien',");
    HAS(d.buf, "\"price\" numeric(10,2) DEFAULT -12.50,");
    HAS(d.buf, "\"n\" numeric DEFAULT 1e3,");
    HAS(d.buf, "\"flag\" boolean DEFAULT true,");
    HAS(d.buf, "\"doc\" jsonb DEFAULT '{\"a\":[1,\"it''s\"]}'::jsonb,");
    HAS(d.buf, "\"day\" date DEFAULT '2026-01-31',");
    HAS(d.buf, "\"body\" text NOT NULL,");
    HAS(d.buf, "\"big\" bigint DEFAULT -9223372036854775808,");
    HAS(d.buf, "\"rest\" jsonb,\n");
    HAS(d.buf, "PRIMARY KEY (\"k\")\n);\n"); /* unique on the key alone is the key */
    T_CHECK(!strstr(d.buf, "UNIQUE"));

    sb_reset(&d);
    model_sql_ident(&d, "a\"b\"\"");
    T_CHECK(strcmp(d.buf, "\"a\"\"b\"\"\"\"\"") == 0);
    sb_free(&d);
    tm_fx_free(&fx);
}

/* ----------------------------------------------------------------- JSON */

static void models_json_is_json(void)
{
    Fx fx;
    Strbuf j;
    msgpack_sbuffer sb;
    RowView v;
    char err[200];
    sb_init(&j);
    msgpack_sbuffer_init(&sb);
    PARSE_OK(&fx, tm_seed_yaml);
    models_json(fx.ms, &j);
    if (row_from_json_object(j.buf, j.len, &sb, err, sizeof err))
        t_fail(__FILE__, __LINE__, "models_json is not JSON (%s): %s", err, j.buf);
    T_OK(row_view(&v, sb.data, sb.size));
    const msgpack_object *lo = row_field(&v.root, "load_order"),
                         *ms = row_field(&v.root, "models");
    T_CHECK(lo && lo->type == MSGPACK_OBJECT_ARRAY && lo->via.array.size == 4);
    T_CHECK(lo->via.array.ptr[0].via.str.size == 7 &&
            memcmp(lo->via.array.ptr[0].via.str.ptr, "tenants", 7) == 0);
    T_CHECK(ms && ms->type == MSGPACK_OBJECT_ARRAY && ms->via.array.size == 4);
    const msgpack_object *users = &ms->via.array.ptr[1];
    Strbuf t;
    sb_init(&t);
    T_OK(row_field_text(users, "name", &t));
    T_CHECK(strcmp(t.buf, "users") == 0);
    T_OK(row_field_text(users, "drift", &t));
    HAS(j.buf, "\"key\":[\"id\",\"tenant\"]");
    HAS(j.buf, "{\"name\":\"email\",\"type\":\"string\",\"required\":false,\"key\":false,"
               "\"unique\":true,\"length\":[5,99],\"min\":null,\"max\":null,\"precision\":null,"
               "\"scale\":null,\"format\":\"email\",\"regex\":null,\"default\":null,"
               "\"paranoid\":false,\"messages\":{\"length\":\"Please, use an email address "
               "between 5 and 99 characters\",\"format\":\"Doesn't look like an email address "
               "to me\",\"unique\":\"We already have an account with that email\"},"
               "\"from\":null}");
    HAS(j.buf, "\"default\":\"2999-12-31T00:00:00Z\",\"paranoid\":true");
    HAS(j.buf, "{\"name\":\"permission\",\"type\":\"integer\"");
    HAS(j.buf, "\"default\":1,");
    HAS(j.buf, "\"belongs_to\":[{\"name\":\"tenant_ref\",\"model\":\"tenants\",\"fields\":[\"tenant\"],\"references\":[\"id\"]}");
    HAS(j.buf, "\"has_n\":[{\"name\":\"authorities\",\"model\":\"authorities\",\"through\":null},"
               "{\"name\":\"subscriptions\",\"model\":\"subscriptions\",\"through\":\"authorities\"}]");
    sb_free(&t);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
    tm_fx_free(&fx);

    /* hostile text in messages and regexes stays valid JSON */
    sb_reset(&j);
    PARSE_OK(&fx, "models:\n  x:\n    properties:\n      c: {type: string, format: regex, "
                  "regex: '^\"[\\\\]\\t$', messages: {format: \"say \\\"hi\\\"\\n\\\\\"}}\n");
    models_json(fx.ms, &j);
    msgpack_sbuffer_init(&sb);
    if (row_from_json_object(j.buf, j.len, &sb, err, sizeof err))
        t_fail(__FILE__, __LINE__, "models_json is not JSON (%s): %s", err, j.buf);
    HAS(j.buf, "\"regex\":\"^\\\"[\\\\\\\\]\\\\t$\"");
    HAS(j.buf, "\"messages\":{\"format\":\"say \\\"hi\\\"\\n\\\\\"}");
    msgpack_sbuffer_destroy(&sb);
    sb_free(&j);
    tm_fx_free(&fx);
}

static const TCase cases[] = {
    T_CASE(csv_rows_of_hostile_values),
    T_CASE(value_json_is_rows_json),
    T_CASE(csv_random_strings_read_back),
    T_CASE(ddl_has_types_keys_and_references),
    T_CASE(models_json_is_json),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "model_sql", cases);
}
