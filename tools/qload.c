/* qload.c: the bulk loader. It takes the sealed batches of a data directory
 * and COPYs them into a PostgreSQL-protocol warehouse, exactly once.
 *
 *     qload [--data DIR] --target DSN [--follow] [--create-tables]
 *           [--mode append|merge] [--pipeline FILE] [--model M] [--json]
 *           [--quiet] [--poll S]
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
 * (synchronous_standby_names) covers that.
 *
 * The table. Before its first batch of a model on a connection (and again
 * after a batch of that model failed), qload compares the table with the
 * model: every column of the model is there, not a generated column, and of
 * a type that can hold the model's values (numbers: a numeric, string or
 * json type; booleans: boolean or string; datetime and date: a date/time or
 * string type; json: json, jsonb or string; strings: any type); every other
 * column NOT NULL has a default or is an identity or generated column; the
 * table is not UNLOGGED. A difference fails the batch (state failed, every
 * difference in its error, `qctl batches` shows it) without rejecting a row;
 * fix the table, then `qctl batches retry ID`.
 *
 * LMDB transactions are short and never span PostgreSQL I/O: rows are read in
 * pages (at most PAGE_ROWS rows or SEND_BYTES of CSV per read transaction),
 * encoded into one reused buffer, and sent with PQputCopyData after the read
 * transaction ended. Memory stays flat whatever the batch size.
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
 * statements, not one or two per row.
 *
 * Errors are classified by SQLSTATE: class 22/23 a row's fault; class 08,
 * 40, 53, 57, 58 and a broken connection are transient (the batch stays
 * loading; --follow reconnects with backoff and retries, else qload exits 1);
 * anything else (42: no such table, no such column, ...) fails the batch with
 * the reason and a hint, and qload goes on with the others.
 *
 * Exit status: 0 all loaded and nothing rejected, 1 something rejected or
 * failed or the target unreachable, 2 usage. */
#include "cli.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "rec.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ constants */

#define PAGE_ROWS 20000u            /* rows per read transaction */
#define SEND_BYTES (512u << 10)     /* CSV bytes per page and per PQputCopyData */
#define UNMAP_PAGES 8               /* give back the map's pages every 8 pages read */
#define DROP_CHUNK 50000u           /* rows deleted per write transaction (~10 ms) */
#define CAREFUL_RANGE 8192u         /* careful path: rows per first attempt */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 10000
#define PROGRESS_NS 200000000ull    /* progress line: at most 5 updates a second */
#define ZONE_CHUNK 65536

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
    K_NODIRECT,  /* a direct merge met a soft delete: merge through the temp table */
    K_TABLE      /* the table refuses the batch as a whole (systematic refusals) */
};

/* Systematic refusals (see the header): the careful path holds back the
 * first REFUSE_SAMPLE refused rows before they become rejects, and fails
 * the batch when at least REFUSE_MIN of them share one error and that error
 * refused more than half of the held rows and of the rows tried so far. */
#define REFUSE_SAMPLE 32
#define REFUSE_MIN 8
#define REFUSE_PROBES 8             /* rows probed further on when the sample decides early */
#define SIG_LEN 192                 /* an error's signature (classify) */

/* A merge first tries to COPY straight into the table (as fast as append)
 * inside a savepoint: that works whenever no key of the batch is in the
 * table yet (an initial copy, new rows). A key that is there (a unique
 * violation) or a soft delete in the batch rolls back to the savepoint and
 * merges through the temp table; the model then skips the direct try for
 * its next DIRECT_BACKOFF batches, so a stream of updates does not pay for
 * a failed try every time. */
#define DIRECT_BACKOFF 16

/* Crash-test seams (PICKLINE_QLOAD_CRASH). */
enum { CRASH_NONE, CRASH_BEFORE_COPY, CRASH_DURING_COPY, CRASH_BEFORE_COMMIT,
       CRASH_AFTER_COMMIT, CRASH_AFTER_MARK };

/* The options: parse_args reads them, --help prints them between
 * usage_head and usage_tail. */
enum { F_DATA, F_TARGET, F_FOLLOW, F_POLL, F_CREATE, F_MODE, F_PIPELINE, F_MODEL, F_JSON,
       F_QUIET, F_HELP, NFLAGS };
static const CliFlag flags[NFLAGS] = {
    [F_DATA] = {"data", "DIR", "the data directory (default $PICKLINE_DATA, else\n"
                               CLI_DEFAULT_DIR ")"},
    [F_TARGET] = {"target", "DSN", "libpq conninfo or URI of the warehouse (default\n"
                                   "$PICKLINE_TARGET)"},
    [F_FOLLOW] = {"follow", NULL, "keep running: load new batches as they are sealed, and\n"
                                  "reconnect with backoff when the warehouse goes away;\n"
                                  "SIGTERM/SIGINT finish the current batch and exit 0"},
    [F_POLL] = {"poll", "S", "with --follow, look for new batches every S seconds\n"
                             "(default 0.5)"},
    [F_CREATE] = {"create-tables", NULL, "create the models' tables (CREATE TABLE IF NOT EXISTS,\n"
                                         "keys, unique, foreign keys) before loading"},
    [F_MODE] = {"mode", "MODE", "append (default): COPY rows into the table;\n"
                                "merge: upsert by the model's key (the last row of a key\n"
                                "wins), soft deletes set the model's paranoid column"},
    [F_PIPELINE] = {"pipeline", "FILE", "read the models from FILE instead of the pipeline kept\n"
                                        "in the data directory"},
    [F_MODEL] = {"model", "M", "load only the batches of model M"},
    [F_JSON] = {"json", NULL, "print the summary as one JSON object: {\"batches\",\n"
                              "\"rows\",\"rejected\",\"failed\",\"seconds\",\"rows_per_s\"}"},
    [F_QUIET] = {"quiet", NULL, "no progress and no per-batch lines (errors still print)"},
    [F_HELP] = {"help", NULL, "this text"},
};

static const char usage_head[] =
    "usage: qload [--data DIR] --target DSN [--follow] [--create-tables]\n"
    "             [--mode append|merge] [--pipeline FILE] [--model M] [--json]\n"
    "             [--quiet] [--poll S]\n"
    "\n"
    "Loads the sealed batches of a pickline data directory into a PostgreSQL\n"
    "warehouse with COPY, exactly once: a ledger table, pickline_ledger, records\n"
    "each batch in the same transaction as its rows. Parents load before\n"
    "children (the models' belongs_to), then by batch id.\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "Rows PostgreSQL refuses (bad data, a constraint) go to the rejects with its\n"
    "message (see `qctl rejects`); the rest of the batch loads. A batch that\n"
    "cannot load (no such table, a table that does not match the model: a\n"
    "missing column, a type that cannot hold the model's values, a NOT NULL\n"
    "column without default the model does not fill, an UNLOGGED table) or\n"
    "that the table refuses as a whole (most rows refused with one error, such\n"
    "as a CHECK no row passes) is marked failed with the reason and no row\n"
    "rejected; fix it and run `qctl batches retry ID`.\n"
    "\n"
    "Durability: qload commits with synchronous_commit = on (whatever the\n"
    "server's default) and drops a batch's rows from the store only after that\n"
    "COMMIT; it warns once when the server runs with fsync = off or\n"
    "full_page_writes = off, and refuses an UNLOGGED ledger.\n"
    "\n"
    "Exit status: 0 everything loaded, nothing rejected; 1 rows rejected,\n"
    "batches failed or the warehouse unreachable (the batch stays loadable);\n"
    "2 usage.\n"
    "\n"
    "Test seam: with PICKLINE_QLOAD_CRASH set to before_copy, during_copy (half\n"
    "the rows sent), before_commit (rows and ledger row written, not committed),\n"
    "after_commit (committed, not yet marked loaded in the store) or after_mark\n"
    "(marked loaded, its rows not yet dropped from the store), qload kills\n"
    "itself with SIGKILL at that point of its first batch. For crash tests only.\n";

/* USAGE_HINT follows every usage error. */
#define USAGE_HINT "run 'qload --help' for the options\n"

/* ------------------------------------------------------------ state */

