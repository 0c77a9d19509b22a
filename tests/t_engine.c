/* t_engine.c: see t_engine.h. It reaches into the runtime's private
 * engine_int.h for one thing: slots_kick, which asks a stage's reservers
 * for jobs (engine_run does it for every stage when it starts). */
#include "t_engine.h"
#include "t.h"
#include "engine_int.h"
#include "kinds.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static Pipeline *pipeline; /* the one te_open loaded (one engine per test) */

int te_try_open(const char *text, Engine **out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    *out = NULL;
    snprintf(path, sizeof path, "%s", t_dir());
    *strrchr(path, '/') = '\0'; /* beside the data directory: not a file in it */
    strcat(path, "/pipeline.yml");
    FILE *f = fopen(path, "w");
    T_CHECK(f != NULL);
    T_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
    T_EQ(fclose(f), 0);
    int rc = pipeline_load(path, stage_kind_specs, &pipeline, err, errlen);
    if (rc)
        return rc;
    EngineOpts o = {.data_dir = t_dir()};
    if ((rc = engine_open(pipeline, stage_kinds, &o, out, err, errlen)) != 0) {
        pipeline_free(pipeline);
        pipeline = NULL;
    }
    return rc;
}

Engine *te_open(const char *text)
{
    Engine *e;
    char err[1024] = "";
    int rc = te_try_open(text, &e, err, sizeof err);
    if (rc)
        t_fail(__FILE__, __LINE__, "te_open: %s (%s)", err, pl_strerror(rc));
    return e;
}

void te_close(Engine *e)
{
    engine_close(e);
    pipeline_free(pipeline);
    pipeline = NULL;
}

void te_run_until(Engine *e, int (*done)(Engine *e, void *arg), void *arg)
{
    uint64_t until = pl_mono_ns() + 30ull * 1000000000ull;
    while (!done(e, arg)) {
        if (pl_mono_ns() > until)
            t_fail(__FILE__, __LINE__, "te_run_until: nothing came of it in 30 s");
        ev_run(engine_loop(e), EVRUN_ONCE);
    }
}

void te_begin(Engine *e, const char *stage)
{
    Stage *st = engine_stage(e, stage);
    T_CHECK(st != NULL && st->kind->begin != NULL);
    st->kind->begin(st);
}

/* ---------------------------------------------------------------- commits */

/* Op: a function run in a commit of the engine, waited for on the loop. */
typedef struct Op {
    EngineOp eo;
    int (*fn)(Txn *t, void *arg);
    void *arg;
    int rc, done;
} Op;

static int op_apply(Txn *t, CommitOp *co)
{
    Op *o = (Op *)co;
    return o->fn(t, o->arg);
}

static void op_done(EngineOp *eo, int rc)
{
    Op *o = (Op *)eo;
    o->rc = rc;
    o->done = 1;
}

static int op_over(Engine *e, void *arg)
{
    (void)e;
    return ((Op *)arg)->done;
}

/* commit runs fn(t, arg) in a commit of e's committer (which also wakes a
 * reserver waiting for a job) and returns its result. */
static int commit(Engine *e, int (*fn)(Txn *t, void *arg), void *arg)
{
    Op o = {.fn = fn, .arg = arg};
    o.eo.op.apply = op_apply;
    o.eo.loop_done = op_done;
    engine_submit(e, &o.eo);
    te_run_until(e, op_over, &o);
    return o.rc;
}

typedef struct Put {
    const char *queue, *body;
    uint64_t id;
} Put;

static int put_apply(Txn *t, void *arg)
{
    Put *p = arg;
    PutArgs a = {.body = p->body, .len = strlen(p->body)};
    return queue_put(t, p->queue, &a, &p->id, NULL);
}

uint64_t te_put(Engine *e, const char *queue, const char *body)
{
    Put p = {queue, body, 0};
    T_OK(commit(e, put_apply, &p));
    return p.id;
}

