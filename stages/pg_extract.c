/* pg_extract.c: incremental extract from a PostgreSQL table into a model's
 * batches (step B of the reference pipeline for an internal database), and
 * the "edge copy" of a table.
 *
 *   - name: users_src
 *     kind: pg_extract
 *     input: pg_keys              # optional: key notices (pg_notify's output), see below
 *     dsn: "env:SOURCE_DSN"       # libpq conninfo, or env:NAME to read $NAME
 *     table: users                # source table (schema.table allowed)
 *     model: users                # rows are validated against it, staged in its batches
 *     updated_column: updated_at  # the watermark; order is (updated_column, key columns)
 *     interval: 1                 # seconds between watermark polls (a notice wakes it early)
 *     page: 5000                  # rows per page
 *     since: 7776000              # optional: only rows updated in the last N seconds
 *     where: "tenant <> 0"        # optional row filter (SQL, trusted configuration)
 *     rows: 10000                 # seal policy of the batches it fills (as the batch kind)
 *     seconds: 1
 *     reconcile_dsn: "env:EDGE_DSN"   # optional: find deletes by comparing keys with the
 *                                     # copy (pg_reconcile.h, with its other reconcile_* keys)
 *
 * Watermark extract. The cursor (stored with the stage, JSON
 * {"ts":TEXT,"key":[TEXT,...]}) is the (updated_column, key columns) of
 * the last row committed. A page is
 *
 *   SELECT <model columns> FROM t WHERE (upd, k1, k2..) > ($ts, $k1, ..)
 *       [AND (where)] [AND upd > now() - interval 'N seconds']
 *   ORDER BY upd, k1, k2.. LIMIT page
 *
 * so rows sharing a timestamp are neither skipped nor repeated across pages
 * (the key breaks the tie). The first page has no cursor and takes
 * `upd IS NOT NULL` instead: rows whose updated column is NULL are never in
 * a watermark extract (only a key notice brings them). Each value arrives as
 * PostgreSQL's text (the session runs DateStyle ISO and TimeZone UTC, so
 * timestamps are exact ISO 8601 text) and becomes the model's type in the
 * msgpack row: integers as ints, decimal as a ROW_EXT_NUMBER, booleans, json
 * parsed, the rest as strings. model_validate checks each row: a valid row is
 * appended to the model's open batch (staging_append with the seal policy),
 * an invalid one becomes a reject with its reasons (it does not stop the
 * extract). The staging writes of a page and the new cursor commit in ONE
 * Emit (emit_extra + emit_cursor), and the next page is requested only
 * after that commit: a crash re-reads at most one uncommitted page, and never
 * stages a row twice. An empty page commits nothing. A full page asks for the
 * next one at once; otherwise the stage polls every `interval` seconds, or
 * earlier when pg_extract_wake (a pg_notify stage) says something changed.
 * The stage's Sealer (sealer.h) seals the model's open batches older than
 * `seconds`.
 *
 * Deletes. A soft delete (the source sets the model's paranoid column with
 * updated_column) flows like any other update. A hard delete is carried by
 * its notice, {"table":T,"op":"delete","key":{...}} (examples/edge-copy/
 * setup.sql's trigger sends one): the row is read by key as for any notice,
 * and when the source does not have it (any more: a row inserted again
 * since is simply extracted) a tombstone is staged, the row
 * {key..., "_deleted": true} validated against the model, which qload's
 * merge turns into a DELETE or an update of the paranoid column (the
 * model's on_delete:). Deletes made while no one listened (the engine
 * stopped, a notice lost) are found by the reconciliation, when
 * reconcile_dsn: names the copy (pg_reconcile.h).
 *
 * Key notices. Jobs on the input queue are {"table":T,"key":{col:val,...}}
 * (a pg_notify stage's output). A watermark extract misses a row whose
 * transaction commits after a later timestamp was extracted (updated_at is
 * set at the start of a transaction, and can commit late); a notice,
 * delivered at commit, catches it. A job is worked by reading the row by key
 * and two more columns: whether the row is still ahead of the cursor, and
 * whether it passes the page's filters. A row filtered out means nothing to
 * do, and so does a row gone, but for a delete notice (a tombstone, above);
 * a row ahead of the cursor (or with no cursor yet) is left to
 * the watermark extract; a row version the watermark extract staged in this
 * run (a table of recent (key, ts) hashes) is not staged again; any other row
 * is validated and staged (or rejected) in the commit that acks the job
 * (slot_extra). A body that is not a notice for this table is buried with
 * the reason. Duplicates across a restart are possible and harmless: qload's
 * merge keeps the last row of a key.
 *
 * Order. All reads of a stage go through its one connection, one query at a
 * time, and each read's commit is submitted before the next query is sent;
 * the committer applies operations in submission order, so the batches hold
 * a key's versions in the order they were read and merge's "last row wins"
 * is the newest. No other query runs while a page commits.
 *
 * The connection is a PgLink (pglink.h): it never blocks the loop, sets the
 * session up after every connect (ISO dates in UTC, all float digits), runs
 * one query at a time in single-row mode, and reconnects with backoff (0.2 s
 * doubling to 30 s), logged once when it goes down; the stage logs when it
 * is connected again. Pending key jobs are released for a later attempt
 * while the source is down.
 *
 * With an input queue the engine gives the stage key-notice jobs in slots;
 * without one it only runs the watermark extract, from its own timers,
 * started at init. */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pg_reconcile.h"
#include "pglink.h"
#include "pl.h"
#include "sealer.h"
#include "staging.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_DEFAULT 5000
#define INTERVAL_DEFAULT 1.0
#define SEEN_SLOTS 65536 /* recent (key, ts) of watermark rows, for key jobs */

