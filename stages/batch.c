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
 * A timer (every min(1 s, seconds/4)) commits staging_seal_due for the
 * stage's models, which seals (or holds) open batches older than `seconds`;
 * every seal is logged with the batch id, model and rows once it is
 * committed. */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pl.h"
#include "staging.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS_DEFAULT 10000
#define SECONDS_DEFAULT 5.0
#define LOGGED_RING 64

typedef struct BatchStage BatchStage;

/* Ids is a small vector of batch ids. */
typedef struct Ids {
    uint64_t *v;
    size_t n, cap;
} Ids;

static void ids_add(Ids *a, uint64_t id)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] == id)
            return;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = id;
}

/* SealOp: the timer's commit. in: batches the appends may have sealed
 * (checked against the store: an append whose transaction was retried or
 * failed may name a batch that was not sealed); out: what to log. */
typedef struct SealOp {
    EngineOp eo;
    BatchStage *k;
    Ids in;
    BatchRec *out;
    size_t nout, cap;
} SealOp;

struct BatchStage {
    Stage *stage;
    const Models *ms;
    const Model *model;      /* NULL: each job's */
    SealPolicy *pol;         /* per model of ms, in ms order */
    ev_timer timer;
    SealOp op;
    int busy, stopped;
    pthread_mutex_t mu;      /* guards sealed: the appends add on the writer thread */
    Ids sealed;
    uint64_t logged[LOGGED_RING];
    size_t nlogged;
};

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
    BatchRec b;
    if ((rc = staging_append(t, j->ref.model, j->row.buf, j->row.len, j->pol, &b)) != 0)
        return rc;
    /* The batch holds the row now: this reference is used up, and the
     * last one deletes the staged row in this same commit. */
    if ((rc = staging_row_drop(t, j->ref.model, j->ref.key, j->ref.row, NULL)) != 0)
        return rc;
    if (b.state != BATCH_OPEN) {
        pthread_mutex_lock(&j->k->mu);
        ids_add(&j->k->sealed, b.id);
        pthread_mutex_unlock(&j->k->mu);
    }
    return 0;
}

static const SealPolicy *policy_of(const BatchStage *k, const Model *m)
{
    return &k->pol[m - k->ms->m];
}

static void batch_start(Slot *s)
{
    BatchStage *k = s->stage->data;
    BJob *j = s->data;
    char err[256], why[600];
    if (stage_job_ref(s, &j->ref, err, sizeof err) != 0) {
        snprintf(why, sizeof why, "%s; a batch stage takes references to staged rows", err);
        slot_bury(s, why);
        return;
    }
    const Model *m = models_find(k->ms, j->ref.model);
    if (!m) {
        snprintf(why, sizeof why, "model '%s' is not declared; declare it under models: or fix "
                 "the job", j->ref.model);
        slot_bury(s, why);
        return;
    }
    if (k->model && m != k->model) {
        snprintf(why, sizeof why, "the job is for model '%s' but stage '%s' seals '%s' batches",
                 j->ref.model, s->stage->conf->name, k->model->name);
        slot_bury(s, why);
        return;
    }
    /* Name a missing row now, with the reason; the commit reads the row
     * again (it is the row at commit time that goes into the batch). */
    int rc = stage_row(s->stage, j->ref.model, j->ref.key, j->ref.row, &j->row);
    if (rc) {
        snprintf(why, sizeof why, "staged row %s/%s: %s", j->ref.model, j->ref.key,
                 rc == PL_ENOROW ? "not found; nothing to put in a batch" : pl_strerror(rc));
        slot_bury(s, why);
        return;
    }
    j->pol = policy_of(k, m);
    slot_extra(s, append, j);
    slot_done(s);
}

/* ---------------------------------------------------------------- sealing */

static void out_add(SealOp *o, const BatchRec *b)
{
    for (size_t i = 0; i < o->nout; i++)
        if (o->out[i].id == b->id)
            return;
    if (o->nout == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->out = xrealloc(o->out, o->cap * sizeof *o->out);
    }
    o->out[o->nout++] = *b;
}

static int in_scope(const BatchStage *k, const char *model)
{
    if (k->model)
        return strcmp(k->model->name, model) == 0;
    return models_find(k->ms, model) != NULL;
}

static int seal_apply(Txn *t, CommitOp *op)
{
    SealOp *o = (SealOp *)op;
    BatchStage *k = o->k;
    BatchRec b;
    uint64_t id;
    int rc;
    o->nout = 0; /* apply may run again: start over */
    for (size_t i = 0; i < k->ms->n; i++) {
        const Model *m = &k->ms->m[i];
        if (k->model && m != k->model)
            continue;
        if ((rc = staging_seal_due(t, m->name, &k->pol[i], 0, &id)) != 0)
            return rc;
        if (id && (rc = batch_get(t, id, &b)) == 0)
            out_add(o, &b);
        else if (id && rc)
            return rc;
    }
    for (size_t i = 0; i < o->in.n; i++) {
        rc = batch_get(t, o->in.v[i], &b);
        if (rc == PL_ENOBATCH)
            continue;
        if (rc)
            return rc;
        if (b.state != BATCH_OPEN && in_scope(k, b.model))
            out_add(o, &b);
    }
    return 0;
}

