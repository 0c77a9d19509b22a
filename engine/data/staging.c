/* staging.c: batches of staged rows and rejects (the layout is in staging.h;
 * the staged row instances are in staging_rows.c).
 *
 * Records are msgpack arrays led by a format version, like rec.c's:
 *   batch  [1, id, model, state, rows, removed, rejects, created, sealed,
 *           loaded, attempts, error, model_version]  (model_version: an
 *           element added later; a record without it reads as 0)
 *   reject [1, id, model, key, stage, queue, batch, time, row (bin),
 *           errors (str), job (str or nil)]
 * A newer version is refused (PL_EFORMAT), never guessed at. */
#include "staging.h"
#include "staging_int.h"

#include "model.h"
#include "pl.h"
#include "queue.h"
#include "row.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#define REC_VERSION 1

static const char *const state_names[] = {"open", "sealed", "held", "loading", "loaded", "failed"};

const char *batch_state_name(int state)
{
    if (state < 0 || state > BATCH_FAILED)
        return "unknown";
    return state_names[state];
}

int batch_state_parse(const char *s)
{
    for (int i = 0; i <= BATCH_FAILED; i++)
        if (strcmp(s, state_names[i]) == 0)
            return i;
    return -1;
}

/* ---------------------------------------------------------------- helpers */

static int meta_u64(Txn *t, const char *name, uint64_t *v)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &d);
    if (rc == MDB_NOTFOUND) {
        *v = 0;
        return 0;
    }
    if (rc)
        return rc;
    if (d.mv_size != 8)
        return PL_EFORMAT;
    *v = pl_get_be64(d.mv_data);
    return 0;
}

static int meta_put_u64(Txn *t, const char *name, uint64_t v)
{
    unsigned char b[8];
    pl_put_be64(b, v);
    MDB_val k = {strlen(name), (void *)name}, d = {8, b};
    return mdb_put(t->mdb, txn_dbi(t, DB_META), &k, &d, 0);
}

int staging_counter(Txn *t, const char *name, uint64_t *out)
{
    uint64_t v;
    int rc = meta_u64(t, name, &v);
    if (rc)
        return rc;
    *out = v + 1;
    return meta_put_u64(t, name, v + 1);
}

static void batch_key(unsigned char k[10], uint64_t id)
{
    k[0] = 'b';
    k[1] = '/';
    pl_put_be64(k + 2, id);
}

static size_t open_key(char *k, size_t n, const char *model)
{
    int m = snprintf(k, n, "bo/%s", model);
    return m < 0 ? 0 : (size_t)m < n ? (size_t)m : n - 1;
}

static void row_key(unsigned char k[13], uint64_t id, uint32_t seq)
{
    k[0] = TAG_ROW;
    pl_put_be64(k + 1, id);
    pl_put_be32(k + 9, seq);
}

static void reject_key(unsigned char k[9], uint64_t id)
{
    k[0] = TAG_REJECT;
    pl_put_be64(k + 1, id);
}

void staging_rec_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t n, uint32_t format)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(pk, n);
    msgpack_pack_uint32(pk, format);
}

void staging_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

int staging_get(Txn *t, int db, const void *k, size_t klen, int missing, MDB_val *v)
{
    MDB_val mk = {klen, (void *)k};
    int rc = mdb_get(t->mdb, txn_dbi(t, db), &mk, v);
    return rc == MDB_NOTFOUND ? missing : rc;
}

int staging_walk(Txn *t, int db, const void *start, size_t slen, size_t plen, size_t klen,
                 StagingWalk fn, void *arg)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, db), &c);
    if (rc)
        return rc;
    MDB_val k = {slen, (void *)start}, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if ((klen && k.mv_size != klen) || k.mv_size < plen || memcmp(k.mv_data, start, plen) != 0)
            break;
        if ((rc = fn(c, &k, &v, arg)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND || rc == STAGING_WALK_END ? 0 : rc;
}

int staging_put_changed(Txn *t, const char *name, const msgpack_sbuffer *sb)
{
    MDB_val k = {strlen(name), (void *)name}, v = {sb->size, sb->data}, old;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &old);
    if (rc == 0 && old.mv_size == sb->size && memcmp(old.mv_data, sb->data, sb->size) == 0)
        return 0; /* unchanged: write nothing */
    return mdb_put(t->mdb, txn_dbi(t, DB_META), &k, &v, 0);
}