enum { Q_NONE, Q_PAGE, Q_KEY, Q_RECON }; /* the query in flight */

typedef struct PgxStage PgxStage;

/* Staged: what one read brings to a commit: valid rows (normalised) and
 * rejects, each length-prefixed in one buffer. Owned by the commit until
 * its done runs; apply only reads it (it may run twice). */
typedef struct Staged {
    Strbuf rows;      /* [u32 len][msgpack] ... */
    Strbuf rejects;   /* [u32 keylen][key][u32 rowlen][row][u32 errlen][errors] ... */
    size_t nrows, nrejects;
    const char *model, *stage;
    uint64_t version;   /* the model's: the rows are validated against it */
    const SealPolicy *pol;
    Sealer *sealer;   /* told of the batches the appends seal */
} Staged;

/* KJob: a key job (one per slot). */
typedef struct KJob {
    PgxStage *k;
    Slot *slot;
    Staged st;
    Strbuf *key;      /* nkey texts of the notice's key */
    size_t nkey;
    Strbuf table;     /* the notice's table */
    int del;          /* a delete notice ("op": "delete") */
} KJob;

struct PgxStage {
    Stage *stage;
    const Model *m;
    const char *table, *updated, *where;
    char *conninfo;
    double interval;
    unsigned long long page, since;
    SealPolicy pol;
    size_t upd_col;          /* index of the updated column in the select list */
    PgLink link;
    char name[200];              /* the link's, in the logs: "source TABLE" */
    int query;                   /* Q_*: what the query in flight reads */
    int stopped, committing, wm_due, have_cursor;
    ev_timer poll;
    /* watermark */
    Strbuf cur_ts, *cur_key;     /* the committed cursor */
    Strbuf nxt_ts, *nxt_key;     /* the last row of the page being read */
    Strbuf cursor_json;
    Strbuf sql_first, sql_next, sql_key;
    size_t page_rows;
    Staged *page_st;
    /* key jobs waiting for the connection, in order */
    KJob **pending;
    size_t npending, cap;
    KJob *kcur;
    int k_found;
    /* per-row scratch */
    msgpack_sbuffer raw, norm;
    Strbuf errors, keytext;
    Sealer sealer;
    uint64_t *seen;              /* SEEN_SLOTS pairs (key hash, ts hash) */
    Reconcile rec;               /* the reconciliation (pg_reconcile.h), when configured */
};

/* Tombs: the tombstones the reconciliation found, in their own commit. */
typedef struct Tombs {
    PgxStage *k;
    Staged st;
} Tombs;

/* ---------------------------------------------------------------- helpers */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

static void put_u32(Strbuf *b, size_t n)
{
    unsigned char be[4];
    pl_put_be32(be, (uint32_t)n);
    sb_add(b, be, 4);
}

static void staged_reset(Staged *s)
{
    sb_reset(&s->rows);
    sb_reset(&s->rejects);
    s->nrows = s->nrejects = 0;
}

static void staged_init(Staged *s, PgxStage *k)
{
    sb_init(&s->rows);
    sb_init(&s->rejects);
    s->model = k->m->name;
    s->version = k->m->version;
    s->stage = k->stage->conf->name;
    s->pol = &k->pol;
    s->sealer = &k->sealer;
    staged_reset(s);
}

static void staged_free(Staged *s)
{
    sb_free(&s->rows);
    sb_free(&s->rejects);
}

/* staged_apply writes s into t: rows appended to the model's batches, the
 * rejects added (and noted against the open batch). */
static int staged_apply(Txn *t, void *arg)
{
    Staged *s = arg;
    const unsigned char *p = (const unsigned char *)s->rows.buf, *end = p + s->rows.len;
    BatchRec b;
    int rc;
    while (p && p < end) {
        uint32_t n = pl_get_be32(p);
        if ((rc = staging_append(t, s->model, s->version, p + 4, n, s->pol, &b)) != 0)
            return rc;
        if (b.state != BATCH_OPEN)
            sealer_note(s->sealer, b.id);
        p += 4 + n;
    }
    p = (const unsigned char *)s->rejects.buf;
    end = p + s->rejects.len;
    while (p && p < end) {
        uint32_t kl = pl_get_be32(p);
        const char *key = (const char *)p + 4;
        p += 4 + kl;
        uint32_t rl = pl_get_be32(p);
        const void *row = p + 4;
        p += 4 + rl;
        uint32_t el = pl_get_be32(p);
        const char *errs = (const char *)p + 4;
        p += 4 + el;
        char kbuf[256];
        snprintf(kbuf, sizeof kbuf, "%.*s", (int)kl, key);
        RejectRec r = {.model = s->model, .key = kbuf, .stage = s->stage, .queue = "",
                       .row = row, .row_len = rl, .errors = errs, .errors_len = el};
        uint64_t rid;
        if ((rc = reject_add(t, &r, &rid)) != 0 || (rc = staging_note_reject(t, s->model)) != 0)
            return rc;
    }
    return 0;
}

static int is_json_number(const char *s)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* pack_value packs PostgreSQL's text v (len n) as field f's type. */
static void pack_value(msgpack_packer *pk, msgpack_sbuffer *buf, const Field *f, const char *v,
                       size_t n)
{
    char *end;
    switch (f->type) {
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (n && !*end && !errno)
            msgpack_pack_int64(pk, x);
        else
            pack_str(pk, v, n); /* the validator names the type error */
        return;
    }
    case FT_DECIMAL:
        if (is_json_number(v)) {
            msgpack_pack_ext(pk, n, ROW_EXT_NUMBER);
            msgpack_pack_ext_body(pk, v, n);
        } else {
            pack_str(pk, v, n); /* NaN, Infinity: a type error */
        }
        return;
    case FT_BOOLEAN:
        if (n == 1 && (*v == 't' || *v == 'f')) {
            if (*v == 't')
                msgpack_pack_true(pk);
            else
                msgpack_pack_false(pk);
        } else {
            pack_str(pk, v, n);
        }
        return;
    case FT_JSON:
        if (row_from_json(v, n, buf, NULL, 0) != 0)
            pack_str(pk, v, n);
        return;
    default:
        pack_str(pk, v, n);
        return;
    }
}

