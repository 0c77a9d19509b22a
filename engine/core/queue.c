/* queue.c: durable priority queues on LMDB (see queue.h for the contract,
 * store.h for the sub-databases): the layout and the operations on jobs
 * (put, tick, reserve, ack, forward, release, touch, bury, get). The
 * idempotency keys are in queue_keys.c, the operations on whole queues and
 * the operator's (kick, peek, purge) in queue_admin.c; queue_int.h is what
 * they share.
 *
 * A job lives in DB_JOBS (header and body) and has exactly one entry in
 * DB_INDEX, under its state's tag: ready (qid, pri, id), delayed (ready-at,
 * id), reserved (lease-until, id) or buried (qid, id). The queue record keeps
 * exact counters; this transaction's queue records are cached and written
 * once, before commit (txn precommit hook), so a batch of 1000 operations
 * rewrites each queue record once.
 *
 * Every operation checks before it writes; a failure after its first write
 * marks the transaction unusable (txn_fail), so no half-done operation can
 * ever be committed. */
#include "queue.h"
#include "queue_int.h"

#include "pl.h"
#include "rec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MAX 1000

typedef struct QCache {
    QRec **q;
    size_t n, cap;
    Rec rec;
    uint64_t ticked_at; /* now of the last tick in this txn, +1 (0: never) */
} QCache;

/* ---------------------------------------------------------------- cache */

static void qc_free(void *p)
{
    QCache *c = p;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->q[i]);
    free(c->q);
    rec_destroy(&c->rec);
    free(c);
}

/* Meta keys: "q/" name -> queue record, "i/" qid -> name. */
static size_t qrec_key(unsigned char *b, const char *name)
{
    size_t n = strlen(name);
    b[0] = 'q';
    b[1] = '/';
    memcpy(b + 2, name, n);
    return n + 2;
}

static size_t qid_key(unsigned char *b, uint32_t qid)
{
    b[0] = 'i';
    b[1] = '/';
    pl_put_be32(b + 2, qid);
    return 6;
}

static void qc_flush(Txn *t, void *arg)
{
    QCache *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        QRec *q = c->q[i];
        if (!q->dirty)
            continue;
        rec_queue_encode(&c->rec, &q->s);
        unsigned char kb[2 + QUEUE_NAME_MAX];
        MDB_val k = {qrec_key(kb, q->s.name), kb}, v = {c->rec.sb.size, c->rec.sb.data};
        int rc = mdb_put(t->mdb, txn_dbi(t, DB_META), &k, &v, 0);
        if (rc) {
            txn_fail(t, rc);
            return;
        }
        q->dirty = 0;
    }
}

static QCache *qc(Txn *t)
{
    if (!t->qcache) {
        QCache *c = xcalloc(1, sizeof *c);
        rec_init(&c->rec);
        t->qcache = c;
        t->qcache_free = qc_free;
        t->precommit = qc_flush;
        t->precommit_arg = c;
    }
    return t->qcache;
}

static QRec *qc_add(QCache *c, const QueueStats *s)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->q = xrealloc(c->q, c->cap * sizeof *c->q);
    }
    QRec *q = xcalloc(1, sizeof *q);
    q->s = *s;
    c->q[c->n++] = q;
    return q;
}

void queue_conf_default(QueueConf *c)
{
    c->ttr_ms = 60000;
    c->max_attempts = 10;
    c->backoff_ms = 1000;
    c->backoff_max_ms = 3600000;
    c->max_body = 1u << 20;
    c->key_retention_s = 86400;
}

uint64_t queue_backoff_ms(const QueueConf *c, uint32_t attempts)
{
    uint64_t d = c->backoff_ms;
    for (uint32_t i = 1; i < attempts && d < c->backoff_max_ms; i++)
        d *= 2;
    return d < c->backoff_max_ms ? d : c->backoff_max_ms;
}

int queue_name_ok(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return n >= 1 && n <= QUEUE_NAME_MAX;
}

int q_conf_ok(const QueueConf *c)
{
    return c->ttr_ms >= 1 && c->max_body >= 1 && c->max_body <= QUEUE_BODY_LIMIT &&
           c->backoff_max_ms >= c->backoff_ms && c->key_retention_s <= QUEUE_KEY_RETENTION_MAX;
}

