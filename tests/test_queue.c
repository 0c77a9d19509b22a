/* test_queue.c: every queue semantic of engine/core/queue.c on a real LMDB
 * environment, with a fake clock for delays and leases. */
#include "t.h"
#include "t_store.h"
#include "pl.h"
#include "queue.h"
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t put(Txn *t, const char *q, uint32_t pri, const char *body)
{
    PutArgs a = {.pri = pri, .body = body, .len = strlen(body)};
    uint64_t id;
    T_OK(queue_put(t, q, &a, &id, NULL));
    return id;
}

static void put_reserve_ack(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t id = put(t, "q", 10, "{\"a\":1}");
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    Job j;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_EQ(j.id, id);
    T_EQ(j.attempts, 1);
    T_EQ(j.state, JOB_RESERVED);
    T_CHECK(j.len == 7 && memcmp(j.body, "{\"a\":1}", 7) == 0);
    T_CHECK(strcmp(j.queue, "q") == 0);
    T_EQ(j.due_ms, ts_now + 60000);
    uint64_t lease = j.lease;
    T_CHECK(lease != 0);
    T_ERR(queue_reserve(t, "q", 0, &j), PL_EEMPTY);
    T_OK(queue_ack(t, id, lease));
    T_ERR(queue_ack(t, id, lease), PL_ENOJOB);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready + st.reserved + st.delayed + st.buried, 0);
    T_EQ(st.puts, 1);
    T_EQ(st.reserves, 1);
    T_EQ(st.acks, 1);
    T_ERR(queue_get(t, id, &j), PL_ENOJOB);
    store_txn_abort(t);
    store_close(s);
}

static void priority_then_fifo(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t a = put(t, "q", 5, "1"), b = put(t, "q", 1, "2"), c = put(t, "q", 5, "3"),
             d = put(t, "q", 1, "4"), e = put(t, "q", 0xffffffffu, "5");
    uint64_t want[] = {b, d, a, c, e};
    for (int i = 0; i < 5; i++) {
        Job j;
        T_OK(queue_reserve(t, "q", 0, &j));
        T_EQ(j.id, want[i]);
    }
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void delay_promotes(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    PutArgs a = {.pri = 1, .delay_ms = 5000, .body = "x", .len = 1};
    uint64_t id;
    Job j;
    T_OK(queue_put(t, "q", &a, &id, NULL));
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    T_ERR(queue_reserve(t, "q", 0, &j), PL_EEMPTY);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.delayed, 1);
    uint64_t due;
    T_OK(queue_next_due(t, &due));
    T_EQ(due, ts_now + 5000);
    store_txn_abort(t);
    ts_now += 4999;
    t = ts_wbegin(s);
    T_ERR(queue_reserve(t, "q", 0, &j), PL_EEMPTY);
    store_txn_abort(t);
    ts_now += 1;
    t = ts_wbegin(s);
    T_OK(queue_reserve(t, "q", 0, &j));
    T_EQ(j.id, id);
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.delayed, 0);
    T_EQ(st.reserved, 1);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void lease_expiry_and_stale_token(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t id = put(t, "q", 1, "x");
    Job j;
    T_OK(queue_reserve(t, "q", 1000, &j));
    uint64_t old = j.lease;
    T_OK(store_txn_commit(t));

    ts_now += 1001;
    t = ts_wbegin(s);
    Job j2;
    T_OK(queue_reserve(t, "q", 0, &j2)); /* the tick returned it to ready */
    T_EQ(j2.id, id);
    T_EQ(j2.attempts, 2);
    T_CHECK(j2.lease != old);
    T_CHECK(j2.error && memmem(j2.error, j2.errorlen, "lease expired", 13));
    /* The first worker's lease is gone: its ack, release, touch, bury are refused. */
    T_ERR(queue_ack(t, id, old), PL_ELEASE);
    T_ERR(queue_release(t, id, old, 0, NULL, NULL), PL_ELEASE);
    T_ERR(queue_touch(t, id, old, NULL), PL_ELEASE);
    T_ERR(queue_bury(t, id, old, "x"), PL_ELEASE);
    T_OK(queue_ack(t, id, j2.lease));
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.expiries, 1);
    T_EQ(st.acks, 1);
    T_EQ(st.reserved, 0);
    store_txn_abort(t);
    store_close(s);
}

