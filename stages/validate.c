/* validate.c: checks each row against its declared model (model.h), the
 * validate step (C) of the reference pipeline.
 *
 *   kind: validate
 *   input: validate
 *   model: users                   # required, declared under models:
 *   output: [geocode, identity]    # every valid row's job goes to every output
 *   reject_threshold: {count: 100, rate: 0.05}   # read by the batch stage
 *
 * A job is a reference {"model":M,"key":K,"row_id":N} to a staged row
 * (staging.h), or carries the row inline: {"model":M,"row":{...}} (its key
 * is then model_row_key of the normalised row). A valid row's normalised
 * form (defaults filled in, declared field order) replaces the staged row
 * (an inline one lands as a new instance), recording the model's version
 * (staging.h, "Model versions"), and a reference goes to every
 * output (the instance holds one reference per output); an invalid row
 * becomes a reject (`qctl rejects`) holding the row as it was, the errors,
 * this stage and its input queue, and a job to replay (a replay stages the
 * row again), and a reference's instance is let go; either way in ONE
 * commit with the ack. A body that is neither is buried with the reason.
 * Nothing is dropped.
 *
 * Where the row is read. A reference is read at start (stage_row, a short
 * read transaction on the loop) and validated on the loop, which keeps the
 * writer's transaction short and lets the reject be logged here. The
 * commit then compares the staged row with the bytes that were validated;
 * when another commit rewrote the row in between (a job that shares the
 * instance merged into it), it validates the current row again inside the
 * transaction, so a stale normalisation never overwrites a newer row (no
 * lost update). */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ValidateStage {
    const Model *model;
} ValidateStage;

/* VJob: one slot's job, read by the commit (slot_extra) on the writer
 * thread while the slot is committing; the loop does not touch it then. */
typedef struct VJob {
    Stage *stage;
    Slot *slot;
    uint64_t id;
    const Model *m;
    int ref;                  /* the body is a reference: check the row again in the commit */
    uint64_t row_id;          /* ref: the instance it names (0: the legacy row) */
    int valid;
    uint32_t pri;             /* valid: the priority of its outputs (slot_priority) */
    Strbuf key;               /* the staged row's key */
    Strbuf row;               /* the row that was validated (msgpack) */
    msgpack_sbuffer norm;     /* valid: the normalised row */
    Strbuf errors;            /* invalid: "[...]" */
    Strbuf out;               /* valid: the reference sent to the outputs (the commit's) */
    Strbuf replay;            /* invalid: the job a replay puts back on the input queue */
    /* the commit's own copies when the row changed under it */
    Strbuf cur, errors2;
    msgpack_sbuffer norm2;
} VJob;

/* ---------------------------------------------------------------- checking */

/* first_error writes the first error of errors ("[...]") into buf. */
static void first_error(const Strbuf *errors, char *buf, size_t n)
{
    size_t len = errors->len >= 2 ? errors->len - 2 : 0;
    stage_first_error(len ? errors->buf + 1 : "", len, buf, n);
}

/* key_error writes the error (rule: required or length) of a valid row
 * whose key cannot key a staged row: it has none, or len bytes, too many. */
static void key_error(const Model *m, size_t len, Strbuf *errors)
{
    sb_reset(errors);
    sb_adds(errors, "[{\"field\":");
    Strbuf names;
    sb_init(&names);
    for (size_t i = 0; i < m->nkey; i++) {
        if (i)
            sb_adds(&names, ",");
        sb_adds(&names, m->fields[m->key[i]].name);
    }
    sb_add_json_string(errors, names.buf ? names.buf : "", names.len);
    if (!len) {
        sb_adds(errors, ",\"rule\":\"required\",\"message\":\"the row has no value for its key (");
        sb_add(errors, names.buf ? names.buf : "", names.len);
        sb_adds(errors, "); a staged row needs its key\"}]");
    } else {
        sb_addf(errors, ",\"rule\":\"length\",\"message\":\"the row's key is %zu bytes long; a "
                "staged row's key holds at most %d\"}]", len, STAGING_KEY_MAX);
    }
    sb_free(&names);
}

/* check_obj validates the decoded row o against m: 1 when valid (norm
 * filled), 0 when not (errors holds the JSON array). */
