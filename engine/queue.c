/* queue.c: durable priority queues on LMDB (see queue.h for the contract,
 * store.h for the sub-databases).
 *
 * A job lives in DB_JOBS (header) and DB_BODIES (body) and in exactly one
 * state index: DB_READY (qid, pri, id), DB_DELAYED (ready-at, id),
 * DB_LEASES (lease-until, id) or DB_BURIED (qid, id). The queue record keeps
 * exact counters; this transaction's queue records are cached and written
 * once, before commit (txn precommit hook), so a batch of 1000 operations
 * rewrites each queue record once.
 *
 * Every operation checks before it writes; a failure after its first write
 * marks the transaction unusable (txn_fail), so no half-done operation can
 * ever be committed. */
#include "queue.h"
#include "pl.h"
#include "rec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MAX 1000

typedef struct QRec {
    QueueStats s;
    int dirty;
} QRec;

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

static void qc_flush(Txn *t, void *arg)
{
    QCache *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        QRec *q = c->q[i];
        if (!q->dirty)
            continue;
        rec_queue_encode(&c->rec, &q->s);
        MDB_val k = {strlen(q->s.name), q->s.name}, v = {c->rec.sb.size, c->rec.sb.data};
        int rc = mdb_put(t->mdb, txn_dbi(t, DB_QUEUES), &k, &v, 0);
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

static int conf_ok(const QueueConf *c)
{
    return c->ttr_ms >= 1 && c->max_body >= 1 && c->max_body <= QUEUE_BODY_LIMIT &&
           c->backoff_max_ms >= c->backoff_ms;
}

/* q_find returns the cached record of queue name, loading it, or creating
 * it with conf (NULL: defaults) when create is set. */
static int q_find(Txn *t, const char *name, int create, const QueueConf *conf, QRec **out)
{
    QCache *c = qc(t);
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->q[i]->s.name, name) == 0) {
            *out = c->q[i];
            return 0;
        }
    if (!queue_name_ok(name))
        return PL_EINVAL;
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_QUEUES), &k, &v);
    QueueStats s;
    if (rc == 0) {
        if ((rc = rec_queue_decode(&c->rec, v.mv_data, v.mv_size, &s)) != 0)
            return rc;
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
    if (!conf_ok(&s.conf))
        return PL_EINVAL;
    strcpy(s.name, name);
    s.created_ms = t->now;
    /* The next qid: one past the last in DB_QIDS (cursor order is numeric). */
    MDB_cursor *cur = txn_cursor(t, DB_QIDS);
    MDB_val qk, qv;
    if (!cur)
        return ENOMEM;
    rc = mdb_cursor_get(cur, &qk, &qv, MDB_LAST);
    if (rc == 0)
        s.qid = pl_get_be32(qk.mv_data) + 1;
    else if (rc == MDB_NOTFOUND)
        s.qid = 1;
    else
        return rc;
    unsigned char qb[4];
    pl_put_be32(qb, s.qid);
    qk.mv_size = 4;
    qk.mv_data = qb;
    qv.mv_size = strlen(name);
    qv.mv_data = (void *)name;
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_QIDS), &qk, &qv, MDB_APPEND)) != 0)
        return txn_fail(t, rc);
    QRec *q = qc_add(c, &s);
    q->dirty = 1;
    *out = q;
    return 0;
}

static int q_byid(Txn *t, uint32_t qid, QRec **out)
{
    QCache *c = qc(t);
    for (size_t i = 0; i < c->n; i++)
        if (c->q[i]->s.qid == qid) {
            *out = c->q[i];
            return 0;
        }
    unsigned char qb[4];
    pl_put_be32(qb, qid);
    MDB_val k = {4, qb}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_QIDS), &k, &v);
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

static int job_load(Txn *t, uint64_t id, JobRec *j)
{
    unsigned char kb[8];
    pl_put_be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_JOBS), &k, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? PL_ENOJOB : rc;
    return rec_job_decode(&qc(t)->rec, v.mv_data, v.mv_size, j);
}

