/* qctl.c: the command line of pickline's queues, for operators and scripts.
 *
 *     qctl [--data DIR] [--json] COMMAND [ARGS]
 *
 * Every command parses and checks all of its input before it opens the data
 * directory, so bad input changes nothing. Then it runs one or a few short
 * transactions (store_run for writes, store_read for reads) and prints only
 * after the commit returned 0: `qctl put` printing an id means the job is on
 * disk. No transaction is held across a sleep or a wait for the user; only
 * export holds its read transaction while it writes (a consistent snapshot,
 * see there). Output is a tidy table for people, or JSON with --json.
 * The staging commands (schema, batches, rejects) read the models of the
 * pipeline kept in the store and the batches and rejects of staging.h.
 * Exit status: 0 ok, 1 failure, 2 usage (bad command, flag or number). */
#include "cli.h"
#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "queue.h"
#include "row.h"
#include "staging.h"
#include "store.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ constants */

#define DEFAULT_PRI 1024u        /* beanstalkd's default priority */
#define CHUNK 10000u             /* jobs per transaction: purge, kick */
#define IMPORT_CHUNK 1000u       /* jobs per transaction: import */
#define RESERVE_POLL_MS 20u      /* reserve --timeout: one try per interval */
#define MAX_DELAY_MS (10ull * 365 * 86400 * 1000) /* ten years */
#define MAX_TIMEOUT_MS (365ull * 86400 * 1000)
#define DEFAULT_REASON "buried by an operator (qctl)"
#define MAX_FLAGS 8
#define MAX_POS 3

/* ---------------------------------------------------- options, commands */

typedef struct Ctx Ctx;

typedef struct Cmd {
    const char *name;
    int (*run)(Ctx *c);
    const char *synopsis; /* what follows the name in the usage line */
    const char *summary;  /* one line, for the command list */
    const char *help;     /* the paragraph of `qctl CMD --help` */
    int min_pos, max_pos; /* positional arguments */
    CliFlag flags[MAX_FLAGS];
} Cmd;

/* Ctx: the options of this run (set once by args_parse, then read) and the
 * store, opened by the command once its input is known to be good. */
struct Ctx {
    const char *dir;
    int json;
    const Cmd *cmd;
    const char *pos[MAX_POS];
    int npos;
    const char *val[MAX_FLAGS]; /* by index in cmd->flags; "" for a given switch */
    Store *s;
};

/* opt returns the value of the command's flag name, or NULL if not given. */
static const char *opt(const Ctx *c, const char *name)
{
    for (int i = 0; i < MAX_FLAGS && c->cmd->flags[i].name; i++)
        if (strcmp(c->cmd->flags[i].name, name) == 0)
            return c->val[i];
    PL_ASSERT(0, "a command reads only the flags it declares");
}

/* ------------------------------------------------------------- messages */

static int usage(const Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* usage prints the problem and the command's usage line; returns CLI_USAGE. */
static int usage(const Ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr, "usage: qctl %s %s\nrun 'qctl %s --help' for details\n",
                c->cmd->name, c->cmd->synopsis, c->cmd->name);
    else
        fputs("run 'qctl --help' for the commands\n", stderr);
    return CLI_USAGE;
}

/* --------------------------------------------------------------- numbers */

/* flag_u64 reads flag name as a whole number in [min, max], def if absent.
 * Returns CLI_OK, or CLI_USAGE after saying what is wrong. */
static int flag_u64(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                    uint64_t *out)
{
    const char *v = opt(c, name);
    *out = def;
    if (v && cli_parse_u64(v, min, max, out))
        return usage(c, "--%s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64,
                     name, v, min, max);
    return CLI_OK;
}

/* flag_ms reads flag name as seconds into milliseconds in [min, max]. */
static int flag_ms(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                   uint64_t *out)
{
    const char *v = opt(c, name);
    *out = def;
    if (v && cli_parse_ms(v, min, max, out))
        return usage(c, "--%s: '%s' is not a number of seconds from %s to %s "
                        "(to the millisecond, like 0.25)", name, v, cli_secs(min).s, cli_secs(max).s);
    return CLI_OK;
}

/* arg_id parses a job id (a whole number from 1). */
static int arg_id(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return usage(c, "job id '%s' is not a whole number from 1", s);
    return CLI_OK;
}

static int arg_queue(const Ctx *c, const char *q)
{
    if (!queue_name_ok(q))
        return usage(c, "invalid queue name '%s': use 1 to %d of A-Z a-z 0-9 _ . -",
                     q, QUEUE_NAME_MAX);
    return CLI_OK;
}

/* arg_text checks a --key, --reason or --error value: 1..max bytes. */
static int arg_text(const Ctx *c, const char *name, const char *v, size_t max)
{
    size_t n = v ? strlen(v) : 1;
    if (n == 0)
        return usage(c, "--%s is empty", name);
    if (n > max)
        return usage(c, "--%s is %zu bytes, over the limit of %zu", name, n, max);
    /* Text is UTF-8: anything else could not come back intact through
     * --json, export and import. */
    size_t bad = v ? json_utf8_bad(v, n) : n;
    if (bad < n)
        return usage(c, "--%s is not valid UTF-8 (byte %zu); give text", name, bad);
    return CLI_OK;
}

/* ------------------------------------------------------- JSON output */

static void put_opt_string(FILE *f, const char *s, size_t n)
{
    if (s && n)
        json_put_string(f, s, n);
    else
        fputs("null", f);
}

/* put_body writes a body as JSON: itself when it is JSON (qctl and the
 * engine accept only JSON, so this is the rule), else as a string. */
static void put_body(FILE *f, const void *b, size_t n)
{
    if (json_validate(b, n, NULL, 0) == 0)
        json_put_text(f, b, n);
    else
        json_put_string(f, b, n);
}

static void put_opt_ms(FILE *f, const char *name, uint64_t ms)
{
    if (ms)
        fprintf(f, ",\"%s\":%" PRIu64, name, ms);
    else
        fprintf(f, ",\"%s\":null", name);
}

/* job_json writes the one shape of a job in all JSON output (reserve, peek,
 * show, export). The lease token is a string: it does not fit a double. */
static void job_json(FILE *f, const Job *j)
{
    fprintf(f, "{\"id\":%" PRIu64 ",\"queue\":", j->id);
    json_put_string(f, j->queue, strlen(j->queue));
    fprintf(f, ",\"state\":\"%s\",\"priority\":%" PRIu32 ",\"attempts\":%" PRIu32
               ",\"kicks\":%" PRIu32 ",\"created_ms\":%" PRIu64,
            queue_state_name(j->state), j->pri, j->attempts, j->kicks, j->created_ms);
    put_opt_ms(f, "due_ms", j->due_ms);
    fprintf(f, ",\"ttr_ms\":%" PRIu32 ",\"lease\":", j->ttr_ms);
    if (j->lease)
        fprintf(f, "\"%" PRIu64 "\"", j->lease);
    else
        fputs("null", f);
    fputs(",\"key\":", f);
    put_opt_string(f, j->key, j->keylen);
    fputs(",\"error\":", f);
    put_opt_string(f, j->error, j->errorlen);
    fputs(",\"body\":", f);
    put_body(f, j->body, j->len);
    fputc('}', f);
}

static void conf_json(FILE *f, const QueueConf *cf)
{
    fprintf(f, "{\"ttr_ms\":%" PRIu32 ",\"max_attempts\":%" PRIu32 ",\"backoff_ms\":%" PRIu32
               ",\"backoff_max_ms\":%" PRIu32 ",\"max_body\":%" PRIu32 ",\"key_retention_s\":%" PRIu32 "}",
            cf->ttr_ms, cf->max_attempts, cf->backoff_ms, cf->backoff_max_ms, cf->max_body,
            cf->key_retention_s);
}

/* ---------------------------------------------------------------- jobs */

/* Held: a job copied out of its transaction (Job's views die with it). */
typedef struct Held {
    Job j;
    char *key, *error, *body;
} Held;

static void held_free(Held *h)
{
    free(h->key);
    free(h->error);
    free(h->body);
    memset(h, 0, sizeof *h);
}

static void held_set(Held *h, const Job *j)
{
    held_free(h);
    h->j = *j;
    h->key = j->key && j->keylen ? xstrndup(j->key, j->keylen) : NULL;
    h->error = j->error && j->errorlen ? xstrndup(j->error, j->errorlen) : NULL;
    h->body = xmalloc(j->len + 1);
    if (j->len)
        memcpy(h->body, j->body, j->len);
    h->body[j->len] = '\0';
    h->j.key = h->key;
    h->j.keylen = h->key ? j->keylen : 0;
    h->j.error = h->error;
    h->j.errorlen = h->error ? j->errorlen : 0;
    h->j.body = h->body;
}

/* --------------------------------------------------------------- store */

enum { OPEN_READ, OPEN_WRITE, OPEN_CREATE };

static int room_fail(const Ctx *c, int rc)
{
    return cli_errorf("no room for new jobs in '%s' (%s); acks and deletes still work; "
                  "free space or raise the map limit", c->dir, pl_strerror(rc));
}

static int open_fail(const Ctx *c, int rc)
{
    struct stat st;
    if (rc == PL_ENOTDATA && stat(c->dir, &st) == 0 && !S_ISDIR(st.st_mode))
        rc = ENOTDIR;
    switch (rc) {
    case ENOENT:
        if (stat(c->dir, &st) == 0 && S_ISDIR(st.st_mode))
            return cli_errorf("no pickline data in '%s' yet; it is created by the first 'qctl "
                          "put', or pass --data DIR or set PICKLINE_DATA", c->dir);
        return cli_errorf("no data directory at '%s'; it is created by the first 'qctl put', "
                      "or pass --data DIR or set PICKLINE_DATA", c->dir);
    case PL_ENOTDATA:
    case PL_ECORRUPT:
        if (*store_error())
            return cli_errorf("%s", store_error());
        return cli_errorf("'%s' is not a pickline data directory (it holds other files); "
                      "pass --data with an empty or pickline directory", c->dir);
    case ENOTDIR:
        return cli_errorf("'%s' is not a directory; pass --data with a pickline data directory",
                      c->dir);
    case EACCES:
    case EPERM:
        return cli_errorf("permission denied on data directory '%s': qctl needs to read and "
                      "write it (LMDB keeps its lock file there); run as its owner or fix "
                      "its permissions", c->dir);
    case EROFS:
        return cli_errorf("data directory '%s' is on a read-only file system: qctl needs to "
                      "write its lock file; copy it somewhere writable", c->dir);
    case PL_EFORMAT:
        if (*store_error())
            return cli_errorf("%s", store_error());
        return cli_errorf("data directory '%s' was written by a newer pickline (unknown "
                      "format); use a newer qctl", c->dir);
    case ENOSPC:
    case PL_EFULL:
        return room_fail(c, rc);
    default:
        return cli_errorf("cannot open data directory '%s': %s", c->dir, pl_strerror(rc));
    }
}

/* ctx_open opens the store for the command (no-op if open). Read commands
 * open it read-only; only put, create and import may create it. */
static int ctx_open(Ctx *c, int mode)
{
    StoreOpts o = {0};
    int rc;
    if (c->s)
        return CLI_OK;
    o.create = mode == OPEN_CREATE;
    o.readonly = mode == OPEN_READ;
    if ((rc = store_open(c->dir, &o, &c->s)) != 0)
        return open_fail(c, rc);
    return CLI_OK;
}

static int queue_fail(const Ctx *c, int rc, const char *q)
{
    switch (rc) {
    case PL_ENOQUEUE:
        return cli_errorf("queue '%s' does not exist; create it with 'qctl create %s' or put a "
                      "job to it", q, q);
    case PL_EPAUSED:
        return cli_errorf("queue '%s' is paused; resume it with 'qctl resume %s'", q, q);
    case PL_EFULL:
    case ENOSPC:
        return room_fail(c, rc);
    default:
        return cli_errorf("queue '%s': %s", q, pl_strerror(rc));
    }
}

typedef struct GetOp {
    uint64_t id;
    Held h;
} GetOp;

static int get_fn(Txn *t, void *arg)
{
    GetOp *g = arg;
    Job j;
    int rc = queue_get(t, g->id, &j);
    if (rc == 0)
        held_set(&g->h, &j);
    return rc;
}

/* job_fail explains rc from an operation verb on job id. */
static int job_fail(const Ctx *c, int rc, uint64_t id, const char *verb)
{
    GetOp g = {.id = id};
    const char *st;

    switch (rc) {
    case PL_ENOJOB:
        return cli_errorf("job %" PRIu64 " does not exist (acked, deleted, or never put); "
                      "see 'qctl peek QUEUE'", id);
    case PL_ELEASE:
        return cli_errorf("lease of job %" PRIu64 " is no longer held (it expired or was "
                      "reserved again); reserve it again", id);
    case PL_ESTATE:
        break;
    default:
        return cli_errorf("cannot %s job %" PRIu64 ": %s", verb, id, pl_strerror(rc));
    }
    if (store_read(c->s, get_fn, &g) != 0)
        return cli_errorf("cannot %s job %" PRIu64 ": %s", verb, id, pl_strerror(rc));
    st = queue_state_name(g.h.j.state);
    if (g.h.j.state == JOB_BURIED)
        cli_errorf("job %" PRIu64 " is buried; kick it back to ready with 'qctl kick-job %"
               PRIu64 "'", id, id);
    else if (strcmp(verb, "kick") == 0)
        cli_errorf("job %" PRIu64 " is %s; only a buried or delayed job can be kicked", id, st);
    else
        cli_errorf("job %" PRIu64 " is %s, not reserved; only a reserved job can be %s", id, st,
               strcmp(verb, "release") == 0 ? "released" : "touched");
    held_free(&g.h);
    return CLI_FAIL;
}

/* Staged: the staged rows (the working rows of the line), by model. */
typedef struct Staged {
    StagedCount all;
    StagedCount *v;
    size_t n, cap;
} Staged;

static int staged_add(const StagedCount *sc, void *arg)
{
    Staged *st = arg;
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 8;
        st->v = xrealloc(st->v, st->cap * sizeof *st->v);
    }
    st->v[st->n++] = *sc;
    st->all.rows += sc->rows;
    st->all.refs += sc->refs;
    st->all.legacy += sc->legacy;
    st->all.bytes += sc->bytes;
    return 0;
}

static int staged_fn(Txn *t, void *arg)
{
    Staged *st = arg;
    memset(&st->all, 0, sizeof st->all);
    st->n = 0;
    return staging_row_count(t, staged_add, st);
}

/* read_staged counts the staged rows: 0, or a message and CLI_FAIL. */
static int read_staged(Ctx *c, Staged *st)
{
    int rc = store_read(c->s, staged_fn, st);
    if (rc)
        return cli_errorf("cannot count the staged rows of '%s': %s", c->dir, pl_strerror(rc));
    return 0;
}

/* info_human and info_json describe the map (store_info) and the staged
 * rows. */
static void info_human(FILE *f, const Ctx *c, const StoreInfo *i, const Staged *st)
{
    uint64_t used = (uint64_t)i->last_page * i->page_size;
    fprintf(f, "data dir    %s\n", c->dir);
    fprintf(f, "map size    %s (limit: %s)\n", cli_size(i->map_size).s,
            i->map_max ? cli_size(i->map_max).s : "none but the disk");
    fprintf(f, "used        %s: %zu pages of %zu B, %.1f%% of the map\n", cli_size(used).s,
            i->last_page, i->page_size, i->map_size ? 100.0 * (double)used / (double)i->map_size : 0);
    fprintf(f, "free pages  %zu (%s), reused before the map grows\n", i->free_pages,
            cli_size((uint64_t)i->free_pages * i->page_size).s);
    fprintf(f, "file size   %s (headroom kept for acks and deletes: %s)\n",
            cli_size(i->file_size).s, cli_size(i->headroom).s);
    fprintf(f, "readers     %u of %u\n", i->readers, i->max_readers);
    fprintf(f, "staged rows %" PRIu64, st->all.rows);
    if (st->all.rows) {
        fprintf(f, " (%s; rows in flight, deleted as batches take them:", cli_size(st->all.bytes).s);
        for (size_t k = 0; k < st->n; k++)
            if (st->v[k].rows)
                fprintf(f, " %s %" PRIu64, st->v[k].model, st->v[k].rows);
        fputc(')', f);
    }
    fputc('\n', f);
    if (st->all.legacy) {
        fprintf(f, "legacy rows %" PRIu64 " (staged by a pickline before row instances; never "
                "deleted by the line):", st->all.legacy);
        for (size_t k = 0; k < st->n; k++)
            if (st->v[k].legacy)
                fprintf(f, " %s %" PRIu64, st->v[k].model, st->v[k].legacy);
        fputc('\n', f);
    }
}

static void staged_json(FILE *f, const StagedCount *sc)
{
    fprintf(f, "{\"rows\":%" PRIu64 ",\"refs\":%" PRIu64 ",\"legacy\":%" PRIu64
            ",\"bytes\":%" PRIu64, sc->rows, sc->refs, sc->legacy, sc->bytes);
}

static void info_json(FILE *f, const Ctx *c, const StoreInfo *i, const Staged *st)
{
    fputs("{\"path\":", f);
    json_put_string(f, c->dir, strlen(c->dir));
    fprintf(f, ",\"map_size\":%zu,\"map_max\":%zu,\"page_size\":%zu,\"used_pages\":%zu"
               ",\"used_bytes\":%" PRIu64 ",\"free_pages\":%zu,\"file_size\":%zu"
               ",\"headroom\":%zu,\"readers\":%u,\"max_readers\":%u,\"staged\":",
            i->map_size, i->map_max, i->page_size, i->last_page,
            (uint64_t)i->last_page * i->page_size, i->free_pages, i->file_size, i->headroom,
            i->readers, i->max_readers);
    staged_json(f, &st->all);
    fputs(",\"models\":{", f);
    for (size_t k = 0; k < st->n; k++) {
        if (k)
            fputc(',', f);
        json_put_string(f, st->v[k].model, strlen(st->v[k].model));
        fputc(':', f);
        staged_json(f, &st->v[k]);
        fputc('}', f);
    }
    fputs("}}}", f);
}

/* ------------------------------------------------------------------ put */

static int stats_fn(Txn *t, void *arg)
{
    QueueStats *st = arg;
    return queue_stats(t, st->name, st);
}

/* read_stats reads the stats of queue q into *st: 0 or the engine's error. */
static int read_stats(Ctx *c, const char *q, QueueStats *st)
{
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", q);
    return store_read(c->s, stats_fn, st);
}

/* put_conf finds the conf that will judge a put to q: the queue's, or the
 * defaults when the queue or the whole data directory does not exist yet.
 * It opens the store if it exists; a missing one is created only once the
 * input is known to be good (bad input changes nothing). */
static int put_conf(Ctx *c, const char *q, QueueConf *conf, int *exists)
{
    StoreOpts o = {0};
    QueueStats st;
    int rc;

    queue_conf_default(conf);
    *exists = 0;
    if (!c->s) {
        rc = store_open(c->dir, &o, &c->s);
        if (rc == ENOENT)
            return CLI_OK;
        if (rc)
            return open_fail(c, rc);
    }
    rc = read_stats(c, q, &st);
    if (rc == 0) {
        *conf = st.conf;
        *exists = 1;
    } else if (rc != PL_ENOQUEUE) {
        return queue_fail(c, rc, q);
    }
    return CLI_OK;
}