/* row_of packs the current single-row result (model columns first) into
 * k->raw as a map. */
static void row_of(PgxStage *k, const PGresult *r)
{
    msgpack_packer pk;
    const Model *m = k->m;
    k->raw.size = 0;
    msgpack_packer_init(&pk, &k->raw, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, m->nfields);
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        pack_str(&pk, f->name, strlen(f->name));
        if (PQgetisnull(r, 0, (int)i))
            msgpack_pack_nil(&pk);
        else
            pack_value(&pk, &k->raw, f, PQgetvalue(r, 0, (int)i),
                       (size_t)PQgetlength(r, 0, (int)i));
    }
}

/* stage_row_into validates k->raw and adds it to st (a row or a reject);
 * returns 1 when valid. The key text of the row is left in k->keytext. */
static int stage_row_into(PgxStage *k, Staged *st)
{
    RowView v;
    size_t nerr = 0;
    int valid = 0;
    sb_reset(&k->keytext);
    sb_reset(&k->errors);
    k->norm.size = 0;
    if (row_view(&v, k->raw.data, k->raw.size) != 0)
        return 0; /* we packed it: cannot happen */
    model_row_key(k->m, &v.root, &k->keytext);
    sb_adds(&k->errors, "[");
    int rc = model_validate(k->m, &v.root, &k->norm, &k->errors, &nerr);
    row_view_free(&v);
    if (rc == 0) {
        put_u32(&st->rows, k->norm.size);
        sb_add(&st->rows, k->norm.data, k->norm.size);
        st->nrows++;
        valid = 1;
    } else {
        sb_adds(&k->errors, "]");
        put_u32(&st->rejects, k->keytext.len);
        sb_add(&st->rejects, k->keytext.buf, k->keytext.len);
        put_u32(&st->rejects, k->raw.size);
        sb_add(&st->rejects, k->raw.data, k->raw.size);
        put_u32(&st->rejects, k->errors.len);
        sb_add(&st->rejects, k->errors.buf, k->errors.len);
        st->nrejects++;
        stage_log(k->stage, PL_LOG_WARN, 0, "rejected %s/%s from %s: %.300s", k->m->name,
                  k->keytext.len ? k->keytext.buf : "(no key)", k->table, k->errors.buf);
    }
    return valid;
}

/* tombstone_into validates the tombstone of the row with key (nkey
 * texts: its key columns as PostgreSQL writes them) into st: the row
 * {key..., "_deleted": true}, which model_validate completes with the
 * paranoid column's time. Returns 1 when valid. */
static int tombstone_into(PgxStage *k, const Strbuf *key, Staged *st)
{
    msgpack_packer pk;
    const Model *m = k->m;
    k->raw.size = 0;
    msgpack_packer_init(&pk, &k->raw, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, m->nkey + 1);
    for (size_t i = 0; i < m->nkey; i++) {
        const Field *f = &m->fields[m->key[i]];
        pack_str(&pk, f->name, strlen(f->name));
        pack_value(&pk, &k->raw, f, key[i].buf ? key[i].buf : "", key[i].len);
    }
    pack_str(&pk, "_deleted", 8);
    msgpack_pack_true(&pk);
    return stage_row_into(k, st);
}

/* seen_* remember the (key, ts) of rows the watermark read in this run. */
static size_t seen_slot(const PgxStage *k, const PGresult *r, uint64_t *kh, uint64_t *th)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < k->m->nkey; i++) {
        int c = (int)k->m->key[i];
        h = fnv(PQgetvalue(r, 0, c), (size_t)PQgetlength(r, 0, c) + 1, h);
    }
    *kh = h | 1; /* 0 marks an empty slot */
    *th = fnv(PQgetvalue(r, 0, (int)k->upd_col), (size_t)PQgetlength(r, 0, (int)k->upd_col),
              0xcbf29ce484222325ull);
    return (size_t)(h % SEEN_SLOTS);
}

static void seen_add(PgxStage *k, const PGresult *r)
{
    uint64_t kh, th;
    size_t i = seen_slot(k, r, &kh, &th);
    k->seen[2 * i] = kh;
    k->seen[2 * i + 1] = th;
}

static int seen_has(const PgxStage *k, const PGresult *r)
{
    uint64_t kh, th;
    size_t i = seen_slot(k, r, &kh, &th);
    return k->seen[2 * i] == kh && k->seen[2 * i + 1] == th;
}

/* ---------------------------------------------------------------- cursor */

static void cursor_json(const PgxStage *k, const Strbuf *ts, const Strbuf *key, Strbuf *out)
{
    sb_reset(out);
    sb_adds(out, "{\"ts\":");
    sb_add_json_string(out, ts->buf ? ts->buf : "", ts->len);
    sb_adds(out, ",\"key\":[");
    for (size_t i = 0; i < k->m->nkey; i++) {
        if (i)
            sb_adds(out, ",");
        sb_add_json_string(out, key[i].buf ? key[i].buf : "", key[i].len);
    }
    sb_adds(out, "]}");
}

