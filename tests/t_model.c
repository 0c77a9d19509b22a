/* t_model.c: what the model tests share (t_model.h): the models: section
 * read from YAML text, parse and validation checks that fail at the
 * caller's file:line, and the seed's models.
 * The tree is read with conf_read, as pipeline_load reads it. */
#include "t.h"
#include "t_model.h"
#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* load_yaml reads text into a tree with conf.h's reader. */
static ConfNode *load_yaml(const char *text)
{
    char err[300];
    ConfErr e = conf_err("models.yml", err, sizeof err);
    ConfNode *root = NULL;
    if (conf_read(&e, text, strlen(text), &root))
        t_fail(__FILE__, __LINE__, "test YAML does not parse: %s", err);
    return root;
}

int tm_fx_parse(Fx *fx, const char *yaml)
{
    memset(fx, 0, sizeof *fx);
    fx->tree = load_yaml(yaml);
    fx->rc = models_parse("models.yml", conf_get(fx->tree, "models"), &fx->ms, fx->err,
                          sizeof fx->err);
    return fx->rc;
}

void tm_fx_free(Fx *fx)
{
    models_free(fx->ms);
    conf_free(fx->tree);
    fx->ms = NULL;
    fx->tree = NULL;
}

void tm_parse_ok(const char *file, int line, Fx *fx, const char *yaml)
{
    if (tm_fx_parse(fx, yaml))
        t_fail(file, line, "models_parse failed: %s", fx->err);
    if (!fx->ms)
        t_fail(file, line, "models_parse gave no models");
}

/* tm_parse_err: yaml must fail at "models.yml:LINE: " with want in the message. */
void tm_parse_err(const char *file, int line, const char *yaml, int wline, const char *want)
{
    Fx fx;
    char at[64];
    int rc = tm_fx_parse(&fx, yaml);
    snprintf(at, sizeof at, "models.yml:%d: ", wline);
    if (rc != PL_EINVAL || fx.ms)
        t_fail(file, line, "models_parse returned %d, wanted PL_EINVAL", rc);
    if (getenv("T_SHOW_ERRORS"))
        fprintf(stderr, "%s\n", fx.err);
    if (strncmp(fx.err, at, strlen(at)) != 0)
        t_fail(file, line, "error '%s' does not start with '%s'", fx.err, at);
    if (!strstr(fx.err, want))
        t_fail(file, line, "error '%s' lacks '%s'", fx.err, want);
    tm_fx_free(&fx);
}

/* --------------------------------------------------------- row helpers */

void tm_pack_json(msgpack_sbuffer *sb, const char *json)
{
    char err[200];
    sb->size = 0;
    if (row_from_json(json, strlen(json), sb, err, sizeof err))
        t_fail(__FILE__, __LINE__, "bad test JSON %s: %s", json, err);
}

/* tm_validate runs model_validate on the JSON row; *out gets the normalised
 * row as JSON, errs the error array (with brackets). */
int tm_validate(const Model *m, const char *json, Strbuf *out, Strbuf *errs, size_t *nerr)
{
    msgpack_sbuffer in, mp;
    RowView v;
    int rc;

    msgpack_sbuffer_init(&in);
    msgpack_sbuffer_init(&mp);
    tm_pack_json(&in, json);
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
void tm_errs_are_json(const char *file, int line, const Strbuf *errs, size_t nerr)
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

void tm_v_ok(const char *file, int line, const Model *m, const char *json, const char *want)
{
    Strbuf out, errs;
    size_t nerr = 99;
    sb_init(&out);
    sb_init(&errs);
    int rc = tm_validate(m, json, &out, &errs, &nerr);
    if (rc)
        t_fail(file, line, "%s: model_validate returned %d: %s", json, rc, errs.buf);
    if (nerr != 0)
        t_fail(file, line, "%s: valid but nerrors %zu", json, nerr);
    if (want && strcmp(out.buf, want) != 0)
        t_fail(file, line, "%s\n  gave %s\n  want %s", json, out.buf, want);
    sb_free(&out);
    sb_free(&errs);
}

/* tm_v_bad: invalid, with want (a piece of the error array's JSON text). */
void tm_v_bad(const char *file, int line, const Model *m, const char *json, size_t wantn,
                  const char *want)
{
    Strbuf out, errs;
    size_t nerr = 0;
    sb_init(&out);
    sb_init(&errs);
    int rc = tm_validate(m, json, &out, &errs, &nerr);
    if (rc != PL_EINVAL)
        t_fail(file, line, "%s: model_validate returned %d, wanted PL_EINVAL (out %s)", json,
               rc, out.buf);
    if (wantn && nerr != wantn)
        t_fail(file, line, "%s: %zu errors, wanted %zu: %s", json, nerr, wantn, errs.buf);
    if (!strstr(errs.buf, want))
        t_fail(file, line, "%s: errors %s lack %s", json, errs.buf, want);
    tm_errs_are_json(file, line, &errs, nerr);
    sb_free(&out);
    sb_free(&errs);
}

void tm_v_each(const char *file, int line, const Model *m, const char *field,
               const char *const *values, size_t n, const char *want)
{
    char row[200];
    for (size_t i = 0; i < n; i++) {
        snprintf(row, sizeof row, "{\"id\":1,\"%s\":\"%s\"}", field, values[i]);
        if (want)
            tm_v_bad(file, line, m, row, 0, want);
        else
            tm_v_ok(file, line, m, row, NULL);
    }
}

/* ------------------------------------------------------------- the seed */

const char tm_seed_yaml[] =
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

const Field *tm_field(const Model *m, const char *name)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0)
            return &m->fields[i];
    t_fail(__FILE__, __LINE__, "no field %s", name);
}

