/* batch.c: the end of the line (D): appends each job's staged row to the
 * open batch of its model, which qload later COPYs into the warehouse.
 *
 *   kind: batch
 *   input: final
 *   model: users     # optional: default = the model named by each job
 *   rows: 10000      # seal a batch at this many rows (default 10000)
 *   seconds: 5       # seal an open batch this long after it opened (default 5)
 *
 * Each job is a reference {"model":M,"key":K,"row_id":N}. In the commit
 * that acks it (slot_extra) the staged row it names is read inside the
 * transaction, so the batch gets the row as it is at that instant, and
 * appended with staging_append; the reference is used up then, and the
 * last reference of the row deletes it in that same commit (staging.h), so
 * the staged rows do not outlive their batches. A batch that reaches
 * `rows` is sealed in that same commit. The hold thresholds of the policy are the strictest
 * reject_threshold of the pipeline's validate stages of the same model.
 * The stage's Sealer (sealer.h) seals (or holds) open batches older than
 * `seconds`, and logs every seal with the batch id, model and rows once it
 * is committed.
 *
 * Fused (apply.c): when the stage is the only reader of its input queue, a
 * row sent there is appended in the sender's commit (take_row) while the
 * queue is idle, with no reference job, no staged row instance, and no
 * reserve; the rows of a model whose stage would bury them (a model not
 * declared, or not the stage's) are declined and go through the queue. */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pl.h"
#include "sealer.h"
#include "staging.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct BatchStage {
    Stage *stage;
    const Models *ms;
    const Model *model;      /* NULL: each job's */
    SealPolicy *pol;         /* per model of ms, in ms order */
    Sealer sealer;
} BatchStage;

typedef struct BJob {
    BatchStage *k;
    JobRef ref;
    const SealPolicy *pol;
    Strbuf row;              /* the commit's copy of the staged row */
} BJob;

/* ---------------------------------------------------------------- append */

static int append(Txn *t, void *arg)
{
    BJob *j = arg;
    const void *mp;
    size_t len;
    /* PL_ENOROW (gone since start: a purge?) fails the hand-off, and the
     * job is buried with the reason. */
    int rc = staging_row_get(t, j->ref.model, j->ref.key, j->ref.row, &mp, &len, NULL);
    if (rc)
        return rc;
    /* A copy: the view dies with the next write of this transaction. */
    sb_reset(&j->row);
    sb_add(&j->row, mp, len);
    /* The batch takes the row under the model version it was validated
     * with (staging.h, "Model versions"), whatever the engine runs now. */
    uint64_t version;
    BatchRec b;
    if ((rc = staging_row_version(t, j->ref.model, j->ref.key, j->ref.row, &version)) != 0 ||
        (rc = staging_append(t, j->ref.model, version, j->row.buf, j->row.len, j->pol, &b)) != 0)
        return rc;
    /* The batch holds the row now: this reference is used up, and the
     * last one deletes the staged row in this same commit. */
    if ((rc = staging_row_drop(t, j->ref.model, j->ref.key, j->ref.row, NULL)) != 0)
        return rc;
    if (b.state != BATCH_OPEN)
        sealer_note(&j->k->sealer, b.id);
    return 0;
}

static const SealPolicy *policy_of(const BatchStage *k, const Model *m)
{
    return &k->pol[m - k->ms->m];
}

static int batch_take_row(Stage *s, Txn *t, const char *model, const char *key,
                          uint64_t version, const void *mp, size_t len, int *taken)
{
    (void)key;
    BatchStage *k = s->data;
    const Model *m = models_find(k->ms, model);
    *taken = 0;
    if (!m || (k->model && m != k->model))
        return 0; /* a slot buries it, with the reason */
    BatchRec b;
    /* Under the version the sender validated the row with, as append
     * takes it from the staged row (a row of another version seals the
     * open batch first: staging_append). */
    int rc = staging_append(t, model, version, mp, len, policy_of(k, m), &b);
    if (rc)
        return rc;
    if (b.state != BATCH_OPEN)
        sealer_note(&k->sealer, b.id);
    *taken = 1;
    return 0;
}

static void batch_took_rows(Stage *s)
{
    BatchStage *k = s->data;
    sealer_touch(&k->sealer);
}

static void batch_start(Slot *s)
{
    BatchStage *k = s->stage->data;
    BJob *j = s->data;
    char err[256];
    if (stage_job_ref(s, &j->ref, err, sizeof err) != 0) {
        slot_buryf(s, "%s; a batch stage takes references to staged rows", err);
        return;
    }
    const Model *m = models_find(k->ms, j->ref.model);
    if (!m) {
        slot_buryf(s, "model '%s' is not declared; declare it under models: or fix the job",
                   j->ref.model);
        return;
    }
    if (k->model && m != k->model) {
        slot_buryf(s, "the job is for model '%s' but stage '%s' seals '%s' batches", j->ref.model,
                   s->stage->conf->name, k->model->name);
        return;
    }
    /* Name a missing row now, with the reason; the commit reads the row
     * again (it is the row at commit time that goes into the batch). */
    if (stage_ref_row(s, &j->ref, &j->row, "nothing to put in a batch") != 0)
        return;
    j->pol = policy_of(k, m);
    sealer_touch(&k->sealer);
    slot_extra(s, append, j);
    slot_done(s);
}

