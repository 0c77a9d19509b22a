/* qload_careful.c: bad rows. The careful path finds the rows PostgreSQL
 * refuses and moves them to the rejects, unless the table refuses the
 * batch as a whole.
 *
 * Bad rows. When PostgreSQL refuses the COPY with a data or constraint error
 * (SQLSTATE class 22 or 23), the transaction is rolled back and the batch
 * loaded on the careful path: its rows go into a temporary table of text
 * columns, then into the table with casts, a range of rows at a time inside
 * a SAVEPOINT; a failing range is halved until the single refused rows are
 * found. Each refused row moves to the rejects in the store (with
 * PostgreSQL's message) before the PostgreSQL COMMIT, and the others load in
 * the same transaction.
 *
 * Systematic refusals. A table that refuses every row (a CHECK no row
 * passes, a type every value misses) should fail the batch, not turn it
 * into rejects. So the first REFUSE_SAMPLE (32) refused rows are held back,
 * and the rule decides once 32 are held, or at the end of the batch if
 * fewer were refused: when one error (the same SQLSTATE, constraint, column
 * and message, the values in it aside) refused at least REFUSE_MIN (8) of
 * the held rows, more than half of them, and more than half of the rows
 * tried so far, and, when the sample was full before the end of the batch,
 * also more than half of REFUSE_PROBES (8) single rows probed across the
 * rest of the batch (so that a burst of bad rows at its head is not taken
 * for the table's fault), the transaction is rolled back and the batch
 * fails with that error and no reject. Otherwise the held rows become
 * rejects, and so does every row refused after them. A batch with fewer
 * than 8 refused rows, or with no more than half of its rows refused,
 * gives rejects as before; a batch refused as a whole costs a few dozen
 * statements, not one or two per row. */
#include "qload.h"

#include "model.h"
#include "pl.h"
#include "staging.h"
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAREFUL_RANGE 8192u         /* rows per first attempt */

/* Systematic refusals (see above): the careful path holds back the first
 * REFUSE_SAMPLE refused rows before they become rejects, and fails the
 * batch when at least REFUSE_MIN of them share one error and that error
 * refused more than half of the held rows and of the rows tried so far. */
#define REFUSE_SAMPLE 32
#define REFUSE_MIN 8
#define REFUSE_PROBES 8             /* rows probed further on when the sample decides early */

typedef struct Rej {
    uint64_t id;
    uint32_t seq;
    const char *msg;
    const Model *m;
    Strbuf key;
} Rej;

/* reject_fn moves the row to the rejects under its model key (the key of
 * a validate stage's reject: "7", "3/7"), or "batch N row M" when the row
 * has none. */
static int reject_fn(Txn *t, void *arg)
{
    Rej *r = arg;
    uint64_t rid;
    const void *mp;
    size_t len;
    RowView v;
    int keyed = 0, rc = batch_row_get(t, r->id, r->seq, &mp, &len);
    if (rc)
        return rc;
    sb_reset(&r->key);
    if (row_view(&v, mp, len) == 0) {
        keyed = model_row_key(r->m, &v.root, &r->key) == 0 && r->key.len > 0;
        row_view_free(&v);
    }
    return batch_row_reject(t, r->id, r->seq, keyed ? r->key.buf : NULL, r->msg, &rid);
}

/* reject moves row seq to the rejects with L->err (in the store, before
 * the PostgreSQL COMMIT: a crash in between never loses it). */
int qload_reject(Loader *L, uint32_t seq)
{
    Rej r = {L->b.id, seq, L->err, L->m, SB_INIT};
    int rc = store_run(L->s, reject_fn, &r);
    if (rc) {
        sb_free(&r.key);
        snprintf(L->err, sizeof L->err, "moving row %" PRIu32 " of batch %" PRIu64
                 " to the rejects: %s", seq, L->b.id, pl_strerror(rc));
        return K_LOCAL;
    }
    L->rejected++;
    L->att_rejected++;
    if (!L->o.quiet && L->rejected <= 10)
        qload_say(L, "batch %" PRIu64 " (%s): row %" PRIu32 " (key %s) rejected: %s", L->b.id,
                  L->m->name, seq, r.key.len ? r.key.buf : "-", L->err);
    else if (!L->o.quiet && L->rejected == 11)
        qload_say(L, "batch %" PRIu64 " (%s): more rows rejected; see them with qctl rejects",
                  L->b.id, L->m->name);
    sb_free(&r.key);
    return K_OK;
}