/* job_store writes j's header and points j's views into the stored copy
 * (MDB_RESERVE gives us the place in the page), so callers can hand them out. */
static int job_store(Txn *t, uint64_t id, JobRec *j, unsigned flags)
{
    Rec *r = &qc(t)->rec;
    size_t ko, eo;
    rec_job_encode(r, j, &ko, &eo);
    unsigned char kb[8];
    pl_put_be64(kb, id);
    MDB_val k = {8, kb}, v = {r->sb.size, NULL};
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
    unsigned char kb[8];
    pl_put_be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_BODIES), &k, &v);
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

static int fill(Txn *t, uint64_t id, const JobRec *j, const QRec *q, Job *out)
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

/* Key of job id in the index of state; returns its length. */
static size_t idx_key(unsigned char *b, int state, uint32_t qid, uint32_t pri, uint64_t due, uint64_t id)
{
    switch (state) {
    case JOB_READY:
        pl_put_be32(b, qid);
        pl_put_be32(b + 4, pri);
        pl_put_be64(b + 8, id);
        return 16;
    case JOB_DELAYED:
    case JOB_RESERVED:
        pl_put_be64(b, due);
        pl_put_be64(b + 8, id);
        return 16;
    default:
        pl_put_be32(b, qid);
        pl_put_be64(b + 4, id);
        return 12;
    }
}

static int state_db(int state)
{
    static const int db[] = {0, DB_READY, DB_DELAYED, DB_LEASES, DB_BURIED};
    return db[state];
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
    unsigned char b[16];
    MDB_val k = {idx_key(b, j->state, j->qid, j->pri, j->due_ms, id), b};
    int rc = mdb_del(t->mdb, txn_dbi(t, state_db(j->state)), &k, NULL);
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
    unsigned char b[16];
    j->state = state;
    j->due_ms = due;
    MDB_val k = {idx_key(b, state, j->qid, j->pri, due, id), b}, v = {0, NULL};
    int rc = mdb_put(t->mdb, txn_dbi(t, state_db(state)), &k, &v, 0);
    if (rc)
        return rc;
    ++*state_count(q, state);
    q->dirty = 1;
    return 0;
}

/* move: leave the current state, enter another, rewrite the header. Any
 * failure here comes after a write, so it poisons the transaction. */
static int move(Txn *t, QRec *q, uint64_t id, JobRec *j, int state, uint64_t due)
{
    int rc;
    if ((rc = state_leave(t, q, id, j)) != 0 || (rc = state_enter(t, q, id, j, state, due)) != 0 ||
        (rc = job_store(t, id, j, 0)) != 0)
        return txn_fail(t, rc);
    return 0;
}

static int key_del(Txn *t, uint64_t id, const JobRec *j)
{
    if (!j->key)
        return 0;
    unsigned char b[4 + QUEUE_KEY_MAX];
    pl_put_be32(b, j->qid);
    memcpy(b + 4, j->key, j->keylen);
    MDB_val k = {4 + j->keylen, b}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_KEYS), &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size == 8 && pl_get_be64(v.mv_data) == id)
        return mdb_del(t->mdb, txn_dbi(t, DB_KEYS), &k, NULL);
    return 0;
}

/* drop deletes job id entirely (ack, delete, purge). */
static int drop(Txn *t, QRec *q, uint64_t id, JobRec *j)
{
    unsigned char kb[8];
    pl_put_be64(kb, id);
    MDB_val k = {8, kb};
    int rc;
    if ((rc = state_leave(t, q, id, j)) != 0 || (rc = key_del(t, id, j)) != 0 ||
        (rc = mdb_del(t->mdb, txn_dbi(t, DB_JOBS), &k, NULL)) != 0)
        return txn_fail(t, rc);
    rc = mdb_del(t->mdb, txn_dbi(t, DB_BODIES), &k, NULL);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return 0;
}