static void max_attempts_buries(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf c;
    queue_conf_default(&c);
    c.max_attempts = 2;
    c.ttr_ms = 100;
    T_OK(queue_create(t, "q", &c));
    T_ERR(queue_create(t, "q", &c), EEXIST);
    uint64_t id = put(t, "q", 1, "x");
    T_OK(store_txn_commit(t));
    for (int i = 0; i < 2; i++) {
        t = ts_wbegin(s);
        Job j;
        T_OK(queue_reserve(t, "q", 0, &j));
        T_OK(store_txn_commit(t));
        ts_now += 101;
    }
    t = ts_wbegin(s);
    size_t moved;
    T_OK(queue_tick(t, 100, &moved));
    T_EQ(moved, 1);
    Job j;
    T_OK(queue_get(t, id, &j));
    T_EQ(j.state, JOB_BURIED);
    T_CHECK(j.error && memmem(j.error, j.errorlen, "attempt 2 of 2", 14));
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.buried, 1);
    T_EQ(st.expiries, 2);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void release_delay_and_backoff(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf c;
    queue_conf_default(&c);
    c.backoff_ms = 100;
    c.backoff_max_ms = 250;
    c.max_attempts = 0; /* never bury */
    T_OK(queue_create(t, "q", &c));
    uint64_t id = put(t, "q", 1, "x");
    Job j;
    int buried;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_OK(queue_release(t, id, j.lease, 0, "boom", &buried));
    T_EQ(buried, 0);
    T_OK(queue_reserve(t, "q", 0, &j)); /* released with no delay: ready at once */
    T_EQ(j.attempts, 2);
    T_CHECK(j.errorlen == 4 && memcmp(j.error, "boom", 4) == 0);
    T_OK(queue_release(t, id, j.lease, -1, "again", &buried)); /* backoff: 100 * 2^(2-1) */
    T_OK(queue_get(t, id, &j));
    T_EQ(j.state, JOB_DELAYED);
    T_EQ(j.due_ms, ts_now + 200);
    T_OK(store_txn_commit(t));
    for (int i = 0; i < 2; i++) {
        ts_now = j.due_ms;
        t = ts_wbegin(s);
        T_OK(queue_reserve(t, "q", 0, &j));
        T_OK(queue_release(t, id, j.lease, -1, NULL, NULL));
        T_OK(queue_get(t, id, &j));
        T_EQ(j.due_ms, ts_now + 250); /* capped at backoff_max */
        T_OK(store_txn_commit(t));
    }
    t = ts_wbegin(s);
    T_ERR(queue_release(t, id, 0, 0, NULL, NULL), PL_ESTATE); /* not reserved */
    store_txn_abort(t);
    store_close(s);
}

/* backoff_doubles_to_its_ceiling: queue_backoff_ms, which queue_release and
 * the engine's retries use. */
static void backoff_doubles_to_its_ceiling(void)
{
    QueueConf c;
    queue_conf_default(&c);
    T_EQ(queue_backoff_ms(&c, 0), 1000);
    T_EQ(queue_backoff_ms(&c, 1), 1000);
    T_EQ(queue_backoff_ms(&c, 2), 2000);
    T_EQ(queue_backoff_ms(&c, 5), 16000);
    T_EQ(queue_backoff_ms(&c, 12), 2048000);
    T_EQ(queue_backoff_ms(&c, 13), 3600000); /* 4096 s: past the hour */
    T_EQ(queue_backoff_ms(&c, UINT32_MAX), 3600000);
    c.backoff_ms = 100;
    c.backoff_max_ms = 100;
    T_EQ(queue_backoff_ms(&c, 1), 100);
    T_EQ(queue_backoff_ms(&c, 9), 100);
    c.backoff_ms = UINT32_MAX - 1;
    c.backoff_max_ms = UINT32_MAX;
    T_EQ(queue_backoff_ms(&c, 3), UINT32_MAX);
    c.backoff_ms = 0;
    T_EQ(queue_backoff_ms(&c, 40), 0);
}

