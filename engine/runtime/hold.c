/* slot.c: the runtime of the stages (stage.h): their slots, the actions a
 * slot or an emit records and its commit applies, the reservers that fill
 * the slots, and the stages' reads (cursor, staged row) and log.
 *
 * A stage with an input queue has reservers: each one parked CommitOp that
 * takes up to `batch` jobs into free slots (copying id and body inside the
 * transaction) and comes back when a job is ready or after a second. A
 * finished slot commits ack + outputs (or release, or bury) as one EngineOp;
 * the slot is free again when that commit is done. A source commits what it
 * found with an Emit.
 *
 * Holds, not leases. The engine is the one worker of its slots, so it does
 * not write a lease when it takes a job: queue_hold_n reads ready jobs and
 * leaves them ready on disk, and the engine keeps the ids it holds in a set
 * per input queue (Held), so that no two slots take one job. A hop is then
 * one write transaction, the ack with its outputs, where a lease costs a
 * write to take the job as well. The end of a hold checks that the job is
 * still ready where it was taken (queue.h): `qctl reserve` of a held job
 * wins, and the slot's commit then writes nothing. A crash ends every hold
 * with its job still ready, as the expiry of a lease would.
 *
 * max_attempts stays honest for a job that kills the engine each time: the
 * in-flight file DIR/engine.inflight (a shared mapping, written with plain
 * stores and never flushed: it survives the death of the process, not of
 * the machine) names the job each slot holds and the attempts it had when
 * taken. The next engine_open stores one attempt for each job still named
 * there, and buries it past max_attempts (queue_held_lost), before any stage
 * starts. A power cut may lose the file, and with it the count of that one
 * attempt, or keep an entry a later commit had made stale, which the
 * attempts check tells apart. */
#include "engine_int.h"
#include "inflight.h"
#include "staging.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { SLOT_FREE, SLOT_WORKING, SLOT_COMMITTING };
enum { END_ACK, END_RELEASE, END_BURY };

/* Taken: the rows stages took in one hand-off's commit (fused), counted
 * as done for them once it committed. */
#define TAKEN_MAX 8
typedef struct Taken {
    Stage *by[TAKEN_MAX];
    uint32_t n[TAKEN_MAX];
    unsigned k;
} Taken;

/* Held: the ids of the jobs the engine holds from one input queue, for the
 * reservers (writer thread) and the slots ending (loop thread). An open
 * addressing set: 0 is empty, HELD_GONE a deleted entry. */
#define HELD_GONE UINT64_MAX
struct Held {
    char queue[QUEUE_NAME_MAX + 1];
    pthread_mutex_t mu;
    uint64_t *v;
    size_t cap, n, used;     /* used: n and the deleted entries */
};

/* The in-flight file (inflight.h): a header, then one entry per slot. */
#define FLIGHT_MAGIC INFLIGHT_MAGIC
typedef InflightHead FlightHead;
struct Flight {             /* an InflightEntry, named as engine_int.h declares it */
    uint64_t id;
    uint32_t qid, attempts;
};
_Static_assert(sizeof(struct Flight) == sizeof(InflightEntry) &&
               offsetof(struct Flight, qid) == offsetof(InflightEntry, qid) &&
               offsetof(struct Flight, attempts) == offsetof(InflightEntry, attempts),
               "the in-flight file's entries are InflightEntry");

typedef struct SlotOp {
    EngineOp eo;
    Slot *slot;
    Taken taken;     /* writer thread in apply; loop thread in done */
    int end;
    int64_t delay_ms;
    Strbuf why;
    int in_actions;  /* the last apply failed in the outputs, after the ack */
    char fail[320];  /* what failed in the last apply (writer thread; read in done) */
    char pri_why[300]; /* slot_priority refused the record's priority field: why */
} SlotOp;

/* The most jobs one reserve takes (a stage's batch: is capped here). */
#define RSV_MAX 256
/* The most reserves of one stage in flight at once. */
#define RSV_COUNT_MAX 4

/* Spare: a job a reserve took, waiting for a free slot. */
typedef struct Spare {
    uint64_t id;
    uint32_t qid, attempts, pri;
    Strbuf body;
} Spare;

typedef struct Reserver {
    EngineOp eo;
    Job *js;         /* RSV_MAX: the views hold_n gives, copied out in apply */
    Stage *stage;
    Held *held;      /* the ids held from queue (shared with its other readers) */
    Spare *sp;       /* the jobs the last reserve took: sp[next..got) wait for slots */
    size_t want, got, next;
    int active;
    int paused;      /* after a failed reserve, until pause fires */
    ev_timer pause;
    const char *queue;
} Reserver;

/* Feed: how a stage's slots get their jobs. Reserves take up to `cap` jobs
 * into spares (held: no write); a slot that comes free takes a spare at
 * once, without waiting for a commit, and the reservers keep one reserve's
 * worth of jobs ahead of the free slots. */
typedef struct Watch {
    EngineOp eo;
    Stage *stage;
    uint32_t pri;    /* the least urgent spare's priority when it was armed */
    int active;
} Watch;

typedef struct Feed {
    Reserver *r;     /* Stage.nrsv of them */
    Watch watch;     /* spares_watch: spares let go when overtaken */
    Held *held;
    Slot **free;     /* the free slots, a stack */
    unsigned nfree;
    unsigned cap;    /* jobs per reserve: the stage's batch:, at most RSV_MAX */
} Feed;