/* ---------------------------------------------------------------- queues */

int queue_create(Txn *t, const char *name, const QueueConf *conf)
{
    QRec *q;
    if (!queue_name_ok(name) || (conf && !conf_ok(conf)))
        return PL_EINVAL;
    int rc = q_find(t, name, 0, NULL, &q);
    if (rc == 0)
        return EEXIST;
    if (rc != PL_ENOQUEUE)
        return rc;
    return q_find(t, name, 1, conf, &q);
}

int queue_configure(Txn *t, const char *name, const QueueConf *conf)
{
    QRec *q;
    if (!conf_ok(conf))
        return PL_EINVAL;
    int rc = q_find(t, name, 0, NULL, &q);
    if (rc)
        return rc;
    q->s.conf = *conf;
    q->dirty = 1;
    return 0;
}

int queue_pause(Txn *t, const char *name, int paused)
{
    QRec *q;
    int rc = q_find(t, name, 0, NULL, &q);
    if (rc)
        return rc;
    q->s.paused = paused != 0;
    q->dirty = 1;
    return 0;
}

/* Oldest ready job: the smallest id among the heads of each priority
 * (ids grow with time). One seek per distinct priority, at most 64. */
static uint64_t oldest_ready(Txn *t, const QRec *q)
{
    if (!q->s.ready)
        return 0;
    MDB_cursor *c = txn_cursor(t, DB_READY);
    if (!c)
        return 0;
    unsigned char b[16];
    uint64_t best = UINT64_MAX;
    uint64_t pri = 0;
    for (int i = 0; i < 64 && pri <= UINT32_MAX; i++) {
        idx_key(b, JOB_READY, q->s.qid, (uint32_t)pri, 0, 0);
        MDB_val k = {16, b}, v;
        if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != 16 ||
            pl_get_be32(k.mv_data) != q->s.qid)
            break;
        uint64_t id = pl_get_be64((unsigned char *)k.mv_data + 8);
        if (id < best)
            best = id;
        pri = (uint64_t)pl_get_be32((unsigned char *)k.mv_data + 4) + 1;
    }
    JobRec j;
    if (best == UINT64_MAX || job_load(t, best, &j) != 0)
        return 0;
    return t->now > j.created_ms ? t->now - j.created_ms : 0;
}

int queue_stats(Txn *t, const char *name, QueueStats *out)
{
    QRec *q;
    int rc = q_find(t, name, 0, NULL, &q);
    if (rc)
        return rc;
    *out = q->s;
    out->oldest_ready_ms = oldest_ready(t, q);
    return 0;
}

