/* qload.c: the bulk loader. It takes the sealed batches of a data directory
 * and COPYs them into a PostgreSQL-protocol warehouse, exactly once.
 *
 *     qload [--data DIR] --target DSN [--follow] [--create-tables]
 *           [--mode append|merge] [--pipeline FILE] [--model M] [--json]
 *           [--quiet] [--poll S]
 *
 * A run is passes: each lists the sealed (and loading) batches, parents'
 * models before children's, then by batch id, and loads them one by one;
 * with --follow it polls for more and reconnects with backoff. The parts:
 *   qload.c          the options, messages and progress, a pass, main
 *   qload_ledger.c   exactly once and durability: a batch's states in the
 *                    store and in the warehouse's ledger, one attempt, a
 *                    crash's leftovers
 *   qload_pg.c       the PostgreSQL session: its settings, errors by class
 *   qload_table.c    the table: compared with the model before loading
 *   qload_copy.c     the rows streamed into COPY (a sender thread), the fast
 *                    path and the SQL that moves rows into the table
 *   qload_careful.c  bad rows: the careful path, systematic refusals
 * and qload.h is what they share.
 *
 * Exit status: 0 all loaded and nothing rejected, 1 something rejected or
 * failed, a --migrate change refused, or the target unreachable, 2 usage. */
#include "qload.h"

#include "cli.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "staging.h"
#include "store.h"
#include "version.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 10000
#define PROGRESS_NS 200000000ull    /* progress line: at most 5 updates a second */
#define ZONE_CHUNK 65536

/* The options: parse_args reads them, --help prints them between
 * usage_head and usage_tail. */
enum { F_DATA, F_TARGET, F_FOLLOW, F_POLL, F_CREATE, F_MIGRATE, F_MODE, F_PIPELINE, F_MODEL,
       F_JSON, F_QUIET, F_HELP, NFLAGS };
static const CliFlag flags[NFLAGS] = {
    [F_DATA] = {"data", "DIR", "the data directory (default $PICKLINE_DATA, else\n"
                               CLI_DEFAULT_DIR ")"},
    [F_TARGET] = {"target", "DSN", "libpq conninfo or URI of the warehouse (default\n"
                                   "$PICKLINE_TARGET)"},
    [F_FOLLOW] = {"follow", NULL, "keep running: load new batches as they are sealed, and\n"
                                  "reconnect with backoff when the warehouse goes away;\n"
                                  "SIGTERM/SIGINT finish the current batch and exit 0"},
    [F_POLL] = {"poll", "S", "with --follow, the longest wait between looks for new\n"
                             "batches (default 0.5; a commit that writes the store\n"
                             "wakes qload sooner: inotify)"},
    [F_CREATE] = {"create-tables", NULL,
                  "create the models' tables (CREATE TABLE IF NOT EXISTS,\n"
                  "keys, unique, foreign keys) before loading"},
    [F_MIGRATE] = {"migrate", NULL,
                   "--create-tables, and bring existing tables up to the\n"
                   "models: add the columns they lack (with their defaults),\n"
                   "widen a longer string; never drop, narrow or retype a\n"
                   "column: say so instead (see `qctl schema diff`)"},
    [F_MODE] = {"mode", "MODE", "append (default): COPY rows into the table;\n"
                                "merge: upsert by the model's key (the last row of a key\n"
                                "wins); a deleted row (\"_deleted\": true) deletes the\n"
                                "row, or sets the paranoid column (the model's on_delete)"},
    [F_PIPELINE] = {"pipeline", "FILE",
                    "read the models from FILE instead of the pipeline kept\n"
                    "in the data directory"},
    [F_MODEL] = {"model", "M", "load only the batches of model M"},
    [F_JSON] = {"json", NULL, "print the summary as one JSON object: {\"batches\",\n"
                              "\"rows\",\"rejected\",\"failed\",\"seconds\",\"rows_per_s\",\n"
                              "\"load_seconds\" (COPY and COMMIT), \"drop_seconds\"\n"
                              "(marking loaded, dropping the rows)}"},
    [F_QUIET] = {"quiet", NULL, "no progress and no per-batch lines (errors still print)"},
    [F_HELP] = {"help", NULL, "this text"},
};

