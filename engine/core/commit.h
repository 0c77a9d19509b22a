/* commit.h: group commit on a writer thread.
 *
 * Callers (the engine loop, or any threads) submit operations; the writer
 * thread applies every operation that is waiting in ONE write transaction,
 * commits it (two flushes), and only then reports each operation done. While
 * it commits batch N, batch N+1 gathers. This is how many small, independent
 * writers share the cost of a flush, and how the loop never waits on one. */
#ifndef PL_COMMIT_H
#define PL_COMMIT_H

#include "store.h"

#include <stdint.h>

typedef struct Committer Committer;
typedef struct CommitOp CommitOp;

/* A CommitOp is owned by its submitter and must stay alive until done runs.
 * apply runs on the writer thread inside the shared transaction. It must
 * change nothing outside the transaction (it may run again after a map
 * resize or when the batch is retried one by one), and must not leave a
 * partial write behind when it fails: check, then write (or txn_fail). Its
 * return is the op's result. done runs on the writer thread after the
 * commit, with the op's result, or with the commit's error when the commit
 * failed; a done that must reach an event loop posts to it (ev_async). */
struct CommitOp {
    int (*apply)(Txn *t, CommitOp *op);
    void (*done)(CommitOp *op, int rc);
    void *arg;        /* read-write: the submitter's */
    /* read-write, set before submit: when park is set and apply returns
     * PL_EEMPTY (having written nothing), the op is not finished but waits
     * and is applied again at the end of each following transaction, after
     * the puts it may be waiting for, until it gets something or the
     * monotonic deadline_ns (0: none) passes; then done gets PL_EEMPTY.
     * This is a blocking reserve without polling. */
    int park;
    uint64_t deadline_ns;
    /* private */
    int rc;
    CommitOp *next;
    void *waiter;     /* committer_run's */
};

/* committer_open starts the writer thread for s. max_ops bounds the ops of
 * one transaction (0: 4096). Returns 0 and *out. */
int committer_open(Store *s, unsigned max_ops, Committer **out);

/* committer_close finishes what was submitted, stops the thread and frees
 * c; NULL is a no-op. */
void committer_close(Committer *c);

/* committer_submit queues op; thread-safe, never blocks on I/O. */
void committer_submit(Committer *c, CommitOp *op);

/* committer_run submits op and waits until it is durable; returns its
 * result. For threads that may block (tools, benchmarks, tests). */
int committer_run(Committer *c, CommitOp *op);

/* The commit latency histogram (apply and flush of one transaction, in
 * seconds): bucket i < COMMIT_LAT_BOUNDS counts the commits of at most
 * commit_lat_bounds[i] over the bound before it; the last one the rest. */
#define COMMIT_LAT_BOUNDS 11
extern const double commit_lat_bounds[COMMIT_LAT_BOUNDS];

typedef struct CommitStats {
    uint64_t commits, ops, max_ops_per_commit, retries;
    uint64_t commit_ns_total, commit_ns_max;
    uint64_t apply_ns_total;   /* of commit_ns_total: running the ops (the rest: flushes) */
    uint64_t lat_buckets[COMMIT_LAT_BOUNDS + 1];
} CommitStats;
void committer_stats(Committer *c, CommitStats *out);

#endif
