/* test_staging.c: batches and rejects of engine/data/staging.c on a real LMDB
 * environment, with a fake clock for the seal timer. */
#include "t.h"
#include "t_store.h"
#include "pl.h"
#include "queue.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <stdlib.h>
#include <string.h>

/* row packs {"n": n, "s": s} into b. */
static void row(msgpack_sbuffer *b, int n, const char *s)
{
    char json[256];
    snprintf(json, sizeof json, "{\"n\":%d,\"s\":\"%s\"}", n, s);
    msgpack_sbuffer_clear(b);
    T_OK(row_from_json_object(json, strlen(json), b, NULL, 0));
}

static const SealPolicy no_limits = {0, 0, UINT64_MAX, 1.0};

/* append_rows appends count rows {"n": 0.., "s": str} to model under
 * policy p; *br is the batch the last one went to. */
static void append_rows(Txn *t, const char *model, int count, const char *str,
                        const SealPolicy *p, BatchRec *br)
{
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    for (int i = 0; i < count; i++) {
        row(&b, i, str);
        T_OK(staging_append(t, model, 0, b.data, b.size, p, br));
    }
    msgpack_sbuffer_destroy(&b);
}

typedef struct Seen {
    uint32_t seqs[64];
    int ns[64];
    size_t n;
} Seen;