int q_find(Txn *t, const char *name, int create, const QueueConf *conf, QRec **out)
{
    QCache *c = qc(t);
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->q[i]->s.name, name) == 0) {
            *out = c->q[i];
            return 0;
        }
    if (!queue_name_ok(name))
        return PL_EINVAL;
    unsigned char kb[2 + QUEUE_NAME_MAX];
    MDB_val k = {qrec_key(kb, name), kb}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &v);
    QueueStats s;
    if (rc == 0) {
        if ((rc = rec_queue_decode(&c->rec, v.mv_data, v.mv_size, &s)) != 0) {
            pl_log(PL_LOG_ERROR, "store: queue '%s': its record (%zu bytes) is %s; run `qctl "
                   "verify`", name, v.mv_size, rc == PL_EFORMAT ? "of a newer format" : "damaged");
            return rc;
        }
        *out = qc_add(c, &s);
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    if (!create)
        return PL_ENOQUEUE;
    if (!t->write)
        return EACCES;
    memset(&s, 0, sizeof s);
    if (conf)
        s.conf = *conf;
    else
        queue_conf_default(&s.conf);
    if (!q_conf_ok(&s.conf))
        return PL_EINVAL;
    strcpy(s.name, name);
    s.created_ms = t->now;
    /* The next qid, from a counter in meta (qids are never reused). */
    MDB_val ck = {8, "next_qid"}, cv;
    rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &ck, &cv);
    if (rc == 0 && cv.mv_size == 4)
        s.qid = pl_get_be32(cv.mv_data);
    else if (rc == MDB_NOTFOUND)
        s.qid = 1;
    else
        return rc ? rc : PL_EFORMAT;
    unsigned char nb[4], qb[6];
    pl_put_be32(nb, s.qid + 1);
    cv.mv_size = 4;
    cv.mv_data = nb;
    MDB_val qk = {qid_key(qb, s.qid), qb}, qv = {strlen(name), (void *)name};
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_META), &ck, &cv, 0)) != 0 ||
        (rc = mdb_put(t->mdb, txn_dbi(t, DB_META), &qk, &qv, 0)) != 0)
        return txn_fail(t, rc);
    QRec *q = qc_add(c, &s);
    q->dirty = 1;
    *out = q;
    return 0;
}

int q_byid(Txn *t, uint32_t qid, QRec **out)
{
    QCache *c = qc(t);
    for (size_t i = 0; i < c->n; i++)
        if (c->q[i]->s.qid == qid) {
            *out = c->q[i];
            return 0;
        }
    unsigned char qb[6];
    MDB_val k = {qid_key(qb, qid), qb}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? PL_EFORMAT : rc;
    char name[QUEUE_NAME_MAX + 1];
    if (v.mv_size > QUEUE_NAME_MAX)
        return PL_EFORMAT;
    memcpy(name, v.mv_data, v.mv_size);
    name[v.mv_size] = '\0';
    return q_find(t, name, 0, NULL, out);
}

/* ---------------------------------------------------------------- jobs */

/* Job keys: (id, 0) the header, (id, 1) the body. */
enum { JK_HEADER, JK_BODY };
static void job_key(unsigned char *b, uint64_t id, int kind)
{
    pl_put_be64(b, id);
    b[8] = (unsigned char)kind;
}

/* jobs_get reads key kb of DB_JOBS through the transaction's cursor: a
 * job's header and body sit side by side, so the reads and deletes of one
 * job after the first stay on its page (LMDB's MDB_SET searches the
 * cursor's page before the tree). */
static int jobs_get(Txn *t, unsigned char *kb, MDB_val *v)
{
    MDB_cursor *c = txn_cursor(t, DB_JOBS);
    if (!c)
        return ENOMEM;
    MDB_val k = {9, kb};
    return mdb_cursor_get(c, &k, v, MDB_SET_KEY);
}

static int jobs_del(Txn *t, unsigned char *kb)
{
    MDB_cursor *c = txn_cursor(t, DB_JOBS);
    if (!c)
        return ENOMEM;
    MDB_val k = {9, kb}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET);
    return rc ? rc : mdb_cursor_del(c, 0);
}

