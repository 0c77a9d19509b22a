/* sealer.c: see sealer.h. */
#include "sealer.h"
#include "common.h"
#include "engine.h"
#include "pl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROWS_DEFAULT 10000
#define SECONDS_DEFAULT 5.0

/* SealerOp: the timer's commit. in: the batches the appends noted, to be
 * confirmed against the store; out: what to log; open: a non-empty batch of
 * the models is still open (the timer goes on committing). */
struct SealerOp {
    EngineOp eo;
    Sealer *z;
    uint64_t *in;
    size_t nin, capin;
    BatchRec *out;
    size_t nout, capout;
    int open;
};

static void ids_add(uint64_t **v, size_t *n, size_t *cap, uint64_t id)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i] == id)
            return;
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = id;
}

static void out_add(SealerOp *o, const BatchRec *b)
{
    for (size_t i = 0; i < o->nout; i++)
        if (o->out[i].id == b->id)
            return;
    if (o->nout == o->capout) {
        o->capout = o->capout ? 2 * o->capout : 8;
        o->out = xrealloc(o->out, o->capout * sizeof *o->out);
    }
    o->out[o->nout++] = *b;
}

static int in_scope(const Sealer *z, const char *model)
{
    for (size_t i = 0; i < z->n; i++)
        if (!strcmp(z->models[i], model))
            return 1;
    return 0;
}

static int still_open(const BatchRec *b, void *arg)
{
    SealerOp *o = arg;
    if (b->rows > 0 && in_scope(o->z, b->model))
        o->open = 1;
    return 0;
}

static int seal_apply(Txn *t, CommitOp *op)
{
    SealerOp *o = (SealerOp *)op;
    Sealer *z = o->z;
    BatchRec b;
    uint64_t id;
    int rc;
    o->nout = 0; /* apply may run again: start over */
    o->open = 0;
    for (size_t i = 0; i < z->n; i++) {
        if ((rc = staging_seal_due(t, z->models[i], z->pols[i], 0, &id)) != 0)
            return rc;
        if (id && (rc = batch_get(t, id, &b)) != 0)
            return rc;
        if (id)
            out_add(o, &b);
    }
    for (size_t i = 0; i < o->nin; i++) {
        rc = batch_get(t, o->in[i], &b);
        if (rc == PL_ENOBATCH)
            continue;
        if (rc)
            return rc;
        if (b.state != BATCH_OPEN && in_scope(z, b.model))
            out_add(o, &b);
    }
    return batch_each(t, BATCH_OPEN, still_open, o);
}

static int logged(Sealer *z, uint64_t id)
{
    for (size_t i = 0; i < z->nlogged && i < SEALER_LOGGED; i++)
        if (z->logged[i] == id)
            return 1;
    z->logged[z->nlogged++ % SEALER_LOGGED] = id;
    return 0;
}

static void seal_done(EngineOp *eo, int rc)
{
    SealerOp *o = (SealerOp *)eo;
    Sealer *z = o->z;
    z->busy = 0;
    if (rc) {
        stage_log(z->stage, PL_LOG_ERROR, 0, "sealing due batches failed: %s; trying again",
                  pl_strerror(rc));
        /* The appends' seals are still to be confirmed: keep them. */
        pthread_mutex_lock(&z->mu);
        for (size_t i = 0; i < o->nin; i++)
            ids_add(&z->noted, &z->nnoted, &z->capnoted, o->in[i]);
        pthread_mutex_unlock(&z->mu);
        z->dirty = 1;
        return;
    }
    if (o->open)
        z->dirty = 1;
    for (size_t i = 0; i < o->nout; i++) {
        const BatchRec *b = &o->out[i];
        if (logged(z, b->id))
            continue;
        if (b->state == BATCH_HELD)
            stage_log(z->stage, PL_LOG_WARN, 0, "batch %llu (%s, %llu rows, %llu rejects) held: "
                      "%s", (unsigned long long)b->id, b->model, (unsigned long long)b->rows,
                      (unsigned long long)b->rejects, b->error);
        else
            stage_log(z->stage, PL_LOG_INFO, 0, "batch %llu (%s, %llu rows) %s",
                      (unsigned long long)b->id, b->model, (unsigned long long)b->rows,
                      batch_state_name(b->state));
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Sealer *z = container_of(w, Sealer, timer);
    SealerOp *o = z->op;
    if (z->busy || z->stopped || z->stage->draining)
        return;
    o->nin = 0;
    pthread_mutex_lock(&z->mu);
    for (size_t i = 0; i < z->nnoted; i++)
        ids_add(&o->in, &o->nin, &o->capin, z->noted[i]);
    z->nnoted = 0;
    pthread_mutex_unlock(&z->mu);
    if (!z->dirty && !o->nin)
        return;
    /* dirty again when this commit finds a batch still open, or when rows
     * are appended meanwhile (their commits come after this one). */
    z->dirty = 0;
    z->busy = 1;
    o->eo.op.apply = seal_apply;
    o->eo.loop_done = seal_done;
    engine_submit(z->stage->engine, &o->eo);
}

int sealer_conf(const Stage *s, SealPolicy *pol, char *err, size_t errlen)
{
    unsigned long long rows = ROWS_DEFAULT;
    double secs = SECONDS_DEFAULT;
    int rc;
    if ((rc = stage_conf_uint(s, "rows", &rows, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "seconds", &secs, err, errlen)) != 0)
        return rc;
    pol->rows = rows ? rows : ROWS_DEFAULT;
    pol->after_s = secs;
    pol->max_rejects = UINT64_MAX;
    pol->max_reject_rate = 1.0;
    return 0;
}

void sealer_init(Sealer *z, Stage *s, double seconds)
{
    memset(z, 0, sizeof *z);
    z->stage = s;
    z->op = xcalloc(1, sizeof *z->op);
    z->op->z = z;
    z->dirty = 1; /* an open batch may be left from the last run */
    pthread_mutex_init(&z->mu, NULL);
    double every = seconds / 4 < 1.0 ? seconds / 4 : 1.0;
    ev_timer_init(&z->timer, on_timer, every, every);
}

void sealer_add(Sealer *z, const char *model, const SealPolicy *pol)
{
    if (z->n == z->cap) {
        z->cap = z->cap ? 2 * z->cap : 4;
        z->models = xrealloc(z->models, z->cap * sizeof *z->models);
        z->pols = xrealloc(z->pols, z->cap * sizeof *z->pols);
    }
    z->models[z->n] = model;
    z->pols[z->n++] = pol;
}

void sealer_start(Sealer *z)
{
    ev_timer_start(z->stage->loop, &z->timer);
}

void sealer_touch(Sealer *z)
{
    z->dirty = 1;
}

void sealer_note(Sealer *z, uint64_t id)
{
    pthread_mutex_lock(&z->mu);
    ids_add(&z->noted, &z->nnoted, &z->capnoted, id);
    pthread_mutex_unlock(&z->mu);
}

void sealer_stop(Sealer *z)
{
    z->stopped = 1;
    if (z->stage)
        ev_timer_stop(z->stage->loop, &z->timer);
}

int sealer_busy(const Sealer *z)
{
    return z->busy;
}

void sealer_free(Sealer *z)
{
    if (!z->stage)
        return;
    sealer_stop(z);
    if (z->op) {
        free(z->op->in);
        free(z->op->out);
        free(z->op);
    }
    free(z->models);
    free(z->pols);
    free(z->noted);
    pthread_mutex_destroy(&z->mu);
    memset(z, 0, sizeof *z);
}
