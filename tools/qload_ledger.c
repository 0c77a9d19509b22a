/* qload_ledger.c: exactly once, and the durability under it: a batch's
 * states in the store (sealed -> loading -> loaded, or failed) and its row
 * in the warehouse's ledger, one attempt at a batch in one PostgreSQL
 * transaction, and the batches a crash left loaded with their rows.
 *
 * Exactly once. The warehouse holds a ledger, pickline_ledger (store, batch,
 * ...), and a batch's rows and its ledger row commit in one PostgreSQL
 * transaction. The ledger row is inserted first (ON CONFLICT DO NOTHING):
 * finding it already there means an earlier run committed the batch and
 * crashed before it could mark it loaded in the store, so this run only marks
 * it; and the row lock it takes makes a second qload on the same store wait
 * instead of loading the batch twice. In the store a batch goes sealed ->
 * loading (before any PostgreSQL work) -> loaded (after the COMMIT), so a
 * crash anywhere leaves it loading, and the next pass loads it again or finds
 * it in the ledger.
 *
 * Durability. qload forgets a batch's rows (marks it loaded, then drops its
 * rows from the store) only after a COMMIT the warehouse made durable. The
 * session sets synchronous_commit = on (a server, database or role default
 * of off, common on tuned servers, would let COMMIT return before its WAL
 * is flushed, and a crash of PostgreSQL lose it) and reads it back: a
 * session that does not keep it (a pooler passing statements to other
 * server connections) is refused; each load transaction sets it again with
 * SET LOCAL, which no pooler can separate from the COMMIT. A ledger row
 * found already there (an earlier run, or a COMMIT whose answer a crash
 * lost) is made durable before the rows go: the claiming transaction takes
 * a transaction id, so its synchronous COMMIT flushes the WAL past the
 * commit it saw, whoever made that commit and however. Batches a crash left
 * marked loaded with their rows are checked against the ledger once per
 * connection, before anything loads: their rows are dropped when the ledger
 * holds them; a batch the ledger lacks (the warehouse lost it: an
 * asynchronous commit and a crash, a restore from a backup) is sealed again
 * and loads again from the rows the store kept. What qload cannot fix it
 * says: fsync = off or full_page_writes = off on the server is warned about
 * once (a crash of the machine can lose or tear what was committed; only
 * the server's settings can help that); an UNLOGGED ledger or table is
 * refused (a crash empties it while the ledger, or the store, keeps saying
 * loaded). A replica promoted after a failover may lack commits the old
 * primary made durable: only synchronous replication on the server
 * (synchronous_standby_names) covers that. */
#include "qload.h"

#include "model.h"
#include "pl.h"
#include "staging.h"
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DROP_CHUNK 50000u           /* rows deleted per write transaction (~10 ms) */

/* ------------------------------------------------------------ store steps */

typedef struct Mark {
    Loader *L;
    uint64_t id;
    int state;
    const char *error;
    BatchRec *out;
    int more;               /* mark_loading: the pending batch left rows to drop */
} Mark;

/* mark_loading: sealed|loading -> loading, attempts + 1 (K_SKIP otherwise);
 * in the same transaction the pending batch's mark and first drop. */
static int pend_fn(Txn *t, Loader *L, int *more);
static int mark_loading_fn(Txn *t, void *arg)
{
    Mark *mk = arg;
    BatchRec b;
    int rc = pend_fn(t, mk->L, &mk->more);
    if (rc)
        return rc;
    rc = batch_get(t, mk->id, &b);
    if (rc)
        return rc;
    if (b.state != BATCH_SEALED && b.state != BATCH_LOADING) {
        *mk->out = b;
        return 0;
    }
    b.state = BATCH_LOADING;
    b.attempts++;
    *mk->out = b;
    return batch_save(t, &b);
}

static int mark_fn(Txn *t, void *arg)
{
    Mark *mk = arg;
    BatchRec b;
    int rc = batch_get(t, mk->id, &b);
    if (rc)
        return rc;
    b.state = mk->state;
    if (mk->state == BATCH_LOADED) {
        b.loaded_ms = t->now;
        b.error[0] = '\0';
    }
    if (mk->error)
        snprintf(b.error, sizeof b.error, "%s", mk->error);
    if (mk->out)
        *mk->out = b;
    return batch_save(t, &b);
}