static void release_past_max_attempts_buries(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf c;
    queue_conf_default(&c);
    c.max_attempts = 1;
    T_OK(queue_create(t, "q", &c));
    uint64_t id = put(t, "q", 1, "x");
    Job j;
    int buried;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_OK(queue_release(t, id, j.lease, 0, "HTTP 503", &buried));
    T_EQ(buried, 1);
    T_OK(queue_get(t, id, &j));
    T_EQ(j.state, JOB_BURIED);
    T_CHECK(memmem(j.error, j.errorlen, "HTTP 503", 8));
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void touch_extends(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t id = put(t, "q", 1, "x");
    Job j;
    T_OK(queue_reserve(t, "q", 1000, &j));
    T_OK(store_txn_commit(t));
    ts_now += 900;
    t = ts_wbegin(s);
    uint64_t until;
    T_OK(queue_touch(t, id, j.lease, &until));
    T_EQ(until, ts_now + 60000); /* the job's own ttr */
    T_OK(store_txn_commit(t));
    ts_now += 1000;
    t = ts_wbegin(s);
    size_t moved;
    T_OK(queue_tick(t, 10, &moved));
    T_EQ(moved, 0);
    T_OK(queue_ack(t, id, j.lease));
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void bury_and_kick(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t a = put(t, "q", 1, "a"), b = put(t, "q", 1, "b"), c = put(t, "q", 1, "c");
    Job j;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_EQ(j.id, a);
    T_ERR(queue_bury(t, a, j.lease, ""), PL_EINVAL);
    T_OK(queue_bury(t, a, j.lease, "malformed JSON at byte 3"));
    T_ERR(queue_bury(t, a, 0, "again"), PL_ESTATE);
    T_OK(queue_bury(t, b, 0, "operator")); /* a ready job, by the operator */
    T_OK(queue_get(t, a, &j));
    T_EQ(j.state, JOB_BURIED);
    T_CHECK(j.errorlen == 24 && !memcmp(j.error, "malformed JSON at byte 3", 24));
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.buried, 2);
    T_EQ(st.ready, 1);
    size_t k;
    T_OK(queue_kick(t, "q", 1, &k));
    T_EQ(k, 1);
    T_OK(queue_get(t, a, &j)); /* oldest first */
    T_EQ(j.state, JOB_READY);
    T_EQ(j.attempts, 0);
    T_EQ(j.kicks, 1);
    T_OK(queue_kick_job(t, b));
    T_ERR(queue_kick_job(t, c), PL_ESTATE);
    T_OK(queue_kick(t, "q", 100, &k));
    T_EQ(k, 0);
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.buried, 0);
    T_EQ(st.ready, 3);
    T_EQ(st.kicks, 2);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void idempotency_key(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    PutArgs a = {.pri = 1, .key = "order-17", .keylen = 8, .body = "1", .len = 1};
    uint64_t id1, id2, id3;
    int ex;
    T_OK(queue_put(t, "q", &a, &id1, &ex));
    T_EQ(ex, 0);
    T_OK(queue_put(t, "q", &a, &id2, &ex));
    T_EQ(ex, 1);
    T_EQ(id2, id1);
    T_OK(queue_put(t, "other", &a, &id3, &ex)); /* keys are per queue */
    T_EQ(ex, 0);
    T_CHECK(id3 != id1);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 1);
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    Job j;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_CHECK(j.keylen == 8 && !memcmp(j.key, "order-17", 8));
    T_OK(queue_put(t, "q", &a, &id2, &ex)); /* still live while reserved */
    T_EQ(ex, 1);
    T_OK(queue_ack(t, id1, j.lease));
    /* Done, but a client's retry must not add the record twice: the key
     * outlives its job for the queue's retention (default 24 h). */
    T_OK(queue_put(t, "q", &a, &id2, &ex));
    T_EQ(ex, 2);
    T_EQ(id2, id1);
    T_ERR(queue_lookup_key(t, "q", "order-17", 8, &id2), PL_ENOJOB); /* no live job holds it */
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready + st.reserved, 0);
    T_OK(store_txn_commit(t));
    ts_now += 86400ull * 1000 - 1; /* a moment before the end */
    t = ts_wbegin(s);
    T_OK(queue_put(t, "q", &a, &id2, &ex));
    T_EQ(ex, 2);
    T_OK(store_txn_commit(t));
    ts_now += 1; /* its retention is over: the key is free again */
    t = ts_wbegin(s);
    T_OK(queue_put(t, "q", &a, &id2, &ex));
    T_EQ(ex, 0);
    T_CHECK(id2 > id1);
    /* The sweep forgets the old retained entry, not the new job's key. */
    size_t swept;
    T_OK(queue_sweep_keys(t, 100, &swept));
    T_EQ(swept, 1);
    T_OK(queue_lookup_key(t, "q", "order-17", 8, &id3));
    T_EQ(id3, id2);
    char big[QUEUE_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    a.key = big;
    a.keylen = sizeof big;
    T_ERR(queue_put(t, "q", &a, &id3, &ex), PL_ETOOBIG);
    T_OK(store_txn_commit(t));
    store_close(s);
}

/* Retained keys are forgotten in bounded steps, oldest first; a queue
 * with no retention frees a key with its job. */
