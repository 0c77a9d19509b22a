/* queue_int.h: what queue.c, queue_keys.c and queue_admin.c share; not an
 * API (queue.h is). queue.c keeps the layout (queue records and their
 * per-transaction cache, job records, the state index) and the operations
 * on jobs; queue_keys.c the idempotency keys; queue_admin.c the operations
 * on whole queues (create, configure, pause, stats, list) and the
 * operator's (kick, peek, purge). */
#ifndef PL_QUEUE_INT_H
#define PL_QUEUE_INT_H

#include "queue.h"
#include "rec.h"
#include "store.h"

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

/* QRec: a queue's record as this transaction sees it (cached, written once
 * before the commit when dirty). */
typedef struct QRec {
    QueueStats s;
    int dirty;
} QRec;

/* q_conf_ok says whether c is a valid QueueConf (ranges, backoff order). */
int q_conf_ok(const QueueConf *c);

/* q_find returns the cached record of queue name, loading it, or creating
 * it with conf (NULL: defaults) when create is set: 0, PL_ENOQUEUE,
 * PL_EINVAL (a bad name or conf), EACCES (create in a read transaction) or
 * the store's error. q_byid finds a queue by its id (PL_EFORMAT when no
 * queue has it: the store is damaged). */
int q_find(Txn *t, const char *name, int create, const QueueConf *conf, QRec **out);
int q_byid(Txn *t, uint32_t qid, QRec **out);

/* q_job_load reads job id's header into j (views valid until the next
 * update): 0, PL_ENOJOB, or the decoder's error. q_fill fills a Job for
 * callers from j and its body. */
int q_job_load(Txn *t, uint64_t id, JobRec *j);
int q_fill(Txn *t, uint64_t id, const JobRec *j, const QRec *q, Job *out);

/* The state index (DB_INDEX): q_idx_key writes the key of job id in state
 * and returns its length; q_idx_prefix the prefix all entries of state
 * share (per queue for ready and buried, global for delayed and reserved).
 * q_idx_seek positions c at the first entry at or after key (klen bytes)
 * that still shares its first plen bytes, q_idx_next at the next one that
 * shares prefix: 0, or MDB_NOTFOUND when there is none. q_idx_id is the
 * job id of an entry. */
size_t q_idx_key(unsigned char *b, int state, uint32_t qid, uint32_t pri, uint64_t due, uint64_t id);
size_t q_idx_prefix(unsigned char *b, int state, uint32_t qid);
int q_idx_seek(MDB_cursor *c, const unsigned char *key, size_t klen, size_t plen, MDB_val *k);
int q_idx_next(MDB_cursor *c, const unsigned char *prefix, size_t plen, MDB_val *k);
uint64_t q_idx_id(const MDB_val *k);

/* QScan: a walk on cursor c over the index entries of one state (of one
 * queue, for ready and buried), in index order. q_scan_first positions it
 * at the first entry, q_scan_next at the following one: 0 (k is the entry:
 * q_idx_id(&s->k) its job), MDB_NOTFOUND past the last, or an error. */
typedef struct QScan {
    MDB_cursor *c;
    unsigned char pre[5];
    size_t plen;
    MDB_val k;
} QScan;
int q_scan_first(QScan *s, MDB_cursor *c, int state, uint32_t qid);
int q_scan_next(QScan *s);

/* q_move moves job id (j, of q) from its state to state (due: the time
 * for delayed and reserved) and rewrites its header; q_drop deletes it
 * entirely (ack, delete, purge), releasing its key. Both count in q and,
 * failing after their first write, poison the transaction (txn_fail). */
int q_move(Txn *t, QRec *q, uint64_t id, JobRec *j, int state, uint64_t due);
int q_drop(Txn *t, QRec *q, uint64_t id, JobRec *j);

/* q_key_release: job id (j, of q) is going; its idempotency key, if it
 * still names id, is kept for q's retention, or deleted when q keeps none.
 * q_key_find looks key up in queue qid: 0 with *id and *live (1: a job
 * holds it, 0: retained after its job), or MDB_NOTFOUND (never seen, or its
 * retention is over), PL_ECORRUPT for a damaged record. */
int q_key_release(Txn *t, const QRec *q, uint64_t id, const JobRec *j);
/* q_key_take records that job id holds key (keylen bytes, at most
 * QUEUE_KEY_MAX) in queue qid: 0 or LMDB's error (after a write: the
 * caller poisons the transaction). */
int q_key_take(Txn *t, uint32_t qid, const char *key, size_t keylen, uint64_t id);
int q_key_find(Txn *t, uint32_t qid, const char *key, size_t keylen, uint64_t *id, int *live);

#endif