/* put_packed puts the record sb holds under key k of db and frees sb. */
static int put_packed(Txn *t, int db, const void *k, size_t klen, msgpack_sbuffer *sb)
{
    MDB_val mk = {klen, (void *)k}, mv = {sb->size, sb->data};
    int rc = mdb_put(t->mdb, txn_dbi(t, db), &mk, &mv, 0);
    msgpack_sbuffer_destroy(sb);
    return rc;
}

static int obj_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return PL_EFORMAT;
    *v = o->via.u64;
    return 0;
}

static int obj_str(const msgpack_object *o, char *buf, size_t n)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return PL_EFORMAT;
    size_t l = o->via.str.size < n - 1 ? o->via.str.size : n - 1;
    memcpy(buf, o->via.str.ptr, l);
    buf[l] = '\0';
    return 0;
}

/* rec_view views the record in buf as an array of at least min elements led
 * by REC_VERSION, its elements in *a: 0 (free v after), row_view's error, or
 * PL_EFORMAT (v freed). */
static int rec_view(RowView *v, const void *buf, size_t len, uint32_t min,
                    const msgpack_object **a)
{
    int rc = row_view(v, buf, len);
    if (rc)
        return rc;
    const msgpack_object *o = &v->root;
    uint64_t ver;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < min ||
        obj_u64(&o->via.array.ptr[0], &ver) || ver != REC_VERSION) {
        row_view_free(v);
        return PL_EFORMAT;
    }
    *a = o->via.array.ptr;
    return 0;
}

/* ---------------------------------------------------------------- uuid */

int staging_uuid(Txn *t, char out[33])
{
    MDB_val k = {4, "uuid"}, d;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &d);
    if (rc == 0 && d.mv_size == 32) {
        memcpy(out, d.mv_data, 32);
        out[32] = '\0';
        return 0;
    }
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    if (!t->write)
        return MDB_NOTFOUND;
    unsigned char r[16];
    for (size_t i = 0; i < sizeof r; i += 8) {
        uint64_t x = pl_random64();
        memcpy(r + i, &x, 8);
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    d.mv_size = 32;
    d.mv_data = out;
    return mdb_put(t->mdb, txn_dbi(t, DB_META), &k, &d, 0);
}

/* ---------------------------------------------------------------- batches */

/* ---------------------------------------------------------------- cache
 *
 * A stream of appends to one model's open batch reads and rewrites its
 * record once per transaction, not once per row: staging_append keeps it
 * in the transaction's cache and writes it back before the commit (or
 * before anything else in this file reads or writes a batch record: every
 * such path goes through batch_get, batch_save, batch_each or open_batch,
 * which sync first). */

typedef struct SCache {
    int have, dirty;
    BatchRec b;
} SCache;

static int batch_write(Txn *t, const BatchRec *b);

static int sc_sync(Txn *t)
{
    SCache *c = t->scache;
    if (!c || !c->have)
        return 0;
    int rc = c->dirty ? batch_write(t, &c->b) : 0;
    c->have = c->dirty = 0;
    return rc ? txn_fail(t, rc) : 0;
}

static void sc_flush(Txn *t, void *arg)
{
    (void)arg;
    sc_sync(t);
}

static SCache *sc_of(Txn *t)
{
    if (!t->scache) {
        t->scache = xcalloc(1, sizeof(SCache));
        t->scache_free = free;
        t->scache_flush = sc_flush;
    }
    return t->scache;
}

int batch_save(Txn *t, const BatchRec *b)
{
    int rc = sc_sync(t);
    return rc ? rc : batch_write(t, b);
}

static int batch_write(Txn *t, const BatchRec *b)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    staging_rec_begin(&sb, &pk, 13, REC_VERSION);
    msgpack_pack_uint64(&pk, b->id);
    staging_pack_str(&pk, b->model);
    msgpack_pack_uint32(&pk, (uint32_t)b->state);
    msgpack_pack_uint64(&pk, b->rows);
    msgpack_pack_uint64(&pk, b->removed);
    msgpack_pack_uint64(&pk, b->rejects);
    msgpack_pack_uint64(&pk, b->created_ms);
    msgpack_pack_uint64(&pk, b->sealed_ms);
    msgpack_pack_uint64(&pk, b->loaded_ms);
    msgpack_pack_uint32(&pk, b->attempts);
    staging_pack_str(&pk, b->error);
    msgpack_pack_uint64(&pk, b->version);
    unsigned char k[10];
    batch_key(k, b->id);
    return put_packed(t, DB_META, k, sizeof k, &sb);
}