static int check_obj(const Model *m, const msgpack_object *o, msgpack_sbuffer *norm, Strbuf *errors)
{
    size_t nerr = 0;
    norm->size = 0;
    sb_reset(errors);
    sb_adds(errors, "[");
    int rc = model_validate(m, o, norm, errors, &nerr);
    if (rc == 0)
        return 1;
    if (rc == PL_EFORMAT || nerr == 0) {
        sb_reset(errors);
        sb_adds(errors, "[{\"field\":\"\",\"rule\":\"type\",\"message\":\"the row is not a JSON "
                "object\"");
        sb_adds(errors, "}");
    }
    sb_adds(errors, "]");
    return 0;
}

/* check validates row (msgpack) against m, as check_obj. */
static int check(const Model *m, const void *row, size_t len, msgpack_sbuffer *norm,
                 Strbuf *errors)
{
    RowView v;
    if (row_view(&v, row, len) != 0) {
        norm->size = 0;
        sb_reset(errors);
        sb_adds(errors, "[{\"field\":\"\",\"rule\":\"type\",\"message\":\"the row is not valid "
                "msgpack\"}]");
        return 0;
    }
    int valid = check_obj(m, &v.root, norm, errors);
    row_view_free(&v);
    return valid;
}

/* row_key_of writes model_row_key of the row in mp into key; 0 or PL_EINVAL. */
static int row_key_of(const Model *m, const void *mp, size_t len, Strbuf *key)
{
    RowView v;
    sb_reset(key);
    if (row_view(&v, mp, len) != 0)
        return PL_EINVAL;
    int rc = model_row_key(m, &v.root, key);
    row_view_free(&v);
    return rc;
}

/* pack_row writes the decoded row o into out (msgpack). */
static void pack_row(const msgpack_object *o, Strbuf *out)
{
    msgpack_sbuffer rb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&rb);
    msgpack_packer_init(&pk, &rb, msgpack_sbuffer_write);
    row_pack_object(&pk, o);
    sb_reset(out);
    sb_add(out, rb.data, rb.size);
    msgpack_sbuffer_destroy(&rb);
}

/* ---------------------------------------------------------------- commit */

/* commit runs in the transaction that acks the job (slot_extra). */
static int commit(Txn *t, void *arg)
{
    VJob *j = arg;
    const char *model = j->m->name, *key = j->key.buf ? j->key.buf : "";
    const void *row = j->row.buf;
    size_t rowlen = j->row.len;
    const msgpack_sbuffer *norm = &j->norm;
    const Strbuf *errors = &j->errors;
    const StageConf *c = j->stage->conf;
    uint64_t inst = j->row_id;
    int valid = j->valid, rc;

    if (j->ref) {
        const void *cur;
        size_t curlen;
        /* Gone since start (a purge?): PL_ENOROW fails the hand-off and
         * the job is buried with the reason. */
        if ((rc = staging_row_get(t, model, key, inst, &cur, &curlen, NULL)) != 0)
            return rc;
        if (curlen != j->row.len || memcmp(cur, j->row.buf, curlen) != 0) {
            /* Rewritten since start: validate what is there now. */
            sb_reset(&j->cur);
            sb_add(&j->cur, cur, curlen);
            row = j->cur.buf;
            rowlen = j->cur.len;
            valid = check(j->m, row, rowlen, &j->norm2, &j->errors2);
            norm = &j->norm2;
            errors = &j->errors2;
            if (!valid) {
                char why[300];
                first_error(errors, why, sizeof why);
                stage_log(j->stage, PL_LOG_WARN, j->id, "rejected %s/%s (the row changed while "
                          "it was checked; checked again): %s", model, key, why);
            }
        }
    }
    if (valid) {
        /* Outputs fused to a stage that takes rows get the row itself in
         * this commit (slot_take_row); the others a reference each. */
        uint64_t taken = 0;
        uint32_t nref = 0;
        for (size_t i = 0; i < c->noutputs; i++) {
            int took = 0;
            if (i < 64 && (rc = slot_take_row(j->slot, t, c->outputs[i], model, key,
                                              j->m->version, norm->data, norm->size, &took)) != 0)
                return rc;
            if (took)
                taken |= 1ull << i;
            else
                nref++;
        }
        rc = 0;
        if (j->ref) {
            /* Normalised in place; one reference in, one per output out. */
            if (nref)
                rc = staging_row_put_valid(t, model, key, inst, j->m->version, norm->data,
                                           norm->size);
            if (!rc && nref > 1)
                rc = staging_row_hold(t, model, key, inst, nref - 1);
            else if (!rc && nref == 0)
                rc = staging_row_drop(t, model, key, inst, NULL);
        } else if (nref) {
            rc = staging_row_new_valid(t, model, key, j->m->version, norm->data, norm->size, nref,
                                       &inst);
        }
        sb_reset(&j->out);
        stage_ref_body(&j->out, model, key, inst);
        for (size_t i = 0; !rc && i < c->noutputs; i++) {
            if (i < 64 && (taken >> i & 1))
                continue;
            PutArgs pa = {.pri = j->pri, .body = j->out.buf, .len = j->out.len};
            uint64_t id;
            rc = queue_put(t, c->outputs[i], &pa, &id, NULL);
        }
    } else {
        RejectRec r = {.model = model, .key = key, .stage = c->name, .queue = c->input,
                       .row = row, .row_len = rowlen, .errors = errors->buf,
                       .errors_len = errors->len, .job = j->replay.buf, .job_len = j->replay.len};
        uint64_t rid;
        rc = reject_add(t, &r, &rid);
        if (!rc)
            rc = staging_note_reject(t, model);
        /* The reject holds the row now: the reference is used up. */
        if (!rc && j->ref)
            rc = staging_row_drop(t, model, key, inst, NULL);
    }
    return rc;
}

