/* qload_copy.c: the rows of a batch streamed into a COPY, the fast path
 * (COPY straight into the table, or into a temp table and merged from
 * there) and the SQL that moves rows from a temp table into the table.
 *
 * LMDB transactions are short and never span PostgreSQL I/O: rows are read in
 * pages (at most PAGE_ROWS rows or SEND_BYTES of CSV per read transaction),
 * encoded into one reused buffer, and sent with PQputCopyData after the read
 * transaction ended. Memory stays flat whatever the batch size. */
#include "qload.h"

#include "model.h"
#include "pl.h"
#include "rec.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PAGE_ROWS 20000u            /* rows per read transaction */
#define SEND_BYTES (512u << 10)     /* CSV bytes per page and per PQputCopyData */
#define UNMAP_PAGES 8               /* give back the map's pages every 8 pages read */

/* A merge first tries to COPY straight into the table (as fast as append)
 * inside a savepoint: that works whenever no key of the batch is in the
 * table yet (an initial copy, new rows). A key that is there (a unique
 * violation) or a deleted row in the batch rolls back to the savepoint and
 * merges through the temp table; the model then skips the direct try for
 * its next DIRECT_BACKOFF batches, so a stream of updates does not pay for
 * a failed try every time. */
#define DIRECT_BACKOFF 16

/* ------------------------------------------------------------ streaming */

typedef struct Stream {
    Loader *L;
    int op, seq;            /* model_csv_row's op column; a _seq column */
    int direct;             /* straight into the table: a deleted row stops it */
    uint32_t from;          /* next seq to read */
    uint32_t in_page;       /* rows read by this page */
    uint64_t limit;         /* stop the page after this many rows sent (seam), or 0 */
    uint64_t lines;         /* count rows to find line `find` (K_LINE), else 0 */
    uint64_t find;
    uint32_t found;         /* the seq of line `find` */
    int bad;                /* a row that is not a map: its seq in bad_seq */
    uint32_t bad_seq;
    Strbuf *out;            /* where rows are encoded */
} Stream;

enum { PAGE_FULL = 1, PAGE_FOUND = 2, PAGE_BAD = 3, PAGE_DELETE = 4 };

static void add_seq(Strbuf *b, uint32_t seq)
{
    /* model_csv_row ends the line with "\n": put ",seq" before it. */
    if (b->len && b->buf[b->len - 1] == '\n')
        sb_setlen(b, b->len - 1);
    sb_add(b, ",", 1);
    sb_add_u64(b, seq);
    sb_add(b, "\n", 1);
}

static int row_fn(uint32_t seq, const void *mp, size_t len, void *arg)
{
    Stream *st = arg;
    Loader *L = st->L;
    msgpack_object o;
    size_t off = 0;

    st->from = seq + 1;
    st->in_page++;
    if (st->find) {
        if (++st->lines == st->find) {
            st->found = seq;
            return PAGE_FOUND;
        }
        return 0;
    }
    msgpack_zone_clear(&L->zone);
    /* Checked first: msgpack_unpack allocates what a damaged count says. */
    if (rec_wellformed(mp, len) != 0 ||
        msgpack_unpack(mp, len, &off, &L->zone, &o) != MSGPACK_UNPACK_SUCCESS) {
        st->bad = 1;
        st->bad_seq = seq;
        return PAGE_BAD;
    }
    if (st->direct) {
        const msgpack_object *d = row_field(&o, "_deleted");
        if (d && d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean)
            return PAGE_DELETE;
    }
    if (model_csv_row(L->m, &o, st->op, st->out) != 0) {
        st->bad = 1;
        st->bad_seq = seq;
        return PAGE_BAD;
    }
    if (st->seq)
        add_seq(st->out, seq);
    L->sent++;
    L->live++;
    if (st->limit && L->sent >= st->limit)
        return PAGE_FULL;
    return st->out->len >= SEND_BYTES ? PAGE_FULL : 0;
}

static int page_fn(Txn *t, void *arg)
{
    Stream *st = arg;
    st->in_page = 0;
    return batch_rows(t, st->L->b.id, st->from, PAGE_ROWS, row_fn, st);
}

/* find_line returns the seq of the n-th row (1-based) the stream sends. */
int qload_find_line(Loader *L, uint64_t n, uint32_t *seq)
{
    Stream st = {.L = L, .find = n};
    int rc;
    do {
        rc = store_read(L->s, page_fn, &st);
        if (rc == PAGE_FOUND) {
            *seq = st.found;
            return 0;
        }
        if (rc)
            return rc;
    } while (st.in_page == PAGE_ROWS);
    return PL_ENOBATCH;
}