static void spares_watch(Stage *st);

/* After a reserve fails (not "nothing ready": a store error), its reserver
 * waits this long before it asks again, so a broken store is not hammered
 * in a loop. */
#define RSV_PAUSE_S 1.0

/* ---------------------------------------------------------------- held */

static size_t held_slot(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static int held_has(uint64_t id, void *arg)
{
    Held *h = arg;
    for (size_t i = held_slot(id, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->v[i] == id)
            return 1;
        if (h->v[i] == 0)
            return 0;
    }
}

static void held_put(uint64_t *v, size_t cap, uint64_t id)
{
    size_t i = held_slot(id, cap);
    while (v[i] != 0 && v[i] != HELD_GONE)
        i = (i + 1) & (cap - 1);
    v[i] = id;
}

/* held_add and held_del: with h->mu held. */
static void held_add(Held *h, uint64_t id)
{
    if ((h->used + 1) * 4 > h->cap * 3) {
        size_t cap = h->cap;
        while ((h->n + 1) * 2 > cap)
            cap *= 2;
        uint64_t *v = xcalloc(cap, sizeof *v);
        for (size_t i = 0; i < h->cap; i++)
            if (h->v[i] && h->v[i] != HELD_GONE)
                held_put(v, cap, h->v[i]);
        free(h->v);
        h->v = v;
        h->cap = cap;
        h->used = h->n;
    }
    held_put(h->v, h->cap, id);
    h->n++;
    h->used++;
}

static void held_del(Held *h, uint64_t id)
{
    for (size_t i = held_slot(id, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->v[i] == id) {
            h->v[i] = HELD_GONE;
            h->n--;
            return;
        }
        PL_ASSERT(h->v[i] != 0, "a held job is let go once");
    }
}

static Held *held_of(Engine *e, const char *queue)
{
    for (size_t i = 0; i < e->nheld; i++)
        if (!strcmp(e->held[i].queue, queue))
            return &e->held[i];
    return NULL;
}

void holds_count(Engine *e, const char *queue, uint64_t *held, uint64_t *working)
{
    *held = *working = 0;
    Held *h = held_of(e, queue);
    if (h) {
        pthread_mutex_lock(&h->mu);
        *held = h->n;
        pthread_mutex_unlock(&h->mu);
    }
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        if (st->rsv && st->conf->input && !strcmp(st->conf->input, queue))
            *working += st->in_flight;
    }
}

/* flight_set names the job slot s holds (before its kind starts on it);
 * flight_clear lets it go. */
static void flight_set(Engine *e, const Slot *s, uint32_t attempts)
{
    Flight *f = &e->flight[s->flight];
    f->qid = s->qid;
    f->attempts = attempts;
    __atomic_store_n(&f->id, s->id, __ATOMIC_RELEASE);
}

static void flight_clear(Engine *e, const Slot *s)
{
    __atomic_store_n(&e->flight[s->flight].id, 0, __ATOMIC_RELEASE);
}

/* let_go ends slot s's hold on its job (loop thread): after its last
 * commit, or when the reserve that took it failed. */
static void let_go(Slot *s, Held *h)
{
    Engine *e = s->stage->engine;
    flight_clear(e, s);
    pthread_mutex_lock(&h->mu);
    held_del(h, s->id);
    pthread_mutex_unlock(&h->mu);
}

/* ---------------------------------------------------------------- fusion
 *
 * A stage that never waits on the outside and takes rows (batch) is fused
 * to its input queue when it is the queue's only reader: a row sent there
 * (validate's valid rows, a landed row) is taken in the sender's commit,
 * as stream engines chain operators, instead of going through the queue as
 * a reference job (a staged row instance, a put, a reserve and an ack, the
 * row read back and deleted). The hand-off is still one transaction, so it
 * is exactly once as before; the queue's totals count the row as a put and
 * an ack, and a record is always somewhere qctl shows: in a queue before,
 * in a batch (or the rejects) after. A queue that is paused, or holds
 * jobs (from qctl, the listener, a replay, an earlier run), is not passed
 * through: rows wait their turn there. */

static Stage *fused_to(Engine *e, const char *queue)
{
    for (size_t i = 0; i < e->nfuse; i++)
        if (!strcmp(e->fuse_q[i], queue))
            return e->fuse_to[i];
    return NULL;
}

void fuse_plan(Engine *e)
{
    e->fuse_q = xcalloc(e->nstages ? e->nstages : 1, sizeof *e->fuse_q);
    e->fuse_to = xcalloc(e->nstages ? e->nstages : 1, sizeof *e->fuse_to);
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *c = &e->stages[i];
        if (!c->conf->input || !c->kind->take_row)
            continue;
        size_t readers = 0;
        for (size_t j = 0; j < e->nstages; j++)
            readers += e->stages[j].conf->input && !strcmp(e->stages[j].conf->input, c->conf->input);
        if (readers != 1)
            continue;
        e->fuse_q[e->nfuse] = c->conf->input;
        e->fuse_to[e->nfuse++] = c;
        pl_log(PL_LOG_INFO, "engine: rows sent to '%s' are taken by stage '%s' in the sender's "
               "commit while the queue is idle", c->conf->input, c->conf->name);
    }
}

/* take_row offers a row sent by stage from to queue to its fused stage
 * (see slot_take_row); counts what was taken in tk (may be NULL). */
