/* http_enrich.c: calls a service with fields of the staged row (GET with a
 * URL template over the row, or POST of chosen fields as JSON) and merges
 * chosen fields of the JSON answer into the row, in the commit that acks
 * the job and passes it on (the geocoding step).
 *
 * What the service answers is data from outside: before it touches the row
 * each merged value is checked against its field of the row's model
 * (stage_merge_check: type, length, format ...; an undeclared field by the
 * model's drift policy) and merged in its normalised form, as async_submit
 * does for callbacks. An answer with a value that breaks its field's rules
 * buries the job with the reasons and the row stays as it was: the service
 * answered, and asking again would likely get the same answer. A row of a
 * model the pipeline does not declare takes the values as sent.
 *
 *   kind: http_enrich
 *   url: http://127.0.0.1:9003/geocode?address={address}
 *   method: GET              # or POST, sending the `send` fields
 *   send: [address, city]
 *   merge: {lat: lat, lon: lon}   # response field: row field */
#include "common.h"
#include "engine.h"
#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct EnrichStage {
    const char *url, *method;
    const char **send;
    size_t nsend;
    StageMerge merge;
    char **headers;
    const Models *models;
} EnrichStage;

typedef struct EnrichJob {
    StageRowCall rc;
    msgpack_sbuffer norm;   /* the merged values, checked and normalised */
    Strbuf errors;          /* the rules they broke */
} EnrichJob;

/* check_method: GET or POST. */
static int check_method(const ConfErr *e, const char *key, const ConfNode *v)
{
    if (strcmp(v->value, "GET") && strcmp(v->value, "POST"))
        return conf_errat(e, v->line, "%s: expected GET or POST (got '%.64s')", key, v->value);
    return 0;
}

static const ConfKey enrich_keys[] = {
    {"url", KEY_TMPL, 1, 0, 0, STAGE_URL_HINT "geocode?city={city}", NULL},
    {"method", KEY_STR, 0, 0, 0, NULL, check_method},
    {"send", KEY_STRS, 0, 0, 0, NULL, NULL},
    STAGE_KEY_MERGE,
    STAGE_KEY_HEADERS,
    {0},
};

static int enrich_init(Stage *s, char *err, size_t errlen)
{
    EnrichStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->method = "GET";
    int rc;
    if ((rc = stage_conf_str(s, "url", &k->url, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "method", &k->method, err, errlen)) != 0 ||
        (rc = stage_conf_strs(s, "send", &k->send, &k->nsend, err, errlen)) != 0 ||
        (rc = stage_conf_headers(s, &k->headers, err, errlen)) != 0)
        return rc;
    if ((rc = stage_conf_merge(s, &k->merge, err, errlen)) != 0)
        return rc;
    k->models = engine_pipeline(s->engine)->models;
    return 0;
}

static void enrich_slot_init(Slot *s)
{
    EnrichJob *j = s->data;
    stage_rowcall_init(&j->rc, ((EnrichStage *)s->stage->data)->headers);
    msgpack_sbuffer_init(&j->norm);
    sb_init(&j->errors);
}

static void enrich_slot_fini(Slot *s)
{
    EnrichJob *j = s->data;
    stage_rowcall_free(&j->rc);
    msgpack_sbuffer_destroy(&j->norm);
    sb_free(&j->errors);
}

static void enrich_fini(Stage *s)
{
    EnrichStage *k = s->data;
    if (k) {
        free(k->send);
        stage_merge_free(&k->merge);
        stage_headers_free(k->headers);
    }
    free(k);
}

/* enrich_answer merges the chosen fields of the service's answer into the
 * row and passes the reference on, in the commit that acks the job. */
static void enrich_answer(Slot *s, const msgpack_object *json, const void *mp, size_t len)
{
    EnrichJob *j = s->data;
    EnrichStage *k = s->stage->data;
    (void)mp, (void)len;
    const Model *m = k->models ? models_find(k->models, j->rc.ref.model) : NULL;
    if (stage_merge_check(&k->merge, m, json, &j->norm, &j->errors) != 0) {
        char first[300];
        stage_first_error(j->errors.buf, j->errors.len, first, sizeof first);
        slot_buryf(s, "the answer of %s breaks model '%s': %s; the row is as it was; all the "
                   "failed rules: [%s]", j->rc.call.url.buf, j->rc.ref.model, first, j->errors.buf);
        return;
    }
    const char *const *to = (const char *const *)k->merge.to;
    slot_row_merge(s, j->rc.ref.model, j->rc.ref.key, j->rc.ref.row, j->norm.data, j->norm.size, to, to,
                   k->merge.n);
    slot_put(s, s->stage->conf->outputs[0], s->body.buf, s->body.len, NULL);
    slot_done(s);
}

static void enrich_start(Slot *s)
{
    EnrichStage *k = s->stage->data;
    EnrichJob *j = s->data;
    RowView v;
    char err[256];
    if (stage_rowcall_read(s, &j->rc, &v) != 0)
        return;
    int rc = stage_template(k->url, &v.root, &j->rc.call.url, err, sizeof err);
    int post = !strcmp(k->method, "POST");
    if (!rc && post) {
        /* {"f": value, ...} of the send fields */
        Strbuf *b = &j->rc.call.body;
        sb_reset(b);
        sb_adds(b, "{");
        if (k->nsend)
            stage_put_fields(b, &v.root, k->send, k->nsend);
        sb_adds(b, "}");
    }
    row_view_free(&v);
    if (rc) {
        slot_bury(s, err);
        return;
    }
    static const char *const get[] = {"Accept: application/json", NULL};
    static const char *const postj[] = {"Accept: application/json",
                                        "Content-Type: application/json", NULL};
    stage_http_json(s, &j->rc.call, k->method, post ? postj : get, enrich_answer);
}

const StageKind kind_http_enrich = {
    .spec = {.name = "http_enrich", .article = "an", .keys = enrich_keys},
    .slot_size = sizeof(EnrichJob),
    .init = enrich_init, .slot_init = enrich_slot_init, .start = enrich_start,
    .fini = enrich_fini, .slot_fini = enrich_slot_fini};