static int batch_decode(const void *buf, size_t len, BatchRec *b)
{
    RowView v;
    const msgpack_object *a;
    memset(b, 0, sizeof *b);
    int rc = rec_view(&v, buf, len, 12, &a);
    if (rc)
        return rc;
    rc = PL_EFORMAT;
    uint64_t st, att;
    if (obj_u64(&a[1], &b->id) || obj_str(&a[2], b->model, sizeof b->model) ||
        obj_u64(&a[3], &st) || obj_u64(&a[4], &b->rows) || obj_u64(&a[5], &b->removed) ||
        obj_u64(&a[6], &b->rejects) || obj_u64(&a[7], &b->created_ms) ||
        obj_u64(&a[8], &b->sealed_ms) || obj_u64(&a[9], &b->loaded_ms) ||
        obj_u64(&a[10], &att) || obj_str(&a[11], b->error, sizeof b->error) || st > BATCH_FAILED ||
        (v.root.via.array.size > 12 && obj_u64(&a[12], &b->version)))
        goto out;
    b->state = (int)st;
    b->attempts = (uint32_t)att;
    rc = 0;
out:
    row_view_free(&v);
    return rc;
}

int batch_get(Txn *t, uint64_t id, BatchRec *out)
{
    unsigned char k[10];
    batch_key(k, id);
    MDB_val v;
    int rc = sc_sync(t);
    if (rc == 0)
        rc = staging_get(t, DB_META, k, sizeof k, PL_ENOBATCH, &v);
    return rc ? rc : batch_decode(v.mv_data, v.mv_size, out);
}

typedef struct BatchEach {
    int state;
    int (*fn)(const BatchRec *b, void *arg);
    void *arg;
} BatchEach;

static int batch_each1(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg)
{
    BatchEach *e = arg;
    BatchRec b;
    int rc;
    (void)c;
    (void)k;
    if ((rc = batch_decode(v->mv_data, v->mv_size, &b)) != 0)
        return rc;
    return e->state >= 0 && b.state != e->state ? 0 : e->fn(&b, e->arg);
}

int batch_each(Txn *t, int state, int (*fn)(const BatchRec *b, void *arg), void *arg)
{
    BatchEach e = {state, fn, arg};
    int rc = sc_sync(t);
    return rc ? rc : staging_walk(t, DB_META, "b/", 2, 2, 10, batch_each1, &e);
}

static int open_batch(Txn *t, const char *model, int create, BatchRec *b)
{
    char k[160];
    if (!*model || strlen(model) >= sizeof b->model)
        return PL_EINVAL;
    MDB_val mk = {open_key(k, sizeof k, model), k}, mv;
    int rc = sc_sync(t);
    if (rc)
        return rc;
    rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &mk, &mv);
    if (rc == 0 && mv.mv_size == 8) {
        rc = batch_get(t, pl_get_be64(mv.mv_data), b);
        if (rc == 0 && b->state == BATCH_OPEN)
            return 0;
        if (rc && rc != PL_ENOBATCH)
            return rc;
    } else if (rc && rc != MDB_NOTFOUND) {
        return rc;
    }
    if (!create)
        return PL_ENOBATCH;
    memset(b, 0, sizeof *b);
    if ((rc = staging_counter(t, "next_bid", &b->id)) != 0)
        return rc;
    snprintf(b->model, sizeof b->model, "%s", model);
    b->state = BATCH_OPEN;
    b->created_ms = t->now;
    unsigned char id[8];
    pl_put_be64(id, b->id);
    mv.mv_size = 8;
    mv.mv_data = id;
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_META), &mk, &mv, 0)) != 0)
        return rc;
    return batch_save(t, b);
}

/* seal_now closes b: sealed, or held when its rejects pass the policy. */
static int seal_now(Txn *t, BatchRec *b, const SealPolicy *p)
{
    char k[160];
    MDB_val mk = {open_key(k, sizeof k, b->model), k};
    int rc = mdb_del(t->mdb, txn_dbi(t, DB_META), &mk, NULL);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    b->sealed_ms = t->now;
    b->state = BATCH_SEALED;
    double total = (double)(b->rows + b->rejects);
    if (p && p->max_rejects != UINT64_MAX && b->rejects > p->max_rejects) {
        b->state = BATCH_HELD;
        snprintf(b->error, sizeof b->error,
                 "%llu rows rejected, over the threshold of %llu; look with `qctl rejects %s`, "
                 "then `qctl batches release %llu` to load it anyway or `qctl batches fail %llu`",
                 (unsigned long long)b->rejects, (unsigned long long)p->max_rejects, b->model,
                 (unsigned long long)b->id, (unsigned long long)b->id);
    } else if (p && p->max_reject_rate < 1 && total > 0 &&
               (double)b->rejects / total > p->max_reject_rate) {
        b->state = BATCH_HELD;
        snprintf(b->error, sizeof b->error,
                 "%.1f%% of rows rejected (%llu of %llu), over the threshold of %.1f%%; look with "
                 "`qctl rejects %s`, then `qctl batches release %llu` to load it anyway or "
                 "`qctl batches fail %llu`",
                 100.0 * (double)b->rejects / total, (unsigned long long)b->rejects,
                 (unsigned long long)(b->rows + b->rejects), 100.0 * p->max_reject_rate, b->model,
                 (unsigned long long)b->id, (unsigned long long)b->id);
    }
    return batch_save(t, b);
}