static int take_row(Stage *from, Taken *tk, Txn *t, const char *queue, const char *model,
                    const char *key, uint64_t version, const void *mp, size_t len, int *taken)
{
    *taken = 0;
    Stage *c = fused_to(from->engine, queue);
    if (!c || c == from)
        return 0;
    int rc = queue_passable(t, queue);
    if (rc == PL_EPAUSED || rc == PL_ESTATE || rc == PL_ENOQUEUE)
        return 0;
    if (rc)
        return rc;
    if ((rc = c->kind->take_row(c, t, model, key, version, mp, len, taken)) != 0 || !*taken)
        return rc;
    if ((rc = queue_pass(t, queue)) != 0)
        return txn_fail(t, rc);
    if (tk) {
        /* Counted as the taker's jobs, and its took_rows told, once the
         * commit is done (slot_committed, emit_done). */
        unsigned i = 0;
        while (i < tk->k && tk->by[i] != c)
            i++;
        if (i == tk->k && i < TAKEN_MAX) {
            tk->by[i] = c;
            tk->n[i] = 0;
            tk->k++;
        }
        if (i < TAKEN_MAX)
            tk->n[i]++;
    }
    return 0;
}

int slot_take_row(Slot *s, Txn *t, const char *queue, const char *model, const char *key,
                  uint64_t version, const void *mp, size_t len, int *taken)
{
    SlotOp *so = s->op;
    return take_row(s->stage, &so->taken, t, queue, model, key, version, mp, len, taken);
}

/* took_done counts what stages took in a committed hand-off as their
 * jobs and tells them (loop thread). */
static void took_done(const Taken *tk)
{
    for (unsigned i = 0; i < tk->k; i++) {
        Stage *c = tk->by[i];
        c->ctr.done += tk->n[i];
        if (c->kind->took_rows)
            c->kind->took_rows(c);
    }
}

/* ---------------------------------------------------------------- actions */

/* A slot's outputs are recorded as a byte list of actions, applied in the
 * commit after the ack: 'P' put, 'R' a landed row (a new staged row
 * instance and the reference to it), 'M' row merge, 'X' extra, 'C' cursor.
 * Fields are length-prefixed (u32); strings are recorded with their NUL. A
 * put records its priority (an emit's own), or PRI_SLOT: the slot's, which
 * is decided when the slot ends (slot_priority); a landed row's reference
 * always goes at the slot's. */
#define PRI_SLOT UINT64_MAX
static void act_bytes(Strbuf *b, const void *p, size_t n)
{
    uint32_t l = (uint32_t)n;
    sb_add(b, &l, sizeof l);
    if (n)
        sb_add(b, p, n);
}

static const char *take(const char **p, const char *end, size_t *n)
{
    uint32_t l;
    if ((size_t)(end - *p) < sizeof l)
        return NULL;
    memcpy(&l, *p, sizeof l);
    *p += sizeof l;
    if ((size_t)(end - *p) < l)
        return NULL;
    const char *r = *p;
    *p += l;
    *n = l;
    return r;
}

/* act_str records string s with its NUL, so that apply reads it in place. */
static void act_str(Strbuf *b, const char *s)
{
    act_bytes(b, s, strlen(s) + 1);
}

static const char *take_str(const char **p, const char *end)
{
    size_t n = 0;
    const char *s = take(p, end, &n);
    return s && n && s[n - 1] == '\0' ? s : NULL;
}

static int take_u64(const char **p, const char *end, uint64_t *v)
{
    size_t n = 0;
    const char *b = take(p, end, &n);
    if (!b || n != sizeof *v)
        return PL_EFORMAT;
    memcpy(v, b, sizeof *v);
    return 0;
}

/* apply_row_merge applies an 'M' action: model, key, row, src, then n
 * pairs of field names (from, to). */
static int apply_row_merge(Txn *t, const char **p, const char *end)
{
    const char *from[SLOT_MERGE_MAX], *to[SLOT_MERGE_MAX], *model = take_str(p, end),
               *key = take_str(p, end), *src;
    uint64_t row, n;
    size_t sl = 0;
    if (!model || !key || take_u64(p, end, &row) || !(src = take(p, end, &sl)) ||
        take_u64(p, end, &n) || n > SLOT_MERGE_MAX)
        return PL_EFORMAT;
    for (uint64_t i = 0; i < n; i++)
        if (!(from[i] = take_str(p, end)) || !(to[i] = take_str(p, end)))
            return PL_EFORMAT;
    return staging_row_merge(t, model, key, row, src, sl, from, to, (size_t)n);
}

/* put_failure describes why queue_put of an output of len bytes (key of
 * keylen) to queue q failed with rc, naming the limit and the fix. */
static void put_failure(Txn *t, const char *q, size_t len, size_t keylen, int rc, char *fail,
                        size_t failn)
{
    QueueStats st;
    if (rc == PL_ETOOBIG && keylen > QUEUE_KEY_MAX)
        snprintf(fail, failn, "the output's idempotency key (%zu bytes) is over %d bytes", keylen,
                 QUEUE_KEY_MAX);
    else if (rc == PL_ETOOBIG && queue_stats(t, q, &st) == 0)
        snprintf(fail, failn, "the output (%zu bytes) is over queue '%s' max_body (%u bytes); "
                 "raise max_body of '%s' in the pipeline file, then kick the job",
                 len, q, st.conf.max_body, q);
    else
        snprintf(fail, failn, "queue '%s' refused the output: %s", q, pl_strerror(rc));
}

