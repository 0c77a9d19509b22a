/* apply.c: what the writer thread applies for the stages (slot_int.h):
 * the actions a slot or an emit records (their format, recorded here and
 * read back here), the fused hand-off of a row to the stage that takes it
 * (take_row), and a slot's commit (slot_apply). */
#include "slot_int.h"
#include "staging.h"
#include "pl.h"
#include "queue.h"

#include <stdio.h>
#include <string.h>

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
         * commit is done (slot_committed, emit_done: fuse_done). */
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

/* fuse_done: see slot_int.h. */
void fuse_done(const Taken *tk)
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

/* apply_actions: see slot_int.h. */
int apply_actions(Txn *t, const Strbuf *acts, Stage *from, Taken *tk, uint32_t pri, char *fail,
                  size_t failn)
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

void acts_put(Strbuf *acts, const char *queue, const void *body, size_t len, const char *key,
              uint64_t pri)
{
    sb_add(acts, "P", 1);
    act_bytes(acts, queue, strlen(queue));
    act_bytes(acts, key ? key : "", key ? strlen(key) : 0);
    act_bytes(acts, body, len);
    act_bytes(acts, &pri, sizeof pri);
}

void acts_row_land(Strbuf *acts, const char *model, const char *key, const void *mp, size_t len,
                   const char *queue)
{
    sb_add(acts, "R", 1);
    act_str(acts, model);
    act_str(acts, key);
    act_str(acts, queue);
    act_bytes(acts, mp, len);
}

void acts_row_merge(Strbuf *acts, const char *model, const char *key, uint64_t row,
                    const void *src, size_t len, const char *const *from, const char *const *to,
                    size_t n)
{
    PL_ASSERT(n <= SLOT_MERGE_MAX, "a merge sets at most SLOT_MERGE_MAX fields");
    uint64_t n64 = n;
    sb_add(acts, "M", 1);
    act_str(acts, model);
    act_str(acts, key);
    act_bytes(acts, &row, sizeof row);
    act_bytes(acts, src, len);
    act_bytes(acts, &n64, sizeof n64);
    for (size_t i = 0; i < n; i++) {
        act_str(acts, from[i]);
        act_str(acts, to[i]);
    }
}

void acts_extra(Strbuf *acts, int (*fn)(Txn *t, void *arg), void *arg)
{
    sb_add(acts, "X", 1);
    sb_add(acts, &fn, sizeof fn);
    sb_add(acts, &arg, sizeof arg);
}

void acts_cursor(Strbuf *acts, const void *value, size_t len)
{
    sb_add(acts, "C", 1);
    act_bytes(acts, value, len);
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

/* slot_apply: see slot_int.h. */
int slot_apply(Txn *t, CommitOp *op)
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