int queue_list(Txn *t, QueueFn fn, void *arg)
{
    /* Our own cursor: fn may call back into this module. */
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, DB_QUEUES), &c);
    if (rc)
        return rc;
    MDB_val k, v;
    for (int op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        char name[QUEUE_NAME_MAX + 1];
        QueueStats s;
        if (k.mv_size > QUEUE_NAME_MAX) {
            rc = PL_EFORMAT;
            break;
        }
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if ((rc = queue_stats(t, name, &s)) != 0 || (rc = fn(&s, arg)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
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
    if ((rc = store_room(t)) != 0)
        return rc;

    unsigned char kb[4 + QUEUE_KEY_MAX];
    MDB_val kk = {0, kb}, kv;
    if (a->key) {
        pl_put_be32(kb, q->s.qid);
        memcpy(kb + 4, a->key, a->keylen);
        kk.mv_size = 4 + a->keylen;
        rc = mdb_get(t->mdb, txn_dbi(t, DB_KEYS), &kk, &kv);
        if (rc == 0 && kv.mv_size == 8) {
            *id = pl_get_be64(kv.mv_data);
            if (existed)
                *existed = 1;
            return 0;
        }
        if (rc && rc != MDB_NOTFOUND)
            return rc;
    }

    uint64_t nid = next_id(t);
    JobRec j = {
        .qid = q->s.qid, .pri = a->pri, .created_ms = t->now,
        .ttr_ms = a->ttr_ms ? a->ttr_ms : q->s.conf.ttr_ms,
        .key = a->key, .keylen = a->keylen,
    };
    int state = a->delay_ms ? JOB_DELAYED : JOB_READY;
    unsigned char ib[8];
    pl_put_be64(ib, nid);
    MDB_val bk = {8, ib}, bv = {a->len, (void *)a->body};
    if ((rc = state_enter(t, q, nid, &j, state, a->delay_ms ? t->now + a->delay_ms : 0)) != 0 ||
        (rc = job_store(t, nid, &j, MDB_APPEND)) != 0 ||
        (rc = mdb_put(t->mdb, txn_dbi(t, DB_BODIES), &bk, &bv, MDB_APPEND)) != 0)
        return txn_fail(t, rc);
    if (a->key) {
        kv.mv_size = 8;
        kv.mv_data = ib;
        if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_KEYS), &kk, &kv, 0)) != 0)
            return txn_fail(t, rc);
    }
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
        return move(t, q, id, j, JOB_BURIED, 0);
    }
    snprintf(why, sizeof why, "lease expired (ttr %u ms) on attempt %u", j->ttr_ms, j->attempts);
    j->error = why;
    j->errorlen = strlen(why);
    q->s.expiries++;
    return move(t, q, id, j, JOB_READY, 0);
}

static int tick_db(Txn *t, int db, size_t max, size_t *moved)
{
    MDB_cursor *c = txn_cursor(t, db);
    if (!c)
        return ENOMEM;
    for (size_t i = 0; i < max; i++) {
        MDB_val k, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        if (pl_get_be64(k.mv_data) > t->now)
            return 0;
        uint64_t id = pl_get_be64((unsigned char *)k.mv_data + 8);
        JobRec j;
        QRec *q;
        if ((rc = job_load(t, id, &j)) != 0 || (rc = q_byid(t, j.qid, &q)) != 0)
            return rc;
        if (db == DB_DELAYED)
            rc = move(t, q, id, &j, JOB_READY, 0);
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
    if ((rc = tick_db(t, DB_DELAYED, max, &n)) == 0)
        rc = tick_db(t, DB_LEASES, max, &n);
    if (moved)
        *moved = n;
    return rc;
}

int queue_next_due(Txn *t, uint64_t *ms)
{
    *ms = 0;
    for (int db = DB_DELAYED; db <= DB_LEASES; db++) {
        MDB_cursor *c = txn_cursor(t, db);
        MDB_val k, v;
        if (!c)
            return ENOMEM;
        int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc)
            return rc;
        uint64_t due = pl_get_be64(k.mv_data);
        if (!*ms || due < *ms)
            *ms = due;
    }
    return 0;
}

/* ---------------------------------------------------------------- reserve */

static int reserve_one(Txn *t, QRec *q, uint32_t ttr_ms, Job *out)
{
    MDB_cursor *c = txn_cursor(t, DB_READY);
    if (!c)
        return ENOMEM;
    unsigned char b[16];
    idx_key(b, JOB_READY, q->s.qid, 0, 0, 0);
    MDB_val k = {16, b}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND || (rc == 0 && pl_get_be32(k.mv_data) != q->s.qid))
        return PL_EEMPTY; /* counter said otherwise: trust the index */
    if (rc)
        return rc;
    uint64_t id = pl_get_be64((unsigned char *)k.mv_data + 8);
    JobRec j;
    if ((rc = job_load(t, id, &j)) != 0)
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
    if ((rc = fill(t, id, &j, q, out)) != 0)
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
    return reserve_one(t, q, ttr_ms, out);
}