static void key_retention_sweep(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf none;
    queue_conf_default(&none);
    none.key_retention_s = 0;
    T_OK(queue_create(t, "plain", &none));
    QueueConf hour;
    queue_conf_default(&hour);
    hour.key_retention_s = 3600;
    T_OK(queue_create(t, "q", &hour));
    char key[32];
    uint64_t id;
    int ex;
    for (int i = 0; i < 2500; i++) {
        snprintf(key, sizeof key, "k%05d", i);
        PutArgs a = {.key = key, .keylen = strlen(key), .body = "{}", .len = 2};
        T_OK(queue_put(t, "q", &a, &id, &ex));
        T_OK(queue_put(t, "plain", &a, &id, &ex));
    }
    T_OK(store_txn_commit(t));
    /* Delete every job (the operator's delete counts like an ack). */
    t = ts_wbegin(s);
    size_t n;
    T_OK(queue_purge(t, "q", 0, 5000, &n));
    T_EQ(n, 2500);
    T_OK(queue_purge(t, "plain", 0, 5000, &n));
    T_EQ(n, 2500);
    PutArgs a = {.key = "k00007", .keylen = 6, .body = "{}", .len = 2};
    T_OK(queue_put(t, "plain", &a, &id, &ex)); /* not retained: a new job */
    T_EQ(ex, 0);
    T_OK(queue_put(t, "q", &a, &id, &ex));      /* retained */
    T_EQ(ex, 2);
    T_OK(queue_sweep_keys(t, 1000, &n));        /* nothing is due yet */
    T_EQ(n, 0);
    T_OK(store_txn_commit(t));
    MDB_stat ms;
    t = ts_wbegin(s);
    T_OK(mdb_stat(t->mdb, txn_dbi(t, DB_KEYS), &ms));
    T_EQ(ms.ms_entries, 2501);
    store_txn_abort(t);
    ts_now += 3600ull * 1000;
    size_t total = 0, rounds = 0;
    do {
        t = ts_wbegin(s);
        T_OK(queue_sweep_keys(t, 1000, &n));
        T_OK(store_txn_commit(t));
        total += n;
        rounds++;
    } while (n == 1000);
    T_EQ(total, 2500);
    T_EQ(rounds, 3);
    t = ts_wbegin(s);
    T_OK(mdb_stat(t->mdb, txn_dbi(t, DB_KEYS), &ms));
    T_EQ(ms.ms_entries, 1); /* the live job's key in "plain" */
    T_OK(queue_put(t, "q", &a, &id, &ex));
    T_EQ(ex, 0);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void batch_reserve_n_ack_n(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    for (int i = 0; i < 1000; i++)
        put(t, "q", (uint32_t)(i % 3), "{}");
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    Job *js = calloc(1000, sizeof *js);
    size_t got;
    T_OK(queue_reserve_n(t, "q", 600, 0, js, &got));
    T_EQ(got, 600);
    for (size_t i = 1; i < got; i++)
        T_CHECK(js[i - 1].pri < js[i].pri || (js[i - 1].pri == js[i].pri && js[i - 1].id < js[i].id));
    for (size_t i = 0; i < got; i++)
        T_OK(queue_ack(t, js[i].id, js[i].lease));
    T_OK(queue_reserve_n(t, "q", 1000, 0, js, &got));
    T_EQ(got, 400);
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 0);
    T_EQ(st.reserved, 400);
    T_EQ(st.acks, 600);
    T_ERR(queue_reserve_n(t, "q", 10, 0, js, &got), PL_EEMPTY);
    store_txn_abort(t);
    free(js);
    store_close(s);
}

/* Regression: the headers that reserve_n rewrites share DB_JOBS with the
 * bodies; every body view handed out must still be the job's own body. */