/* apply_row_land applies an 'R' action: model, key, queue, row: the row
 * becomes a new instance and a reference to it goes on queue at pri (or
 * the row goes straight to the stage that takes it: take_row). */
static int apply_row_land(Txn *t, Stage *from, Taken *tk, const char **p, const char *end,
                          uint32_t pri, char *fail, size_t failn)
{
    const char *model = take_str(p, end), *key = take_str(p, end), *q = take_str(p, end), *mp;
    size_t len = 0;
    uint64_t row, id;
    int rc, taken;
    if (!model || !key || !q || !(mp = take(p, end, &len)))
        return PL_EFORMAT;
    /* A landed row is not validated: model version 0, as staging_row_new
     * records it for the reference's way (staging.h, "Model versions"). */
    if ((rc = take_row(from, tk, t, q, model, key, 0, mp, len, &taken)) != 0 || taken)
        return rc;
    if ((rc = staging_row_new(t, model, key, mp, len, 1, &row)) != 0) {
        if (rc == PL_EINVAL)
            snprintf(fail, failn, "cannot stage row %.60s/%.100s: a model name has at most %d "
                     "bytes, a key at most %d", model, key, STAGING_MODEL_MAX, STAGING_KEY_MAX);
        return rc;
    }
    Strbuf body;
    sb_init(&body);
    staging_ref_json(&body, model, key, row);
    PutArgs pa = {.pri = pri, .body = body.buf, .len = body.len};
    if ((rc = queue_put(t, q, &pa, &id, NULL)) != 0)
        put_failure(t, q, body.len, 0, rc, fail, failn);
    sb_free(&body);
    return rc;
}

/* apply_actions applies a slot's or a source's recorded outputs in t, the
 * slot's at pri. On failure it returns the error and, when it can say more
 * than the code (which queue refused a put, and why), writes that into
 * fail. */
static int apply_actions(Txn *t, const Strbuf *acts, Stage *from, Taken *tk, uint32_t pri,
                         char *fail, size_t failn)
{
    const char *stage = from->conf->name;
    const char *p = acts->buf, *end = acts->buf + acts->len;
    int rc = 0;
    while (p < end && rc == 0) {
        char tag = *p++;
        size_t a = 0, b = 0, c = 0;
        const char *fa, *fb, *fc;
        switch (tag) {
        case 'P': {
            fa = take(&p, end, &a); /* queue */
            fb = take(&p, end, &b); /* key */
            fc = take(&p, end, &c); /* body */
            uint64_t ppri;
            if (!fa || !fb || !fc || take_u64(&p, end, &ppri))
                return PL_EFORMAT;
            char q[QUEUE_NAME_MAX + 1];
            snprintf(q, sizeof q, "%.*s", (int)a, fa);
            PutArgs pa = {.pri = ppri == PRI_SLOT ? pri : (uint32_t)ppri, .body = fc, .len = c,
                          .key = b ? fb : NULL, .keylen = b};
            uint64_t id;
            if ((rc = queue_put(t, q, &pa, &id, NULL)) != 0)
                put_failure(t, q, c, b, rc, fail, failn);
            break;
        }
        case 'R':
            rc = apply_row_land(t, from, tk, &p, end, pri, fail, failn);
            break;
        case 'M':
            rc = apply_row_merge(t, &p, end);
            break;
        case 'X': {
            int (*fn)(Txn *, void *);
            void *arg;
            if ((size_t)(end - p) < sizeof fn + sizeof arg)
                return PL_EFORMAT;
            memcpy(&fn, p, sizeof fn);
            memcpy(&arg, p + sizeof fn, sizeof arg);
            p += sizeof fn + sizeof arg;
            rc = fn(t, arg);
            break;
        }
        case 'C': {
            fa = take(&p, end, &a);
            if (!fa)
                return PL_EFORMAT;
            Strbuf k;
            sb_init(&k);
            sb_adds(&k, "c/");
            sb_adds(&k, stage);
            MDB_val mk = {k.len, k.buf}, mv = {a, (void *)fa};
            rc = mdb_put(t->mdb, txn_dbi(t, DB_META), &mk, &mv, 0);
            sb_free(&k);
            break;
        }
        default:
            return PL_EFORMAT;
        }
    }
    return rc;
}

static void acts_put(Strbuf *acts, const char *queue, const void *body, size_t len, const char *key,
                     uint64_t pri)
{
    sb_add(acts, "P", 1);
    act_bytes(acts, queue, strlen(queue));
    act_bytes(acts, key ? key : "", key ? strlen(key) : 0);
    act_bytes(acts, body, len);
    act_bytes(acts, &pri, sizeof pri);
}

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

/* pri_default: a stage's outputs' priority when no record says one. */
static uint32_t pri_default(const StageConf *c, uint32_t in)
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
        uint32_t v = pri_default(c, s->pri);
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
        s->out_pri = rc < 0 ? pri_default(c, s->pri) : v;
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
    sb_add(&s->acts, "R", 1);
    act_str(&s->acts, model);
    act_str(&s->acts, key);
    act_str(&s->acts, queue);
    act_bytes(&s->acts, mp, len);
}