static int logged(BatchStage *k, uint64_t id)
{
    for (size_t i = 0; i < k->nlogged && i < LOGGED_RING; i++)
        if (k->logged[i] == id)
            return 1;
    k->logged[k->nlogged++ % LOGGED_RING] = id;
    return 0;
}

static void seal_done(EngineOp *eo, int rc)
{
    SealOp *o = (SealOp *)eo;
    BatchStage *k = o->k;
    k->busy = 0;
    if (rc) {
        stage_log(k->stage, PL_LOG_ERROR, 0, "sealing due batches failed: %s; trying again",
                  pl_strerror(rc));
        /* The appends' seals are still to be confirmed: keep them. */
        pthread_mutex_lock(&k->mu);
        for (size_t i = 0; i < o->in.n; i++)
            ids_add(&k->sealed, o->in.v[i]);
        pthread_mutex_unlock(&k->mu);
        return;
    }
    for (size_t i = 0; i < o->nout; i++) {
        const BatchRec *b = &o->out[i];
        if (logged(k, b->id))
            continue;
        if (b->state == BATCH_HELD)
            stage_log(k->stage, PL_LOG_WARN, 0, "batch %llu (%s, %llu rows, %llu rejects) held: "
                      "%s", (unsigned long long)b->id, b->model, (unsigned long long)b->rows,
                      (unsigned long long)b->rejects, b->error);
        else
            stage_log(k->stage, PL_LOG_INFO, 0, "batch %llu (%s, %llu rows) %s",
                      (unsigned long long)b->id, b->model, (unsigned long long)b->rows,
                      batch_state_name(b->state));
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    BatchStage *k = container_of(w, BatchStage, timer);
    if (k->busy || k->stopped || k->stage->draining)
        return;
    SealOp *o = &k->op;
    o->in.n = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->sealed.n; i++)
        ids_add(&o->in, k->sealed.v[i]);
    k->sealed.n = 0;
    pthread_mutex_unlock(&k->mu);
    k->busy = 1;
    o->eo.op.apply = seal_apply;
    o->eo.loop_done = seal_done;
    engine_submit(k->stage->engine, &o->eo);
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
    {"rows", KEY_UINT, 0, 1, UINT32_MAX, NULL, NULL},
    {"seconds", KEY_SECS, 0, 0.01, CONF_SECS_MAX, NULL, NULL},
    {0},
};

static int batch_init(Stage *s, char *err, size_t errlen)
{
    const Pipeline *p = engine_pipeline(s->engine);
    const char *file = p->path, *name = NULL;
    unsigned long long rows = ROWS_DEFAULT;
    double secs = SECONDS_DEFAULT;
    int rc;
    BatchStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    k->op.k = k;
    pthread_mutex_init(&k->mu, NULL);
    if ((rc = stage_conf_str(s, "model", &name, err, errlen)) != 0 ||
        (rc = stage_conf_uint(s, "rows", &rows, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "seconds", &secs, err, errlen)) != 0)
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
    if (rows == 0)
        rows = ROWS_DEFAULT;
    k->pol = xcalloc(k->ms->n ? k->ms->n : 1, sizeof *k->pol);
    for (size_t i = 0; i < k->ms->n; i++) {
        SealPolicy *sp = &k->pol[i];
        sp->rows = rows;
        sp->after_s = secs;
        sp->max_rejects = UINT64_MAX;
        sp->max_reject_rate = 1.0;
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
    for (unsigned i = 0; i < s->nslots; i++) {
        BJob *j = s->slots[i].data;
        j->k = k;
        sb_init(&j->row);
    }
    double every = secs / 4 < 1.0 ? secs / 4 : 1.0;
    ev_timer_init(&k->timer, on_timer, every, every);
    ev_timer_start(s->loop, &k->timer);
    stage_log(s, PL_LOG_INFO, 0, "sealing %s batches at %llu rows or after %g s",
              k->model ? k->model->name : "every model's", rows, secs);
    return 0;
}

static void batch_stop(Stage *s)
{
    BatchStage *k = s->data;
    if (!k)
        return;
    k->stopped = 1;
    ev_timer_stop(s->loop, &k->timer);
}

static void batch_fini(Stage *s)
{
    BatchStage *k = s->data;
    if (!k)
        return;
    ev_timer_stop(s->loop, &k->timer);
    /* A commit still in flight (a forced stop) reads these: leave them. */
    if (k->busy || s->in_flight)
        return;
    for (unsigned i = 0; i < s->nslots; i++) {
        BJob *j = s->slots[i].data;
        sb_free(&j->row);
    }
    free(k->op.in.v);
    free(k->op.out);
    free(k->sealed.v);
    free(k->pol);
    pthread_mutex_destroy(&k->mu);
    free(k);
    s->data = NULL;
}

const StageKind kind_batch = {
    .spec = {.name = "batch", .article = "a", .flags = KIND_SINK, .keys = batch_keys,
             .graph_note = "batches for qload"},
    .slot_size = sizeof(BJob),
    .init = batch_init, .start = batch_start, .stop = batch_stop, .fini = batch_fini};