static const char usage_head[] =
    "usage: qload [--data DIR] --target DSN [--follow] [--create-tables | --migrate]\n"
    "             [--mode append|merge] [--pipeline FILE] [--model M] [--json]\n"
    "             [--quiet] [--poll S]\n"
    "       qload --version\n"
    "\n"
    "Loads the sealed batches of a pickline data directory into a PostgreSQL\n"
    "warehouse with COPY, exactly once: a ledger table, pickline_ledger, records\n"
    "each batch in the same transaction as its rows. Parents load before\n"
    "children (the models' belongs_to), then by batch id. A batch loads with\n"
    "the columns of the version of its model its rows were validated with,\n"
    "so rows staged before a model gained a column never set that column.\n"
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
    "batches failed, a --migrate change refused or the warehouse unreachable\n"
    "(the batch stays loadable); 2 usage.\n"
    "\n"
    "Test seam: with PICKLINE_QLOAD_CRASH set to before_copy, during_copy (half\n"
    "the rows sent), before_commit (rows and ledger row written, not committed),\n"
    "after_commit (committed, not yet marked loaded in the store) or after_mark\n"
    "(marked loaded, its rows not yet dropped from the store), qload kills\n"
    "itself with SIGKILL at that point of its first batch. For crash tests only.\n";

/* USAGE_HINT follows every usage error. */
#define USAGE_HINT "run 'qload --help' for the options\n"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ------------------------------------------------------------ messages */

void qload_progress_clear(Loader *L)
{
    if (L->progress_shown) {
        fputs("\r\033[K", stderr);
        L->progress_shown = 0;
    }
}

/* say prints "qload: ..." on stderr (over the progress line). */
void qload_say(Loader *L, const char *fmt, ...)
{
    va_list ap;
    qload_progress_clear(L);
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
}

void qload_progress(Loader *L, int force)
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

/* wait_change waits (--follow) until the store changes or --poll seconds
 * pass: an inotify watch on data.mdb wakes qload when a commit writes it
 * (the engine sealing a batch), so a sealed batch starts loading at once
 * instead of at the next poll. Changes are taken at most every
 * CHANGE_GAP_MS, so a busy engine's stream of commits costs a look now
 * and then, not one per commit. Without inotify it sleeps --poll. */