static void too_big(char *m, size_t cap, const char *q, size_t len, const QueueConf *cf, int exists)
{
    if (exists)
        snprintf(m, cap, "body is %zu bytes, over queue '%s' limit of %" PRIu32 " bytes; "
                         "raise it with 'qctl configure %s --max-body N'", len, q, cf->max_body, q);
    else
        snprintf(m, cap, "body is %zu bytes, over the limit of %" PRIu32 " bytes of a new "
                         "queue; create '%s' first with 'qctl create %s --max-body N'",
                 len, cf->max_body, q, q);
}

typedef struct PutOp {
    const char *queue;
    PutArgs a;
    uint64_t id;
    int existed;
} PutOp;

static int put_fn(Txn *t, void *arg)
{
    PutOp *p = arg;
    p->existed = 0;
    return queue_put(t, p->queue, &p->a, &p->id, &p->existed);
}

static int cmd_put(Ctx *c)
{
    const char *q = c->pos[0], *src = c->npos > 1 ? c->pos[1] : "-", *key = opt(c, "key");
    uint64_t pri, delay, ttr;
    Strbuf body;
    QueueConf conf;
    PutOp op = {.queue = q};
    char m[512];
    size_t off;
    int rc, exists;

    sb_init(&body);
    if ((rc = arg_queue(c, q)) || (rc = flag_u64(c, "pri", 0, UINT32_MAX, DEFAULT_PRI, &pri)) ||
        (rc = flag_ms(c, "delay", 0, MAX_DELAY_MS, 0, &delay)) ||
        (rc = flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)) ||
        (key && (rc = arg_text(c, "key", key, QUEUE_KEY_MAX))))
        return rc;
    if (strcmp(src, "-") != 0) {
        sb_adds(&body, src);
    } else {
        if (isatty(STDIN_FILENO))
            cli_note("reading the body from the terminal; end it with Ctrl-D");
        rc = cli_read_all(&body, stdin, QUEUE_BODY_LIMIT);
        if (rc == EFBIG) {
            rc = cli_errorf("body is over %u bytes, more than any queue accepts", QUEUE_BODY_LIMIT);
            goto fail;
        }
        if (rc) {
            rc = cli_errorf("cannot read the body from stdin: %s", strerror(rc));
            goto fail;
        }
    }
    if (json_validate(body.buf, body.len, m, sizeof m)) {
        rc = cli_errorf("body: %s", m);
        goto fail;
    }
    /* The body is the JSON value: whitespace around it is not kept. */
    op.a.len = json_trim(body.buf, body.len, &off);
    op.a.body = body.buf + off;
    op.a.pri = (uint32_t)pri;
    op.a.delay_ms = delay;
    op.a.ttr_ms = (uint32_t)ttr;
    op.a.key = key;
    op.a.keylen = key ? strlen(key) : 0;

    if ((rc = put_conf(c, q, &conf, &exists)))
        goto fail;
    if (op.a.len > conf.max_body) {
        too_big(m, sizeof m, q, op.a.len, &conf, exists);
        rc = cli_errorf("%s", m);
        goto fail;
    }
    if ((rc = ctx_open(c, OPEN_CREATE)))
        goto fail;
    rc = store_run(c->s, put_fn, &op);
    if (rc == PL_ETOOBIG && put_conf(c, q, &conf, &exists) == CLI_OK) { /* conf changed since */
        too_big(m, sizeof m, q, op.a.len, &conf, exists);
        rc = cli_errorf("%s", m);
        goto fail;
    }
    if (rc) {
        rc = queue_fail(c, rc, q);
        goto fail;
    }
    /* Committed: only now is the id worth printing. */
    if (c->json)
        printf("{\"id\":%" PRIu64 ",\"existed\":%s}\n", op.id, op.existed ? "true" : "false");
    else
        printf("%" PRIu64 "\n", op.id);
    if (fflush(stdout) != 0) {
        rc = cli_errorf("job %" PRIu64 " is on disk in queue '%s', but its id could not be "
                    "written to stdout: %s", op.id, q, strerror(errno));
        goto fail;
    }
    if (op.existed == 1)
        cli_note("job %" PRIu64 " of queue '%s' already holds key '%s'; nothing added", op.id, q, key);
    else if (op.existed)
        cli_note("key '%s' came with job %" PRIu64 " of queue '%s', already done; nothing added "
             "(keys are kept for the queue's key retention)", key, op.id, q);
    rc = CLI_OK;
fail:
    sb_free(&body);
    return rc;
}

/* ------------------------------------------------------- job operations */

enum { OP_ACK, OP_DELETE, OP_RELEASE, OP_BURY, OP_TOUCH, OP_KICK };

/* JobOp: one operation on one job, and what the job looks like after. */
typedef struct JobOp {
    int op;
    uint64_t id, lease;     /* lease 0: the operator's override */
    int64_t delay_ms;       /* release: < 0 asks for the queue's backoff */
    const char *text;       /* release: the error; bury: the reason */
    int buried;             /* release: buried instead, past max attempts */
    int was, state;         /* the state before and after */
    uint64_t due_ms;        /* after: ready-at or lease end */
    uint32_t attempts;
    char queue[QUEUE_NAME_MAX + 1];
} JobOp;

static int jobop_fn(Txn *t, void *arg)
{
    JobOp *o = arg;
    Job j;
    uint64_t until;
    int rc;

    if ((rc = queue_get(t, o->id, &j)) != 0)
        return rc;
    o->was = j.state;
    memcpy(o->queue, j.queue, sizeof o->queue);
    o->buried = 0;
    switch (o->op) {
    case OP_ACK:
    case OP_DELETE:
        return queue_ack(t, o->id, o->lease);
    case OP_RELEASE:
        rc = queue_release(t, o->id, o->lease, o->delay_ms, o->text, &o->buried);
        break;
    case OP_BURY:
        rc = queue_bury(t, o->id, o->lease, o->text);
        break;
    case OP_TOUCH:
        rc = queue_touch(t, o->id, o->lease, &until);
        break;
    default:
        rc = queue_kick_job(t, o->id);
    }
    if (rc || (rc = queue_get(t, o->id, &j)) != 0)
        return rc;
    o->state = j.state;
    o->due_ms = j.due_ms;
    o->attempts = j.attempts;
    return 0;
}

static void jobop_print(const Ctx *c, const JobOp *o)
{
    uint64_t now = pl_now_ms();
    int gone = o->op == OP_ACK || o->op == OP_DELETE;

    if (c->json) {
        printf("{\"id\":%" PRIu64 ",\"queue\":", o->id);
        json_put_string(stdout, o->queue, strlen(o->queue));
        printf(",\"state\":\"%s\",\"was\":\"%s\"", gone ? "deleted" : queue_state_name(o->state),
               queue_state_name(o->was));
        if (!gone) {
            put_opt_ms(stdout, "due_ms", o->due_ms);
            printf(",\"attempts\":%" PRIu32, o->attempts);
        }
        puts("}");
        return;
    }
    switch (o->op) {
    case OP_ACK:
        printf("acked job %" PRIu64 " (queue '%s')\n", o->id, o->queue);
        break;
    case OP_DELETE:
        printf("deleted job %" PRIu64 " (queue '%s', was %s)\n", o->id, o->queue,
               queue_state_name(o->was));
        break;
    case OP_RELEASE:
        if (o->buried)
            printf("job %" PRIu64 " used its %" PRIu32 " attempts and was buried instead "
                   "(queue '%s'); kick it with 'qctl kick-job %" PRIu64 "'\n",
                   o->id, o->attempts, o->queue, o->id);
        else if (o->state == JOB_DELAYED)
            printf("released job %" PRIu64 " (queue '%s'): delayed, ready %s\n", o->id,
                   o->queue, cli_due(o->due_ms, now).s);
        else
            printf("released job %" PRIu64 " (queue '%s') to %s\n", o->id, o->queue,
                   queue_state_name(o->state));
        break;
    case OP_BURY:
        printf("buried job %" PRIu64 " (queue '%s'); kick it back with 'qctl kick-job %"
               PRIu64 "'\n", o->id, o->queue, o->id);
        break;
    case OP_TOUCH:
        printf("touched job %" PRIu64 " (queue '%s'): lease ends %s, at %s\n", o->id, o->queue,
               cli_due(o->due_ms, now).s, cli_clock(o->due_ms).s);
        break;
    default:
        printf("kicked job %" PRIu64 " (queue '%s', was %s) to %s\n", o->id, o->queue,
               queue_state_name(o->was), queue_state_name(o->state));
    }
}

static const char *const op_verb[] = {"ack", "delete", "release", "bury", "touch", "kick"};

/* jobop_parse reads ID and --lease (for the commands that take one). */
static int jobop_parse(const Ctx *c, int op, JobOp *o)
{
    int rc;
    memset(o, 0, sizeof *o);
    o->op = op;
    if ((rc = arg_id(c, c->pos[0], &o->id)))
        return rc;
    /* A lease token is never 0 (0 is the operator's "whatever the lease",
     * which is what leaving --lease out means). */
    if (op != OP_DELETE && op != OP_KICK)
        return flag_u64(c, "lease", 1, UINT64_MAX, 0, &o->lease);
    return CLI_OK;
}

static int jobop_run(Ctx *c, JobOp *o)
{
    int rc;
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, jobop_fn, o)) != 0)
        return job_fail(c, rc, o->id, op_verb[o->op]);
    jobop_print(c, o);
    return CLI_OK;
}

static int cmd_ack(Ctx *c)
{
    JobOp o;
    int rc = jobop_parse(c, OP_ACK, &o);
    return rc ? rc : jobop_run(c, &o);
}

static int cmd_delete(Ctx *c)
{
    JobOp o;
    int rc = jobop_parse(c, OP_DELETE, &o);
    return rc ? rc : jobop_run(c, &o);
}

static int cmd_release(Ctx *c)
{
    JobOp o;
    uint64_t delay;
    int rc;
    if ((rc = jobop_parse(c, OP_RELEASE, &o)) ||
        (rc = flag_ms(c, "delay", 0, MAX_DELAY_MS, 0, &delay)))
        return rc;
    o.text = opt(c, "error");
    if (o.text && (rc = arg_text(c, "error", o.text, QUEUE_REASON_MAX)))
        return rc;
    if (opt(c, "backoff") && opt(c, "delay"))
        return usage(c, "give --delay or --backoff, not both");
    o.delay_ms = opt(c, "backoff") ? -1 : (int64_t)delay;
    return jobop_run(c, &o);
}

static int cmd_bury(Ctx *c)
{
    JobOp o;
    int rc;
    if ((rc = jobop_parse(c, OP_BURY, &o)))
        return rc;
    o.text = opt(c, "reason") ? opt(c, "reason") : DEFAULT_REASON;
    if ((rc = arg_text(c, "reason", o.text, QUEUE_REASON_MAX)))
        return rc;
    return jobop_run(c, &o);
}

static int cmd_touch(Ctx *c)
{
    JobOp o;
    int rc = jobop_parse(c, OP_TOUCH, &o);
    return rc ? rc : jobop_run(c, &o);
}

static int cmd_kick_job(Ctx *c)
{
    JobOp o;
    int rc = jobop_parse(c, OP_KICK, &o);
    return rc ? rc : jobop_run(c, &o);
}

/* -------------------------------------------------------------- reserve */

typedef struct ReserveOp {
    const char *queue;
    uint32_t ttr;
    int rc;          /* queue_reserve's answer */
    Held got;
} ReserveOp;

static int reserve_fn(Txn *t, void *arg)
{
    ReserveOp *r = arg;
    Job j;
    r->rc = queue_reserve(t, r->queue, r->ttr, &j);
    if (r->rc == 0)
        held_set(&r->got, &j);
    /* "Nothing ready" still commits: the reserve processed due delayed jobs
     * and expired leases (a job past max attempts is buried then). */
    return r->rc == PL_EEMPTY || r->rc == PL_EPAUSED ? 0 : r->rc;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int cmd_reserve(Ctx *c)
{
    const char *q = c->pos[0];
    ReserveOp r = {.queue = q};
    const Job *j = &r.got.j;
    uint64_t timeout, ttr, start, waited;
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = flag_ms(c, "timeout", 0, MAX_TIMEOUT_MS, 0, &timeout)) ||
        (rc = flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)))
        return rc;
    r.ttr = (uint32_t)ttr;
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    /* Each try is its own short write transaction: none is held while we wait. */
    start = pl_mono_ns();
    for (;;) {
        rc = store_run(c->s, reserve_fn, &r);
        if (rc == 0)
            rc = r.rc;
        /* A queue may be paused, or not made yet by its first put: wait too. */
        if (rc != PL_EEMPTY && rc != PL_EPAUSED && rc != PL_ENOQUEUE)
            break;
        waited = (pl_mono_ns() - start) / 1000000;
        if (waited >= timeout)
            break;
        sleep_ms(timeout - waited < RESERVE_POLL_MS ? timeout - waited : RESERVE_POLL_MS);
    }
    if (rc == PL_EEMPTY) {
        cli_note("no job ready in queue '%s'%s%s", q, timeout ? " within " : "",
             timeout ? cli_dur(timeout).s : "");
        rc = CLI_FAIL;
        goto fail;
    }
    if (rc) {
        rc = queue_fail(c, rc, q);
        goto fail;
    }
    if (c->json) {
        job_json(stdout, j);
        putchar('\n');
    } else {
        printf("job %" PRIu64 "  queue %s  priority %" PRIu32 "  attempts %" PRIu32
               "  lease %" PRIu64 "  ttr %ss\n",
               j->id, j->queue, j->pri, j->attempts, j->lease, cli_secs(j->ttr_ms).s);
        fwrite(j->body, 1, j->len, stdout);
        putchar('\n');
    }
    rc = CLI_OK;
    if (fflush(stdout) != 0) {
        /* Nobody got the job: hand it back rather than let its lease run out. */
        JobOp o = {.op = OP_RELEASE, .id = j->id, .lease = j->lease};
        int e = errno, rr = store_run(c->s, jobop_fn, &o);
        rc = cli_errorf("cannot write job %" PRIu64 " to stdout (%s); %s", j->id, strerror(e),
                    rr ? "its lease will run out" : "released it");
    }
fail:
    held_free(&r.got);
    return rc;
}

/* ----------------------------------------------------------------- kick */

typedef struct KickOp {
    const char *queue;
    size_t n, kicked;
} KickOp;

static int kick_fn(Txn *t, void *arg)
{
    KickOp *k = arg;
    k->kicked = 0;
    return queue_kick(t, k->queue, k->n, &k->kicked);
}

static int cmd_kick(Ctx *c)
{
    const char *q = c->pos[0];
    KickOp k = {.queue = q};
    QueueStats st;
    uint64_t want = 0, total = 0;
    int rc;

    if ((rc = arg_queue(c, q)))
        return rc;
    if (c->npos > 1 && cli_parse_u64(c->pos[1], 1, UINT64_MAX, &want))
        return usage(c, "N '%s' is not a whole number from 1", c->pos[1]);
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    if (c->npos < 2) {
        /* "All" means those buried now: a bound, should workers bury more. */
        if ((rc = read_stats(c, q, &st)))
            return queue_fail(c, rc, q);
        want = st.buried;
    }
    while (total < want) {
        k.n = want - total < CHUNK ? (size_t)(want - total) : CHUNK;
        if ((rc = store_run(c->s, kick_fn, &k)) != 0) {
            if (total)
                cli_note("kicked %" PRIu64 " jobs before this error", total);
            return queue_fail(c, rc, q);
        }
        total += k.kicked;
        if (k.kicked < k.n)
            break;
    }
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"kicked\":%" PRIu64 "}\n", total);
    } else {
        printf("kicked %" PRIu64 " job%s to ready in queue '%s'\n", total, total == 1 ? "" : "s", q);
    }
    return CLI_OK;
}

/* ----------------------------------------------------------- peek, show */

typedef struct PeekOp {
    const char *queue;
    int state, json;
    size_t limit, n;
    uint64_t now;
    QueueStats st;
    CliTable tab;      /* human output */
    FILE *mem;      /* JSON output, gathered while the transaction is open */
    char *buf;
    size_t len;
} PeekOp;

static const char *const peek_head[] = {"ID", "STATE", "PRI", "ATT", "AGE", "DUE", "ERROR", "BODY"};

static int peek_job(const Job *j, void *arg)
{
    PeekOp *p = arg;
    if (p->json) {
        fputs(p->n ? ",\n" : "\n", p->mem);
        job_json(p->mem, j);
    } else {
        char *e = j->error && j->errorlen ? cli_excerpt(j->error, j->errorlen, 28) : xstrdup("-");
        char *b = cli_excerpt(j->body, j->len, 48);
        cli_table_add(&p->tab, "%" PRIu64, j->id);
        cli_table_add(&p->tab, "%s", queue_state_name(j->state));
        cli_table_add(&p->tab, "%" PRIu32, j->pri);
        cli_table_add(&p->tab, "%" PRIu32, j->attempts);
        cli_table_add(&p->tab, "%s", cli_dur(p->now > j->created_ms ? p->now - j->created_ms : 0).s);
        cli_table_add(&p->tab, "%s", cli_due(j->due_ms, p->now).s);
        cli_table_add(&p->tab, "%s", e);
        cli_table_add(&p->tab, "%s", b);
        free(e);
        free(b);
    }
    p->n++;
    return 0;
}

static int peek_fn(Txn *t, void *arg)
{
    PeekOp *p = arg;
    int rc;
    p->n = 0;
    p->now = pl_now_ms();
    if ((rc = queue_stats(t, p->queue, &p->st)) != 0)
        return rc;
    return queue_peek(t, p->queue, p->state, p->limit, peek_job, p);
}

static int cmd_peek(Ctx *c)
{
    const char *q = c->pos[0], *sname = opt(c, "state");
    PeekOp p = {.queue = q, .json = c->json};
    uint64_t limit, total;
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = flag_u64(c, "limit", 0, 1000000000, 20, &limit)))
        return rc;
    if ((p.state = queue_state_parse(sname)) < 0)
        return usage(c, "--state: unknown state '%s'; use ready, delayed, reserved, buried "
                        "or all", sname);
    p.limit = limit ? (size_t)limit : SIZE_MAX;
    p.tab = (CliTable){.ncol = 8, .head = peek_head, .align = "rlrrrlll"};
    if (c->json) {
        p.mem = open_memstream(&p.buf, &p.len);
        PL_ASSERT(p.mem, "open_memstream has memory");
    }
    if ((rc = ctx_open(c, OPEN_READ)))
        goto fail;
    if ((rc = store_read(c->s, peek_fn, &p)) != 0) {
        rc = queue_fail(c, rc, q);
        goto fail;
    }
    if (c->json) {
        fclose(p.mem);
        p.mem = NULL;
        printf("[%s%s]\n", p.buf, p.n ? "\n" : "");
        rc = CLI_OK;
        goto fail;
    }
    total = p.state == JOB_READY ? p.st.ready : p.state == JOB_DELAYED ? p.st.delayed
          : p.state == JOB_RESERVED ? p.st.reserved : p.state == JOB_BURIED ? p.st.buried
          : p.st.ready + p.st.delayed + p.st.reserved + p.st.buried;
    if (p.n == 0) {
        printf("no %s%sjobs in queue '%s'\n", p.state ? queue_state_name(p.state) : "",
               p.state ? " " : "", q);
    } else {
        cli_table_print(&p.tab, stdout);
        printf("\n%zu of %" PRIu64 " %s%sjobs in queue '%s' (ready %" PRIu64 ", delayed %"
               PRIu64 ", reserved %" PRIu64 ", buried %" PRIu64 ")%s\n",
               p.n, total, p.state ? queue_state_name(p.state) : "", p.state ? " " : "", q,
               p.st.ready, p.st.delayed, p.st.reserved, p.st.buried,
               p.n < total ? "; --limit N shows more" : "");
    }
    rc = CLI_OK;