void slot_row_merge(Slot *s, const char *model, const char *key, uint64_t row, const void *src,
                    size_t len, const char *const *from, const char *const *to, size_t n)
{
    PL_ASSERT(n <= SLOT_MERGE_MAX, "a merge sets at most SLOT_MERGE_MAX fields");
    uint64_t n64 = n;
    sb_add(&s->acts, "M", 1);
    act_str(&s->acts, model);
    act_str(&s->acts, key);
    act_bytes(&s->acts, &row, sizeof row);
    act_bytes(&s->acts, src, len);
    act_bytes(&s->acts, &n64, sizeof n64);
    for (size_t i = 0; i < n; i++) {
        act_str(&s->acts, from[i]);
        act_str(&s->acts, to[i]);
    }
}

void slot_extra(Slot *s, int (*fn)(Txn *t, void *arg), void *arg)
{
    sb_add(&s->acts, "X", 1);
    sb_add(&s->acts, &fn, sizeof fn);
    sb_add(&s->acts, &arg, sizeof arg);
}

/* forward_of: if a slot's only output is its own body, unkeyed, to one
 * queue (noop, route), that queue's name in q, else 0. */
static int forward_of(const Slot *s, char *q, size_t qn)
{
    const char *p = s->acts.buf, *end = p + s->acts.len, *fa, *fb, *fc;
    size_t a, b, c;
    uint64_t pri;
    if (s->acts.len == 0 || *p++ != 'P' || !(fa = take(&p, end, &a)) ||
        !(fb = take(&p, end, &b)) || !(fc = take(&p, end, &c)) || take_u64(&p, end, &pri) ||
        p != end || b != 0 || c != s->body.len || a >= qn || memcmp(fc, s->body.buf, c) != 0)
        return 0;
    memcpy(q, fa, a);
    q[a] = '\0';
    return 1;
}

