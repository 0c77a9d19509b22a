/* queue_keys.c: idempotency keys (queue.h: "a put whose key the queue has
 * seen returns the first job's id").
 *
 * An idempotency key lives in DB_KEYS under (qid, key). While its job
 * lives, the value is the job's id (8 bytes). When the job goes (ack,
 * forward, delete, purge), the key stays for the queue's retention with
 * the value (id, forget-at ms) (16 bytes), and an index entry 'k'
 * (forget-at, qid, key) lets queue_sweep_keys forget it in order. A
 * retained key whose time passed but was not swept yet counts as absent. */
#include "queue.h"
#include "queue_int.h"

#include "pl.h"

#include <errno.h>
#include <string.h>

enum { KEYV_LIVE = 8, KEYV_RETAINED = 16 };

static size_t keys_key(unsigned char *b, uint32_t qid, const char *key, size_t keylen)
{
    pl_put_be32(b, qid);
    memcpy(b + 4, key, keylen);
    return 4 + keylen;
}

static size_t retain_key(unsigned char *b, uint64_t forget_at, uint32_t qid, const char *key,
                         size_t keylen)
{
    b[0] = 'k';
    pl_put_be64(b + 1, forget_at);
    return 9 + keys_key(b + 9, qid, key, keylen);
}

int q_key_release(Txn *t, const QRec *q, uint64_t id, const JobRec *j)
{
    if (!j->key)
        return 0;
    unsigned char b[4 + QUEUE_KEY_MAX];
    MDB_val k = {keys_key(b, j->qid, j->key, j->keylen), b}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_KEYS), &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != KEYV_LIVE || pl_get_be64(v.mv_data) != id)
        return 0;
    uint32_t keep_s = q->s.conf.key_retention_s;
    if (!keep_s)
        return mdb_del(t->mdb, txn_dbi(t, DB_KEYS), &k, NULL);
    uint64_t forget_at = t->now + (uint64_t)keep_s * 1000;
    unsigned char rv[KEYV_RETAINED], ib[9 + 4 + QUEUE_KEY_MAX];
    pl_put_be64(rv, id);
    pl_put_be64(rv + 8, forget_at);
    MDB_val nv = {KEYV_RETAINED, rv}, ik = {retain_key(ib, forget_at, j->qid, j->key, j->keylen), ib},
            iv = {0, NULL};
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_KEYS), &k, &nv, 0)) != 0)
        return rc;
    return mdb_put(t->mdb, txn_dbi(t, DB_INDEX), &ik, &iv, 0);
}

int q_key_take(Txn *t, uint32_t qid, const char *key, size_t keylen, uint64_t id)
{
    unsigned char b[4 + QUEUE_KEY_MAX], v[KEYV_LIVE];
    pl_put_be64(v, id);
    MDB_val k = {keys_key(b, qid, key, keylen), b}, d = {KEYV_LIVE, v};
    return mdb_put(t->mdb, txn_dbi(t, DB_KEYS), &k, &d, 0);
}

int q_key_find(Txn *t, uint32_t qid, const char *key, size_t keylen, uint64_t *id, int *live)
{
    unsigned char b[4 + QUEUE_KEY_MAX];
    MDB_val k = {keys_key(b, qid, key, keylen), b}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_KEYS), &k, &v);
    if (rc)
        return rc;
    if (v.mv_size == KEYV_LIVE) {
        *id = pl_get_be64(v.mv_data);
        *live = 1;
        return 0;
    }
    if (v.mv_size != KEYV_RETAINED) {
        pl_log(PL_LOG_ERROR, "store: idempotency key record of queue id %u is %zu bytes "
               "(expected 8 or 16)", qid, v.mv_size);
        return PL_ECORRUPT;
    }
    if (pl_get_be64((unsigned char *)v.mv_data + 8) <= t->now)
        return MDB_NOTFOUND;
    *id = pl_get_be64(v.mv_data);
    *live = 0;
    return 0;
}

int queue_sweep_keys(Txn *t, size_t max, size_t *n)
{
    size_t done = 0;
    int rc = 0;
    if (n)
        *n = 0;
    if (!t->write)
        return EACCES;
    MDB_cursor *c = txn_cursor(t, DB_INDEX);
    if (!c)
        return ENOMEM;
    static const unsigned char pre[1] = {'k'};
    while (done < max) {
        MDB_val k;
        if ((rc = q_idx_seek(c, pre, 1, 1, &k)) != 0)
            break;
        if (k.mv_size < 13 || k.mv_size > 13 + QUEUE_KEY_MAX) {
            rc = PL_ECORRUPT;
            break;
        }
        const unsigned char *kb = k.mv_data;
        uint64_t forget_at = pl_get_be64(kb + 1);
        if (forget_at > t->now)
            break;
        /* The key may have been taken again by a new job since (its
         * retention ended before it was swept): then it is not ours. */
        MDB_val kk = {k.mv_size - 9, (void *)(kb + 9)}, kv;
        rc = mdb_get(t->mdb, txn_dbi(t, DB_KEYS), &kk, &kv);
        if (rc == 0 && kv.mv_size == KEYV_RETAINED && pl_get_be64((unsigned char *)kv.mv_data + 8) == forget_at)
            rc = mdb_del(t->mdb, txn_dbi(t, DB_KEYS), &kk, NULL);
        else if (rc == MDB_NOTFOUND || rc == 0)
            rc = 0;
        if (rc || (rc = mdb_cursor_del(c, 0)) != 0)
            return txn_fail(t, rc);
        done++;
    }
    if (n)
        *n = done;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue_lookup_key(Txn *t, const char *queue, const char *key, size_t keylen, uint64_t *id)
{
    QRec *q;
    if (keylen == 0 || keylen > QUEUE_KEY_MAX)
        return PL_ENOJOB;
    int rc = q_find(t, queue, 0, NULL, &q);
    if (rc)
        return rc;
    int live;
    rc = q_key_find(t, q->s.qid, key, keylen, id, &live);
    if (rc == MDB_NOTFOUND || (rc == 0 && !live))
        return PL_ENOJOB;
    return rc;
}