int staging_append(Txn *t, const char *model, uint64_t version, const void *row, size_t len,
                   const SealPolicy *policy, BatchRec *out)
{
    int rc;
    if ((rc = store_room(t)) != 0)
        return rc;
    SCache *c = sc_of(t);
    if (!c->have || strcmp(c->b.model, model) != 0) {
        if ((rc = open_batch(t, model, 1, &c->b)) != 0)
            return rc;
        c->have = 1;
        c->dirty = 0;
    }
    BatchRec *b = &c->b;
    if (b->version != version) {
        /* A batch holds rows of one version of its model: a row of another
         * (the pipeline changed while rows were in flight) seals the open
         * batch and opens the next one. */
        if (b->rows) {
            c->have = c->dirty = 0; /* sealed now, written by seal_now */
            if ((rc = seal_now(t, b, policy)) != 0 || (rc = open_batch(t, model, 1, b)) != 0)
                return txn_fail(t, rc);
            c->have = 1;
        }
        b->version = version;
        c->dirty = 1;
    }
    if (b->rows >= UINT32_MAX)
        return PL_EFULL;
    unsigned char k[13];
    row_key(k, b->id, (uint32_t)b->rows);
    MDB_val mk = {sizeof k, k}, mv = {len, (void *)row};
    if ((rc = mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &mk, &mv, 0)) != 0)
        return txn_fail(t, rc);
    b->rows++;
    c->dirty = 1;
    if (policy && policy->rows && b->rows >= policy->rows) {
        c->have = c->dirty = 0; /* sealed now, written by seal_now */
        if ((rc = seal_now(t, b, policy)) != 0)
            return txn_fail(t, rc);
    }
    if (out)
        *out = *b;
    return 0;
}

int staging_note_reject(Txn *t, const char *model)
{
    BatchRec b;
    int rc = open_batch(t, model, 1, &b);
    if (rc)
        return rc;
    b.rejects++;
    if ((rc = batch_save(t, &b)) != 0)
        return txn_fail(t, rc);
    return 0;
}

typedef struct SealArg {
    Txn *t;
    const SealPolicy *p;
    int force;
    uint64_t last;
} SealArg;

static int seal_one(Txn *t, BatchRec *b, SealArg *a)
{
    if (b->rows == 0)
        return 0; /* an empty batch stays open (it may carry reject counts) */
    if (!a->force && !(a->p && a->p->after_s > 0 &&
                       (double)(t->now - b->created_ms) >= a->p->after_s * 1000.0))
        return 0;
    int rc = seal_now(t, b, a->p);
    if (rc)
        return txn_fail(t, rc);
    a->last = b->id;
    return 0;
}

typedef struct OpenIds {
    uint64_t ids[256];
    size_t n;
} OpenIds;

static int open_id(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg)
{
    OpenIds *o = arg;
    (void)c;
    (void)k;
    if (v->mv_size == 8)
        o->ids[o->n++] = pl_get_be64(v->mv_data);
    return o->n < 256 ? 0 : STAGING_WALK_END;
}

int staging_seal_due(Txn *t, const char *model, const SealPolicy *policy, int force,
                     uint64_t *sealed)
{
    SealArg a = {t, policy, force, 0};
    BatchRec b;
    int rc;
    if (sealed)
        *sealed = 0;
    if (model) {
        rc = open_batch(t, model, 0, &b);
        if (rc == PL_ENOBATCH)
            return 0;
        if (rc || (rc = seal_one(t, &b, &a)))
            return rc;
    } else {
        /* Collect the open batch ids first: sealing deletes "bo/" keys
         * under the cursor. */
        OpenIds o;
        o.n = 0;
        if ((rc = staging_walk(t, DB_META, "bo/", 3, 3, 0, open_id, &o)) != 0)
            return rc;
        for (size_t i = 0; i < o.n; i++) {
            if ((rc = batch_get(t, o.ids[i], &b)) != 0) {
                if (rc == PL_ENOBATCH)
                    continue;
                return rc;
            }
            if (b.state == BATCH_OPEN && (rc = seal_one(t, &b, &a)) != 0)
                return rc;
        }
    }
    if (sealed)
        *sealed = a.last;
    return 0;
}