int q_job_load(Txn *t, uint64_t id, JobRec *j)
{
    unsigned char kb[9];
    job_key(kb, id, JK_HEADER);
    MDB_val v;
    int rc = jobs_get(t, kb, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? PL_ENOJOB : rc;
    if ((rc = rec_job_decode(&qc(t)->rec, v.mv_data, v.mv_size, j)) != 0)
        pl_log(PL_LOG_ERROR, "store: job %llu: its header record (%zu bytes) is %s; run `qctl "
               "verify`", (unsigned long long)id, v.mv_size,
               rc == PL_EFORMAT ? "of a newer format" : "damaged");
    return rc;
}

/* job_store writes j's header and points j's views into the stored copy
 * (MDB_RESERVE gives us the place in the page), so callers can hand them out. */
static int job_store(Txn *t, uint64_t id, JobRec *j, unsigned flags)
{
    Rec *r = &qc(t)->rec;
    size_t ko, eo;
    rec_job_encode(r, j, &ko, &eo);
    unsigned char kb[9];
    job_key(kb, id, JK_HEADER);
    MDB_val k = {9, kb}, v = {r->sb.size, NULL};
    int rc = mdb_put(t->mdb, txn_dbi(t, DB_JOBS), &k, &v, flags | MDB_RESERVE);
    if (rc)
        return rc;
    memcpy(v.mv_data, r->sb.data, r->sb.size);
    if (j->key)
        j->key = (const char *)v.mv_data + ko;
    if (j->error)
        j->error = (const char *)v.mv_data + eo;
    return 0;
}

static int body_get(Txn *t, uint64_t id, const void **p, size_t *n)
{
    unsigned char kb[9];
    job_key(kb, id, JK_BODY);
    MDB_val v;
    int rc = jobs_get(t, kb, &v);
    if (rc == MDB_NOTFOUND) {
        *p = "";
        *n = 0;
        return 0;
    }
    if (rc)
        return rc;
    *p = v.mv_data;
    *n = v.mv_size;
    return 0;
}

int q_fill(Txn *t, uint64_t id, const JobRec *j, const QRec *q, Job *out)
{
    out->id = id;
    out->qid = j->qid;
    strcpy(out->queue, q->s.name);
    out->pri = j->pri;
    out->state = j->state;
    out->attempts = j->attempts;
    out->kicks = j->kicks;
    out->created_ms = j->created_ms;
    out->due_ms = j->due_ms;
    out->ttr_ms = j->ttr_ms;
    out->lease = j->lease;
    out->key = j->key;
    out->keylen = j->keylen;
    out->error = j->error;
    out->errorlen = j->errorlen;
    return body_get(t, id, &out->body, &out->len);
}

static uint64_t next_id(Txn *t)
{
    if (!t->next_id) {
        MDB_val k = {7, "next_id"}, v;
        if (mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &v) == 0 && v.mv_size == 8)
            t->next_id = pl_get_be64(v.mv_data);
        else
            t->next_id = 1;
    }
    t->next_id_dirty = 1;
    return t->next_id++;
}

/* ---------------------------------------------------------------- indexes */

/* Index keys: a tag byte for the state, then its fields. */
static const unsigned char tags[] = {0, 'r', 'd', 'l', 'b'};

size_t q_idx_key(unsigned char *b, int state, uint32_t qid, uint32_t pri, uint64_t due, uint64_t id)
{
    b[0] = tags[state];
    switch (state) {
    case JOB_READY:
        pl_put_be32(b + 1, qid);
        pl_put_be32(b + 5, pri);
        pl_put_be64(b + 9, id);
        return 17;
    case JOB_DELAYED:
    case JOB_RESERVED:
        pl_put_be64(b + 1, due);
        pl_put_be64(b + 9, id);
        return 17;
    default:
        pl_put_be32(b + 1, qid);
        pl_put_be64(b + 5, id);
        return 13;
    }
}

size_t q_idx_prefix(unsigned char *b, int state, uint32_t qid)
{
    b[0] = tags[state];
    if (state == JOB_DELAYED || state == JOB_RESERVED)
        return 1;
    pl_put_be32(b + 1, qid);
    return 5;
}

int q_idx_seek(MDB_cursor *c, const unsigned char *key, size_t klen, size_t plen, MDB_val *k)
{
    MDB_val v;
    k->mv_size = klen;
    k->mv_data = (void *)key;
    int rc = mdb_cursor_get(c, k, &v, MDB_SET_RANGE);
    if (rc)
        return rc;
    if (k->mv_size < plen || memcmp(k->mv_data, key, plen) != 0)
        return MDB_NOTFOUND;
    return 0;
}

int q_scan_first(QScan *s, MDB_cursor *c, int state, uint32_t qid)
{
    s->c = c;
    s->plen = q_idx_prefix(s->pre, state, qid);
    return q_idx_seek(c, s->pre, s->plen, s->plen, &s->k);
}

int q_scan_next(QScan *s)
{
    return q_idx_next(s->c, s->pre, s->plen, &s->k);
}

int q_idx_next(MDB_cursor *c, const unsigned char *prefix, size_t plen, MDB_val *k)
{
    MDB_val v;
    int rc = mdb_cursor_get(c, k, &v, MDB_NEXT);
    if (rc)
        return rc;
    if (k->mv_size < plen || memcmp(k->mv_data, prefix, plen) != 0)
        return MDB_NOTFOUND;
    return 0;
}

uint64_t q_idx_id(const MDB_val *k)
{
    return pl_get_be64((const unsigned char *)k->mv_data + k->mv_size - 8);
}

static uint64_t *state_count(QRec *q, int state)
{
    switch (state) {
    case JOB_READY: return &q->s.ready;
    case JOB_DELAYED: return &q->s.delayed;
    case JOB_RESERVED: return &q->s.reserved;
    default: return &q->s.buried;
    }
}