/* cursor_load reads the stored cursor; 0, or an error (logged). */
static int cursor_load(PgxStage *k)
{
    Strbuf st;
    sb_init(&st);
    int rc = stage_cursor(k->stage, &st);
    k->have_cursor = 0;
    if (rc) {
        stage_log(k->stage, PL_LOG_ERROR, 0, "cannot read the cursor: %s", pl_strerror(rc));
        sb_free(&st);
        return rc;
    }
    if (st.len) {
        msgpack_sbuffer mp;
        msgpack_sbuffer_init(&mp);
        RowView v;
        const msgpack_object *ts, *key;
        if (row_from_json_object(st.buf, st.len, &mp, NULL, 0) == 0 &&
            row_view(&v, mp.data, mp.size) == 0) {
            ts = row_field(&v.root, "ts");
            key = row_field(&v.root, "key");
            if (ts && ts->type == MSGPACK_OBJECT_STR && key && key->type == MSGPACK_OBJECT_ARRAY &&
                key->via.array.size == k->m->nkey) {
                sb_reset(&k->cur_ts);
                sb_add(&k->cur_ts, ts->via.str.ptr, ts->via.str.size);
                k->have_cursor = 1;
                for (size_t i = 0; i < k->m->nkey; i++) {
                    const msgpack_object *o = &key->via.array.ptr[i];
                    sb_reset(&k->cur_key[i]);
                    if (o->type == MSGPACK_OBJECT_STR)
                        sb_add(&k->cur_key[i], o->via.str.ptr, o->via.str.size);
                    else
                        k->have_cursor = 0;
                }
            }
            row_view_free(&v);
        }
        msgpack_sbuffer_destroy(&mp);
        if (!k->have_cursor)
            stage_log(k->stage, PL_LOG_WARN, 0, "the stored cursor '%.200s' is not {\"ts\":..,"
                      "\"key\":[..]} for model '%s'; starting from the beginning", st.buf,
                      k->m->name);
    }
    sb_free(&st);
    return 0;
}

/* ---------------------------------------------------------------- connection */

static void next_work(PgxStage *k);

/* The session: exact text for every value: ISO dates in UTC, all float digits. */
#define SETUP_SQL "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = iso_8601; " \
                  "SET extra_float_digits = 3"

static void release_pending(PgxStage *k, const char *why)
{
    char msg[400];
    snprintf(msg, sizeof msg, "source database: %.300s", why);
    for (size_t i = 0; i < k->npending; i++)
        slot_retry(k->pending[i]->slot, k->link.backoff, msg);
    k->npending = 0;
}

/* link_up: connected (again): catch up at once. */
static void link_up(PgLink *l)
{
    PgxStage *k = l->arg;
    stage_log(k->stage, PL_LOG_INFO, 0, "connected to the source%s; extracting %s into model %s",
              l->again ? " again" : "", k->table, k->m->name);
    k->wm_due = 1;
    if (k->have_cursor)
        reconcile_can_start(&k->rec);
    next_work(k);
}

/* link_down: what was read is lost: the key read in flight and the jobs
 * waiting are put back, the page is read again once it is back. */
static void link_down(PgLink *l, const char *why)
{
    PgxStage *k = l->arg;
    if (k->query == Q_RECON)
        reconcile_source_lost(&k->rec);
    k->query = Q_NONE;
    if (k->kcur) {
        KJob *j = k->kcur;
        k->kcur = NULL;
        slot_retry(j->slot, l->backoff, "source database went away while the row was read");
    }
    release_pending(k, why);
    if (k->page_st)
        staged_reset(k->page_st);
}

static void link_row(PgLink *l, const PGresult *r);
static void link_over(PgLink *l, const char *error);

static const PgLinkOps extract_link = {.up = link_up, .row = link_row, .over = link_over,
                                       .down = link_down};

/* ---------------------------------------------------------------- watermark */

static void page_done(void *arg, int rc);

/* poll_again: the next watermark poll in `interval` seconds. */
static void poll_again(PgxStage *k)
{
    if (!k->stopped)
        ev_timer_again(k->stage->loop, &k->poll);
}

static void page_start(PgxStage *k)
{
    const char *vals[65];
    int n = 0;
    if (k->have_cursor) {
        vals[n++] = k->cur_ts.buf;
        for (size_t i = 0; i < k->m->nkey; i++)
            vals[n++] = k->cur_key[i].buf ? k->cur_key[i].buf : "";
    }
    k->wm_due = 0;
    k->page_rows = 0;
    staged_reset(k->page_st);
    k->query = Q_PAGE;
    pglink_query(&k->link, k->have_cursor ? k->sql_next.buf : k->sql_first.buf, n, vals);
}

static void page_row(PgxStage *k, const PGresult *r)
{
    k->page_rows++;
    row_of(k, r);
    stage_row_into(k, k->page_st);
    seen_add(k, r);
    sb_reset(&k->nxt_ts);
    sb_add(&k->nxt_ts, PQgetvalue(r, 0, (int)k->upd_col),
           (size_t)PQgetlength(r, 0, (int)k->upd_col));
    for (size_t i = 0; i < k->m->nkey; i++) {
        int c = (int)k->m->key[i];
        sb_reset(&k->nxt_key[i]);
        sb_add(&k->nxt_key[i], PQgetvalue(r, 0, c), (size_t)PQgetlength(r, 0, c));
    }
}

/* page_end commits the page just read (rows, rejects and cursor). */
static void page_end(PgxStage *k)
{
    if (k->page_rows == 0) {
        poll_again(k);
        return;
    }
    sealer_touch(&k->sealer);
    Emit *b = emit_new(k->stage);
    emit_extra(b, staged_apply, k->page_st);
    cursor_json(k, &k->nxt_ts, k->nxt_key, &k->cursor_json);
    emit_cursor(b, k->cursor_json.buf, k->cursor_json.len);
    k->committing = 1;
    emit_commit(b, page_done, k);
}