/* ---------------------------------------------------------------- rows */

typedef struct RowsArg {
    uint32_t max, n;
    int (*fn)(uint32_t seq, const void *mp, size_t len, void *arg);
    void *arg;
} RowsArg;

static int batch_row1(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg)
{
    RowsArg *a = arg;
    (void)c;
    int rc = a->fn(pl_get_be32((const unsigned char *)k->mv_data + 9), v->mv_data, v->mv_size,
                   a->arg);
    if (rc)
        return rc;
    return a->max && ++a->n >= a->max ? STAGING_WALK_END : 0;
}

/* The rows of batch id: the keys that start with row_key's first 9 bytes. */
int batch_rows(Txn *t, uint64_t id, uint32_t from, uint32_t max,
               int (*fn)(uint32_t seq, const void *mp, size_t len, void *arg), void *arg)
{
    RowsArg a = {max, 0, fn, arg};
    unsigned char kb[13];
    row_key(kb, id, from);
    return staging_walk(t, DB_STAGE, kb, sizeof kb, 9, 13, batch_row1, &a);
}

int batch_row_get(Txn *t, uint64_t id, uint32_t seq, const void **mp, size_t *len)
{
    unsigned char kb[13];
    row_key(kb, id, seq);
    MDB_val v;
    int rc = staging_get(t, DB_STAGE, kb, sizeof kb, PL_ENOBATCH, &v);
    if (rc)
        return rc;
    *mp = v.mv_data;
    *len = v.mv_size;
    return 0;
}

int batch_row_reject(Txn *t, uint64_t id, uint32_t seq, const char *rkey, const char *message,
                     uint64_t *rid)
{
    BatchRec b;
    const void *mp;
    size_t len;
    int rc;
    if ((rc = batch_get(t, id, &b)) != 0 || (rc = batch_row_get(t, id, seq, &mp, &len)) != 0)
        return rc;
    /* Copy the row: the reject's put may move pages under the view. */
    Strbuf row, errs, key;
    sb_init(&row);
    sb_init(&errs);
    sb_init(&key);
    sb_add(&row, mp, len);
    sb_adds(&errs, "[{\"field\":null,\"rule\":\"warehouse\",\"message\":");
    sb_add_json_string(&errs, message, strlen(message));
    sb_adds(&errs, "}]");
    if (rkey)
        sb_adds(&key, rkey);
    else
        sb_addf(&key, "batch %llu row %u", (unsigned long long)id, seq);
    RejectRec r = {0};
    r.model = b.model;
    r.key = key.buf;
    r.stage = "qload";
    r.queue = "";
    r.batch = id;
    r.row = row.buf;
    r.row_len = row.len;
    r.errors = errs.buf;
    r.errors_len = errs.len;
    rc = reject_add(t, &r, rid);
    if (!rc) {
        unsigned char kb[13];
        row_key(kb, id, seq);
        MDB_val k = {sizeof kb, kb};
        rc = mdb_del(t->mdb, txn_dbi(t, DB_STAGE), &k, NULL);
        if (!rc) {
            b.removed++;
            rc = batch_save(t, &b);
        }
        if (rc)
            rc = txn_fail(t, rc);
    }
    sb_free(&row);
    sb_free(&errs);
    sb_free(&key);
    return rc;
}

typedef struct DropArg {
    size_t max, n;
    int *more;
} DropArg;

static int drop_row(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg)
{
    DropArg *a = arg;
    (void)k;
    (void)v;
    if (a->max && a->n >= a->max) {
        *a->more = 1;
        return STAGING_WALK_END;
    }
    a->n++;
    return mdb_cursor_del(c, 0);
}

int batch_drop_rows(Txn *t, uint64_t id, size_t max, int *more)
{
    DropArg a = {max, 0, more};
    unsigned char kb[13];
    row_key(kb, id, 0);
    *more = 0;
    /* After mdb_cursor_del the cursor stands on the next record, and
     * MDB_NEXT returns it (LMDB's delete-while-walking idiom): one seek. */
    int rc = staging_walk(t, DB_STAGE, kb, sizeof kb, 9, 13, drop_row, &a);
    return rc ? txn_fail(t, rc) : 0;
}