/* load_sql_exec runs pre, the careful load of rows [a, z] of pl_text, and
 * post (NULL: nothing). */
static int load_sql_exec(Loader *L, const char *pre, uint64_t a, uint64_t z, const char *post)
{
    sb_reset(&L->sql);
    sb_adds(&L->sql, pre);
    qload_load_sql(L, &L->sql, "pl_text", 1, a, z);
    if (post)
        sb_adds(&L->sql, post);
    return qload_pg_exec(L, L->sql.buf);
}

/* probe tries single rows spread over seqs [from, top] of pl_text, each in
 * a savepoint rolled back whatever came of it, and counts in *agree those
 * refused with error signature sig, out of *tried. K_OK, or a failure that
 * is not a refused row. */
static int probe(Loader *L, const char *sig, uint64_t from, uint64_t top, unsigned *agree,
                 unsigned *tried)
{
    uint64_t span = top - from + 1;
    unsigned n = span < REFUSE_PROBES ? (unsigned)span : REFUSE_PROBES;
    int k;

    *agree = *tried = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t seq = from + span * (2 * i + 1) / (2 * n);
        k = load_sql_exec(L, "SAVEPOINT pl_probe; ", seq, seq, NULL);
        if (k != K_OK && k != K_ROW)
            return k;
        ++*tried;
        if (k == K_ROW && !strcmp(L->sig, sig))
            ++*agree;
        k = qload_pg_exec(L, "ROLLBACK TO SAVEPOINT pl_probe; RELEASE SAVEPOINT pl_probe");
        if (k != K_OK)
            return k;
    }
    return K_OK;
}

/* decide applies the rule for systematic refusals to the held rows, tried
 * being the rows of the batch tried so far: when one error refused at
 * least REFUSE_MIN of them, more than half of them, and more than half of
 * the rows tried (and, when rows are left, more than half of the rows
 * probed among them), the table refuses the batch as a whole: K_TABLE,
 * with L->err saying so (no row was rejected). Otherwise the held rows
 * become rejects, and so does every row refused after them (K_OK,
 * K_LOCAL, or the failure of a probe). */
static int decide(Loader *L, uint64_t tried)
{
    size_t best = 0, nbest = 0, n = L->nheld;
    uint64_t top = L->b.rows ? L->b.rows - 1 : 0;
    unsigned agree = 0, probed = 0;
    char more[96] = "";
    int k = K_OK;

    L->holding = 0;
    L->nheld = 0;
    for (size_t i = 0; i < n; i++) {
        size_t same = 0;
        for (size_t j = 0; j < n; j++)
            same += !strcmp(L->held[i].sig, L->held[j].sig);
        if (same > nbest) {
            nbest = same;
            best = i;
        }
    }
    int systematic = nbest >= REFUSE_MIN && 2 * nbest > n && 2 * (uint64_t)nbest > tried;
    if (systematic && tried < top + 1) {
        /* Decided before the end of the batch: a burst of bad rows at its
         * head looks the same. Rows further on must agree. */
        if ((k = probe(L, L->held[best].sig, tried, top, &agree, &probed)) != K_OK)
            return k;
        systematic = 2 * agree > probed;
        snprintf(more, sizeof more, " (and %u of %u rows probed further on)", agree, probed);
    }
    if (systematic) {
        const Refused *r = &L->held[best];
        snprintf(L->err, sizeof L->err,
                 "table %s refused %zu of %" PRIu64 " rows tried%s with one error: %.200s "
                 "(SQLSTATE %.5s); no row was rejected: fix the table (or the rows upstream), "
                 "then run `qctl batches retry %" PRIu64 "`",
                 L->m->table, nbest, tried, more, r->prim, r->sig, L->b.id);
        return K_TABLE;
    }
    for (size_t i = 0; i < n && k == K_OK; i++) {
        memcpy(L->err, L->held[i].err, sizeof L->err);
        k = qload_reject(L, L->held[i].seq);
    }
    return k;
}