/* ---------------------------------------------------------------- start */

#define SHAPES "a validate job is {\"model\":M,\"key\":K} (a staged row) or {\"model\":M,\"row\":{...}}"

static void validate_start(Slot *s)
{
    ValidateStage *k = s->stage->data;
    VJob *j = s->data;
    const Model *m = k->model;
    char err[256];
    const msgpack_object *body;
    int rc;

    j->id = s->id;
    j->slot = s;
    j->m = m;
    j->ref = 0;
    j->row_id = 0;
    sb_reset(&j->row);
    sb_reset(&j->key);
    if (slot_body(s, &body, err, sizeof err) != 0) {
        slot_buryf(s, "job body: %s; " SHAPES, err);
        return;
    }
    sb_reset(&j->cur); /* scratch: the model named */
    if (row_field_text(body, "model", &j->cur) == 0 && strcmp(j->cur.buf, m->name) != 0) {
        slot_buryf(s, "the job is for model '%.100s' but stage '%s' validates '%s'; send it to "
                   "the validate stage of that model", j->cur.buf, s->stage->conf->name, m->name);
        return;
    }
    const msgpack_object *inl = row_field(body, "row");
    if (inl) {
        if (inl->type != MSGPACK_OBJECT_MAP) {
            slot_buryf(s, "job body: \"row\" is not a JSON object; " SHAPES);
            return;
        }
        /* Checked as decoded; its bytes are kept only for a reject. */
        j->ref = 0;
        j->valid = check_obj(m, inl, &j->norm, &j->errors);
        if (!j->valid)
            pack_row(inl, &j->row);
    } else if (row_field_text(body, "key", &j->key) == 0) {
        const msgpack_object *rid = row_field(body, "row_id");
        j->ref = 1;
        j->row_id = 0;
        if (rid && (rid->type != MSGPACK_OBJECT_POSITIVE_INTEGER || rid->via.u64 == 0)) {
            slot_buryf(s, "job body: \"row_id\" is not a positive integer; " SHAPES);
            return;
        }
        if (rid)
            j->row_id = rid->via.u64;
        if (j->key.len > STAGING_KEY_MAX || (j->key.len && memchr(j->key.buf, 0, j->key.len))) {
            slot_buryf(s, "job body: \"key\" (%zu bytes) is not a staged row's key (at most %d "
                       "bytes, no NUL); " SHAPES, j->key.len, STAGING_KEY_MAX);
            return;
        }
        if ((rc = stage_row(s->stage, m->name, j->key.buf, j->row_id, &j->row)) != 0) {
            slot_buryf(s, "staged row %s/%.200s: %s", m->name, j->key.buf,
                       rc == PL_ENOROW ? "not found; the job points at a row nobody staged (or "
                       "it was purged)" : pl_strerror(rc));
            return;
        }
    } else {
        slot_buryf(s, "job body has neither \"key\" nor \"row\"; " SHAPES);
        return;
    }

    if (j->ref)
        j->valid = check(m, j->row.buf, j->row.len, &j->norm, &j->errors);
    else {
        /* The key of an inline row: from the normalised row when it is
         * valid (no key: a reject), else as far as the raw row gives one. */
        if (j->valid && row_key_of(m, j->norm.data, j->norm.size, &j->key) != 0) {
            j->valid = 0;
            key_error(m, 0, &j->errors);
            pack_row(inl, &j->row);
        } else if (j->valid && j->key.len > STAGING_KEY_MAX) {
            j->valid = 0;
            key_error(m, j->key.len, &j->errors);
            pack_row(inl, &j->row);
        } else if (!j->valid && row_key_of(m, j->row.buf, j->row.len, &j->key) != 0) {
            sb_reset(&j->key);
            sb_adds(&j->key, "");
        }
    }
    if (j->valid) {
        /* The outputs' priority: the normalised row is their record. */
        RowView nv;
        char why[QUEUE_REASON_MAX];
        rc = row_view(&nv, j->norm.data, j->norm.size);
        if (rc == 0) {
            rc = slot_priority(s, &nv.root, &j->pri, why, sizeof why);
            row_view_free(&nv);
        } else {
            rc = slot_priority(s, NULL, &j->pri, why, sizeof why);
        }
        if (rc) {
            slot_bury(s, why);
            return;
        }
    }
    if (!j->valid) {
        /* A replay puts back a reference when there is a key (the replay
         * stages the row, possibly fixed, as a new instance), else the job
         * itself. */
        if ((!j->ref && !j->key.len) || j->key.len > STAGING_KEY_MAX) {
            sb_reset(&j->replay);
            sb_add(&j->replay, s->body.buf, s->body.len);
        } else {
            stage_ref_body(&j->replay, m->name, j->key.buf, 0);
        }
        char why[300];
        first_error(&j->errors, why, sizeof why);
        stage_log(s->stage, PL_LOG_WARN, s->id, "rejected %s/%s: %s", m->name,
                  j->key.len ? j->key.buf : "(no key)", why);
    }
    slot_extra(s, commit, j);
    slot_done(s);
}