static void page_done(void *arg, int rc)
{
    PgxStage *k = arg;
    Staged *st = k->page_st;
    k->committing = 0;
    if (rc) {
        /* The store kept the old cursor: read the page again later. */
        stage_log(k->stage, PL_LOG_ERROR, 0, "commit of a page of %zu rows failed: %s; reading "
                  "it again", k->page_rows, pl_strerror(rc));
        poll_again(k);
    } else {
        sb_reset(&k->cur_ts);
        sb_add(&k->cur_ts, k->nxt_ts.buf, k->nxt_ts.len);
        for (size_t i = 0; i < k->m->nkey; i++) {
            sb_reset(&k->cur_key[i]);
            sb_add(&k->cur_key[i], k->nxt_key[i].buf, k->nxt_key[i].len);
        }
        k->have_cursor = 1;
        reconcile_can_start(&k->rec);
        stage_log(k->stage, PL_LOG_DEBUG, 0, "extracted %zu rows (%zu rejected) up to %s",
                  st->nrows, st->nrejects, k->cursor_json.buf);
        if (k->page_rows >= k->page)
            k->wm_due = 1; /* a full page: there may be more */
        else
            poll_again(k);
    }
    staged_reset(st);
    next_work(k);
}

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    PgxStage *k = container_of(w, PgxStage, poll);
    k->wm_due = 1;
    next_work(k);
}

void pg_extract_wake(Stage *s)
{
    PgxStage *k = s->data;
    if (!k || k->stopped)
        return;
    k->wm_due = 1;
    pglink_start(&k->link); /* down: the source is likely back, try now */
    next_work(k);
}

/* ---------------------------------------------------------------- key jobs */

static void key_start(PgxStage *k, KJob *j)
{
    const char *vals[130];
    int n = 0;
    for (size_t i = 0; i < k->m->nkey; i++)
        vals[n++] = j->key[i].buf;
    vals[n++] = k->cur_ts.buf;
    for (size_t i = 0; i < k->m->nkey; i++)
        vals[n++] = k->cur_key[i].buf ? k->cur_key[i].buf : "";
    k->kcur = j;
    k->k_found = 0;
    staged_reset(&j->st);
    k->query = Q_KEY;
    pglink_query(&k->link, k->sql_key.buf, n, vals);
}

static void key_row(PgxStage *k, const PGresult *r)
{
    KJob *j = k->kcur;
    k->k_found++;
    const char *ahead = PQgetvalue(r, 0, (int)k->m->nfields);
    const char *passes = PQgetvalue(r, 0, (int)k->m->nfields + 1);
    if (passes[0] != 't') /* filtered out (where:, since:): not for the copy */
        return;
    if (ahead[0] == 't') /* the watermark extract will bring it */
        return;
    if (seen_has(k, r)) /* this very version was staged by the watermark */
        return;
    row_of(k, r);
    stage_row_into(k, &j->st);
}

static void key_end(PgxStage *k)
{
    KJob *j = k->kcur;
    k->kcur = NULL;
    if (j->del && k->k_found == 0) /* the source says the row is gone: a tombstone */
        tombstone_into(k, j->key, &j->st);
    if (j->st.nrows || j->st.nrejects) {
        sealer_touch(&k->sealer);
        slot_extra(j->slot, staged_apply, &j->st);
        stage_log(k->stage, PL_LOG_DEBUG, j->slot->id, "key notice: staged %zu rows, %zu rejected",
                  j->st.nrows, j->st.nrejects);
    }
    slot_done(j->slot);
}

#define NOTICE_SHAPE "a key notice is {\"table\":T,\"key\":{column:value,...}}, with " \
                     "\"op\":\"delete\" for a delete"

/* table_is tells whether the notice's table t names the stage's table
 * (schema.table, or table alone). */
static int table_is(const PgxStage *k, const char *t)
{
    if (!strcmp(t, k->table))
        return 1;
    const char *dot = strrchr(k->table, '.');
    if (dot && !strcmp(t, dot + 1))
        return 1;
    const char *td = strrchr(t, '.');
    return !dot && td && !strncmp(t, "public.", 7) && !strcmp(td + 1, k->table);
}

static void pgx_start(Slot *s)
{
    PgxStage *k = s->stage->data;
    KJob *j = s->data;
    char err[256];
    const msgpack_object *body;
    Strbuf *t = &j->table;
    j->slot = s;
    if (slot_body(s, &body, err, sizeof err) != 0) {
        slot_buryf(s, "job body: %s; " NOTICE_SHAPE, err);
        return;
    }
    const msgpack_object *key = row_field(body, "key");
    sb_reset(t);
    if (row_field_text(body, "table", t) != 0 || !key || key->type != MSGPACK_OBJECT_MAP) {
        slot_buryf(s, "job body has no \"table\" or no \"key\" object; " NOTICE_SHAPE);
        return;
    }
    const msgpack_object *op = row_field(body, "op");
    j->del = 0;
    if (op && op->type != MSGPACK_OBJECT_STR && op->type != MSGPACK_OBJECT_NIL) {
        slot_buryf(s, "the notice's \"op\" is not a string; " NOTICE_SHAPE);
        return;
    }
    if (op && op->type == MSGPACK_OBJECT_STR && op->via.str.size == 6 &&
        !strncasecmp(op->via.str.ptr, "delete", 6))
        j->del = 1;
    if (!table_is(k, t->buf)) {
        slot_buryf(s, "the notice is for table '%.100s' but stage '%s' extracts '%s'; send it to "
                   "the pg_extract stage of that table", t->buf, s->stage->conf->name, k->table);
        return;
    }
    for (size_t i = 0; i < k->m->nkey; i++) {
        const char *name = k->m->fields[k->m->key[i]].name;
        const msgpack_object *o = row_field(key, name);
        sb_reset(&j->key[i]);
        if (!o || o->type == MSGPACK_OBJECT_NIL || row_field_text(key, name, &j->key[i]) != 0) {
            slot_buryf(s, "the notice's key has no value for key column '%s' of model '%s'; "
                       NOTICE_SHAPE, name, k->m->name);
            return;
        }
    }
    if (k->stopped) {
        slot_give_back(s, "engine draining");
        return;
    }
    if (!k->have_cursor) { /* the watermark extract has not begun: it brings every row */
        slot_done(s);
        return;
    }
    if (k->npending == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 16;
        k->pending = xrealloc(k->pending, k->cap * sizeof *k->pending);
    }
    k->pending[k->npending++] = j;
    next_work(k);
}