typedef struct Drop {
    uint64_t id;
    int more;
} Drop;

static int drop_fn(Txn *t, void *arg)
{
    Drop *d = arg;
    return batch_drop_rows(t, d->id, DROP_CHUNK, &d->more);
}

/* drop_rows deletes a loaded batch's rows in short transactions. */
static int drop_rows(Loader *L, uint64_t id)
{
    Drop d = {id, 1};
    int rc = 0;
    while (d.more && rc == 0) {
        rc = store_run(L->s, drop_fn, &d);
        qload_unmap_store(L);
    }
    return rc;
}

/* pend_fn marks the pending batch loaded and drops its first rows, in
 * the caller's transaction (*more: rows are left to drop). */
static int pend_fn(Txn *t, Loader *L, int *more)
{
    *more = 0;
    if (!L->pend)
        return 0;
    Mark mk = {L, L->pend, BATCH_LOADED, NULL, NULL, 0};
    int rc = mark_fn(t, &mk);
    return rc ? rc : batch_drop_rows(t, L->pend, DROP_CHUNK, more);
}

static int pend_only_fn(Txn *t, void *arg)
{
    Mark *mk = arg;
    return pend_fn(t, mk->L, &mk->more);
}

/* pend_done clears the pending batch once its transaction committed, and
 * drops what rows it left. */
static void pend_done(Loader *L, int more)
{
    uint64_t id = L->pend;
    L->pend = 0;
    qload_unmap_store(L);
    int rc = more ? drop_rows(L, id) : 0;
    if (rc)
        qload_say(L, "batch %" PRIu64 ": loaded, but dropping its rows failed: %s (the next run "
                  "drops them)", id, pl_strerror(rc));
}

void qload_pend_flush(Loader *L)
{
    if (!L->pend)
        return;
    uint64_t t0 = pl_mono_ns();
    Mark mk = {L, L->pend, 0, NULL, NULL, 0};
    int rc = store_run(L->s, pend_only_fn, &mk);
    if (rc) {
        qload_say(L, "batch %" PRIu64 " is in the warehouse but cannot be marked loaded in the "
                  "store: %s; the next run will mark it", L->pend, pl_strerror(rc));
        L->pend = 0;
        return;
    }
    pend_done(L, mk.more);
    L->drop_ns += pl_mono_ns() - t0;
}

/* reseal_fn: loaded -> sealed again, for a batch the warehouse lost. */
static int reseal_fn(Txn *t, void *arg)
{
    Mark *mk = arg;
    BatchRec b;
    int rc = batch_get(t, mk->id, &b);
    if (rc)
        return rc;
    if (b.state != BATCH_LOADED)
        return 0;
    b.state = BATCH_SEALED;
    b.loaded_ms = 0;
    snprintf(b.error, sizeof b.error, "%s", mk->error);
    return batch_save(t, &b);
}

/* ------------------------------------------------------------ loading */

void qload_crash_point(Loader *L, int which)
{
    if (L->crash == which) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

/* pg_begin begins a transaction whose COMMIT waits for the WAL flush. */
static int pg_begin(Loader *L)
{
    return qload_pg_exec(L, L->sync_local ? "BEGIN; SET LOCAL synchronous_commit = on" : "BEGIN");
}

/* flush_past makes the open transaction's COMMIT flush the WAL past every
 * commit it has seen: it takes a transaction id, so the COMMIT writes a
 * record and, synchronous, waits until the WAL up to it is on disk. A
 * ledger row found there (an earlier run's, or a COMMIT whose answer was
 * lost) is then durable before the store forgets the batch's rows, even if
 * the transaction that wrote it committed asynchronously. */
static int flush_past(Loader *L)
{
    return L->sync_local ? qload_pg_exec(L, "SELECT txid_current()") : K_OK;
}

/* ledger_claim begins the transaction and inserts the batch's ledger row:
 * K_DONE when it was there already (committed by an earlier run). */
static int ledger_claim(Loader *L)
{
    char id[24];
    const char *v[3] = {L->uuid, id, L->m ? L->m->name : L->b.model};
    PGresult *res;
    int k;

    snprintf(id, sizeof id, "%" PRIu64, L->b.id);
    if ((k = pg_begin(L)) != K_OK)
        return k;
    res = PQexecParams(L->pg,
                       "INSERT INTO pickline_ledger (store, batch, model, rows, rejected)"
                       " VALUES ($1, $2, $3, 0, 0) ON CONFLICT DO NOTHING",
                       3, NULL, v, NULL, NULL, 0);
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK && !strcmp(PQcmdTuples(res), "0")) {
        PQclear(res);
        return (k = flush_past(L)) != K_OK ? k : K_DONE;
    }
    return qload_pg_check(L, res);
}