#define CHANGE_GAP_MS 5
static void wait_change(Loader *L)
{
    long ms = (long)(L->o.poll_s * 1000);
    if (L->watch < 0) {
        sleep_ms(ms);
        return;
    }
    char buf[4096];
    while (read(L->watch, buf, sizeof buf) > 0)
        ; /* our own writes, and what came while the pass ran */
    struct pollfd pf = {.fd = L->watch, .events = POLLIN};
    if (poll(&pf, 1, (int)ms) > 0) {
        sleep_ms(CHANGE_GAP_MS);
        while (read(L->watch, buf, sizeof buf) > 0)
            ;
    }
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
    c->items = cli_grow(c->items, c->n, &c->cap, sizeof *c->items, 64);
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

/* qload_batches lists this run's batches into a new array: those to load,
 * in load order; with leftovers, those marked loaded whose rows a crash
 * kept. 0, or the store's error with *items NULL. */
int qload_batches(Loader *L, int leftovers, Item **items, size_t *n)
{
    Collect c = {.L = L, .leftovers = leftovers};
    int rc = store_read(L->s, collect_tx, &c);
    if (rc) {
        free(c.items);
        c.items = NULL;
        c.n = 0;
    } else if (!leftovers && c.n > 1) {
        qsort(c.items, c.n, sizeof *c.items, item_cmp);
    }
    *items = c.items;
    *n = c.n;
    return rc;
}

/* pass loads every sealed or loading batch once. K_OK, K_CONN or K_LOCAL. */
static int pass(Loader *L)
{
    Item *items;
    size_t n;
    int rc, k = K_OK;

    /* First the batches a crash left loaded with their rows (some may
     * become loadable again). */
    if (!L->leftovers_done && (k = qload_settle_leftovers(L)) != K_OK)
        return k;
    if ((rc = qload_batches(L, 0, &items, &n)) != 0) {
        snprintf(L->err, sizeof L->err, "reading the batches: %s", pl_strerror(rc));
        return K_LOCAL;
    }
    L->pass_done = 0;
    L->pass_total = n;
    L->pass_rows = 0;
    L->pass_rows_total = 0;
    L->pass_t0 = pl_mono_ns();
    for (size_t i = 0; i < n; i++)
        L->pass_rows_total += items[i].rows;
    for (size_t i = 0; i < n && !stop_requested; i++) {
        k = qload_load_batch(L, &items[i]);
        if (L->crash != CRASH_NONE && k != K_SKIP)
            L->crash = CRASH_NONE; /* the seam is for the first batch only */
        if (k == K_CONN || k == K_LOCAL)
            break;
        k = K_OK;
        L->pass_done++;
        L->pass_rows += items[i].rows;
        L->live = 0;
        qload_progress(L, 1);
    }
    qload_pend_flush(L);
    qload_progress_clear(L);
    free(items);
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
        case F_MIGRATE:
            o->migrate = o->create_tables = 1;
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
               ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"rows_per_s\":%.0f"
               ",\"load_seconds\":%.3f,\"drop_seconds\":%.3f}\n",
               L->n_batches, L->n_rows, L->n_rejected, L->n_failed, s, rate,
               (double)L->load_ns / 1e9, (double)L->drop_ns / 1e9);
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

static ModelVer *add_version(Loader *L, const Model *m, Pipeline *own)
{
    /* L->mv points into the array: found again after it grows. */
    size_t at = L->mv ? (size_t)(L->mv - L->vers) : SIZE_MAX;
    L->vers = cli_grow(L->vers, L->nvers, &L->capvers, sizeof *L->vers, 8);
    if (at != SIZE_MAX)
        L->mv = &L->vers[at];
    ModelVer *v = &L->vers[L->nvers++];
    memset(v, 0, sizeof *v);
    v->m = m;
    v->version = m->version;
    v->own = own;
    return v;
}

int qload_model_for(Loader *L, const char *name, uint64_t version, char *msg, size_t n)
{
    const Model *cur = models_find(L->ms, name);
    char err[1024];
    Pipeline *p = NULL;
    const Model *m;

    if (cur && (version == 0 || version == cur->version))
        version = cur->version;
    for (size_t i = 0; i < L->nvers; i++)
        if (L->vers[i].version == version && !strcmp(L->vers[i].m->name, name)) {
            L->mv = &L->vers[i];
            L->m = L->mv->m;
            return K_OK;
        }
    if (version == 0) {
        snprintf(msg, n, "model '%s' is not declared in the pipeline; declare it under models: (or "
                 "pass --pipeline FILE), then run `qctl batches retry %" PRIu64 "`", name, L->b.id);
        return K_PERM;
    }
    /* A version the pipeline does not declare (any more): the store keeps
     * the pipeline that did. */
    if (pipeline_of_version(L->s, name, version, &p, err, sizeof err) != 0) {
        snprintf(msg, n, "batch %" PRIu64 " holds rows of version %016" PRIx64 " of model %s, "
                 "which qload cannot read: %.600s", L->b.id, version, name, err);
        return K_PERM;
    }
    m = p->models ? models_find(p->models, name) : NULL;
    if (!m || m->version != version) {
        snprintf(msg, n, "batch %" PRIu64 ": the pipeline the store kept for version %016" PRIx64
                 " of model %s declares %s; the store is damaged", L->b.id, version, name,
                 m ? "another version" : "no such model");
        pipeline_free(p);
        return K_PERM;
    }
    L->mv = add_version(L, m, p);
    L->m = m;
    qload_say(L, "batch %" PRIu64 " (%s) holds rows of an earlier version of the model (%016"
              PRIx64 "): loading them with its %zu columns", L->b.id, name, version,
              m->nfields + (m->drift == DRIFT_KEEP));
    return K_OK;
}

static int uuid_fn(Txn *t, void *arg)
{
    return staging_uuid(t, arg);
}

static int open_store(Loader *L)
{
    StoreOpts so = {0};
    char err[1024];
    int rc = store_open(L->o.dir, &so, &L->s);

    if (rc == ENOENT) {
        qload_say(L, "data directory '%s' does not exist; pass --data DIR or set $PICKLINE_DATA",
                  L->o.dir);
        return CLI_FAIL;
    }
    if (rc) {
        qload_say(L, "cannot open data directory '%s': %s", L->o.dir,
                  *store_error() ? store_error() : pl_strerror(rc));
        return CLI_FAIL;
    }
    if ((rc = pipeline_from_store(L->s, L->o.pipeline, &L->p, err, sizeof err)) != 0) {
        qload_say(L, "%s", err);
        return CLI_FAIL;
    }
    if (!L->p->models || L->p->models->n == 0) {
        qload_say(L, "the pipeline %s declares no models; declare them under models:",
                  L->p->path ? L->p->path : "");
        return CLI_FAIL;
    }
    L->ms = L->p->models;
    for (size_t i = 0; i < L->ms->n; i++)
        add_version(L, &L->ms->m[i], NULL);
    if (L->o.model && !models_find(L->ms, L->o.model)) {
        return cli_usage(USAGE_HINT, "model '%s' is not declared in the pipeline; pass one of "
                         "its models", L->o.model);
    }
    if ((rc = store_run(L->s, uuid_fn, L->uuid)) != 0) {
        qload_say(L, "cannot read the store's identity: %s", pl_strerror(rc));
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
        int k = qload_pg_connect(L);
        if (k == K_OK || k == K_PERM || !L->o.follow)
            return k;
        if (stop_requested)
            return K_CONN;
        qload_say(L, "the target is unreachable (%s); retrying in %.1f s", L->err, delay / 1000.0);
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
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("qload %s\n", pl_version);
        return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
    }
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
        qload_say(&L, "out of memory");
        return CLI_FAIL;
    }
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    L.watch = -1;
    if ((st = open_store(&L)) != CLI_OK)
        goto out;
    if (L.o.follow) {
        char path[4200];
        snprintf(path, sizeof path, "%s/data.mdb", store_path(L.s));
        L.watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (L.watch >= 0 && inotify_add_watch(L.watch, path, IN_MODIFY) < 0) {
            close(L.watch);
            L.watch = -1;
        }
    }

    k = reconnect(&L);
    if (k != K_OK) {
        if (!stop_requested || k == K_PERM)
            qload_say(&L, "cannot connect to the target: %s; check --target (or $PICKLINE_TARGET) "
                      "and that the warehouse is running", L.err);
        st = stop_requested && k != K_PERM ? CLI_OK : CLI_FAIL;
        goto out;
    }
    for (;;) {
        k = pass(&L);
        if (k == K_LOCAL) {
            qload_say(&L, "%s", L.err);
            st = CLI_FAIL;
            break;
        }
        if (k == K_CONN) {
            if (!L.o.follow) {
                qload_say(&L, "lost the target while loading batch %" PRIu64 ": %s; the batch "
                          "stays 'loading' and loads again (exactly once) on the next run: check "
                          "the warehouse and run qload again", L.b.id, L.err);
                st = CLI_FAIL;
                break;
            }
            qload_say(&L, "lost the target while loading batch %" PRIu64 " (%s); reconnecting",
                      L.b.id, L.err);
            qload_pg_close(&L);
            sleep_ms(BACKOFF_MIN_MS);
            k = reconnect(&L);
            if (k == K_PERM) {
                qload_say(&L, "cannot connect to the target: %s", L.err);
                st = CLI_FAIL;
                break;
            }
            if (k != K_OK) /* stopped */
                break;
            continue;
        }
        if (!L.o.follow || stop_requested)
            break;
        wait_change(&L);
        if (stop_requested)
            break;
        if (PQstatus(L.pg) != CONNECTION_OK && reconnect(&L) != K_OK)
            break;
    }
    if (st == CLI_OK && !L.o.follow && (L.n_rejected || L.n_failed || L.n_refused))
        st = CLI_FAIL;
    if (L.n_refused)
        cli_note("--migrate: %" PRIu64 " change%s refused (see above, and `qctl schema diff "
                 "--target ...`); the tables keep them until you make them by hand",
                 (uint64_t)L.n_refused, L.n_refused == 1 ? "" : "s");
    summary(&L);

out:
    if (L.watch >= 0)
        close(L.watch);
    qload_pg_close(&L);
    for (size_t i = 0; i < L.ncols; i++)
        free(L.types[i]);
    free(L.cols);
    free(L.types);
    sb_free(&L.bufs[0]);
    sb_free(&L.bufs[1]);
    sb_free(&L.sql);
    sb_free(&L.tmp);
    msgpack_zone_destroy(&L.zone);
    for (size_t i = 0; i < L.nvers; i++)
        pipeline_free(L.vers[i].own);
    free(L.vers);
    free(L.held);
    pipeline_free(L.p);
    store_close(L.s);
    return st;
}