int queue_reserve_n(Txn *t, const char *queue, size_t n, uint32_t ttr_ms, Job *out, size_t *got)
{
    QRec *q;
    *got = 0;
    int rc = reserve_prep(t, queue, &q);
    if (rc)
        return rc;
    while (*got < n && q->s.ready) {
        if ((rc = reserve_one(t, q, ttr_ms, &out[*got])) != 0)
            break;
        ++*got;
    }
    if (*got)
        return 0;
    return rc ? rc : PL_EEMPTY;
}

/* ---------------------------------------------------------------- lease ops */

/* leased loads job id and checks the caller's lease (0: operator). */
static int leased(Txn *t, uint64_t id, uint64_t lease, JobRec *j, QRec **q)
{
    int rc = job_load(t, id, j);
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
    if ((rc = drop(t, q, id, &j)) != 0)
        return rc;
    if (was == JOB_RESERVED)
        q->s.acks++;
    else
        q->s.deletes++;
    return 0;
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
    j.lease = 0;
    if (error) {
        j.error = error;
        j.errorlen = strlen(error);
    }
    const QueueConf *c = &q->s.conf;
    if (c->max_attempts && j.attempts >= c->max_attempts) {
        char why[QUEUE_REASON_MAX + 80];
        snprintf(why, sizeof why, "gave up after %u attempts: %.*s", j.attempts,
                 (int)(j.error ? j.errorlen : 8), j.error ? j.error : "released");
        j.error = why;
        j.errorlen = strlen(why);
        q->s.buries++;
        if (buried)
            *buried = 1;
        return move(t, q, id, &j, JOB_BURIED, 0);
    }
    if (delay_ms < 0) {
        uint64_t d = c->backoff_ms;
        for (uint32_t i = 1; i < j.attempts && d < c->backoff_max_ms; i++)
            d *= 2;
        delay_ms = (int64_t)(d < c->backoff_max_ms ? d : c->backoff_max_ms);
    }
    q->s.releases++;
    if (delay_ms > 0)
        return move(t, q, id, &j, JOB_DELAYED, t->now + (uint64_t)delay_ms);
    return move(t, q, id, &j, JOB_READY, 0);
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
    if ((rc = move(t, q, id, &j, JOB_RESERVED, t->now + j.ttr_ms)) != 0)
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
    return move(t, q, id, &j, JOB_BURIED, 0);
}

static int kick_one(Txn *t, QRec *q, uint64_t id, JobRec *j)
{
    j->attempts = 0;
    j->kicks++;
    q->s.kicks++;
    return move(t, q, id, j, JOB_READY, 0);
}

int queue_kick(Txn *t, const char *queue, size_t n, size_t *kicked)
{
    QRec *q;
    *kicked = 0;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    MDB_cursor *c = txn_cursor(t, DB_BURIED);
    if (!c)
        return ENOMEM;
    while (*kicked < n) {
        unsigned char b[12];
        idx_key(b, JOB_BURIED, q->s.qid, 0, 0, 0);
        MDB_val k = {12, b}, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND || (rc == 0 && pl_get_be32(k.mv_data) != q->s.qid))
            return 0;
        if (rc)
            return rc;
        uint64_t id = pl_get_be64((unsigned char *)k.mv_data + 4);
        JobRec j;
        if ((rc = job_load(t, id, &j)) != 0 || (rc = kick_one(t, q, id, &j)) != 0)
            return rc;
        ++*kicked;
    }
    return 0;
}

int queue_kick_job(Txn *t, uint64_t id)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, 0, &j, &q);
    if (rc)
        return rc;
    if (j.state != JOB_BURIED && j.state != JOB_DELAYED)
        return PL_ESTATE;
    return kick_one(t, q, id, &j);
}

int queue_get(Txn *t, uint64_t id, Job *out)
{
    JobRec j;
    QRec *q;
    int rc = leased(t, id, 0, &j, &q);
    if (rc)
        return rc;
    return fill(t, id, &j, q, out);
}