static int slot_apply(Txn *t, CommitOp *op)
{
    SlotOp *so = (SlotOp *)op;
    Slot *s = so->slot;
    int rc;
    so->in_actions = 0;
    so->fail[0] = '\0';
    so->taken.k = 0;
    if (so->end == END_RELEASE)
        return queue_held_release(t, s->id, s->qid, s->body.buf, s->body.len, so->delay_ms,
                                  so->why.buf, NULL);
    if (so->end == END_BURY)
        return queue_held_bury(t, s->id, s->qid, s->body.buf, s->body.len, so->why.buf);
    /* The same job handed on unchanged: move it in place. */
    char fq[QUEUE_NAME_MAX + 1];
    if (forward_of(s, fq, sizeof fq)) {
        rc = queue_held_forward(t, s->id, s->qid, s->body.buf, s->body.len, fq, s->out_pri);
        if (rc != 0 && rc != PL_ELEASE && rc != PL_ENOJOB)
            put_failure(t, fq, s->body.len, 0, rc, so->fail, sizeof so->fail);
        return rc;
    }
    /* Room for the outputs is asked before anything is written, so that a
     * full disk refuses this hand-off alone, cleanly (the transaction stays
     * good for the others of the group commit). */
    if (s->acts.len && (rc = store_reserve(t, s->acts.len)) != 0) {
        snprintf(so->fail, sizeof so->fail, "no room for its outputs (%zu bytes): %s", s->acts.len,
                 pl_strerror(rc));
        return rc;
    }
    /* The ack first: if the hold was lost, nothing else happens. */
    if ((rc = queue_held_ack(t, s->id, s->qid, s->body.buf, s->body.len)) != 0)
        return rc;
    if ((rc = apply_actions(t, &s->acts, s->stage, &so->taken, s->out_pri, so->fail,
                            sizeof so->fail)) != 0) {
        so->in_actions = 1;
        return txn_fail(t, rc); /* after the ack: all or nothing */
    }
    return 0;
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

static void slot_free(Slot *s)
{
    Stage *st = s->stage;
    Feed *f = st->rsv;
    let_go(s, f->held);
    s->state = SLOT_FREE;
    s->req = NULL;
    sb_reset(&s->acts);
    st->in_flight--;
    f->free[f->nfree++] = s;
    slots_dispatch(st);
    slots_kick(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
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
            took_done(&so->taken);
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

/* body_forget drops the slot's decoded body: a new job comes. */
static void body_forget(Slot *s)
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

/* ---------------------------------------------------------------- reserver */

/* rsv_unhold lets go of the jobs a reserve took and no slot has: when its
 * apply runs again (its transaction retried), when its commit failed, and
 * in a drain. With r->held->mu held. */
static void rsv_unhold(Reserver *r)
{
    for (size_t i = r->next; i < r->got; i++)
        held_del(r->held, r->sp[i].id);
    r->got = r->next = 0;
}

static int rsv_apply(Txn *t, CommitOp *op)
{
    Reserver *r = (Reserver *)op;
    Held *h = r->held;
    Job *js = r->js;
    size_t got = 0;
    pthread_mutex_lock(&h->mu);
    rsv_unhold(r);
    int rc = queue_hold_n(t, r->queue, r->want, h->n, held_has, h, js, &got);
    if (rc == PL_EPAUSED)
        rc = PL_EEMPTY; /* a paused queue is one with nothing to give */
    /* Copy out now: the views die with the transaction. */
    for (size_t i = 0; !rc && i < got; i++) {
        Spare *p = &r->sp[i];
        p->id = js[i].id;
        p->qid = js[i].qid;
        p->attempts = js[i].attempts;
        p->pri = js[i].pri;
        sb_reset(&p->body);
        sb_add(&p->body, js[i].body, js[i].len);
        held_add(h, p->id);
        r->got = i + 1;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void slots_drop(Stage *st)
{
    Feed *f = st->rsv;
    if (!f)
        return;
    pthread_mutex_lock(&f->held->mu);
    for (unsigned k = 0; k < st->nrsv; k++)
        if (!f->r[k].active)
            rsv_unhold(&f->r[k]);
    pthread_mutex_unlock(&f->held->mu);
}

/* Each job is named in the in-flight file before its kind starts on it. A
 * turn is bounded (SLOTS_BUDGET_NS): the rest starts at the loop's next
 * wake (Engine.redispatch). */
void slots_dispatch(Stage *st)
{
    Feed *f = st->rsv;
    Engine *e = st->engine;
    if (!f || st->draining || e->draining)
        return;
    uint64_t t0 = pl_mono_ns();
    unsigned n = 0;
    for (unsigned k = 0; k < st->nrsv && f->nfree; k++) {
        Reserver *r = &f->r[k];
        if (r->active)
            continue;
        while (r->next < r->got && f->nfree) {
            if (++n % 8 == 0 && pl_mono_ns() - t0 > SLOTS_BUDGET_NS) {
                e->redispatch = 1;
                ev_async_send(e->loop, &e->wake);
                return;
            }
            Spare *p = &r->sp[r->next++];
            Slot *s = f->free[--f->nfree];
            Strbuf body = s->body;
            body_forget(s);
            s->id = p->id;
            s->lease = 0;
            s->qid = p->qid;
            s->attempts = p->attempts;
            s->pri = p->pri;
            s->pri_set = 0;
            s->out_pri = pri_default(st->conf, s->pri);
            s->body = p->body; /* the spare takes the slot's old buffer */
            p->body = body;
            s->state = SLOT_WORKING;
            s->started_ns = pl_mono_ns();
            sb_reset(&s->acts);
            st->in_flight++;
            flight_set(e, s, p->attempts - 1);
            st->kind->start(s);
        }
        if (r->next == r->got)
            r->next = r->got = 0;
    }
}

static void rsv_done(EngineOp *eo, int rc)
{
    Reserver *r = (Reserver *)eo;
    Stage *st = r->stage;
    r->active = 0;
    st->reserving--;
    r->want = 0;
    if (rc || st->draining) {
        /* The transaction failed (what it read may not be there), or the
         * stage drains: nothing of it is started. */
        pthread_mutex_lock(&r->held->mu);
        rsv_unhold(r);
        pthread_mutex_unlock(&r->held->mu);
    }
    if (rc && rc != PL_EEMPTY) {
        stage_log(st, PL_LOG_ERROR, 0, "reserve from '%s' failed: %s; trying again in %.0f s",
                  r->queue, pl_strerror(rc), RSV_PAUSE_S);
        r->paused = 1;
        ev_timer_set(&r->pause, RSV_PAUSE_S, 0);
        ev_timer_start(st->loop, &r->pause);
    }
    slots_dispatch(st);
    slots_kick(st);
    spares_watch(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
}

/* Spares and priorities. A spare is a job taken ahead of the slots; a job
 * put later at a more urgent priority must still be worked first, and a
 * paused queue must give nothing more. So while a stage has spares that
 * something could overtake (priority above 0), a watch waits parked in the
 * committer, looking after each transaction (one index seek) for a ready
 * job more urgent than the least urgent spare, or a pause; then the
 * spares are let go (they are ready on disk: nothing to write) and the
 * reservers take the best jobs again. */
static int watch_apply(Txn *t, CommitOp *op)
{
    Watch *w = (Watch *)op;
    Stage *st = w->stage;
    Held *h = ((Feed *)st->rsv)->held;
    int yes = 0;
    pthread_mutex_lock(&h->mu);
    int rc = queue_overtaken(t, st->conf->input, w->pri, held_has, h, &yes);
    pthread_mutex_unlock(&h->mu);
    if (rc)
        return rc;
    return yes ? 0 : PL_EEMPTY;
}

static void watch_done(EngineOp *eo, int rc)
{
    Watch *w = (Watch *)eo;
    Stage *st = w->stage;
    Feed *f = st->rsv;
    w->active = 0;
    if (rc == 0) {
        pthread_mutex_lock(&f->held->mu);
        for (unsigned k = 0; k < st->nrsv; k++)
            if (!f->r[k].active)
                rsv_unhold(&f->r[k]);
        pthread_mutex_unlock(&f->held->mu);
        slots_kick(st);
    }
    spares_watch(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
}

/* spares_watch arms the watch when the stage has spares that a more
 * urgent job could overtake. */
static void spares_watch(Stage *st)
{
    Feed *f = st->rsv;
    Engine *e = st->engine;
    if (!f || f->watch.active || st->draining || e->draining)
        return;
    uint32_t pri = 0;
    int any = 0;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        for (size_t i = r->next; !r->active && i < r->got; i++) {
            any = 1;
            if (r->sp[i].pri > pri)
                pri = r->sp[i].pri;
        }
    }
    if (!any || pri == 0)
        return;
    Watch *w = &f->watch;
    w->stage = st;
    w->pri = pri;
    w->active = 1;
    w->eo.op.apply = watch_apply;
    w->eo.op.park = 1;
    w->eo.op.deadline_ns = pl_mono_ns() + 1000000000ull;
    w->eo.loop_done = watch_done;
    engine_submit(e, &w->eo);
}

static void on_rsv_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Reserver *r = container_of(w, Reserver, pause);
    r->paused = 0;
    slots_kick(r->stage);
}

/* slots_kick asks for jobs while there is room for them: the free slots
 * and one reserve's worth ahead of them, less what waits in spares or is
 * asked already; with a reserve in flight, another only for a whole batch
 * (no trickle of one-job reserves). */
void slots_kick(Stage *st)
{
    Feed *f = st->rsv;
    if (!f || st->draining || st->engine->draining)
        return;
    long pending = 0;
    unsigned active = 0;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        pending += (long)(r->active ? r->want : r->got - r->next);
        active += r->active;
    }
    long room = (long)f->nfree + f->cap - pending;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        if (r->active || r->paused || r->got)
            continue;
        if (room <= 0 || (active && room < (long)f->cap))
            return;
        r->want = room < (long)f->cap ? (size_t)room : f->cap;
        room -= (long)r->want;
        r->active = 1;
        active++;
        st->reserving++;
        r->eo.op.apply = rsv_apply;
        r->eo.op.park = 1;
        r->eo.op.deadline_ns = pl_mono_ns() + 1000000000ull;
        r->eo.loop_done = rsv_done;
        engine_submit(st->engine, &r->eo);
    }
}

void slots_open(Stage *st)
{
    st->nslots = st->conf->concurrency ? st->conf->concurrency : 1;
    st->slots = xcalloc(st->nslots, sizeof *st->slots);
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        s->stage = st;
        if (st->kind->slot_size)
            s->data = xcalloc(1, st->kind->slot_size);
        sb_init(&s->body);
        sb_init(&s->acts);
        msgpack_sbuffer_init(&s->bmp);
        SlotOp *so = xcalloc(1, sizeof *so);
        so->slot = s;
        sb_init(&so->why);
        s->op = so;
    }
    /* Enough reservers that all the slots can be refilled at once, `batch`
     * jobs per reserve, a few at most, and one more to keep jobs ahead of
     * the slots. */
    unsigned b = st->conf->batch ? st->conf->batch : 1;
    if (b > RSV_MAX)
        b = RSV_MAX;
    st->nrsv = (st->nslots + b - 1) / b;
    if (st->nrsv > RSV_COUNT_MAX)
        st->nrsv = RSV_COUNT_MAX;
    st->nrsv++;
    Feed *f = xcalloc(1, sizeof *f);
    f->cap = b;
    f->r = xcalloc(st->nrsv, sizeof *f->r);
    f->free = xcalloc(st->nslots, sizeof *f->free);
    for (unsigned k = st->nslots; k > 0; k--)
        f->free[f->nfree++] = &st->slots[k - 1];
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        r->stage = st;
        r->queue = st->conf->input;
        r->sp = xcalloc(b, sizeof *r->sp);
        for (unsigned j = 0; j < b; j++)
            sb_init(&r->sp[j].body);
        r->js = xcalloc(RSV_MAX, sizeof *r->js);
        ev_timer_init(&r->pause, on_rsv_pause, RSV_PAUSE_S, 0);
    }
    st->rsv = f;
}

void slots_set(Stage *st)
{
    for (unsigned k = 0; st->kind->slot_init && k < st->nslots; k++)
        st->kind->slot_init(&st->slots[k]);
    st->slots_set = 1;
}

void slots_close(Stage *st)
{
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        SlotOp *so = s->op;
        if (st->slots_set && st->kind->slot_fini)
            st->kind->slot_fini(s);
        free(s->data); /* the kind's fini released what was in it */
        sb_free(&s->body);
        sb_free(&s->acts);
        body_forget(s);
        msgpack_sbuffer_destroy(&s->bmp);
        if (so)
            sb_free(&so->why);
        free(so);
    }
    free(st->slots);
    st->slots = NULL;
    st->nslots = 0;
    Feed *f = st->rsv;
    for (unsigned k = 0; f && k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        ev_timer_stop(st->loop, &r->pause);
        for (unsigned j = 0; j < f->cap; j++)
            sb_free(&r->sp[j].body);
        free(r->sp);
        free(r->js);
    }
    if (f) {
        free(f->r);
        free(f->free);
        free(f);
    }
    st->rsv = NULL;
    st->nrsv = 0;
}