/* state_leave removes job id from its state's index. */
static int state_leave(Txn *t, QRec *q, uint64_t id, const JobRec *j)
{
    unsigned char b[17];
    MDB_val k = {q_idx_key(b, j->state, j->qid, j->pri, j->due_ms, id), b};
    int rc = mdb_del(t->mdb, txn_dbi(t, DB_INDEX), &k, NULL);
    if (rc)
        return rc == MDB_NOTFOUND ? PL_EFORMAT : rc;
    uint64_t *n = state_count(q, j->state);
    PL_ASSERT(*n > 0, "queue state counter never goes below zero");
    --*n;
    q->dirty = 1;
    return 0;
}

/* state_enter sets j's state (and due time) and indexes it. */
static int state_enter(Txn *t, QRec *q, uint64_t id, JobRec *j, int state, uint64_t due)
{
    unsigned char b[17];
    j->state = state;
    j->due_ms = due;
    MDB_val k = {q_idx_key(b, state, j->qid, j->pri, due, id), b}, v = {0, NULL};
    int rc = mdb_put(t->mdb, txn_dbi(t, DB_INDEX), &k, &v, 0);
    if (rc)
        return rc;
    ++*state_count(q, state);
    q->dirty = 1;
    return 0;
}

/* q_move: leave the current state, enter another, rewrite the header. Any
 * failure here comes after a write, so it poisons the transaction. */
int q_move(Txn *t, QRec *q, uint64_t id, JobRec *j, int state, uint64_t due)
{
    int rc;
    if ((rc = state_leave(t, q, id, j)) != 0 || (rc = state_enter(t, q, id, j, state, due)) != 0 ||
        (rc = job_store(t, id, j, 0)) != 0)
        return txn_fail(t, rc);
    return 0;
}

int q_drop(Txn *t, QRec *q, uint64_t id, JobRec *j)
{
    unsigned char kb[9];
    job_key(kb, id, JK_HEADER);
    int rc;
    if ((rc = state_leave(t, q, id, j)) != 0 || (rc = q_key_release(t, q, id, j)) != 0 ||
        (rc = jobs_del(t, kb)) != 0)
        return txn_fail(t, rc);
    kb[8] = JK_BODY;
    rc = jobs_del(t, kb);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return 0;
}

/* ---------------------------------------------------------------- put */

int queue_put(Txn *t, const char *queue, const PutArgs *a, uint64_t *id, int *existed)
{
    QRec *q;
    int rc;
    if (existed)
        *existed = 0;
    if (a->key && (a->keylen == 0 || a->keylen > QUEUE_KEY_MAX))
        return a->keylen ? PL_ETOOBIG : PL_EINVAL;
    if ((rc = q_find(t, queue, 1, NULL, &q)) != 0)
        return rc;
    if (a->len > q->s.conf.max_body)
        return PL_ETOOBIG;

    if (a->key) {
        uint64_t had;
        int live;
        rc = q_key_find(t, q->s.qid, a->key, a->keylen, &had, &live);
        if (rc == 0) {
            *id = had;
            if (existed)
                *existed = live ? 1 : 2;
            return 0;
        }
        if (rc != MDB_NOTFOUND)
            return rc;
    }
    /* Room is asked last: a retry of a known key is answered on a full disk. */
    if ((rc = store_reserve(t, a->len + 2 * a->keylen + 64)) != 0)
        return rc;

    uint64_t nid = next_id(t);
    JobRec j = {
        .qid = q->s.qid, .pri = a->pri, .created_ms = t->now,
        .ttr_ms = a->ttr_ms ? a->ttr_ms : q->s.conf.ttr_ms,
        .key = a->key, .keylen = a->keylen,
    };
    int state = a->delay_ms ? JOB_DELAYED : JOB_READY;
    unsigned char ib[9];
    job_key(ib, nid, JK_BODY);
    MDB_val bk = {9, ib}, bv = {a->len, (void *)a->body};
    /* Ids only grow: header and body append at the end of DB_JOBS. */
    if ((rc = state_enter(t, q, nid, &j, state, a->delay_ms ? t->now + a->delay_ms : 0)) != 0 ||
        (rc = job_store(t, nid, &j, MDB_APPEND)) != 0 ||
        (rc = mdb_put(t->mdb, txn_dbi(t, DB_JOBS), &bk, &bv, MDB_APPEND)) != 0)
        return txn_fail(t, rc);
    if (a->key && (rc = q_key_take(t, q->s.qid, a->key, a->keylen, nid)) != 0)
        return txn_fail(t, rc);
    q->s.puts++;
    *id = nid;
    return 0;
}

