/* verify.c: the whole-store check (see verify.h), against the layout that
 * store.h describes.
 *
 * Passes, all in one read transaction:
 *   meta    the magic and format, the counters, every queue record (it
 *           decodes; its "i/" entry names it back), cursors and batches are
 *           only counted here (staging checks its own).
 *   jobs    every header decodes, names a known queue, has an id below
 *           next_id, and its one index entry (the key its state implies) is
 *           there; bodies have headers. Jobs are counted per queue and state.
 *   index   every entry names a job whose header agrees with it (so no job
 *           has two); retained-key entries are well-formed.
 *   counts  each queue record's ready/delayed/reserved/buried equal the jobs.
 *   keys    a live key names a job holding it; a retained one has the index
 *           entry that will forget it.
 *   stage   every staged value is well-formed msgpack.
 * Memory: a counter per queue; the jobs are never held. */
#include "verify.h"
#include "pl.h"
#include "queue.h"
#include "rec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct QCount {
    uint32_t qid;
    char name[QUEUE_NAME_MAX + 1];
    QueueStats rec;      /* as the queue record says */
    uint64_t n[5];       /* jobs found per state */
} QCount;

typedef struct Verify {
    MDB_txn *txn;
    Txn *t;
    Rec rec;
    VerifyFn report;
    void *arg;
    uint64_t max_reports;
    VerifyCounts *c;
    QCount *q;
    size_t nq, capq;
    uint64_t next_id;
} Verify;

