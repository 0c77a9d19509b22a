/* pg_reconcile.h: pg_extract's reconciliation, which finds the rows a
 * source table no longer has but its copy still does (deleted while no
 * one listened: the engine stopped, a notice lost), so that their deletes
 * reach the copy too.
 *
 *   reconcile_dsn: "env:EDGE_DSN"   # the copy to compare with (turns it on)
 *   reconcile_table: users          # the copy's table (default: the model's)
 *   reconcile_interval: 3600        # seconds from the end of a pass to the next
 *   reconcile_range: 10000          # keys per range
 *   reconcile_pause: 0.1            # seconds between two ranges
 *
 * A pass walks the source's keys in key order, a range at a time: the
 * next `range` keys after the last range (with the stage's where: filter),
 * their count and a hash of them (the sum of the first 64 bits of the md5
 * of each key's row text) and the last key, in one query that reads only
 * those keys; then the count and hash of the copy's keys in the same
 * range. Equal: the next range. Different: the copy's keys of that range
 * are read (pages of at most 1000) and the source is asked which of them
 * it lacks (by key, typed, without the filters: a row filtered out is not
 * gone); each key it lacks becomes a tombstone, a staged row
 * {key..., "_deleted": true} that qload's merge turns into a DELETE (or an
 * update of the paranoid column: the model's on_delete). So the source
 * sees one query at a time, each bounded by `range` keys, at most one a
 * `pause`, in between the extract's own queries (which go first); the
 * copy sees the same. The first pass starts once the extract has a
 * cursor (the first copy has begun), and again `interval` seconds after
 * each pass ends. The keys' text must be the same on both sides for the
 * hashes to match (the same types): where it is not, every range differs
 * and its keys are read, which costs more but finds the same rows.
 *
 * The copy lags behind the source by what is staged and not yet loaded:
 * a key not loaded yet makes its range differ and is then found in the
 * source (nothing to do); a key whose tombstone is staged and not loaded
 * may get another (deleting twice is harmless). A tombstone is staged
 * only after the source said, by key, that the row is not there, and its
 * commit is submitted before the next source query, so a row inserted
 * again later is extracted after its tombstone and wins.
 *
 * The reconciler shares pg_extract's source connection (one query at a
 * time) and has its own to the copy (a PgLink). */
#ifndef PL_STAGES_PG_RECONCILE_H
#define PL_STAGES_PG_RECONCILE_H

#include "model.h"
#include "pglink.h"
#include "stage.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdint.h>

/* ReconcileOps: what the reconciler asks of pg_extract (all on the loop). */
typedef struct ReconcileOps {
    /* source_query sends sql with n text parameters on the source link,
     * which is idle: its rows go to reconcile_source_row, its end to
     * reconcile_source_over. */
    void (*source_query)(void *arg, const char *sql, int n, const char *const *vals);
    /* wake: a source query waits (pg_extract calls reconcile_next when its
     * link is idle and it has nothing of its own to do). */
    void (*wake)(void *arg);
    /* gone: n keys (their key columns' text: keys[i * nkey + j]) are not
     * in the source: stage a tombstone each and submit the commit before
     * returning; call reconcile_gone_done once it is done. */
    void (*gone)(void *arg, const Strbuf *keys, size_t n);
} ReconcileOps;

typedef struct Reconcile {
    /* read-only for pg_extract */
    int on;                 /* configured */
    int wants_source;       /* a source query waits for the link */
    /* private */
    Stage *stage;
    const Model *m;
    const ReconcileOps *ops;
    void *arg;
    char *conninfo, *src_table, *tgt_table, *where;
    double interval, pause;
    unsigned long long range;
    PgLink tgt;
    char tgt_name[200];
    ev_timer timer;
    int state, stopped, committing, can_start;
    Strbuf *lo, *hi;        /* the range's bounds: key texts (nkey each) */
    Strbuf *after;          /* where the copy's next page starts (nkey), then the page */
    int have_lo, have_hi, have_after;
    uint64_t n_src, n_tgt;
    Strbuf sum_src, sum_tgt, sql, *types, keys;
    size_t npage;           /* keys of the copy's page (after[nkey...]) */
    unsigned char *mark;    /* per key of the page: the source lacks it */
    /* this pass */
    uint64_t keys_seen, ranges, differed, checked, gone;
    double t0;
} Reconcile;

/* reconcile_conf reads the reconcile_* keys of stage s (pg_extract's)
 * for model m, whose source table is src_table (a quoted SQL name) and
 * where: filter where (may be NULL); r->on says whether reconcile_dsn is
 * given. 0, or PL_EINVAL with err. */
int reconcile_conf(Reconcile *r, Stage *s, const Model *m, const char *src_table,
                   const char *where, const ReconcileOps *ops, void *arg, char *err,
                   size_t errlen);

/* reconcile_can_start tells r that the extract has a cursor: the first
 * pass may begin (soon after). Repeated calls do nothing. */
void reconcile_can_start(Reconcile *r);

/* reconcile_next sends r's waiting source query (wants_source). */
void reconcile_next(Reconcile *r);

/* reconcile_source_row and reconcile_source_over take the rows and the
 * end (error: NULL, or the server's message) of r's source query. */
void reconcile_source_row(Reconcile *r, const PGresult *res);
void reconcile_source_over(Reconcile *r, const char *error);

/* reconcile_source_lost: the source link went down during r's query: the
 * pass is given up and tried again later. */
void reconcile_source_lost(Reconcile *r);

/* reconcile_gone_done: the tombstones of ops->gone are committed (rc 0) or
 * not. */
void reconcile_gone_done(Reconcile *r, int rc);

/* reconcile_stop stops timers and the copy's connection (drain, fini);
 * reconcile_busy tells whether a commit of r's is in flight; reconcile_free
 * frees what r holds. */
void reconcile_stop(Reconcile *r);
int reconcile_busy(const Reconcile *r);
void reconcile_free(Reconcile *r);

/* The reconcile_* keys, for pg_extract's ConfKey list. */
#define RECONCILE_KEYS \
    {"reconcile_dsn", KEY_STR, 0, 0, 0, NULL, stage_check_dsn}, \
    {"reconcile_table", KEY_STR, 0, 0, 0, NULL, NULL}, \
    {"reconcile_interval", KEY_SECS, 0, 0.1, CONF_SECS_MAX, NULL, NULL}, \
    {"reconcile_range", KEY_UINT, 0, 1, 1000000, NULL, NULL}, \
    {"reconcile_pause", KEY_SECS, 0, 0, 3600, NULL, NULL}

#endif