/* ---------------------------------------------------------------- tick */

/* bury_in_place: j (in any state but buried) goes to buried with reason. */
static int expire_one(Txn *t, uint64_t id, JobRec *j)
{
    QRec *q;
    int rc = q_byid(t, j->qid, &q);
    if (rc)
        return rc;
    char why[160];
    j->lease = 0;
    if (q->s.conf.max_attempts && j->attempts >= q->s.conf.max_attempts) {
        snprintf(why, sizeof why, "lease expired (ttr %u ms) on attempt %u of %u; buried",
                 j->ttr_ms, j->attempts, q->s.conf.max_attempts);
        j->error = why;
        j->errorlen = strlen(why);
        q->s.buries++;
        q->s.expiries++;
        return q_move(t, q, id, j, JOB_BURIED, 0);
    }
    snprintf(why, sizeof why, "lease expired (ttr %u ms) on attempt %u", j->ttr_ms, j->attempts);
    j->error = why;
    j->errorlen = strlen(why);
    q->s.expiries++;
    return q_move(t, q, id, j, JOB_READY, 0);
}

static int tick_state(Txn *t, int state, size_t max, size_t *moved)
{
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    for (size_t i = 0; i < max; i++) {
        QScan sc;
        int rc = q_scan_first(&sc, c, state, 0);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        if (pl_get_be64((unsigned char *)sc.k.mv_data + 1) > t->now)
            return 0;
        uint64_t id = q_idx_id(&sc.k);
        JobRec j;
        QRec *q;
        if ((rc = q_job_load(t, id, &j)) != 0 || (rc = q_byid(t, j.qid, &q)) != 0)
            return rc;
        if (state == JOB_DELAYED)
            rc = q_move(t, q, id, &j, JOB_READY, 0);
        else
            rc = expire_one(t, id, &j);
        if (rc)
            return rc;
        ++*moved;
    }
    return 0;
}

int queue_tick(Txn *t, size_t max, size_t *moved)
{
    size_t n = 0;
    int rc = 0;
    if (!t->write)
        return EACCES;
    if ((rc = tick_state(t, JOB_DELAYED, max, &n)) == 0 &&
        (rc = tick_state(t, JOB_RESERVED, max, &n)) == 0)
        rc = queue_sweep_keys(t, max, NULL);
    if (moved)
        *moved = n;
    return rc;
}

int queue_next_due(Txn *t, uint64_t *ms)
{
    *ms = 0;
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    for (int state = JOB_DELAYED; state <= JOB_RESERVED; state++) {
        QScan sc;
        int rc = q_scan_first(&sc, c, state, 0);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc)
            return rc;
        uint64_t due = pl_get_be64((unsigned char *)sc.k.mv_data + 1);
        if (!*ms || due < *ms)
            *ms = due;
    }
    return 0;
}

/* ---------------------------------------------------------------- reserve */

/* reserve_one leases the most urgent ready job of q; with out->id only
 * (fill 0: the caller fills the views once its writing is done). */
static int reserve_one(Txn *t, QRec *q, uint32_t ttr_ms, Job *out, int fill_now)
{
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    unsigned char b[5];
    MDB_val k;
    int rc = q_idx_seek(c, b, q_idx_prefix(b, JOB_READY, q->s.qid), 5, &k);
    if (rc == MDB_NOTFOUND)
        return PL_EEMPTY; /* counter said otherwise: trust the index */
    if (rc)
        return rc;
    uint64_t id = q_idx_id(&k);
    JobRec j;
    if ((rc = q_job_load(t, id, &j)) != 0)
        return rc;
    if ((rc = mdb_cursor_del(c, 0)) != 0)
        return txn_fail(t, rc);
    q->s.ready--;
    j.attempts++;
    j.lease = pl_random64();
    if ((rc = state_enter(t, q, id, &j, JOB_RESERVED, t->now + (ttr_ms ? ttr_ms : j.ttr_ms))) != 0 ||
        (rc = job_store(t, id, &j, 0)) != 0)
        return txn_fail(t, rc);
    q->s.reserves++;
    out->id = id;
    if (fill_now && (rc = q_fill(t, id, &j, q, out)) != 0)
        return txn_fail(t, rc);
    return 0;
}

static int reserve_prep(Txn *t, const char *queue, QRec **q)
{
    QCache *c = qc(t);
    int rc;
    if (c->ticked_at != t->now + 1) {
        if ((rc = queue_tick(t, TICK_MAX, NULL)) != 0)
            return rc;
        c->ticked_at = t->now + 1;
    }
    if ((rc = q_find(t, queue, 0, NULL, q)) != 0)
        return rc;
    if ((*q)->s.paused)
        return PL_EPAUSED;
    return 0;
}

