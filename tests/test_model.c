/* test_model.c: engine/data/model.c: parsing the models: section (the seed's
 * users model, every error with its line and hint, load order), validation
 * of every rule and type (rows built from JSON), drift policies, soft
 * deletes, message overrides, row keys, CSV for COPY with hostile values
 * (checked byte for byte and by reading it back with a CSV reader that
 * follows PostgreSQL's rules), DDL text and the JSON export.
 *
 * The tree is built here from a YAML file with libyaml's document API, so
 * these tests do not depend on conf.c's reader (and they check that a tree
 * built without key lines, ConfNode.klines NULL, reads the same). */
#include "t.h"
#include "model.h"
#include "pl.h"
#include "row.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ------------------------------------------------------------ YAML tree */

static ConfNode *conv(yaml_document_t *d, yaml_node_t *yn)
{
    ConfNode *n = calloc(1, sizeof *n);
    T_CHECK(n && yn);
    n->line = (int)yn->start_mark.line + 1;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n->type = CONF_SCALAR;
        n->value = strndup((const char *)yn->data.scalar.value, yn->data.scalar.length);
        n->quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        break;
    case YAML_SEQUENCE_NODE:
        n->type = CONF_SEQ;
        n->n = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        n->kids = calloc(n->n + 1, sizeof *n->kids);
        for (size_t i = 0; i < n->n; i++)
            n->kids[i] = conv(d, yaml_document_get_node(d, yn->data.sequence.items.start[i]));
        break;
    case YAML_MAPPING_NODE:
        n->type = CONF_MAP;
        n->n = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        n->kids = calloc(n->n + 1, sizeof *n->kids);
        n->keys = calloc(n->n + 1, sizeof *n->keys);
        for (size_t i = 0; i < n->n; i++) {
            yaml_node_pair_t *p = &yn->data.mapping.pairs.start[i];
            yaml_node_t *k = yaml_document_get_node(d, p->key);
            T_CHECK(k->type == YAML_SCALAR_NODE);
            n->keys[i] = strndup((const char *)k->data.scalar.value, k->data.scalar.length);
            n->kids[i] = conv(d, yaml_document_get_node(d, p->value));
        }
        break;
    default:
        T_CHECK(!"unexpected YAML node");
    }
    return n;
}

static void tree_free(ConfNode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++) {
        if (n->keys)
            free(n->keys[i]);
        tree_free(n->kids[i]);
    }
    free(n->keys);
    free(n->kids);
    free(n->value);
    free(n);
}

/* load_yaml writes text to a file and reads it back as a tree. */
static ConfNode *load_yaml(const char *text)
{
    char path[512];
    yaml_parser_t p;
    yaml_document_t d;
    FILE *f;

    /* t_dir() is a data directory to be; the file goes beside it */
    snprintf(path, sizeof path, "%s.models.yml", t_dir());
    f = fopen(path, "w");
    T_CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
    f = fopen(path, "rb");
    T_CHECK(f);
    T_CHECK(yaml_parser_initialize(&p));
    yaml_parser_set_input_file(&p, f);
    if (!yaml_parser_load(&p, &d))
        t_fail(__FILE__, __LINE__, "test YAML does not parse: %s at line %zu", p.problem,
               p.problem_mark.line + 1);
    ConfNode *root = conv(&d, yaml_document_get_root_node(&d));
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
    fclose(f);
    return root;
}

/* Fx: a parsed models: section and the tree its names point into. */
typedef struct Fx {
    ConfNode *tree;
    Models *ms;
    char err[600];
    int rc;
} Fx;

static int fx_parse(Fx *fx, const char *yaml)
{
    memset(fx, 0, sizeof *fx);
    fx->tree = load_yaml(yaml);
    fx->rc = models_parse("models.yml", conf_get(fx->tree, "models"), &fx->ms, fx->err,
                          sizeof fx->err);
    return fx->rc;
}

static void fx_free(Fx *fx)
{
    models_free(fx->ms);
    tree_free(fx->tree);
    fx->ms = NULL;
    fx->tree = NULL;
}

static void parse_ok(const char *file, int line, Fx *fx, const char *yaml)
{
    if (fx_parse(fx, yaml))
        t_fail(file, line, "models_parse failed: %s", fx->err);
    if (!fx->ms)
        t_fail(file, line, "models_parse gave no models");
}
#define PARSE_OK(fx, yaml) parse_ok(__FILE__, __LINE__, fx, yaml)

