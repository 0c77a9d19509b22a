/* queue.h: durable priority queues (beanstalkd's vocabulary) on a Store.
 *
 * Every function works inside a caller's transaction (store.h), so many
 * operations share one commit: group commit is the caller's choice. Mutating
 * calls need a write Txn. Nothing is durable until store_txn_commit returns 0;
 * answer nobody before that.
 *
 * A job is in one state: ready (waiting, ordered by priority then id),
 * delayed (until its ready-at time), reserved (leased to one worker until its
 * lease ends) or buried (set aside with a reason until kicked). Reserve hands
 * out a fresh lease token; ack, release, touch and bury with a token refuse
 * (PL_ELEASE) when that lease is no longer the job's. Token 0 is the
 * operator's override (qctl): it acts on the job whatever its lease. A lease
 * past its end is still honoured until the expiry is processed (queue_tick,
 * or the next reserve): only another reserve takes a job from its holder. */
#ifndef PL_QUEUE_H
#define PL_QUEUE_H

#include "store.h"

#include <stddef.h>
#include <stdint.h>

enum { JOB_READY = 1, JOB_DELAYED, JOB_RESERVED, JOB_BURIED };

#define QUEUE_NAME_MAX 64
#define QUEUE_KEY_MAX 200
#define QUEUE_REASON_MAX 1000
#define QUEUE_BODY_LIMIT (64u << 20) /* hard ceiling for QueueConf.max_body */

/* QueueConf: per-queue defaults, fixed at creation, changed by queue_configure. */
typedef struct QueueConf {
    uint32_t ttr_ms;         /* lease length; default 60 s */
    uint32_t max_attempts;   /* reserves before an expiry/release buries; 0 = no limit; default 10 */
    uint32_t backoff_ms;     /* first retry delay for release with backoff; default 1 s */
    uint32_t backoff_max_ms; /* ceiling of the exponential backoff; default 1 h */
    uint32_t max_body;       /* largest body accepted by put; default 1 MiB */
    uint32_t key_retention_s; /* an idempotency key outlives its job by this; default 24 h; 0: not */
} QueueConf;

#define QUEUE_KEY_RETENTION_MAX (366u * 86400u)

/* queue_conf_default fills c with the defaults above. */
void queue_conf_default(QueueConf *c);

/* queue_backoff_ms returns c's exponential backoff for a job's attempts
 * so far: backoff_ms for the first (attempts 0 or 1), doubled for each one
 * after it, at most backoff_max_ms. No jitter: a caller that wants some
 * (the engine's retries) adds its own. queue_release uses it. */
uint64_t queue_backoff_ms(const QueueConf *c, uint32_t attempts);

/* QueueStats: exact, kept in the same transactions as the jobs. */
typedef struct QueueStats {
    char name[QUEUE_NAME_MAX + 1];
    uint32_t qid;
    QueueConf conf;
    int paused;
    uint64_t ready, delayed, reserved, buried;  /* jobs by state now */
    uint64_t puts, reserves, acks, releases, buries, kicks, expiries, deletes; /* totals */
    uint64_t oldest_ready_ms; /* age of the oldest ready job (0 when none) */
    uint64_t created_ms;
} QueueStats;

/* Job: one job as read. key, error and body point into the map: valid only
 * until the next update in the transaction or its end (copy to keep). */
typedef struct Job {
    uint64_t id;
    uint32_t qid;
    char queue[QUEUE_NAME_MAX + 1];
    uint32_t pri;
    int state;
    uint32_t attempts;   /* reserves so far (the current one included) */
    uint32_t kicks;
    uint64_t created_ms;
    uint64_t due_ms;     /* ready-at (delayed) or lease end (reserved); else 0 */
    uint32_t ttr_ms;
    uint64_t lease;      /* current lease token when reserved, else 0 */
    const char *key;   size_t keylen;
    const char *error; size_t errorlen;  /* last error or bury reason */
    const void *body;  size_t len;
} Job;

typedef struct PutArgs {
    uint32_t pri;        /* lower is more urgent */
    uint64_t delay_ms;
    uint32_t ttr_ms;     /* 0: the queue's default */
    const char *key;     /* idempotency key or NULL */
    size_t keylen;
    const void *body;
    size_t len;
} PutArgs;

/* queue_name_ok returns 1 if name is a valid queue name: 1..64 of [A-Za-z0-9_.-]. */
int queue_name_ok(const char *name);

/* queue_create creates queue name with conf (NULL: defaults). Returns 0,
 * EEXIST when it exists (conf unchanged), PL_EINVAL for a bad name or conf. */
int queue_create(Txn *t, const char *name, const QueueConf *conf);

/* queue_configure replaces the conf of an existing queue. PL_ENOQUEUE if none. */
int queue_configure(Txn *t, const char *name, const QueueConf *conf);

/* queue_put adds a job to queue (created with defaults if missing) and sets
 * *id. With an idempotency key the queue has seen, it adds nothing and sets
 * *id to the job that came with the key first: *existed is 1 when that job
 * is still in the queue, 2 when it was already acked or deleted (a key
 * outlives its job by the queue's key_retention_s, so that a client's retry
 * after the answer was lost does not add the record twice). Errors:
 * PL_EINVAL (bad name), PL_ETOOBIG (body over the queue's max_body, key over
 * QUEUE_KEY_MAX), PL_EFULL/ENOSPC (no room: see store_room). existed may be
 * NULL. */