static void reserve_n_bodies_intact(void)
{
    Store *s = ts_open(NULL);
    char body[200];
    for (int round = 0; round < 5; round++) {
        Txn *t = ts_wbegin(s);
        for (int i = 0; i < 600; i++) {
            int len = snprintf(body, sizeof body, "{\"n\":%d,\"pad\":\"%.*s\"}", round * 600 + i,
                               (i * 37) % 120, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            PutArgs a = {.body = body, .len = (size_t)len};
            uint64_t id;
            T_OK(queue_put(t, "q", &a, &id, NULL));
        }
        T_OK(store_txn_commit(t));
    }
    Job *js = calloc(64, sizeof *js);
    int seen = 0;
    for (;;) {
        Txn *t = ts_wbegin(s);
        size_t got;
        int rc = queue_reserve_n(t, "q", 64, 0, js, &got);
        if (rc == PL_EEMPTY) {
            store_txn_abort(t);
            break;
        }
        T_OK(rc);
        for (size_t i = 0; i < got; i++) {
            int n = -1;
            T_CHECK(js[i].len > 6 && sscanf((const char *)js[i].body, "{\"n\":%d,", &n) == 1);
            T_EQ(n, (int)(js[i].id - 1)); /* ids start at 1, bodies count from 0 */
            seen++;
        }
        for (size_t i = 0; i < got; i++)
            T_OK(queue_ack(t, js[i].id, js[i].lease));
        T_OK(store_txn_commit(t));
    }
    T_EQ(seen, 3000);
    free(js);
    store_close(s);
}

static void pause_resume(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    put(t, "q", 1, "x");
    Job j;
    T_OK(queue_pause(t, "q", 1));
    T_ERR(queue_reserve(t, "q", 0, &j), PL_EPAUSED);
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    T_ERR(queue_reserve(t, "q", 0, &j), PL_EPAUSED); /* durable */
    T_OK(queue_pause(t, "q", 0));
    T_OK(queue_reserve(t, "q", 0, &j));
    T_ERR(queue_pause(t, "nope", 1), PL_ENOQUEUE);
    T_OK(store_txn_commit(t));
    store_close(s);
}

typedef struct Seen {
    uint64_t id[16];
    int state[16];
    int n;
} Seen;

static int seen(const Job *j, void *arg)
{
    Seen *s = arg;
    s->id[s->n] = j->id;
    s->state[s->n++] = j->state;
    return 0;
}

static void peek_and_purge(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t a = put(t, "q", 2, "a"), b = put(t, "q", 1, "b");
    PutArgs pa = {.pri = 0, .delay_ms = 1000, .body = "c", .len = 1};
    uint64_t c, d;
    T_OK(queue_put(t, "q", &pa, &c, NULL));
    d = put(t, "other", 1, "d");
    Job j;
    T_OK(queue_reserve(t, "q", 0, &j));
    T_EQ(j.id, b);
    Seen sn = {0};
    T_OK(queue_peek(t, "q", 0, 10, seen, &sn));
    T_EQ(sn.n, 3);
    T_EQ(sn.id[0], a);
    T_EQ(sn.state[0], JOB_READY);
    T_EQ(sn.id[1], c);
    T_EQ(sn.state[1], JOB_DELAYED);
    T_EQ(sn.id[2], b);
    T_EQ(sn.state[2], JOB_RESERVED);
    memset(&sn, 0, sizeof sn);
    T_OK(queue_peek(t, "q", JOB_DELAYED, 10, seen, &sn));
    T_EQ(sn.n, 1);
    memset(&sn, 0, sizeof sn);
    T_OK(queue_peek(t, "q", 0, 1, seen, &sn));
    T_EQ(sn.n, 1);
    size_t n;
    T_OK(queue_purge(t, "q", JOB_READY, 100, &n));
    T_EQ(n, 1);
    T_OK(queue_purge(t, "q", 0, 100, &n));
    T_EQ(n, 2);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready + st.delayed + st.reserved + st.buried, 0);
    T_EQ(st.deletes, 3);
    T_OK(queue_get(t, d, &j)); /* the other queue is untouched */
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void body_limit_and_bad_names(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf c;
    queue_conf_default(&c);
    c.max_body = 10;
    T_OK(queue_create(t, "small", &c));
    PutArgs a = {.body = "01234567890", .len = 11};
    uint64_t id;
    T_ERR(queue_put(t, "small", &a, &id, NULL), PL_ETOOBIG);
    a.len = 10;
    T_OK(queue_put(t, "small", &a, &id, NULL));
    T_ERR(queue_put(t, "bad name", &a, &id, NULL), PL_EINVAL);
    T_ERR(queue_put(t, "", &a, &id, NULL), PL_EINVAL);
    c.max_body = QUEUE_BODY_LIMIT + 1;
    T_ERR(queue_create(t, "huge", &c), PL_EINVAL);
    QueueStats st;
    T_OK(queue_stats(t, "small", &st));
    T_EQ(st.ready, 1);
    T_EQ(st.puts, 1);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void survives_reopen(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t id = put(t, "q", 7, "persist");
    T_OK(store_txn_commit(t));
    store_close(s);
    s = ts_open(NULL);
    t = ts_wbegin(s);
    Job j;
    T_OK(queue_get(t, id, &j));
    T_EQ(j.pri, 7);
    T_CHECK(j.len == 7 && !memcmp(j.body, "persist", 7));
    uint64_t id2 = put(t, "q", 7, "next");
    T_CHECK(id2 > id); /* ids are never reused */
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void map_grows(void)
{
    StoreOpts o = {.create = 1, .map_initial = 1 << 20};
    Store *s = ts_open(&o);
    static char body[4096];
    memset(body, 'x', sizeof body - 1);
    for (int b = 0; b < 20; b++) {
        struct A { int dummy; } *unused = NULL;
        (void)unused;
        Txn *t = ts_wbegin(s);
        int rc = 0;
        for (int i = 0; i < 250 && !rc; i++) {
            PutArgs a = {.body = body, .len = sizeof body};
            uint64_t id;
            rc = queue_put(t, "q", &a, &id, NULL);
        }
        if (rc == MDB_MAP_FULL) {
            store_txn_abort(t);
            T_OK(store_grow(s));
            b--;
            continue;
        }
        T_OK(rc);
        T_OK(store_txn_commit(t));
    }
    StoreInfo si;
    T_OK(store_info(s, &si));
    T_CHECK(si.map_size >= 20u << 20);
    Txn *t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 5000);
    store_txn_abort(t);
    store_close(s);
}

typedef struct Fill {
    int n;
} Fill;

static int put_many(Txn *t, void *arg)
{
    Fill *f = arg;
    static char body[8000];
    for (int i = 0; i < 50; i++) {
        PutArgs a = {.body = body, .len = sizeof body};
        uint64_t id;
        int rc = queue_put(t, "q", &a, &id, NULL);
        if (rc)
            return rc;
        f->n++;
    }
    return 0;
}

static int ack_all(Txn *t, void *arg)
{
    (void)arg;
    size_t n;
    return queue_purge(t, "q", 0, 100000, &n);
}

static int resume_q(Txn *t, void *arg)
{
    (void)arg;
    return queue_pause(t, "q", 0);
}

static void headroom_keeps_acks_working(void)
{
    StoreOpts o = {.create = 1, .map_initial = 1 << 20, .map_max = 6 << 20, .headroom = 1 << 20};
    Store *s = ts_open(&o);
    Fill f = {0};
    int rc;
    while ((rc = store_run(s, put_many, &f)) == 0)
        ;
    T_ERR(rc, PL_EFULL);
    T_CHECK(f.n > 100);
    /* The room that is left is the acks': deleting everything succeeds. */
    T_OK(store_run(s, ack_all, NULL));
    Txn *t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 0);
    store_txn_abort(t);
    /* And the freed pages take puts again, once no reader can see them
     * (LMDB reuses pages freed by txn N from txn N+2 on). */
    T_OK(store_run(s, resume_q, NULL));
    f.n = 0;
    T_OK(store_run(s, put_many, &f));
    T_EQ(f.n, 50);
    store_close(s);
}

static int falloc_enospc(int fd, off_t off, off_t len)
{
    (void)fd, (void)off, (void)len;
    return ENOSPC;
}

static void full_disk_refuses_puts_not_acks(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    uint64_t id = put(t, "q", 1, "x");
    T_OK(store_txn_commit(t));
    struct stat st0;
    char p[512];
    snprintf(p, sizeof p, "%s/data.mdb", t_dir());
    T_OK(stat(p, &st0));
    /* Grow the data past what was reserved, with a disk that has no room. */
    store_set_fallocate(s, falloc_enospc);
    int rc = 0;
    Fill f = {0};
    for (int i = 0; i < 1000 && rc == 0; i++)
        rc = store_run(s, put_many, &f);
    T_ERR(rc, ENOSPC);
    t = ts_wbegin(s);
    T_OK(queue_ack(t, id, 0));
    T_OK(store_txn_commit(t));
    store_set_fallocate(s, NULL);
    t = ts_wbegin(s);
    put(t, "q", 1, "room again");
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void not_a_data_dir(void)
{
    Store *s;
    StoreOpts o = {.create = 0};
    T_ERR(store_open(t_dir(), &o, &s), ENOENT);
    T_CHECK(s == NULL);
    T_OK(mkdir(t_dir(), 0700));
    char p[512];
    snprintf(p, sizeof p, "%s/notes.txt", t_dir());
    FILE *f = fopen(p, "w");
    T_CHECK(f);
    fputs("mine", f);
    fclose(f);
    o.create = 1;
    T_ERR(store_open(t_dir(), &o, &s), PL_ENOTDATA);
    /* And nothing was created there. */
    snprintf(p, sizeof p, "%s/data.mdb", t_dir());
    T_CHECK(access(p, F_OK) != 0);
}

static void two_processes_one_queue(void)
{
    Store *s = ts_open(NULL);
    store_close(s);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            Store *cs;
            StoreOpts o = {.create = 1};
            if (store_open(t_dir(), &o, &cs))
                _exit(2);
            for (int b = 0; b < 200; b++) {
                Txn *t;
                if (store_txn_begin(cs, 1, &t))
                    _exit(3);
                for (int i = 0; i < 10; i++) {
                    PutArgs a = {.pri = (uint32_t)k, .body = "x", .len = 1};
                    uint64_t id;
                    if (queue_put(t, "shared", &a, &id, NULL))
                        _exit(4);
                }
                if (store_txn_commit(t))
                    _exit(5);
            }
            store_close(cs);
            _exit(0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "shared", &st));
    T_EQ(st.ready, 4000);
    T_EQ(st.puts, 4000);
    Job *js = calloc(4000, sizeof *js);
    size_t got;
    T_OK(queue_reserve_n(t, "shared", 5000, 0, js, &got));
    T_EQ(got, 4000);
    for (size_t i = 1; i < got; i++) /* distinct ids, served in (pri, id) order */
        T_CHECK(js[i - 1].pri < js[i].pri || js[i - 1].id < js[i].id);
    free(js);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void read_only_store_refuses_writes(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    put(t, "q", 1, "x");
    T_OK(store_txn_commit(t));
    store_close(s);
    StoreOpts o = {.readonly = 1};
    T_OK(store_open(t_dir(), &o, &s));
    T_ERR(store_txn_begin(s, 1, &t), EACCES);
    T_OK(store_txn_begin(s, 0, &t));
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 1);
    Job j;
    T_ERR(queue_reserve(t, "q", 0, &j), EACCES);
    store_txn_abort(t);
    store_close(s);
}

static void compact_copy(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    for (int i = 0; i < 2000; i++)
        put(t, "q", 1, "some body that takes room");
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    size_t n;
    T_OK(queue_purge(t, "q", 0, 1990, &n));
    T_OK(store_txn_commit(t));
    char dst[512];
    snprintf(dst, sizeof dst, "%s.compact", t_dir());
    T_OK(store_compact(s, dst));
    T_ERR(store_compact(s, dst), EEXIST);
    store_close(s);
    StoreOpts o = {.create = 0};
    T_OK(store_open(dst, &o, &s));
    t = ts_wbegin(s);
    QueueStats st;
    T_OK(queue_stats(t, "q", &st));
    T_EQ(st.ready, 10);
    store_txn_abort(t);
    store_close(s);
}

/* queue_forward: ack + put of the same body, in place. */
static void forward_in_place(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf small;
    queue_conf_default(&small);
    small.max_body = 4;
    T_OK(queue_create(t, "tiny", &small));
    PutArgs a = {.pri = 7, .body = "{\"k\":1}", .len = 7, .key = "key-1", .keylen = 5};
    uint64_t id, other;
    T_OK(queue_put(t, "a", &a, &id, NULL));
    other = put(t, "b", 0, "{\"first\":true}");
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    Job j;
    T_OK(queue_reserve(t, "a", 0, &j));
    T_EQ(j.id, id);
    uint64_t lease = j.lease;
    /* A stale lease and a queue too small for the body change nothing. */
    T_ERR(queue_forward(t, id, lease + 1, "b", 7), PL_ELEASE);
    T_ERR(queue_forward(t, id, lease, "tiny", 7), PL_ETOOBIG);
    T_OK(queue_forward(t, id, lease, "b", j.pri));
    T_ERR(queue_forward(t, id, lease, "b", 7), PL_ELEASE);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    QueueStats sa, sb;
    T_OK(queue_stats(t, "a", &sa));
    T_OK(queue_stats(t, "b", &sb));
    T_EQ(sa.ready + sa.reserved + sa.delayed + sa.buried, 0);
    T_EQ(sa.acks, 1);
    T_EQ(sb.ready, 2);
    T_EQ(sb.puts, 2);
    /* Its key stays with its old queue, retained: a retry adds nothing. */
    uint64_t again;
    int existed = 0;
    T_OK(queue_put(t, "a", &a, &again, &existed));
    T_EQ(existed, 2);
    T_EQ(again, id);
    /* In b it starts afresh with its body intact, at the priority it was
     * given (its own, 7): the job already there at 0 goes first. */
    T_OK(queue_reserve(t, "b", 0, &j));
    T_EQ(j.id, other);
    T_OK(queue_reserve(t, "b", 0, &j));
    T_EQ(j.id, id);
    T_EQ(j.attempts, 1);
    T_EQ(j.pri, 7);
    T_CHECK(j.len == 7 && memcmp(j.body, "{\"k\":1}", 7) == 0);
    T_CHECK(j.keylen == 0);
    T_OK(store_txn_commit(t));
    store_close(s);
}

/* queue_set_body: an operator's fix of a body, refused while reserved. */
static void set_body(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    QueueConf small;
    queue_conf_default(&small);
    small.max_body = 16;
    T_OK(queue_create(t, "q", &small));
    PutArgs a = {.pri = 5, .body = "{\"a\":1}", .len = 7, .key = "k", .keylen = 1};
    uint64_t id, other;
    T_OK(queue_put(t, "q", &a, &id, NULL));
    other = put(t, "q", 9, "{\"b\":2}");
    T_OK(queue_set_body(t, id, "{\"a\":22}", 8));
    T_ERR(queue_set_body(t, id, "{\"a\":\"far too long\"}", 21), PL_ETOOBIG);
    T_ERR(queue_set_body(t, 424242, "{}", 2), PL_ENOJOB);
    Job j;
    T_OK(queue_get(t, id, &j));
    T_CHECK(j.len == 8 && memcmp(j.body, "{\"a\":22}", 8) == 0);
    T_EQ(j.pri, 5);
    T_CHECK(j.keylen == 1 && j.key[0] == 'k');
    T_OK(queue_reserve(t, "q", 0, &j));
    T_EQ(j.id, id);
    T_ERR(queue_set_body(t, id, "{}", 2), PL_ESTATE);
    T_OK(queue_set_body(t, other, "{}", 2));
    T_OK(store_txn_commit(t));
    store_close(s);
}

/* A held job (ready on disk) may be edited; the end of the hold that
 * worked the old body then writes nothing, whichever end it is, and the
 * job is held again with the new body (and that hold ends well). The
 * priority travels with a held forward. */
static void set_body_of_a_held_job(void)
{
    Store *s = ts_open(NULL);
    Txn *t = ts_wbegin(s);
    T_OK(queue_create(t, "q", NULL));
    T_OK(queue_create(t, "next", NULL));
    uint64_t id = put(t, "q", 5, "{\"a\":1}");
    Job js[4];
    size_t got = 0;
    T_OK(queue_hold_n(t, "q", 4, 0, NULL, NULL, js, &got));
    T_EQ(got, 1);
    T_EQ(js[0].id, id);
    T_EQ(js[0].pri, 5);
    uint32_t qid = js[0].qid;
    char old[16];
    size_t oldlen = js[0].len;
    memcpy(old, js[0].body, oldlen);
    T_OK(queue_set_body(t, id, "{\"a\":2}", 7));
    T_ERR(queue_held_ack(t, id, qid, old, oldlen), PL_ELEASE);
    T_ERR(queue_held_forward(t, id, qid, old, oldlen, "next", 3), PL_ELEASE);
    T_ERR(queue_held_release(t, id, qid, old, oldlen, 0, "failed", NULL), PL_ELEASE);
    T_ERR(queue_held_bury(t, id, qid, old, oldlen, "bad"), PL_ELEASE);
    Job j;
    T_OK(queue_get(t, id, &j));
    T_EQ(j.state, JOB_READY);
    T_EQ(j.attempts, 0);
    T_CHECK(j.len == 7 && memcmp(j.body, "{\"a\":2}", 7) == 0);
    T_OK(queue_hold_n(t, "q", 4, 0, NULL, NULL, js, &got));
    T_EQ(got, 1);
    T_CHECK(js[0].len == 7 && memcmp(js[0].body, "{\"a\":2}", 7) == 0);
    T_OK(queue_held_forward(t, id, qid, "{\"a\":2}", 7, "next", 3));
    T_OK(queue_get(t, id, &j));
    T_CHECK(strcmp(j.queue, "next") == 0);
    T_EQ(j.pri, 3);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static const TCase cases[] = {
    T_CASE(put_reserve_ack),
    T_CASE(priority_then_fifo),
    T_CASE(delay_promotes),
    T_CASE(lease_expiry_and_stale_token),
    T_CASE(max_attempts_buries),
    T_CASE(release_delay_and_backoff),
    T_CASE(backoff_doubles_to_its_ceiling),
    T_CASE(release_past_max_attempts_buries),
    T_CASE(touch_extends),
    T_CASE(bury_and_kick),
    T_CASE(idempotency_key),
    T_CASE(key_retention_sweep),
    T_CASE(batch_reserve_n_ack_n),
    T_CASE(reserve_n_bodies_intact),
    T_CASE(pause_resume),
    T_CASE(peek_and_purge),
    T_CASE(body_limit_and_bad_names),
    T_CASE(survives_reopen),
    T_CASE(map_grows),
    T_CASE(headroom_keeps_acks_working),
    T_CASE(full_disk_refuses_puts_not_acks),
    T_CASE(not_a_data_dir),
    T_CASE(two_processes_one_queue),
    T_CASE(read_only_store_refuses_writes),
    T_CASE(compact_copy),
    T_CASE(forward_in_place),
    T_CASE(set_body),
    T_CASE(set_body_of_a_held_job),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "queue", cases);
}