static void problem(Verify *v, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(Verify *v, const char *what, const char *fmt, ...)
{
    v->c->problems++;
    if (v->c->problems > v->max_reports)
        return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    v->report(v->arg, what, why);
}

static QCount *qc_get(Verify *v, uint32_t qid)
{
    for (size_t i = 0; i < v->nq; i++)
        if (v->q[i].qid == qid)
            return &v->q[i];
    return NULL;
}

static const char *job_name(char *b, size_t n, uint64_t id)
{
    snprintf(b, n, "job %" PRIu64, id);
    return b;
}

/* ---------------------------------------------------------------- meta */

static int walk_meta(Verify *v)
{
    MDB_cursor *c;
    MDB_val k, d;
    int rc = mdb_cursor_open(v->txn, txn_dbi(v->t, DB_META), &c);
    if (rc)
        return rc;
    int magic = 0, format = 0;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->c->records++;
        v->c->meta++;
        const char *kp = k.mv_data;
        if (k.mv_size == 5 && !memcmp(kp, "magic", 5)) {
            magic = d.mv_size == 8 && !memcmp(d.mv_data, "pickline", 8);
        } else if (k.mv_size == 6 && !memcmp(kp, "format", 6)) {
            format = d.mv_size == 4;
        } else if (k.mv_size == 7 && !memcmp(kp, "next_id", 7)) {
            if (d.mv_size != 8)
                problem(v, "meta next_id", "is %zu bytes, not 8", d.mv_size);
            else
                v->next_id = pl_get_be64(d.mv_data);
        } else if (k.mv_size == 8 && !memcmp(kp, "next_qid", 8)) {
            if (d.mv_size != 4)
                problem(v, "meta next_qid", "is %zu bytes, not 4", d.mv_size);
        } else if (k.mv_size > 2 && !memcmp(kp, "q/", 2)) {
            char name[QUEUE_NAME_MAX + 1], what[96];
            size_t nl = k.mv_size - 2 > QUEUE_NAME_MAX ? QUEUE_NAME_MAX : k.mv_size - 2;
            memcpy(name, kp + 2, nl);
            name[nl] = '\0';
            snprintf(what, sizeof what, "queue '%s'", name);
            QueueStats st;
            int drc = rec_queue_decode(&v->rec, d.mv_data, d.mv_size, &st);
            if (drc) {
                problem(v, what, "its record (%zu bytes) does not decode: %s", d.mv_size, pl_strerror(drc));
                continue;
            }
            if (k.mv_size - 2 != strlen(st.name) || memcmp(st.name, kp + 2, k.mv_size - 2) != 0)
                problem(v, what, "its record names it '%s'", st.name);
            if (qc_get(v, st.qid)) {
                problem(v, what, "has queue id %" PRIu32 ", as another queue", st.qid);
                continue;
            }
            if (v->nq == v->capq) {
                v->capq = v->capq ? 2 * v->capq : 16;
                v->q = xrealloc(v->q, v->capq * sizeof *v->q);
            }
            QCount *q = &v->q[v->nq++];
            memset(q, 0, sizeof *q);
            q->qid = st.qid;
            q->rec = st;
            snprintf(q->name, sizeof q->name, "%s", st.name);
            v->c->queues++;
        }
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return rc;
    if (!magic)
        problem(v, "meta magic", "missing or wrong: not a pickline store");
    if (!format)
        problem(v, "meta format", "missing or not 4 bytes");
    /* Every queue's "i/" entry names it back. */
    for (size_t i = 0; i < v->nq; i++) {
        unsigned char ib[6] = {'i', '/'};
        pl_put_be32(ib + 2, v->q[i].qid);
        MDB_val ik = {6, ib}, iv;
        char what[96];
        snprintf(what, sizeof what, "queue '%s'", v->q[i].name);
        if ((rc = mdb_get(v->txn, txn_dbi(v->t, DB_META), &ik, &iv)) == MDB_NOTFOUND)
            problem(v, what, "no id entry i/%" PRIu32 " names it", v->q[i].qid);
        else if (rc)
            return rc;
        else if (iv.mv_size != strlen(v->q[i].name) || memcmp(iv.mv_data, v->q[i].name, iv.mv_size))
            problem(v, what, "its id entry i/%" PRIu32 " names '%.*s'", v->q[i].qid,
                    (int)(iv.mv_size > 64 ? 64 : iv.mv_size), (const char *)iv.mv_data);
    }
    return 0;
}

/* ---------------------------------------------------------------- jobs */

/* The index key a job in state j->state has (queue.c's layout). */
static size_t expected_index(unsigned char *b, uint64_t id, const JobRec *j)
{
    static const unsigned char tags[] = {0, 'r', 'd', 'l', 'b'};
    b[0] = tags[j->state];
    switch (j->state) {
    case JOB_READY:
        pl_put_be32(b + 1, j->qid);
        pl_put_be32(b + 5, j->pri);
        pl_put_be64(b + 9, id);
        return 17;
    case JOB_DELAYED:
    case JOB_RESERVED:
        pl_put_be64(b + 1, j->due_ms);
        pl_put_be64(b + 9, id);
        return 17;
    default:
        pl_put_be32(b + 1, j->qid);
        pl_put_be64(b + 5, id);
        return 13;
    }
}

static int walk_jobs(Verify *v)
{
    MDB_cursor *c;
    MDB_val k, d;
    int rc = mdb_cursor_open(v->txn, txn_dbi(v->t, DB_JOBS), &c);
    if (rc)
        return rc;
    uint64_t last_header = UINT64_MAX;
    char what[64];
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->c->records++;
        if (k.mv_size != 9 || ((unsigned char *)k.mv_data)[8] > 1) {
            problem(v, "jobs", "a key of %zu bytes that is not (id, 0|1)", k.mv_size);
            continue;
        }
        uint64_t id = pl_get_be64(k.mv_data);
        job_name(what, sizeof what, id);
        if (((unsigned char *)k.mv_data)[8] == 1) {
            v->c->bodies++;
            if (last_header != id)
                problem(v, what, "a body (%zu bytes) without a header", d.mv_size);
            continue;
        }
        v->c->jobs++;
        last_header = id;
        if (v->next_id && id >= v->next_id)
            problem(v, what, "its id is not below the store's next id %" PRIu64, v->next_id);
        JobRec j;
        int drc = rec_job_decode(&v->rec, d.mv_data, d.mv_size, &j);
        if (drc) {
            problem(v, what, "its header (%zu bytes) does not decode: %s", d.mv_size, pl_strerror(drc));
            continue;
        }
        QCount *q = qc_get(v, j.qid);
        if (!q) {
            problem(v, what, "names queue id %" PRIu32 ", which has no queue record", j.qid);
            continue;
        }
        q->n[j.state]++;
        unsigned char ib[17];
        MDB_val ik = {expected_index(ib, id, &j), ib}, iv;
        if ((drc = mdb_get(v->txn, txn_dbi(v->t, DB_INDEX), &ik, &iv)) == MDB_NOTFOUND)
            problem(v, what, "is %s in queue '%s' but has no %s index entry: no reserve or tick "
                    "will ever find it", queue_state_name(j.state), q->name, queue_state_name(j.state));
        else if (drc) {
            rc = drc;
            break;
        }
        if (j.key && j.keylen) {
            unsigned char kb[4 + QUEUE_KEY_MAX];
            if (j.keylen > QUEUE_KEY_MAX) {
                problem(v, what, "its idempotency key is %zu bytes (at most %d)", j.keylen, QUEUE_KEY_MAX);
                continue;
            }
            pl_put_be32(kb, j.qid);
            memcpy(kb + 4, j.key, j.keylen);
            MDB_val kk = {4 + j.keylen, kb}, kv;
            if ((drc = mdb_get(v->txn, txn_dbi(v->t, DB_KEYS), &kk, &kv)) == MDB_NOTFOUND)
                problem(v, what, "its idempotency key has no entry: a retry would add it twice");
            else if (drc) {
                rc = drc;
                break;
            }
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---------------------------------------------------------------- index */

static int walk_index(Verify *v)
{
    MDB_cursor *c;
    MDB_val k, d;
    int rc = mdb_cursor_open(v->txn, txn_dbi(v->t, DB_INDEX), &c);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->c->records++;
        v->c->index++;
        const unsigned char *kb = k.mv_data;
        char what[96];
        int state = 0;
        switch (k.mv_size ? kb[0] : 0) {
        case 'r': state = JOB_READY; break;
        case 'd': state = JOB_DELAYED; break;
        case 'l': state = JOB_RESERVED; break;
        case 'b': state = JOB_BURIED; break;
        case 'k':
            if (k.mv_size < 13 || k.mv_size > 13 + QUEUE_KEY_MAX)
                problem(v, "index k/", "a retained-key entry of %zu bytes", k.mv_size);
            continue;
        default:
            problem(v, "index", "an entry of %zu bytes with an unknown tag 0x%02x", k.mv_size,
                    k.mv_size ? kb[0] : 0);
            continue;
        }
        size_t want = state == JOB_BURIED ? 13 : 17;
        if (k.mv_size != want) {
            problem(v, "index", "a %s entry of %zu bytes (not %zu)", queue_state_name(state), k.mv_size, want);
            continue;
        }
        uint64_t id = pl_get_be64(kb + k.mv_size - 8);
        snprintf(what, sizeof what, "index %s entry of job %" PRIu64, queue_state_name(state), id);
        unsigned char hk[9];
        pl_put_be64(hk, id);
        hk[8] = 0;
        MDB_val jk = {9, hk}, jv;
        int drc = mdb_get(v->txn, txn_dbi(v->t, DB_JOBS), &jk, &jv);
        if (drc == MDB_NOTFOUND) {
            problem(v, what, "names a job that does not exist");
            continue;
        }
        if (drc) {
            rc = drc;
            break;
        }
        JobRec j;
        if (rec_job_decode(&v->rec, jv.mv_data, jv.mv_size, &j) != 0)
            continue; /* reported with the job */
        unsigned char ib[17];
        size_t n = expected_index(ib, id, &j);
        if (n != k.mv_size || memcmp(ib, kb, n) != 0)
            problem(v, what, "disagrees with the job's header (%s, queue id %" PRIu32 ", priority %" PRIu32 ")",
                    queue_state_name(j.state), j.qid, j.pri);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---------------------------------------------------------------- keys */

static int walk_keys(Verify *v)
{
    MDB_cursor *c;
    MDB_val k, d;
    int rc = mdb_cursor_open(v->txn, txn_dbi(v->t, DB_KEYS), &c);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->c->records++;
        if (k.mv_size < 5 || k.mv_size > 4 + QUEUE_KEY_MAX) {
            problem(v, "keys", "an entry of %zu bytes", k.mv_size);
            continue;
        }
        uint32_t qid = pl_get_be32(k.mv_data);
        const char *key = (const char *)k.mv_data + 4;
        int kl = (int)(k.mv_size - 4 > 60 ? 60 : k.mv_size - 4);
        char what[128];
        snprintf(what, sizeof what, "key '%.*s' of queue id %" PRIu32, kl, key, qid);
        if (!qc_get(v, qid))
            problem(v, what, "its queue has no record");
        if (d.mv_size == 16) {
            v->c->retained_keys++;
            unsigned char ib[9 + 4 + QUEUE_KEY_MAX];
            ib[0] = 'k';
            memcpy(ib + 1, (unsigned char *)d.mv_data + 8, 8);
            memcpy(ib + 9, k.mv_data, k.mv_size);
            MDB_val ik = {9 + k.mv_size, ib}, iv;
            int drc = mdb_get(v->txn, txn_dbi(v->t, DB_INDEX), &ik, &iv);
            if (drc == MDB_NOTFOUND)
                problem(v, what, "retained, but nothing will ever forget it (no k/ index entry)");
            else if (drc) {
                rc = drc;
                break;
            }
            continue;
        }
        if (d.mv_size != 8) {
            problem(v, what, "its value is %zu bytes (8 or 16)", d.mv_size);
            continue;
        }
        v->c->keys++;
        uint64_t id = pl_get_be64(d.mv_data);
        unsigned char hk[9];
        pl_put_be64(hk, id);
        hk[8] = 0;
        MDB_val jk = {9, hk}, jv;
        int drc = mdb_get(v->txn, txn_dbi(v->t, DB_JOBS), &jk, &jv);
        JobRec j;
        if (drc == MDB_NOTFOUND)
            problem(v, what, "names job %" PRIu64 ", which does not exist: the key is held forever", id);
        else if (drc) {
            rc = drc;
            break;
        } else if (rec_job_decode(&v->rec, jv.mv_data, jv.mv_size, &j) == 0 &&
                   (j.qid != qid || j.keylen != k.mv_size - 4 || memcmp(j.key, key, j.keylen) != 0))
            problem(v, what, "names job %" PRIu64 ", which holds another key", id);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int walk_stage(Verify *v)
{
    MDB_cursor *c;
    MDB_val k, d;
    int rc = mdb_cursor_open(v->txn, txn_dbi(v->t, DB_STAGE), &c);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->c->records++;
        v->c->staged++;
        if (rec_wellformed(d.mv_data, d.mv_size) != 0) {
            char what[160];
            const unsigned char *kb = k.mv_data;
            if (k.mv_size >= 9 && (kb[0] == 1 || kb[0] == 2))
                snprintf(what, sizeof what, "staged %s %" PRIu64, kb[0] == 1 ? "row of batch" : "reject",
                         pl_get_be64(kb + 1));
            else
                snprintf(what, sizeof what, "staged row '%.*s'", (int)(k.mv_size > 100 ? 100 : k.mv_size),
                         (const char *)kb);
            problem(v, what, "its value (%zu bytes) is not well-formed msgpack", d.mv_size);
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_verify(Store *s, VerifyFn report, void *arg, uint64_t max_reports, VerifyCounts *out)
{
    memset(out, 0, sizeof *out);
    Txn *t;
    int rc = store_txn_begin(s, 0, &t);
    if (rc)
        return rc;
    Verify v = {.txn = t->mdb, .t = t, .report = report, .arg = arg, .max_reports = max_reports, .c = out};
    rec_init(&v.rec);
    if ((rc = walk_meta(&v)) == 0 && (rc = walk_jobs(&v)) == 0 && (rc = walk_index(&v)) == 0 &&
        (rc = walk_keys(&v)) == 0 && (rc = walk_stage(&v)) == 0) {
        for (size_t i = 0; i < v.nq; i++) {
            QCount *q = &v.q[i];
            const uint64_t had[5] = {0, q->rec.ready, q->rec.delayed, q->rec.reserved, q->rec.buried};
            char what[96];
            snprintf(what, sizeof what, "queue '%s'", q->name);
            for (int st = JOB_READY; st <= JOB_BURIED; st++)
                if (had[st] != q->n[st])
                    problem(&v, what, "its record counts %" PRIu64 " %s jobs; there are %" PRIu64,
                            had[st], queue_state_name(st), q->n[st]);
        }
    }
    rec_destroy(&v.rec);
    free(v.q);
    store_txn_abort(t);
    return rc;
}