/* parse_err: yaml must fail at "models.yml:LINE: " with want in the message. */
static void parse_err(const char *file, int line, const char *yaml, int wline, const char *want)
{
    Fx fx;
    char at[64];
    int rc = fx_parse(&fx, yaml);
    snprintf(at, sizeof at, "models.yml:%d: ", wline);
    if (rc != PL_EINVAL || fx.ms)
        t_fail(file, line, "models_parse returned %d, wanted PL_EINVAL", rc);
    if (getenv("T_SHOW_ERRORS"))
        fprintf(stderr, "%s\n", fx.err);
    if (strncmp(fx.err, at, strlen(at)) != 0)
        t_fail(file, line, "error '%s' does not start with '%s'", fx.err, at);
    if (!strstr(fx.err, want))
        t_fail(file, line, "error '%s' lacks '%s'", fx.err, want);
    fx_free(&fx);
}
#define PARSE_ERR(yaml, wline, want) parse_err(__FILE__, __LINE__, yaml, wline, want)

/* --------------------------------------------------------- row helpers */

static void pack_json(msgpack_sbuffer *sb, const char *json)
{
    char err[200];
    sb->size = 0;
    if (row_from_json(json, strlen(json), sb, err, sizeof err))
        t_fail(__FILE__, __LINE__, "bad test JSON %s: %s", json, err);
}

/* validate runs model_validate on the JSON row; *out gets the normalised
 * row as JSON, errs the error array (with brackets). */
static int validate(const Model *m, const char *json, Strbuf *out, Strbuf *errs, size_t *nerr)
{
    msgpack_sbuffer in, mp;
    RowView v;
    int rc;

    msgpack_sbuffer_init(&in);
    msgpack_sbuffer_init(&mp);
    pack_json(&in, json);
    T_OK(row_view(&v, in.data, in.size));
    sb_reset(out);
    sb_reset(errs);
    sb_adds(errs, "[");
    rc = model_validate(m, &v.root, &mp, errs, nerr);
    sb_adds(errs, "]");
    if (rc == 0)
        T_OK(row_to_json(mp.data, mp.size, out));
    row_view_free(&v);
    msgpack_sbuffer_destroy(&in);
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

/* The errors must always be a JSON array of nerr objects. */
static void errs_are_json(const char *file, int line, const Strbuf *errs, size_t nerr)
{
    msgpack_sbuffer sb;
    RowView v;
    char err[200];
    msgpack_sbuffer_init(&sb);
    if (row_from_json(errs->buf, errs->len, &sb, err, sizeof err))
        t_fail(file, line, "errors are not JSON: %s (%s)", errs->buf, err);
    T_OK(row_view(&v, sb.data, sb.size));
    if (v.root.type != MSGPACK_OBJECT_ARRAY || v.root.via.array.size != nerr)
        t_fail(file, line, "errors %s: not an array of %zu", errs->buf, nerr);
    for (uint32_t i = 0; i < v.root.via.array.size; i++) {
        const msgpack_object *o = &v.root.via.array.ptr[i];
        if (!row_field(o, "field") || !row_field(o, "rule") || !row_field(o, "message"))
            t_fail(file, line, "error %u of %s lacks field, rule or message", i, errs->buf);
    }
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
}

static void v_ok(const char *file, int line, const Model *m, const char *json, const char *want)
{
    Strbuf out, errs;
    size_t nerr = 99;
    sb_init(&out);
    sb_init(&errs);
    int rc = validate(m, json, &out, &errs, &nerr);
    if (rc)
        t_fail(file, line, "%s: model_validate returned %d: %s", json, rc, errs.buf);
    if (nerr != 0)
        t_fail(file, line, "%s: valid but nerrors %zu", json, nerr);
    if (want && strcmp(out.buf, want) != 0)
        t_fail(file, line, "%s\n  gave %s\n  want %s", json, out.buf, want);
    sb_free(&out);
    sb_free(&errs);
}
#define V_OK(m, json, want) v_ok(__FILE__, __LINE__, m, json, want)

/* v_bad: invalid, with want (a piece of the error array's JSON text). */
static void v_bad(const char *file, int line, const Model *m, const char *json, size_t wantn,
                  const char *want)
{
    Strbuf out, errs;
    size_t nerr = 0;
    sb_init(&out);
    sb_init(&errs);
    int rc = validate(m, json, &out, &errs, &nerr);
    if (rc != PL_EINVAL)
        t_fail(file, line, "%s: model_validate returned %d, wanted PL_EINVAL (out %s)", json,
               rc, out.buf);
    if (wantn && nerr != wantn)
        t_fail(file, line, "%s: %zu errors, wanted %zu: %s", json, nerr, wantn, errs.buf);
    if (!strstr(errs.buf, want))
        t_fail(file, line, "%s: errors %s lack %s", json, errs.buf, want);
    errs_are_json(file, line, &errs, nerr);
    sb_free(&out);
    sb_free(&errs);
}
#define V_BAD(m, json, want) v_bad(__FILE__, __LINE__, m, json, 0, want)
#define V_BADN(m, json, n, want) v_bad(__FILE__, __LINE__, m, json, n, want)

/* ------------------------------------------------------------- the seed */

static const char seed_yaml[] =
    "models:\n"                                                                   /* 1 */
    "  subscriptions:\n"
    "    properties:\n"
    "      id: {type: serial, key: true}\n"
    "      authority_id: {type: bigint}\n"                                       /* 5 */
    "    belongs_to:\n"
    "      authority: {model: authorities, fields: [authority_id]}\n"
    "  users:\n"
    "    properties:\n"
    "      id: {type: serial, key: true}\n"                                      /* 10 */
    "      tenant: {type: integer, min: 0, required: true, key: true}\n"
    "      first_name: {type: string, length: 50, required: true}\n"
    "      last_name: {type: string, length: 50, required: true}\n"
    "      title: {type: string, length: 50}\n"
    "      email:\n"                                                             /* 15 */
    "        type: string\n"
    "        length: [5, 99]\n"
    "        unique: true\n"
    "        format: email\n"
    "        messages:\n"                                                        /* 20 */
    "          length: \"Please, use an email address between 5 and 99 characters\"\n"
    "          format: \"Doesn't look like an email address to me\"\n"
    "          unique: \"We already have an account with that email\"\n"
    "      passhash: {type: string, length: 50}\n"
    "      salt: {type: string, length: 50}\n"                                   /* 25 */
    "      permission: {type: integer, default: 1}\n"
    "      phone: string\n"
    "      mobile: {type: string}\n"
    "      manager_id: {type: integer}\n"
    "      created_at: {type: datetime, required: true}\n"                       /* 30 */
    "      updated_at: {type: datetime}\n"
    "      deleted_at: {type: datetime, paranoid: true, default: \"2999-12-31T00:00:00Z\"}\n"
    "    belongs_to:\n"
    "      tenant_ref: {model: tenants, fields: [tenant]}\n"
    "      manager: {model: users, fields: [manager_id, tenant]}\n"              /* 35 */
    "    has_n:\n"
    "      authorities: {model: authorities}\n"
    "      subscriptions: {model: subscriptions, through: authorities}\n"
    "  authorities:\n"
    "    properties:\n"                                                          /* 40 */
    "      id: {type: serial, key: true}\n"
    "      user_id: {type: integer, required: true}\n"
    "      user_tenant: {type: integer, required: true}\n"
    "      name: {type: string, required: true}\n"
    "    belongs_to:\n"                                                          /* 45 */
    "      user: {model: users, fields: [user_id, user_tenant]}\n"
    "  tenants:\n"
    "    properties:\n"
    "      id: {type: serial, key: true}\n"
    "      name: {type: string, required: true}\n";                              /* 50 */

static const Field *field(const Model *m, const char *name)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0)
            return &m->fields[i];
    t_fail(__FILE__, __LINE__, "no field %s", name);
}

