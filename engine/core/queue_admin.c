/* queue_admin.c: operations on whole queues (create, configure, pause,
 * stats, list) and the operator's on jobs that wait (kick, peek, purge),
 * over queue.c's layout (queue_int.h), and the names of job states. */
#include "queue.h"
#include "queue_int.h"

#include "pl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- queues */

int queue_create(Txn *t, const char *name, const QueueConf *conf)
{
    QRec *q;
    if (!queue_name_ok(name) || (conf && !q_conf_ok(conf)))
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
    if (!q_conf_ok(conf))
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
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return 0;
    unsigned char b[17];
    MDB_val k;
    uint64_t best = UINT64_MAX;
    uint64_t pri = 0;
    for (int i = 0; i < 64 && pri <= UINT32_MAX; i++) {
        size_t n = q_idx_key(b, JOB_READY, q->s.qid, (uint32_t)pri, 0, 0);
        if (q_idx_seek(c, b, n, 5, &k) != 0)
            break;
        uint64_t id = q_idx_id(&k);
        if (id < best)
            best = id;
        pri = (uint64_t)pl_get_be32((unsigned char *)k.mv_data + 5) + 1;
    }
    JobRec j;
    if (best == UINT64_MAX || q_job_load(t, best, &j) != 0)
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
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, DB_META), &c);
    if (rc)
        return rc;
    static const unsigned char pre[2] = {'q', '/'};
    MDB_val k;
    for (rc = q_idx_seek(c, pre, 2, 2, &k); rc == 0; rc = q_idx_next(c, pre, 2, &k)) {
        char name[QUEUE_NAME_MAX + 1];
        QueueStats s;
        if (k.mv_size - 2 > QUEUE_NAME_MAX) {
            rc = PL_EFORMAT;
            break;
        }
        memcpy(name, (char *)k.mv_data + 2, k.mv_size - 2);
        name[k.mv_size - 2] = '\0';
        if ((rc = queue_stats(t, name, &s)) != 0 || (rc = fn(&s, arg)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---------------------------------------------------------------- kick */

static int kick_one(Txn *t, QRec *q, uint64_t id, JobRec *j)
{
    j->attempts = 0;
    j->kicks++;
    q->s.kicks++;
    return q_move(t, q, id, j, JOB_READY, 0);
}

int queue_kick(Txn *t, const char *queue, size_t n, size_t *kicked)
{
    QRec *q;
    *kicked = 0;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    while (*kicked < n) {
        unsigned char b[5];
        MDB_val k;
        rc = q_idx_seek(c, b, q_idx_prefix(b, JOB_BURIED, q->s.qid), 5, &k);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        uint64_t id = q_idx_id(&k);
        JobRec j;
        if ((rc = q_job_load(t, id, &j)) != 0 || (rc = kick_one(t, q, id, &j)) != 0)
            return rc;
        ++*kicked;
    }
    return 0;
}

int queue_kick_job(Txn *t, uint64_t id)
{
    JobRec j;
    QRec *q;
    int rc;
    if ((rc = q_job_load(t, id, &j)) != 0 || (rc = q_byid(t, j.qid, &q)) != 0)
        return rc;
    if (j.state != JOB_BURIED && j.state != JOB_DELAYED)
        return PL_ESTATE;
    return kick_one(t, q, id, &j);
}

/* ---------------------------------------------------------------- walks */

/* walk calls fn(t, id, j, q, arg) for up to limit jobs of q in state, in
 * serving order. Ready and buried are per-queue ranges; delayed and leases
 * are global indexes filtered by queue. fn must not write to db. */
typedef int (*WalkFn)(Txn *t, uint64_t id, JobRec *j, QRec *q, void *arg);

static int walk(Txn *t, QRec *q, int state, size_t limit, size_t *seen, WalkFn fn, void *arg)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, DB_INDEX), &c);
    if (rc)
        return rc;
    QScan sc;
    for (rc = q_scan_first(&sc, c, state, q->s.qid); rc == 0 && *seen < limit;
         rc = q_scan_next(&sc)) {
        uint64_t id = q_idx_id(&sc.k);
        JobRec j;
        if ((rc = q_job_load(t, id, &j)) != 0)
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
    int rc = q_fill(t, id, j, q, &job);
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
        if ((rc = q_job_load(t, l.id[i], &j)) == 0 && (rc = q_drop(t, q, l.id[i], &j)) == 0) {
            q->s.deletes++;
            ++*n;
        }
    }
    free(l.id);
    return rc;
}

int queue_delete(Txn *t, uint64_t id)
{
    JobRec j;
    QRec *q;
    int rc;
    if ((rc = q_job_load(t, id, &j)) != 0 || (rc = q_byid(t, j.qid, &q)) != 0 ||
        (rc = q_drop(t, q, id, &j)) != 0)
        return rc;
    q->s.deletes++;
    return 0;
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