int batch_forget(Txn *t, uint64_t id)
{
    BatchRec b;
    int rc, more = 0;
    if ((rc = batch_get(t, id, &b)) != 0)
        return rc;
    if (b.state != BATCH_LOADED)
        return PL_ESTATE;
    if ((rc = batch_drop_rows(t, id, 0, &more)) != 0)
        return rc;
    unsigned char k[10];
    batch_key(k, id);
    MDB_val mk = {sizeof k, k};
    if ((rc = mdb_del(t->mdb, txn_dbi(t, DB_META), &mk, NULL)) != 0)
        return txn_fail(t, rc);
    return 0;
}

/* ---------------------------------------------------------------- rejects */

/* reject_put writes r as reject rid made at time_ms. */
static int reject_put(Txn *t, uint64_t rid, uint64_t time_ms, const RejectRec *r)
{
    int rc;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    staging_rec_begin(&sb, &pk, 11, REC_VERSION);
    msgpack_pack_uint64(&pk, rid);
    staging_pack_str(&pk, r->model ? r->model : "");
    staging_pack_str(&pk, r->key ? r->key : "");
    staging_pack_str(&pk, r->stage ? r->stage : "");
    staging_pack_str(&pk, r->queue ? r->queue : "");
    msgpack_pack_uint64(&pk, r->batch);
    msgpack_pack_uint64(&pk, time_ms);
    msgpack_pack_bin(&pk, r->row_len);
    msgpack_pack_bin_body(&pk, r->row, r->row_len);
    msgpack_pack_str(&pk, r->errors_len);
    msgpack_pack_str_body(&pk, r->errors, r->errors_len);
    if (r->job) {
        msgpack_pack_str(&pk, r->job_len);
        msgpack_pack_str_body(&pk, r->job, r->job_len);
    } else {
        msgpack_pack_nil(&pk);
    }
    unsigned char k[9];
    reject_key(k, rid);
    rc = put_packed(t, DB_STAGE, k, sizeof k, &sb);
    return rc ? txn_fail(t, rc) : 0;
}

int reject_add(Txn *t, const RejectRec *r, uint64_t *id)
{
    uint64_t rid;
    int rc = staging_counter(t, "next_rid", &rid);
    if (rc || (rc = reject_put(t, rid, t->now, r)) != 0)
        return rc;
    if (id)
        *id = rid;
    return 0;
}

int reject_set_row(Txn *t, uint64_t id, const void *row, size_t len, const char *key)
{
    RejectRead r;
    int rc = reject_get(t, id, &r);
    if (rc)
        return rc;
    /* The errors and the job are views into the record: copy them before
     * it is rewritten. */
    Strbuf errors, job, k;
    sb_init(&errors);
    sb_init(&job);
    sb_init(&k);
    sb_add(&errors, r.r.errors, r.r.errors_len);
    if (r.r.job)
        sb_add(&job, r.r.job, r.r.job_len);
    sb_adds(&k, key ? key : r.key);
    RejectRec n = r.r;
    n.model = r.model;
    n.key = k.buf;
    n.stage = r.stage;
    n.queue = r.queue;
    n.row = row;
    n.row_len = len;
    n.errors = errors.buf;
    n.errors_len = errors.len;
    n.job = r.r.job ? job.buf : NULL;
    n.job_len = job.len;
    if (strlen(n.key) >= sizeof r.key)
        rc = PL_EINVAL;
    else if ((rc = store_reserve(t, len + errors.len + job.len + 512)) == 0)
        rc = reject_put(t, id, r.r.time_ms, &n);
    sb_free(&errors);
    sb_free(&job);
    sb_free(&k);
    return rc;
}

static int reject_decode(const void *buf, size_t len, RejectRead *o)
{
    RowView v;
    const msgpack_object *a;
    memset(o, 0, sizeof *o);
    int rc = rec_view(&v, buf, len, 11, &a);
    if (rc)
        return rc;
    rc = PL_EFORMAT;
    if (obj_u64(&a[1], &o->r.id) ||
        obj_str(&a[2], o->model, sizeof o->model) || obj_str(&a[3], o->key, sizeof o->key) ||
        obj_str(&a[4], o->stage, sizeof o->stage) || obj_str(&a[5], o->queue, sizeof o->queue) ||
        obj_u64(&a[6], &o->r.batch) || obj_u64(&a[7], &o->r.time_ms) ||
        a[8].type != MSGPACK_OBJECT_BIN || a[9].type != MSGPACK_OBJECT_STR ||
        (a[10].type != MSGPACK_OBJECT_STR && a[10].type != MSGPACK_OBJECT_NIL))
        goto out;
    /* Views into buf: msgpack_unpack references str and bin bodies; make
     * sure, since they outlive the zone. */
    const char *lo = buf, *hi = lo + len;
    if (a[8].via.bin.ptr < lo || a[8].via.bin.ptr + a[8].via.bin.size > hi ||
        a[9].via.str.ptr < lo || a[9].via.str.ptr + a[9].via.str.size > hi ||
        (a[10].type == MSGPACK_OBJECT_STR &&
         (a[10].via.str.ptr < lo || a[10].via.str.ptr + a[10].via.str.size > hi)))
        goto out;
    o->r.row = a[8].via.bin.ptr;
    o->r.row_len = a[8].via.bin.size;
    o->r.errors = a[9].via.str.ptr;
    o->r.errors_len = a[9].via.str.size;
    if (a[10].type == MSGPACK_OBJECT_STR) {
        o->r.job = a[10].via.str.ptr;
        o->r.job_len = a[10].via.str.size;
    }
    o->r.model = o->model;
    o->r.key = o->key;
    o->r.stage = o->stage;
    o->r.queue = o->queue;
    rc = 0;
out:
    row_view_free(&v);
    return rc;
}