static void seed_users_model_parses(void)
{
    Fx fx;
    PARSE_OK(&fx, seed_yaml);
    const Models *ms = fx.ms;
    T_EQ(ms->n, 4);
    const Model *u = models_find(ms, "users");
    T_CHECK(u && strcmp(u->table, "users") == 0 && u->line == 9);
    T_CHECK(!models_find(ms, "user"));
    T_EQ(u->nfields, 15);
    T_EQ(u->drift, DRIFT_REJECT);
    T_EQ(u->nkey, 2);
    T_CHECK(strcmp(u->fields[u->key[0]].name, "id") == 0);
    T_CHECK(strcmp(u->fields[u->key[1]].name, "tenant") == 0);
    T_CHECK(strcmp(u->fields[u->paranoid].name, "deleted_at") == 0);

    const Field *f = field(u, "id");
    T_CHECK(f->type == FT_SERIAL && f->key && f->line == 10);
    f = field(u, "tenant");
    T_CHECK(f->type == FT_INTEGER && f->required && f->key && f->has_min && f->min == 0 &&
            !f->has_max);
    f = field(u, "email");
    T_CHECK(f->type == FT_STRING && f->unique && f->format == FF_EMAIL && f->has_length);
    T_EQ(f->len_min, 5);
    T_EQ(f->len_max, 99);
    T_CHECK(strcmp(f->messages[RULE_LENGTH],
                   "Please, use an email address between 5 and 99 characters") == 0);
    T_CHECK(strcmp(f->messages[RULE_UNIQUE], "We already have an account with that email") == 0);
    T_CHECK(f->messages[RULE_REQUIRED] == NULL);
    f = field(u, "phone"); /* short form; DataMapper's default length */
    T_CHECK(f->type == FT_STRING && f->has_length && f->len_max == 50 && !f->required);
    f = field(u, "permission");
    T_CHECK(f->has_default && strcmp(f->default_text, "1") == 0);
    T_CHECK(f->default_mp.size == 1 && f->default_mp.data[0] == 1);
    f = field(u, "deleted_at");
    T_CHECK(f->paranoid && f->type == FT_DATETIME && f->has_default);

    T_EQ(u->nrels, 4);
    T_CHECK(strcmp(u->rels[0].name, "tenant_ref") == 0 && !u->rels[0].has_n);
    T_CHECK(strcmp(u->rels[0].model, "tenants") == 0 && u->rels[0].nfields == 1);
    T_CHECK(strcmp(u->rels[1].model, "users") == 0 && u->rels[1].nfields == 2);
    T_CHECK(strcmp(u->rels[1].fields[0], "manager_id") == 0);
    T_CHECK(u->rels[2].has_n && strcmp(u->rels[2].model, "authorities") == 0 &&
            !u->rels[2].through);
    T_CHECK(u->rels[3].has_n && strcmp(u->rels[3].through, "authorities") == 0);

    /* Parents first, whatever the file order (the self reference is ignored). */
    const char *want[] = {"tenants", "users", "authorities", "subscriptions"};
    for (size_t k = 0; k < 4; k++)
        T_CHECK(strcmp(ms->m[ms->order[k]].name, want[k]) == 0);
    fx_free(&fx);
}