static int collect(uint32_t seq, const void *mp, size_t len, void *arg)
{
    Seen *s = arg;
    RowView v;
    T_OK(row_view(&v, mp, len));
    const msgpack_object *n = row_field(&v.root, "n");
    T_CHECK(n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    s->seqs[s->n] = seq;
    s->ns[s->n] = (int)n->via.u64;
    s->n++;
    row_view_free(&v);
    return 0;
}

/* A batch holds rows of one model version: within one transaction (the
 * open batch's record cached by staging_append) a row of another version
 * seals the open batch first, and every record written (the sealed one,
 * the next open one) carries its version, read back after the commit. */
static void versions_seal_in_one_txn(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    BatchRec b1, b2, got;
    for (int i = 0; i < 3; i++) {
        row(&b, i, "v1");
        T_OK(staging_append(t, "users", 11, b.data, b.size, &no_limits, &b1));
    }
    T_EQ(b1.version, 11);
    T_EQ(b1.rows, 3);
    row(&b, 3, "v2");
    T_OK(staging_append(t, "users", 22, b.data, b.size, &no_limits, &b2));
    T_CHECK(b2.id != b1.id);
    T_EQ(b2.version, 22);
    T_EQ(b2.rows, 1);
    T_EQ(b2.state, BATCH_OPEN);
    /* read in the same transaction: the cache is written back first */
    T_OK(batch_get(t, b1.id, &got));
    T_EQ(got.state, BATCH_SEALED);
    T_EQ(got.version, 11);
    T_EQ(got.rows, 3);
    row(&b, 4, "v2");
    T_OK(staging_append(t, "users", 22, b.data, b.size, &no_limits, &b2));
    T_EQ(b2.rows, 2);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    T_OK(batch_get(t, b2.id, &got));
    T_EQ(got.state, BATCH_OPEN);
    T_EQ(got.version, 22);
    T_EQ(got.rows, 2);
    /* the next transaction's first row of the same version joins it; one
     * of another (0: not recorded) seals it */
    row(&b, 5, "v2");
    T_OK(staging_append(t, "users", 22, b.data, b.size, &no_limits, &got));
    T_EQ(got.id, b2.id);
    T_EQ(got.rows, 3);
    row(&b, 6, "v0");
    T_OK(staging_append(t, "users", 0, b.data, b.size, &no_limits, &got));
    T_CHECK(got.id != b2.id);
    T_EQ(got.version, 0);
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    T_OK(batch_get(t, b2.id, &got));
    T_EQ(got.state, BATCH_SEALED);
    T_EQ(got.version, 22);
    T_EQ(got.rows, 3);
    store_txn_abort(t);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

static void append_and_read(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    BatchRec br;
    append_rows(t, "users", 5, "x", &no_limits, &br);
    T_EQ(br.rows, 5);
    T_EQ(br.state, BATCH_OPEN);
    uint64_t users = br.id;
    row(&b, 100, "t");
    T_OK(staging_append(t, "tenants", 0, b.data, b.size, &no_limits, &br));
    T_CHECK(br.id != users);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    Seen seen = {0};
    T_OK(batch_rows(t, users, 0, 0, collect, &seen));
    T_EQ(seen.n, 5);
    for (size_t i = 0; i < 5; i++) {
        T_EQ(seen.seqs[i], i);
        T_EQ(seen.ns[i], (int)i);
    }
    /* from and max page through. */
    Seen page = {0};
    T_OK(batch_rows(t, users, 2, 2, collect, &page));
    T_EQ(page.n, 2);
    T_EQ(page.seqs[0], 2);
    T_EQ(page.seqs[1], 3);
    /* The other model's rows are not mixed in. */
    Seen ten = {0};
    T_OK(batch_rows(t, br.id, 0, 0, collect, &ten));
    T_EQ(ten.n, 1);
    T_EQ(ten.ns[0], 100);
    store_txn_abort(t);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

typedef struct IdList {
    uint64_t ids[8];
    size_t n;
} IdList;

static int each(const BatchRec *x, void *arg)
{
    IdList *l = arg;
    l->ids[l->n++] = x->id;
    return 0;
}

static void seal_by_rows_and_time(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    SealPolicy p = {3, 5.0, UINT64_MAX, 1.0};
    Txn *t = ts_wbegin(s);
    BatchRec br;
    uint64_t first = 0;
    for (int i = 0; i < 7; i++) {
        row(&b, i, "x");
        T_OK(staging_append(t, "users", 0, b.data, b.size, &p, &br));
        if (i == 0)
            first = br.id;
        if (i == 2 || i == 5)
            T_EQ(br.state, BATCH_SEALED);
        else
            T_EQ(br.state, BATCH_OPEN);
    }
    T_OK(store_txn_commit(t));
    /* Row 7 opened a third batch; it is not due before 5 s. */
    uint64_t sealed = 99;
    t = ts_wbegin(s);
    T_OK(staging_seal_due(t, NULL, &p, 0, &sealed));
    T_EQ(sealed, 0);
    T_OK(store_txn_commit(t));
    ts_now += 5000;
    t = ts_wbegin(s);
    T_OK(staging_seal_due(t, "users", &p, 0, &sealed));
    T_EQ(sealed, br.id);
    T_OK(batch_get(t, br.id, &br));
    T_EQ(br.state, BATCH_SEALED);
    T_EQ(br.rows, 1);
    T_EQ(br.sealed_ms, ts_now);
    /* An empty model: nothing to seal, no error. */
    T_OK(staging_seal_due(t, "nobody", &p, 1, &sealed));
    T_EQ(sealed, 0);
    T_OK(store_txn_commit(t));

    /* Listing by state, in id order. */
    t = ts_wbegin(s);
    IdList l = {{0}, 0};
    T_OK(batch_each(t, BATCH_SEALED, each, &l));
    T_EQ(l.n, 3);
    T_EQ(l.ids[0], first);
    T_CHECK(l.ids[0] < l.ids[1] && l.ids[1] < l.ids[2]);
    store_txn_abort(t);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

static void hold_on_rejects(void)
{
    Store *s = ts_open(NULL);
    SealPolicy count = {4, 0, 1, 1.0};
    Txn *t = ts_wbegin(s);
    BatchRec br;
    T_OK(staging_note_reject(t, "users"));
    T_OK(staging_note_reject(t, "users"));
    append_rows(t, "users", 4, "x", &count, &br);
    T_EQ(br.state, BATCH_HELD);
    T_EQ(br.rejects, 2);
    T_CHECK(strstr(br.error, "qctl batches release") != NULL);
    /* The rate: 1 of 5 is 20%, over 10%. */
    SealPolicy rate = {4, 0, UINT64_MAX, 0.10};
    T_OK(staging_note_reject(t, "users"));
    append_rows(t, "users", 4, "y", &rate, &br);
    T_EQ(br.state, BATCH_HELD);
    T_CHECK(strstr(br.error, "20.0%") != NULL);
    /* Under the rate: sealed. */
    SealPolicy lax = {4, 0, UINT64_MAX, 0.5};
    T_OK(staging_note_reject(t, "users"));
    append_rows(t, "users", 4, "z", &lax, &br);
    T_EQ(br.state, BATCH_SEALED);
    T_OK(store_txn_commit(t));
    store_close(s);
}

static void row_reject_and_drop(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    BatchRec br;
    append_rows(t, "users", 6, "q\\\"uo,te", &no_limits, &br);
    uint64_t sealed;
    T_OK(staging_seal_due(t, "users", &no_limits, 1, &sealed));
    T_EQ(sealed, br.id);
    uint64_t rid;
    T_OK(batch_row_reject(t, br.id, 3, "3", "new row violates check constraint \"n_small\"", &rid));
    T_ERR(batch_row_reject(t, br.id, 3, "3", "again", &rid), PL_ENOBATCH);
    uint64_t rid2;
    T_OK(batch_row_reject(t, br.id, 5, NULL, "no key to name it by", &rid2));
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    T_OK(batch_get(t, br.id, &br));
    T_EQ(br.rows, 6);
    T_EQ(br.removed, 2);
    Seen seen = {0};
    T_OK(batch_rows(t, br.id, 0, 0, collect, &seen));
    T_EQ(seen.n, 4);
    T_EQ(seen.seqs[3], 4);
    RejectRead r;
    T_OK(reject_get(t, rid, &r));
    T_CHECK(strcmp(r.model, "users") == 0);
    T_CHECK(strcmp(r.key, "3") == 0);
    T_CHECK(strcmp(r.stage, "qload") == 0);
    RejectRead r2;
    T_OK(reject_get(t, rid2, &r2));
    char where[64];
    snprintf(where, sizeof where, "batch %llu row 5", (unsigned long long)br.id);
    T_CHECK(strcmp(r2.key, where) == 0);
    /* An operator's fix of its row (qctl edit --reject): row and key
     * change, the rest stays. */
    row(&b, 55, "fixed");
    T_OK(reject_set_row(t, rid2, b.data, b.size, "55"));
    T_OK(reject_get(t, rid2, &r2));
    T_CHECK(strcmp(r2.key, "55") == 0 && strcmp(r2.stage, "qload") == 0);
    T_EQ(r2.r.batch, br.id);
    T_CHECK(r2.r.row_len == b.size && memcmp(r2.r.row, b.data, b.size) == 0);
    T_CHECK(memmem(r2.r.errors, r2.r.errors_len, "no key to name it by", 20));
    T_ERR(reject_set_row(t, 999999, b.data, b.size, NULL), PL_ENOREJECT);
    T_EQ(r.r.batch, br.id);
    T_CHECK(r.r.errors_len > 0 && memmem(r.r.errors, r.r.errors_len, "n_small", 7));
    Strbuf js;
    sb_init(&js);
    T_OK(row_to_json(r.r.row, r.r.row_len, &js));
    T_CHECK(strcmp(js.buf, "{\"n\":3,\"s\":\"q\\\"uo,te\"}") == 0);
    sb_free(&js);

    /* Replay a qload reject: appended to the model's open batch. */
    uint64_t job = 7;
    T_OK(reject_replay(t, rid, NULL, 0, 0, &job));
    T_EQ(job, 0);
    T_ERR(reject_get(t, rid, &r), PL_ENOREJECT);
    BatchRec open;
    T_OK(staging_append(t, "users", 0, b.data, b.size, &no_limits, &open));
    T_CHECK(open.id != br.id);
    T_EQ(open.rows, 2);

    /* Drop the loaded batch's rows in chunks. */
    int more = 0;
    T_OK(batch_drop_rows(t, br.id, 2, &more));
    T_EQ(more, 1);
    T_OK(batch_drop_rows(t, br.id, 0, &more));
    T_EQ(more, 0);
    Seen none = {0};
    T_OK(batch_rows(t, br.id, 0, 0, collect, &none));
    T_EQ(none.n, 0);
    /* The open batch's rows are untouched. */
    Seen still = {0};
    T_OK(batch_rows(t, open.id, 0, 0, collect, &still));
    T_EQ(still.n, 2);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

static int count_rows(uint32_t seq, const void *mp, size_t len, void *arg)
{
    (void)seq, (void)mp, (void)len;
    (*(size_t *)arg)++;
    return 0;
}

/* Dropping walks many pages with one seek: every row of the batch goes,
 * the neighbours' rows stay. */
static void drop_many_pages(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    BatchRec a, c;
    for (int i = 0; i < 6000; i++) {
        row(&b, i, "a longer value so that the rows fill a good many pages of the tree");
        T_OK(staging_append(t, "users", 0, b.data, b.size, &no_limits, &a));
        T_OK(staging_append(t, "tenants", 0, b.data, b.size, &no_limits, &c));
    }
    T_OK(store_txn_commit(t));
    t = ts_wbegin(s);
    int more = 1;
    T_OK(batch_drop_rows(t, a.id, 1000, &more));
    T_EQ(more, 1);
    size_t n = 0;
    T_OK(batch_rows(t, a.id, 0, 0, count_rows, &n));
    T_EQ(n, 5000);
    T_OK(batch_drop_rows(t, a.id, 0, &more));
    T_EQ(more, 0);
    n = 0;
    T_OK(batch_rows(t, a.id, 0, 0, count_rows, &n));
    T_EQ(n, 0);
    n = 0;
    T_OK(batch_rows(t, c.id, 0, 0, count_rows, &n));
    T_EQ(n, 6000);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}


static void forget_loaded_only(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    BatchRec br;
    row(&b, 1, "x");
    T_OK(staging_append(t, "users", 0, b.data, b.size, &no_limits, &br));
    uint64_t sealed;
    T_OK(staging_seal_due(t, "users", &no_limits, 1, &sealed));
    T_ERR(batch_forget(t, sealed), PL_ESTATE);
    T_ERR(batch_forget(t, sealed + 100), PL_ENOBATCH);
    T_OK(batch_get(t, sealed, &br));
    br.state = BATCH_LOADED;
    T_OK(batch_save(t, &br));
    T_OK(batch_forget(t, sealed));
    T_ERR(batch_get(t, sealed, &br), PL_ENOBATCH);
    size_t n = 0;
    T_OK(batch_rows(t, sealed, 0, 0, count_rows, &n));
    T_EQ(n, 0);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}


static int count_rejects(const RejectRead *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

static void body_ref(const void *json, size_t n, StagedRef *ref);

static void reject_replay_to_queue(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    row(&b, 1, "bad");
    const char *errs = "[{\"field\":\"n\",\"rule\":\"min\",\"message\":\"n must be at least 5\"}]";
    const char *job = "{\"model\":\"users\",\"key\":\"1\"}";
    Txn *t = ts_wbegin(s);
    RejectRec r = {0};
    r.model = "users";
    r.key = "1";
    r.stage = "validate";
    r.queue = "validate";
    r.row = b.data;
    r.row_len = b.size;
    r.errors = errs;
    r.errors_len = strlen(errs);
    r.job = job;
    r.job_len = strlen(job);
    uint64_t rid, other;
    T_OK(reject_add(t, &r, &rid));
    r.model = "tenants";
    T_OK(reject_add(t, &r, &other));
    T_CHECK(other > rid);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    int n = 0;
    T_OK(reject_each(t, "users", count_rejects, &n));
    T_EQ(n, 1);
    n = 0;
    T_OK(reject_each(t, NULL, count_rejects, &n));
    T_EQ(n, 2);
    /* Replay with a fixed row: the row is staged as a new instance and the
     * job that goes back names it. */
    msgpack_sbuffer fixed;
    msgpack_sbuffer_init(&fixed);
    row(&fixed, 9, "fixed");
    uint64_t jid = 0;
    T_OK(reject_replay(t, rid, fixed.data, fixed.size, 0, &jid));
    T_CHECK(jid != 0);
    Job j;
    T_OK(queue_get(t, jid, &j));
    T_CHECK(strcmp(j.queue, "validate") == 0);
    StagedRef ref;
    body_ref(j.body, j.len, &ref);
    T_CHECK(strcmp(ref.model, "users") == 0 && strcmp(ref.key, "1") == 0 && ref.row != 0);
    const void *mp;
    size_t len;
    uint32_t refs;
    T_OK(staging_row_get(t, "users", "1", ref.row, &mp, &len, &refs));
    T_CHECK(len == fixed.size && memcmp(mp, fixed.data, fixed.size) == 0);
    T_EQ(refs, 1);
    T_ERR(staging_row_get(t, "users", "1", 0, &mp, &len, NULL), PL_ENOROW);
    T_ERR(reject_replay(t, rid, NULL, 0, 0, &jid), PL_ENOREJECT);
    T_OK(reject_del(t, other));
    T_ERR(reject_del(t, other), PL_ENOREJECT);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&fixed);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

/* ---------------------------------------------------------------- staged rows */

/* body_ref parses the reference in a job body (JSON). */
static void body_ref(const void *json, size_t n, StagedRef *ref)
{
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    T_OK(row_from_json_object(json, n, &mp, NULL, 0));
    RowView v;
    T_OK(row_view(&v, mp.data, mp.size));
    T_OK(staging_ref_parse(&v.root, ref));
    row_view_free(&v);
    msgpack_sbuffer_destroy(&mp);
}

/* field_n returns field "n" of the row in mp, or -1. */
static int field_n(const void *mp, size_t len)
{
    RowView v;
    T_OK(row_view(&v, mp, len));
    const msgpack_object *n = row_field(&v.root, "n");
    int r = n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int)n->via.u64 : -1;
    row_view_free(&v);
    return r;
}

typedef struct Counts {
    StagedCount c[8];
    size_t n;
} Counts;

static int counts_add(const StagedCount *c, void *arg)
{
    Counts *cs = arg;
    T_CHECK(cs->n < 8);
    cs->c[cs->n++] = *c;
    return 0;
}

static Counts count_staged(Txn *t)
{
    Counts cs;
    memset(&cs, 0, sizeof cs);
    T_OK(staging_row_count(t, counts_add, &cs));
    return cs;
}

/* Every landing of a key is its own instance: two jobs of one key never
 * share a row, and the last reference deletes it. */
static void staged_rows_are_instances(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    Txn *t = ts_wbegin(s);
    uint64_t a, c, d;
    row(&b, 1, "a");
    T_OK(staging_row_new(t, "users", "7", b.data, b.size, 1, &a));
    row(&b, 2, "c");
    T_OK(staging_row_new(t, "users", "7", b.data, b.size, 1, &c));
    row(&b, 3, "d");
    T_OK(staging_row_new(t, "tenants", "7", b.data, b.size, 2, &d));
    T_CHECK(a != 0 && c != a && d != c && d != a);
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    const void *mp;
    size_t len;
    uint32_t refs = 99;
    T_OK(staging_row_get(t, "users", "7", a, &mp, &len, &refs));
    T_EQ(field_n(mp, len), 1);
    T_EQ(refs, 1);
    T_OK(staging_row_get(t, "users", "7", c, &mp, &len, &refs));
    T_EQ(field_n(mp, len), 2);
    T_ERR(staging_row_get(t, "users", "7", d, &mp, &len, NULL), PL_ENOROW);
    T_ERR(staging_row_get(t, "users", "8", a, &mp, &len, NULL), PL_ENOROW);
    T_ERR(staging_row_get(t, "users", "7", 0, &mp, &len, NULL), PL_ENOROW);
    Counts cs = count_staged(t);
    T_EQ(cs.n, 2);
    T_CHECK(strcmp(cs.c[0].model, "tenants") == 0 && strcmp(cs.c[1].model, "users") == 0);
    T_EQ(cs.c[0].rows, 1);
    T_EQ(cs.c[0].refs, 2);
    T_EQ(cs.c[1].rows, 2);
    T_EQ(cs.c[1].refs, 2);
    T_EQ(cs.c[1].legacy, 0);

    /* put replaces one instance's row, keeping its references. */
    row(&b, 10, "a2");
    T_OK(staging_row_put(t, "users", "7", a, b.data, b.size));
    T_OK(staging_row_get(t, "users", "7", a, &mp, &len, &refs));
    T_EQ(field_n(mp, len), 10);
    T_EQ(refs, 1);
    T_OK(staging_row_get(t, "users", "7", c, &mp, &len, NULL));
    T_EQ(field_n(mp, len), 2);
    T_ERR(staging_row_put(t, "users", "7", 12345, b.data, b.size), PL_ENOROW);

    /* merge sets fields of that instance only. */
    const char *src = "{\"lat\":52.5,\"x\":1}";
    msgpack_sbuffer sm;
    msgpack_sbuffer_init(&sm);
    T_OK(row_from_json_object(src, strlen(src), &sm, NULL, 0));
    const char *from[] = {"lat", "nope"}, *to[] = {"latitude", "nope"};
    T_OK(staging_row_merge(t, "users", "7", c, sm.data, sm.size, from, to, 2));
    T_OK(staging_row_get(t, "users", "7", c, &mp, &len, NULL));
    Strbuf js;
    sb_init(&js);
    T_OK(row_to_json(mp, len, &js));
    T_CHECK(strcmp(js.buf, "{\"n\":2,\"s\":\"c\",\"latitude\":52.5}") == 0);
    T_OK(staging_row_get(t, "users", "7", a, &mp, &len, NULL));
    sb_reset(&js);
    T_OK(row_to_json(mp, len, &js));
    T_CHECK(strcmp(js.buf, "{\"n\":10,\"s\":\"a2\"}") == 0);
    T_ERR(staging_row_merge(t, "users", "7", 999, sm.data, sm.size, from, to, 2), PL_ENOROW);

    /* A reference more, then the drops: the last one deletes. */
    int deleted = -1;
    T_OK(staging_row_hold(t, "users", "7", a, 2));
    T_OK(staging_row_get(t, "users", "7", a, &mp, &len, &refs));
    T_EQ(refs, 3);
    T_EQ(field_n(mp, len), 10);
    T_OK(staging_row_drop(t, "users", "7", a, &deleted));
    T_EQ(deleted, 0);
    T_OK(staging_row_drop(t, "users", "7", a, &deleted));
    T_EQ(deleted, 0);
    T_OK(staging_row_get(t, "users", "7", a, &mp, &len, &refs));
    T_EQ(refs, 1);
    T_OK(staging_row_drop(t, "users", "7", a, &deleted));
    T_EQ(deleted, 1);
    T_ERR(staging_row_get(t, "users", "7", a, &mp, &len, NULL), PL_ENOROW);
    T_ERR(staging_row_drop(t, "users", "7", a, &deleted), PL_ENOROW);
    T_OK(staging_row_get(t, "users", "7", c, &mp, &len, NULL)); /* the other job's row stays */
    T_OK(staging_row_drop(t, "users", "7", c, NULL));
    T_OK(staging_row_del(t, "tenants", "7", d));
    T_ERR(staging_row_del(t, "tenants", "7", d), PL_ENOROW);
    T_OK(store_txn_commit(t));

    /* Nothing left: the store holds only rows in flight. */
    T_OK(store_txn_begin(s, 0, &t));
    cs = count_staged(t);
    T_EQ(cs.n, 0);
    store_txn_abort(t);

    /* Ids are never reused, even after the rows are gone. */
    t = ts_wbegin(s);
    uint64_t e;
    T_OK(staging_row_new(t, "users", "7", b.data, b.size, 1, &e));
    T_CHECK(e > d && e > c);
    T_OK(store_txn_commit(t));
    sb_free(&js);
    msgpack_sbuffer_destroy(&sm);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

/* A row staged by a pickline before instances, under (model, 0, key):
 * read and merged through row 0, counted apart, never deleted by a drop. */
static void staged_rows_legacy(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    row(&b, 5, "old");
    Txn *t = ts_wbegin(s);
    MDB_val k = {strlen("users") + 1 + 2, "users\0" "42"}, v = {b.size, b.data};
    T_OK(mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &k, &v, 0));
    uint64_t inst;
    T_OK(staging_row_new(t, "users", "42", b.data, b.size, 1, &inst));
    T_OK(store_txn_commit(t));

    t = ts_wbegin(s);
    const void *mp;
    size_t len;
    uint32_t refs = 7;
    T_OK(staging_row_get(t, "users", "42", 0, &mp, &len, &refs));
    T_EQ(field_n(mp, len), 5);
    T_EQ(refs, 0);
    const char *src = "{\"n\":6}";
    msgpack_sbuffer sm;
    msgpack_sbuffer_init(&sm);
    T_OK(row_from_json_object(src, strlen(src), &sm, NULL, 0));
    const char *f[] = {"n"};
    T_OK(staging_row_merge(t, "users", "42", 0, sm.data, sm.size, f, f, 1));
    T_OK(staging_row_get(t, "users", "42", 0, &mp, &len, NULL));
    T_EQ(field_n(mp, len), 6);
    T_OK(staging_row_get(t, "users", "42", inst, &mp, &len, NULL)); /* the instance: as it was */
    T_EQ(field_n(mp, len), 5);
    int deleted = -1;
    T_OK(staging_row_hold(t, "users", "42", 0, 3));
    T_OK(staging_row_drop(t, "users", "42", 0, &deleted));
    T_EQ(deleted, 0);
    T_OK(staging_row_get(t, "users", "42", 0, &mp, &len, NULL));
    Counts cs = count_staged(t);
    T_EQ(cs.n, 1);
    T_EQ(cs.c[0].rows, 1);
    T_EQ(cs.c[0].legacy, 1);
    /* put of row 0 writes the legacy row, created if missing (a replay of old). */
    T_OK(staging_row_put(t, "users", "43", 0, b.data, b.size));
    T_OK(staging_row_get(t, "users", "43", 0, &mp, &len, NULL));
    T_OK(staging_row_del(t, "users", "42", 0));
    T_ERR(staging_row_get(t, "users", "42", 0, &mp, &len, NULL), PL_ENOROW);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&sm);
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

/* What cannot be staged is refused, and nothing is written; a damaged
 * record is named as such. */
static void staged_rows_refused(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    row(&b, 1, "x");
    char longkey[STAGING_KEY_MAX + 2], longmodel[STAGING_MODEL_MAX + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    memset(longmodel, 'm', sizeof longmodel - 1);
    longmodel[sizeof longmodel - 1] = '\0';
    Txn *t = ts_wbegin(s);
    uint64_t id;
    T_ERR(staging_row_new(t, "", "1", b.data, b.size, 1, &id), PL_EINVAL);
    T_ERR(staging_row_new(t, "\x01users", "1", b.data, b.size, 1, &id), PL_EINVAL);
    T_ERR(staging_row_new(t, "\x02users", "1", b.data, b.size, 1, &id), PL_EINVAL);
    T_ERR(staging_row_new(t, "users", longkey, b.data, b.size, 1, &id), PL_EINVAL);
    T_ERR(staging_row_new(t, longmodel, "1", b.data, b.size, 1, &id), PL_EINVAL);
    T_ERR(staging_row_new(t, "users", "1", b.data, b.size, 0, &id), PL_EINVAL);
    longkey[STAGING_KEY_MAX] = '\0'; /* the longest key: fine */
    T_OK(staging_row_new(t, "users", longkey, b.data, b.size, 1, &id));
    Counts cs = count_staged(t);
    T_EQ(cs.n, 1);
    T_EQ(cs.c[0].rows, 1);
    /* A damaged instance record. */
    unsigned char kb[16] = "users\0" "9\0";
    pl_put_be64(kb + 8, 77);
    MDB_val k = {16, kb}, v = {3, "\x93\x01\x00"};
    T_OK(mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &k, &v, 0));
    const void *mp;
    size_t len;
    T_ERR(staging_row_get(t, "users", "9", 77, &mp, &len, NULL), PL_ECORRUPT);
    T_ERR(staging_row_drop(t, "users", "9", 77, NULL), PL_ECORRUPT);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&b);
    store_close(s);
}

/* The reference body: written and read back; a legacy one has no row_id. */
static void staged_refs_round_trip(void)
{
    Strbuf js;
    sb_init(&js);
    staging_ref_json(&js, "users", "3/a\"b", 42);
    T_CHECK(strcmp(js.buf, "{\"model\":\"users\",\"key\":\"3/a\\\"b\",\"row_id\":42}") == 0);
    StagedRef r;
    body_ref(js.buf, js.len, &r);
    T_CHECK(strcmp(r.model, "users") == 0 && strcmp(r.key, "3/a\"b") == 0);
    T_EQ(r.row, 42);
    sb_reset(&js);
    staging_ref_json(&js, "users", "7", 0);
    T_CHECK(strcmp(js.buf, "{\"model\":\"users\",\"key\":\"7\"}") == 0);
    body_ref(js.buf, js.len, &r);
    T_EQ(r.row, 0);
    const char *bad[] = {"{\"model\":\"users\",\"key\":\"7\",\"row_id\":0}",
                         "{\"model\":\"users\",\"key\":\"7\",\"row_id\":-3}",
                         "{\"model\":\"users\",\"key\":\"7\",\"row_id\":\"5\"}",
                         "{\"model\":\"users\",\"key\":\"7\",\"row_id\":1.5}",
                         "{\"key\":\"7\"}", "{\"model\":\"users\"}", "{\"model\":\"\",\"key\":\"7\"}",
                         "{\"model\":\"users\",\"key\":\"a\\u0000b\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msgpack_sbuffer mp;
        msgpack_sbuffer_init(&mp);
        T_OK(row_from_json_object(bad[i], strlen(bad[i]), &mp, NULL, 0));
        RowView v;
        T_OK(row_view(&v, mp.data, mp.size));
        if (staging_ref_parse(&v.root, &r) != PL_EINVAL)
            t_fail(__FILE__, __LINE__, "a reference: %s", bad[i]);
        row_view_free(&v);
        msgpack_sbuffer_destroy(&mp);
    }
    sb_free(&js);
}

/* A replay of an inline job carries the fixed row inline; a job that is
 * not about a staged row goes back as it was, and nothing is staged. */
static void reject_replay_inline_and_other(void)
{
    Store *s = ts_open(NULL);
    msgpack_sbuffer b, fixed;
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&fixed);
    row(&b, 1, "bad");
    row(&fixed, 2, "fixed");
    const char *errs = "[]";
    const char *inl = "{\"model\":\"users\",\"row\":{\"n\":1,\"s\":\"bad\"}}";
    const char *notice = "{\"table\":\"users\",\"key\":{\"id\":1}}";
    Txn *t = ts_wbegin(s);
    RejectRec r = {.model = "users", .key = "", .stage = "v", .queue = "validate", .row = b.data,
                   .row_len = b.size, .errors = errs, .errors_len = 2, .job = inl,
                   .job_len = strlen(inl)};
    uint64_t r1, r2, j1, j2;
    T_OK(reject_add(t, &r, &r1));
    r.job = notice;
    r.job_len = strlen(notice);
    T_OK(reject_add(t, &r, &r2));
    T_OK(reject_replay(t, r1, fixed.data, fixed.size, 0, &j1));
    T_OK(reject_replay(t, r2, NULL, 0, 0, &j2));
    Job j;
    T_OK(queue_get(t, j1, &j));
    const char *want = "{\"model\":\"users\",\"row\":{\"n\":2,\"s\":\"fixed\"}}";
    T_CHECK(j.len == strlen(want) && memcmp(j.body, want, j.len) == 0);
    T_OK(queue_get(t, j2, &j));
    T_CHECK(j.len == strlen(notice) && memcmp(j.body, notice, j.len) == 0);
    Counts cs = count_staged(t);
    T_EQ(cs.n, 0);
    T_OK(store_txn_commit(t));
    msgpack_sbuffer_destroy(&b);
    msgpack_sbuffer_destroy(&fixed);
    store_close(s);
}

static void uuid_stable(void)
{
    Store *s = ts_open(NULL);
    char a[33], c[33];
    Txn *t = ts_wbegin(s);
    T_OK(staging_uuid(t, a));
    T_EQ(strlen(a), 32);
    T_OK(store_txn_commit(t));
    T_OK(store_txn_begin(s, 0, &t));
    T_OK(staging_uuid(t, c));
    store_txn_abort(t);
    T_CHECK(strcmp(a, c) == 0);
    store_close(s);
    /* Another store has another identity. */
    StoreOpts d = {.create = 1};
    char dir[512];
    snprintf(dir, sizeof dir, "%s/other", t_dir());
    T_OK(store_open(dir, &d, &s));
    t = ts_wbegin(s);
    T_OK(staging_uuid(t, c));
    T_OK(store_txn_commit(t));
    T_CHECK(strcmp(a, c) != 0);
    store_close(s);
}

static void states_named(void)
{
    for (int i = BATCH_OPEN; i <= BATCH_FAILED; i++)
        T_EQ(batch_state_parse(batch_state_name(i)), i);
    T_EQ(batch_state_parse("bogus"), -1);
    T_CHECK(strcmp(batch_state_name(BATCH_HELD), "held") == 0);
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(append_and_read), T_CASE(versions_seal_in_one_txn), T_CASE(seal_by_rows_and_time), T_CASE(hold_on_rejects),
        T_CASE(row_reject_and_drop), T_CASE(reject_replay_to_queue), T_CASE(uuid_stable),
        T_CASE(states_named), T_CASE(drop_many_pages), T_CASE(forget_loaded_only),
        T_CASE(staged_rows_are_instances), T_CASE(staged_rows_legacy), T_CASE(staged_rows_refused),
        T_CASE(staged_refs_round_trip), T_CASE(reject_replay_inline_and_other), {NULL, NULL},
    };
    return t_main(argc, argv, "staging", cases);
}