int queue_put(Txn *t, const char *queue, const PutArgs *a, uint64_t *id, int *existed);

/* queue_reserve leases the most urgent ready job of queue for ttr_ms (0: the
 * job's own) and fills *out. Due delayed jobs and expired leases are
 * processed first (queue_tick). Returns 0, PL_EEMPTY, PL_EPAUSED or
 * PL_ENOQUEUE. Cost: one cursor seek, whatever the depth. */
int queue_reserve(Txn *t, const char *queue, uint32_t ttr_ms, Job *out);

/* queue_reserve_n reserves up to n jobs into out[], setting *got. Returns 0
 * when at least one was reserved, else as queue_reserve. out[]'s views are
 * valid until the next update in the transaction (copy them before it). */
int queue_reserve_n(Txn *t, const char *queue, size_t n, uint32_t ttr_ms, Job *out, size_t *got);

/* Jobs held in memory. The engine works the jobs of its own stages without
 * writing a lease: queue_hold_n reads up to n ready jobs of queue in
 * serving order into out[] (views valid until the next update in the
 * transaction), skipping those for which held(id, arg) says the caller
 * holds them already (nheld of the queue's ready jobs: with no more ready
 * than that it returns PL_EEMPTY at once), and writes nothing: the jobs
 * stay ready on disk. out[i].attempts is the attempt the hold stands for
 * (stored attempts + 1), out[i].lease 0. Errors as queue_reserve_n.
 *
 * A hold ends with queue_held_ack, _forward, _release or _bury (as
 * queue_ack, queue_forward (priority pri on queue), queue_release and
 * queue_bury of a reserved job; release and bury store the attempt), each
 * given the qid the job was taken from and the body the holder worked
 * (body[0..len)): when the job is no longer ready in that queue with that
 * body (`qctl reserve` took it, an operator buried, deleted or edited it:
 * queue_set_body) they write nothing and return PL_ELEASE (PL_ENOJOB when
 * it is gone); an edited job stays ready and is worked again with its new
 * body. So a hold is never exclusive on disk, but its end is: whoever
 * commits first has the job. A crash ends every hold with the jobs still
 * ready, as a lease expiry would; queue_held_lost then stores the attempt
 * such a hold was (when the job still has the stored attempts it was taken
 * with), burying the job past max_attempts with why; a job that has moved
 * on is left alone. */
int queue_hold_n(Txn *t, const char *queue, size_t n, size_t nheld,
                 int (*held)(uint64_t id, void *arg), void *arg, Job *out, size_t *got);
int queue_held_ack(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len);

/* queue_overtaken sets *yes when jobs held ahead of the holder's slots
 * (the engine's spares, the least urgent of priority pri) should be let
 * go: queue is paused, or it has a ready job more urgent than pri (a lower
 * number) that held(id, arg) does not claim. It writes nothing. Returns 0,
 * PL_ENOQUEUE, or a store error. */
int queue_overtaken(Txn *t, const char *queue, uint32_t pri, int (*held)(uint64_t id, void *arg),
                    void *arg, int *yes);
int queue_held_forward(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                       const char *queue, uint32_t pri);
int queue_held_release(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                       int64_t delay_ms, const char *error, int *buried);
int queue_held_bury(Txn *t, uint64_t id, uint32_t qid, const void *body, size_t len,
                    const char *reason);
int queue_held_lost(Txn *t, uint64_t id, uint32_t qid, uint32_t attempts, const char *why,
                    int *buried);

/* queue_passable says whether a job may pass through queue without
 * stopping (a hand-off fused into its consumer's commit, engine.c): 0 when
 * the queue exists, is not paused and holds no ready, delayed or reserved
 * job (one that passed now would overtake them); else PL_ENOQUEUE,
 * PL_EPAUSED or PL_ESTATE, and the job goes on the queue as usual.
 * queue_pass then counts the job that passed as a put, a reserve and an
 * ack of queue, so its totals still show the flow. */
int queue_passable(Txn *t, const char *queue);
int queue_pass(Txn *t, const char *queue);

/* queue_ack deletes job id: the work is done. lease: the token from reserve
 * (or 0, the operator's delete of a job in any state). Returns 0,
 * PL_ENOJOB, or PL_ELEASE when the lease is not held. */
int queue_ack(Txn *t, uint64_t id, uint64_t lease);

/* queue_forward is queue_ack of a reserved job plus queue_put of the same
 * body (no key, priority pri) on queue, done in place: the job keeps its id
 * and body, and only its header and index entry change (a stage that
 * hands a job on unchanged: noop, route). It counts as an ack on the old
 * queue and a put on the new one; the job starts afresh there (attempts 0,
 * the queue's ttr). Its place in the new queue's FIFO is its id: the order
 * the line first saw it. Errors as queue_ack and queue_put; nothing is
 * written when it fails before the move (lease, size, room). */
