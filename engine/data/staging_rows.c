/* staging_rows.c: staged row instances (staging.h, "staged rows"): the
 * keys (model 0 key 0 row), the instance records [version, refs, row] and
 * their reference counts, the references jobs carry, and the legacy rows
 * staged before instances, which are read and merged through row 0 and
 * never counted or deleted. */
#include "staging.h"
#include "staging_int.h"

#include "pl.h"
#include "row.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#define SROW_KEY_MAX (STAGING_MODEL_MAX + 1 + STAGING_KEY_MAX + 1 + 8)
#define INST_HDR1 12     /* format 1: [1, refs, row] */
#define INST_HDR 21      /* format 2: [2, refs, model version, row] */
#define INST_VERSION 2

/* srow_key writes the key of staged row (model, key, row) into k (room for
 * SROW_KEY_MAX bytes) and sets *n: model 0 key, then 0 row (big-endian)
 * for an instance. PL_EINVAL for what cannot be staged. */
static int srow_key(unsigned char *k, size_t *n, const char *model, const char *key, uint64_t row)
{
    size_t ml = strlen(model), kl = strlen(key);
    if (!ml || ml > STAGING_MODEL_MAX || kl > STAGING_KEY_MAX ||
        (unsigned char)model[0] == TAG_ROW || (unsigned char)model[0] == TAG_REJECT)
        return PL_EINVAL;
    memcpy(k, model, ml);
    k[ml] = 0;
    memcpy(k + ml + 1, key, kl);
    *n = ml + 1 + kl;
    if (row) {
        k[*n] = 0;
        pl_put_be64(k + *n + 1, row);
        *n += 9;
    }
    return 0;
}

/* srow_split finds the parts of a staged row's key: the model's length,
 * the key's, and the instance (0: legacy). 0, or PL_ECORRUPT for a key of
 * neither layout. */
static int srow_split(const MDB_val *k, size_t *ml, size_t *kl, uint64_t *row)
{
    const unsigned char *p = k->mv_data, *z = memchr(p, 0, k->mv_size), *z2;
    if (!z || z == p)
        return PL_ECORRUPT;
    *ml = (size_t)(z - p);
    size_t rest = k->mv_size - *ml - 1;
    z2 = memchr(z + 1, 0, rest);
    if (!z2) {
        *kl = rest;
        *row = 0;
        return 0;
    }
    *kl = (size_t)(z2 - (z + 1));
    if (rest != *kl + 9)
        return PL_ECORRUPT;
    *row = pl_get_be64(z2 + 1);
    return *row ? 0 : PL_ECORRUPT;
}

static void inst_hdr(unsigned char *h, uint32_t refs, uint64_t version, uint32_t len)
{
    h[0] = 0x94; /* fixarray 4 */
    h[1] = INST_VERSION;
    h[2] = 0xce; /* uint32 */
    pl_put_be32(h + 3, refs);
    h[7] = 0xcf; /* uint64 */
    pl_put_be64(h + 8, version);
    h[16] = 0xc6; /* bin32 */
    pl_put_be32(h + 17, len);
}

/* inst_parse checks an instance record (format 1 or 2) and views its
 * parts; *version (may be NULL) gets the model version (0 in format 1). */
static int inst_parse(const MDB_val *v, uint32_t *refs, uint64_t *version, const void **mp,
                      size_t *len)
{
    const unsigned char *h = v->mv_data;
    size_t hdr;
    if (v->mv_size < INST_HDR1 || (h[0] != 0x93 && h[0] != 0x94))
        return PL_ECORRUPT;
    if (h[1] > INST_VERSION)
        return h[1] < 0x80 ? PL_EFORMAT : PL_ECORRUPT;
    if (h[1] == 1 && h[0] == 0x93 && h[2] == 0xce && h[7] == 0xc6) {
        hdr = INST_HDR1;
        if (version)
            *version = 0;
    } else if (h[1] == 2 && h[0] == 0x94 && v->mv_size >= INST_HDR && h[2] == 0xce &&
               h[7] == 0xcf && h[16] == 0xc6) {
        hdr = INST_HDR;
        if (version)
            *version = pl_get_be64(h + 8);
    } else {
        return PL_ECORRUPT;
    }
    if (pl_get_be32(h + hdr - 4) != v->mv_size - hdr)
        return PL_ECORRUPT;
    *refs = pl_get_be32(h + 3);
    *mp = h + hdr;
    *len = v->mv_size - hdr;
    return 0;
}