fail:
    if (p.mem)
        fclose(p.mem);
    free(p.buf);
    cli_table_free(&p.tab);
    return rc;
}

static int cmd_show(Ctx *c)
{
    GetOp g = {0};
    const Job *j = &g.h.j;
    uint64_t now;
    int rc;

    if ((rc = arg_id(c, c->pos[0], &g.id)) || (rc = ctx_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_read(c->s, get_fn, &g)) != 0)
        return job_fail(c, rc, g.id, "show");
    now = pl_now_ms();
    if (c->json) {
        job_json(stdout, j);
        putchar('\n');
        goto done;
    }
    printf("job       %" PRIu64 "\n", j->id);
    printf("queue     %s\n", j->queue);
    printf("state     %s", queue_state_name(j->state));
    if (j->state == JOB_DELAYED)
        printf(", ready %s (%s)", cli_due(j->due_ms, now).s, cli_clock(j->due_ms).s);
    else if (j->state == JOB_RESERVED)
        printf(", lease ends %s (%s)", cli_due(j->due_ms, now).s, cli_clock(j->due_ms).s);
    printf("\npriority  %" PRIu32 "\n", j->pri);
    printf("attempts  %" PRIu32 " (kicked %" PRIu32 " time%s)\n", j->attempts, j->kicks,
           j->kicks == 1 ? "" : "s");
    printf("created   %s, %s ago\n", cli_clock(j->created_ms).s,
           cli_dur(now > j->created_ms ? now - j->created_ms : 0).s);
    printf("ttr       %ss\n", cli_secs(j->ttr_ms).s);
    if (j->lease)
        printf("lease     %" PRIu64 "\n", j->lease);
    fputs("key       ", stdout);
    if (j->key)
        cli_put_text(stdout, j->key, j->keylen);
    else
        fputs("-", stdout);
    fputs("\nerror     ", stdout);
    if (j->error)
        cli_put_text(stdout, j->error, j->errorlen);
    else
        fputs("-", stdout);
    printf("\nbody      %zu bytes\n", j->len);
    fwrite(j->body, 1, j->len, stdout);
    putchar('\n');
done:
    held_free(&g.h);
    return CLI_OK;
}

/* ------------------------------------------------- purge, pause, resume */

typedef struct PurgeOp {
    const char *queue;
    int state;
    size_t n;
} PurgeOp;

static int purge_fn(Txn *t, void *arg)
{
    PurgeOp *p = arg;
    p->n = 0;
    return queue_purge(t, p->queue, p->state, CHUNK, &p->n);
}

static int cmd_purge(Ctx *c)
{
    const char *q = c->pos[0], *sname = opt(c, "state");
    PurgeOp p = {.queue = q};
    uint64_t total = 0;
    int rc;

    if ((rc = arg_queue(c, q)))
        return rc;
    if ((p.state = queue_state_parse(sname)) < 0)
        return usage(c, "--state: unknown state '%s'; use ready, delayed, reserved, buried "
                        "or all", sname);
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    /* Bounded transactions: a big purge never holds the writer lock long. */
    do {
        if ((rc = store_run(c->s, purge_fn, &p)) != 0) {
            if (total)
                cli_note("purged %" PRIu64 " jobs before this error", total);
            return queue_fail(c, rc, q);
        }
        total += p.n;
    } while (p.n == CHUNK);
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"purged\":%" PRIu64 "}\n", total);
    } else {
        printf("purged %" PRIu64 " %s%sjob%s from queue '%s'\n", total,
               p.state ? queue_state_name(p.state) : "", p.state ? " " : "",
               total == 1 ? "" : "s", q);
    }
    return CLI_OK;
}

typedef struct PauseOp {
    const char *queue;
    int paused;
} PauseOp;

static int pause_fn(Txn *t, void *arg)
{
    PauseOp *p = arg;
    return queue_pause(t, p->queue, p->paused);
}

static int pause_run(Ctx *c, int paused)
{
    const char *q = c->pos[0];
    PauseOp p = {q, paused};
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, pause_fn, &p)) != 0)
        return queue_fail(c, rc, q);
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"paused\":%s}\n", paused ? "true" : "false");
    } else if (paused) {
        printf("paused queue '%s': reserve hands out nothing until 'qctl resume %s'\n", q, q);
    } else {
        printf("resumed queue '%s'\n", q);
    }
    return CLI_OK;
}

static int cmd_pause(Ctx *c)
{
    return pause_run(c, 1);
}

static int cmd_resume(Ctx *c)
{
    return pause_run(c, 0);
}

/* ---------------------------------------------------- create, configure */

/* ConfSet: the settings given on the command line, to lay over a conf. */
typedef struct ConfSet {
    int any;
    const char *ttr, *attempts, *backoff, *backoff_max, *max_body, *keep; /* given or NULL */
    QueueConf v;
} ConfSet;

static int conf_parse(const Ctx *c, ConfSet *cs)
{
    uint64_t ttr, att, bo, bomax, body, keep;
    int rc;
    if ((rc = flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)) ||
        (rc = flag_u64(c, "max-attempts", 0, UINT32_MAX, 0, &att)) ||
        (rc = flag_ms(c, "backoff", 0, UINT32_MAX, 0, &bo)) ||
        (rc = flag_ms(c, "backoff-max", 0, UINT32_MAX, 0, &bomax)) ||
        (rc = flag_u64(c, "max-body", 1, QUEUE_BODY_LIMIT, 0, &body)) ||
        (rc = flag_u64(c, "key-retention", 0, QUEUE_KEY_RETENTION_MAX, 0, &keep)))
        return rc;
    cs->ttr = opt(c, "ttr");
    cs->attempts = opt(c, "max-attempts");
    cs->backoff = opt(c, "backoff");
    cs->backoff_max = opt(c, "backoff-max");
    cs->max_body = opt(c, "max-body");
    cs->keep = opt(c, "key-retention");
    cs->any = cs->ttr || cs->attempts || cs->backoff || cs->backoff_max || cs->max_body || cs->keep;
    cs->v = (QueueConf){(uint32_t)ttr, (uint32_t)att, (uint32_t)bo, (uint32_t)bomax, (uint32_t)body,
                        (uint32_t)keep};
    return CLI_OK;
}

static void conf_apply(const ConfSet *cs, QueueConf *cf)
{
    if (cs->ttr)
        cf->ttr_ms = cs->v.ttr_ms;
    if (cs->attempts)
        cf->max_attempts = cs->v.max_attempts;
    if (cs->backoff)
        cf->backoff_ms = cs->v.backoff_ms;
    if (cs->backoff_max)
        cf->backoff_max_ms = cs->v.backoff_max_ms;
    if (cs->max_body)
        cf->max_body = cs->v.max_body;
    if (cs->keep)
        cf->key_retention_s = cs->v.key_retention_s;
}

/* conf_bad says what is inconsistent in cf, or returns NULL. */
static const char *conf_bad(const QueueConf *cf)
{
    if (cf->backoff_max_ms < cf->backoff_ms)
        return "--backoff-max is below --backoff (the first retry delay)";
    return NULL;
}

static void conf_print(const Ctx *c, const char *q, const QueueConf *cf, const char *what)
{
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        fputs(",\"conf\":", stdout);
        conf_json(stdout, cf);
        puts("}");
        return;
    }
    printf("%s queue '%s'\n", what, q);
    printf("  ttr           %ss\n", cli_secs(cf->ttr_ms).s);
    if (cf->max_attempts)
        printf("  max attempts  %" PRIu32 ", then buried\n", cf->max_attempts);
    else
        printf("  max attempts  no limit\n");
    printf("  backoff       %ss, doubling up to %ss\n", cli_secs(cf->backoff_ms).s,
           cli_secs(cf->backoff_max_ms).s);
    printf("  max body      %" PRIu32 " bytes (%s)\n", cf->max_body, cli_size(cf->max_body).s);
    if (cf->key_retention_s)
        printf("  keys kept     %ss after their job is done\n", cli_secs((uint64_t)cf->key_retention_s * 1000).s);
    else
        printf("  keys kept     only while their job is in the queue\n");
}

typedef struct ConfOp {
    const char *queue;
    const ConfSet *cs;
    QueueConf conf;
    const char *bad;
} ConfOp;

static int create_fn(Txn *t, void *arg)
{
    ConfOp *o = arg;
    return queue_create(t, o->queue, &o->conf);
}

static int configure_fn(Txn *t, void *arg)
{
    ConfOp *o = arg;
    QueueStats st;
    int rc;
    if ((rc = queue_stats(t, o->queue, &st)) != 0)
        return rc;
    o->conf = st.conf;
    conf_apply(o->cs, &o->conf);
    if ((o->bad = conf_bad(&o->conf)) != NULL)
        return PL_EINVAL;
    return o->cs->any ? queue_configure(t, o->queue, &o->conf) : 0;
}

static int cmd_create(Ctx *c)
{
    const char *q = c->pos[0], *bad;
    ConfSet cs;
    ConfOp o = {.queue = q, .cs = &cs};
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = conf_parse(c, &cs)))
        return rc;
    queue_conf_default(&o.conf);
    conf_apply(&cs, &o.conf);
    if ((bad = conf_bad(&o.conf)) != NULL)
        return usage(c, "%s", bad);
    if ((rc = ctx_open(c, OPEN_CREATE)))
        return rc;
    rc = store_run(c->s, create_fn, &o);
    if (rc == EEXIST)
        return cli_errorf("queue '%s' already exists; change its settings with 'qctl configure "
                      "%s --ttr S ...'", q, q);
    if (rc == PL_EINVAL)
        return cli_errorf("invalid settings for queue '%s' (%s)", q, pl_strerror(rc));
    if (rc)
        return queue_fail(c, rc, q);
    conf_print(c, q, &o.conf, "created");
    return CLI_OK;
}

static int cmd_configure(Ctx *c)
{
    const char *q = c->pos[0];
    ConfSet cs;
    ConfOp o = {.queue = q, .cs = &cs};
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = conf_parse(c, &cs)))
        return rc;
    if ((rc = ctx_open(c, cs.any ? OPEN_WRITE : OPEN_READ)))
        return rc;
    rc = cs.any ? store_run(c->s, configure_fn, &o) : store_read(c->s, configure_fn, &o);
    if (rc == PL_EINVAL && o.bad)
        return usage(c, "%s", o.bad);
    if (rc == PL_EINVAL)
        return cli_errorf("invalid settings for queue '%s' (%s)", q, pl_strerror(rc));
    if (rc)
        return queue_fail(c, rc, q);
    conf_print(c, q, &o.conf, cs.any ? "configured" : "settings of");
    return CLI_OK;
}

/* ----------------------------------------------------------- stats, info */

/* ListOp: the stats of one queue (queue set) or of all, copied out. */
typedef struct ListOp {
    const char *queue;
    QueueStats *v;
    size_t n, cap;
    uint64_t ms;
} ListOp;

static int list_add(const QueueStats *s, void *arg)
{
    ListOp *o = arg;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = xrealloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = *s;
    return 0;
}

static int list_fn(Txn *t, void *arg)
{
    ListOp *o = arg;
    QueueStats st;
    int rc;
    o->n = 0;
    o->ms = pl_now_ms();
    if (!o->queue)
        return queue_list(t, list_add, o);
    if ((rc = queue_stats(t, o->queue, &st)) != 0)
        return rc;
    return list_add(&st, o);
}

static void stats_json(const ListOp *o)
{
    putchar('{');
    for (size_t i = 0; i < o->n; i++) {
        const QueueStats *s = &o->v[i];
        fputs(i ? ",\n " : "\n ", stdout);
        json_put_string(stdout, s->name, strlen(s->name));
        printf(":{\"ready\":%" PRIu64 ",\"delayed\":%" PRIu64 ",\"reserved\":%" PRIu64
               ",\"buried\":%" PRIu64 ",\"puts\":%" PRIu64 ",\"reserves\":%" PRIu64
               ",\"acks\":%" PRIu64 ",\"releases\":%" PRIu64 ",\"buries\":%" PRIu64
               ",\"kicks\":%" PRIu64 ",\"expiries\":%" PRIu64 ",\"deletes\":%" PRIu64
               ",\"paused\":%s",
               s->ready, s->delayed, s->reserved, s->buried, s->puts, s->reserves, s->acks,
               s->releases, s->buries, s->kicks, s->expiries, s->deletes,
               s->paused ? "true" : "false");
        if (s->ready)
            printf(",\"oldest_ready_ms\":%" PRIu64, s->oldest_ready_ms);
        else
            fputs(",\"oldest_ready_ms\":null", stdout);
        printf(",\"created_ms\":%" PRIu64 ",\"conf\":", s->created_ms);
        conf_json(stdout, &s->conf);
        putchar('}');
    }
    puts(o->n ? "\n}" : "}");
}

static const char *const stats_head[] = {"QUEUE", "READY", "DELAYED", "RESERVED", "BURIED",
                                         "PUTS", "RESERVES", "ACKS", "BURIES", "OLDEST", "PAUSED"};

static int cmd_stats(Ctx *c)
{
    ListOp o = {.queue = c->npos ? c->pos[0] : NULL};
    CliTable t = {.ncol = 11, .head = stats_head, .align = "lrrrrrrrrrl"};
    StoreInfo info;
    Staged staged = {0};
    int rc;

    if ((o.queue && (rc = arg_queue(c, o.queue))) || (rc = ctx_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_read(c->s, list_fn, &o)) != 0) {
        rc = o.queue ? queue_fail(c, rc, o.queue) : cli_errorf("cannot list queues: %s", pl_strerror(rc));
        goto fail;
    }
    if (c->json) {
        stats_json(&o);
        rc = CLI_OK;
        goto fail;
    }
    if ((rc = store_info(c->s, &info)) != 0) {
        rc = cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
        goto fail;
    }
    if ((rc = read_staged(c, &staged)) != 0)
        goto fail;
    for (size_t i = 0; i < o.n; i++) {
        const QueueStats *s = &o.v[i];
        cli_table_add(&t, "%s", s->name);
        cli_table_add(&t, "%" PRIu64, s->ready);
        cli_table_add(&t, "%" PRIu64, s->delayed);
        cli_table_add(&t, "%" PRIu64, s->reserved);
        cli_table_add(&t, "%" PRIu64, s->buried);
        cli_table_add(&t, "%" PRIu64, s->puts);
        cli_table_add(&t, "%" PRIu64, s->reserves);
        cli_table_add(&t, "%" PRIu64, s->acks);
        cli_table_add(&t, "%" PRIu64, s->buries);
        cli_table_add(&t, "%s", s->ready ? cli_dur(s->oldest_ready_ms).s : "-");
        cli_table_add(&t, "%s", s->paused ? "paused" : "-");
    }
    if (o.n)
        cli_table_print(&t, stdout);
    else
        puts("no queues yet; 'qctl put QUEUE JSON' or 'qctl create QUEUE' makes one");
    putchar('\n');
    info_human(stdout, c, &info, &staged);
    rc = CLI_OK;
fail:
    cli_table_free(&t);
    free(o.v);
    free(staged.v);
    return rc;
}

static int cmd_info(Ctx *c)
{
    StoreInfo info;
    Staged staged = {0};
    int rc;
    if ((rc = ctx_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_info(c->s, &info)) != 0)
        return cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
    if ((rc = read_staged(c, &staged)) != 0)
        return rc;
    if (c->json) {
        info_json(stdout, c, &info, &staged);
        putchar('\n');
    } else {
        info_human(stdout, c, &info, &staged);
    }
    free(staged.v);
    return CLI_OK;
}

/* ------------------------------------------------------- export, import */

typedef struct ExportOp {
    const char *queue;
    size_t n;
    int err;
} ExportOp;

static int export_job(const Job *j, void *arg)
{
    ExportOp *e = arg;
    job_json(stdout, j);
    putchar('\n');
    e->n++;
    if (ferror(stdout)) {
        e->err = errno ? errno : EIO;
        return e->err;
    }
    return 0;
}

/* The export is one read transaction while it writes: a consistent snapshot
 * of the queue, as mdb_dump does it. queue_peek cannot resume after a job,
 * so paging in short transactions would mean copying the queue to memory.
 * A reader only keeps LMDB from reusing pages freed meanwhile; writers
 * (the engine, other qctl) go on. */
static int export_fn(Txn *t, void *arg)
{
    ExportOp *e = arg;
    QueueStats st;
    int rc;
    e->n = 0;
    if ((rc = queue_stats(t, e->queue, &st)) != 0)
        return rc;
    return queue_peek(t, e->queue, 0, SIZE_MAX, export_job, e);
}

static int cmd_export(Ctx *c)
{
    const char *q = c->pos[0];
    ExportOp e = {.queue = q};
    int rc;

    if ((rc = arg_queue(c, q)) || (rc = ctx_open(c, OPEN_READ)))
        return rc;
    rc = store_read(c->s, export_fn, &e);
    if (rc && e.err)
        return cli_errorf("cannot write the export of queue '%s': %s", q, strerror(e.err));
    if (rc)
        return queue_fail(c, rc, q);
    if (isatty(STDERR_FILENO))
        cli_note("exported %zu job%s of queue '%s'", e.n, e.n == 1 ? "" : "s", q);
    return CLI_OK;
}

/* Item: one job of an import, checked; body points into the input. */
typedef struct Item {
    uint32_t pri;
    char *key;
    size_t keylen;
    const char *body;
    size_t len;
    size_t line;
} Item;

/* import_line checks one NDJSON line into *it. Returns 0, or -1 with what
 * is wrong in m. Only priority, key and body are read; other members (the
 * rest of what export writes) are ignored. */
static int import_line(const char *s, size_t n, const char *q, const QueueConf *cf, int exists,
                       Item *it, char *m, size_t cap)
{
    JsonSpan k, v;
    size_t pos = 0;
    int r, body = 0;

    if (json_validate(s, n, m, cap))
        return -1;
    it->pri = DEFAULT_PRI;
    while ((r = json_object_next(s, n, &pos, &k, &v)) == 1) {
        if (json_span_is(k, "body")) {
            it->body = v.p;
            it->len = v.n;
            body = 1;
        } else if (json_span_is(k, "priority")) {
            char num[24];
            uint64_t p = 0;
            if (v.n < sizeof num) {
                memcpy(num, v.p, v.n);
                num[v.n] = '\0';
            }
            if (v.n >= sizeof num || cli_parse_u64(num, 0, UINT32_MAX, &p)) {
                snprintf(m, cap, "\"priority\" must be a whole number from 0 to %" PRIu32,
                         UINT32_MAX);
                return -1;
            }
            it->pri = (uint32_t)p;
        } else if (json_span_is(k, "key")) {
            free(it->key);
            it->key = NULL;
            it->keylen = 0;
            if (v.p[0] == '"') {
                it->key = json_string_decode(v.p, v.n, &it->keylen);
                if (it->keylen == 0 || it->keylen > QUEUE_KEY_MAX) {
                    snprintf(m, cap, "\"key\" is %zu bytes; use 1 to %d, or null",
                             it->keylen, QUEUE_KEY_MAX);
                    return -1;
                }
            } else if (!(v.n == 4 && memcmp(v.p, "null", 4) == 0)) {
                snprintf(m, cap, "\"key\" must be a string or null");
                return -1;
            }
        }
    }
    if (r < 0) {
        snprintf(m, cap, "not a JSON object; each line is one job, like "
                         "{\"priority\":1024,\"key\":null,\"body\":{...}}");
        return -1;
    }
    if (!body) {
        snprintf(m, cap, "no \"body\" (the job's JSON)");
        return -1;
    }
    if (it->len > cf->max_body) {
        too_big(m, cap, q, it->len, cf, exists);
        return -1;
    }
    return 0;
}