int queue_forward(Txn *t, uint64_t id, uint64_t lease, const char *queue, uint32_t pri);

/* queue_release returns reserved job id to ready, or to delayed for
 * delay_ms > 0; delay_ms < 0 asks for the queue's exponential backoff
 * (queue_backoff_ms). error (may be NULL) is kept as the
 * last error. Past max_attempts the job is buried instead (*buried = 1 if
 * buried is not NULL). Returns 0, PL_ENOJOB, PL_ELEASE, PL_ESTATE. */
int queue_release(Txn *t, uint64_t id, uint64_t lease, int64_t delay_ms,
                  const char *error, int *buried);

/* queue_touch extends a reserved job's lease by its ttr from now; sets
 * *until (may be NULL). Returns 0, PL_ENOJOB, PL_ELEASE, PL_ESTATE. */
int queue_touch(Txn *t, uint64_t id, uint64_t lease, uint64_t *until);

/* queue_bury sets job id aside with reason (required, at most
 * QUEUE_REASON_MAX bytes). A reserved job needs its lease (or 0); a ready or
 * delayed job may be buried by the operator (lease 0). Returns 0, PL_ENOJOB,
 * PL_ELEASE, PL_ESTATE (already buried), PL_ETOOBIG. */
int queue_bury(Txn *t, uint64_t id, uint64_t lease, const char *reason);

/* queue_kick moves up to n buried jobs of queue (oldest first) back to
 * ready, with a fresh count of attempts; sets *kicked. */
int queue_kick(Txn *t, const char *queue, size_t n, size_t *kicked);

/* queue_kick_job kicks one buried or delayed job to ready. PL_ESTATE if it
 * is neither. */
int queue_kick_job(Txn *t, uint64_t id);

/* queue_lookup_key sets *id to the live job of queue holding idempotency
 * key (keylen bytes). Returns 0, PL_ENOJOB (no live job holds it: never
 * seen, or its job is gone and only the retained key is left) or
 * PL_ENOQUEUE. */
int queue_lookup_key(Txn *t, const char *queue, const char *key, size_t keylen, uint64_t *id);

/* queue_get reads job id into *out. Returns 0 or PL_ENOJOB. */
int queue_get(Txn *t, uint64_t id, Job *out);

/* queue_set_body replaces the body of job id (an operator's fix: qctl
 * edit), keeping everything else (state, priority, attempts, key, place in
 * its queue). A reserved job is refused with PL_ESTATE: a worker holds it
 * and would ack the old work. A job the engine holds (queue_hold_n: ready
 * on disk) is edited: the end of that hold finds the body changed and
 * writes nothing, and the job is worked again with the new body. PL_ETOOBIG for a body over its queue's
 * max_body, PL_ENOJOB, or no room (store_room). */
int queue_set_body(Txn *t, uint64_t id, const void *body, size_t len);

/* queue_peek calls fn for up to limit jobs of queue in state (0: all, in the
 * order ready, delayed, reserved, buried), in the order they would be
 * served. fn returning non-zero stops the walk and is returned. */
typedef int (*JobFn)(const Job *j, void *arg);
int queue_peek(Txn *t, const char *queue, int state, size_t limit, JobFn fn, void *arg);

/* queue_purge deletes up to max jobs of queue in state (0: any state),
 * setting *n. Call again while *n == max (bounded transactions). */
int queue_purge(Txn *t, const char *queue, int state, size_t max, size_t *n);

/* queue_delete deletes job id whatever its state or lease (as queue_purge
 * deletes each of its jobs); PL_ENOJOB when there is none. */
int queue_delete(Txn *t, uint64_t id);

/* queue_pause stops (paused=1) or resumes (0) reserving from queue. */
int queue_pause(Txn *t, const char *queue, int paused);

/* queue_stats fills *out for queue. Returns 0 or PL_ENOQUEUE. */
int queue_stats(Txn *t, const char *queue, QueueStats *out);

/* queue_list calls fn with the stats of every queue, by name. */
typedef int (*QueueFn)(const QueueStats *s, void *arg);
int queue_list(Txn *t, QueueFn fn, void *arg);

/* queue_tick promotes delayed jobs whose time came and returns expired
 * leases to ready (or buries them past max_attempts), and forgets retained
 * idempotency keys past their retention, at most max of each; sets *moved
 * (may be NULL) to the jobs moved. */
int queue_tick(Txn *t, size_t max, size_t *moved);

/* queue_sweep_keys forgets up to max retained idempotency keys whose
 * retention ended (oldest first) and sets *n (may be NULL) to how many;
 * *n == max means there may be more. Bounded: call it again. */
int queue_sweep_keys(Txn *t, size_t max, size_t *n);

/* queue_next_due sets *ms to the earliest ready-at or lease end stored, or
 * 0 when there is none (for the engine's timer). */
int queue_next_due(Txn *t, uint64_t *ms);

/* queue_state_name returns "ready", "delayed", "reserved", "buried". */
const char *queue_state_name(int state);
/* queue_state_parse returns the state for its name, 0 for NULL/"all", -1 if unknown. */
int queue_state_parse(const char *name);

#endif