/* ---------------------------------------------------------------- init */

static const ConfKey validate_keys[] = {
    {"model", KEY_MODEL, 1, 0, 0, STAGE_MODEL_HINT, NULL},
    {"reject_threshold", KEY_THRESHOLD, 0, 0, 0, NULL, NULL},
    {0},
};

static int validate_init(Stage *s, char *err, size_t errlen)
{
    const Pipeline *p = engine_pipeline(s->engine);
    const char *name = NULL;
    ValidateStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    int rc = stage_conf_str(s, "model", &name, err, errlen);
    if (rc)
        return rc;
    if (!name || !p->models || !(k->model = models_find(p->models, name))) {
        snprintf(err, errlen, "%s:%d: stage '%s': model '%s' is not declared; declare it under "
                 "models:", p->path, s->conf->line, s->conf->name, name ? name : "");
        return PL_EINVAL;
    }
    return 0;
}

static void validate_slot_init(Slot *s)
{
    VJob *j = s->data;
    j->stage = s->stage;
    sb_init(&j->key);
    sb_init(&j->row);
    sb_init(&j->errors);
    sb_init(&j->out);
    sb_init(&j->replay);
    sb_init(&j->cur);
    sb_init(&j->errors2);
    msgpack_sbuffer_init(&j->norm);
    msgpack_sbuffer_init(&j->norm2);
}

static void validate_slot_fini(Slot *s)
{
    VJob *j = s->data;
    sb_free(&j->key);
    sb_free(&j->row);
    sb_free(&j->errors);
    sb_free(&j->out);
    sb_free(&j->replay);
    sb_free(&j->cur);
    sb_free(&j->errors2);
    msgpack_sbuffer_destroy(&j->norm);
    msgpack_sbuffer_destroy(&j->norm2);
}

static void validate_fini(Stage *s)
{
    free(s->data);
    s->data = NULL;
}

const StageKind kind_validate = {
    .spec = {.name = "validate", .article = "a", .flags = KIND_FAN_OUT, .keys = validate_keys},
    .slot_size = sizeof(VJob),
    .init = validate_init, .slot_init = validate_slot_init, .start = validate_start,
    .fini = validate_fini, .slot_fini = validate_slot_fini};
