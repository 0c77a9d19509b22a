/* http_enrich.c: calls a service with fields of the staged row (GET with a
 * URL template over the row, or POST of chosen fields as JSON) and merges
 * chosen fields of the JSON answer into the row, in the commit that acks
 * the job and passes it on (the geocoding step).
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
    const char **from, **to;
    size_t nmerge;
    char **headers;
} EnrichStage;

typedef struct EnrichJob {
    JobRef ref;
    Strbuf url, row, post;
    char idem[160];
    const char *hdr[35];
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
    {"merge", KEY_MERGE, 1, 0, 0, STAGE_MERGE_HINT, NULL},
    STAGE_KEY_HEADERS,
    {0},
};

static int enrich_init(Stage *s, char *err, size_t errlen)
{
    const char *file = engine_pipeline(s->engine)->path;
    EnrichStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->method = "GET";
    int rc;
    if ((rc = stage_conf_str(s, "url", &k->url, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "method", &k->method, err, errlen)) != 0 ||
        (rc = stage_conf_strs(s, "send", &k->send, &k->nsend, err, errlen)) != 0 ||
        (rc = stage_conf_headers(s, &k->headers, err, errlen)) != 0)
        return rc;
    const ConfNode *m = conf_get(s->conf->node, "merge");
    if (!m || m->type != CONF_MAP || !m->n) {
        snprintf(err, errlen, "%s:%d: stage '%s': merge must map response fields to row fields",
                 file, s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    k->from = xcalloc(m->n, sizeof *k->from);
    k->to = xcalloc(m->n, sizeof *k->to);
    for (size_t i = 0; i < m->n; i++) {
        k->from[i] = m->keys[i];
        k->to[i] = m->kids[i]->type == CONF_SCALAR ? m->kids[i]->value : m->keys[i];
    }
    k->nmerge = m->n;
    for (unsigned i = 0; i < s->nslots; i++) {
        EnrichJob *j = s->slots[i].data;
        sb_init(&j->url);
        sb_init(&j->row);
        sb_init(&j->post);
    }
    return 0;
}

static void enrich_fini(Stage *s)
{
    EnrichStage *k = s->data;
    for (unsigned i = 0; i < s->nslots; i++) {
        EnrichJob *j = s->slots[i].data;
        sb_free(&j->url);
        sb_free(&j->row);
        sb_free(&j->post);
    }
    if (k) {
        free(k->send);
        free(k->from);
        free(k->to);
        stage_headers_free(k->headers);
    }
    free(k);
}

static void enrich_done(void *arg, const HttpResult *r)
{
    Slot *s = arg;
    EnrichJob *j = s->data;
    EnrichStage *k = s->stage->data;
    s->req = NULL;
    if (stage_http_outcome(s, r, j->url.buf))
        return;
    char err[256], why[512];
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(r->body, r->len, &mp, err, sizeof err) != 0) {
        snprintf(why, sizeof why, "malformed JSON from %s: %s", j->url.buf, err);
        msgpack_sbuffer_destroy(&mp);
        slot_bury(s, why);
        return;
    }
    slot_row_merge(s, j->ref.model, j->ref.key, j->ref.row, mp.data, mp.size, k->from, k->to,
                   k->nmerge);
    msgpack_sbuffer_destroy(&mp);
    slot_put(s, s->stage->conf->outputs[0], s->body.buf, s->body.len, NULL);
    slot_done(s);
}

/* post_body writes {"f": value, ...} of the send fields of row. */
static void post_body(Strbuf *out, const msgpack_object *row, const char **send, size_t n)
{
    sb_reset(out);
    sb_adds(out, "{");
    msgpack_sbuffer one;
    msgpack_sbuffer_init(&one);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *v = row_field(row, send[i]);
        if (i)
            sb_adds(out, ",");
        sb_add_json_string(out, send[i], strlen(send[i]));
        sb_adds(out, ":");
        if (!v) {
            sb_adds(out, "null");
            continue;
        }
        one.size = 0;
        row_pack_object(&pk, v);
        row_to_json(one.data, one.size, out);
    }
    sb_adds(out, "}");
    msgpack_sbuffer_destroy(&one);
}

static void enrich_start(Slot *s)
{
    EnrichStage *k = s->stage->data;
    EnrichJob *j = s->data;
    char err[256], why[512];
    if (stage_job_ref(s, &j->ref, err, sizeof err) != 0) {
        slot_bury(s, err);
        return;
    }
    int rc = stage_row(s->stage, j->ref.model, j->ref.key, j->ref.row, &j->row);
    if (rc) {
        snprintf(why, sizeof why, "staged row %s/%s: %s", j->ref.model, j->ref.key,
                 rc == PL_ENOROW ? "not found" : pl_strerror(rc));
        slot_bury(s, why);
        return;
    }
    RowView v;
    if (row_view(&v, j->row.buf, j->row.len) != 0) {
        slot_bury(s, "staged row is not valid msgpack");
        return;
    }
    rc = stage_template(k->url, &v.root, &j->url, err, sizeof err);
    int post = !strcmp(k->method, "POST");
    if (!rc && post)
        post_body(&j->post, &v.root, k->send, k->nsend);
    row_view_free(&v);
    if (rc) {
        slot_bury(s, err);
        return;
    }
    size_t n = 0;
    stage_idem_header(s, j->idem, sizeof j->idem);
    j->hdr[n++] = j->idem;
    j->hdr[n++] = "Accept: application/json";
    if (post)
        j->hdr[n++] = "Content-Type: application/json";
    for (char **h = k->headers; h && *h && n < 34; h++)
        j->hdr[n++] = *h;
    j->hdr[n] = NULL;
    HttpRequest rq = {.method = k->method, .url = j->url.buf, .headers = j->hdr,
                      .body = post ? j->post.buf : NULL, .len = post ? j->post.len : 0};
    http_request(s->stage->http, &rq, enrich_done, s, &s->req);
}

const StageKind kind_http_enrich = {
    .spec = {.name = "http_enrich", .article = "an", .keys = enrich_keys},
    .slot_size = sizeof(EnrichJob),
    .init = enrich_init, .start = enrich_start, .fini = enrich_fini};
