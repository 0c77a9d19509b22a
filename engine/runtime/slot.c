/* slot.c: the runtime of the stages (stage.h) on the loop thread: a slot's
 * outputs, its priority, its end (ack + outputs, release or bury, as one
 * EngineOp) and what its commit's outcome does, the emits of sources, and
 * the stages' reads (cursor, staged row) and log. How the slots get their
 * jobs is hold.c; what the writer thread applies is apply.c; slot_int.h is
 * what the three share.
 *
 * A finished slot commits ack + outputs (or release, or bury) as one
 * EngineOp; the slot is free again when that commit is done. A source
 * commits what it found with an Emit. */
#include "slot_int.h"
#include "staging.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- priority */

/* pri_field reads the stage's priority_field of rec into *pri: 1 when rec
 * holds a whole number 0..4294967295 there, 0 when it holds nothing (no
 * such field, or null), PL_EINVAL (err says what it holds) otherwise. */
static int pri_field(const StageConf *c, const msgpack_object *rec, uint32_t *pri, char *err,
                     size_t errlen)
{
    const msgpack_object *v = rec ? row_field(rec, c->priority_field) : NULL;
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= UINT32_MAX) {
        *pri = (uint32_t)v->via.u64;
        return 1;
    }
    Strbuf txt;
    sb_init(&txt);
    row_put_object(&txt, v);
    snprintf(err, errlen, "priority_field '%s' holds %.80s%s; a priority is a whole number "
             "0..4294967295 (lower is more urgent): fix the record, or the field",
             c->priority_field, txt.buf ? txt.buf : "?", txt.len > 80 ? "..." : "");
    sb_free(&txt);
    return PL_EINVAL;
}

/* slot_pri_default: see slot_int.h. */
uint32_t slot_pri_default(const StageConf *c, uint32_t in)
{
    return c->has_priority ? c->priority : in;
}

/* pri_from_ref finds the priority field in the staged row body references
 * (body: a reference {"model","key"[,"row_id"]}): 1, 0 (no reference, no
 * row, or no field), PL_EINVAL. */
static int pri_from_ref(Slot *s, const msgpack_object *body, uint32_t *pri, char *err,
                        size_t errlen)
{
    Strbuf model, key, row;
    RowView v;
    int rc = 0;
    const msgpack_object *rid = row_field(body, "row_id");
    sb_init(&model);
    sb_init(&key);
    sb_init(&row);
    if (row_field_text(body, "model", &model) == 0 && row_field_text(body, "key", &key) == 0 &&
        (!rid || rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER) &&
        stage_row(s->stage, model.buf, key.buf, rid ? rid->via.u64 : 0, &row) == 0 &&
        row_view(&v, row.buf, row.len) == 0) {
        rc = pri_field(s->stage->conf, &v.root, pri, err, errlen);
        row_view_free(&v);
    }
    sb_free(&model);
    sb_free(&key);
    sb_free(&row);
    return rc;
}