typedef struct Opts {
    const char *dir, *target, *pipeline, *model;
    int follow, create_tables, merge, json, quiet, help;
    double poll_s;
} Opts;

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

    /* the batch being loaded */
    const Model *m;
    BatchRec b;
    uint64_t sent;          /* rows sent by the last stream */
    uint64_t live;          /* rows sent for this batch, for the progress line */
    uint64_t rejected;      /* rows of this batch moved to the rejects (all attempts) */
    uint64_t att_rejected;  /* of those, found by this attempt's ranges */
    unsigned *direct_skip;  /* per model (index in ms->m): batches to merge without trying direct */
    signed char *keyed;     /* per model: its table has a unique index on the key (1), not (-1), unknown (0) */
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
    signed char *checked;   /* per model: its table matched the model on this connection */
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
    uint64_t t0;
    /* progress of the pass */
    int tty;
    size_t pass_done, pass_total;
    uint64_t pass_rows, pass_rows_total, pass_t0, last_progress;
    int progress_shown;
} Loader;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ------------------------------------------------------------ messages */

static void say(Loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void progress_clear(Loader *L)
{
    if (L->progress_shown) {
        fputs("\r\033[K", stderr);
        L->progress_shown = 0;
    }
}

/* say prints "qload: ..." on stderr (over the progress line). */
static void say(Loader *L, const char *fmt, ...)
{
    va_list ap;
    progress_clear(L);
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
}

static void progress(Loader *L, int force)
{
    uint64_t now = pl_mono_ns();
    if (!L->tty || L->o.quiet)
        return;
    if (!force && now - L->last_progress < PROGRESS_NS)
        return;
    L->last_progress = now;
    double secs = (double)(now - L->pass_t0) / 1e9;
    uint64_t rows = L->pass_rows + L->live;
    double rate = secs > 0 ? (double)rows / secs : 0;
    fprintf(stderr, "\rqload: batches %zu/%zu, %" PRIu64 " rows, %.0f rows/s", L->pass_done,
            L->pass_total, rows, rate);
    if (rate > 0 && L->pass_rows_total > rows) {
        uint64_t left = (uint64_t)((double)(L->pass_rows_total - rows) / rate);
        fprintf(stderr, ", %" PRIu64 ":%02" PRIu64 " left", left / 60, left % 60);
    }
    fputs("\033[K", stderr);
    fflush(stderr);
    L->progress_shown = 1;
}

static void sleep_ms(long ms)
{
    /* In slices, so that a signal ends the wait soon. */
    while (ms > 0 && !stop_requested) {
        long step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* ------------------------------------------------------------ PostgreSQL */

/* signature writes what makes two rows' errors the same error: the
 * SQLSTATE, the constraint and column PostgreSQL names, and the primary
 * message without its quoted values and without what follows a colon
 * ('invalid input syntax for type integer: "x"'). */
static void signature(Loader *L, const PGresult *res, const char *prim)
{
    const char *con = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
    int r = snprintf(L->sig, sizeof L->sig, "%s|%s|%s|", L->state, con ? con : "",
                     col ? col : "");
    size_t n = r < 0 ? 0 : (size_t)r < sizeof L->sig ? (size_t)r : sizeof L->sig - 1;
    int quoted = 0;
    for (const char *p = prim ? prim : ""; *p && n + 1 < sizeof L->sig; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (*p == ':' && !quoted)
            break;
        if (!quoted || *p == '"')
            L->sig[n++] = *p;
    }
    L->sig[n] = '\0';
}

/* classify names the kind of PostgreSQL's error (res may be NULL). */
static int classify(Loader *L, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    const char *cm;

    snprintf(L->state, sizeof L->state, "%s", st ? st : "");
    snprintf(L->prim, sizeof L->prim, "%s", prim ? prim : "");
    signature(L, res, prim);
    L->line = 0;
    if (ctx && (cm = strstr(ctx, ", line ")) != NULL)
        L->line = strtol(cm + 7, NULL, 10);
    if (prim) {
        if (det)
            snprintf(L->err, sizeof L->err, "%s; %s (SQLSTATE %s)", prim, det, L->state);
        else
            snprintf(L->err, sizeof L->err, "%s (SQLSTATE %s)", prim, L->state);
    } else {
        const char *m = PQerrorMessage(L->pg);
        size_t n;
        snprintf(L->err, sizeof L->err, "%s", m && *m ? m : "connection to the target lost");
        n = strlen(L->err);
        while (n && (L->err[n - 1] == '\n' || L->err[n - 1] == ' '))
            L->err[--n] = '\0';
    }
    if (!st || !*st || PQstatus(L->pg) == CONNECTION_BAD)
        return K_CONN;
    if (!strncmp(st, "22", 2) || !strncmp(st, "23", 2))
        return K_ROW;
    if (!strncmp(st, "08", 2) || !strncmp(st, "40", 2) || !strncmp(st, "53", 2) ||
        !strncmp(st, "57", 2) || !strncmp(st, "58", 2))
        return K_CONN;
    return K_PERM;
}

/* pg_check returns K_OK for a good result, else classifies it; res is cleared. */
static int pg_check(Loader *L, PGresult *res)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int k = K_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        k = classify(L, res);
    PQclear(res);
    return k;
}

/* pg_exec runs one or more statements with no result rows wanted. */
static int pg_exec(Loader *L, const char *sql)
{
    return pg_check(L, PQexec(L->pg, sql));
}

static void pg_close(Loader *L)
{
    if (L->pg)
        PQfinish(L->pg);
    L->pg = NULL;
}

static void notice_ignore(void *arg, const char *msg)
{
    (void)arg, (void)msg;
}

/* durable makes this session's COMMITs wait for the WAL flush and checks
 * what else could make a COMMIT non-durable. synchronous_commit is SET for
 * the session (overriding a server, database or role default of off) and
 * read back: a session that does not keep it (a pooler handing statements
 * to other server connections) is refused; each load transaction sets it
 * again with SET LOCAL. fsync = off or full_page_writes = off on the server
 * are warned about once (a crash of the machine can still lose or tear
 * what was committed; qload cannot help that). An UNLOGGED ledger is
 * refused (a crash empties it). A target without synchronous_commit (not
 * PostgreSQL) gets a warning. K_OK, K_CONN or K_PERM with L->err. */
static int durable(Loader *L)
{
    static int warned_nosync, warned_settings;
    PGresult *res;
    int k = pg_exec(L, "SET synchronous_commit = on");

    L->sync_local = 1;
    if (k == K_PERM && !strcmp(L->state, "42704")) {
        L->sync_local = 0;
        if (!warned_nosync++)
            say(L, "warning: the target has no synchronous_commit setting (%s): qload cannot "
                "make sure a COMMIT is durable before it drops the batch's rows from the store",
                L->err);
    } else if (k != K_OK) {
        return k;
    }
    res = PQexec(L->pg, "SELECT (SELECT setting FROM pg_settings WHERE name ="
                        " 'synchronous_commit'), (SELECT setting FROM pg_settings WHERE name ="
                        " 'fsync'), (SELECT setting FROM pg_settings WHERE name ="
                        " 'full_page_writes'), (SELECT relpersistence FROM pg_class WHERE oid ="
                        " 'pickline_ledger'::regclass)");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        k = pg_check(L, res);
        if (k == K_CONN)
            return k;
        if (!warned_settings++)
            say(L, "warning: cannot read the target's settings (%s): qload cannot check that "
                "its COMMITs are durable", L->err);
        return K_OK;
    }
    const char *sync = PQgetvalue(res, 0, 0), *fs = PQgetvalue(res, 0, 1);
    const char *fpw = PQgetvalue(res, 0, 2), *ledger = PQgetvalue(res, 0, 3);
    if (L->sync_local && !PQgetisnull(res, 0, 0) && !strcmp(sync, "off")) {
        snprintf(L->err, sizeof L->err,
                 "the target's session keeps synchronous_commit = off although qload set it on "
                 "(a connection pooler that does not keep session settings?): its COMMIT could "
                 "return before the batch is durable, and qload would drop rows the warehouse can "
                 "still lose; connect qload to PostgreSQL directly or through a session pool");
        PQclear(res);
        return K_PERM;
    }
    if (!strcmp(ledger, "u")) {
        snprintf(L->err, sizeof L->err,
                 "the ledger pickline_ledger is UNLOGGED: PostgreSQL empties it after a crash, "
                 "and the batches it recorded would load again; run ALTER TABLE pickline_ledger "
                 "SET LOGGED");
        PQclear(res);
        return K_PERM;
    }
    if (!warned_settings && (!strcmp(fs, "off") || !strcmp(fpw, "off"))) {
        warned_settings = 1;
        say(L, "warning: the warehouse runs with %s%s%s: qload makes its COMMITs wait for the WAL "
            "flush, but a crash of the warehouse's machine (power, kernel) can still lose or "
            "corrupt batches qload has marked loaded and dropped from the store; set %s on the "
            "server", !strcmp(fs, "off") ? "fsync = off" : "",
            !strcmp(fs, "off") && !strcmp(fpw, "off") ? " and " : "",
            !strcmp(fpw, "off") ? "full_page_writes = off" : "",
            !strcmp(fs, "off") && !strcmp(fpw, "off") ? "both" : "it");
    }
    PQclear(res);
    return K_OK;
}

/* pg_connect connects and prepares the session: UTC, UTF-8, the ledger, and
 * with --create-tables the models' tables. K_OK, K_CONN or K_PERM (with
 * L->err). */
static int pg_connect(Loader *L)
{
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", "qload", L->o.target, NULL};
    int k;

    pg_close(L);
    L->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(L->pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(L->pg);
        size_t n;
        snprintf(L->err, sizeof L->err, "%s", m && *m ? m : "cannot connect");
        n = strlen(L->err);
        while (n && (L->err[n - 1] == '\n' || L->err[n - 1] == ' '))
            L->err[--n] = '\0';
        /* A bad conninfo never gets better by waiting. */
        k = strstr(L->err, "invalid connection option") || strstr(L->err, "missing \"=\"") ||
                    strstr(L->err, "invalid URI") || strstr(L->err, "invalid integer value")
                ? K_PERM : K_CONN;
        pg_close(L);
        return k;
    }
    PQsetNoticeProcessor(L->pg, notice_ignore, NULL);
    memset(L->checked, 0, L->ms->n ? L->ms->n : 1);
    L->leftovers_done = 0;
    k = pg_exec(L, "SET TimeZone = 'UTC'; SET client_encoding = 'UTF8';"
                   " SET client_min_messages = warning;"
                   " CREATE TABLE IF NOT EXISTS pickline_ledger (store text, batch bigint,"
                   " model text, rows bigint, rejected bigint,"
                   " loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (store, batch))");
    if (k == K_OK)
        k = durable(L);
    if (k == K_OK && L->o.create_tables) {
        sb_reset(&L->sql);
        models_ddl(L->ms, &L->sql);
        k = pg_exec(L, L->sql.buf);
        if (k != K_OK && k != K_CONN) {
            char e[700];
            snprintf(e, sizeof e, "%.*s", (int)sizeof e - 1, L->err);
            snprintf(L->err, sizeof L->err,
                     "--create-tables: PostgreSQL refused the models' DDL: %s; fix the models "
                     "or create the tables yourself", e);
            return K_PERM;
        }
    }
    if (k == K_ROW)
        k = K_PERM;
    return k;
}

/* ------------------------------------------------------------ store steps */

typedef struct Mark {
    Loader *L;
    uint64_t id;
    int state;
    const char *error;
    BatchRec *out;
} Mark;

/* mark_loading: sealed|loading -> loading, attempts + 1 (K_SKIP otherwise). */
static int mark_loading_fn(Txn *t, void *arg)
{
    Mark *mk = arg;
    BatchRec b;
    int rc = batch_get(t, mk->id, &b);
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

/* unmap_store gives back the pages of the store's map that reading touched
 * (they stay in the page cache): LMDB maps data.mdb read-only and shared, so
 * this loses nothing, and qload's resident size stays flat however big the
 * batch. The map is found in /proc/self/maps by data.mdb's inode (LMDB does
 * not tell its address). No transaction of this process may be open. */
static void unmap_store(Loader *L)
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
        unmap_store(L);
    }
    return rc;
}

