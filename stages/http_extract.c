/* http_extract.c: GET the record a job names (a URL template over the
 * job's fields), land the JSON object as a msgpack row in staging (a new
 * instance of the staged row (model, key): every fetch its own), and pass a
 * reference {"model","key","row_id"} to the next queue, all in the commit
 * that acks the job.
 *
 *   kind: http_extract
 *   url: http://127.0.0.1:9002/records/{id}
 *   key_field: id          # the job field that keys the staged row
 *   model: users           # default: the stage's name */
#include "common.h"
#include "engine.h"
#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ExtractStage {
    const char *url, *key_field, *model;
    char **headers;
} ExtractStage;

typedef struct ExtractJob {
    StageCall call;
    Strbuf key;
} ExtractJob;

static const ConfKey extract_keys[] = {
    {"url", KEY_TMPL, 1, 0, 0, STAGE_URL_HINT "records/{id}", NULL},
    {"key_field", KEY_STR, 0, 0, 0, NULL, NULL},
    {"model", KEY_MODEL_OPT, 0, 0, 0, NULL, NULL},
    STAGE_KEY_HEADERS,
    {0},
};

static int extract_init(Stage *s, char *err, size_t errlen)
{
    ExtractStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->key_field = "id";
    k->model = s->conf->name;
    int rc;
    if ((rc = stage_conf_str(s, "url", &k->url, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "key_field", &k->key_field, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "model", &k->model, err, errlen)) != 0)
        return rc;
    return stage_conf_headers(s, &k->headers, err, errlen);
}

static void extract_slot_init(Slot *s)
{
    ExtractJob *j = s->data;
    stage_call_init(&j->call, ((ExtractStage *)s->stage->data)->headers);
    sb_init(&j->key);
}

static void extract_slot_fini(Slot *s)
{
    ExtractJob *j = s->data;
    stage_call_free(&j->call);
    sb_free(&j->key);
}

static void extract_fini(Stage *s)
{
    ExtractStage *k = s->data;
    if (k)
        stage_headers_free(k->headers);
    free(k);
}

/* extract_answer lands the record the service sent. */
static void extract_answer(Slot *s, const msgpack_object *json, const void *mp, size_t len)
{
    ExtractJob *j = s->data;
    ExtractStage *k = s->stage->data;
    (void)json;
    slot_row_land(s, k->model, j->key.buf, mp, len, s->stage->conf->outputs[0]);
    slot_done(s);
}

static void extract_start(Slot *s)
{
    ExtractStage *k = s->stage->data;
    ExtractJob *j = s->data;
    const msgpack_object *body;
    char err[256];
    if (slot_body(s, &body, err, sizeof err) != 0) {
        slot_buryf(s, "job body: %s", err);
        return;
    }
    if (stage_template(k->url, body, &j->call.url, err, sizeof err) != 0) {
        slot_bury(s, err);
        return;
    }
    sb_reset(&j->key);
    if (row_field_text(body, k->key_field, &j->key) != 0) {
        slot_buryf(s, "key_field '%s' is missing in the job", k->key_field);
        return;
    }
    if (j->key.len > STAGING_KEY_MAX || (j->key.len && memchr(j->key.buf, 0, j->key.len))) {
        slot_buryf(s, "key_field '%s' of the job (%zu bytes) cannot key a staged row: at most %d "
                   "bytes, no NUL", k->key_field, j->key.len, STAGING_KEY_MAX);
        return;
    }
    static const char *const own[] = {"Accept: application/json", NULL};
    stage_http_json(s, &j->call, "GET", own, extract_answer);
}

const StageKind kind_http_extract = {
    .spec = {.name = "http_extract", .article = "an", .keys = extract_keys},
    .slot_size = sizeof(ExtractJob),
    .init = extract_init, .slot_init = extract_slot_init, .start = extract_start,
    .fini = extract_fini, .slot_fini = extract_slot_fini};