/* ---------------------------------------------------------------- driving */

/* next_work starts the next query when the connection is idle: key jobs
 * first (they are few and short), then a due watermark page. */
static void next_work(PgxStage *k)
{
    if (k->link.state != PGLINK_READY || k->committing)
        return;
    if (k->npending) {
        KJob *j = k->pending[0];
        memmove(k->pending, k->pending + 1, --k->npending * sizeof *k->pending);
        key_start(k, j);
        return;
    }
    if (k->wm_due && !k->stopped) {
        page_start(k);
        return;
    }
    if (k->rec.wants_source && !k->stopped && k->have_cursor)
        reconcile_next(&k->rec); /* the reconciliation's query, when nothing else waits */
}

static void link_row(PgLink *l, const PGresult *r)
{
    PgxStage *k = l->arg;
    if (k->query == Q_PAGE)
        page_row(k, r);
    else if (k->query == Q_KEY)
        key_row(k, r);
    else if (k->query == Q_RECON)
        reconcile_source_row(&k->rec, r);
}

/* link_over: the query in flight is over. */
static void link_over(PgLink *l, const char *error)
{
    PgxStage *k = l->arg;
    int q = k->query;
    k->query = Q_NONE;
    if (q == Q_RECON) { /* its failure ends its pass, not the link */
        reconcile_source_over(&k->rec, error);
        next_work(k);
        return;
    }
    if (error && q == Q_KEY && !strncmp(l->sqlstate, "22", 2)) {
        /* The notice's key is not a value of the key column's type. */
        KJob *j = k->kcur;
        k->kcur = NULL;
        slot_buryf(j->slot, "the notice's key does not fit table %s: %s", k->table, error);
        next_work(k);
        return;
    }
    if (error) {
        /* A statement error (a missing column, a bad filter): back off as
         * for a connection failure. */
        stage_log(k->stage, PL_LOG_ERROR, 0, "query on %s failed: %s", k->table, error);
        pglink_fail(l, "the query failed");
        return;
    }
    if (q == Q_PAGE)
        page_end(k);
    else if (q == Q_KEY)
        key_end(k);
    next_work(k);
}

/* ---------------------------------------------------------------- init */

static void add_table(Strbuf *b, const char *table)
{
    const char *dot = strchr(table, '.');
    if (dot) {
        char *schema = xstrndup(table, (size_t)(dot - table));
        model_sql_ident(b, schema);
        free(schema);
        sb_adds(b, ".");
        model_sql_ident(b, dot + 1);
    } else {
        model_sql_ident(b, table);
    }
}

/* build_sql writes the three statements (see the header). */
static void build_sql(PgxStage *k)
{
    const Model *m = k->m;
    Strbuf cols, order, filt;
    sb_init(&cols);
    sb_init(&order);
    sb_init(&filt);
    for (size_t i = 0; i < m->nfields; i++) {
        if (i)
            sb_adds(&cols, ", ");
        model_sql_ident(&cols, m->fields[i].name);
    }
    model_sql_ident(&order, k->updated);
    for (size_t i = 0; i < m->nkey; i++) {
        sb_adds(&order, ", ");
        model_sql_ident(&order, m->fields[m->key[i]].name);
    }
    if (k->where)
        sb_addf(&filt, " AND (%s)", k->where);
    if (k->since) {
        sb_adds(&filt, " AND ");
        model_sql_ident(&filt, k->updated);
        sb_addf(&filt, " > now() - interval '%llu seconds'", k->since);
    }
    /* first page: no cursor */
    Strbuf *b = &k->sql_first;
    sb_addf(b, "SELECT %s FROM ", cols.buf);
    add_table(b, k->table);
    sb_adds(b, " WHERE ");
    model_sql_ident(b, k->updated);
    sb_addf(b, " IS NOT NULL%s ORDER BY %s LIMIT %llu", filt.buf ? filt.buf : "", order.buf,
            k->page);
    /* next pages: after the cursor ($1 ts, $2.. key) */
    b = &k->sql_next;
    sb_addf(b, "SELECT %s FROM ", cols.buf);
    add_table(b, k->table);
    sb_addf(b, " WHERE (%s) > (", order.buf);
    for (size_t i = 0; i <= m->nkey; i++)
        sb_addf(b, "%s$%zu", i ? ", " : "", i + 1);
    sb_addf(b, ")%s ORDER BY %s LIMIT %llu", filt.buf ? filt.buf : "", order.buf, k->page);
    /* key: $1..$n the key, then the cursor; two more columns say "ahead"
     * and whether the row passes the filters (not in the WHERE: a delete
     * notice must see a row that is there but filtered out) */
    b = &k->sql_key;
    sb_addf(b, "SELECT %s, (%s) > (", cols.buf, order.buf);
    for (size_t i = 0; i <= m->nkey; i++)
        sb_addf(b, "%s$%zu", i ? ", " : "", m->nkey + i + 1);
    sb_addf(b, "), coalesce((true%s), false) FROM ", filt.buf ? filt.buf : "");
    add_table(b, k->table);
    sb_adds(b, " WHERE ");
    for (size_t i = 0; i < m->nkey; i++) {
        if (i)
            sb_adds(b, " AND ");
        model_sql_ident(b, m->fields[m->key[i]].name);
        sb_addf(b, " = $%zu", i + 1);
    }
    sb_free(&cols);
    sb_free(&order);
    sb_free(&filt);
}