typedef struct Rej {
    uint64_t id;
    uint32_t seq;
    const char *msg;
} Rej;

static int reject_fn(Txn *t, void *arg)
{
    Rej *r = arg;
    uint64_t rid;
    return batch_row_reject(t, r->id, r->seq, r->msg, &rid);
}

static int uuid_fn(Txn *t, void *arg)
{
    return staging_uuid(t, arg);
}

/* ------------------------------------------------------------ streaming */

typedef struct Stream {
    Loader *L;
    int op, seq;            /* model_csv_row's op column; a _seq column */
    int direct;             /* straight into the table: a soft delete stops it */
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
    char d[16];
    int n = 0;
    /* model_csv_row ends the line with "\n": put ",seq" before it. */
    if (b->len && b->buf[b->len - 1] == '\n')
        b->len--;
    d[n++] = '\n';
    do {
        d[n++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    d[n++] = ',';
    while (n)
        sb_add(b, &d[--n], 1);
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
static int copy_rows(Loader *L, const char *copy_sql, int op, int seq, int direct)
{
    Stream st = {.L = L, .op = op, .seq = seq, .direct = direct};
    Sender snd = {.pg = L->pg, .buf = L->bufs};
    PGresult *res = PQexec(L->pg, copy_sql);
    int k = K_OK, rc, more = 1, cur = 0, failed;
    unsigned pages = 0;

    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        k = classify(L, res);
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
            unmap_store(L);
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
        progress(L, 0);
    }
    failed = sender_stop(&snd);
    unmap_store(L);
    if (failed || PQstatus(L->pg) == CONNECTION_BAD)
        return classify(L, NULL);
    if (PQputCopyEnd(L->pg, k == K_OK ? NULL : "qload gave up on this COPY") != 1)
        return classify(L, NULL);
    while ((res = PQgetResult(L->pg)) != NULL) {
        int k2 = pg_check(L, res);
        if (k == K_OK)
            k = k2;
    }
    if (k == K_NODIRECT && PQstatus(L->pg) == CONNECTION_BAD)
        return classify(L, NULL);
    return k;
}

/* ------------------------------------------------------------ SQL */

static void add_ident(Strbuf *b, const char *s)
{
    model_sql_ident(b, s);
}

/* add_col: "c" AS "c", or "c"::type AS "c" on the careful path. */
static void add_col(Loader *L, Strbuf *b, size_t i, int cast)
{
    add_ident(b, L->cols[i]);
    if (cast) {
        sb_adds(b, "::");
        sb_adds(b, L->types[i]);
    }
    sb_adds(b, " AS ");
    add_ident(b, L->cols[i]);
}

static void add_cols(Loader *L, Strbuf *b, const char *prefix)
{
    for (size_t i = 0; i < L->ncols; i++) {
        if (i)
            sb_adds(b, ", ");
        if (prefix)
            sb_adds(b, prefix);
        add_ident(b, L->cols[i]);
    }
}

static void add_keys(Loader *L, Strbuf *b, const char *prefix)
{
    for (size_t i = 0; i < L->m->nkey; i++) {
        if (i)
            sb_adds(b, ", ");
        if (prefix)
            sb_adds(b, prefix);
        add_ident(b, L->m->fields[L->m->key[i]].name);
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

/* load_sql writes the statements that move rows [a, z] of src into the
 * table: append, an INSERT; merge, the upsert of the last update of each
 * key, then the soft delete of the keys whose last row is a delete. */
static void load_sql(Loader *L, Strbuf *b, const char *src, int cast, uint64_t a, uint64_t z)
{
    const Model *m = L->m;
    int merge = L->o.merge;

    sb_adds(b, "INSERT INTO ");
    add_ident(b, m->table);
    sb_adds(b, " (");
    add_cols(L, b, NULL);
    sb_adds(b, ") SELECT ");
    add_cols(L, b, NULL);
    sb_adds(b, " FROM ");
    if (!merge) {
        add_source(L, b, src, cast, 0, a, z);
        sb_adds(b, ";");
        return;
    }
    sb_adds(b, "(SELECT DISTINCT ON (");
    add_keys(L, b, NULL);
    sb_adds(b, ") * FROM ");
    add_source(L, b, src, cast, 1, a, z);
    sb_adds(b, " WHERE _op = 'u' ORDER BY ");
    add_keys(L, b, NULL);
    sb_adds(b, ", _seq DESC) s ON CONFLICT (");
    add_keys(L, b, NULL);
    sb_adds(b, ") DO ");
    {
        int any = 0;
        for (size_t i = 0; i < L->ncols; i++) {
            if (is_key(m, L->cols[i]))
                continue;
            sb_adds(b, any ? ", " : "UPDATE SET ");
            add_ident(b, L->cols[i]);
            sb_adds(b, " = EXCLUDED.");
            add_ident(b, L->cols[i]);
            any = 1;
        }
        if (!any)
            sb_adds(b, "NOTHING");
    }
    sb_adds(b, ";");
    if (m->paranoid < 0)
        return;
    const char *par = m->fields[m->paranoid].name;
    sb_adds(b, " UPDATE ");
    add_ident(b, m->table);
    sb_adds(b, " AS t SET ");
    add_ident(b, par);
    sb_adds(b, " = s.");
    add_ident(b, par);
    sb_adds(b, " FROM (SELECT DISTINCT ON (");
    add_keys(L, b, NULL);
    sb_adds(b, ") * FROM ");
    add_source(L, b, src, cast, 1, a, z);
    sb_adds(b, " ORDER BY ");
    add_keys(L, b, NULL);
    sb_adds(b, ", _seq DESC) s WHERE s._op = 'd'");
    for (size_t i = 0; i < m->nkey; i++) {
        const char *k = m->fields[m->key[i]].name;
        sb_adds(b, " AND t.");
        add_ident(b, k);
        sb_adds(b, " = s.");
        add_ident(b, k);
    }
    sb_adds(b, ";");
}

/* ------------------------------------------------------------ loading */

static void crash_point(Loader *L, int which)
{
    if (L->crash == which) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

/* pg_begin begins a transaction whose COMMIT waits for the WAL flush. */
static int pg_begin(Loader *L)
{
    return pg_exec(L, L->sync_local ? "BEGIN; SET LOCAL synchronous_commit = on" : "BEGIN");
}

/* flush_past makes the open transaction's COMMIT flush the WAL past every
 * commit it has seen: it takes a transaction id, so the COMMIT writes a
 * record and, synchronous, waits until the WAL up to it is on disk. A
 * ledger row found there (an earlier run's, or a COMMIT whose answer was
 * lost) is then durable before the store forgets the batch's rows, even if
 * the transaction that wrote it committed asynchronously. */
static int flush_past(Loader *L)
{
    return L->sync_local ? pg_exec(L, "SELECT txid_current()") : K_OK;
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
    return pg_check(L, res);
}

static int ledger_finish(Loader *L, uint64_t rows, uint64_t rejected)
{
    char id[24], r[24], j[24];
    const char *v[4] = {L->uuid, id, r, j};
    snprintf(id, sizeof id, "%" PRIu64, L->b.id);
    snprintf(r, sizeof r, "%" PRIu64, rows);
    snprintf(j, sizeof j, "%" PRIu64, rejected);
    return pg_check(L, PQexecParams(L->pg,
                                    "UPDATE pickline_ledger SET rows = $3, rejected = $4"
                                    " WHERE store = $1 AND batch = $2",
                                    4, NULL, v, NULL, NULL, 0));
}

/* key_indexed tells whether the model's table has a unique index (or
 * primary key) on exactly the model's key: only then can a direct COPY
 * stand for a merge (a second row of a key is refused, not added). */
static int key_indexed(Loader *L, signed char *out)
{
    const Model *m = L->m;
    Strbuf keys;
    sb_init(&keys);
    sb_adds(&keys, "{");
    /* sorted, to compare as sets */
    const char *names[64];
    size_t n = m->nkey < 64 ? m->nkey : 64;
    for (size_t i = 0; i < n; i++)
        names[i] = m->fields[m->key[i]].name;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *x = names[j];
            names[j] = names[j - 1];
            names[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++) {
        sb_adds(&keys, i ? ",\"" : "\"");
        sb_adds(&keys, names[i]);
        sb_adds(&keys, "\"");
    }
    sb_adds(&keys, "}");
    sb_reset(&L->tmp);
    add_ident(&L->tmp, m->table);
    const char *v[2] = {L->tmp.buf, keys.buf};
    PGresult *res = PQexecParams(
        L->pg,
        "SELECT 1 FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique"
        " AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)"
        " FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))"
        " = $2::text[] AND i.indnatts = cardinality($2::text[])",
        2, NULL, v, NULL, NULL, 0);
    sb_free(&keys);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_check(L, res);
    *out = PQntuples(res) > 0 ? 1 : -1;
    PQclear(res);
    return K_OK;
}

/* fast: COPY straight into the table (append), or into a typed temp table
 * and merge from there. */
static int load_fast(Loader *L)
{
    const Model *m = L->m;
    int k;

    sb_reset(&L->sql);
    if (!L->o.merge) {
        sb_adds(&L->sql, "COPY ");
        add_ident(&L->sql, m->table);
        sb_adds(&L->sql, " (");
        model_columns(m, &L->sql);
        sb_adds(&L->sql, ") FROM STDIN (FORMAT csv)");
        crash_point(L, CRASH_BEFORE_COPY);
        return copy_rows(L, L->sql.buf, 0, 0, 0);
    }
    unsigned *skip = &L->direct_skip[m - L->ms->m];
    signed char *keyed = &L->keyed[m - L->ms->m];
    if (!*keyed && (k = key_indexed(L, keyed)) != K_OK)
        return k;
    if (*skip || *keyed < 0) {
        --*skip;
    } else {
        if ((k = pg_exec(L, "SAVEPOINT pl_direct")) != K_OK)
            return k;
        sb_adds(&L->sql, "COPY ");
        add_ident(&L->sql, m->table);
        sb_adds(&L->sql, " (");
        model_columns(m, &L->sql);
        sb_adds(&L->sql, ") FROM STDIN (FORMAT csv)");
        crash_point(L, CRASH_BEFORE_COPY);
        k = copy_rows(L, L->sql.buf, 0, 0, 1);
        if (k == K_OK)
            return pg_exec(L, "RELEASE SAVEPOINT pl_direct");
        if (k != K_NODIRECT && !(k == K_ROW && !strcmp(L->state, "23505")))
            return k;
        if ((k = pg_exec(L, "ROLLBACK TO SAVEPOINT pl_direct")) != K_OK)
            return k;
        *skip = DIRECT_BACKOFF;
        sb_reset(&L->sql);
    }
    /* CREATE ... AS SELECT copies the column types and no constraints
     * (soft deletes leave required columns NULL). */
    sb_adds(&L->sql, "CREATE TEMP TABLE pl_load ON COMMIT DROP AS SELECT ");
    add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, ", NULL::text AS _op, NULL::bigint AS _seq FROM ");
    add_ident(&L->sql, m->table);
    sb_adds(&L->sql, " WITH NO DATA");
    if ((k = pg_exec(L, L->sql.buf)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "COPY pl_load (");
    add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, ", _op, _seq) FROM STDIN (FORMAT csv)");
    crash_point(L, CRASH_BEFORE_COPY);
    if ((k = copy_rows(L, L->sql.buf, 1, 1, 0)) != K_OK)
        return k;
    sb_reset(&L->sql);
    load_sql(L, &L->sql, "pl_load", 0, 1, 0);
    return pg_exec(L, L->sql.buf);
}

/* col_types reads the table's column types (for the careful path's casts;
 * the base type, so that varchar(n) refuses a long value instead of
 * truncating it). */
static int col_types(Loader *L)
{
    const char *v[1];
    PGresult *res;
    int k;

    sb_reset(&L->tmp);
    add_ident(&L->tmp, L->m->table);
    v[0] = L->tmp.buf;
    res = PQexecParams(L->pg,
                       "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
                       " WHERE a.attrelid = $1::regclass AND a.attnum > 0"
                       " AND NOT a.attisdropped",
                       1, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_check(L, res);
    k = K_OK;
    for (size_t i = 0; i < L->ncols; i++) {
        free(L->types[i]);
        L->types[i] = NULL;
        for (int r = 0; r < PQntuples(res); r++) {
            if (!strcmp(PQgetvalue(res, r, 0), L->cols[i])) {
                L->types[i] = xstrdup(PQgetvalue(res, r, 1));
                break;
            }
        }
        if (!L->types[i] && k == K_OK) {
            snprintf(L->err, sizeof L->err, "it has no column %s", L->cols[i]);
            snprintf(L->state, sizeof L->state, "42703");
            k = K_PERM;
        }
    }
    PQclear(res);
    return k;
}

/* ------------------------------------------------------------ the table */

static const char *const type_names[] = {
    [FT_SERIAL] = "serial",   [FT_INTEGER] = "integer", [FT_BIGINT] = "bigint",
    [FT_DECIMAL] = "decimal", [FT_BOOLEAN] = "boolean", [FT_STRING] = "string",
    [FT_TEXT] = "text",       [FT_DATETIME] = "datetime", [FT_DATE] = "date",
    [FT_JSON] = "json",
};

/* type_fits tells whether a column of PostgreSQL type category cat (pg_type.
 * typcategory; base: the type's name, a domain's base type's) can hold
 * values of model type t, as model_csv_row writes them. Strings fit any
 * type with a text input (a uuid, an enum, json): whether they do is the
 * rows' business. */
static int type_fits(FieldType t, char cat, const char *base)
{
    int json = !strcmp(base, "json") || !strcmp(base, "jsonb");
    switch (t) {
    case FT_STRING:
    case FT_TEXT:
        return 1;
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT:
    case FT_DECIMAL:
        return cat == 'N' || cat == 'S' || json;
    case FT_BOOLEAN:
        return cat == 'B' || cat == 'S';
    case FT_DATETIME:
    case FT_DATE:
        return cat == 'D' || cat == 'S';
    default:
        return cat == 'S' || json;
    }
}

/* diff_add appends one difference to d ("; " between them); when d is
 * nearly full, the rest are only counted. */
static void diff_add(Strbuf *d, size_t *more, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void diff_add(Strbuf *d, size_t *more, const char *fmt, ...)
{
    char one[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(one, sizeof one, fmt, ap);
    va_end(ap);
    if (d->len + strlen(one) > 320) {
        ++*more;
        return;
    }
    if (d->len)
        sb_adds(d, "; ");
    sb_adds(d, one);
}

/* table_check compares the model's table with the model before its first
 * batch on a connection: every column of the model is there, of a type
 * that can hold the model's values (type_fits), and is no generated
 * column; every other column NOT NULL has a default (or is an identity or
 * generated column); the table is not UNLOGGED (a crash would empty it
 * while the ledger keeps its batches loaded). K_OK; K_PERM with the whole
 * batch error in msg (msg empty: L->err, L->state from PostgreSQL, e.g. no
 * such table); K_CONN. */
static int table_check(Loader *L, char *msg, size_t n)
{
    const Model *m = L->m;
    int ver = PQserverVersion(L->pg);
    PGresult *res;
    Strbuf d;
    size_t more = 0;
    int k = K_OK;

    msg[0] = '\0';
    sb_reset(&L->sql);
    sb_addf(&L->sql,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory,"
            " coalesce(bt.typname, t.typname), a.attnotnull, a.atthasdef, %s, %s,"
            " c.relpersistence FROM pg_class c"
            " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
            " AND NOT a.attisdropped LEFT JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type bt ON bt.oid = t.typbasetype WHERE c.oid = $1::regclass",
            ver >= 100000 ? "a.attidentity::text" : "''::text",
            ver >= 120000 ? "a.attgenerated::text" : "''::text");
    sb_reset(&L->tmp);
    add_ident(&L->tmp, m->table);
    const char *v[1] = {L->tmp.buf};
    res = PQexecParams(L->pg, L->sql.buf, 1, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_check(L, res);
    int nr = PQntuples(res);
    sb_init(&d);
    if (nr > 0 && !strcmp(PQgetvalue(res, 0, 8), "u"))
        diff_add(&d, &more, "it is UNLOGGED: PostgreSQL empties it after a crash while the ledger "
                 "keeps its batches loaded (ALTER TABLE %s SET LOGGED)", m->table);
    for (size_t i = 0; i < L->ncols; i++) {
        FieldType ft = i < m->nfields ? m->fields[i].type : FT_JSON;
        int r;
        for (r = 0; r < nr; r++)
            if (!PQgetisnull(res, r, 0) && !strcmp(PQgetvalue(res, r, 0), L->cols[i]))
                break;
        if (r == nr) {
            diff_add(&d, &more, "no column %s (the model's %s field)", L->cols[i],
                     type_names[ft]);
            continue;
        }
        if (!type_fits(ft, PQgetvalue(res, r, 2)[0], PQgetvalue(res, r, 3)))
            diff_add(&d, &more, "column %s is %s, which cannot hold the model's %s values",
                     L->cols[i], PQgetvalue(res, r, 1), type_names[ft]);
        else if (*PQgetvalue(res, r, 7))
            diff_add(&d, &more, "column %s is a generated column, which cannot take the "
                     "model's %s values", L->cols[i], type_names[ft]);
    }
    for (int r = 0; r < nr; r++) {
        const char *col = PQgetvalue(res, r, 0);
        size_t i;
        if (PQgetisnull(res, r, 0))
            continue;
        for (i = 0; i < L->ncols && strcmp(L->cols[i], col) != 0; i++)
            ;
        if (i == L->ncols && !strcmp(PQgetvalue(res, r, 4), "t") &&
            !strcmp(PQgetvalue(res, r, 5), "f") && !*PQgetvalue(res, r, 6) &&
            !*PQgetvalue(res, r, 7))
            diff_add(&d, &more, "column %s is NOT NULL without a default, and model %s has no "
                     "field %s to fill it", col, m->name, col);
    }
    PQclear(res);
    if (d.len) {
        snprintf(msg, n, "table %s does not match model %s: %s%s; alter the table (or fix the "
                 "model), then run `qctl batches retry %" PRIu64 "`", m->table, m->name, d.buf,
                 more ? "; and more" : "", L->b.id);
        k = K_PERM;
    }
    sb_free(&d);
    return k;
}

/* reject moves row seq to the rejects with L->err (in the store, before
 * the PostgreSQL COMMIT: a crash in between never loses it). */
static int reject(Loader *L, uint32_t seq)
{
    Rej r = {L->b.id, seq, L->err};
    int rc = store_run(L->s, reject_fn, &r);
    if (rc) {
        snprintf(L->err, sizeof L->err, "moving row %" PRIu32 " of batch %" PRIu64
                 " to the rejects: %s", seq, L->b.id, pl_strerror(rc));
        return K_LOCAL;
    }
    L->rejected++;
    L->att_rejected++;
    if (!L->o.quiet && L->rejected <= 10)
        say(L, "batch %" PRIu64 " (%s): row %" PRIu32 " rejected: %s", L->b.id, L->m->name,
            seq, L->err);
    else if (!L->o.quiet && L->rejected == 11)
        say(L, "batch %" PRIu64 " (%s): more rows rejected; see them with qctl rejects",
            L->b.id, L->m->name);
    return K_OK;
}

/* load_sql_exec runs pre, the careful load of rows [a, z] of pl_text, and
 * post (NULL: nothing). */
static int load_sql_exec(Loader *L, const char *pre, uint64_t a, uint64_t z, const char *post)
{
    sb_reset(&L->sql);
    sb_adds(&L->sql, pre);
    load_sql(L, &L->sql, "pl_text", 1, a, z);
    if (post)
        sb_adds(&L->sql, post);
    return pg_exec(L, L->sql.buf);
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
        if ((k = pg_exec(L, "ROLLBACK TO SAVEPOINT pl_probe; RELEASE SAVEPOINT pl_probe")) != K_OK)
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
        k = reject(L, L->held[i].seq);
    }
    return k;
}

/* refused deals with row seq, which PostgreSQL refused on the careful path
 * (L->err and L->sig say why): held back while the rule for systematic
 * refusals has not decided, else a reject. K_OK, K_TABLE or K_LOCAL. */
static int refused(Loader *L, uint32_t seq)
{
    if (!L->holding)
        return reject(L, seq);
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
    if ((k = pg_exec(L, "ROLLBACK TO SAVEPOINT pl; RELEASE SAVEPOINT pl")) != K_OK)
        return k;
    if (a == z) /* L->err still holds the row's error */
        return refused(L, (uint32_t)a);
    uint64_t mid = a + (z - a) / 2;
    if ((k = try_range(L, a, mid)) != K_OK)
        return k;
    return try_range(L, mid + 1, z);
}

/* find_line returns the seq of the n-th row (1-based) the stream sends. */
static int find_line(Loader *L, uint64_t n, uint32_t *seq)
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

/* careful: every column as text into pl_text, then range by range with
 * casts. */
static int load_careful(Loader *L)
{
    uint64_t top = L->b.rows ? L->b.rows - 1 : 0;
    int k;

    if ((k = col_types(L)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "CREATE TEMP TABLE pl_text (");
    for (size_t i = 0; i < L->ncols; i++) {
        add_ident(&L->sql, L->cols[i]);
        sb_adds(&L->sql, " text, ");
    }
    if (L->o.merge)
        sb_adds(&L->sql, "_op text, ");
    sb_adds(&L->sql, "_seq bigint) ON COMMIT DROP");
    if ((k = pg_exec(L, L->sql.buf)) != K_OK)
        return k;
    sb_reset(&L->sql);
    sb_adds(&L->sql, "COPY pl_text (");
    add_cols(L, &L->sql, NULL);
    sb_adds(&L->sql, L->o.merge ? ", _op, _seq" : ", _seq");
    sb_adds(&L->sql, ") FROM STDIN (FORMAT csv)");
    crash_point(L, CRASH_BEFORE_COPY);
    k = copy_rows(L, L->sql.buf, L->o.merge, 1, 0);
    if (k == K_ROW)
        /* Text takes anything but bytes the encoding refuses (a NUL):
         * the COPY's context names the line. */
        return L->line > 0 ? K_LINE : K_PERM;
    if (k != K_OK)
        return k;
    if ((k = pg_exec(L, "CREATE INDEX ON pl_text (_seq)")) != K_OK)
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

/* attempt is one PostgreSQL transaction for the batch. */
static int attempt(Loader *L, int careful)
{
    int k = ledger_claim(L);
    if (k == K_DONE) {
        if ((k = pg_exec(L, "COMMIT")) != K_OK)
            return k;
        return K_DONE;
    }
    if (k != K_OK)
        return k;
    k = careful ? load_careful(L) : load_fast(L);
    if (k != K_OK)
        return k;
    if ((k = ledger_finish(L, L->sent - L->att_rejected, L->rejected)) != K_OK)
        return k;
    crash_point(L, CRASH_BEFORE_COMMIT);
    if ((k = pg_exec(L, "COMMIT")) != K_OK)
        return k;
    crash_point(L, CRASH_AFTER_COMMIT);
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

static void set_columns(Loader *L, const Model *m)
{
    for (size_t i = 0; i < L->ncols; i++)
        free(L->types[i]);
    free(L->cols);
    free(L->types);
    L->ncols = m->nfields + (m->drift == DRIFT_KEEP);
    L->cols = xcalloc(L->ncols, sizeof *L->cols);
    L->types = xcalloc(L->ncols, sizeof *L->types);
    for (size_t i = 0; i < m->nfields; i++)
        L->cols[i] = (char *)m->fields[i].name;
    if (m->drift == DRIFT_KEEP)
        L->cols[m->nfields] = (char *)(m->drift_column ? m->drift_column : "extra");
}

/* fail_batch marks the batch failed with msg. */
static int fail_batch(Loader *L, const char *msg)
{
    Mark mk = {L, L->b.id, BATCH_FAILED, msg, NULL};
    int rc = store_run(L->s, mark_fn, &mk);
    L->n_failed++;
    say(L, "batch %" PRIu64 " (%s) failed: %s", L->b.id, L->b.model, msg);
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
    k = pg_exec(L, "ROLLBACK");
    if (k != K_CONN) {
        memcpy(L->err, e, sizeof e);
        memcpy(L->state, st, sizeof st);
        return K_OK;
    }
    return K_CONN;
}

/* load_batch loads one batch. K_OK, K_DONE, K_SKIP, K_PERM (failed and
 * marked), K_CONN (left loading: retry) or K_LOCAL. */
static int load_batch(Loader *L, const Item *it)
{
    Mark mk = {L, it->id, 0, NULL, &L->b};
    uint64_t t0 = pl_mono_ns();
    int k, rc, careful = 0;
    size_t mi;
    char msg[2048]; /* cut to the batch record's error field when stored */

    if ((rc = store_run(L->s, mark_loading_fn, &mk)) != 0) {
        snprintf(L->err, sizeof L->err, "batch %" PRIu64 ": cannot mark it loading: %s",
                 it->id, pl_strerror(rc));
        return K_LOCAL;
    }
    if (L->b.state != BATCH_LOADING)
        return K_SKIP;
    L->m = models_find(L->ms, L->b.model);
    L->rejected = 0;
    L->sent = 0;
    L->live = 0;
    if (!L->m) {
        snprintf(msg, sizeof msg, "model '%s' is not declared in the pipeline; declare it under "
                 "models: (or pass --pipeline FILE), then run `qctl batches retry %" PRIu64 "`",
                 L->b.model, L->b.id);
        return fail_batch(L, msg);
    }
    if (L->o.merge && L->m->nkey == 0) {
        snprintf(msg, sizeof msg, "merge needs a key, and model '%s' declares none; mark its "
                 "key fields key: true or load with --mode append", L->m->name);
        return fail_batch(L, msg);
    }
    set_columns(L, L->m);
    mi = (size_t)(L->m - L->ms->m);
    if (!L->checked[mi]) {
        k = table_check(L, msg, sizeof msg);
        if (k == K_CONN)
            return K_CONN;
        if (k != K_OK) {
            if (!msg[0])
                perm_message(L, msg, sizeof msg);
            return fail_batch(L, msg);
        }
        L->checked[mi] = 1;
    }

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
            int r = find_line(L, (uint64_t)L->line, &seq);
            if (r == 0 && reject(L, seq) == K_OK) {
                /* Rows the store already moved are not counted again. */
                continue;
            }
        }
        /* The table may have changed: check it again for the next batch. */
        L->checked[mi] = 0;
        if (k == K_TABLE)
            snprintf(msg, sizeof msg, "%s", L->err);
        else
            perm_message(L, msg, sizeof msg);
        return fail_batch(L, msg);
    }

    /* Committed (or found committed): mark it loaded, then drop its rows. */
    mk.state = BATCH_LOADED;
    mk.out = NULL;
    if ((rc = store_run(L->s, mark_fn, &mk)) != 0) {
        snprintf(L->err, sizeof L->err, "batch %" PRIu64 " is in the warehouse but cannot be "
                 "marked loaded in the store: %s; the next run will mark it", it->id,
                 pl_strerror(rc));
        return K_LOCAL;
    }
    crash_point(L, CRASH_AFTER_MARK);
    if ((rc = drop_rows(L, it->id)) != 0)
        say(L, "batch %" PRIu64 ": loaded, but dropping its rows failed: %s (the next run "
            "drops them)", it->id, pl_strerror(rc));
    {
        uint64_t rows = k == K_DONE ? L->b.rows - L->b.removed : L->sent - L->att_rejected;
        double s = (double)(pl_mono_ns() - t0) / 1e9;
        L->n_batches++;
        L->n_rows += rows;
        L->n_rejected += L->rejected;
        if (!L->o.quiet && !L->tty)
            say(L, "batch %" PRIu64 " (%s): %" PRIu64 " rows %s in %.3f s%s", it->id,
                L->m->name, rows, k == K_DONE ? "were loaded by an earlier run;" : "loaded",
                s, L->rejected ? ", some rejected (see qctl rejects)" : "");
    }
    return k;
}

/* ------------------------------------------------------------ a pass */

typedef struct HasRow {
    int any;
} HasRow;

static int has_row_fn(uint32_t seq, const void *mp, size_t len, void *arg)
{
    (void)seq, (void)mp, (void)len;
    ((HasRow *)arg)->any = 1;
    return 1;
}

typedef struct Collect {
    Loader *L;
    Txn *t;
    Item *items;
    size_t n, cap;
    int leftovers;          /* also list loaded batches (to drop leftover rows) */
} Collect;

static size_t model_pos(const Models *ms, const char *name)
{
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[ms->order[i]].name, name))
            return i;
    return SIZE_MAX;
}

static int collect_fn(const BatchRec *b, void *arg)
{
    Collect *c = arg;
    if (c->leftovers ? b->state != BATCH_LOADED
                     : b->state != BATCH_SEALED && b->state != BATCH_LOADING)
        return 0;
    if (c->L->o.model && strcmp(c->L->o.model, b->model) != 0)
        return 0;
    if (c->leftovers) {
        HasRow h = {0};
        int rc = batch_rows(c->t, b->id, 0, 1, has_row_fn, &h);
        if (rc != 0 && rc != 1)
            return rc;
        if (!h.any)
            return 0;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->items = xrealloc(c->items, c->cap * sizeof *c->items);
    }
    Item *it = &c->items[c->n++];
    it->id = b->id;
    it->pos = model_pos(c->L->ms, b->model);
    it->rows = b->rows - b->removed;
    snprintf(it->model, sizeof it->model, "%s", b->model);
    return 0;
}

static int collect_tx(Txn *t, void *arg)
{
    ((Collect *)arg)->t = t;
    return batch_each(t, -1, collect_fn, arg);
}

static int item_cmp(const void *x, const void *y)
{
    const Item *a = x, *b = y;
    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
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

/* settle_leftovers deals with the batches marked loaded whose rows a crash
 * (between the mark and the drop) kept in the store, once per connection:
 * their rows are dropped only after the ledger was seen to hold them, in a
 * transaction whose synchronous COMMIT flushed the WAL past that (see
 * flush_past). A batch the ledger lacks was lost by the warehouse after
 * qload marked it (an asynchronous commit and a crash, a restore from a
 * backup): it is sealed again and loads again from the rows the store
 * kept. K_OK, K_CONN or K_LOCAL. */
static int settle_leftovers(Loader *L)
{
    Collect c = {.L = L, .leftovers = 1};
    unsigned char *found = NULL;
    PGresult *res = NULL;
    int rc = store_read(L->s, collect_tx, &c), k = K_OK;

    if (rc) {
        snprintf(L->err, sizeof L->err, "reading the batches: %s", pl_strerror(rc));
        k = K_LOCAL;
        goto out;
    }
    if (c.n == 0)
        goto done;
    found = xcalloc(c.n, 1);
    sb_reset(&L->tmp);
    sb_adds(&L->tmp, "{");
    for (size_t i = 0; i < c.n; i++)
        sb_addf(&L->tmp, "%s%" PRIu64, i ? "," : "", c.items[i].id);
    sb_adds(&L->tmp, "}");
    if ((k = pg_begin(L)) != K_OK)
        goto out;
    const char *v[2] = {L->uuid, L->tmp.buf};
    res = PQexecParams(L->pg, "SELECT batch FROM pickline_ledger WHERE store = $1"
                              " AND batch = ANY ($2::bigint[])",
                       2, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        k = pg_check(L, res);
        res = NULL;
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint64_t id = strtoull(PQgetvalue(res, r, 0), NULL, 10);
        for (size_t i = 0; i < c.n; i++)
            if (c.items[i].id == id)
                found[i] = 1;
    }
    if ((k = flush_past(L)) != K_OK || (k = pg_exec(L, "COMMIT")) != K_OK)
        goto out;
    for (size_t i = 0; i < c.n; i++) {
        char msg[400];
        Mark mk = {L, c.items[i].id, BATCH_SEALED, msg, NULL};
        if (found[i]) {
            if ((rc = drop_rows(L, c.items[i].id)) != 0)
                say(L, "batch %" PRIu64 ": loaded, but dropping its rows failed: %s (the next "
                    "run drops them)", c.items[i].id, pl_strerror(rc));
            continue;
        }
        snprintf(msg, sizeof msg, "marked loaded, but not in the warehouse (its ledger has no "
                 "row for it: the warehouse lost the commit); loading it again from the rows the "
                 "store kept");
        say(L, "batch %" PRIu64 " (%s) was %s", c.items[i].id, c.items[i].model, msg);
        if ((rc = store_run(L->s, reseal_fn, &mk)) != 0) {
            snprintf(L->err, sizeof L->err, "batch %" PRIu64 " is not in the warehouse and "
                     "cannot be sealed again in the store: %s", c.items[i].id, pl_strerror(rc));
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
        say(L, "checking the ledger for batches marked loaded: %s; their rows stay in the store",
            L->err);
        L->leftovers_done = 1;
        k = rollback(L);
    } else if (k == K_CONN) {
        rollback(L);
    }
    free(found);
    free(c.items);
    return k;
}

/* pass loads every sealed or loading batch once. K_OK, K_CONN or K_LOCAL. */
static int pass(Loader *L)
{
    Collect c = {.L = L};
    int rc, k = K_OK;

    /* First the batches a crash left loaded with their rows (some may
     * become loadable again). */
    if (!L->leftovers_done && (k = settle_leftovers(L)) != K_OK)
        return k;
    rc = store_read(L->s, collect_tx, &c);
    if (rc) {
        snprintf(L->err, sizeof L->err, "reading the batches: %s", pl_strerror(rc));
        free(c.items);
        return K_LOCAL;
    }
    if (c.n > 1)
        qsort(c.items, c.n, sizeof *c.items, item_cmp);
    L->pass_done = 0;
    L->pass_total = c.n;
    L->pass_rows = 0;
    L->pass_rows_total = 0;
    L->pass_t0 = pl_mono_ns();
    for (size_t i = 0; i < c.n; i++)
        L->pass_rows_total += c.items[i].rows;
    for (size_t i = 0; i < c.n && !stop_requested; i++) {
        k = load_batch(L, &c.items[i]);
        if (L->crash != CRASH_NONE && k != K_SKIP)
            L->crash = CRASH_NONE; /* the seam is for the first batch only */
        if (k == K_CONN || k == K_LOCAL)
            break;
        k = K_OK;
        L->pass_done++;
        L->pass_rows += c.items[i].rows;
        L->live = 0;
        progress(L, 1);
    }
    progress_clear(L);
    free(c.items);
    return k;
}

/* ------------------------------------------------------------ main */

/* parse_args reads the options into o: CLI_OK (o->help set for --help,
 * which ends the reading), or CLI_USAGE after saying what is wrong. */
static int parse_args(int argc, char **argv, Opts *o)
{
    const char *env;
    o->poll_s = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        char *end;
        int f, k = cli_flag_take(flags, NFLAGS, 0, argc, argv, &i, &val, &f);
        if (k == CLI_ARG_NONE) /* the one-letter forms */
            k = !strcmp(a, "-h") ? F_HELP : !strcmp(a, "-q") ? F_QUIET : k;
        if (k == CLI_ARG_NOVALUE)
            return cli_usage(USAGE_HINT, "%s needs a value", a);
        switch (k) {
        case F_HELP:
            o->help = 1;
            return CLI_OK;
        case F_DATA:
            o->dir = val;
            break;
        case F_TARGET:
            o->target = val;
            break;
        case F_PIPELINE:
            o->pipeline = val;
            break;
        case F_MODEL:
            o->model = val;
            break;
        case F_MODE:
            if (!strcmp(val, "append"))
                o->merge = 0;
            else if (!strcmp(val, "merge"))
                o->merge = 1;
            else
                return cli_usage(USAGE_HINT, "--mode '%s': expected append or merge", val);
            break;
        case F_POLL:
            errno = 0;
            o->poll_s = strtod(val, &end);
            if (errno || end == val || *end || !(o->poll_s >= 0.01 && o->poll_s <= 3600))
                return cli_usage(USAGE_HINT, "--poll '%s': expected seconds between 0.01 and "
                                 "3600", val);
            break;
        case F_FOLLOW:
            o->follow = 1;
            break;
        case F_CREATE:
            o->create_tables = 1;
            break;
        case F_JSON:
            o->json = 1;
            break;
        case F_QUIET:
            o->quiet = 1;
            break;
        default:
            return cli_usage(USAGE_HINT, "unknown argument '%s'", a);
        }
    }
    o->dir = cli_data_dir(o->dir);
    if (!o->target)
        o->target = (env = getenv("PICKLINE_TARGET")) && *env ? env : NULL;
    if (!o->target)
        return cli_usage(USAGE_HINT, "no target: pass --target DSN (a libpq conninfo or URI) "
                         "or set $PICKLINE_TARGET");
    return CLI_OK;
}

static int crash_seam(void)
{
    const char *e = getenv("PICKLINE_QLOAD_CRASH");
    if (!e || !*e)
        return CRASH_NONE;
    if (!strcmp(e, "before_copy"))
        return CRASH_BEFORE_COPY;
    if (!strcmp(e, "during_copy"))
        return CRASH_DURING_COPY;
    if (!strcmp(e, "before_commit"))
        return CRASH_BEFORE_COMMIT;
    if (!strcmp(e, "after_commit"))
        return CRASH_AFTER_COMMIT;
    if (!strcmp(e, "after_mark"))
        return CRASH_AFTER_MARK;
    return -1;
}

static void summary(Loader *L)
{
    double s = (double)(pl_mono_ns() - L->t0) / 1e9;
    double rate = s > 0 ? (double)L->n_rows / s : 0;
    if (L->o.json) {
        printf("{\"batches\":%" PRIu64 ",\"rows\":%" PRIu64 ",\"rejected\":%" PRIu64
               ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"rows_per_s\":%.0f}\n",
               L->n_batches, L->n_rows, L->n_rejected, L->n_failed, s, rate);
    } else if (!L->o.quiet) {
        printf("loaded %" PRIu64 " batch%s, %" PRIu64 " rows in %.3f s (%.0f rows/s); %" PRIu64
               " rows rejected, %" PRIu64 " batch%s failed\n",
               L->n_batches, L->n_batches == 1 ? "" : "es", L->n_rows, s, rate, L->n_rejected,
               L->n_failed, L->n_failed == 1 ? "" : "es");
        if (L->n_rejected)
            printf("see the rejected rows with: qctl rejects\n");
    }
    fflush(stdout);
}

static int open_store(Loader *L)
{
    StoreOpts so = {0};
    char err[1024];
    int rc = store_open(L->o.dir, &so, &L->s);

    if (rc == ENOENT) {
        say(L, "data directory '%s' does not exist; pass --data DIR or set $PICKLINE_DATA",
            L->o.dir);
        return CLI_FAIL;
    }
    if (rc) {
        say(L, "cannot open data directory '%s': %s", L->o.dir,
            *store_error() ? store_error() : pl_strerror(rc));
        return CLI_FAIL;
    }
    if ((rc = pipeline_from_store(L->s, L->o.pipeline, &L->p, err, sizeof err)) != 0) {
        say(L, "%s", err);
        return CLI_FAIL;
    }
    if (!L->p->models || L->p->models->n == 0) {
        say(L, "the pipeline %s declares no models; declare them under models:",
            L->p->path ? L->p->path : "");
        return CLI_FAIL;
    }
    L->ms = L->p->models;
    L->direct_skip = xcalloc(L->ms && L->ms->n ? L->ms->n : 1, sizeof *L->direct_skip);
    L->keyed = xcalloc(L->ms && L->ms->n ? L->ms->n : 1, sizeof *L->keyed);
    L->checked = xcalloc(L->ms && L->ms->n ? L->ms->n : 1, sizeof *L->checked);
    if (L->o.model && !models_find(L->ms, L->o.model)) {
        return cli_usage(USAGE_HINT, "model '%s' is not declared in the pipeline; pass one of "
                         "its models", L->o.model);
    }
    if ((rc = store_run(L->s, uuid_fn, L->uuid)) != 0) {
        say(L, "cannot read the store's identity: %s", pl_strerror(rc));
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* reconnect tries until connected (K_OK), stopped (K_CONN) or a permanent
 * error (K_PERM); without --follow it tries once. */
static int reconnect(Loader *L)
{
    long delay = BACKOFF_MIN_MS;
    for (;;) {
        int k = pg_connect(L);
        if (k == K_OK || k == K_PERM || !L->o.follow)
            return k;
        if (stop_requested)
            return K_CONN;
        say(L, "the target is unreachable (%s); retrying in %.1f s", L->err, delay / 1000.0);
        sleep_ms(delay);
        if (stop_requested)
            return K_CONN;
        delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    }
}

int main(int argc, char **argv)
{
    Loader L = {0};
    int st, k;
    struct sigaction sa = {0};

    cli_prog = "qload";
    if ((st = parse_args(argc, argv, &L.o)) != CLI_OK)
        return st;
    if (L.o.help) {
        fputs(usage_head, stdout);
        cli_flags_help(stdout, flags, NFLAGS, 16);
        fputs(usage_tail, stdout);
        return CLI_OK;
    }
    if ((L.crash = crash_seam()) < 0)
        return cli_usage(USAGE_HINT, "PICKLINE_QLOAD_CRASH='%s': expected before_copy, "
                         "during_copy, before_commit, after_commit or after_mark",
                         getenv("PICKLINE_QLOAD_CRASH"));
    L.tty = isatty(STDERR_FILENO);
    L.t0 = pl_mono_ns();
    sb_init(&L.bufs[0]);
    sb_init(&L.bufs[1]);
    sb_init(&L.sql);
    sb_init(&L.tmp);
    if (!msgpack_zone_init(&L.zone, ZONE_CHUNK)) {
        say(&L, "out of memory");
        return CLI_FAIL;
    }
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((st = open_store(&L)) != CLI_OK)
        goto out;

    k = reconnect(&L);
    if (k != K_OK) {
        if (!stop_requested || k == K_PERM)
            say(&L, "cannot connect to the target: %s; check --target (or $PICKLINE_TARGET) "
                "and that the warehouse is running", L.err);
        st = stop_requested && k != K_PERM ? CLI_OK : CLI_FAIL;
        goto out;
    }
    for (;;) {
        k = pass(&L);
        if (k == K_LOCAL) {
            say(&L, "%s", L.err);
            st = CLI_FAIL;
            break;
        }
        if (k == K_CONN) {
            if (!L.o.follow) {
                say(&L, "lost the target while loading batch %" PRIu64 ": %s; the batch stays "
                    "'loading' and loads again (exactly once) on the next run: check the "
                    "warehouse and run qload again", L.b.id, L.err);
                st = CLI_FAIL;
                break;
            }
            say(&L, "lost the target while loading batch %" PRIu64 " (%s); reconnecting",
                L.b.id, L.err);
            pg_close(&L);
            sleep_ms(BACKOFF_MIN_MS);
            k = reconnect(&L);
            if (k == K_PERM) {
                say(&L, "cannot connect to the target: %s", L.err);
                st = CLI_FAIL;
                break;
            }
            if (k != K_OK) /* stopped */
                break;
            continue;
        }
        if (!L.o.follow || stop_requested)
            break;
        sleep_ms((long)(L.o.poll_s * 1000));
        if (stop_requested)
            break;
        if (PQstatus(L.pg) != CONNECTION_OK && reconnect(&L) != K_OK)
            break;
    }
    if (st == CLI_OK && !L.o.follow && (L.n_rejected || L.n_failed))
        st = CLI_FAIL;
    summary(&L);

out:
    pg_close(&L);
    for (size_t i = 0; i < L.ncols; i++)
        free(L.types[i]);
    free(L.cols);
    free(L.types);
    sb_free(&L.bufs[0]);
    sb_free(&L.bufs[1]);
    sb_free(&L.sql);
    sb_free(&L.tmp);
    msgpack_zone_destroy(&L.zone);
    free(L.direct_skip);
    free(L.keyed);
    free(L.checked);
    free(L.held);
    pipeline_free(L.p);
    store_close(L.s);
    return st;
}
