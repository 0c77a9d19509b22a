/* commit.c: group commit on a writer thread (see commit.h).
 *
 * The writer takes every op waiting (up to max_ops), applies them in one
 * write transaction and commits. Ops that fail cleanly (a stale lease, an
 * unknown job) fail alone; an op that poisons the transaction (a failure
 * after it wrote) makes the writer abort the batch and run its ops one per
 * transaction, so the others still land and the culprit gets its error.
 * MDB_MAP_FULL grows the map and runs the batch again: apply has no effect
 * outside the transaction, so running it again is safe. */
#include "commit.h"
#include "pl.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

struct Committer {
    Store *s;
    unsigned max_ops;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CommitOp *head, *tail;
    CommitOp *parked;  /* writer thread only */
    unsigned last_n;   /* ops in the last batch (writer thread only) */
    int stop;
    pthread_t th;
    CommitStats st;
};

typedef struct Waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fin, rc;
} Waiter;

/* finish reports each op of list done, except the ops that wait for a job
 * (see CommitOp.park), which go back to c->parked. */
static void finish(Committer *c, CommitOp *list, int rc_all)
{
    uint64_t now = pl_mono_ns();
    while (list) {
        CommitOp *next = list->next; /* done may free or resubmit the op */
        int rc = rc_all ? rc_all : list->rc;
        if (rc == PL_EEMPTY && list->park && (!list->deadline_ns || now < list->deadline_ns)) {
            list->next = c->parked;
            c->parked = list;
        } else {
            list->next = NULL;
            list->done(list, rc);
        }
        list = next;
    }
}

/* One op in a transaction of its own. */
static int run_one(Committer *c, CommitOp *op)
{
    for (;;) {
        Txn *t;
        int rc = store_txn_begin(c->s, 1, &t);
        if (rc)
            return rc;
        rc = op->apply(t, op);
        if (rc == 0 && t->failed)
            rc = t->failed;
        if (t->failed || rc) {
            int f = t->failed;
            store_txn_abort(t);
            if (f == MDB_MAP_FULL && store_grow(c->s) == 0)
                continue;
            return rc;
        }
        rc = store_txn_commit(t);
        if (rc == MDB_MAP_FULL && store_grow(c->s) == 0)
            continue;
        return rc;
    }
}

static void run_batch(Committer *c, CommitOp *batch, unsigned n)
{
    for (;;) {
        Txn *t;
        uint64_t t0 = pl_mono_ns();
        int rc = store_txn_begin(c->s, 1, &t);
        if (rc) {
            pl_log(PL_LOG_ERROR, "commit: cannot begin a write transaction: %s", pl_strerror(rc));
            finish(c, batch, rc);
            return;
        }
        for (CommitOp *op = batch; op && !t->failed; op = op->next)
            op->rc = op->apply(t, op);
        uint64_t t_applied = pl_mono_ns();
        int failed = t->failed;
        if (failed) {
            store_txn_abort(t);
            c->st.retries++;
            if (failed == MDB_MAP_FULL && store_grow(c->s) == 0)
                continue;
            /* Isolate the op that poisoned the batch: one txn each. */
            for (CommitOp *op = batch; op; op = op->next)
                op->rc = run_one(c, op);
            finish(c, batch, 0);
            return;
        }
        rc = store_txn_commit(t);
        if (rc == MDB_MAP_FULL && store_grow(c->s) == 0) {
            c->st.retries++;
            continue;
        }
        if (rc && n > 1 && rc != MDB_PANIC) {
            /* The commit itself failed (the disk refused the pages, an I/O
             * error): nothing was written. Run the ops one per transaction,
             * so that one op's fault does not fail its neighbours (small
             * ones, acks and releases, still fit where a big batch did not). */
            pl_log(PL_LOG_ERROR, "commit: commit of %u operations failed: %s; "
                   "trying them one by one", n, pl_strerror(rc));
            c->st.retries++;
            for (CommitOp *op = batch; op; op = op->next)
                op->rc = run_one(c, op);
            finish(c, batch, 0);
            return;
        }
        uint64_t dt = pl_mono_ns() - t0;
        pthread_mutex_lock(&c->mu);
        c->st.commits++;
        c->st.ops += n;
        if (n > c->st.max_ops_per_commit)
            c->st.max_ops_per_commit = n;
        c->st.commit_ns_total += dt;
        c->st.apply_ns_total += t_applied - t0;
        if (dt > c->st.commit_ns_max)
            c->st.commit_ns_max = dt;
        int b = 0;
        while (b < COMMIT_LAT_BOUNDS && (double)dt / 1e9 > commit_lat_bounds[b])
            b++;
        c->st.lat_buckets[b]++;
        pthread_mutex_unlock(&c->mu);
        if (rc)
            pl_log(PL_LOG_ERROR, "commit: commit of %u operations failed: %s", n, pl_strerror(rc));
        finish(c, batch, rc);
        return;
    }
}