static int ledger_finish(Loader *L, uint64_t rows, uint64_t rejected)
{
    char id[24], r[24], j[24];
    const char *v[4] = {L->uuid, id, r, j};
    snprintf(id, sizeof id, "%" PRIu64, L->b.id);
    snprintf(r, sizeof r, "%" PRIu64, rows);
    snprintf(j, sizeof j, "%" PRIu64, rejected);
    return qload_pg_check(L, PQexecParams(L->pg,
                                          "UPDATE pickline_ledger SET rows = $3, rejected = $4"
                                          " WHERE store = $1 AND batch = $2",
                                          4, NULL, v, NULL, NULL, 0));
}

/* attempt is one PostgreSQL transaction for the batch. */
static int attempt(Loader *L, int careful)
{
    int k = ledger_claim(L);
    if (k == K_DONE) {
        if ((k = qload_pg_exec(L, "COMMIT")) != K_OK)
            return k;
        return K_DONE;
    }
    if (k != K_OK)
        return k;
    k = careful ? qload_load_careful(L) : qload_load_fast(L);
    if (k != K_OK)
        return k;
    if ((k = ledger_finish(L, L->sent - L->att_rejected, L->rejected)) != K_OK)
        return k;
    qload_crash_point(L, CRASH_BEFORE_COMMIT);
    if ((k = qload_pg_exec(L, "COMMIT")) != K_OK)
        return k;
    qload_crash_point(L, CRASH_AFTER_COMMIT);
    return K_OK;
}

/* perm_message turns L->err into the batch's error with a hint. */
static void perm_message(Loader *L, char *out, size_t n)
{
    const char *E = L->err;
    const char *tab = L->m ? L->m->table : L->b.model;
    if (!strcmp(L->state, "42P01"))
        snprintf(out, n, "table %s does not exist; run qload --create-tables or create it "
                 "(%.300s)", tab, E);
    else if (!strcmp(L->state, "42P10"))
        snprintf(out, n, "merge needs a primary key or unique index on the key of table %s: "
                 "%.300s; add one or load with --mode append", tab, E);
    else if (!strncmp(L->state, "42", 2))
        snprintf(out, n, "table %s does not match model %s: %.300s; alter the table or fix the "
                 "model, then run `qctl batches retry %" PRIu64 "`", tab,
                 L->m ? L->m->name : L->b.model, E, L->b.id);
    else
        snprintf(out, n, "%.400s; fix the cause, then run `qctl batches retry %" PRIu64 "`",
                 E, L->b.id);
}

/* fail_batch marks the batch failed with msg. */
static int fail_batch(Loader *L, const char *msg)
{
    Mark mk = {L, L->b.id, BATCH_FAILED, msg, NULL, 0};
    int rc = store_run(L->s, mark_fn, &mk);
    L->n_failed++;
    qload_say(L, "batch %" PRIu64 " (%s) failed: %s", L->b.id, L->b.model, msg);
    if (rc) {
        snprintf(L->err, sizeof L->err, "cannot mark batch %" PRIu64 " failed in the store: %s",
                 L->b.id, pl_strerror(rc));
        return K_LOCAL;
    }
    return K_PERM;
}

/* rollback ends an aborted transaction; K_OK or K_CONN. */
static int rollback(Loader *L)
{
    char e[sizeof L->err], st[6];
    int k;
    /* Keep the error that made us roll back. */
    memcpy(e, L->err, sizeof e);
    memcpy(st, L->state, sizeof st);
    k = qload_pg_exec(L, "ROLLBACK");
    if (k != K_CONN) {
        memcpy(L->err, e, sizeof e);
        memcpy(L->state, st, sizeof st);
        return K_OK;
    }
    return K_CONN;
}