int slot_priority(Slot *s, const msgpack_object *rec, uint32_t *pri, char *err, size_t errlen)
{
    SlotOp *so = s->op;
    const StageConf *c = s->stage->conf;
    if (!s->pri_set) {
        uint32_t v = slot_pri_default(c, s->pri);
        int rc = 0;
        const msgpack_object *body;
        char berr[160];
        so->pri_why[0] = '\0';
        if (c->priority_field) {
            if (rec)
                rc = pri_field(c, rec, &v, so->pri_why, sizeof so->pri_why);
            else if (slot_body(s, &body, berr, sizeof berr) == 0 &&
                     (rc = pri_field(c, body, &v, so->pri_why, sizeof so->pri_why)) == 0)
                rc = pri_from_ref(s, body, &v, so->pri_why, sizeof so->pri_why);
        }
        s->out_pri = rc < 0 ? slot_pri_default(c, s->pri) : v;
        s->pri_set = rc < 0 ? -1 : 1;
    }
    *pri = s->out_pri;
    if (s->pri_set < 0) {
        snprintf(err, errlen, "%s", so->pri_why);
        return PL_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------- slots */

static int stage_writes(const Stage *s, const char *queue)
{
    for (size_t i = 0; i < s->conf->noutputs; i++)
        if (!strcmp(s->conf->outputs[i], queue))
            return 1;
    return 0;
}

void slot_put(Slot *s, const char *queue, const void *body, size_t len, const char *key)
{
    PL_ASSERT(stage_writes(s->stage, queue), "a stage writes only the queues it declares");
    acts_put(&s->acts, queue, body, len, key, PRI_SLOT);
}

void slot_row_land(Slot *s, const char *model, const char *key, const void *mp, size_t len,
                   const char *queue)
{
    PL_ASSERT(stage_writes(s->stage, queue), "a stage writes only the queues it declares");
    if (s->stage->conf->priority_field && !s->pri_set) {
        /* The landed row is the record its reference carries. */
        RowView v;
        uint32_t pri;
        char err[8];
        if (row_view(&v, mp, len) == 0) {
            slot_priority(s, &v.root, &pri, err, sizeof err);
            row_view_free(&v);
        }
    }
    acts_row_land(&s->acts, model, key, mp, len, queue);
}

void slot_row_merge(Slot *s, const char *model, const char *key, uint64_t row, const void *src,
                    size_t len, const char *const *from, const char *const *to, size_t n)
{
    acts_row_merge(&s->acts, model, key, row, src, len, from, to, n);
}

void slot_extra(Slot *s, int (*fn)(Txn *t, void *arg), void *arg)
{
    acts_extra(&s->acts, fn, arg);
}

const double stage_lat_bounds[STAGE_LAT_BOUNDS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,   0.25,   0.5,   1,    2.5};


/* A failed hand-off is retried no sooner than this: the faults that pass
 * (a full disk, an I/O error) do not pass in milliseconds. */
#define HANDOFF_RETRY_MIN_MS 5000

/* commit_fault_transient tells whether a commit that failed with rc may
 * succeed later unchanged: no room (map limit, disk), I/O, memory. */
static int commit_fault_transient(int rc)
{
    return rc == PL_EFULL || rc == ENOSPC || rc == EDQUOT || rc == MDB_MAP_FULL || rc == EIO ||
           rc == ENOMEM || rc == EAGAIN || rc == EINTR || rc == MDB_READERS_FULL;
}

/* retry_delay_ms: the input queue's exponential backoff for the slot's
 * attempt, with jitter (+-20%), at least min_ms. */
static uint64_t retry_delay_ms(const Slot *s, uint64_t min_ms)
{
    const Stage *st = s->stage;
    const QueueDecl *qd = pipeline_queue(st->engine->p, st->conf->input);
    QueueConf c;
    if (qd)
        c = qd->conf;
    else
        queue_conf_default(&c);
    double d = (double)queue_backoff_ms(&c, s->attempts);
    d *= 0.8 + 0.4 * (double)(pl_random64() % 1000) / 1000.0; /* jitter */
    return d < (double)min_ms ? min_ms : (uint64_t)d;
}

static void slot_end(Slot *s, int end, int64_t delay_ms, const char *why);

static void slot_committed(EngineOp *eo, int rc)
{
    SlotOp *so = (SlotOp *)eo;
    Slot *s = so->slot;
    Stage *st = s->stage;
    if (rc == 0) {
        double dt = (double)(pl_mono_ns() - s->started_ns) / 1e9;
        if (so->end == END_ACK) {
            st->ctr.done++;
            stage_dep_ok(st);
            fuse_done(&so->taken);
            int b = 0;
            while (b < STAGE_LAT_BOUNDS && dt > stage_lat_bounds[b])
                b++;
            st->ctr.lat_buckets[b]++;
            st->ctr.lat_sum += dt;
        } else if (so->end == END_RELEASE) {
            st->ctr.retried++;
        } else {
            st->ctr.buried++;
        }
        slot_free(s);
        return;
    }
    st->ctr.failed_commits++;
    if ((rc == PL_ELEASE || rc == PL_ENOJOB) && !so->in_actions) {
        stage_log(st, PL_LOG_WARN, s->id, "the job was taken, buried or deleted by someone else, "
                  "or its body edited, before the commit (qctl?): nothing written");
        slot_free(s);
        return;
    }
    if (so->end == END_ACK) {
        /* The hand-off could not be written. Nothing of it was (a failed
         * apply poisons its transaction), and the job is still leased to
         * this slot: set it aside with the reason, never stop the line. A
         * fault that may pass (no room, an I/O error) releases it for a
         * later attempt with backoff; one that cannot pass (an output too
         * big for its queue, a row gone) buries it. */
        char why[400];
        snprintf(why, sizeof why, "could not hand off: %s",
                 so->fail[0] ? so->fail
                 : rc == PL_ENOROW ? "the staged row it names is missing"
                 : pl_strerror(rc));
        s->state = SLOT_WORKING; /* it ends again, now as a release or a bury */
        if (commit_fault_transient(rc)) {
            stage_log(st, PL_LOG_ERROR, s->id, "%s; released for a later attempt", why);
            slot_end(s, END_RELEASE, retry_delay_ms(s, HANDOFF_RETRY_MIN_MS), why);
        } else {
            stage_log(st, PL_LOG_ERROR, s->id, "%s; buried", why);
            slot_end(s, END_BURY, 0, why);
        }
        return;
    }
    stage_log(st, PL_LOG_ERROR, s->id, "cannot %s the job: %s; it stays ready and will be worked again",
              so->end == END_RELEASE ? "release" : "bury", pl_strerror(rc));
    slot_free(s);
}

static void slot_end(Slot *s, int end, int64_t delay_ms, const char *why)
{
    PL_ASSERT(s->state == SLOT_WORKING, "a job ends once");
    SlotOp *so = s->op;
    s->state = SLOT_COMMITTING;
    so->end = end;
    so->delay_ms = delay_ms;
    sb_reset(&so->why);
    if (why)
        sb_adds(&so->why, why);
    so->eo.op.apply = slot_apply;
    so->eo.loop_done = slot_committed;
    engine_submit(s->stage->engine, &so->eo);
}

void slot_done(Slot *s)
{
    uint32_t pri;
    char why[QUEUE_REASON_MAX];
    /* The outputs' priority, unless the kind decided it (or has no output
     * at all): a record whose priority field is not a priority is set
     * aside with the reason, never sent on at a guess. */
    if (s->acts.len && slot_priority(s, NULL, &pri, why, sizeof why) != 0) {
        slot_bury(s, why);
        return;
    }
    slot_end(s, END_ACK, 0, NULL);
}

void slot_bury(Slot *s, const char *reason)
{
    stage_log(s->stage, PL_LOG_WARN, s->id, "buried: %s", reason);
    slot_end(s, END_BURY, 0, reason && *reason ? reason : "buried");
}

void slot_buryf(Slot *s, const char *fmt, ...)
{
    char why[QUEUE_REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    slot_bury(s, why);
}

int slot_body(Slot *s, const msgpack_object **root, char *err, size_t errlen)
{
    if (!s->body_ok) {
        s->bmp.size = 0;
        if (row_from_json_object(s->body.buf, s->body.len, &s->bmp, err, errlen) != 0)
            return PL_EINVAL;
        if (row_view(&s->bview, s->bmp.data, s->bmp.size) != 0) { /* we packed it */
            snprintf(err, errlen, "the job body does not decode");
            return PL_EINVAL;
        }
        s->body_ok = 1;
    }
    *root = &s->bview.root;
    return 0;
}

/* slot_body_forget: see slot_int.h. */
void slot_body_forget(Slot *s)
{
    if (s->body_ok)
        row_view_free(&s->bview);
    s->body_ok = 0;
}

void slot_retry(Slot *s, double after_s, const char *error)
{
    Stage *st = s->stage;
    double d = (double)retry_delay_ms(s, 0);
    if (after_s * 1000 > d)
        d = after_s * 1000;
    stage_log(st, PL_LOG_INFO, s->id, "retry in %.1f s (attempt %u): %s", d / 1000, s->attempts,
              error ? error : "");
    if (!st->draining)
        stage_dep_failed(st, error ? error : "retry");
    slot_end(s, END_RELEASE, (int64_t)d, error ? error : "retry");
}

void slot_give_back(Slot *s, const char *why)
{
    Stage *st = s->stage;
    if (!st->engine->reload || !st->engine->draining) {
        slot_retry(s, 0, why);
        return;
    }
    /* A hold, not a lease: letting it go writes nothing. The slot is not
     * dispatched again while the engine drains. */
    PL_ASSERT(s->state == SLOT_WORKING, "a job ends once");
    stage_log(st, PL_LOG_INFO, s->id, "given back uncounted for the reload: %s", why);
    slot_free(s);
}

/* ---------------------------------------------------------------- sources */

struct Emit {
    EngineOp eo;
    Stage *stage;
    Taken taken;
    Strbuf acts;
    msgpack_sbuffer scratch; /* a body decoded for its priority field */
    size_t n;
    void (*done)(void *arg, int rc);
    void *arg;
};

Emit *emit_new(Stage *s)
{
    Emit *em = xcalloc(1, sizeof *em);
    em->stage = s;
    sb_init(&em->acts);
    msgpack_sbuffer_init(&em->scratch);
    return em;
}

void emit_put(Emit *em, const char *queue, const void *body, size_t len, const char *key)
{
    PL_ASSERT(stage_writes(em->stage, queue), "a stage writes only the queues it declares");
    const StageConf *c = em->stage->conf;
    uint32_t pri = slot_pri_default(c, 0);
    if (c->priority_field) {
        char err[400];
        RowView v;
        em->scratch.size = 0;
        if (row_from_json_object(body, len, &em->scratch, err, sizeof err) == 0 &&
            row_view(&v, em->scratch.data, em->scratch.size) == 0) {
            if (pri_field(c, &v.root, &pri, err, sizeof err) < 0)
                stage_log(em->stage, PL_LOG_WARN, 0, "%s; the job goes at priority %u", err, pri);
            row_view_free(&v);
        }
    }
    acts_put(&em->acts, queue, body, len, key, pri);
    em->n++;
}

void emit_cursor(Emit *em, const void *value, size_t len)
{
    acts_cursor(&em->acts, value, len);
}

void emit_extra(Emit *em, int (*fn)(Txn *t, void *arg), void *arg)
{
    acts_extra(&em->acts, fn, arg);
}

size_t emit_count(const Emit *em)
{
    return em->n;
}

static int emit_apply(Txn *t, CommitOp *op)
{
    Emit *em = (Emit *)op;
    char fail[320];
    em->taken.k = 0;
    int rc = apply_actions(t, &em->acts, em->stage, &em->taken, 0, fail, sizeof fail);
    return rc ? txn_fail(t, rc) : 0;
}

static void emit_done(EngineOp *eo, int rc)
{
    Emit *em = (Emit *)eo;
    if (rc)
        stage_log(em->stage, PL_LOG_ERROR, 0, "commit of %zu changes failed: %s", em->n, pl_strerror(rc));
    else {
        em->stage->ctr.done += em->n;
        fuse_done(&em->taken);
    }
    if (em->done)
        em->done(em->arg, rc);
    sb_free(&em->acts);
    msgpack_sbuffer_destroy(&em->scratch);
    free(em);
}

void emit_commit(Emit *em, void (*done)(void *arg, int rc), void *arg)
{
    em->done = done;
    em->arg = arg;
    em->eo.op.apply = emit_apply;
    em->eo.loop_done = emit_done;
    engine_submit(em->stage->engine, &em->eo);
}

typedef struct ReadArg {
    const char *k;
    size_t kl;
    int db;
    Strbuf *out;
} ReadArg;

static int read_one(Txn *t, void *arg)
{
    ReadArg *a = arg;
    MDB_val k = {a->kl, (void *)a->k}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, a->db), &k, &v);
    if (rc == 0)
        sb_add(a->out, v.mv_data, v.mv_size);
    return rc;
}

int stage_cursor(Stage *s, Strbuf *out)
{
    Strbuf k;
    sb_init(&k);
    sb_adds(&k, "c/");
    sb_adds(&k, s->conf->name);
    sb_reset(out);
    ReadArg a = {k.buf, k.len, DB_META, out};
    int rc = store_read(s->engine->store, read_one, &a);
    sb_free(&k);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct RowRead {
    const char *model, *key;
    uint64_t row;
    Strbuf *out;
} RowRead;

static int read_row(Txn *t, void *arg)
{
    RowRead *a = arg;
    const void *mp;
    size_t len;
    int rc = staging_row_get(t, a->model, a->key, a->row, &mp, &len, NULL);
    if (!rc)
        sb_add(a->out, mp, len);
    return rc;
}

int stage_row(Stage *s, const char *model, const char *key, uint64_t row, Strbuf *out)
{
    RowRead a = {model, key, row, out};
    sb_reset(out);
    return store_read(s->engine->store, read_row, &a);
}

void stage_dep_failed(Stage *s, const char *why)
{
    s->ctr.dep_failures++;
    snprintf(s->dep_error, sizeof s->dep_error, "%s", why);
}

void stage_dep_ok(Stage *s)
{
    s->ctr.dep_failures = 0;
}

void stage_log(const Stage *s, int level, uint64_t job, const char *fmt, ...)
{
    if (level > pl_log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pl_logx(level, s->conf->name, job, "%s", msg);
}