int queue_reserve(Txn *t, const char *queue, uint32_t ttr_ms, Job *out)
{
    QRec *q;
    int rc = reserve_prep(t, queue, &q);
    if (rc)
        return rc;
    if (!q->s.ready)
        return PL_EEMPTY;
    return reserve_one(t, q, ttr_ms, out, 1);
}

int queue_reserve_n(Txn *t, const char *queue, size_t n, uint32_t ttr_ms, Job *out, size_t *got)
{
    QRec *q;
    *got = 0;
    int rc = reserve_prep(t, queue, &q);
    if (rc)
        return rc;
    while (*got < n && q->s.ready) {
        if ((rc = reserve_one(t, q, ttr_ms, &out[*got], 0)) != 0)
            break;
        ++*got;
    }
    /* Each reserve rewrote a header in DB_JOBS, where the bodies live too:
     * a write may move the nodes of a dirty page, so views are taken once
     * the writing is done. */
    for (size_t i = 0; i < *got; i++) {
        JobRec j;
        int rc2 = q_job_load(t, out[i].id, &j);
        if (rc2 == 0)
            rc2 = q_fill(t, out[i].id, &j, q, &out[i]);
        if (rc2)
            return txn_fail(t, rc2);
    }
    if (*got)
        return 0;
    return rc ? rc : PL_EEMPTY;
}

/* ---------------------------------------------------------------- lease ops */

/* leased loads job id and checks the caller's lease (0: operator). */
static int leased(Txn *t, uint64_t id, uint64_t lease, JobRec *j, QRec **q)
{
    int rc = q_job_load(t, id, j);
    if (rc)
        return rc;
    if (lease && (j->state != JOB_RESERVED || j->lease != lease))
        return PL_ELEASE;
    return q_byid(t, j->qid, q);
}

int queue_ack(Txn *t, uint64_t id, uint64_t lease)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, lease, &j, &q);
    if (rc)
        return rc;
    int was = j.state;
    if ((rc = q_drop(t, q, id, &j)) != 0)
        return rc;
    if (was == JOB_RESERVED)
        q->s.acks++;
    else
        q->s.deletes++;
    return 0;
}

/* forward_job moves job id (j, in q; its lease or hold checked) to the
 * ready jobs of dq in place, with priority pri. */
static int forward_job(Txn *t, QRec *q, QRec *dq, uint64_t id, JobRec *j, uint32_t pri)
{
    const void *body;
    size_t len;
    int rc;
    if ((rc = body_get(t, id, &body, &len)) != 0)
        return rc;
    if (len > dq->s.conf.max_body)
        return PL_ETOOBIG;
    if ((rc = store_reserve(t, 64)) != 0) /* the body stays where it is */
        return rc;
    if ((rc = state_leave(t, q, id, j)) != 0 || (rc = q_key_release(t, q, id, j)) != 0)
        return txn_fail(t, rc);
    q->s.acks++;
    JobRec n = {
        .qid = dq->s.qid, .pri = pri, .created_ms = t->now, .ttr_ms = dq->s.conf.ttr_ms,
    };
    if ((rc = state_enter(t, dq, id, &n, JOB_READY, 0)) != 0 ||
        (rc = job_store(t, id, &n, 0)) != 0)
        return txn_fail(t, rc);
    dq->s.puts++;
    return 0;
}

int queue_forward(Txn *t, uint64_t id, uint64_t lease, const char *queue, uint32_t pri)
{
    JobRec j;
    QRec *q, *dq;
    int rc;
    if ((rc = q_find(t, queue, 1, NULL, &dq)) != 0 || (rc = leased(t, id, lease, &j, &q)) != 0)
        return rc;
    if (j.state != JOB_RESERVED)
        return PL_ESTATE;
    return forward_job(t, q, dq, id, &j, pri);
}

/* release_job ends attempt j->attempts of job id (lease already checked):
 * back to ready or delayed, or buried past max_attempts. */
static int release_job(Txn *t, QRec *q, uint64_t id, JobRec *j, int64_t delay_ms, const char *error,
                       int *buried)
{
    j->lease = 0;
    if (error) {
        j->error = error;
        j->errorlen = strlen(error);
    }
    const QueueConf *c = &q->s.conf;
    if (c->max_attempts && j->attempts >= c->max_attempts) {
        char why[QUEUE_REASON_MAX + 80];
        snprintf(why, sizeof why, "gave up after %u attempts: %.*s", j->attempts,
                 (int)(j->error ? j->errorlen : 8), j->error ? j->error : "released");
        j->error = why;
        j->errorlen = strlen(why);
        q->s.buries++;
        if (buried)
            *buried = 1;
        return q_move(t, q, id, j, JOB_BURIED, 0);
    }
    if (delay_ms < 0)
        delay_ms = (int64_t)queue_backoff_ms(c, j->attempts);
    q->s.releases++;
    if (delay_ms > 0)
        return q_move(t, q, id, j, JOB_DELAYED, t->now + (uint64_t)delay_ms);
    return q_move(t, q, id, j, JOB_READY, 0);
}