/* inst_write stores an instance (refs, version, row) under k, in format 2;
 * row must not view the map (MDB_RESERVE may move what it views). */
static int inst_write(Txn *t, MDB_val *k, uint32_t refs, uint64_t version, const void *row,
                      size_t len, unsigned flags)
{
    if (len > UINT32_MAX - INST_HDR)
        return PL_ETOOBIG;
    MDB_val v = {INST_HDR + len, NULL};
    int rc = mdb_put(t->mdb, txn_dbi(t, DB_STAGE), k, &v, flags | MDB_RESERVE);
    if (rc)
        return rc;
    inst_hdr(v.mv_data, refs, version, (uint32_t)len);
    memcpy((unsigned char *)v.mv_data + INST_HDR, row, len);
    return 0;
}

/* srow_find reads the record of (model, key, row) into *v with its key in
 * kb/k. */
static int srow_find(Txn *t, const char *model, const char *key, uint64_t row, unsigned char *kb,
                     MDB_val *k, MDB_val *v)
{
    size_t n;
    int rc = srow_key(kb, &n, model, key, row);
    if (rc)
        return rc;
    k->mv_size = n;
    k->mv_data = kb;
    return staging_get(t, DB_STAGE, kb, n, PL_ENOROW, v);
}

void staging_ref_json(Strbuf *out, const char *model, const char *key, uint64_t row)
{
    sb_adds(out, "{\"model\":");
    sb_add_json_string(out, model, strlen(model));
    sb_adds(out, ",\"key\":");
    sb_add_json_string(out, key, strlen(key));
    if (row)
        sb_addf(out, ",\"row_id\":%llu", (unsigned long long)row);
    sb_adds(out, "}");
}

int staging_ref_parse(const msgpack_object *body, StagedRef *out)
{
    Strbuf m, k;
    int rc = PL_EINVAL;
    memset(out, 0, sizeof *out);
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return PL_EINVAL;
    sb_init(&m);
    sb_init(&k);
    const msgpack_object *r = row_field(body, "row_id");
    if (row_field_text(body, "model", &m) || row_field_text(body, "key", &k) || !m.len ||
        m.len > STAGING_MODEL_MAX || k.len > STAGING_KEY_MAX || memchr(m.buf, 0, m.len) ||
        (k.len && memchr(k.buf, 0, k.len)))
        goto out;
    if (r && (r->type != MSGPACK_OBJECT_POSITIVE_INTEGER || r->via.u64 == 0))
        goto out;
    memcpy(out->model, m.buf, m.len + 1);
    if (k.len)
        memcpy(out->key, k.buf, k.len + 1);
    out->row = r ? r->via.u64 : 0;
    rc = 0;
out:
    sb_free(&m);
    sb_free(&k);
    return rc;
}

int staging_row_new(Txn *t, const char *model, const char *key, const void *mp, size_t len,
                    uint32_t refs, uint64_t *row)
{
    return staging_row_new_valid(t, model, key, 0, mp, len, refs, row);
}

int staging_row_new_valid(Txn *t, const char *model, const char *key, uint64_t version,
                          const void *mp, size_t len, uint32_t refs, uint64_t *row)
{
    unsigned char kb[SROW_KEY_MAX];
    size_t n;
    uint64_t id;
    int rc;
    if (refs == 0)
        return PL_EINVAL;
    if ((rc = srow_key(kb, &n, model, key, 1)) != 0 || (rc = store_room(t)) != 0)
        return rc;
    if ((rc = staging_counter(t, "next_row", &id)) != 0)
        return txn_fail(t, rc);
    if ((rc = srow_key(kb, &n, model, key, id)) != 0)
        return rc;
    MDB_val k = {n, kb};
    /* A fresh id: an instance already there would be a damaged counter. */
    if ((rc = inst_write(t, &k, refs, version, mp, len, MDB_NOOVERWRITE)) != 0)
        return txn_fail(t, rc == MDB_KEYEXIST ? PL_ECORRUPT : rc);
    *row = id;
    return 0;
}

