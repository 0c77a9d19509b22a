/* qload.h: what the parts of qload share (see qload.c for the map of them):
 * the Loader, the state of one run that every part reads and writes, the
 * kinds a step of a load comes to, and each part's entry points. qload is
 * one thread but for copy_rows's sender, which only writes to PostgreSQL. */
#ifndef QLOAD_H
#define QLOAD_H

#include "model.h"
#include "pipeline.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <libpq-fe.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* What a step of a load came to. */
enum {
    K_OK = 0,
    K_ROW,       /* PostgreSQL refused a row (class 22/23): the careful path */
    K_PERM,      /* the batch cannot load as things are: fail it */
    K_CONN,      /* the target went away or is busy: retry later */
    K_DONE,      /* the ledger already holds the batch */
    K_SKIP,      /* the batch is no longer ours to load (its state changed) */
    K_LINE,      /* careful COPY refused one line: reject it, then try again */
    K_LOCAL,     /* the store failed */
    K_NODIRECT,  /* a direct merge met a deleted row: merge through the temp table */
    K_TABLE      /* the table refuses the batch as a whole (systematic refusals) */
};

/* Crash-test seams (PICKLINE_QLOAD_CRASH): where qload_crash_point kills
 * the first batch's run. */
enum { CRASH_NONE, CRASH_BEFORE_COPY, CRASH_DURING_COPY, CRASH_BEFORE_COMMIT,
       CRASH_AFTER_COMMIT, CRASH_AFTER_MARK };

#define SIG_LEN 192                 /* an error's signature (qload_classify) */

typedef struct Opts {
    const char *dir, *target, *pipeline, *model;
    int follow, create_tables, migrate, merge, json, quiet, help;
    double poll_s;
} Opts;

/* ModelVer: a version of a model that batches load with (qload_model_for):
 * the pipeline's own, or an older one parsed from the pipeline the store
 * kept for it (staging.h, "Model versions"); and what qload learnt of its
 * table. */
typedef struct ModelVer {
    const Model *m;
    uint64_t version;
    Pipeline *own;          /* the older pipeline m comes from (freed with it), or NULL */
    unsigned direct_skip;   /* batches to merge without trying direct */
    signed char keyed;      /* the key has a unique index (1), not (-1), unknown (0) */
    signed char checked;    /* its table matched it on this connection */
} ModelVer;

/* A row the careful path found refused, held back (see REFUSE_SAMPLE). */
typedef struct Refused {
    uint32_t seq;
    char sig[SIG_LEN];      /* classify's signature of its error */
    char err[1024];         /* the whole error, for its reject */
    char prim[256];         /* the primary message, for the batch's error */
} Refused;

/* Item: a batch to load in this pass. */
typedef struct Item {
    uint64_t id;
    size_t pos;             /* the model's place in the load order; SIZE_MAX: undeclared */
    uint64_t rows;          /* rows - removed, for the progress line */
    char model[128];
} Item;

typedef struct Loader {
    Opts o;
    Store *s;
    Pipeline *p;
    const Models *ms;
    char uuid[33];
    PGconn *pg;
    int crash;              /* the seam still armed, or CRASH_NONE */

    /* the versions of models met so far: the pipeline's first, in its order */
    ModelVer *vers;
    size_t nvers, capvers;
    int migrate_done;       /* --migrate ran on this connection */
    uint64_t n_refused;     /* what --migrate would not do (the last run) */

    /* the batch being loaded */
    ModelVer *mv;           /* its model version; m is mv->m */
    const Model *m;
    BatchRec b;
    uint64_t sent;          /* rows sent by the last stream */
    uint64_t live;          /* rows sent for this batch, for the progress line */
    uint64_t rejected;      /* rows of this batch moved to the rejects (all attempts) */
    uint64_t att_rejected;  /* of those, found by this attempt's ranges */
    char **cols;            /* the model's columns (views), and their cast types */
    char **types;
    size_t ncols;

    /* PostgreSQL's last error */
    char state[6];
    char err[1024];
    char sig[SIG_LEN];      /* what makes it the same error for another row (classify) */
    char prim[256];         /* its primary message alone */
    long line;              /* COPY context line of the last error, or 0 */

    /* per connection */
    int sync_local;         /* SET LOCAL synchronous_commit in each load transaction */
    int leftovers_done;     /* loaded batches with rows left were checked against the ledger */

    /* the careful path's refused rows, held back until the rule decides */
    struct Refused *held;   /* REFUSE_SAMPLE of them, allocated once */
    size_t nheld;
    int holding;

    /* reused buffers: bufs for the sender (double buffering) */
    Strbuf bufs[2], sql, tmp;
    msgpack_zone zone;

    /* totals */
    uint64_t n_batches, n_rows, n_rejected, n_failed;
    uint64_t load_ns, drop_ns;  /* time in COPY and COMMIT; in marking and dropping rows */
    /* A batch the warehouse committed whose mark (loaded) and first drop
     * of rows ride on the next store transaction: the next batch's mark
     * (loading), or the end of the pass; 0 when none. */
    uint64_t pend;
    int watch;              /* --follow: inotify on data.mdb, or -1 */
    uint64_t t0;
    /* progress of the pass */
    int tty;
    size_t pass_done, pass_total;
    uint64_t pass_rows, pass_rows_total, pass_t0, last_progress;
    int progress_shown;
} Loader;

/* ---------------------------------------------------------------- qload.c */