typedef struct ImportOp {
    const char *queue;
    const Item *v;
    size_t from, to, existed;
} ImportOp;

static int import_fn(Txn *t, void *arg)
{
    ImportOp *o = arg;
    o->existed = 0;
    for (size_t i = o->from; i < o->to; i++) {
        const Item *it = &o->v[i];
        PutArgs a = {.pri = it->pri, .key = it->key, .keylen = it->keylen,
                     .body = it->body, .len = it->len};
        uint64_t id;
        int existed = 0, rc = queue_put(t, o->queue, &a, &id, &existed);
        if (rc)
            return rc;
        o->existed += existed != 0;
    }
    return 0;
}

static int cmd_import(Ctx *c)
{
    const char *q = c->pos[0];
    Strbuf in;
    Item *v = NULL;
    size_t n = 0, cap = 0, line = 0, done = 0, existed = 0;
    QueueConf conf;
    char m[512];
    int rc, exists;

    if ((rc = arg_queue(c, q)))
        return rc;
    sb_init(&in);
    if (isatty(STDIN_FILENO))
        cli_note("reading NDJSON jobs from the terminal; end with Ctrl-D");
    if ((rc = cli_read_all(&in, stdin, SIZE_MAX - 1)) != 0) {
        rc = cli_errorf("cannot read stdin: %s", strerror(rc));
        goto fail;
    }
    if ((rc = put_conf(c, q, &conf, &exists)))
        goto fail;
    /* Check every line before anything is put: a bad line imports nothing. */
    for (size_t a = 0; a < in.len;) {
        char *nl = memchr(in.buf + a, '\n', in.len - a);
        size_t e = nl ? (size_t)(nl - in.buf) : in.len, off;
        line++;
        if (json_trim(in.buf + a, e - a, &off) > 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                v = xrealloc(v, cap * sizeof *v);
            }
            memset(&v[n], 0, sizeof v[n]);
            v[n].line = line;
            if (import_line(in.buf + a, e - a, q, &conf, exists, &v[n++], m, sizeof m)) {
                rc = cli_errorf("line %zu: %s; nothing imported", line, m);
                goto fail;
            }
        }
        a = e + 1;
    }
    if (n && (rc = ctx_open(c, OPEN_CREATE)))
        goto fail;
    while (done < n) {
        ImportOp o = {.queue = q, .v = v, .from = done};
        o.to = n - done < IMPORT_CHUNK ? n : done + IMPORT_CHUNK;
        if ((rc = store_run(c->s, import_fn, &o)) != 0) {
            if (rc == PL_EFULL || rc == ENOSPC)
                room_fail(c, rc);
            else
                queue_fail(c, rc, q);
            if (done)
                cli_note("imported the first %zu jobs (through line %zu); import the lines from %zu "
                     "on again once fixed", done, v[done - 1].line, v[done].line);
            else
                cli_note("nothing imported");
            rc = CLI_FAIL;
            goto fail;
        }
        existed += o.existed;
        done = o.to;
    }
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"imported\":%zu,\"existed\":%zu}\n", n - existed, existed);
    } else {
        printf("imported %zu job%s into queue '%s'", n - existed, n - existed == 1 ? "" : "s", q);
        if (existed)
            printf(" (%zu more already there by key)", existed);
        putchar('\n');
    }
    rc = CLI_OK;
fail:
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
    sb_free(&in);
    return rc;
}

/* ----------------------------------------------- models, batches, rejects */

/* The staging side of the line (staging.h): the models of the pipeline the
 * engine runs (kept in the store), the batches of staged rows that qload
 * loads, and the rejected rows. Output gathered inside a transaction goes
 * into a Strbuf first (views die with the transaction) and is printed after. */

#define DEFAULT_FAIL_REASON "failed by an operator (qctl)"
#define REPLAY_CHUNK 500u        /* rejects per transaction: replay --all */
#define ROW_LIMIT (64u << 20)    /* --row -: the largest fixed row read from stdin */

static const char *const type_names[] = {"serial", "integer", "bigint", "decimal", "boolean",
                                         "string", "text", "datetime", "date", "json"};
static const char *const drift_names[] = {"reject", "ignore", "keep"};
static const char *const format_names[] = {"none", "email", "url", "regex"};

/* arg_model checks a model name: a letter first, at most 127 bytes. */
static int arg_model(const Ctx *c, const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 127 || !((m[0] >= 'a' && m[0] <= 'z') || (m[0] >= 'A' && m[0] <= 'Z')))
        return usage(c, "invalid model name '%s': a model's name starts with a letter and has "
                        "at most 127 bytes (see 'qctl schema')", m);
    return CLI_OK;
}

static int arg_batch(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return usage(c, "batch id '%s' is not a whole number from 1", s);
    return CLI_OK;
}

static int arg_reject(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return usage(c, "reject id '%s' is not a whole number from 1", s);
    return CLI_OK;
}

/* sb_json_text appends a JSON text kept in the store (a reject's errors or
 * job) on one line; should it not be valid JSON, as a string instead. */