void slots_cancel(Stage *st)
{
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        if (s->state == SLOT_WORKING && s->req)
            http_cancel(s->req); /* its done sees HTTP_CANCELED and retries */
    }
}

/* ---------------------------------------------------------------- in-flight file */

typedef struct Lost {
    const Flight *f;
    size_t n;
    size_t counted, buried;
} Lost;

/* count_lost stores the attempts of the holds a stopped engine left in its
 * in-flight file (queue_held_lost). */
static int count_lost(Txn *t, void *arg)
{
    Lost *l = arg;
    l->counted = l->buried = 0;
    for (size_t i = 0; i < l->n; i++) {
        const Flight *f = &l->f[i];
        if (!f->id)
            continue;
        char why[160];
        int buried = 0;
        snprintf(why, sizeof why, "the engine stopped while working it (attempt %u; a crash, "
                 "kill -9 or power cut)", f->attempts + 1);
        int rc = queue_held_lost(t, f->id, f->qid, f->attempts, why, &buried);
        if (rc)
            return rc;
        l->counted++;
        l->buried += buried != 0;
    }
    return 0;
}

static int read_uuid(Txn *t, void *arg)
{
    return staging_uuid(t, arg);
}

/* holds_open makes a Held per input queue and the in-flight file of
 * DIR/engine.inflight, after storing what the last one left (see the top
 * of this file). */