/* qload_say prints "qload: ..." on stderr (over the progress line). */
void qload_say(Loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* qload_progress redraws the progress line on a terminal, at most every
 * 200 ms unless force; qload_progress_clear takes it away. */
void qload_progress(Loader *L, int force);
void qload_progress_clear(Loader *L);

/* qload_model_for sets L->mv (and L->m) to version `version` of model
 * name (0: the pipeline's own): the pipeline's when it is that version,
 * else the one the store kept, parsed once and cached. K_OK, or K_PERM
 * with msg saying why there is none. */
int qload_model_for(Loader *L, const char *name, uint64_t version, char *msg, size_t n);

/* qload_batches lists this run's batches (of --model only) into *items, a
 * new array of *n: those to load, sealed or loading, in load order; with
 * leftovers, those marked loaded whose rows a crash kept in the store.
 * 0, or the store's error with *items NULL. */
int qload_batches(Loader *L, int leftovers, Item **items, size_t *n);

/* --------------------------------------------------------- qload_ledger.c */

/* qload_load_batch loads one batch. K_OK, K_DONE, K_SKIP, K_PERM (failed
 * and marked), K_CONN (left loading: retry) or K_LOCAL. */
int qload_load_batch(Loader *L, const Item *it);

/* qload_pend_flush commits the pending batch's mark (loaded) and drop of
 * rows on their own: at the end of a pass. */
void qload_pend_flush(Loader *L);

/* qload_settle_leftovers deals with the batches marked loaded whose rows a
 * crash kept, once per connection (see there). K_OK, K_CONN or K_LOCAL. */
int qload_settle_leftovers(Loader *L);

/* qload_crash_point kills the process with SIGKILL when the armed seam is
 * which (crash tests only). */
void qload_crash_point(Loader *L, int which);

/* ------------------------------------------------------------- qload_pg.c */

/* qload_pg_connect connects and prepares the session: UTC, UTF-8, the
 * ledger, the durability settings, and with --create-tables the models'
 * tables. K_OK, K_CONN or K_PERM (with L->err). */
int qload_pg_connect(Loader *L);

/* qload_pg_close closes the connection (none: nothing). */
void qload_pg_close(Loader *L);

/* qload_classify names the kind of PostgreSQL's error res (may be NULL: a
 * broken connection) and sets L->state, err, sig, prim and line. */
int qload_classify(Loader *L, const PGresult *res);

/* qload_pg_check returns K_OK for a good result, else classifies it; res
 * is cleared either way. */
int qload_pg_check(Loader *L, PGresult *res);

/* qload_pg_exec runs one or more statements with no result rows wanted. */
int qload_pg_exec(Loader *L, const char *sql);

/* ---------------------------------------------------------- qload_table.c */

/* qload_set_columns makes L's columns those of model m: its fields, and
 * its drift column when it keeps unknown fields. */
void qload_set_columns(Loader *L, const Model *m);

/* qload_table_check compares the model's table with the model. K_OK;
 * K_PERM with the whole batch error in msg (msg empty: L->err and
 * L->state say what PostgreSQL refused); K_CONN. */
int qload_table_check(Loader *L, char *msg, size_t n);

/* qload_col_types reads the base types of the table's columns into
 * L->types. K_OK, K_PERM for a missing column, or the query's failure. */
int qload_col_types(Loader *L);

/* qload_key_indexed sets *out to 1 when the table has a unique index on
 * exactly the model's key, else -1. K_OK or the query's failure. */
int qload_key_indexed(Loader *L, signed char *out);

/* qload_migrate (--migrate) creates the models' missing tables, adds the
 * columns the models have and the tables lack, widens what the models
 * widened, and says what it refuses to do (pgschema.h); the changes run
 * in one transaction. K_OK, K_CONN or K_PERM with L->err. */
int qload_migrate(Loader *L);

/* ----------------------------------------------------------- qload_copy.c */

/* qload_copy_rows runs copy_sql (a COPY ... FROM STDIN) and streams the
 * batch's rows into it as model_csv_row writes them (op: with the op
 * column; seq: with a _seq column; direct: a deleted row stops it with
 * K_NODIRECT). K_OK, or the kind of the failure with L->err. */
int qload_copy_rows(Loader *L, const char *copy_sql, int op, int seq, int direct);

/* qload_find_line sets *seq to the seq of the n-th row (1-based) a stream
 * of the batch sends. 0, PL_ENOBATCH, or the store's error. */
int qload_find_line(Loader *L, uint64_t n, uint32_t *seq);

/* qload_unmap_store gives back the pages of the store's map that reading
 * touched. No transaction of this process may be open. */
void qload_unmap_store(Loader *L);

/* qload_add_cols appends the columns, comma-separated, each after prefix. */
void qload_add_cols(Loader *L, Strbuf *b, const char *prefix);

/* qload_load_sql appends the statements that move rows [a, z] (all when
 * a > z) of temp table src into the table, cast to its types when cast. */
void qload_load_sql(Loader *L, Strbuf *b, const char *src, int cast, uint64_t a, uint64_t z);

/* qload_load_fast loads the batch in the open transaction the fast way.
 * K_OK, K_ROW (a refused row: try the careful path), or a failure. */
int qload_load_fast(Loader *L);

/* -------------------------------------------------------- qload_careful.c */

/* qload_load_careful loads the batch in the open transaction row range by
 * row range, refused rows to the rejects. K_OK, K_LINE, K_TABLE, or a
 * failure. */
int qload_load_careful(Loader *L);

/* qload_reject moves row seq to the rejects with L->err. K_OK or K_LOCAL. */
int qload_reject(Loader *L, uint32_t seq);

#endif