static void sb_json_text(Strbuf *b, const char *s, size_t n, const char *none)
{
    if (!s || !n) {
        sb_adds(b, none);
        return;
    }
    if (json_validate(s, n, NULL, 0) != 0) {
        sb_add_json_string(b, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) /* raw CR/LF in valid JSON is whitespace */
        sb_add(b, s[i] == '\n' || s[i] == '\r' ? " " : &s[i], 1);
}

/* sb_row appends a msgpack row as JSON, or null when it does not decode. */
static void sb_row(Strbuf *b, const void *mp, size_t n)
{
    if (!mp || !n || row_to_json(mp, n, b) != 0)
        sb_adds(b, "null");
}

static void sb_opt_u64(Strbuf *b, const char *name, uint64_t v)
{
    if (v)
        sb_addf(b, ",\"%s\":%" PRIu64, name, v);
    else
        sb_addf(b, ",\"%s\":null", name);
}

/* models_read reads the models: from --pipeline FILE when given (the data
 * directory is not needed then), else from the pipeline kept in the store. */
static int models_read(Ctx *c, const char *file, Pipeline **p)
{
    char err[1024] = "";
    int rc;
    *p = NULL;
    if (file) {
        rc = pipeline_load(file, NULL, p, err, sizeof err);
    } else {
        if ((rc = ctx_open(c, OPEN_READ)))
            return rc;
        rc = pipeline_from_store(c->s, NULL, p, err, sizeof err);
    }
    if (rc)
        return cli_errorf("%s", err[0] ? err : pl_strerror(rc));
    if (!(*p)->models || (*p)->models->n == 0) {
        cli_errorf("pipeline '%s' declares no models; declare them under models: (see 'qctl "
               "schema --help'), or pass --pipeline FILE", (*p)->path ? (*p)->path : "?");
        pipeline_free(*p);
        *p = NULL;
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* field_rules describes a field's rules in one line for people. */
static void field_rules(const Field *f, Strbuf *b)
{
    if (f->key)
        sb_adds(b, " key");
    if (f->required)
        sb_adds(b, " required");
    if (f->unique)
        sb_adds(b, " unique");
    if (f->paranoid)
        sb_adds(b, " paranoid");
    if (f->has_length) {
        if (f->len_min == 0)
            sb_addf(b, " length<=%" PRIu64, f->len_max);
        else
            sb_addf(b, " length %" PRIu64 "..%" PRIu64, f->len_min, f->len_max);
    }
    if (f->has_min)
        sb_addf(b, " min %.17g", f->min);
    if (f->has_max)
        sb_addf(b, " max %.17g", f->max);
    if (f->format == FF_REGEX)
        sb_addf(b, " format %s", f->regex_src ? f->regex_src : "regex");
    else if (f->format != FF_NONE)
        sb_addf(b, " format %s", format_names[f->format]);
    if (f->has_default)
        sb_addf(b, " default %s", f->default_text ? f->default_text : "?");
    for (int r = 0; r < RULE_COUNT; r++)
        if (f->messages[r])
            sb_addf(b, " message(%s)", model_rule_name((Rule)r));
}

static const char *const schema_head[] = {"  FIELD", "TYPE", "RULES"};

static void schema_human(const Models *ms)
{
    Strbuf b;
    sb_init(&b);
    for (size_t k = 0; k < ms->n; k++) {
        const Model *m = &ms->m[ms->order ? ms->order[k] : k];
        CliTable t = {.ncol = 3, .head = schema_head, .align = "lll"};
        sb_reset(&b);
        for (size_t i = 0; i < m->nkey; i++)
            sb_addf(&b, "%s%s", i ? ", " : "", m->fields[m->key[i]].name);
        printf("%smodel %s  (table %s; key %s; drift %s", k ? "\n" : "", m->name, m->table,
               m->nkey ? b.buf : "none", drift_names[m->drift]);
        if (m->drift == DRIFT_KEEP)
            printf(" into %s", m->drift_column ? m->drift_column : "extra");
        puts(")");
        for (size_t i = 0; i < m->nfields; i++) {
            const Field *f = &m->fields[i];
            sb_reset(&b);
            field_rules(f, &b);
            cli_table_add(&t, "  %s", f->name);
            if (f->type == FT_DECIMAL && f->precision)
                cli_table_add(&t, "decimal(%u,%u)", f->precision, f->scale);
            else
                cli_table_add(&t, "%s", type_names[f->type]);
            cli_table_add(&t, "%s", b.len ? b.buf + 1 : "-");
        }
        cli_table_print(&t, stdout);
        cli_table_free(&t);
        for (size_t i = 0; i < m->nrels; i++) {
            const Relation *r = &m->rels[i];
            if (r->has_n) {
                printf("  has n %s -> %s", r->name, r->model);
                if (r->through)
                    printf(" through %s", r->through);
                putchar('\n');
            } else {
                printf("  belongs_to %s -> %s (", r->name, r->model);
                for (size_t j = 0; j < r->nfields; j++)
                    printf("%s%s", j ? ", " : "", r->fields[j]);
                puts(")");
            }
        }
    }
    fputs("\nload order:", stdout);
    for (size_t k = 0; k < ms->n; k++)
        printf(" %s", ms->m[ms->order ? ms->order[k] : k].name);
    putchar('\n');
    sb_free(&b);
}

static int cmd_schema(Ctx *c)
{
    Pipeline *p;
    Strbuf b;
    int ddl = opt(c, "ddl") != NULL, rc;

    if (ddl && c->json)
        return usage(c, "--json and --ddl each choose the output; give one of them");
    if ((rc = models_read(c, opt(c, "pipeline"), &p)))
        return rc;
    sb_init(&b);
    if (c->json) {
        models_json(p->models, &b);
        fwrite(b.buf, 1, b.len, stdout);
        putchar('\n');
    } else if (ddl) {
        models_ddl(p->models, &b);
        fwrite(b.buf, 1, b.len, stdout);
        if (b.len && b.buf[b.len - 1] != '\n')
            putchar('\n');
    } else {
        schema_human(p->models);
    }
    sb_free(&b);
    pipeline_free(p);
    return CLI_OK;
}

/* ---------------------------------------------------------------- batches */

static void batch_members(Strbuf *b, const BatchRec *r)
{
    sb_addf(b, "\"id\":%" PRIu64 ",\"model\":", r->id);
    sb_add_json_string(b, r->model, strnlen(r->model, sizeof r->model));
    sb_addf(b, ",\"state\":\"%s\",\"rows\":%" PRIu64 ",\"removed\":%" PRIu64 ",\"rejects\":%"
               PRIu64 ",\"created_ms\":%" PRIu64,
            batch_state_name(r->state), r->rows, r->removed, r->rejects, r->created_ms);
    sb_opt_u64(b, "sealed_ms", r->sealed_ms);
    sb_opt_u64(b, "loaded_ms", r->loaded_ms);
    sb_addf(b, ",\"attempts\":%" PRIu32 ",\"error\":", r->attempts);
    if (r->error[0])
        sb_add_json_string(b, r->error, strnlen(r->error, sizeof r->error));
    else
        sb_adds(b, "null");
}

static void batch_json(Strbuf *b, const BatchRec *r)
{
    sb_adds(b, "{");
    batch_members(b, r);
    sb_adds(b, "}");
}

static uint64_t live_rows(const BatchRec *r)
{
    return r->rows > r->removed ? r->rows - r->removed : 0;
}

/* BatchList: the batches that match, the newest `limit` of them kept in a
 * ring (0: all), and totals over every match. */
typedef struct BatchList {
    int state;
    const char *model;
    size_t limit;
    BatchRec *v;
    size_t n, cap, start;
    uint64_t total, rows, rejects, by_state[BATCH_FAILED + 1];
    uint64_t now;
} BatchList;

static int blist_add(const BatchRec *b, void *arg)
{
    BatchList *l = arg;
    if (l->model && strcmp(b->model, l->model) != 0)
        return 0;
    l->total++;
    l->rows += live_rows(b);
    l->rejects += b->rejects;
    if (b->state >= 0 && b->state <= BATCH_FAILED)
        l->by_state[b->state]++;
    if (l->limit && l->n == l->limit) { /* full: the oldest goes */
        l->v[l->start] = *b;
        l->start = (l->start + 1) % l->limit;
        return 0;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        if (l->limit && l->cap > l->limit)
            l->cap = l->limit;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = *b;
    return 0;
}

static int blist_fn(Txn *t, void *arg)
{
    BatchList *l = arg;
    l->n = l->start = 0;
    l->total = l->rows = l->rejects = 0;
    memset(l->by_state, 0, sizeof l->by_state);
    l->now = pl_now_ms();
    return batch_each(t, l->state, blist_add, l);
}

static const BatchRec *blist_at(const BatchList *l, size_t i)
{
    return &l->v[l->limit ? (l->start + i) % l->limit : i];
}

static const char *const batch_head[] = {"ID", "MODEL", "STATE", "ROWS", "REJECTS", "AGE",
                                         "ERROR"};

static int cmd_batches(Ctx *c)
{
    const char *sname = opt(c, "state");
    BatchList l = {.state = -1, .model = opt(c, "model")};
    CliTable t = {.ncol = 7, .head = batch_head, .align = "rllrrrl"};
    uint64_t limit;
    int rc;

    if ((rc = flag_u64(c, "limit", 0, 1000000000, 20, &limit)) ||
        (l.model && (rc = arg_model(c, l.model))))
        return rc;
    if (sname && strcmp(sname, "all") != 0 && (l.state = batch_state_parse(sname)) < 0)
        return usage(c, "--state: unknown state '%s'; use open, sealed, held, loading, loaded, "
                        "failed or all", sname);
    l.limit = (size_t)limit;
    if ((rc = ctx_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_read(c->s, blist_fn, &l)) != 0) {
        rc = cli_errorf("cannot list the batches of '%s': %s", c->dir, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        Strbuf b;
        sb_init(&b);
        sb_adds(&b, "[");
        for (size_t i = 0; i < l.n; i++) {
            sb_adds(&b, i ? ",\n" : "\n");
            batch_json(&b, blist_at(&l, i));
        }
        sb_adds(&b, l.n ? "\n]\n" : "]\n");
        fwrite(b.buf, 1, b.len, stdout);
        sb_free(&b);
        rc = CLI_OK;
        goto done;
    }
    if (l.n == 0) {
        printf("no %s%sbatches%s%s%s yet; the engine (or qload) makes them from staged rows\n",
               l.state >= 0 ? batch_state_name(l.state) : "", l.state >= 0 ? " " : "",
               l.model ? " of model '" : "", l.model ? l.model : "", l.model ? "'" : "");
        rc = CLI_OK;
        goto done;
    }
    for (size_t i = 0; i < l.n; i++) {
        const BatchRec *b = blist_at(&l, i);
        char *e = b->error[0] ? cli_excerpt(b->error, strlen(b->error), 48) : xstrdup("-");
        cli_table_add(&t, "%" PRIu64, b->id);
        cli_table_add(&t, "%s", b->model);
        cli_table_add(&t, "%s", batch_state_name(b->state));
        cli_table_add(&t, "%" PRIu64, live_rows(b));
        cli_table_add(&t, "%" PRIu64, b->rejects);
        cli_table_add(&t, "%s", cli_dur(l.now > b->created_ms ? l.now - b->created_ms : 0).s);
        cli_table_add(&t, "%s", e);
        free(e);
    }
    cli_table_print(&t, stdout);
    printf("\n%" PRIu64 " batch%s, %" PRIu64 " row%s, %" PRIu64 " rejects (open %" PRIu64
           ", sealed %" PRIu64 ", held %" PRIu64 ", loading %" PRIu64 ", loaded %" PRIu64
           ", failed %" PRIu64 ")\n",
           l.total, l.total == 1 ? "" : "es", l.rows, l.rows == 1 ? "" : "s", l.rejects,
           l.by_state[BATCH_OPEN],
           l.by_state[BATCH_SEALED], l.by_state[BATCH_HELD], l.by_state[BATCH_LOADING],
           l.by_state[BATCH_LOADED], l.by_state[BATCH_FAILED]);
    if (l.n < l.total)
        printf("showing the newest %zu; --limit 0 shows all\n", l.n);
    rc = CLI_OK;
done:
    cli_table_free(&t);
    free(l.v);
    return rc;
}

static int batch_missing(uint64_t id)
{
    return cli_errorf("batch %" PRIu64 " does not exist; see 'qctl batches' for the ids", id);
}

/* BatchShow: one batch and its first rows, gathered in one read. */
typedef struct BatchShow {
    uint64_t id;
    uint32_t max;
    int json;
    BatchRec b;
    Strbuf out;
    size_t n;
} BatchShow;

static int bshow_row(uint32_t seq, const void *mp, size_t len, void *arg)
{
    BatchShow *s = arg;
    if (s->json) {
        sb_addf(&s->out, "%s{\"seq\":%" PRIu32 ",\"row\":", s->n ? ",\n " : "\n ", seq);
        sb_row(&s->out, mp, len);
        sb_adds(&s->out, "}");
    } else {
        sb_addf(&s->out, "%6" PRIu32 "  ", seq);
        sb_row(&s->out, mp, len);
        sb_adds(&s->out, "\n");
    }
    s->n++;
    return 0;
}

static int bshow_fn(Txn *t, void *arg)
{
    BatchShow *s = arg;
    int rc;
    sb_reset(&s->out);
    s->n = 0;
    if ((rc = batch_get(t, s->id, &s->b)) != 0)
        return rc;
    if (s->max == 0)
        return 0;
    return batch_rows(t, s->id, 0, s->max, bshow_row, s);
}

static int cmd_batches_show(Ctx *c)
{
    BatchShow s = {.json = c->json};
    const BatchRec *b = &s.b;
    uint64_t rows, now;
    int rc;

    if ((rc = arg_batch(c, c->pos[0], &s.id)) ||
        (rc = flag_u64(c, "rows", 0, UINT32_MAX, 10, &rows)))
        return rc;
    s.max = (uint32_t)rows;
    sb_init(&s.out);
    if ((rc = ctx_open(c, OPEN_READ)))
        goto done;
    rc = store_read(c->s, bshow_fn, &s);
    if (rc == PL_ENOBATCH) {
        rc = batch_missing(s.id);
        goto done;
    }
    if (rc) {
        rc = cli_errorf("cannot read batch %" PRIu64 ": %s", s.id, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        Strbuf j;
        sb_init(&j);
        sb_adds(&j, "{");
        batch_members(&j, b);
        sb_adds(&j, ",\"data\":[");
        sb_add(&j, s.out.buf, s.out.len);
        sb_adds(&j, s.n ? "\n]}\n" : "]}\n");
        fwrite(j.buf, 1, j.len, stdout);
        sb_free(&j);
        rc = CLI_OK;
        goto done;
    }
    now = pl_now_ms();
    printf("batch     %" PRIu64 "\n", b->id);
    printf("model     %s\n", b->model);
    printf("state     %s\n", batch_state_name(b->state));
    printf("rows      %" PRIu64 " (%" PRIu64 " appended, %" PRIu64 " moved to the rejects "
           "by qload)\n", live_rows(b), b->rows, b->removed);
    printf("rejects   %" PRIu64 " rows of the model rejected while it was open\n", b->rejects);
    printf("created   %s, %s ago\n", cli_clock(b->created_ms).s,
           cli_dur(now > b->created_ms ? now - b->created_ms : 0).s);
    printf("sealed    %s\n", b->sealed_ms ? cli_clock(b->sealed_ms).s : "-");
    printf("loaded    %s\n", b->loaded_ms ? cli_clock(b->loaded_ms).s : "-");
    printf("attempts  %" PRIu32 " load%s\n", b->attempts, b->attempts == 1 ? "" : "s");
    fputs("error     ", stdout);
    if (b->error[0])
        cli_put_text(stdout, b->error, strlen(b->error));
    else
        fputs("-", stdout);
    putchar('\n');
    if (s.max == 0) {
        rc = CLI_OK;
        goto done;
    }
    if (s.n == 0) {
        printf("\nno rows%s\n", b->state == BATCH_LOADED ? " (a loaded batch's rows are "
                                                         "dropped: they are in the warehouse)"
                                                       : "");
    } else {
        printf("\nfirst %zu row%s (seq, row):\n", s.n, s.n == 1 ? "" : "s");
        fwrite(s.out.buf, 1, s.out.len, stdout);
        if ((uint64_t)s.n < live_rows(b))
            printf("... %" PRIu64 " more; --rows N shows more\n", live_rows(b) - s.n);
    }
    rc = CLI_OK;
done:
    sb_free(&s.out);
    return rc;
}

/* The operator's transitions of a batch (staging.h's states). */
enum { BOP_RELEASE, BOP_RETRY, BOP_FAIL };

typedef struct BatchOp {
    int op;
    uint64_t id;
    const char *reason;
    BatchRec b;     /* after (or as found, when refused) */
    int was;
} BatchOp;

static int batchop_fn(Txn *t, void *arg)
{
    BatchOp *o = arg;
    int rc, ok;
    if ((rc = batch_get(t, o->id, &o->b)) != 0)
        return rc;
    o->was = o->b.state;
    ok = o->op == BOP_RELEASE ? o->was == BATCH_HELD
       : o->op == BOP_RETRY   ? o->was == BATCH_FAILED
                              : o->was == BATCH_HELD || o->was == BATCH_SEALED;
    if (!ok)
        return PL_ESTATE;
    if (o->op == BOP_FAIL) {
        o->b.state = BATCH_FAILED;
        snprintf(o->b.error, sizeof o->b.error, "%s", o->reason);
    } else {
        /* Accepted again: qload picks it up as any sealed batch; the
         * error said why it stopped, which no longer holds. */
        o->b.state = BATCH_SEALED;
        o->b.error[0] = '\0';
        if (!o->b.sealed_ms)
            o->b.sealed_ms = t->now;
    }
    return batch_save(t, &o->b);
}

static int batchop_run(Ctx *c, int op)
{
    static const char *const verb[] = {"release", "retry", "fail"};
    BatchOp o = {.op = op};
    const char *reason = op == BOP_FAIL ? opt(c, "reason") : NULL;
    const char *was;
    int rc;

    if ((rc = arg_batch(c, c->pos[0], &o.id)) ||
        (reason && (rc = arg_text(c, "reason", reason, 500))))
        return rc;
    o.reason = reason ? reason : DEFAULT_FAIL_REASON;
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    rc = store_run(c->s, batchop_fn, &o);
    if (rc == PL_ENOBATCH)
        return batch_missing(o.id);
    if (rc == PL_ESTATE) {
        was = batch_state_name(o.was);
        if (op == BOP_RELEASE && o.was == BATCH_FAILED)
            return cli_errorf("batch %" PRIu64 " is failed, not held; only a held batch can be "
                          "released; to load it again: 'qctl batches retry %" PRIu64 "'",
                          o.id, o.id);
        if (op == BOP_RETRY && o.was == BATCH_HELD)
            return cli_errorf("batch %" PRIu64 " is held, not failed; only a failed batch can be "
                          "retried; to accept it: 'qctl batches release %" PRIu64 "'", o.id, o.id);
        if (op == BOP_RELEASE)
            return cli_errorf("batch %" PRIu64 " is %s; only a held batch can be released", o.id, was);
        if (op == BOP_RETRY)
            return cli_errorf("batch %" PRIu64 " is %s; only a failed batch can be retried", o.id, was);
        return cli_errorf("batch %" PRIu64 " is %s; only a held or sealed batch can be failed%s",
                      o.id, was, o.was == BATCH_OPEN ? " (seal it first: 'qctl batches seal "
                                                       "MODEL')" : "");
    }
    if (rc)
        return cli_errorf("cannot %s batch %" PRIu64 ": %s", verb[op], o.id, pl_strerror(rc));
    if (c->json) {
        Strbuf b;
        sb_init(&b);
        batch_json(&b, &o.b);
        b.buf[b.len - 1] = ','; /* one more member: the state before */
        sb_addf(&b, "\"was\":\"%s\"}\n", batch_state_name(o.was));
        fwrite(b.buf, 1, b.len, stdout);
        sb_free(&b);
    } else {
        printf("batch %" PRIu64 " (model %s): %s -> %s\n", o.id, o.b.model,
               batch_state_name(o.was), batch_state_name(o.b.state));
    }
    return CLI_OK;
}

static int cmd_batches_release(Ctx *c)
{
    return batchop_run(c, BOP_RELEASE);
}

static int cmd_batches_retry(Ctx *c)
{
    return batchop_run(c, BOP_RETRY);
}

static int cmd_batches_fail(Ctx *c)
{
    return batchop_run(c, BOP_FAIL);
}

/* SealOp: the open batches (of one model or all) sealed now. */
typedef struct SealOp {
    const char *model;
    BatchRec *v;
    size_t n, cap;
} SealOp;

static int seal_collect(const BatchRec *b, void *arg)
{
    SealOp *o = arg;
    if (b->rows == 0 || (o->model && strcmp(b->model, o->model) != 0))
        return 0;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = xrealloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = *b;
    return 0;
}

static int seal_fn(Txn *t, void *arg)
{
    /* An operator's seal: now, whatever the age, and without the hold
     * threshold (that is the validate stage's, and the operator is the one
     * who would look at a held batch). */
    const SealPolicy pol = {.rows = 0, .after_s = 0, .max_rejects = UINT64_MAX,
                            .max_reject_rate = 1.0};
    SealOp *o = arg;
    size_t k = 0;
    int rc;

    o->n = 0;
    if ((rc = batch_each(t, BATCH_OPEN, seal_collect, o)) != 0)
        return rc;
    for (size_t i = 0; i < o->n; i++) {
        uint64_t id = 0;
        if ((rc = staging_seal_due(t, o->v[i].model, &pol, 1, &id)) != 0)
            return rc;
        if (id && (rc = batch_get(t, id, &o->v[k])) == 0)
            k++;
        else if (id)
            return rc;
    }
    o->n = k;
    return 0;
}

static int cmd_batches_seal(Ctx *c)
{
    SealOp o = {.model = c->npos ? c->pos[0] : NULL};
    int all = opt(c, "all") != NULL, rc;

    if (all == (o.model != NULL))
        return usage(c, "give a MODEL to seal its open batch, or --all for every model's");
    if (o.model && (rc = arg_model(c, o.model)))
        return rc;
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, seal_fn, &o)) != 0) {
        rc = cli_errorf("cannot seal %s%s%s: %s", o.model ? "the open batch of model '" :
                    "the open batches", o.model ? o.model : "", o.model ? "'" : "",
                    pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        Strbuf b;
        sb_init(&b);
        sb_adds(&b, "[");
        for (size_t i = 0; i < o.n; i++) {
            sb_adds(&b, i ? ",\n" : "\n");
            batch_json(&b, &o.v[i]);
        }
        sb_adds(&b, o.n ? "\n]\n" : "]\n");
        fwrite(b.buf, 1, b.len, stdout);
        sb_free(&b);
    } else if (o.n == 0) {
        if (o.model)
            printf("model '%s' has no open batch with rows; nothing sealed (see 'qctl "
                   "batches --model %s')\n", o.model, o.model);
        else
            puts("no open batch has rows; nothing sealed");
    } else {
        for (size_t i = 0; i < o.n; i++)
            printf("%s batch %" PRIu64 " of model %s: %" PRIu64 " rows\n",
                   o.v[i].state == BATCH_HELD ? "held" : "sealed", o.v[i].id, o.v[i].model,
                   live_rows(&o.v[i]));
    }
    rc = CLI_OK;
done:
    free(o.v);
    return rc;
}

/* PruneOp: loaded batches older than a cutoff, forgotten in chunks. */
typedef struct PruneOp {
    uint64_t cutoff_ms;     /* loaded before this */
    uint64_t *ids;
    size_t n, cap, done;
} PruneOp;

#define PRUNE_CHUNK 1000

static int prune_collect(const BatchRec *b, void *arg)
{
    PruneOp *o = arg;
    if (b->loaded_ms >= o->cutoff_ms)
        return 0;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->ids = xrealloc(o->ids, o->cap * sizeof *o->ids);
    }
    o->ids[o->n++] = b->id;
    return 0;
}

static int prune_list(Txn *t, void *arg)
{
    PruneOp *o = arg;
    o->n = 0;
    if (!o->cutoff_ms)
        o->cutoff_ms = t->now;
    return batch_each(t, BATCH_LOADED, prune_collect, o);
}

static int prune_fn(Txn *t, void *arg)
{
    PruneOp *o = arg;
    size_t end = o->done + PRUNE_CHUNK < o->n ? o->done + PRUNE_CHUNK : o->n;
    for (size_t i = o->done; i < end; i++) {
        int rc = batch_forget(t, o->ids[i]);
        /* Gone or changed since the listing (another qctl): skip it. */
        if (rc && rc != PL_ENOBATCH && rc != PL_ESTATE)
            return rc;
    }
    return 0;
}

static int cmd_batches_prune(Ctx *c)
{
    uint64_t older_ms;
    PruneOp o = {0};
    int rc;

    if ((rc = flag_ms(c, "older-than", 0, UINT64_MAX / 2, 7ull * 86400 * 1000, &older_ms)))
        return rc;
    if ((rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    uint64_t now = pl_now_ms();
    o.cutoff_ms = now > older_ms ? now - older_ms : 1;
    if ((rc = store_read(c->s, prune_list, &o)) != 0) {
        rc = cli_errorf("cannot list the loaded batches: %s", pl_strerror(rc));
        goto done;
    }
    while (o.done < o.n) {
        if ((rc = store_run(c->s, prune_fn, &o)) != 0) {
            rc = cli_errorf("pruned %zu of %zu loaded batches, then: %s", o.done, o.n, pl_strerror(rc));
            goto done;
        }
        o.done = o.done + PRUNE_CHUNK < o.n ? o.done + PRUNE_CHUNK : o.n;
    }
    if (c->json)
        printf("{\"pruned\":%zu}\n", o.n);
    else
        printf("pruned %zu loaded batches (loaded more than %s s ago); the warehouse's "
               "pickline_ledger keeps their history\n", o.n, cli_secs(older_ms).s);
    rc = CLI_OK;
done:
    free(o.ids);
    return rc;
}

/* ---------------------------------------------------------------- rejects */

/* errors_text appends the failed rules of a reject's errors (a JSON array
 * of {field, rule, message}) for people: "field rule: message", joined by
 * sep; a text that is not such an array is appended as it is. */
static void errors_text(const char *json, size_t n, const char *sep, Strbuf *out)
{
    msgpack_sbuffer mp;
    RowView v;
    size_t start = out->len;

    if (!json || !n) {
        sb_adds(out, "-");
        return;
    }
    msgpack_sbuffer_init(&mp);
    if (row_from_json(json, n, &mp, NULL, 0) != 0 || row_view(&v, mp.data, mp.size) != 0) {
        sb_add(out, json, n);
        msgpack_sbuffer_destroy(&mp);
        return;
    }
    if (v.root.type != MSGPACK_OBJECT_ARRAY) {
        sb_add(out, json, n);
    } else {
        for (uint32_t i = 0; i < v.root.via.array.size; i++) {
            const msgpack_object *e = &v.root.via.array.ptr[i];
            if (i)
                sb_adds(out, sep);
            if (e->type != MSGPACK_OBJECT_MAP) {
                sb_adds(out, "?");
                continue;
            }
            if (row_field_text(e, "field", out) != 0)
                sb_adds(out, "(row)");
            sb_adds(out, " ");
            if (row_field_text(e, "rule", out) != 0)
                sb_adds(out, "?");
            sb_adds(out, ": ");
            if (row_field_text(e, "message", out) != 0)
                sb_adds(out, "?");
        }
        if (out->len == start)
            sb_adds(out, "-");
    }
    row_view_free(&v);
    msgpack_sbuffer_destroy(&mp);
}

static void reject_json(Strbuf *b, const RejectRead *r)
{
    sb_addf(b, "{\"id\":%" PRIu64 ",\"model\":", r->r.id);
    sb_add_json_string(b, r->model, strlen(r->model));
    sb_adds(b, ",\"key\":");
    sb_add_json_string(b, r->key, strlen(r->key));
    sb_adds(b, ",\"stage\":");
    sb_add_json_string(b, r->stage, strlen(r->stage));
    sb_adds(b, ",\"queue\":");
    if (r->queue[0])
        sb_add_json_string(b, r->queue, strlen(r->queue));
    else
        sb_adds(b, "null");
    sb_opt_u64(b, "batch", r->r.batch);
    sb_addf(b, ",\"time_ms\":%" PRIu64 ",\"row\":", r->r.time_ms);
    sb_row(b, r->r.row, r->r.row_len);
    sb_adds(b, ",\"errors\":");
    sb_json_text(b, r->r.errors, r->r.errors_len, "[]");
    sb_adds(b, ",\"job\":");
    sb_json_text(b, r->r.job, r->r.job_len, "null");
    sb_adds(b, "}");
}

static int reject_missing(uint64_t id)
{
    return cli_errorf("reject %" PRIu64 " does not exist (replayed, dropped, or never stored); "
                  "see 'qctl rejects' for the ids", id);
}

/* RejList: the listing (limit at most), or the export (every one, written
 * while the read transaction is open: one consistent snapshot). */
typedef struct RejList {
    const char *model;
    size_t limit;
    int json, export;
    uint64_t now, total;
    size_t n;
    Strbuf out;
    CliTable tab;
    int werr;
} RejList;

static int rlist_add(const RejectRead *r, void *arg)
{
    RejList *l = arg;
    l->total++;
    if (l->export) {
        sb_reset(&l->out);
        reject_json(&l->out, r);
        sb_adds(&l->out, "\n");
        if (fwrite(l->out.buf, 1, l->out.len, stdout) != l->out.len || ferror(stdout)) {
            l->werr = errno ? errno : EIO;
            return l->werr;
        }
        l->n++;
        return 0;
    }
    if (l->limit && l->n >= l->limit)
        return 0;
    if (l->json) {
        sb_adds(&l->out, l->n ? ",\n" : "\n");
        reject_json(&l->out, r);
    } else {
        Strbuf e;
        char *ex;
        sb_init(&e);
        errors_text(r->r.errors, r->r.errors_len, "; ", &e);
        ex = cli_excerpt(e.buf, e.len, 72);
        cli_table_add(&l->tab, "%" PRIu64, r->r.id);
        cli_table_add(&l->tab, "%s", r->model);
        cli_table_add(&l->tab, "%s", r->key[0] ? r->key : "-");
        cli_table_add(&l->tab, "%s", r->stage);
        cli_table_add(&l->tab, "%s", cli_dur(l->now > r->r.time_ms ? l->now - r->r.time_ms : 0).s);
        cli_table_add(&l->tab, "%s", ex);
        free(ex);
        sb_free(&e);
    }
    l->n++;
    return 0;
}

static int rlist_fn(Txn *t, void *arg)
{
    RejList *l = arg;
    l->n = 0;
    l->total = 0;
    l->now = pl_now_ms();
    sb_reset(&l->out);
    cli_table_free(&l->tab);
    return reject_each(t, l->model, rlist_add, l);
}

static const char *const reject_head[] = {"ID", "MODEL", "KEY", "STAGE", "AGE", "ERRORS"};

static int cmd_rejects(Ctx *c)
{
    RejList l = {.model = c->npos ? c->pos[0] : NULL, .json = c->json};
    uint64_t limit;
    int rc;

    l.tab = (CliTable){.ncol = 6, .head = reject_head, .align = "rlllrl"};
    if ((rc = flag_u64(c, "limit", 0, 1000000000, 20, &limit)) ||
        (l.model && (rc = arg_model(c, l.model))))
        return rc;
    l.limit = (size_t)limit;
    sb_init(&l.out);
    if ((rc = ctx_open(c, OPEN_READ)))
        goto done;
    if ((rc = store_read(c->s, rlist_fn, &l)) != 0) {
        rc = cli_errorf("cannot list the rejects of '%s': %s", c->dir, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        fputs("[", stdout);
        fwrite(l.out.buf, 1, l.out.len, stdout);
        fputs(l.n ? "\n]\n" : "]\n", stdout);
    } else if (l.n == 0) {
        printf("no rejects%s%s%s\n", l.model ? " of model '" : "", l.model ? l.model : "",
               l.model ? "'" : "");
    } else {
        cli_table_print(&l.tab, stdout);
        printf("\n%zu of %" PRIu64 " reject%s%s%s%s%s\n", l.n, l.total, l.total == 1 ? "" : "s",
               l.model ? " of model '" : "", l.model ? l.model : "", l.model ? "'" : "",
               (uint64_t)l.n < l.total ? "; --limit N shows more" : "");
        puts("fix one: 'qctl rejects show ID', then 'qctl rejects replay ID [--row JSON]' or "
             "'qctl rejects drop ID'");
    }
    rc = CLI_OK;
done:
    cli_table_free(&l.tab);
    sb_free(&l.out);
    return rc;
}

static int cmd_rejects_export(Ctx *c)
{
    RejList l = {.model = c->npos ? c->pos[0] : NULL, .export = 1};
    int rc;

    if ((l.model && (rc = arg_model(c, l.model))))
        return rc;
    if (c->json)
        return usage(c, "export always writes JSON (one object per line); drop --json");
    sb_init(&l.out);
    if ((rc = ctx_open(c, OPEN_READ)))
        goto done;
    rc = store_read(c->s, rlist_fn, &l);
    if (rc && l.werr)
        rc = cli_errorf("cannot write the export of the rejects: %s", strerror(l.werr));
    else if (rc)
        rc = cli_errorf("cannot read the rejects of '%s': %s", c->dir, pl_strerror(rc));
    else if (isatty(STDERR_FILENO))
        cli_note("exported %zu reject%s", l.n, l.n == 1 ? "" : "s");
    rc = rc ? rc : CLI_OK;
done:
    sb_free(&l.out);
    return rc;
}

/* RejShow: one reject, copied out as text. */
typedef struct RejShow {
    uint64_t id;
    char model[128], key[256], stage[128], queue[128];
    uint64_t batch, time_ms;
    Strbuf json, row, errors, job;
} RejShow;

static int rshow_fn(Txn *t, void *arg)
{
    RejShow *s = arg;
    RejectRead r;
    int rc;
    if ((rc = reject_get(t, s->id, &r)) != 0)
        return rc;
    memcpy(s->model, r.model, sizeof s->model);
    memcpy(s->key, r.key, sizeof s->key);
    memcpy(s->stage, r.stage, sizeof s->stage);
    memcpy(s->queue, r.queue, sizeof s->queue);
    s->batch = r.r.batch;
    s->time_ms = r.r.time_ms;
    sb_reset(&s->json);
    sb_reset(&s->row);
    sb_reset(&s->errors);
    sb_reset(&s->job);
    reject_json(&s->json, &r);
    sb_row(&s->row, r.r.row, r.r.row_len);
    errors_text(r.r.errors, r.r.errors_len, "\n          ", &s->errors);
    sb_json_text(&s->job, r.r.job, r.r.job_len, "-");
    return 0;
}

static void rshow_free(RejShow *s)
{
    sb_free(&s->json);
    sb_free(&s->row);
    sb_free(&s->errors);
    sb_free(&s->job);
}

static int cmd_rejects_show(Ctx *c)
{
    RejShow s;
    uint64_t now;
    int rc;

    memset(&s, 0, sizeof s);
    if ((rc = arg_reject(c, c->pos[0], &s.id)))
        return rc;
    sb_init(&s.json);
    sb_init(&s.row);
    sb_init(&s.errors);
    sb_init(&s.job);
    if ((rc = ctx_open(c, OPEN_READ)))
        goto done;
    rc = store_read(c->s, rshow_fn, &s);
    if (rc == PL_ENOREJECT) {
        rc = reject_missing(s.id);
        goto done;
    }
    if (rc) {
        rc = cli_errorf("cannot read reject %" PRIu64 ": %s", s.id, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        fwrite(s.json.buf, 1, s.json.len, stdout);
        putchar('\n');
        rc = CLI_OK;
        goto done;
    }
    now = pl_now_ms();
    printf("reject    %" PRIu64 "\n", s.id);
    printf("model     %s\n", s.model);
    fputs("key       ", stdout);
    cli_put_text(stdout, s.key[0] ? s.key : "-", s.key[0] ? strlen(s.key) : 1);
    printf("\nstage     %s\n", s.stage);
    if (s.queue[0])
        printf("queue     %s (a replay puts the job back there)\n", s.queue);
    else
        printf("queue     - (a replay appends the row to the open batch of model %s)\n",
               s.model);
    if (s.batch)
        printf("batch     %" PRIu64 "\n", s.batch);
    printf("time      %s, %s ago\n", cli_clock(s.time_ms).s,
           cli_dur(now > s.time_ms ? now - s.time_ms : 0).s);
    fputs("errors    ", stdout);
    cli_put_text(stdout, s.errors.buf, s.errors.len);
    fputs("\nrow       ", stdout);
    fwrite(s.row.buf, 1, s.row.len, stdout);
    fputs("\njob       ", stdout);
    fwrite(s.job.buf, 1, s.job.len, stdout);
    printf("\n\nreplay it: 'qctl rejects replay %" PRIu64 "' (or with a fixed row: --row "
           "JSON); drop it: 'qctl rejects drop %" PRIu64 "'\n", s.id, s.id);
    rc = CLI_OK;
done:
    rshow_free(&s);
    return rc;
}

typedef struct DropOp {
    uint64_t id;
} DropOp;

static int drop_fn(Txn *t, void *arg)
{
    return reject_del(t, ((DropOp *)arg)->id);
}

static int cmd_rejects_drop(Ctx *c)
{
    DropOp o;
    int rc;
    if ((rc = arg_reject(c, c->pos[0], &o.id)) || (rc = ctx_open(c, OPEN_WRITE)))
        return rc;
    rc = store_run(c->s, drop_fn, &o);
    if (rc == PL_ENOREJECT)
        return reject_missing(o.id);
    if (rc)
        return cli_errorf("cannot drop reject %" PRIu64 ": %s", o.id, pl_strerror(rc));
    if (c->json)
        printf("{\"id\":%" PRIu64 ",\"dropped\":true}\n", o.id);
    else
        printf("dropped reject %" PRIu64 "\n", o.id);
    return CLI_OK;
}

/* Replay. A reject with a queue goes back on the line: its row becomes the
 * staged row and its job goes on the queue, where the stages (validation
 * first) take it as any other. A reject without one (qload's, or a row
 * refused before it had a job) goes straight into its model's open batch,
 * which holds only valid, normalised rows: so that row is validated here
 * with the model, and a row that breaks a rule is refused and stays. */
typedef struct Replay {
    uint64_t id;
    const Models *ms;           /* NULL: no pipeline read (no row needs it) */
    const char *pipeline;       /* the pipeline's name, for messages */
    const void *fixed;          /* --row: the fixed row (msgpack) */
    size_t fixed_len;
    /* out */
    uint64_t job, batch;
    char model[128];
    int direct;                 /* no queue: appended to a batch */
    int need_models;            /* found a direct reject with ms NULL */
    int undeclared;             /* its model is not in ms */
    int invalid;                /* the row breaks the model's rules (errors) */
    Strbuf errors;
} Replay;

static const Models no_models; /* what a pipeline without a models: section declares */

/* newest_batch finds the id of model's newest batch: its open one, which
 * a replay appended to (ids grow, and a model has one open batch at most). */
typedef struct Newest {
    const char *model;
    uint64_t id;
} Newest;

static int newest_add(const BatchRec *b, void *arg)
{
    Newest *n = arg;
    if (strcmp(b->model, n->model) == 0 && b->id > n->id)
        n->id = b->id;
    return 0;
}

/* replay_one replays reject r->id in t; on a refusal (PL_EINVAL: invalid,
 * or a pipeline is needed) nothing is written. */
static int replay_one(Txn *t, Replay *r)
{
    RejectRead rr;
    msgpack_sbuffer norm;
    const void *row = r->fixed;
    size_t len = r->fixed_len;
    int rc;

    r->job = r->batch = 0;
    r->invalid = r->need_models = r->direct = r->undeclared = 0;
    sb_reset(&r->errors);
    if ((rc = reject_get(t, r->id, &rr)) != 0)
        return rc;
    memcpy(r->model, rr.model, sizeof r->model);
    msgpack_sbuffer_init(&norm);
    if (!rr.queue[0]) {
        const Model *m;
        RowView v;
        size_t nerr = 0;
        r->direct = 1;
        if (!r->ms) {
            r->need_models = 1;
            rc = PL_EINVAL;
            goto out;
        }
        if (!(m = r->ms->n ? models_find(r->ms, rr.model) : NULL)) {
            sb_addf(&r->errors, "model '%s' is not declared in %s", rr.model,
                    r->pipeline ? r->pipeline : "the pipeline");
            r->invalid = r->undeclared = 1;
            rc = PL_EINVAL;
            goto out;
        }
        if (!row) {
            row = rr.r.row;
            len = rr.r.row_len;
        }
        if ((rc = row_view(&v, row, len)) != 0) {
            sb_adds(&r->errors, "the row does not decode");
            r->invalid = 1;
            rc = PL_EINVAL;
            goto out;
        }
        sb_adds(&r->errors, "[");
        rc = model_validate(m, &v.root, &norm, &r->errors, &nerr);
        sb_adds(&r->errors, "]");
        row_view_free(&v);
        if (rc != 0) {
            r->invalid = 1;
            rc = PL_EINVAL;
            goto out;
        }
        sb_reset(&r->errors);
        row = norm.data;
        len = norm.size;
    }
    if ((rc = reject_replay(t, r->id, row, len, &r->job)) != 0)
        goto out;
    if (r->direct) {
        Newest n = {.model = r->model};
        if ((rc = batch_each(t, -1, newest_add, &n)) != 0)
            goto out;
        r->batch = n.id;
    }
out:
    msgpack_sbuffer_destroy(&norm);
    return rc;
}

static int replay_fn(Txn *t, void *arg)
{
    return replay_one(t, arg);
}

/* need_fn tells whether reject id goes straight to a batch (no queue). */
typedef struct NeedOp {
    uint64_t id;
    int direct;
} NeedOp;

static int need_fn(Txn *t, void *arg)
{
    NeedOp *n = arg;
    RejectRead r;
    int rc = reject_get(t, n->id, &r);
    if (rc == 0)
        n->direct = r.queue[0] == '\0';
    return rc;
}

/* ReplayAll: the ids of the rejects to replay, and what became of them. */
typedef struct ReplayAll {
    const char *model;
    uint64_t *ids;
    size_t n, cap, next, done, jobs, appended, invalid, gone;
    int direct;
    Replay r;
    uint64_t first_invalid;
    Strbuf first_errors;
} ReplayAll;

static int rall_collect(const RejectRead *r, void *arg)
{
    ReplayAll *a = arg;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->ids = xrealloc(a->ids, a->cap * sizeof *a->ids);
    }
    a->ids[a->n++] = r->r.id;
    a->direct |= r->queue[0] == '\0';
    return 0;
}

static int rall_list_fn(Txn *t, void *arg)
{
    ReplayAll *a = arg;
    a->n = 0;
    a->direct = 0;
    return reject_each(t, a->model, rall_collect, a);
}

/* rall_chunk replays up to REPLAY_CHUNK rejects from a->next in one
 * transaction; the counts are added to only after it commits (the
 * caller), so a retried transaction counts nothing twice. */
typedef struct Chunk {
    ReplayAll *a;
    size_t done, jobs, appended, invalid, gone, end;
    uint64_t first_invalid;
    Strbuf first_errors;
} Chunk;

static int rall_chunk_fn(Txn *t, void *arg)
{
    Chunk *k = arg;
    ReplayAll *a = k->a;
    int rc;
    k->done = k->jobs = k->appended = k->invalid = k->gone = 0;
    k->first_invalid = 0;
    sb_reset(&k->first_errors);
    k->end = a->next + REPLAY_CHUNK < a->n ? a->next + REPLAY_CHUNK : a->n;
    for (size_t i = a->next; i < k->end; i++) {
        a->r.id = a->ids[i];
        rc = replay_one(t, &a->r);
        if (rc == PL_ENOREJECT) { /* dropped or replayed by someone else since */
            k->gone++;
            continue;
        }
        if (rc == PL_EINVAL && a->r.invalid) {
            if (!k->invalid++) {
                k->first_invalid = a->r.id;
                sb_add(&k->first_errors, a->r.errors.buf, a->r.errors.len);
            }
            continue;
        }
        if (rc)
            return rc;
        k->done++;
        if (a->r.direct)
            k->appended++;
        else
            k->jobs++;
    }
    return 0;
}

static int replay_all(Ctx *c, const char *model, const char *pipe)
{
    ReplayAll a = {.model = model};
    Chunk k = {.a = &a};
    Pipeline *p = NULL;
    int rc;

    sb_init(&a.r.errors);
    sb_init(&a.first_errors);
    sb_init(&k.first_errors);
    if ((rc = ctx_open(c, OPEN_WRITE)))
        goto done;
    if ((rc = store_read(c->s, rall_list_fn, &a)) != 0) {
        rc = cli_errorf("cannot list the rejects of '%s': %s", c->dir, pl_strerror(rc));
        goto done;
    }
    if (a.direct || pipe) { /* rows that go straight to a batch are validated */
        char err[1024] = "";
        if ((rc = pipeline_from_store(c->s, pipe, &p, err, sizeof err)) != 0) {
            rc = cli_errorf("%s", err[0] ? err : pl_strerror(rc));
            goto done;
        }
        a.r.ms = p->models ? p->models : &no_models;
        a.r.pipeline = p->path;
    }
    while (a.next < a.n) {
        if ((rc = store_run(c->s, rall_chunk_fn, &k)) != 0) {
            rc = cli_errorf("cannot replay reject %" PRIu64 ": %s; %zu replayed before it",
                        a.r.id, pl_strerror(rc), a.done);
            goto done;
        }
        a.done += k.done;
        a.jobs += k.jobs;
        a.appended += k.appended;
        a.gone += k.gone;
        if (k.invalid && !a.invalid) {
            a.first_invalid = k.first_invalid;
            sb_add(&a.first_errors, k.first_errors.buf, k.first_errors.len);
        }
        a.invalid += k.invalid;
        a.next = k.end;
    }
    if (c->json) {
        printf("{\"replayed\":%zu,\"jobs\":%zu,\"appended\":%zu,\"invalid\":%zu,\"gone\":%zu}\n",
               a.done, a.jobs, a.appended, a.invalid, a.gone);
    } else {
        printf("replayed %zu reject%s: %zu job%s put back on their queues, %zu row%s appended "
               "to open batches\n", a.done, a.done == 1 ? "" : "s", a.jobs,
               a.jobs == 1 ? "" : "s", a.appended, a.appended == 1 ? "" : "s");
        if (a.gone)
            printf("%zu were gone already (replayed or dropped meanwhile)\n", a.gone);
    }
    rc = CLI_OK;
    if (a.invalid) {
        Strbuf e;
        sb_init(&e);
        errors_text(a.first_errors.buf, a.first_errors.len, "; ", &e);
        cli_errorf("%zu reject%s left in place: %s row still breaks its model's rules (first: "
               "reject %" PRIu64 ": %s); fix each with 'qctl rejects replay ID --row JSON' "
               "or drop it", a.invalid, a.invalid == 1 ? "" : "s",
               a.invalid == 1 ? "its" : "their", a.first_invalid, e.buf);
        sb_free(&e);
        rc = CLI_FAIL;
    }
done:
    pipeline_free(p);
    free(a.ids);
    sb_free(&a.r.errors);
    sb_free(&a.first_errors);
    sb_free(&k.first_errors);
    return rc;
}

static int cmd_rejects_replay(Ctx *c)
{
    const char *src = opt(c, "row"), *pipe = opt(c, "pipeline");
    Replay r = {0};
    NeedOp need = {0};
    Pipeline *p = NULL;
    msgpack_sbuffer fixed;
    Strbuf in;
    char err[1024] = "";
    int rc;

    if (opt(c, "all")) {
        if (src)
            return usage(c, "--row fixes one reject; replay --all replays the stored rows");
        if (c->npos && (rc = arg_model(c, c->pos[0])))
            return rc;
        return replay_all(c, c->npos ? c->pos[0] : NULL, pipe);
    }
    if (!c->npos)
        return usage(c, "missing ID (or --all [MODEL])");
    if ((rc = arg_reject(c, c->pos[0], &r.id)))
        return rc;
    msgpack_sbuffer_init(&fixed);
    sb_init(&r.errors);
    sb_init(&in);
    if (src) {
        const char *text = src;
        size_t n = strlen(src);
        if (strcmp(src, "-") == 0) {
            if (isatty(STDIN_FILENO))
                cli_note("reading the fixed row from the terminal; end it with Ctrl-D");
            if ((rc = cli_read_all(&in, stdin, ROW_LIMIT)) != 0) {
                rc = cli_errorf("cannot read the fixed row from stdin: %s",
                            rc == EFBIG ? "over 64 MiB" : strerror(rc));
                goto done;
            }
            text = in.buf;
            n = in.len;
        }
        if (row_from_json_object(text, n, &fixed, err, sizeof err) != 0) {
            rc = usage(c, "--row: %s; give the fixed row as one JSON object", err);
            goto done;
        }
        r.fixed = fixed.data;
        r.fixed_len = fixed.size;
    }
    if ((rc = ctx_open(c, OPEN_WRITE)))
        goto done;
    need.id = r.id;
    rc = store_read(c->s, need_fn, &need);
    if (rc == PL_ENOREJECT) {
        rc = reject_missing(r.id);
        goto done;
    }
    if (rc) {
        rc = cli_errorf("cannot read reject %" PRIu64 ": %s", r.id, pl_strerror(rc));
        goto done;
    }
    if (need.direct || pipe) {
        if ((rc = pipeline_from_store(c->s, pipe, &p, err, sizeof err)) != 0) {
            rc = cli_errorf("%s", err[0] ? err : pl_strerror(rc));
            goto done;
        }
        r.ms = p->models ? p->models : &no_models;
        r.pipeline = p->path;
    }
    rc = store_run(c->s, replay_fn, &r);
    if (rc == PL_ENOREJECT) {
        rc = reject_missing(r.id);
        goto done;
    }
    if (rc == PL_EINVAL && r.need_models) { /* became direct since: read the models */
        rc = cli_errorf("reject %" PRIu64 " changed while it was read; run the replay again", r.id);
        goto done;
    }
    if (rc == PL_EINVAL && r.undeclared) {
        rc = cli_errorf("reject %" PRIu64 " stays: %s; pass --pipeline FILE with the model",
                    r.id, r.errors.buf);
        goto done;
    }
    if (rc == PL_EINVAL && r.invalid) {
        Strbuf e;
        sb_init(&e);
        errors_text(r.errors.buf, r.errors.len, "; ", &e);
        rc = cli_errorf("reject %" PRIu64 " stays: its %s row breaks the rules of model '%s': %s; "
                    "fix the row and give it with --row JSON", r.id, r.fixed ? "fixed" : "stored",
                    r.model, e.buf);
        sb_free(&e);
        goto done;
    }
    if (rc) {
        rc = cli_errorf("cannot replay reject %" PRIu64 ": %s", r.id, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        printf("{\"id\":%" PRIu64 ",\"model\":", r.id);
        json_put_string(stdout, r.model, strlen(r.model));
        if (r.job)
            printf(",\"job\":%" PRIu64, r.job);
        else
            fputs(",\"job\":null", stdout);
        if (r.direct && r.batch)
            printf(",\"batch\":%" PRIu64 "}\n", r.batch);
        else
            puts(",\"batch\":null}");
    } else if (r.direct) {
        printf("appended to batch %" PRIu64 "\n", r.batch);
    } else {
        printf("%" PRIu64 "\n", r.job);
    }
    rc = CLI_OK;
done:
    pipeline_free(p);
    sb_free(&in);
    sb_free(&r.errors);
    msgpack_sbuffer_destroy(&fixed);
    return rc;
}

/* ------------------------------------------------------------------- top */

/* The one piece of global state besides the options: a signal handler can
 * reach nothing else. top blocks SIGINT and SIGTERM except inside ppoll,
 * so a signal always interrupts the wait that would otherwise miss it. */
static volatile sig_atomic_t top_stop;

static void top_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* Frame: one refresh of top, read in its own short transaction. */
typedef struct Frame {
    ListOp list;
    StoreInfo info;
    uint64_t ns;
    int staged;                         /* the counts below were read */
    uint64_t batches[BATCH_FAILED + 1]; /* by state */
    uint64_t rejects;
} Frame;

static const QueueStats *frame_find(const Frame *f, const char *name)
{
    for (size_t i = 0; i < f->list.n; i++)
        if (strcmp(f->list.v[i].name, name) == 0)
            return &f->list.v[i];
    return NULL;
}

static CliStr rate(uint64_t now, uint64_t then, double dt, int have)
{
    CliStr r;
    if (!have || now < then || dt <= 0)
        snprintf(r.s, sizeof r.s, "-");
    else
        snprintf(r.s, sizeof r.s, "%.1f", (double)(now - then) / dt);
    return r;
}

static const char *const top_head[] = {"QUEUE", "READY", "DELAYED", "RESERVED", "BURIED",
                                       "PUT/s", "RES/s", "ACK/s", "OLDEST", "PAUSED"};

static void top_draw(const Ctx *c, FILE *f, const Frame *cur, const Frame *prev, uint64_t every)
{
    CliTable t = {.ncol = 10, .head = top_head, .align = "lrrrrrrrrl"};
    double dt = prev ? (double)(cur->ns - prev->ns) / 1e9 : 0;
    const StoreInfo *i = &cur->info;
    uint64_t used = (uint64_t)i->last_page * i->page_size;

    fprintf(f, "pickline top  %s  %s  every %ss  q quits\n\n", c->dir,
            cli_clock(cur->list.ms).s, cli_secs(every).s);
    for (size_t k = 0; k < cur->list.n; k++) {
        const QueueStats *s = &cur->list.v[k], *p = prev ? frame_find(prev, s->name) : NULL;
        cli_table_add(&t, "%s", s->name);
        cli_table_add(&t, "%" PRIu64, s->ready);
        cli_table_add(&t, "%" PRIu64, s->delayed);
        cli_table_add(&t, "%" PRIu64, s->reserved);
        cli_table_add(&t, "%" PRIu64, s->buried);
        cli_table_add(&t, "%s", rate(s->puts, p ? p->puts : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", rate(s->reserves, p ? p->reserves : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", rate(s->acks, p ? p->acks : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", s->ready ? cli_dur(s->oldest_ready_ms).s : "-");
        cli_table_add(&t, "%s", s->paused ? "paused" : "-");
    }
    if (cur->list.n)
        cli_table_print(&t, f);
    else
        fputs("no queues yet\n", f);
    fprintf(f, "\nmap  %s used of %s (%.1f%%), limit %s, file %s, %zu free pages, readers %u/%u\n",
            cli_size(used).s, cli_size(i->map_size).s,
            i->map_size ? 100.0 * (double)used / (double)i->map_size : 0,
            i->map_max ? cli_size(i->map_max).s : "none", cli_size(i->file_size).s,
            i->free_pages, i->readers, i->max_readers);
    if (cur->staged)
        fprintf(f, "batches  open %" PRIu64 ", sealed %" PRIu64 ", held %" PRIu64 ", loading %"
                   PRIu64 ", loaded %" PRIu64 ", failed %" PRIu64 "; rejects %" PRIu64 "\n",
                cur->batches[BATCH_OPEN], cur->batches[BATCH_SEALED], cur->batches[BATCH_HELD],
                cur->batches[BATCH_LOADING], cur->batches[BATCH_LOADED],
                cur->batches[BATCH_FAILED], cur->rejects);
    cli_table_free(&t);
}

/* top_show writes a drawn frame: over the last one on a terminal (home,
 * each line cleared to its end, the rest of the screen cleared: no flicker),
 * else one after the other. */
static void top_show(const char *frame, size_t len, int tty)
{
    if (!tty) {
        fwrite(frame, 1, len, stdout);
        putchar('\n');
        fflush(stdout);
        return;
    }
    fputs("\033[H", stdout);
    for (const char *p = frame, *end = frame + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fwrite(p, 1, n, stdout);
        fputs("\033[K\n", stdout);
        p += n + 1;
    }
    fputs("\033[J", stdout);
    fflush(stdout);
}

/* top_wait waits ms for the next refresh, reading keys when stdin is a
 * terminal. Returns 1 when it is time to quit: 'q', SIGINT or SIGTERM. */
static int top_wait(int *keys, uint64_t ms, const sigset_t *mask)
{
    uint64_t end = pl_mono_ns() + ms * 1000000;
    for (;;) {
        uint64_t now = pl_mono_ns();
        if (top_stop)
            return 1;
        if (now >= end)
            return 0;
        struct timespec ts = {(time_t)((end - now) / 1000000000), (long)((end - now) % 1000000000)};
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = ppoll(&pfd, *keys ? 1 : 0, &ts, mask);
        if (r < 0 && errno != EINTR)
            return 1;
        if (r > 0) {
            char b[64];
            ssize_t k = read(STDIN_FILENO, b, sizeof b);
            if (k <= 0)
                *keys = 0; /* end of input: go on without keys */
            for (ssize_t i = 0; i < k; i++)
                if (b[i] == 'q' || b[i] == 'Q')
                    return 1;
        }
    }
}

static int top_batch(const BatchRec *b, void *arg)
{
    Frame *f = arg;
    if (b->state >= 0 && b->state <= BATCH_FAILED)
        f->batches[b->state]++;
    return 0;
}

static int top_reject(const RejectRead *r, void *arg)
{
    (void)r;
    ((Frame *)arg)->rejects++;
    return 0;
}

/* top_fn reads a frame: the queues, then the batches and rejects (a scan of
 * their records; a frame without them still draws the queues). */
static int top_fn(Txn *t, void *arg)
{
    Frame *f = arg;
    int rc;
    if ((rc = list_fn(t, &f->list)) != 0)
        return rc;
    memset(f->batches, 0, sizeof f->batches);
    f->rejects = 0;
    f->staged = batch_each(t, -1, top_batch, f) == 0 && reject_each(t, NULL, top_reject, f) == 0;
    return 0;
}

static int cmd_top(Ctx *c)
{
    Frame fr[2];
    Frame *cur = &fr[0], *prev = NULL;
    uint64_t every, iterations;
    struct termios saved, raw;
    struct sigaction sa = {0}, old_int, old_term;
    sigset_t block, old, wait;
    int rc, keys = isatty(STDIN_FILENO), tty = isatty(STDOUT_FILENO);

    memset(fr, 0, sizeof fr);
    if ((rc = flag_ms(c, "interval", 100, 3600000, 1000, &every)) ||
        (rc = flag_u64(c, "iterations", 0, UINT32_MAX, 0, &iterations)))
        return rc;
    if (c->json)
        return usage(c, "top has no --json output; use 'qctl stats --json'");
    if ((rc = ctx_open(c, OPEN_READ)))
        return rc;

    sa.sa_handler = top_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    wait = old;
    sigdelset(&wait, SIGINT);
    sigdelset(&wait, SIGTERM);
    if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        keys = 0;
    }
    if (tty)
        fputs("\033[?25l\033[2J", stdout); /* hide the cursor, clear once */

    for (uint64_t n = 1;; n++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *mem;

        /* Each refresh is its own short read transaction; none spans a wait. */
        if ((rc = store_read(c->s, top_fn, cur)) != 0 ||
            (rc = store_info(c->s, &cur->info)) != 0) {
            rc = cli_errorf("cannot read '%s': %s", c->dir, pl_strerror(rc));
            break;
        }
        cur->ns = pl_mono_ns();
        mem = open_memstream(&buf, &len);
        PL_ASSERT(mem, "open_memstream has memory");
        top_draw(c, mem, cur, prev, every);
        fclose(mem);
        top_show(buf, len, tty);
        free(buf);
        prev = cur;
        cur = cur == &fr[0] ? &fr[1] : &fr[0];
        if ((iterations && n >= iterations) || top_wait(&keys, every, &wait)) {
            rc = CLI_OK;
            break;
        }
    }

    if (tty)
        fputs("\033[?25h", stdout);
    if (keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    sigprocmask(SIG_SETMASK, &old, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(fr[0].list.v);
    free(fr[1].list.v);
    return rc;
}

/* --------------------------------------------------------------- compact */

/* dir_bytes sums the sizes of the regular files in dir. */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    uint64_t n = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            n += (uint64_t)st.st_size;
    closedir(d);
    return n;
}

static int cmd_compact(Ctx *c)
{
    const char *dst = c->pos[0];
    StoreInfo info;
    uint64_t used, after;
    int rc;

    if ((rc = ctx_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_info(c->s, &info)) != 0)
        return cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
    used = (uint64_t)info.last_page * info.page_size;
    rc = store_compact(c->s, dst);
    if (rc == EEXIST || rc == ENOTEMPTY || rc == PL_ENOTDATA)
        return cli_errorf("'%s' is not empty; compact into a new or empty directory", dst);
    if (rc == EACCES || rc == EPERM)
        return cli_errorf("permission denied writing '%s'; pick a directory you can write", dst);
    if (rc == ENOSPC)
        return cli_errorf("no space left writing '%s'; the copy needs up to %s", dst, cli_size(used).s);
    if (rc)
        return cli_errorf("cannot compact '%s' into '%s': %s", c->dir, dst, pl_strerror(rc));
    after = dir_bytes(dst);
    if (c->json) {
        fputs("{\"source\":", stdout);
        json_put_string(stdout, c->dir, strlen(c->dir));
        fputs(",\"dest\":", stdout);
        json_put_string(stdout, dst, strlen(dst));
        printf(",\"before_bytes\":%zu,\"used_bytes\":%" PRIu64 ",\"after_bytes\":%" PRIu64 "}\n",
               info.file_size, used, after);
    } else {
        printf("compacted '%s' into '%s'\n", c->dir, dst);
        printf("  before  %s on disk, %s in use\n", cli_size(info.file_size).s, cli_size(used).s);
        printf("  after   %s\n", cli_size(after).s);
        printf("to use it, stop the engine and swap the directories\n");
    }
    return CLI_OK;
}

/* ---------------------------------------------------------------- verify */

typedef struct VerifyOut {
    const Ctx *c;
    int first;
} VerifyOut;

static void verify_report(void *arg, const char *what, const char *why)
{
    VerifyOut *o = arg;
    if (o->c->json) {
        fputs(o->first ? "" : ",", stdout);
        fputs("{\"record\":", stdout);
        json_put_string(stdout, what, strlen(what));
        fputs(",\"problem\":", stdout);
        json_put_string(stdout, why, strlen(why));
        fputc('}', stdout);
    } else {
        printf("%s: %s\n", what, why);
    }
    o->first = 0;
}

static int cmd_verify(Ctx *c)
{
    uint64_t max;
    int rc;
    if ((rc = flag_u64(c, "max-problems", 1, UINT64_MAX, 1000, &max)))
        return rc;
    if ((rc = ctx_open(c, OPEN_READ)))
        return rc;
    VerifyCounts vc;
    VerifyOut o = {c, 1};
    if (c->json)
        fputs("{\"problems\":[", stdout);
    rc = store_verify(c->s, verify_report, &o, max, &vc);
    if (rc) {
        if (c->json)
            puts("]}");
        return cli_errorf("verify of '%s' stopped: %s", c->dir, pl_strerror(rc));
    }
    if (c->json) {
        printf("],\"problem_count\":%" PRIu64 ",\"records\":%" PRIu64 ",\"queues\":%" PRIu64
               ",\"jobs\":%" PRIu64 ",\"bodies\":%" PRIu64 ",\"index\":%" PRIu64 ",\"keys\":%" PRIu64
               ",\"retained_keys\":%" PRIu64 ",\"staged\":%" PRIu64 ",\"ok\":%s}\n",
               vc.problems, vc.records, vc.queues, vc.jobs, vc.bodies, vc.index, vc.keys,
               vc.retained_keys, vc.staged, vc.problems ? "false" : "true");
    } else {
        if (vc.problems > max)
            printf("... and %" PRIu64 " more\n", vc.problems - max);
        printf("%s: %" PRIu64 " records read: %" PRIu64 " queues, %" PRIu64 " jobs, %" PRIu64
               " index entries, %" PRIu64 " keys (%" PRIu64 " retained), %" PRIu64 " staged\n",
               c->dir, vc.records, vc.queues, vc.jobs, vc.index, vc.keys + vc.retained_keys,
               vc.retained_keys, vc.staged);
        if (vc.problems)
            printf("%" PRIu64 " problem%s found\n", vc.problems, vc.problems == 1 ? "" : "s");
        else
            printf("no problems found\n");
    }
    return vc.problems ? CLI_FAIL : CLI_OK;
}

/* ------------------------------------------------------------------ help */

#define LEASE_FLAG {"lease", "T", "act only while this lease (from reserve) is held"}
#define STATE_FLAG {"state", "S", "ready, delayed, reserved, buried or all (default)"}
#define CONF_FLAGS                                                                        \
    {"ttr", "S", "seconds a reserve leases a job for (default 60)"},                      \
    {"max-attempts", "N", "reserves before a failing job is buried; 0: no limit (default 10)"}, \
    {"backoff", "S", "first retry delay of release --backoff (default 1)"},               \
    {"backoff-max", "S", "ceiling of the doubling backoff (default 3600)"},               \
    {"max-body", "BYTES", "largest body a put accepts (default 1048576)"},               \
    {"key-retention", "S", "seconds an idempotency key outlives its job; 0: not (default 86400)"}

static const Cmd cmds[] = {
    {"put", cmd_put, "QUEUE [--pri N] [--delay S] [--ttr S] [--key K] [JSON|-]",
     "add a job; print its id once it is on disk",
     "Adds a job to QUEUE (created with default settings if missing) and prints\n"
     "the new job's id alone on a line, only once the job is on disk. The body is\n"
     "the JSON argument, or stdin when it is '-' or absent: one valid JSON value\n"
     "(the whitespace around it is not kept). With --key, if a live job of the\n"
     "queue holds the key, nothing is added and that job's id is printed.\n"
     "--json: {\"id\":N,\"existed\":false}",
     1, 2,
     {{"pri", "N", "priority, 0 the most urgent .. 4294967295 (default 1024)"},
      {"delay", "S", "seconds until the job is ready (default 0)"},
      {"ttr", "S", "seconds a reserve leases the job for (default: the queue's)"},
      {"key", "K", "idempotency key, at most 200 bytes"}}},
    {"reserve", cmd_reserve, "QUEUE [--timeout S] [--ttr S]",
     "lease the most urgent ready job and print it",
     "Leases the most urgent ready job of QUEUE and prints it: a header line\n"
     "(id, queue, priority, attempts, lease), then the body. With --timeout it tries\n"
     "again every 20 ms until a job is ready or the time is up. When none is\n"
     "ready: exit status 1 and nothing on stdout. Finish the job with\n"
     "'qctl ack ID --lease T', or give it back with 'qctl release ID --lease T'.\n"
     "--json: one job object, as 'qctl show --help' describes",
     1, 1,
     {{"timeout", "S", "wait up to S seconds for a job (default 0: one try)"},
      {"ttr", "S", "lease length (default: the job's)"}}},
    {"ack", cmd_ack, "ID [--lease T]", "delete a job whose work is done",
     "Deletes job ID: its work is done. With --lease, only while that lease\n"
     "(from reserve) is held; without it, whatever the job's state.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"deleted\",\"was\":\"reserved\"}",
     1, 1, {LEASE_FLAG}},
    {"delete", cmd_delete, "ID", "delete a job in any state",
     "Deletes job ID whatever its state.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"deleted\",\"was\":\"S\"}",
     1, 1, {{NULL, NULL, NULL}}},
    {"release", cmd_release, "ID [--delay S | --backoff] [--error E] [--lease T]",
     "put a reserved job back to ready or delayed",
     "Puts reserved job ID back: ready now, delayed by --delay S, or delayed by the\n"
     "queue's doubling backoff (--backoff). --error keeps why, for peek and show.\n"
     "A job that used all its queue's attempts is buried instead.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"S\",\"was\":\"reserved\","
     "\"due_ms\":T|null,\"attempts\":N}",
     1, 1,
     {{"delay", "S", "seconds until it is ready again"},
      {"backoff", NULL, "delay by the queue's backoff for its attempts so far"},
      {"error", "E", "the error that made the job fail (at most 1000 bytes)"},
      LEASE_FLAG}},
    {"bury", cmd_bury, "ID [--reason R] [--lease T]", "set a job aside with a reason",
     "Sets job ID aside (ready, delayed or reserved) until it is kicked.\n"
     "--json: as release",
     1, 1,
     {{"reason", "R", "why (default: \"" DEFAULT_REASON "\")"}, LEASE_FLAG}},
    {"touch", cmd_touch, "ID [--lease T]", "extend a reserved job's lease",
     "Extends the lease of reserved job ID to its ttr from now.\n--json: as release",
     1, 1, {LEASE_FLAG}},
    {"kick", cmd_kick, "QUEUE [N]", "move buried jobs back to ready (default: all)",
     "Moves up to N buried jobs of QUEUE (oldest first; default all buried now)\n"
     "back to ready, with their attempts counted afresh.\n"
     "--json: {\"queue\":\"Q\",\"kicked\":N}",
     1, 2, {{NULL, NULL, NULL}}},
    {"kick-job", cmd_kick_job, "ID", "move one buried or delayed job to ready",
     "Moves job ID, buried or delayed, to ready.\n--json: as release", 1, 1, {{NULL, NULL, NULL}}},
    {"peek", cmd_peek, "QUEUE [--state ready|delayed|reserved|buried|all] [--limit N]",
     "list jobs without changing them",
     "Lists jobs of QUEUE in the order they would be served (ready, delayed,\n"
     "reserved, buried), changing nothing: id, state, priority, attempts, age,\n"
     "when due, last error and the start of the body.\n"
     "--json: an array of job objects (see 'qctl show --help')",
     1, 1, {STATE_FLAG, {"limit", "N", "at most N jobs (default 20; 0: all)"}}},
    {"show", cmd_show, "ID", "print one job in full",
     "Prints job ID in full.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"ready|delayed|reserved|buried\",\n"
     "  \"priority\":N,\"attempts\":N,\"kicks\":N,\"created_ms\":T,\"due_ms\":T|null,\n"
     "  \"ttr_ms\":N,\"lease\":\"T\"|null,\"key\":\"K\"|null,\"error\":\"E\"|null,\n"
     "  \"body\":JSON}  (times in ms since the epoch; the lease token as a string)",
     1, 1, {{NULL, NULL, NULL}}},
    {"purge", cmd_purge, "QUEUE [--state S]", "delete the jobs of a queue",
     "Deletes every job of QUEUE (or those in one state), 10000 per transaction.\n"
     "--json: {\"queue\":\"Q\",\"purged\":N}",
     1, 1, {STATE_FLAG}},
    {"pause", cmd_pause, "QUEUE", "stop handing out jobs of a queue",
     "Pauses QUEUE: puts go on, reserve hands out nothing until it is resumed.\n"
     "--json: {\"queue\":\"Q\",\"paused\":true}",
     1, 1, {{NULL, NULL, NULL}}},
    {"resume", cmd_resume, "QUEUE", "hand out jobs of a paused queue again",
     "Resumes QUEUE.\n--json: {\"queue\":\"Q\",\"paused\":false}", 1, 1, {{NULL, NULL, NULL}}},
    {"create", cmd_create,
     "QUEUE [--ttr S] [--max-attempts N] [--backoff S] [--backoff-max S] [--max-body BYTES]\n"
     "      [--key-retention S]",
     "create a queue with settings",
     "Creates QUEUE; settings not given take the defaults.\n"
     "--json: {\"queue\":\"Q\",\"conf\":{\"ttr_ms\":N,\"max_attempts\":N,\"backoff_ms\":N,\n"
     "  \"backoff_max_ms\":N,\"max_body\":N,\"key_retention_s\":N}}",
     1, 1, {CONF_FLAGS}},
    {"configure", cmd_configure,
     "QUEUE [--ttr S] [--max-attempts N] [--backoff S] [--backoff-max S] [--max-body BYTES]\n"
     "      [--key-retention S]",
     "change (or show) a queue's settings",
     "Changes only the settings given; with none, shows them. Jobs already put\n"
     "keep their own ttr.\n--json: as create",
     1, 1, {CONF_FLAGS}},
    {"stats", cmd_stats, "[QUEUE]", "depths by state, totals, and the data map",
     "Prints per queue the jobs by state, the totals so far, the age of the oldest\n"
     "ready job and whether it is paused; then the data map and the staged rows\n"
     "(as 'qctl info').\n"
     "--json: one object keyed by queue name (the staged rows are in\n"
     "'qctl info --json'): {\"Q\":{\"ready\":N,\"delayed\":N,\n"
     "  \"reserved\":N,\"buried\":N,\"puts\":N,\"reserves\":N,\"acks\":N,\"releases\":N,\n"
     "  \"buries\":N,\"kicks\":N,\"expiries\":N,\"deletes\":N,\"paused\":false,\n"
     "  \"oldest_ready_ms\":N|null,\"created_ms\":T,\"conf\":{...}}}",
     0, 1, {{NULL, NULL, NULL}}},
    {"queues", cmd_stats, "[QUEUE]", "the same as stats", "The same as 'qctl stats'.",
     0, 1, {{NULL, NULL, NULL}}},
    {"info", cmd_info, "", "the data map: size, use, free pages, readers, staged rows",
     "Prints the LMDB map of the data directory: its size and limit, pages in\n"
     "use and free, the file's size and the readers; and the staged rows: the\n"
     "rows in flight between the stages, by model, which the batch stage deletes\n"
     "as it appends them to batches (legacy rows, staged by a pickline before\n"
     "row instances, are counted apart: the line never deletes them).\n"
     "--json: {\"path\":\"DIR\",\"map_size\":N,\"map_max\":N,\"page_size\":N,\n"
     "  \"used_pages\":N,\"used_bytes\":N,\"free_pages\":N,\"file_size\":N,\"headroom\":N,\n"
     "  \"readers\":N,\"max_readers\":N,\"staged\":{\"rows\":N,\"refs\":N,\"legacy\":N,\n"
     "  \"bytes\":N,\"models\":{\"M\":{\"rows\":N,\"refs\":N,\"legacy\":N,\"bytes\":N}}}}",
     0, 0, {{NULL, NULL, NULL}}},
    {"export", cmd_export, "QUEUE > jobs.ndjson", "write a queue's jobs as NDJSON",
     "Writes every job of QUEUE to stdout, one JSON object per line (the shape of\n"
     "'qctl show --json'), as one consistent snapshot.",
     1, 1, {{NULL, NULL, NULL}}},
    {"import", cmd_import, "QUEUE < jobs.ndjson", "put the jobs of an NDJSON file",
     "Reads one job per line from stdin ({\"priority\":N,\"key\":\"K\"|null,\"body\":JSON};\n"
     "other members, like the rest of what export writes, are ignored) and puts\n"
     "them as new ready jobs, 1000 per transaction. Every line is checked first:\n"
     "a bad line imports nothing.\n"
     "--json: {\"queue\":\"Q\",\"imported\":N,\"existed\":N}",
     1, 1, {{NULL, NULL, NULL}}},
    {"schema", cmd_schema, "[--pipeline FILE] [--json | --ddl]",
     "the models: fields, rules, keys, relations, load order",
     "Prints the models of the pipeline the engine runs (kept in the data\n"
     "directory; --pipeline FILE reads a file instead, and then needs no data\n"
     "directory) in load order, parents first: per model its table, key and drift\n"
     "policy, one line per field with its type and rules, and its relations.\n"
     "--ddl: the CREATE TABLE statements qload --create-tables runs.\n"
     "--json: {\"models\":[{\"name\",\"table\",\"drift\",\"key\":[..],\"fields\":[..],\n"
     "  \"belongs_to\":[..],\"has_n\":[..]}],\"load_order\":[..]}",
     0, 0,
     {{"pipeline", "FILE", "read the models from FILE, not from the data directory"},
      {"ddl", NULL, "print the SQL DDL of the models"}}},
    {"batches", cmd_batches, "[show|seal|release|retry|fail|prune] [--state S] [--model M] [--limit N]",
     "staged batches: list, show, seal, release, retry, fail, prune",
     "Lists the batches of staged rows, the newest last: id, model, state, rows\n"
     "(appended less those qload moved to the rejects), rejects counted while open,\n"
     "age and error; then the totals by state. States: open (taking rows), sealed\n"
     "(ready for qload), held (too many rejects: an operator releases or fails it),\n"
     "loading, loaded, failed (qload gave up; retry seals it again).\n"
     "--json: an array of {\"id\":N,\"model\":\"M\",\"state\":\"S\",\"rows\":N,\"removed\":N,\n"
     "  \"rejects\":N,\"created_ms\":T,\"sealed_ms\":T|null,\"loaded_ms\":T|null,\n"
     "  \"attempts\":N,\"error\":\"E\"|null}  (the newest N with --limit)",
     0, 0,
     {{"state", "S", "open, sealed, held, loading, loaded, failed or all (default)"},
      {"model", "M", "only the batches of model M"},
      {"limit", "N", "the newest N batches (default 20; 0: all)"}}},
    {"batches show", cmd_batches_show, "ID [--rows N]", "one batch and its first rows",
     "Prints batch ID and its first N rows (seq and the row as JSON). A loaded\n"
     "batch's rows are dropped: they are in the warehouse.\n"
     "--json: the batch object of 'qctl batches --json' with one more member,\n"
     "  \"data\":[{\"seq\":N,\"row\":{...}}]",
     1, 1, {{"rows", "N", "print the first N rows (default 10; 0: none)"}}},
    {"batches seal", cmd_batches_seal, "MODEL | --all", "seal the open batch now",
     "Seals the open batch of MODEL (or of every model with --all) now, whatever\n"
     "its size and age, so that qload loads it. An open batch without rows is\n"
     "left open. The hold threshold is not applied: the operator decided.\n"
     "--json: an array of the sealed batches (as 'qctl batches --json')",
     0, 1, {{"all", NULL, "seal the open batch of every model"}}},
    {"batches release", cmd_batches_release, "ID", "accept a held batch (held -> sealed)",
     "Accepts held batch ID after a look at its rejects: it becomes sealed and\n"
     "qload loads it. Only a held batch can be released.\n"
     "--json: the batch object, and \"was\":\"held\"",
     1, 1, {{NULL, NULL, NULL}}},
    {"batches retry", cmd_batches_retry, "ID", "load a failed batch again (failed -> sealed)",
     "Seals failed batch ID again so that qload retries it (fix the cause first:\n"
     "'qctl batches show ID' says the last error). Only a failed batch can be\n"
     "retried.\n--json: the batch object, and \"was\":\"failed\"",
     1, 1, {{NULL, NULL, NULL}}},
    {"batches fail", cmd_batches_fail, "ID [--reason R]", "give up a held or sealed batch",
     "Marks held or sealed batch ID failed, with the reason, so that qload\n"
     "leaves it ('qctl batches retry ID' takes it back).\n"
     "--json: the batch object, and \"was\":\"held|sealed\"",
     1, 1, {{"reason", "R", "why (default: \"" DEFAULT_FAIL_REASON "\")"}}},
    {"batches prune", cmd_batches_prune, "[--older-than S]", "forget loaded batches",
     "Deletes the records of batches loaded more than S seconds ago (default\n"
     "604800, a week), and any rows left of them. A loaded batch is in the\n"
     "warehouse and its ledger (pickline_ledger) keeps the history; other states\n"
     "are never touched.\n--json: {\"pruned\":N}",
     0, 0, {{"older-than", "S", "only batches loaded more than S seconds ago (0: all)"}}},
    {"rejects", cmd_rejects, "[show|export|replay|drop] [MODEL] [--limit N]",
     "rejected rows: list, show, export, replay, drop",
     "Lists the rejected rows (of MODEL, or all), oldest first: id, model, key,\n"
     "the stage that rejected it, age, and the failed rules with their messages.\n"
     "A model named like a subcommand goes after --: 'qctl rejects -- show'.\n"
     "--json: an array of {\"id\":N,\"model\":\"M\",\"key\":\"K\",\"stage\":\"S\",\n"
     "  \"queue\":\"Q\"|null,\"batch\":N|null,\"time_ms\":T,\"row\":{...},\n"
     "  \"errors\":[{\"field\",\"rule\",\"message\"}],\"job\":JSON|null}",
     0, 1, {{"limit", "N", "at most N rejects (default 20; 0: all)"}}},
    {"rejects show", cmd_rejects_show, "ID", "one reject in full",
     "Prints reject ID: its model, key, stage, the queue a replay puts its job on\n"
     "(none: a replay appends the row to its model's open batch), errors, the row\n"
     "and the job.\n--json: one object, as 'qctl rejects --json'",
     1, 1, {{NULL, NULL, NULL}}},
    {"rejects export", cmd_rejects_export, "[MODEL] > rejects.ndjson",
     "write the rejects as NDJSON",
     "Writes every reject (of MODEL, or all) to stdout, one JSON object per line\n"
     "(the shape of 'qctl rejects --json'), as one consistent snapshot.",
     0, 1, {{NULL, NULL, NULL}}},
    {"rejects replay", cmd_rejects_replay, "ID [--row JSON|-] | --all [MODEL]",
     "put a reject back on the line",
     "Puts reject ID back on the line in one transaction and deletes it: its row\n"
     "(or the fixed row of --row, a JSON object; '-' reads stdin) becomes the\n"
     "staged row and its job goes back on its queue; prints the new job's id.\n"
     "A reject without a queue (qload's) goes into its model's open batch\n"
     "instead: the row is first checked against the model (a row that breaks a\n"
     "rule is refused and the reject stays); prints \"appended to batch N\".\n"
     "--all replays every reject (of MODEL) with its stored row; those whose row\n"
     "is still invalid stay (exit status 1).\n"
     "--json: {\"id\":N,\"model\":\"M\",\"job\":N|null,\"batch\":N|null}; --all:\n"
     "  {\"replayed\":N,\"jobs\":N,\"appended\":N,\"invalid\":N,\"gone\":N}",
     0, 1,
     {{"row", "JSON", "the fixed row, a JSON object ('-': read it from stdin)"},
      {"all", NULL, "replay every reject (of MODEL)"},
      {"pipeline", "FILE", "the models from FILE, not from the data directory"}}},
    {"rejects drop", cmd_rejects_drop, "ID", "delete a reject for good",
     "Deletes reject ID: its row is not replayed.\n--json: {\"id\":N,\"dropped\":true}",
     1, 1, {{NULL, NULL, NULL}}},
    {"top", cmd_top, "[--interval S] [--iterations N]", "live view of the queues",
     "Redraws the queues (jobs by state, put/reserve/ack rates per second, oldest\n"
     "ready), the data map, and the batches by state and the rejects every\n"
     "interval, until 'q', Ctrl-C or SIGTERM.",
     0, 0,
     {{"interval", "S", "seconds between refreshes (default 1)"},
      {"iterations", "N", "stop after N refreshes (default: until q)"}}},
    {"verify", cmd_verify, "[--max-problems N]", "check every record of the data directory",
     "Reads every record of the data directory in one snapshot (the engine may\n"
     "run) and checks it: every record decodes, every job has its one index entry\n"
     "and its queue, every index entry and key names a job that agrees, and each\n"
     "queue's counters equal its jobs. Prints one line per problem (the record and\n"
     "what is wrong), then a summary; exits 1 when it found any. Repairs nothing.\n"
     "--json: {\"problems\":[{\"record\":\"job 3\",\"problem\":\"...\"}],\n"
     "  \"problem_count\":N,\"records\":N,...,\"ok\":BOOL}",
     0, 0, {{"max-problems", "N", "print at most N problems (default 1000)"}}},
    {"compact", cmd_compact, "DEST_DIR", "write a compacted copy of the data",
     "Writes a compacted copy of the data directory into DEST_DIR (new or empty)\n"
     "and prints the sizes before and after. The engine may keep running.\n"
     "--json: {\"source\":\"DIR\",\"dest\":\"DIR\",\"before_bytes\":N,\"used_bytes\":N,\n"
     "  \"after_bytes\":N}",
     1, 1, {{NULL, NULL, NULL}}},
};

#define NCMDS (sizeof cmds / sizeof cmds[0])

/* The global flags, before or after the command. The parser reads the
 * first two from the table; --help (and -h) it knows by itself. */
enum { G_DATA, G_JSON };
static const CliFlag globals[] = {
    {"data", "DIR", "the data directory (default: $PICKLINE_DATA, else " CLI_DEFAULT_DIR ")"},
    {"json", NULL, "output for scripts"},
    {"help", NULL, "this; 'qctl COMMAND --help' for one command"},
};

static void help_main(FILE *f)
{
    fputs("usage: qctl [--data DIR] [--json] COMMAND [ARGS]\n\n"
          "Inspects and repairs pickline's durable job queues, staged batches and\n"
          "rejected rows.\n\ncommands:\n", f);
    for (size_t i = 0; i < NCMDS; i++)
        if (!strchr(cmds[i].name, ' ')) /* subcommands: in their command's help */
            fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fputs("\nglobal flags (before or after the command):\n", f);
    cli_flags_help(f, globals, 3, 11);
    fputs("\nTimes are in seconds, fractions allowed (0.25). Exit status: 0 ok,\n"
          "1 failure (or no job ready for reserve), 2 usage.\n", f);
}

static void help_cmd(const Cmd *cmd, FILE *f)
{
    fprintf(f, "usage: qctl [--data DIR] [--json] %s %s\n\n%s\n", cmd->name, cmd->synopsis,
            cmd->help);
    if (cmd->flags[0].name) {
        fputs("\nflags:\n", f);
        cli_flags_help(f, cmd->flags, MAX_FLAGS, 20);
    }
    for (size_t i = 0, n = strlen(cmd->name), first = 1; i < NCMDS; i++) {
        if (strncmp(cmds[i].name, cmd->name, n) != 0 || cmds[i].name[n] != ' ')
            continue;
        if (first)
            fputs("\nsubcommands ('qctl CMD SUB --help' for one):\n", f);
        first = 0;
        fprintf(f, "  %-16s %s\n", cmds[i].name, cmds[i].summary);
    }
    fputs("\nglobal flags: --data DIR (default: $PICKLINE_DATA, else " CLI_DEFAULT_DIR "), --json\n", f);
}

/* ------------------------------------------------------------ arguments */

static const Cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* sub_find finds subcommand a of cmd ("batches" "show": "batches show"). */
static const Cmd *sub_find(const Cmd *cmd, const char *a)
{
    size_t n = strlen(cmd->name);
    for (size_t i = 0; i < NCMDS; i++)
        if (strncmp(cmds[i].name, cmd->name, n) == 0 && cmds[i].name[n] == ' ' &&
            strcmp(cmds[i].name + n + 1, a) == 0)
            return &cmds[i];
    return NULL;
}

static void seterr(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* seterr keeps the first problem found (the parse goes on to find --help). */
static void seterr(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (err[0])
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* args_parse fills c from argv. Global flags go anywhere; a command's flags
 * after the command; "--" ends the flags. Sets *help for -h/--help, and err
 * to the first problem (empty when none). */
static void args_parse(Ctx *c, int argc, char **argv, int *help, char *err, size_t cap)
{
    const Cmd *sub;
    const char *v;
    int flags = 1, k, f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (flags && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                flags = 0;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                *help = 1;
            } else if ((k = cli_flag_take(globals, 2, 1, argc, argv, &i, &v, &f)) != CLI_ARG_NONE) {
                if (k == CLI_ARG_SWITCH)
                    seterr(err, cap, "--json takes no value");
                if (k == G_JSON || k == CLI_ARG_SWITCH)
                    c->json = 1;
                else if (k == CLI_ARG_NOVALUE || !*v)
                    seterr(err, cap, "--data needs a directory");
                else
                    c->dir = v;
            } else if (a[1] != '-') {
                seterr(err, cap, "unknown flag '%s'", a);
            } else if (!c->cmd ||
                       (k = cli_flag_take(c->cmd->flags, MAX_FLAGS, 1, argc, argv, &i, &v, &f)) ==
                           CLI_ARG_NONE) {
                int n = (int)strcspn(a + 2, "=");
                if (c->cmd)
                    seterr(err, cap, "unknown flag '--%.*s' for '%s'", n, a + 2, c->cmd->name);
                else
                    seterr(err, cap, "unknown flag '--%.*s' (a command's flags go after it)", n,
                           a + 2);
            } else if (k == CLI_ARG_SWITCH) {
                seterr(err, cap, "--%s takes no value", c->cmd->flags[f].name);
                c->val[f] = "";
            } else if (k == CLI_ARG_NOVALUE) {
                seterr(err, cap, "--%s needs a value (%s)", c->cmd->flags[f].name,
                       c->cmd->flags[f].meta);
            } else {
                c->val[k] = v;
            }
        } else if (!c->cmd) {
            if (!(c->cmd = cmd_find(a))) {
                seterr(err, cap, "unknown command '%s'", a);
                return;
            }
        } else if (flags && c->npos == 0 && (sub = sub_find(c->cmd, a)) != NULL) {
            /* A subcommand: its flags are its own, so they go after it. */
            for (int j = 0; j < MAX_FLAGS; j++)
                if (c->val[j])
                    seterr(err, cap, "the flags of '%s' go after it", sub->name);
            memset(c->val, 0, sizeof c->val);
            c->cmd = sub;
        } else if (c->npos < c->cmd->max_pos) {
            c->pos[c->npos++] = a;
        } else if (c->npos == 0 && sub_find(c->cmd, "show")) {
            seterr(err, cap, "'%s' is not a subcommand of '%s'; see 'qctl %s --help'", a,
                   c->cmd->name, c->cmd->name);
        } else {
            seterr(err, cap, "unexpected argument '%s'", a);
        }
    }
}

/* ------------------------------------------------------------------ main */

/* std_fds makes sure fds 0, 1 and 2 are open before anything else is: run
 * with stdout closed, LMDB's data or lock file would become fd 1 and our
 * output would be written into it. A closed stdout gets /dev/null opened
 * read-only, so that writing the output still fails (and is reported:
 * reserve hands its job back); a closed stdin or stderr gets /dev/null. */
static void std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY);
        if (n < 0)
            abort(); /* no /dev/null: nothing safe to do */
        if (n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

int main(int argc, char **argv)
{
    Ctx c = {0};
    char err[512] = "";
    int help = 0, rc;

    std_fds();
    cli_prog = "qctl";
    pl_log_level = PL_LOG_WARN; /* stderr is for problems; the engine's info lines are not */
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a write error we report */
    args_parse(&c, argc, argv, &help, err, sizeof err);
    if (help) {
        if (c.cmd)
            help_cmd(c.cmd, stdout);
        else
            help_main(stdout);
        rc = CLI_OK;
        goto out;
    }
    if (err[0])
        return usage(&c, "%s", err);
    if (!c.cmd)
        return usage(&c, "no command given");
    if (c.npos < c.cmd->min_pos)
        return usage(&c, "missing %.*s", (int)strcspn(c.cmd->synopsis, " "), c.cmd->synopsis);
    c.dir = cli_data_dir(c.dir);
    rc = c.cmd->run(&c);
    store_close(c.s);
out:
    if (fflush(stdout) != 0 && rc == CLI_OK)
        rc = cli_errorf("cannot write to stdout: %s", strerror(errno));
    return rc;
}