static void load_order_keeps_file_order_among_equals(void)
{
    Fx fx;
    PARSE_OK(&fx, "models:\n"
                  "  c: {properties: {id: {type: integer, key: true}, b: integer},"
                  " belongs_to: {bb: {model: b, fields: b}}}\n"
                  "  x: {properties: {id: integer}}\n"
                  "  b: {properties: {id: {type: integer, key: true}, a: integer},"
                  " belongs_to: {aa: {model: a, fields: [a]}}}\n"
                  "  a: {properties: {id: {type: bigint, key: true}}}\n"
                  "  y: {properties: {id: integer}}\n");
    /* Each step takes the first model in file order whose parents are all
     * placed: x, then a (c and b still wait), then b, then c, then y. */
    const char *want[] = {"x", "a", "b", "c", "y"};
    T_EQ(fx.ms->n, 5);
    for (size_t k = 0; k < 5; k++)
        if (strcmp(fx.ms->m[fx.ms->order[k]].name, want[k]) != 0)
            t_fail(__FILE__, __LINE__, "order[%zu] is %s, want %s", k,
                   fx.ms->m[fx.ms->order[k]].name, want[k]);
    fx_free(&fx);
}

/* ----------------------------------------------------------- parse errors */

static void parse_errors_name_line_and_fix(void)
{
#define M1 "models:\n  users:\n    properties:\n"
    PARSE_ERR(M1 "      id: {type: integer, lenght: 5}\n", 4, "unknown key 'lenght'; did you mean 'length'?");
    PARSE_ERR(M1 "      id: {type: integer, colour: 5}\n", 4, "unknown key 'colour'; a property takes type, required");
    PARSE_ERR(M1 "      id: {type: strng}\n", 4, "type: unknown type 'strng'; did you mean 'string'?");
    PARSE_ERR(M1 "      id: {type: blob}\n", 4, "unknown type 'blob'; use one of serial, integer");
    PARSE_ERR(M1 "      id: blob\n", 4, "unknown type 'blob'");
    PARSE_ERR(M1 "      id: {required: true}\n", 4, "type: is required");
    PARSE_ERR(M1 "      id: [1, 2]\n", 4, "expected a map like {type: string");
    PARSE_ERR(M1 "      id: integer\n      code: {type: string, format: regex, regex: \"^[a-\"}\n",
              5, "regex: cannot compile '^[a-'");
    PARSE_ERR(M1 "      code: {type: string, format: regex}\n", 4, "format: regex needs regex:");
    PARSE_ERR(M1 "      code: {type: string, format: url, regex: \"^a$\"}\n", 4,
              "regex: only with format: regex");
    PARSE_ERR(M1 "      code: {type: string, format: emial}\n", 4, "did you mean 'email'?");
    PARSE_ERR(M1 "      code: {type: integer, format: email}\n", 4, "format: only string and text");
    PARSE_ERR(M1 "      n: {type: integer, length: 5}\n", 4, "length: only string and text properties have a length (this one is integer)");
    PARSE_ERR(M1 "      s: {type: string, min: 5}\n", 4, "use length: for the number of characters");
    PARSE_ERR(M1 "      s: {type: string, length: [9, 2]}\n", 4, "the minimum 9 is more than the maximum 2");
    PARSE_ERR(M1 "      s: {type: string, length: [1, 2, 3]}\n", 4, "length: expected a number of characters or [min, max]");
    PARSE_ERR(M1 "      s: {type: string, length: 0}\n", 4, "length: expected a whole number from 1");
    PARSE_ERR(M1 "      n: {type: integer, min: 5, max: 1}\n", 4, "max: 1 is less than min: 5");
    PARSE_ERR(M1 "      n: {type: integer, min: abc}\n", 4, "min: expected a number (got 'abc')");
    PARSE_ERR(M1 "      n: {type: decimal, precision: 4, scale: 5}\n", 4, "scale: 5 is more than precision: 4");
    PARSE_ERR(M1 "      n: {type: decimal, scale: 2}\n", 4, "scale: needs precision:");
    PARSE_ERR(M1 "      n: {type: integer, precision: 2}\n", 4, "precision: only decimal");
    PARSE_ERR(M1 "      n: {type: integer, key: maybe}\n", 4, "key: expected true or false (got 'maybe')");
    PARSE_ERR(M1 "      d: {type: date, paranoid: true}\n", 4, "paranoid: a soft-delete property must be a datetime (this one is date)");
    PARSE_ERR(M1 "      d: {type: datetime, paranoid: true}\n      e: {type: datetime, paranoid: true}\n", 5,
              "already has a soft-delete property 'd'");
    PARSE_ERR(M1 "      j: {type: json, key: true}\n", 4, "a json property cannot be part of the key");
    PARSE_ERR(M1 "      n: {type: integer, default: abc}\n", 4, "default: expected a whole number");
    PARSE_ERR(M1 "      n: {type: integer, default: 3000000000}\n", 4, "breaks the property's own rules: n must be an integer from");
    PARSE_ERR(M1 "      n: {type: integer, min: 5, default: 1}\n", 4, "default: 1 breaks the property's own rules: n must be at least 5");
    PARSE_ERR(M1 "      s: {type: string, length: [2, 3], default: abcd}\n", 4, "s must be at most 3 characters");
    PARSE_ERR(M1 "      s: {type: string, format: email, default: nope}\n", 4, "must be an email address");
    PARSE_ERR(M1 "      d: {type: date, default: 2026-02-30}\n", 4, "must be a real calendar date");
    PARSE_ERR(M1 "      d: {type: decimal, default: 1.2.3}\n", 4, "default: expected a number like 12.50");
    PARSE_ERR(M1 "      b: {type: boolean, default: maybe}\n", 4, "default: expected true or false");
    PARSE_ERR(M1 "      j: {type: json, default: '{a'}\n", 4, "default: is not valid JSON");
    PARSE_ERR(M1 "      s: {type: string, default: ~}\n", 4, "default: is empty");
    PARSE_ERR(M1 "      s: {type: string, messages: {lenght: x}}\n", 4, "messages: unknown rule 'lenght'; did you mean 'length'?");
    PARSE_ERR(M1 "      s: {type: string, messages: {colour: x}}\n", 4, "the rules are required, type, length");
    PARSE_ERR(M1 "      s: {type: string, messages: {length: \"\"}}\n", 4, "messages: length: is empty; give a value or remove the key");
    /* conf.h's getters: a number in quotes is a string, as everywhere in the file */
    PARSE_ERR(M1 "      s: {type: string, length: \"5\"}\n", 4, "length: expected a whole number from 1 to "
              "10485760 (got the string \"5\"); write it without quotes");
    PARSE_ERR(M1 "      n: {type: integer, required: 'yes'}\n", 4, "required: expected true or false (got "
              "the string \"yes\"); write it without quotes");
    PARSE_ERR(M1 "      bad-name: string\n", 4, "'bad-name' is not a valid property name");
    PARSE_ERR(M1 "      _deleted: boolean\n", 4, "_deleted is reserved");
#undef M1
    PARSE_ERR("models:\n  users:\n    drift: rejct\n    properties: {id: integer}\n", 3,
              "drift: unknown drift 'rejct'; did you mean 'reject'?");
    PARSE_ERR("models:\n  users:\n    drift_column: x\n    properties: {id: integer}\n", 3,
              "drift_column: is only used with drift: keep");
    PARSE_ERR("models:\n  users:\n    drift: keep\n    properties: {id: integer, extra: json}\n", 4,
              "property 'extra' is also the drift column");
    PARSE_ERR("models:\n  users:\n    table: x.users\n    properties: {id: integer}\n", 3,
              "names a schema");
    PARSE_ERR("models:\n  users:\n    tabel: x\n    properties: {id: integer}\n", 3,
              "model 'users': unknown key 'tabel'; did you mean 'table'?");
    PARSE_ERR("models:\n  users:\n    table: t\n    properties: {id: integer}\n"
              "  other:\n    table: t\n    properties: {id: integer}\n", 6,
              "table 't' is already the table of model 'users'");
    PARSE_ERR("models:\n  users:\n    table: t\n", 3, "properties: is required");
    PARSE_ERR("models:\n  users:\n    properties: {}\n", 3, "properties: expected a map of name");
    PARSE_ERR("models:\n  9users:\n    properties: {id: integer}\n", 3, "'9users' is not a valid model name");
    PARSE_ERR("models:\n  users: string\n", 2, "model 'users': expected a map with properties:");
    PARSE_ERR("models: {}\n", 1, "models: expected a map of models");
    PARSE_ERR("models: [a]\n", 1, "models: expected a map of models");

    /* Relations. */
#define M2 "models:\n  tenants:\n    properties: {id: {type: integer, key: true}, name: string}\n" \
           "  users:\n    properties: {id: {type: integer, key: true}, tenant: integer, t2: string}\n"
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenant, fields: [tenant]}\n", 7,
              "belongs_to 't': model: model 'tenant' is not declared; did you mean 'tenants'?");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: orgs, fields: [tenant]}\n", 7,
              "model 'orgs' is not declared; declare it under models: or fix the name");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [tenant, id]}\n", 7,
              "fields: lists 2 columns but the key of 'tenants' has 1 (id)");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants}\n", 7,
              "fields: is required; list this model's columns that hold the key of 'tenants' (id)");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [tenant_id]}\n", 7,
              "fields: 'tenant_id' is not a property of model 'users'");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [t2]}\n", 7,
              "fields: 't2' is string but the key field 'id' of 'tenants' is integer");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, feilds: [tenant]}\n", 7,
              "unknown key 'feilds'; did you mean 'fields'?");
    PARSE_ERR(M2 "    belongs_to: [tenants]\n", 6, "belongs_to: expected a map");
    PARSE_ERR(M2 "    has_n:\n      posts: {model: posts}\n", 7, "model 'posts' is not declared");
    PARSE_ERR(M2 "    has_n:\n      posts: {}\n", 7, "model 'posts' is not declared; declare it under models: or give model:");
    PARSE_ERR(M2 "    has_n:\n      tenants: {through: tenant}\n", 7,
              "through: model 'tenant' is not declared; did you mean 'tenants'?");
    PARSE_ERR(M2 "  keyless:\n    properties: {id: integer}\n"
              "  x:\n    properties: {k: integer}\n    belongs_to: {k: {model: keyless, fields: [k]}}\n",
              10, "model 'keyless' has no key to refer to");