int staging_row_get(Txn *t, const char *model, const char *key, uint64_t row, const void **mp,
                    size_t *len, uint32_t *refs)
{
    unsigned char kb[SROW_KEY_MAX];
    MDB_val k, v;
    uint32_t r = 0;
    int rc = srow_find(t, model, key, row, kb, &k, &v);
    if (rc)
        return rc;
    if (row) {
        if ((rc = inst_parse(&v, &r, NULL, mp, len)) != 0)
            return rc;
    } else {
        *mp = v.mv_data;
        *len = v.mv_size;
    }
    if (refs)
        *refs = r;
    return 0;
}

/* row_put replaces the row of instance row, keeping its refs, and its
 * version unless set_version (then: version). */
static int row_put(Txn *t, const char *model, const char *key, uint64_t row, int set_version,
                   uint64_t version, const void *mp, size_t len)
{
    unsigned char kb[SROW_KEY_MAX];
    MDB_val k, v;
    uint32_t refs = 0;
    uint64_t ver = 0;
    const void *old;
    size_t oldlen;
    int rc = srow_find(t, model, key, row, kb, &k, &v);
    if (rc && !(rc == PL_ENOROW && row == 0))
        return rc;
    if (row && (rc = inst_parse(&v, &refs, &ver, &old, &oldlen)) != 0)
        return rc;
    if (set_version)
        ver = version;
    if ((rc = store_room(t)) != 0)
        return rc;
    if (row)
        rc = inst_write(t, &k, refs, ver, mp, len, 0);
    else {
        MDB_val nv = {len, (void *)mp};
        rc = mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &k, &nv, 0);
    }
    return rc ? txn_fail(t, rc) : 0;
}

int staging_row_put(Txn *t, const char *model, const char *key, uint64_t row, const void *mp,
                    size_t len)
{
    return row_put(t, model, key, row, 0, 0, mp, len);
}

int staging_row_put_valid(Txn *t, const char *model, const char *key, uint64_t row,
                          uint64_t version, const void *mp, size_t len)
{
    return row_put(t, model, key, row, 1, version, mp, len);
}

int staging_row_version(Txn *t, const char *model, const char *key, uint64_t row,
                        uint64_t *version)
{
    unsigned char kb[SROW_KEY_MAX];
    MDB_val k, v;
    uint32_t refs;
    const void *mp;
    size_t len;
    int rc = srow_find(t, model, key, row, kb, &k, &v);
    *version = 0;
    if (rc || row == 0)
        return rc;
    return inst_parse(&v, &refs, version, &mp, &len);
}

int staging_row_merge(Txn *t, const char *model, const char *key, uint64_t row, const void *src,
                      size_t len, const char *const *from, const char *const *to, size_t n)
{
    const void *base;
    size_t blen;
    RowView bv, sv;
    msgpack_sbuffer out;
    int rc = staging_row_get(t, model, key, row, &base, &blen, NULL);
    if (rc)
        return rc;
    if ((rc = row_view(&bv, base, blen)) != 0)
        return PL_ECORRUPT;
    if ((rc = row_view(&sv, src, len)) != 0) {
        row_view_free(&bv);
        return PL_EINVAL;
    }
    msgpack_sbuffer_init(&out);
    rc = row_merge(&bv.root, &sv.root, from, to, n, &out, NULL);
    row_view_free(&sv);
    row_view_free(&bv);
    /* out is our own buffer now: the views of the map are no longer used. */
    if (!rc)
        rc = staging_row_put(t, model, key, row, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
    return rc;
}

/* refs_add adds delta references to instance row (deleting it at 0). */
static int refs_add(Txn *t, const char *model, const char *key, uint64_t row, int64_t delta,
                    int *deleted)
{
    unsigned char kb[SROW_KEY_MAX];
    MDB_val k, v;
    uint32_t refs;
    const void *mp;
    size_t len;
    int rc;
    if (deleted)
        *deleted = 0;
    if (row == 0) /* a legacy row counts nothing and stays */
        return 0;
    if ((rc = srow_find(t, model, key, row, kb, &k, &v)) != 0 ||
        (rc = inst_parse(&v, &refs, NULL, &mp, &len)) != 0)
        return rc;
    int64_t now = (int64_t)refs + delta;
    if (now <= 0) {
        if ((rc = mdb_del(t->mdb, txn_dbi(t, DB_STAGE), &k, NULL)) != 0)
            return txn_fail(t, rc);
        if (deleted)
            *deleted = 1;
        return 0;
    }
    if (now > UINT32_MAX)
        return PL_ETOOBIG;
    /* The new count in the record's header: a copy, as the put may move
     * the page that v views. (Only a fan-out keeps an instance past its
     * first drop, so this copy is off the usual path.) */
    Strbuf c;
    sb_init(&c);
    sb_add(&c, v.mv_data, v.mv_size);
    pl_put_be32((unsigned char *)c.buf + 3, (uint32_t)now);
    MDB_val nv = {c.len, c.buf};
    rc = mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &k, &nv, 0);
    sb_free(&c);
    return rc ? txn_fail(t, rc) : 0;
}