/* refused deals with row seq, which PostgreSQL refused on the careful path
 * (L->err and L->sig say why): held back while the rule for systematic
 * refusals has not decided, else a reject. K_OK, K_TABLE or K_LOCAL. */
static int refused(Loader *L, uint32_t seq)
{
    if (!L->holding)
        return qload_reject(L, seq);
    Refused *r = &L->held[L->nheld++];
    r->seq = seq;
    memcpy(r->sig, L->sig, sizeof r->sig);
    memcpy(r->err, L->err, sizeof r->err);
    memcpy(r->prim, L->prim, sizeof r->prim);
    if (L->nheld < REFUSE_SAMPLE)
        return K_OK;
    /* Ranges go in seq order: every row up to seq has been tried. */
    return decide(L, (uint64_t)seq + 1);
}

/* try_range loads rows [a, z] of pl_text in a savepoint; a refused range
 * is halved down to the single rows, which are refused (see refused). */
static int try_range(Loader *L, uint64_t a, uint64_t z)
{
    int k = load_sql_exec(L, "SAVEPOINT pl; ", a, z, " RELEASE SAVEPOINT pl");
    if (k != K_ROW)
        return k;
    if ((k = qload_pg_exec(L, "ROLLBACK TO SAVEPOINT pl; RELEASE SAVEPOINT pl")) != K_OK)
        return k;
    if (a == z) /* L->err still holds the row's error */
        return refused(L, (uint32_t)a);
    uint64_t mid = a + (z - a) / 2;
    if ((k = try_range(L, a, mid)) != K_OK)
        return k;
    return try_range(L, mid + 1, z);
}

/* careful: every column as text into pl_text, then range by range with
 * casts. */
int qload_load_careful(Loader *L)
{
    uint64_t top = L->b.rows ? L->b.rows - 1 : 0;
    int k;

    if ((k = qload_col_types(L)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "CREATE TEMP TABLE pl_text (");
    for (size_t i = 0; i < L->ncols; i++) {
        model_sql_ident(&L->sql, L->cols[i]);
        sb_adds(&L->sql, " text, ");
    }
    if (L->o.merge)
        sb_adds(&L->sql, "_op text, ");
    sb_adds(&L->sql, "_seq bigint) ON COMMIT DROP");
    if ((k = qload_pg_exec(L, L->sql.buf)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "COPY pl_text (");
    qload_add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, L->o.merge ? ", _op, _seq" : ", _seq");
    sb_adds(&L->sql, ") FROM STDIN (FORMAT csv)");
    qload_crash_point(L, CRASH_BEFORE_COPY);
    k = qload_copy_rows(L, L->sql.buf, L->o.merge, 1, 0);
    if (k == K_ROW)
        /* Text takes anything but bytes the encoding refuses (a NUL):
         * the COPY's context names the line. */
        return L->line > 0 ? K_LINE : K_PERM;
    if (k != K_OK)
        return k;
    if ((k = qload_pg_exec(L, "CREATE INDEX ON pl_text (_seq)")) != K_OK)
        return k;
    if (!L->held)
        L->held = xcalloc(REFUSE_SAMPLE, sizeof *L->held);
    L->nheld = 0;
    L->holding = 1;
    for (uint64_t a = 0; a <= top && L->b.rows; a += CAREFUL_RANGE) {
        uint64_t z = a + CAREFUL_RANGE - 1;
        if (z > top)
            z = top;
        if ((k = try_range(L, a, z)) != K_OK)
            return k;
    }
    /* Fewer refused rows than the sample: decide on the whole batch. */
    return L->holding && L->nheld ? decide(L, L->sent) : K_OK;
}