/* Parked ops wait for new work, but look again now and then: a delayed job
 * may come due, or a deadline pass, without any other op arriving. */
#define PARK_RECHECK_NS 50000000ull
#define GATHER_NS 60000ull

static void *writer(void *arg)
{
    Committer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->stop) {
            if (!c->parked) {
                pthread_cond_wait(&c->cv, &c->mu);
                continue;
            }
            uint64_t wake = pl_mono_ns() + PARK_RECHECK_NS;
            for (CommitOp *p = c->parked; p; p = p->next)
                if (p->deadline_ns && p->deadline_ns < wake)
                    wake = p->deadline_ns;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
            if (wake <= now)
                break;
            /* The condvar's clock is CLOCK_REALTIME: wait a relative time. */
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            uint64_t abs = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec + (wake - now);
            rt.tv_sec = (time_t)(abs / 1000000000ull);
            rt.tv_nsec = (long)(abs % 1000000000ull);
            if (pthread_cond_timedwait(&c->cv, &c->mu, &rt) == ETIMEDOUT)
                break;
        }
        if (!c->head && (!c->parked || c->stop))
            break;
        /* Gather: when the last commit served several submitters and one op
         * waits alone, give the others a moment to join it (PostgreSQL's
         * commit_delay, adaptive). GATHER_NS is small against a commit's
         * two flushes, and it is spent only while commits are shared. */
        if (c->head && !c->head->next && c->last_n > 1 && !c->stop) {
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            uint64_t abs = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec + GATHER_NS;
            rt.tv_sec = (time_t)(abs / 1000000000ull);
            rt.tv_nsec = (long)(abs % 1000000000ull);
            while (!c->head->next && !c->stop &&
                   pthread_cond_timedwait(&c->cv, &c->mu, &rt) != ETIMEDOUT)
                ;
        }
        CommitOp *batch = c->head, *last = NULL;
        unsigned n = 0;
        if (batch) {
            last = batch;
            n = 1;
            while (last->next && n < c->max_ops) {
                last = last->next;
                n++;
            }
            c->head = last->next;
            if (!c->head)
                c->tail = NULL;
            last->next = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        /* Waiting ops go last: they see the puts of this very transaction. */
        CommitOp *parked = c->parked;
        c->parked = NULL;
        if (parked) {
            for (CommitOp *p = parked; p; p = p->next)
                n++;
            if (last)
                last->next = parked;
            else
                batch = parked;
        }
        run_batch(c, batch, n);
        c->last_n = n;
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    /* Closing: whoever still waits gets PL_EEMPTY. */
    while (c->parked) {
        CommitOp *p = c->parked;
        c->parked = p->next;
        p->next = NULL;
        p->done(p, PL_EEMPTY);
    }
    return NULL;
}

int committer_open(Store *s, unsigned max_ops, Committer **out)
{
    Committer *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->max_ops = max_ops ? max_ops : 4096;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    int rc = pthread_create(&c->th, NULL, writer, c);
    if (rc) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        *out = NULL;
        return rc;
    }
    *out = c;
    return 0;
}

void committer_close(Committer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

void committer_submit(Committer *c, CommitOp *op)
{
    op->next = NULL;
    op->rc = 0;
    pthread_mutex_lock(&c->mu);
    PL_ASSERT(!c->stop, "no op is submitted to a closing committer");
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void waiter_done(CommitOp *op, int rc)
{
    Waiter *w = op->waiter;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->fin = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int committer_run(Committer *c, CommitOp *op)
{
    /* One waiter per thread, never destroyed: the writer may still be inside
     * pthread_mutex_unlock when this thread wakes up and returns. */
    static _Thread_local Waiter w;
    static _Thread_local int ready;
    if (!ready) {
        pthread_mutex_init(&w.mu, NULL);
        pthread_cond_init(&w.cv, NULL);
        ready = 1;
    }
    w.fin = 0;
    op->waiter = &w;
    op->done = waiter_done;
    committer_submit(c, op);
    pthread_mutex_lock(&w.mu);
    while (!w.fin)
        pthread_cond_wait(&w.cv, &w.mu);
    int rc = w.rc;
    pthread_mutex_unlock(&w.mu);
    return rc;
}

const double commit_lat_bounds[COMMIT_LAT_BOUNDS] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,  0.5,   1};

void committer_stats(Committer *c, CommitStats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