/* unmap_store gives back the pages of the store's map that reading touched
 * (they stay in the page cache): LMDB maps data.mdb read-only and shared, so
 * this loses nothing, and qload's resident size stays flat however big the
 * batch. The map is found in /proc/self/maps by data.mdb's inode (LMDB does
 * not tell its address). No transaction of this process may be open. */
void qload_unmap_store(Loader *L)
{
    char path[4096], line[4096];
    struct stat sb;
    FILE *f;

    snprintf(path, sizeof path, "%s/data.mdb", store_path(L->s));
    if (stat(path, &sb) != 0 || !(f = fopen("/proc/self/maps", "r")))
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 &&
            ino == (unsigned long)sb.st_ino && strstr(line, "data.mdb"))
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
    fclose(f);
}

/* Sender: a thread that hands filled buffers to PQputCopyData while the
 * main thread reads and encodes the next page (double buffering), so that
 * reading the store and writing CSV overlap with PostgreSQL's parsing
 * instead of taking turns with it. The connection belongs to the sender
 * from sender_start to sender_stop; the store stays with the main thread. */
typedef struct Sender {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    PGconn *pg;
    Strbuf *buf;            /* the Loader's two buffers */
    int full[2];            /* buffer i waits to be sent */
    int quit, failed;
    pthread_t th;
} Sender;

static void *sender_main(void *arg)
{
    Sender *s = arg;
    int i = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->full[i] && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->full[i])
            break;
        int skip = s->failed;
        pthread_mutex_unlock(&s->mu);
        int ok = skip || PQputCopyData(s->pg, s->buf[i].buf, (int)s->buf[i].len) == 1;
        pthread_mutex_lock(&s->mu);
        if (!ok)
            s->failed = 1;
        s->full[i] = 0;
        pthread_cond_broadcast(&s->cv);
        i ^= 1;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* sender_wait waits until buffer i is free (i < 0: both); returns failed. */
static int sender_wait(Sender *s, int i)
{
    pthread_mutex_lock(&s->mu);
    while (i < 0 ? s->full[0] || s->full[1] : s->full[i])
        pthread_cond_wait(&s->cv, &s->mu);
    int failed = s->failed;
    pthread_mutex_unlock(&s->mu);
    return failed;
}

static void sender_give(Sender *s, int i)
{
    pthread_mutex_lock(&s->mu);
    s->full[i] = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* sender_stop sends what is queued, ends the thread; returns failed. */
static int sender_stop(Sender *s)
{
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    return s->failed;
}

/* copy_rows runs copy_sql (a COPY ... FROM STDIN) and streams the batch's
 * rows into it. K_OK, or the kind of the failure with L->err. */
int qload_copy_rows(Loader *L, const char *copy_sql, int op, int seq, int direct)
{
    Stream st = {.L = L, .op = op, .seq = seq, .direct = direct};
    Sender snd = {.pg = L->pg, .buf = L->bufs};
    PGresult *res = PQexec(L->pg, copy_sql);
    int k = K_OK, rc, more = 1, cur = 0, failed;
    unsigned pages = 0;

    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        k = qload_classify(L, res);
        PQclear(res);
        return k;
    }
    PQclear(res);
    L->sent = 0;
    if (L->crash == CRASH_DURING_COPY) {
        uint64_t half = (L->b.rows - L->b.removed + 1) / 2;
        st.limit = half ? half : 1;
    }
    pthread_mutex_init(&snd.mu, NULL);
    pthread_cond_init(&snd.cv, NULL);
    if ((rc = pthread_create(&snd.th, NULL, sender_main, &snd)) != 0) {
        pthread_mutex_destroy(&snd.mu);
        pthread_cond_destroy(&snd.cv);
        snprintf(L->err, sizeof L->err, "cannot start the sender thread: %s", strerror(rc));
        PQputCopyEnd(L->pg, "qload could not start its sender");
        while ((res = PQgetResult(L->pg)) != NULL)
            PQclear(res);
        return K_LOCAL;
    }
    while (more) {
        if (sender_wait(&snd, cur))
            break;
        st.out = &L->bufs[cur];
        sb_reset(st.out);
        rc = store_read(L->s, page_fn, &st);
        if (++pages % UNMAP_PAGES == 0)
            qload_unmap_store(L);
        if (rc == PAGE_DELETE) {
            k = K_NODIRECT;
            break;
        }
        if (rc == PAGE_BAD) {
            snprintf(L->err, sizeof L->err,
                     "row %" PRIu32 " of batch %" PRIu64 " is not a row of model %s (a damaged "
                     "store?); inspect it with qctl", st.bad_seq, L->b.id, L->m->name);
            k = K_PERM;
            break;
        }
        if (rc != 0 && rc != PAGE_FULL) {
            snprintf(L->err, sizeof L->err, "reading batch %" PRIu64 " from the store: %s",
                     L->b.id, pl_strerror(rc));
            k = K_LOCAL;
            break;
        }
        more = rc == PAGE_FULL || st.in_page == PAGE_ROWS;
        if (st.out->len) {
            sender_give(&snd, cur);
            cur ^= 1;
        }
        if (st.limit && L->sent >= st.limit) {
            /* The seam: half the rows are on their way. */
            sender_wait(&snd, -1);
            PQflush(L->pg);
            raise(SIGKILL);
        }
        qload_progress(L, 0);
    }
    failed = sender_stop(&snd);
    qload_unmap_store(L);
    if (failed || PQstatus(L->pg) == CONNECTION_BAD)
        return qload_classify(L, NULL);
    if (PQputCopyEnd(L->pg, k == K_OK ? NULL : "qload gave up on this COPY") != 1)
        return qload_classify(L, NULL);
    while ((res = PQgetResult(L->pg)) != NULL) {
        int k2 = qload_pg_check(L, res);
        if (k == K_OK)
            k = k2;
    }
    if (k == K_NODIRECT && PQstatus(L->pg) == CONNECTION_BAD)
        return qload_classify(L, NULL);
    return k;
}