static int fail(char *err, size_t errlen, const Stage *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, const Stage *s, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s:%d: stage '%s': %s", engine_pipeline(s->engine)->path, s->conf->line,
             s->conf->name, msg);
    return PL_EINVAL;
}

static const ConfKey pgx_keys[] = {
    {"dsn", KEY_STR, 1, 0, 0, STAGE_DSN_HINT, stage_check_dsn},
    {"table", KEY_STR, 0, 0, 0, NULL, NULL},
    {"model", KEY_MODEL, 1, 0, 0, STAGE_MODEL_HINT, NULL},
    {"updated_column", KEY_STR, 1, 0, 0, "name the column the source sets on every change, "
                                         "like updated_column: updated_at", NULL},
    {"interval", KEY_SECS, 0, 0.01, CONF_SECS_MAX, NULL, NULL},
    {"page", KEY_UINT, 0, 1, 1000000, NULL, NULL},
    {"since", KEY_UINT, 0, 1, 400000000, NULL, NULL},
    {"where", KEY_STR, 0, 0, 0, NULL, NULL},
    SEALER_KEY_ROWS,
    SEALER_KEY_SECONDS,
    RECONCILE_KEYS,
    {0},
};

/* ---------------------------------------------------------------- reconciliation */

static void rec_query(void *arg, const char *sql, int n, const char *const *vals)
{
    PgxStage *k = arg;
    k->query = Q_RECON;
    pglink_query(&k->link, sql, n, vals);
}

static void rec_wake(void *arg)
{
    next_work(arg);
}

static void tombs_done(void *arg, int rc)
{
    Tombs *tb = arg;
    PgxStage *k = tb->k;
    if (rc)
        stage_log(k->stage, PL_LOG_ERROR, 0, "the commit of %zu deletes the reconciliation found "
                  "failed: %s", tb->st.nrows, pl_strerror(rc));
    staged_free(&tb->st);
    free(tb);
    reconcile_gone_done(&k->rec, rc);
    next_work(k);
}

/* rec_gone stages the tombstones of n keys the source lacks, in one commit
 * submitted now (before the next source query: see "Order"). */
static void rec_gone(void *arg, const Strbuf *keys, size_t n)
{
    PgxStage *k = arg;
    Tombs *tb = xcalloc(1, sizeof *tb);
    tb->k = k;
    staged_init(&tb->st, k);
    for (size_t i = 0; i < n; i++)
        tombstone_into(k, keys + i * k->m->nkey, &tb->st);
    stage_log(k->stage, PL_LOG_INFO, 0, "reconciliation: %zu rows of %s are gone from the source; "
              "staging their deletes", n, k->table);
    sealer_touch(&k->sealer);
    Emit *e = emit_new(k->stage);
    emit_extra(e, staged_apply, &tb->st);
    emit_commit(e, tombs_done, tb);
}

static const ReconcileOps rec_ops = {.source_query = rec_query, .wake = rec_wake,
                                     .gone = rec_gone};