int queue_release(Txn *t, uint64_t id, uint64_t lease, int64_t delay_ms, const char *error,
                  int *buried)
{
    JobRec j;
    QRec *q;
    if (buried)
        *buried = 0;
    if (error && strlen(error) > QUEUE_REASON_MAX)
        return PL_ETOOBIG;
    int rc = leased(t, id, lease, &j, &q);
    if (rc)
        return rc;
    if (j.state != JOB_RESERVED)
        return PL_ESTATE;
    return release_job(t, q, id, &j, delay_ms, error, buried);
}

int queue_touch(Txn *t, uint64_t id, uint64_t lease, uint64_t *until)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, lease, &j, &q);
    if (rc)
        return rc;
    if (j.state != JOB_RESERVED)
        return PL_ESTATE;
    if ((rc = q_move(t, q, id, &j, JOB_RESERVED, t->now + j.ttr_ms)) != 0)
        return rc;
    if (until)
        *until = j.due_ms;
    return 0;
}

int queue_bury(Txn *t, uint64_t id, uint64_t lease, const char *reason)
{
    JobRec j;
    QRec *q;
    if (!reason || !*reason)
        return PL_EINVAL;
    if (strlen(reason) > QUEUE_REASON_MAX)
        return PL_ETOOBIG;
    int rc = leased(t, id, lease, &j, &q);
    if (rc)
        return rc;
    if (j.state == JOB_BURIED)
        return PL_ESTATE;
    j.lease = 0;
    j.error = reason;
    j.errorlen = strlen(reason);
    q->s.buries++;
    return q_move(t, q, id, &j, JOB_BURIED, 0);
}

int queue_get(Txn *t, uint64_t id, Job *out)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, 0, &j, &q);
    if (rc)
        return rc;
    return q_fill(t, id, &j, q, out);
}

int queue_set_body(Txn *t, uint64_t id, const void *body, size_t len)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, 0, &j, &q);
    if (rc)
        return rc;
    if (j.state == JOB_RESERVED)
        return PL_ESTATE;
    if (len > q->s.conf.max_body)
        return PL_ETOOBIG;
    if ((rc = store_reserve(t, len + 64)) != 0)
        return rc;
    unsigned char kb[9];
    job_key(kb, id, JK_BODY);
    MDB_val k = {9, kb}, v = {len, (void *)body};
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_JOBS), &k, &v, 0)) != 0)
        return txn_fail(t, rc);
    return 0;
}


/* ---------------------------------------------------------------- held */

/* A job held in memory is still ready on disk: its hold is good while the
 * job is ready in the queue it was taken from, with the body the holder
 * worked (body/len; NULL: not checked). Anything else (reserved by
 * someone, buried, deleted, moved, its body edited: queue_set_body) means
 * someone else has it now. */
static int held_load(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len, JobRec *j,
                     QRec **q)
{
    int rc = q_job_load(t, id, j);
    if (rc)
        return rc;
    if (j->state != JOB_READY || j->qid != qid)
        return PL_ELEASE;
    if (body) {
        const void *cur;
        size_t n;
        if ((rc = body_get(t, id, &cur, &n)) != 0)
            return rc;
        if (n != len || memcmp(cur, body, n) != 0)
            return PL_ELEASE;
    }
    return q_byid(t, qid, q);
}

int queue_hold_n(Txn *t, const char *queue, size_t n, size_t nheld,
                 int (*held)(uint64_t id, void *arg), void *arg, Job *out, size_t *got)
{
    QRec *q;
    *got = 0;
    int rc = reserve_prep(t, queue, &q);
    if (rc)
        return rc;
    if (q->s.ready <= nheld)
        return PL_EEMPTY;
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    QScan sc;
    for (rc = q_scan_first(&sc, c, JOB_READY, q->s.qid); rc == 0 && *got < n;
         rc = q_scan_next(&sc)) {
        uint64_t id = q_idx_id(&sc.k);
        if (held && held(id, arg))
            continue;
        JobRec j;
        Job *o = &out[*got];
        if ((rc = q_job_load(t, id, &j)) != 0 || (rc = q_fill(t, id, &j, q, o)) != 0)
            return rc;
        o->attempts = j.attempts + 1; /* the attempt this hold is */
        o->lease = 0;
        ++*got;
    }
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    return *got ? 0 : PL_EEMPTY;
}