/* ------------------------------------------------------------ SQL */

/* add_col: "c" AS "c", or "c"::type AS "c" on the careful path. */
static void add_col(Loader *L, Strbuf *b, size_t i, int cast)
{
    model_sql_ident(b, L->cols[i]);
    if (cast) {
        sb_adds(b, "::");
        sb_adds(b, L->types[i]);
    }
    sb_adds(b, " AS ");
    model_sql_ident(b, L->cols[i]);
}

void qload_add_cols(Loader *L, Strbuf *b, const char *prefix)
{
    for (size_t i = 0; i < L->ncols; i++) {
        if (i)
            sb_adds(b, ", ");
        if (prefix)
            sb_adds(b, prefix);
        model_sql_ident(b, L->cols[i]);
    }
}

static void add_keys(Loader *L, Strbuf *b, const char *prefix)
{
    for (size_t i = 0; i < L->m->nkey; i++) {
        if (i)
            sb_adds(b, ", ");
        if (prefix)
            sb_adds(b, prefix);
        model_sql_ident(b, L->m->fields[L->m->key[i]].name);
    }
}

static int is_key(const Model *m, const char *col)
{
    for (size_t i = 0; i < m->nkey; i++)
        if (!strcmp(m->fields[m->key[i]].name, col))
            return 1;
    return 0;
}

/* add_source: the rows of src in [a, z] (all when a > z), columns cast
 * on the careful path, as "(SELECT ... ) c". */
static void add_source(Loader *L, Strbuf *b, const char *src, int cast, int merge,
                       uint64_t a, uint64_t z)
{
    sb_adds(b, "(SELECT ");
    for (size_t i = 0; i < L->ncols; i++) {
        if (i)
            sb_adds(b, ", ");
        add_col(L, b, i, cast);
    }
    if (merge)
        sb_adds(b, ", _op");
    sb_addf(b, ", _seq FROM %s", src);
    if (a <= z)
        sb_addf(b, " WHERE _seq BETWEEN %" PRIu64 " AND %" PRIu64, a, z);
    sb_adds(b, ") c");
}

/* add_last_per_key: the last row (highest _seq) of each key among the rows
 * of src in [a, z] that pass where (" WHERE ...", or ""), as
 * "(SELECT DISTINCT ON (keys) * FROM ... ) s". */
static void add_last_per_key(Loader *L, Strbuf *b, const char *src, int cast, uint64_t a,
                             uint64_t z, const char *where)
{
    sb_adds(b, "(SELECT DISTINCT ON (");
    add_keys(L, b, NULL);
    sb_adds(b, ") * FROM ");
    add_source(L, b, src, cast, 1, a, z);
    sb_adds(b, where);
    sb_adds(b, " ORDER BY ");
    add_keys(L, b, NULL);
    sb_adds(b, ", _seq DESC) s");
}

/* load_sql writes the statements that move rows [a, z] of src into the
 * table: append, an INSERT; merge, the upsert of the last update of each
 * key, then for the keys whose last row is a delete (a tombstone) the
 * DELETE of the row, or with on_delete: soft the update of the paranoid
 * column. */