#undef M2
    /* A cycle between different models names it; a self reference is fine. */
    PARSE_ERR("models:\n"
              "  a:\n    properties: {id: {type: integer, key: true}, b_id: integer}\n"
              "    belongs_to: {b: {model: b, fields: [b_id]}}\n"
              "  b:\n    properties: {id: {type: integer, key: true}, c_id: integer}\n"
              "    belongs_to: {c: {model: c, fields: [c_id]}}\n"
              "  c:\n    properties: {id: {type: integer, key: true}, a_id: integer, c_id: integer}\n"
              "    belongs_to: {a: {model: a, fields: [a_id]}, self: {model: c, fields: [c_id]}}\n",
              4, "belongs_to makes a cycle between models: a -> b -> c -> a");
}

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
    T_OK(validate(m, "{\"id\":-0,\"big\":1}", &out, &errs, &n));
    T_CHECK(strncmp(out.buf, "{\"id\":0,\"age\":null,\"big\":1,", strlen("{\"id\":0,\"age\":null,\"big\":1,")) == 0);
    sb_free(&out);
    sb_free(&errs);
    fx_free(&fx);
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
    T_OK(validate(m, "{\"id\":1,\"price\":\"123.45\",\"amount\":12345678901234567890.123456789}",
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
    fx_free(&fx);
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
    fx_free(&fx);
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
    char row[200];
    for (size_t i = 0; i < sizeof good_mail / sizeof *good_mail; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"mail\":\"%s\"}", good_mail[i]);
        V_OK(m, row, NULL);
    }
    for (size_t i = 0; i < sizeof bad_mail / sizeof *bad_mail; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"mail\":\"%s\"}", bad_mail[i]);
        V_BAD(m, row, "\"rule\":\"format\",\"message\":\"mail must be an email address");
    }
    for (size_t i = 0; i < sizeof good_url / sizeof *good_url; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"site\":\"%s\"}", good_url[i]);
        V_OK(m, row, NULL);
    }
    for (size_t i = 0; i < sizeof bad_url / sizeof *bad_url; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"site\":\"%s\"}", bad_url[i]);
        V_BAD(m, row, "site must be an http:// or https:// URL");
    }
    V_OK(m, "{\"id\":1,\"code\":\"NL123\"}", NULL);
    V_BAD(m, "{\"id\":1,\"code\":\"nl123\"}", "code must match ^[A-Z]{2}[0-9]+$ (got the string \\\"nl123\\\")");
    V_BAD(m, "{\"id\":1,\"code\":\"NL123 \"}", "code must match");
    fx_free(&fx);
}