int reject_get(Txn *t, uint64_t id, RejectRead *out)
{
    unsigned char k[9];
    reject_key(k, id);
    MDB_val v;
    int rc = staging_get(t, DB_STAGE, k, sizeof k, PL_ENOREJECT, &v);
    return rc ? rc : reject_decode(v.mv_data, v.mv_size, out);
}

typedef struct RejectEach {
    const char *model;
    int (*fn)(const RejectRead *r, void *arg);
    void *arg;
} RejectEach;

static int reject_each1(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg)
{
    RejectEach *e = arg;
    RejectRead r;
    int rc;
    (void)c;
    (void)k;
    if ((rc = reject_decode(v->mv_data, v->mv_size, &r)) != 0)
        return rc;
    return e->model && strcmp(e->model, r.model) != 0 ? 0 : e->fn(&r, e->arg);
}

int reject_each(Txn *t, const char *model, int (*fn)(const RejectRead *r, void *arg), void *arg)
{
    RejectEach e = {model, fn, arg};
    unsigned char k0[1] = {TAG_REJECT};
    return staging_walk(t, DB_STAGE, k0, 1, 1, 9, reject_each1, &e);
}

int reject_del(Txn *t, uint64_t id)
{
    unsigned char k[9];
    reject_key(k, id);
    MDB_val mk = {sizeof k, k};
    int rc = mdb_del(t->mdb, txn_dbi(t, DB_STAGE), &mk, NULL);
    return rc == MDB_NOTFOUND ? PL_ENOREJECT : rc;
}

/* replay_body writes into out the job that replays a reject whose stored
 * job is job (JSON) and whose row is now row (msgpack), staging the row
 * when the job is a reference. */
static int replay_body(Txn *t, const RejectRead *r, const Strbuf *job, const Strbuf *row,
                       Strbuf *out)
{
    msgpack_sbuffer mp;
    RowView v;
    StagedRef ref;
    uint64_t inst;
    int rc = 0;
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(job->buf, job->len, &mp, NULL, 0) != 0 ||
        row_view(&v, mp.data, mp.size) != 0) {
        sb_add(out, job->buf, job->len); /* not an object: as it was */
        goto out;
    }
    const msgpack_object *inl = row_field(&v.root, "row");
    if (inl && inl->type == MSGPACK_OBJECT_MAP) {
        /* An inline row: the job carries the (fixed) row itself. */
        sb_adds(out, "{\"model\":");
        sb_add_json_string(out, r->model, strlen(r->model));
        sb_adds(out, ",\"row\":");
        rc = row_to_json(row->buf, row->len, out);
        sb_adds(out, "}");
    } else if (!inl && staging_ref_parse(&v.root, &ref) == 0) {
        /* A reference: a new instance of the row, named by the new job. */
        if ((rc = staging_row_new(t, r->model, r->key, row->buf, row->len, 1, &inst)) == 0)
            staging_ref_json(out, r->model, r->key, inst);
    } else {
        sb_add(out, job->buf, job->len); /* not about a staged row: as it was */
    }
    row_view_free(&v);
out:
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