static int pgx_init(Stage *s, char *err, size_t errlen)
{
    const Pipeline *p = engine_pipeline(s->engine);
    const char *dsn = NULL, *model = NULL;
    int rc;
    PgxStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    k->interval = INTERVAL_DEFAULT;
    k->page = PAGE_DEFAULT;
    if ((rc = stage_conf_str(s, "dsn", &dsn, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "table", &k->table, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "model", &model, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "updated_column", &k->updated, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "interval", &k->interval, err, errlen)) != 0 ||
        (rc = stage_conf_uint(s, "page", &k->page, err, errlen)) != 0 ||
        (rc = stage_conf_uint(s, "since", &k->since, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "where", &k->where, err, errlen)) != 0 ||
        (rc = sealer_conf(s, &k->pol, err, errlen)) != 0)
        return rc;
    if (!dsn)
        return fail(err, errlen, s, "dsn: is required; give a libpq conninfo or env:NAME");
    if (!model || !p->models || !(k->m = models_find(p->models, model)))
        return fail(err, errlen, s, "model '%s' is not declared; declare it under models:",
                    model ? model : "");
    if (!k->table)
        k->table = k->m->table;
    for (size_t i = 0; i < k->m->nfields; i++)
        if (k->m->fields[i].from)
            return fail(err, errlen, s, "model '%s' reads property '%s' from '%s' (from:), but "
                        "pg_extract selects the table's columns by the properties' names; name "
                        "the property as the column (or give this table a model without from:)",
                        k->m->name, k->m->fields[i].name, k->m->fields[i].from);
    if (k->m->nkey == 0 || k->m->nkey > 60)
        return fail(err, errlen, s, "model '%s' has no key; mark its key columns key: true (the "
                    "extract orders rows by (%s, key))", k->m->name,
                    k->updated ? k->updated : "updated_column");
    if (!k->updated)
        return fail(err, errlen, s, "updated_column: is required; name the column the source "
                    "sets on every insert and update, like updated_column: updated_at");
    k->upd_col = SIZE_MAX;
    for (size_t i = 0; i < k->m->nfields; i++)
        if (!strcmp(k->m->fields[i].name, k->updated))
            k->upd_col = i;
    if (k->upd_col == SIZE_MAX)
        return fail(err, errlen, s, "updated_column '%s' is not a property of model '%s'; "
                    "declare it (type: datetime) or name another column", k->updated,
                    k->m->name);
    if (k->page == 0)
        k->page = PAGE_DEFAULT;
    if ((rc = stage_pg_dsn(s, dsn, &k->conninfo, err, errlen)) != 0)
        return rc;
    k->cur_key = xcalloc(k->m->nkey, sizeof *k->cur_key);
    k->nxt_key = xcalloc(k->m->nkey, sizeof *k->nxt_key);
    for (size_t i = 0; i < k->m->nkey; i++) {
        sb_init(&k->cur_key[i]);
        sb_init(&k->nxt_key[i]);
    }
    sb_init(&k->cur_ts);
    sb_init(&k->nxt_ts);
    sb_init(&k->cursor_json);
    sb_init(&k->sql_first);
    sb_init(&k->sql_next);
    sb_init(&k->sql_key);
    sb_init(&k->errors);
    sb_init(&k->keytext);
    msgpack_sbuffer_init(&k->raw);
    msgpack_sbuffer_init(&k->norm);
    k->page_st = xcalloc(1, sizeof *k->page_st);
    staged_init(k->page_st, k);
    k->seen = xcalloc(2 * SEEN_SLOTS, sizeof *k->seen);
    build_sql(k);
    Strbuf qt = SB_INIT;
    add_table(&qt, k->table);
    rc = reconcile_conf(&k->rec, s, k->m, qt.buf, k->where, &rec_ops, k, err, errlen);
    sb_free(&qt);
    if (rc)
        return rc;
    if ((rc = cursor_load(k)) != 0)
        return fail(err, errlen, s, "cannot read its cursor: %s", pl_strerror(rc));
    snprintf(k->name, sizeof k->name, "source %s", k->table);
    pglink_init(&k->link, s, k->conninfo, SETUP_SQL, k->name, NULL, &extract_link, k);
    ev_timer_init(&k->poll, on_poll, 0, k->interval);
    sealer_init(&k->sealer, s, k->pol.after_s);
    sealer_add(&k->sealer, k->m->name, &k->pol);
    sealer_start(&k->sealer);
    pglink_start(&k->link); /* as soon as the loop runs */
    stage_log(s, PL_LOG_INFO, 0, "extracting %s into model %s by (%s, key), %llu rows a page%s",
              k->table, k->m->name, k->updated, k->page, k->have_cursor ? " from the cursor" : "");
    return 0;
}

static void pgx_stop(Stage *s)
{
    PgxStage *k = s->data;
    if (!k)
        return;
    k->stopped = 1;
    ev_timer_stop(s->loop, &k->poll);
    sealer_stop(&k->sealer);
    reconcile_stop(&k->rec);
    for (size_t i = 0; i < k->npending; i++)
        slot_give_back(k->pending[i]->slot, "engine draining");
    k->npending = 0;
    /* A page being read is dropped (read again next run); a key read in
     * flight finishes and acks its job. */
    pglink_stop(&k->link, k->query == Q_KEY);
}

static void pgx_slot_init(Slot *s)
{
    KJob *j = s->data;
    j->k = s->stage->data;
    staged_init(&j->st, j->k);
    j->nkey = j->k->m->nkey;
    j->key = xcalloc(j->nkey, sizeof *j->key);
    for (size_t q = 0; q < j->nkey; q++)
        sb_init(&j->key[q]);
    sb_init(&j->table);
}

static void pgx_slot_fini(Slot *s)
{
    KJob *j = s->data;
    staged_free(&j->st);
    sb_free(&j->table);
    for (size_t q = 0; q < j->nkey; q++)
        sb_free(&j->key[q]);
    free(j->key);
}

static void pgx_fini(Stage *s)
{
    PgxStage *k = s->data;
    if (!k)
        return;
    ev_timer_stop(s->loop, &k->poll);
    sealer_stop(&k->sealer);
    reconcile_stop(&k->rec);
    pglink_stop(&k->link, 0);
    /* A commit still in flight (a forced stop) reads these: leave them. */
    if (k->committing || sealer_busy(&k->sealer) || reconcile_busy(&k->rec) || s->in_flight)
        return;
    reconcile_free(&k->rec);
    for (size_t i = 0; k->cur_key && i < k->m->nkey; i++) {
        sb_free(&k->cur_key[i]);
        sb_free(&k->nxt_key[i]);
    }
    free(k->cur_key);
    free(k->nxt_key);
    sb_free(&k->cur_ts);
    sb_free(&k->nxt_ts);
    sb_free(&k->cursor_json);
    sb_free(&k->sql_first);
    sb_free(&k->sql_next);
    sb_free(&k->sql_key);
    sb_free(&k->errors);
    sb_free(&k->keytext);
    msgpack_sbuffer_destroy(&k->raw);
    msgpack_sbuffer_destroy(&k->norm);
    if (k->page_st)
        staged_free(k->page_st);
    free(k->page_st);
    sealer_free(&k->sealer);
    free(k->seen);
    free(k->pending);
    free(k->conninfo);
    free(k);
    s->data = NULL;
}

const StageKind kind_pg_extract = {
    .spec = {.name = "pg_extract", .article = "a", .flags = KIND_SINK | KIND_INPUT_OPTIONAL,
             .keys = pgx_keys},
    .slot_size = sizeof(KJob),
    .init = pgx_init, .slot_init = pgx_slot_init, .start = pgx_start, .stop = pgx_stop,
    .fini = pgx_fini, .slot_fini = pgx_slot_fini};