/* load_batch loads one batch. K_OK, K_DONE, K_SKIP, K_PERM (failed and
 * marked), K_CONN (left loading: retry) or K_LOCAL. */
int qload_load_batch(Loader *L, const Item *it)
{
    Mark mk = {L, it->id, 0, NULL, &L->b, 0};
    uint64_t t0 = pl_mono_ns();
    int k, rc, careful = 0;
    char msg[2048]; /* cut to the batch record's error field when stored */

    uint64_t t_mark = pl_mono_ns();
    if ((rc = store_run(L->s, mark_loading_fn, &mk)) != 0) {
        snprintf(L->err, sizeof L->err, "batch %" PRIu64 ": cannot mark it loading: %s",
                 it->id, pl_strerror(rc));
        return K_LOCAL;
    }
    if (L->pend) {
        pend_done(L, mk.more);
        L->drop_ns += pl_mono_ns() - t_mark;
    }
    if (L->b.state != BATCH_LOADING)
        return K_SKIP;
    L->m = NULL;
    L->rejected = 0;
    L->sent = 0;
    L->live = 0;
    /* The columns of the model version the rows were validated with. */
    if (qload_model_for(L, L->b.model, L->b.version, msg, sizeof msg) != K_OK) {
        L->m = NULL;
        return fail_batch(L, msg);
    }
    if (L->o.merge && L->m->nkey == 0) {
        snprintf(msg, sizeof msg, "merge needs a key, and model '%s' declares none; mark its "
                 "key fields key: true or load with --mode append", L->m->name);
        return fail_batch(L, msg);
    }
    qload_set_columns(L, L->m);
    if (!L->mv->checked) {
        k = qload_table_check(L, msg, sizeof msg);
        if (k == K_CONN)
            return K_CONN;
        if (k != K_OK) {
            if (!msg[0])
                perm_message(L, msg, sizeof msg);
            return fail_batch(L, msg);
        }
        L->mv->checked = 1;
    }

    uint64_t t_load = pl_mono_ns();
    for (;;) {
        L->att_rejected = 0;
        L->live = 0;
        k = attempt(L, careful);
        if (k == K_OK || k == K_DONE)
            break;
        if (k == K_CONN)
            return K_CONN;
        if (k == K_LOCAL) {
            rollback(L);
            return K_LOCAL;
        }
        if (rollback(L) != K_OK)
            return K_CONN;
        if (k == K_ROW && !careful) {
            careful = 1;
            continue;
        }
        if (k == K_LINE) {
            /* The careful COPY refused line L->line: reject that row, try again. */
            uint32_t seq;
            int r = qload_find_line(L, (uint64_t)L->line, &seq);
            if (r == 0 && qload_reject(L, seq) == K_OK) {
                /* Rows the store already moved are not counted again. */
                continue;
            }
        }
        /* The table may have changed: check it again for the next batch. */
        L->mv->checked = 0;
        if (k == K_TABLE)
            snprintf(msg, sizeof msg, "%s", L->err);
        else
            perm_message(L, msg, sizeof msg);
        return fail_batch(L, msg);
    }

    /* Committed (or found committed): it is marked loaded and its rows are
     * dropped in the next store transaction (the next batch's mark, or the
     * end of the pass: qload_pend_flush), which commits durably like every
     * other; a crash before it leaves the batch loading, and the next run
     * finds it in the ledger. */
    uint64_t t_drop = pl_mono_ns();
    L->load_ns += t_drop - t_load;
    if (L->crash == CRASH_AFTER_MARK) {
        /* The seam: the mark alone, then the crash, leaving a loaded batch
         * with its rows (as a crash between two drops of a big one does). */
        mk.state = BATCH_LOADED;
        mk.out = NULL;
        if ((rc = store_run(L->s, mark_fn, &mk)) != 0) {
            snprintf(L->err, sizeof L->err, "batch %" PRIu64 " is in the warehouse but cannot "
                     "be marked loaded in the store: %s; the next run will mark it", it->id,
                     pl_strerror(rc));
            return K_LOCAL;
        }
        qload_crash_point(L, CRASH_AFTER_MARK);
    }
    L->pend = it->id;
    L->drop_ns += pl_mono_ns() - t_drop;
    {
        uint64_t rows = k == K_DONE ? L->b.rows - L->b.removed : L->sent - L->att_rejected;
        double s = (double)(pl_mono_ns() - t0) / 1e9;
        L->n_batches++;
        L->n_rows += rows;
        L->n_rejected += L->rejected;
        if (!L->o.quiet && !L->tty)
            qload_say(L, "batch %" PRIu64 " (%s): %" PRIu64 " rows %s in %.3f s%s", it->id,
                      L->m->name, rows, k == K_DONE ? "were loaded by an earlier run;" : "loaded",
                      s, L->rejected ? ", some rejected (see qctl rejects)" : "");
    }
    return k;
}