int staging_row_hold(Txn *t, const char *model, const char *key, uint64_t row, uint32_t n)
{
    return n ? refs_add(t, model, key, row, n, NULL) : 0;
}

int staging_row_drop(Txn *t, const char *model, const char *key, uint64_t row, int *deleted)
{
    return refs_add(t, model, key, row, -1, deleted);
}

int staging_job_gone(Txn *t, const void *body, size_t len, int *dropped)
{
    msgpack_sbuffer mp;
    RowView v;
    StagedRef ref;
    int rc = 0, named = 0;
    if (dropped)
        *dropped = 0;
    /* Parsed into a copy first: the body is a view into the store, which
     * the drop's write may move. */
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(body, len, &mp, NULL, 0) == 0 && row_view(&v, mp.data, mp.size) == 0) {
        named = staging_ref_parse(&v.root, &ref) == 0 && ref.row != 0;
        row_view_free(&v);
    }
    msgpack_sbuffer_destroy(&mp);
    if (named) {
        rc = staging_row_drop(t, ref.model, ref.key, ref.row, NULL);
        if (rc == PL_ENOROW)
            rc = 0;
        else if (rc == 0 && dropped)
            *dropped = 1;
    }
    return rc;
}

int staging_row_del(Txn *t, const char *model, const char *key, uint64_t row)
{
    unsigned char kb[SROW_KEY_MAX];
    MDB_val k, v;
    int rc = srow_find(t, model, key, row, kb, &k, &v);
    if (rc)
        return rc;
    if ((rc = mdb_del(t->mdb, txn_dbi(t, DB_STAGE), &k, NULL)) != 0)
        return txn_fail(t, rc);
    return 0;
}

int staging_row_count(Txn *t, int (*fn)(const StagedCount *c, void *arg), void *arg)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->mdb, txn_dbi(t, DB_STAGE), &c);
    if (rc)
        return rc;
    /* Staged rows sort after the batch rows (0x01) and rejects (0x02). */
    unsigned char k0[1] = {TAG_REJECT + 1};
    MDB_val k = {1, k0}, v;
    StagedCount cur;
    int have = 0;
    memset(&cur, 0, sizeof cur);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t ml, kl;
        uint64_t row;
        if ((rc = srow_split(&k, &ml, &kl, &row)) != 0)
            break;
        if (have && (strlen(cur.model) != ml || memcmp(cur.model, k.mv_data, ml) != 0)) {
            if ((rc = fn(&cur, arg)) != 0)
                break;
            have = 0;
        }
        if (!have) {
            memset(&cur, 0, sizeof cur);
            size_t cl = ml < sizeof cur.model - 1 ? ml : sizeof cur.model - 1;
            memcpy(cur.model, k.mv_data, cl);
            have = 1;
        }
        if (row) {
            uint32_t refs;
            const void *mp;
            size_t len;
            if ((rc = inst_parse(&v, &refs, NULL, &mp, &len)) != 0)
                break;
            cur.rows++;
            cur.refs += refs;
            cur.bytes += len;
        } else {
            cur.legacy++;
            cur.bytes += v.mv_size;
        }
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) {
        rc = 0;
        if (have)
            rc = fn(&cur, arg);
    }
    return rc;
}