typedef struct Take {
    const char *queue;
    Strbuf *body;
} Take;

static int take_apply(Txn *t, void *arg)
{
    Take *k = arg;
    Job j;
    int rc = queue_reserve(t, k->queue, 1000, &j);
    if (rc)
        return rc;
    sb_reset(k->body);
    sb_add(k->body, j.body, j.len);
    return queue_ack(t, j.id, j.lease);
}

int te_take(Engine *e, const char *queue, Strbuf *body)
{
    Take k = {queue, body};
    return commit(e, take_apply, &k);
}

typedef struct Land {
    const char *model, *key, *row;
    uint64_t id;
} Land;

static int land_apply(Txn *t, void *arg)
{
    Land *l = arg;
    msgpack_sbuffer mp;
    char err[256];
    msgpack_sbuffer_init(&mp);
    int rc = row_from_json_object(l->row, strlen(l->row), &mp, err, sizeof err);
    if (rc)
        t_fail(__FILE__, __LINE__, "te_land: %s", err);
    rc = staging_row_new(t, l->model, l->key, mp.data, mp.size, 1, &l->id);
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

void te_land(Engine *e, const char *model, const char *key, const char *row, Strbuf *ref)
{
    Land l = {model, key, row, 0};
    T_OK(commit(e, land_apply, &l));
    sb_reset(ref);
    staging_ref_json(ref, model, key, l.id);
}

/* ---------------------------------------------------------------- reads */

int te_row(Engine *e, const char *model, const char *key, uint64_t row, Strbuf *json)
{
    Strbuf mp;
    sb_init(&mp);
    T_CHECK(engine_nstages(e) > 0);
    int rc = stage_row(engine_stage_at(e, 0), model, key, row, &mp);
    if (!rc) {
        sb_reset(json);
        rc = row_to_json(mp.buf, mp.len, json);
    }
    sb_free(&mp);
    return rc;
}

/* ---------------------------------------------------------------- work */

typedef struct Work {
    Stage *st;
    uint64_t ends;      /* the stage's ended jobs before the put */
    uint64_t id;
    const char *queue;
    TeJob *out;
    int over;
} Work;

static uint64_t ends_of(const Stage *st)
{
    return st->ctr.done + st->ctr.retried + st->ctr.buried;
}

static int job_read(Txn *t, void *arg)
{
    Work *w = arg;
    Job j;
    int rc = queue_get(t, w->id, &j);
    if (rc == PL_ENOJOB || (rc == 0 && strcmp(j.queue, w->queue) != 0)) {
        w->out->end = TE_DONE; /* acked, or handed on in place (queue_forward) */
        return 0;
    }
    if (rc)
        return rc;
    if (j.state == JOB_RESERVED) {
        w->over = 0; /* ended again: it is being released or buried now */
        return 0;
    }
    w->out->end = j.state == JOB_BURIED ? TE_BURY : TE_RETRY;
    snprintf(w->out->error, sizeof w->out->error, "%.*s", (int)j.errorlen, j.error ? j.error : "");
    if (j.state == JOB_DELAYED && j.due_ms > t->now)
        w->out->delay_s = (double)(j.due_ms - t->now) / 1000.0;
    return 0;
}

static int work_over(Engine *e, void *arg)
{
    Work *w = arg;
    if (ends_of(w->st) == w->ends || w->st->in_flight)
        return 0;
    w->over = 1;
    T_OK(store_read(engine_store(e), job_read, w));
    return w->over;
}

TeJob te_work(Engine *e, const char *stage, const char *body)
{
    TeJob out;
    memset(&out, 0, sizeof out);
    Stage *st = engine_stage(e, stage);
    T_CHECK(st != NULL && st->conf->input != NULL);
    Work w = {.st = st, .ends = ends_of(st), .queue = st->conf->input, .out = &out};
    w.id = out.id = te_put(e, st->conf->input, body);
    slots_kick(st);
    te_run_until(e, work_over, &w);
    return out;
}