static void datetimes_and_dates_follow_the_calendar(void)
{
    Fx fx;
    PARSE_OK(&fx, types_yaml);
    const Model *m = models_find(fx.ms, "t");
    static const char *good[] = {"2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456Z",
                                 "2026-01-31 12:00Z", "2024-02-29T00:00:00+02:00",
                                 "2026-12-31T23:59:59-08", "2026-06-01T05:30:00+0530",
                                 "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999z"};
    static const char *calendar[] = {"2026-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
                                     "1900-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                                     "2026-04-31T00:00:00Z", "2026-01-31T24:00:00Z",
                                     "2026-01-31T12:60:00Z", "2026-01-31T12:00:61Z",
                                     "0000-01-01T00:00:00Z", "2026-01-31T12:00:00+16:00"};
    static const char *form[] = {"2026-01-31", "2026-1-31T12:00:00Z", "2026-01-31T12",
                                 "2026-01-31T12:00:00.Z", "2026-01-31T12:00:00ZZ",
                                 "2026-01-31T12:00:00+2", "31/01/2026 12:00", "",
                                 "2026-01-31T12:00:00 Z", "2026-01-31T12:00:00.1234567890Z"};
    char row[200];
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"at\":\"%s\"}", good[i]);
        V_OK(m, row, NULL);
    }
    for (size_t i = 0; i < sizeof calendar / sizeof *calendar; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"at\":\"%s\"}", calendar[i]);
        V_BAD(m, row, "at must be a real calendar date and time");
    }
    for (size_t i = 0; i < sizeof form / sizeof *form; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"at\":\"%s\"}", form[i]);
        V_BAD(m, row, "at must be a date and time like 2026-01-31T12:00:00Z");
    }
    V_BAD(m, "{\"id\":1,\"at\":1700000000}", "at must be a date and time like 2026-01-31T12:00:00Z (got 1700000000)");
    /* no zone means UTC, and the normalised row says so */
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(validate(m, "{\"id\":1,\"at\":\"2026-01-31T12:00:00\"}", &out, &errs, &n));
    T_CHECK(strstr(out.buf, "\"at\":\"2026-01-31T12:00:00Z\""));
    T_OK(validate(m, "{\"id\":1,\"at\":\"2026-01-31T12:00:00+01:00\"}", &out, &errs, &n));
    T_CHECK(strstr(out.buf, "\"at\":\"2026-01-31T12:00:00+01:00\""));

    V_OK(m, "{\"id\":1,\"day\":\"2024-02-29\"}", NULL);
    V_BAD(m, "{\"id\":1,\"day\":\"2026-02-30\"}", "day must be a real calendar date (got the string \\\"2026-02-30\\\")");
    V_BAD(m, "{\"id\":1,\"day\":\"2026-02-28T00:00:00Z\"}", "day must be a date like 2026-01-31");
    V_BAD(m, "{\"id\":1,\"day\":20260228}", "day must be a date like 2026-01-31 (got 20260228)");
    sb_free(&out);
    sb_free(&errs);
    fx_free(&fx);
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
    fx_free(&fx);
}