/* ---------------------------------------------------------------- init */

/* threshold folds the reject_threshold of validate stage c into p (the
 * strictest wins). */
static void threshold(const char *file, const StageConf *c, SealPolicy *p)
{
    char err[256];
    const ConfNode *n = conf_get(c->node, "reject_threshold");
    unsigned long long count = UINT64_MAX;
    double rate = 1.0;
    if (!n || conf_threshold(file, n, &count, &rate, err, sizeof err) != 0)
        return;
    if (count < p->max_rejects)
        p->max_rejects = count;
    if (rate < p->max_reject_rate)
        p->max_reject_rate = rate;
}

static const ConfKey batch_keys[] = {
    {"model", KEY_MODEL, 0, 0, 0, NULL, NULL},
    SEALER_KEY_ROWS,
    SEALER_KEY_SECONDS,
    {0},
};

static int batch_init(Stage *s, char *err, size_t errlen)
{
    const Pipeline *p = engine_pipeline(s->engine);
    const char *file = p->path, *name = NULL;
    SealPolicy pol;
    int rc;
    BatchStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    if ((rc = stage_conf_str(s, "model", &name, err, errlen)) != 0 ||
        (rc = sealer_conf(s, &pol, err, errlen)) != 0)
        return rc;
    if (!p->models) {
        snprintf(err, errlen, "%s:%d: stage '%s': a batch stage needs the models: section; "
                 "declare the model of its rows under models:", file, s->conf->line,
                 s->conf->name);
        return PL_EINVAL;
    }
    k->ms = p->models;
    if (name && !(k->model = models_find(k->ms, name))) {
        snprintf(err, errlen, "%s:%d: stage '%s': model '%s' is not declared; declare it under "
                 "models:", file, s->conf->line, s->conf->name, name);
        return PL_EINVAL;
    }
    k->pol = xcalloc(k->ms->n ? k->ms->n : 1, sizeof *k->pol);
    for (size_t i = 0; i < k->ms->n; i++) {
        SealPolicy *sp = &k->pol[i];
        *sp = pol;
        for (size_t j = 0; j < p->nstages; j++) {
            const StageConf *c = &p->stages[j];
            const char *vm = NULL;
            char e2[256];
            if (strcmp(c->kind, "validate") == 0 &&
                conf_str(file, c->node, "model", &vm, e2, sizeof e2) == 0 && vm &&
                strcmp(vm, k->ms->m[i].name) == 0)
                threshold(file, c, sp);
        }
    }
    sealer_init(&k->sealer, s, pol.after_s);
    for (size_t i = 0; i < k->ms->n; i++)
        if (!k->model || &k->ms->m[i] == k->model)
            sealer_add(&k->sealer, k->ms->m[i].name, &k->pol[i]);
    sealer_start(&k->sealer);
    stage_log(s, PL_LOG_INFO, 0, "sealing %s batches at %llu rows or after %g s",
              k->model ? k->model->name : "every model's", (unsigned long long)pol.rows,
              pol.after_s);
    return 0;
}

static void batch_slot_init(Slot *s)
{
    BJob *j = s->data;
    j->k = s->stage->data;
    sb_init(&j->row);
}

static void batch_slot_fini(Slot *s)
{
    sb_free(&((BJob *)s->data)->row);
}

static void batch_stop(Stage *s)
{
    BatchStage *k = s->data;
    if (!k)
        return;
    sealer_stop(&k->sealer);
}

static void batch_fini(Stage *s)
{
    BatchStage *k = s->data;
    if (!k)
        return;
    sealer_stop(&k->sealer);
    /* A commit still in flight (a forced stop) reads these: leave them. */
    if (sealer_busy(&k->sealer) || s->in_flight)
        return;
    sealer_free(&k->sealer);
    free(k->pol);
    free(k);
    s->data = NULL;
}

const StageKind kind_batch = {
    .spec = {.name = "batch", .article = "a", .flags = KIND_SINK, .keys = batch_keys,
             .graph_note = "batches for qload"},
    .slot_size = sizeof(BJob),
    .init = batch_init, .slot_init = batch_slot_init, .start = batch_start, .stop = batch_stop,
    .fini = batch_fini, .slot_fini = batch_slot_fini, .take_row = batch_take_row,
    .took_rows = batch_took_rows};