/* ---------------------------------------------------------------- walks */

/* walk calls fn(t, id, j, q, arg) for up to limit jobs of q in state, in
 * serving order. Ready and buried are per-queue ranges; delayed and leases
 * are global indexes filtered by queue. fn must not write to db. */
typedef int (*WalkFn)(Txn *t, uint64_t id, JobRec *j, QRec *q, void *arg);

static int walk(Txn *t, QRec *q, int state, size_t limit, size_t *seen, WalkFn fn, void *arg)
{
    MDB_cursor *c;
    int db = state_db(state);
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, db), &c);
    if (rc)
        return rc;
    unsigned char b[16];
    MDB_val k = {0, b}, v;
    MDB_cursor_op op;
    if (state == JOB_READY || state == JOB_BURIED) {
        k.mv_size = idx_key(b, state, q->s.qid, 0, 0, 0);
        op = MDB_SET_RANGE;
    } else {
        op = MDB_FIRST;
    }
    for (; *seen < limit && (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        uint64_t id;
        if (state == JOB_READY || state == JOB_BURIED) {
            if (pl_get_be32(k.mv_data) != q->s.qid)
                break;
            id = pl_get_be64((unsigned char *)k.mv_data + k.mv_size - 8);
        } else {
            id = pl_get_be64((unsigned char *)k.mv_data + 8);
        }
        JobRec j;
        if ((rc = job_load(t, id, &j)) != 0)
            break;
        if (j.qid != q->s.qid)
            continue;
        ++*seen;
        if ((rc = fn(t, id, &j, q, arg)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct PeekArg {
    JobFn fn;
    void *arg;
} PeekArg;

static int peek_one(Txn *t, uint64_t id, JobRec *j, QRec *q, void *arg)
{
    PeekArg *p = arg;
    Job job;
    int rc = fill(t, id, j, q, &job);
    return rc ? rc : p->fn(&job, p->arg);
}

int queue_peek(Txn *t, const char *queue, int state, size_t limit, JobFn fn, void *arg)
{
    QRec *q;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    PeekArg pa = {fn, arg};
    size_t seen = 0;
    for (int s = JOB_READY; s <= JOB_BURIED && rc == 0; s++)
        if (!state || state == s)
            rc = walk(t, q, s, limit, &seen, peek_one, &pa);
    return rc;
}

typedef struct IdList {
    uint64_t *id;
    size_t n;
} IdList;

static int collect(Txn *t, uint64_t id, JobRec *j, QRec *q, void *arg)
{
    (void)t, (void)j, (void)q;
    IdList *l = arg;
    l->id[l->n++] = id;
    return 0;
}

int queue_purge(Txn *t, const char *queue, int state, size_t max, size_t *n)
{
    QRec *q;
    *n = 0;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    IdList l = {xmalloc(max * sizeof(uint64_t)), 0};
    size_t seen = 0;
    for (int s = JOB_READY; s <= JOB_BURIED && rc == 0; s++)
        if (!state || state == s)
            rc = walk(t, q, s, max, &seen, collect, &l);
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        JobRec j;
        if ((rc = job_load(t, l.id[i], &j)) == 0 && (rc = drop(t, q, l.id[i], &j)) == 0) {
            q->s.deletes++;
            ++*n;
        }
    }
    free(l.id);
    return rc;
}

/* ---------------------------------------------------------------- names */

const char *queue_state_name(int state)
{
    static const char *const n[] = {"?", "ready", "delayed", "reserved", "buried"};
    return state >= JOB_READY && state <= JOB_BURIED ? n[state] : "?";
}

int queue_state_parse(const char *name)
{
    if (!name || !strcmp(name, "all"))
        return 0;
    for (int s = JOB_READY; s <= JOB_BURIED; s++)
        if (!strcmp(name, queue_state_name(s)))
            return s;
    return -1;
}