static const char seed_defaults_want[] =
    "{\"id\":1,\"tenant\":2,\"first_name\":\"Ada\",\"last_name\":\"Lovelace\",\"title\":null,"
    "\"email\":\"ada@example.com\",\"passhash\":null,\"salt\":null,\"permission\":1,"
    "\"phone\":null,\"mobile\":null,\"manager_id\":null,\"created_at\":\"2026-01-01T00:00:00Z\","
    "\"updated_at\":null,\"deleted_at\":\"2999-12-31T00:00:00Z\"}";

static void seed_rows_defaults_and_message_overrides(void)
{
    Fx fx;
    PARSE_OK(&fx, seed_yaml);
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
    fx_free(&fx);
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
    fx_free(&fx);
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
    fx_free(&fx);
}

static void soft_deletes_keep_the_key_and_the_time(void)
{
    Fx fx;
    PARSE_OK(&fx, seed_yaml);
    const Model *u = models_find(fx.ms, "users"), *t = models_find(fx.ms, "tenants");
    V_OK(u, "{\"tenant\":2,\"id\":1,\"_deleted\":true,\"deleted_at\":\"2026-03-01T10:00:00Z\","
            "\"first_name\":12,\"junk\":1}",
         "{\"id\":1,\"tenant\":2,\"deleted_at\":\"2026-03-01T10:00:00Z\",\"_deleted\":true}");
    Strbuf out, errs;
    size_t n;
    sb_init(&out);
    sb_init(&errs);
    T_OK(validate(u, "{\"id\":1,\"tenant\":2,\"_deleted\":true}", &out, &errs, &n));
    /* the time now, as an ISO 8601 UTC string */
    T_CHECK(strncmp(out.buf, "{\"id\":1,\"tenant\":2,\"deleted_at\":\"20", 35) == 0);
    T_CHECK(strlen(out.buf) == strlen("{\"id\":1,\"tenant\":2,\"deleted_at\":\"2026-03-01T10:00:00.000Z\",\"_deleted\":true}"));
    T_OK(validate(u, "{\"id\":1,\"tenant\":2,\"_deleted\":true}", &out, &errs, &n));
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
    fx_free(&fx);

    PARSE_OK(&fx, "models:\n  nokey: {properties: {a: string}}\n");
    V_BAD(models_find(fx.ms, "nokey"), "{\"a\":\"x\",\"_deleted\":true}", "model 'nokey' has no key, so a row cannot be deleted");
    fx_free(&fx);
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
    T_OK(validate(m, row.buf, &out, &errs, &n));
    T_CHECK(strncmp(out.buf, "{\"id\":1,\"f0\":99,\"f1\":98,", 24) == 0);
    T_CHECK(strstr(out.buf, ",\"f99\":0}"));
    T_ERR(validate(m, "{\"id\":1}", &out, &errs, &n), PL_EINVAL);
    T_EQ(n, 100);
    errs_are_json(__FILE__, __LINE__, &errs, n);
    sb_free(&y);
    sb_free(&row);
    sb_free(&out);
    sb_free(&errs);
    fx_free(&fx);
}