int reject_replay(Txn *t, uint64_t id, const void *row, size_t len, uint64_t version,
                  uint64_t *job)
{
    RejectRead r;
    int rc = reject_get(t, id, &r);
    if (rc)
        return rc;
    if (job)
        *job = 0;
    /* Copy what we need out of the record before writing. */
    Strbuf rowb, jobb, body;
    sb_init(&rowb);
    sb_init(&jobb);
    sb_init(&body);
    if (row)
        sb_add(&rowb, row, len);
    else
        sb_add(&rowb, r.r.row, r.r.row_len);
    if (r.r.job)
        sb_add(&jobb, r.r.job, r.r.job_len);
    if (!r.queue[0]) {
        /* Back into a batch of the version of the model the row was
         * validated with: the caller's, else (a row qload refused) its
         * batch's, while that is kept. */
        BatchRec from;
        if (!version && r.r.batch && batch_get(t, r.r.batch, &from) == 0)
            version = from.version;
        rc = staging_append(t, r.model, version, rowb.buf, rowb.len, NULL, NULL);
    } else if (!jobb.len) {
        /* No job to replay (none of ours stores such a reject): the row
         * goes back where a pickline before instances kept it. */
        rc = staging_row_put(t, r.model, r.key, 0, rowb.buf, rowb.len);
    } else if ((rc = replay_body(t, &r, &jobb, &rowb, &body)) == 0) {
        PutArgs pa = {0};
        pa.pri = 1024;
        pa.body = body.buf;
        pa.len = body.len;
        uint64_t jid = 0;
        rc = queue_put(t, r.queue, &pa, &jid, NULL);
        if (!rc && job)
            *job = jid;
    }
    if (!rc)
        rc = reject_del(t, id);
    sb_free(&rowb);
    sb_free(&jobb);
    sb_free(&body);
    return rc;
}

/* ---------------------------------------------------------------- pipeline */

static int pipeline_put(Txn *t, const char *path, const char *text, size_t len);

/* version_key writes DB_META's key of model version (model, version):
 * "mv/" model 0 version (big-endian); 0 for a model name too long. */
static size_t version_key(unsigned char *k, size_t n, const char *model, uint64_t version)
{
    size_t ml = strlen(model);
    if (!ml || 3 + ml + 1 + 8 > n)
        return 0;
    memcpy(k, "mv/", 3);
    memcpy(k + 3, model, ml);
    k[3 + ml] = 0;
    pl_put_be64(k + 4 + ml, version);
    return 3 + ml + 1 + 8;
}

int staging_pipeline_put(Txn *t, const char *path, const char *text, size_t len,
                         const Models *ms)
{
    int rc;
    for (size_t i = 0; ms && i < ms->n; i++) {
        /* The first pipeline seen with this version of the model defines
         * it; a later one with the same version has the same shape. */
        unsigned char kb[3 + STAGING_MODEL_MAX + 1 + 8];
        MDB_val k = {version_key(kb, sizeof kb, ms->m[i].name, ms->m[i].version), kb}, old;
        if (!k.mv_size)
            continue;
        rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &old);
        if (rc == 0)
            continue;
        if (rc != MDB_NOTFOUND)
            return rc;
        msgpack_sbuffer vb;
        msgpack_packer vp;
        staging_rec_begin(&vb, &vp, 3, REC_VERSION);
        staging_pack_str(&vp, path ? path : "");
        msgpack_pack_str(&vp, len);
        msgpack_pack_str_body(&vp, text, len);
        if ((rc = put_packed(t, DB_META, k.mv_data, k.mv_size, &vb)) != 0)
            return rc;
    }
    return pipeline_put(t, path, text, len);
}

int staging_model_version_get(Txn *t, const char *model, uint64_t version, Strbuf *path,
                              Strbuf *text)
{
    unsigned char kb[3 + STAGING_MODEL_MAX + 1 + 8];
    size_t kl = version_key(kb, sizeof kb, model, version);
    MDB_val v;
    RowView rv;
    const msgpack_object *a;
    if (!kl)
        return PL_ENOPIPELINE;
    int rc = staging_get(t, DB_META, kb, kl, PL_ENOPIPELINE, &v);
    if (rc || (rc = rec_view(&rv, v.mv_data, v.mv_size, 3, &a)) != 0)
        return rc;
    rc = PL_EFORMAT;
    if (a[1].type == MSGPACK_OBJECT_STR && a[2].type == MSGPACK_OBJECT_STR) {
        sb_add(path, a[1].via.str.ptr, a[1].via.str.size);
        sb_add(text, a[2].via.str.ptr, a[2].via.str.size);
        rc = 0;
    }
    row_view_free(&rv);
    return rc;
}

/* pipeline_put keeps the pipeline file the engine runs (see staging.h). */
static int pipeline_put(Txn *t, const char *path, const char *text, size_t len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    staging_pack_str(&pk, path ? path : "");
    msgpack_pack_str(&pk, len);
    msgpack_pack_str_body(&pk, text, len);
    int rc = staging_put_changed(t, "pipeline", &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