/* settle_leftovers deals with the batches marked loaded whose rows a crash
 * (between the mark and the drop) kept in the store, once per connection:
 * their rows are dropped only after the ledger was seen to hold them, in a
 * transaction whose synchronous COMMIT flushed the WAL past that (see
 * flush_past). A batch the ledger lacks was lost by the warehouse after
 * qload marked it (an asynchronous commit and a crash, a restore from a
 * backup): it is sealed again and loads again from the rows the store
 * kept. K_OK, K_CONN or K_LOCAL. */
int qload_settle_leftovers(Loader *L)
{
    Item *items = NULL;
    size_t n = 0;
    unsigned char *found = NULL;
    PGresult *res = NULL;
    int rc = qload_batches(L, 1, &items, &n), k = K_OK;

    if (rc) {
        snprintf(L->err, sizeof L->err, "reading the batches: %s", pl_strerror(rc));
        k = K_LOCAL;
        goto out;
    }
    if (n == 0)
        goto done;
    found = xcalloc(n, 1);
    sb_reset(&L->tmp);
    sb_adds(&L->tmp, "{");
    for (size_t i = 0; i < n; i++)
        sb_addf(&L->tmp, "%s%" PRIu64, i ? "," : "", items[i].id);
    sb_adds(&L->tmp, "}");
    if ((k = pg_begin(L)) != K_OK)
        goto out;
    const char *v[2] = {L->uuid, L->tmp.buf};
    res = PQexecParams(L->pg, "SELECT batch FROM pickline_ledger WHERE store = $1"
                              " AND batch = ANY ($2::bigint[])",
                       2, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        k = qload_pg_check(L, res);
        res = NULL;
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint64_t id = strtoull(PQgetvalue(res, r, 0), NULL, 10);
        for (size_t i = 0; i < n; i++)
            if (items[i].id == id)
                found[i] = 1;
    }
    if ((k = flush_past(L)) != K_OK || (k = qload_pg_exec(L, "COMMIT")) != K_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char msg[400];
        Mark mk = {L, items[i].id, BATCH_SEALED, msg, NULL, 0};
        if (found[i]) {
            if ((rc = drop_rows(L, items[i].id)) != 0)
                qload_say(L, "batch %" PRIu64 ": loaded, but dropping its rows failed: %s (the "
                          "next run drops them)", items[i].id, pl_strerror(rc));
            continue;
        }
        snprintf(msg, sizeof msg, "marked loaded, but not in the warehouse (its ledger has no "
                 "row for it: the warehouse lost the commit); loading it again from the rows the "
                 "store kept");
        qload_say(L, "batch %" PRIu64 " (%s) was %s", items[i].id, items[i].model, msg);
        if ((rc = store_run(L->s, reseal_fn, &mk)) != 0) {
            snprintf(L->err, sizeof L->err, "batch %" PRIu64 " is not in the warehouse and "
                     "cannot be sealed again in the store: %s", items[i].id, pl_strerror(rc));
            k = K_LOCAL;
            goto out;
        }
    }
done:
    L->leftovers_done = 1;
out:
    PQclear(res);
    if (k == K_PERM) {
        /* Not a reason to stop loading: the rows stay, and say why. */
        qload_say(L, "checking the ledger for batches marked loaded: %s; their rows stay in the "
                  "store", L->err);
        L->leftovers_done = 1;
        k = rollback(L);
    } else if (k == K_CONN) {
        rollback(L);
    }
    free(found);
    free(items);
    return k;
}