void qload_load_sql(Loader *L, Strbuf *b, const char *src, int cast, uint64_t a, uint64_t z)
{
    const Model *m = L->m;
    int merge = L->o.merge;

    sb_adds(b, "INSERT INTO ");
    model_sql_ident(b, m->table);
    sb_adds(b, " (");
    qload_add_cols(L, b, NULL);
    sb_adds(b, ") SELECT ");
    qload_add_cols(L, b, NULL);
    sb_adds(b, " FROM ");
    if (!merge) {
        add_source(L, b, src, cast, 0, a, z);
        sb_adds(b, ";");
        return;
    }
    add_last_per_key(L, b, src, cast, a, z, " WHERE _op = 'u'");
    sb_adds(b, " ON CONFLICT (");
    add_keys(L, b, NULL);
    sb_adds(b, ") DO ");
    {
        int any = 0;
        for (size_t i = 0; i < L->ncols; i++) {
            if (is_key(m, L->cols[i]))
                continue;
            sb_adds(b, any ? ", " : "UPDATE SET ");
            model_sql_ident(b, L->cols[i]);
            sb_adds(b, " = EXCLUDED.");
            model_sql_ident(b, L->cols[i]);
            any = 1;
        }
        if (!any)
            sb_adds(b, "NOTHING");
    }
    sb_adds(b, ";");
    if (m->on_delete == ON_DELETE_HARD || m->paranoid < 0) {
        /* a hard delete: the row goes */
        sb_adds(b, " DELETE FROM ");
        model_sql_ident(b, m->table);
        sb_adds(b, " AS t USING ");
    } else {
        const char *par = m->fields[m->paranoid].name;
        sb_adds(b, " UPDATE ");
        model_sql_ident(b, m->table);
        sb_adds(b, " AS t SET ");
        model_sql_ident(b, par);
        sb_adds(b, " = s.");
        model_sql_ident(b, par);
        sb_adds(b, " FROM ");
    }
    add_last_per_key(L, b, src, cast, a, z, "");
    sb_adds(b, " WHERE s._op = 'd'");
    for (size_t i = 0; i < m->nkey; i++) {
        const char *k = m->fields[m->key[i]].name;
        sb_adds(b, " AND t.");
        model_sql_ident(b, k);
        sb_adds(b, " = s.");
        model_sql_ident(b, k);
    }
    sb_adds(b, ";");
}

/* copy_into_table streams the batch straight into the model's table
 * (direct: a deleted row stops it with K_NODIRECT). */
static int copy_into_table(Loader *L, int direct)
{
    sb_reset(&L->sql);
    sb_adds(&L->sql, "COPY ");
    model_sql_ident(&L->sql, L->m->table);
    sb_adds(&L->sql, " (");
    model_columns(L->m, &L->sql);
    sb_adds(&L->sql, ") FROM STDIN (FORMAT csv)");
    qload_crash_point(L, CRASH_BEFORE_COPY);
    return qload_copy_rows(L, L->sql.buf, 0, 0, direct);
}

/* fast: COPY straight into the table (append), or into a typed temp table
 * and merge from there. */
int qload_load_fast(Loader *L)
{
    const Model *m = L->m;
    int k;

    if (!L->o.merge)
        return copy_into_table(L, 0);
    unsigned *skip = &L->mv->direct_skip;
    signed char *keyed = &L->mv->keyed;
    if (!*keyed && (k = qload_key_indexed(L, keyed)) != K_OK)
        return k;
    if (*skip || *keyed < 0) {
        --*skip;
    } else {
        if ((k = qload_pg_exec(L, "SAVEPOINT pl_direct")) != K_OK)
            return k;
        k = copy_into_table(L, 1);
        if (k == K_OK)
            return qload_pg_exec(L, "RELEASE SAVEPOINT pl_direct");
        if (k != K_NODIRECT && !(k == K_ROW && !strcmp(L->state, "23505")))
            return k;
        if ((k = qload_pg_exec(L, "ROLLBACK TO SAVEPOINT pl_direct")) != K_OK)
            return k;
        *skip = DIRECT_BACKOFF;
    }
    /* CREATE ... AS SELECT copies the column types and no constraints
     * (deleted rows leave required columns NULL). */
    sb_reset(&L->sql);
    sb_adds(&L->sql, "CREATE TEMP TABLE pl_load ON COMMIT DROP AS SELECT ");
    qload_add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, ", NULL::text AS _op, NULL::bigint AS _seq FROM ");
    model_sql_ident(&L->sql, m->table);
    sb_adds(&L->sql, " WITH NO DATA");
    if ((k = qload_pg_exec(L, L->sql.buf)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "COPY pl_load (");
    qload_add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, ", _op, _seq) FROM STDIN (FORMAT csv)");
    qload_crash_point(L, CRASH_BEFORE_COPY);
    if ((k = qload_copy_rows(L, L->sql.buf, 1, 1, 0)) != K_OK)
        return k;
    sb_reset(&L->sql);
    qload_load_sql(L, &L->sql, "pl_load", 0, 1, 0);
    return qload_pg_exec(L, L->sql.buf);
}