/* ----------------------------------------------------------------- keys */

static int row_key(const Model *m, const char *json, Strbuf *out)
{
    msgpack_sbuffer sb;
    RowView v;
    msgpack_sbuffer_init(&sb);
    pack_json(&sb, json);
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
    PARSE_OK(&fx, seed_yaml);
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
    fx_free(&fx);
}

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
    pack_json(&in, json);
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
    fx_free(&fx);
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
    fx_free(&fx);

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
    fx_free(&fx);
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
    fx_free(&fx);
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
    PARSE_OK(&fx, seed_yaml);
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
    fx_free(&fx);

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
    fx_free(&fx);
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
    PARSE_OK(&fx, seed_yaml);
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
               "to me\",\"unique\":\"We already have an account with that email\"}}");
    HAS(j.buf, "\"default\":\"2999-12-31T00:00:00Z\",\"paranoid\":true");
    HAS(j.buf, "{\"name\":\"permission\",\"type\":\"integer\"");
    HAS(j.buf, "\"default\":1,");
    HAS(j.buf, "\"belongs_to\":[{\"name\":\"tenant_ref\",\"model\":\"tenants\",\"fields\":[\"tenant\"],\"references\":[\"id\"]}");
    HAS(j.buf, "\"has_n\":[{\"name\":\"authorities\",\"model\":\"authorities\",\"through\":null},"
               "{\"name\":\"subscriptions\",\"model\":\"subscriptions\",\"through\":\"authorities\"}]");
    sb_free(&t);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&sb);
    fx_free(&fx);

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
    fx_free(&fx);
}

static void rule_names_are_stable(void)
{
    static const char *const want[] = {"required", "type", "length", "min", "max", "format",
                                       "drift", "unique"};
    for (int r = 0; r < RULE_COUNT; r++)
        T_CHECK(strcmp(model_rule_name((Rule)r), want[r]) == 0);
    T_CHECK(strcmp(model_rule_name(RULE_COUNT), "unknown") == 0);
    T_CHECK(models_find(NULL, "x") == NULL);
    models_free(NULL);
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(seed_users_model_parses),
        T_CASE(load_order_keeps_file_order_among_equals),
        T_CASE(parse_errors_name_line_and_fix),
        T_CASE(integers_are_checked_never_coerced),
        T_CASE(decimals_take_numbers_and_numeric_strings),
        T_CASE(strings_count_code_points_and_must_be_utf8),
        T_CASE(formats_email_url_regex),
        T_CASE(datetimes_and_dates_follow_the_calendar),
        T_CASE(booleans_json_required_defaults),
        T_CASE(seed_rows_defaults_and_message_overrides),
        T_CASE(drift_reject_ignore_keep),
        T_CASE(one_field_is_checked_alone),
        T_CASE(soft_deletes_keep_the_key_and_the_time),
        T_CASE(many_fields_take_the_heap_path),
        T_CASE(row_keys_join_key_fields),
        T_CASE(csv_rows_of_hostile_values),
        T_CASE(value_json_is_rows_json),
        T_CASE(csv_random_strings_read_back),
        T_CASE(ddl_has_types_keys_and_references),
        T_CASE(models_json_is_json),
        T_CASE(rule_names_are_stable),
        {NULL, NULL},
    };
    return t_main(argc, argv, "model", cases);
}