int holds_open(Engine *e, const char *dir, char *err, size_t errlen)
{
    size_t nslots = 0;
    e->held = xcalloc(e->nstages ? e->nstages : 1, sizeof *e->held);
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *st = &e->stages[i];
        if (!st->rsv)
            continue;
        Held *h = held_of(e, st->conf->input);
        if (!h) {
            h = &e->held[e->nheld++];
            snprintf(h->queue, sizeof h->queue, "%s", st->conf->input);
            pthread_mutex_init(&h->mu, NULL);
            h->cap = 64;
            h->v = xcalloc(h->cap, sizeof *h->v);
        }
        Feed *f = st->rsv;
        f->held = h;
        for (unsigned k = 0; k < st->nrsv; k++)
            f->r[k].held = h;
        for (unsigned k = 0; k < st->nslots; k++)
            st->slots[k].flight = (uint32_t)nslots++;
    }

    char path[4200], uuid[33];
    int rc = store_run(e->store, read_uuid, uuid);
    if (rc) {
        snprintf(err, errlen, "cannot read the store's identity: %s", pl_strerror(rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/engine.inflight", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return errno;
    }
    /* What the last engine held when it stopped. */
    struct stat sb;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size >= sizeof(FlightHead)) {
        size_t len = (size_t)sb.st_size;
        char *buf = xmalloc(len);
        ssize_t got = pread(fd, buf, len, 0);
        FlightHead fh;
        memcpy(&fh, buf, sizeof fh);
        if (got == (ssize_t)len && !memcmp(fh.magic, FLIGHT_MAGIC, 8) && !memcmp(fh.uuid, uuid, 32) &&
            sizeof fh + (size_t)fh.nslots * sizeof(Flight) <= len) {
            Lost l = {(const Flight *)(buf + sizeof fh), fh.nslots, 0, 0};
            rc = store_run(e->store, count_lost, &l);
            if (rc)
                snprintf(err, errlen, "cannot count the attempts the last run left in '%s': %s",
                         path, pl_strerror(rc));
            else if (l.counted)
                pl_log(PL_LOG_WARN, "engine: the last run stopped while working %zu jobs; their "
                       "attempts are counted (%zu buried past max_attempts)", l.counted, l.buried);
        } else if (got > 0) {
            pl_log(PL_LOG_WARN, "engine: '%s' is not this store's in-flight file; its contents are "
                   "ignored", path);
        }
        free(buf);
    }
    if (rc) {
        close(fd);
        return rc;
    }
    /* A fresh one, every block allocated: a store into a mapping of a
     * hole on a full disk is a SIGBUS. Without it the engine still runs,
     * only a crash does not count the attempts it ends. */
    e->flight_len = sizeof(FlightHead) + (nslots ? nslots : 1) * sizeof(Flight);
    int frc = ftruncate(fd, 0) != 0 ? errno : posix_fallocate(fd, 0, (off_t)e->flight_len);
    void *m = frc ? MAP_FAILED : mmap(NULL, e->flight_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        pl_log(PL_LOG_WARN, "engine: cannot make '%s' (%s): a crash will not count the attempts "
               "of the jobs in flight against max_attempts", path, strerror(frc ? frc : errno));
        m = mmap(NULL, e->flight_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        PL_ASSERT(m != MAP_FAILED, "an anonymous mapping of a few pages works");
        e->flight_anon = 1;
    }
    close(fd);
    memset(m, 0, e->flight_len);
    FlightHead fh = {.nslots = (uint32_t)nslots};
    memcpy(fh.magic, FLIGHT_MAGIC, 8);
    memcpy(fh.uuid, uuid, 32);
    memcpy(m, &fh, sizeof fh);
    e->flight_map = m;
    e->flight = (Flight *)((char *)m + sizeof fh);
    return 0;
}

void holds_close(Engine *e)
{
    for (size_t i = 0; i < e->nheld; i++) {
        pthread_mutex_destroy(&e->held[i].mu);
        free(e->held[i].v);
    }
    free(e->held);
    e->held = NULL;
    e->nheld = 0;
    if (e->flight_map)
        munmap(e->flight_map, e->flight_len);
    e->flight_map = NULL;
    free(e->fuse_q);
    free(e->fuse_to);
    e->fuse_q = NULL;
    e->fuse_to = NULL;
    e->nfuse = 0;
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
    uint32_t pri = pri_default(c, 0);
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
    sb_add(&em->acts, "C", 1);
    act_bytes(&em->acts, value, len);
}

void emit_extra(Emit *em, int (*fn)(Txn *t, void *arg), void *arg)
{
    sb_add(&em->acts, "X", 1);
    sb_add(&em->acts, &fn, sizeof fn);
    sb_add(&em->acts, &arg, sizeof arg);
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
        took_done(&em->taken);
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