int queue_overtaken(Txn *t, const char *queue, uint32_t pri, int (*held)(uint64_t id, void *arg),
                    void *arg, int *yes)
{
    QRec *q;
    *yes = 0;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    if (q->s.paused) {
        *yes = 1;
        return 0;
    }
    if (!q->s.ready || pri == 0)
        return 0;
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    QScan sc;
    /* Serving order: the more urgent first, so the walk stops at the
     * first job not more urgent than pri (past only held ones before it). */
    for (rc = q_scan_first(&sc, c, JOB_READY, q->s.qid); rc == 0; rc = q_scan_next(&sc)) {
        if (sc.k.mv_size < 17 || pl_get_be32((const unsigned char *)sc.k.mv_data + 5) >= pri)
            return 0;
        if (!held || !held(q_idx_id(&sc.k), arg)) {
            *yes = 1;
            return 0;
        }
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue_held_ack(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len)
{
    JobRec j;
    QRec *q;
    int rc = held_load(t, id, qid, body, len, &j, &q);
    if (rc || (rc = q_drop(t, q, id, &j)) != 0)
        return rc;
    q->s.reserves++;
    q->s.acks++;
    return 0;
}

int queue_held_forward(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                       const char *queue, uint32_t pri)
{
    JobRec j;
    QRec *q, *dq;
    int rc;
    if ((rc = q_find(t, queue, 1, NULL, &dq)) != 0 ||
        (rc = held_load(t, id, qid, body, len, &j, &q)) != 0 ||
        (rc = forward_job(t, q, dq, id, &j, pri)) != 0)
        return rc;
    q->s.reserves++;
    return 0;
}

int queue_held_release(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                       int64_t delay_ms, const char *error, int *buried)
{
    JobRec j;
    QRec *q;
    if (buried)
        *buried = 0;
    if (error && strlen(error) > QUEUE_REASON_MAX)
        return PL_ETOOBIG;
    int rc = held_load(t, id, qid, body, len, &j, &q);
    if (rc)
        return rc;
    j.attempts++;
    q->s.reserves++;
    return release_job(t, q, id, &j, delay_ms, error, buried);
}

int queue_held_bury(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                    const char *reason)
{
    JobRec j;
    QRec *q;
    if (!reason || !*reason)
        return PL_EINVAL;
    if (strlen(reason) > QUEUE_REASON_MAX)
        return PL_ETOOBIG;
    int rc = held_load(t, id, qid, body, len, &j, &q);
    if (rc)
        return rc;
    j.attempts++;
    j.lease = 0;
    j.error = reason;
    j.errorlen = strlen(reason);
    q->s.reserves++;
    q->s.buries++;
    return q_move(t, q, id, &j, JOB_BURIED, 0);
}

int queue_held_lost(Txn *t, uint64_t id, uint32_t qid, uint32_t attempts, const char *why,
                    int *buried)
{
    JobRec j;
    QRec *q;
    if (buried)
        *buried = 0;
    int rc = held_load(t, id, qid, NULL, 0, &j, &q);
    if (rc == PL_ENOJOB || rc == PL_ELEASE)
        return 0; /* done, or ended another way, before the process did */
    if (rc)
        return rc;
    if (j.attempts != attempts)
        return 0; /* its hold ended (a release wrote the attempt) */
    j.attempts++;
    q->s.reserves++;
    char text[QUEUE_REASON_MAX + 80];
    snprintf(text, sizeof text, "%.*s", QUEUE_REASON_MAX, why ? why : "the engine stopped while working it");
    j.error = text;
    j.errorlen = strlen(text);
    if (q->s.conf.max_attempts && j.attempts >= q->s.conf.max_attempts) {
        char b[QUEUE_REASON_MAX + 80];
        snprintf(b, sizeof b, "gave up after %u attempts: %.*s", j.attempts, QUEUE_REASON_MAX - 40,
                 text);
        j.error = b;
        j.errorlen = strlen(b);
        q->s.buries++;
        if (buried)
            *buried = 1;
        return q_move(t, q, id, &j, JOB_BURIED, 0);
    }
    /* Still ready, at the same place (the index key holds no attempts). */
    if ((rc = job_store(t, id, &j, 0)) != 0)
        return txn_fail(t, rc);
    return 0;
}

/* ---------------------------------------------------------------- pass */

int queue_passable(Txn *t, const char *queue)
{
    QRec *q;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    if (q->s.paused)
        return PL_EPAUSED;
    return q->s.ready || q->s.delayed || q->s.reserved ? PL_ESTATE : 0;
}

int queue_pass(Txn *t, const char *queue)
{
    QRec *q;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    q->s.puts++;
    q->s.reserves++;
    q->s.acks++;
    q->dirty = 1;
    return 0;
}
