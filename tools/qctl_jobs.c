/* qctl_jobs.c: the commands on jobs. put adds one; reserve leases the
 * most urgent ready one; ack, delete, release, bury, touch and kick-job act
 * on one by id; peek and show look at them without changing anything;
 * export and import move a queue's jobs as NDJSON (one job_json a line).
 * Every JSON output of a job has the one shape job_json writes. */
#include "qctl.h"

#include "json.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ constants */

#define DEFAULT_PRI 1024u        /* beanstalkd's default priority */
#define IMPORT_CHUNK 1000u       /* jobs per transaction: import */
#define RESERVE_POLL_MS 20u      /* reserve --timeout: one try per interval */
#define MAX_DELAY_MS (10ull * 365 * 86400 * 1000) /* ten years */
#define MAX_TIMEOUT_MS (365ull * 86400 * 1000)

/* arg_id parses a job id (a whole number from 1). */
static int arg_id(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return qctl_usage(c, "job id '%s' is not a whole number from 1", s);
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

/* ---------------------------------------------------------- job errors */

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

/* ------------------------------------------------------------------ put */

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
            return qctl_open_fail(c, rc);
    }
    rc = qctl_read_stats(c, q, &st);
    if (rc == 0) {
        *conf = st.conf;
        *exists = 1;
    } else if (rc != PL_ENOQUEUE) {
        return qctl_queue_fail(c, rc, q);
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

int qctl_put(Ctx *c)
{
    const char *q = c->pos[0], *src = c->npos > 1 ? c->pos[1] : "-", *key = qctl_opt(c, "key");
    uint64_t pri, delay, ttr;
    Strbuf body;
    QueueConf conf;
    PutOp op = {.queue = q};
    char m[512];
    size_t off;
    int rc, exists;

    sb_init(&body);
    if ((rc = qctl_arg_queue(c, q)) ||
        (rc = qctl_flag_u64(c, "pri", 0, UINT32_MAX, DEFAULT_PRI, &pri)) ||
        (rc = qctl_flag_ms(c, "delay", 0, MAX_DELAY_MS, 0, &delay)) ||
        (rc = qctl_flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)) ||
        (key && (rc = qctl_arg_text(c, "key", key, QUEUE_KEY_MAX))))
        return rc;
    if (strcmp(src, "-") != 0) {
        sb_adds(&body, src);
    } else {
        if (isatty(STDIN_FILENO))
            cli_note("reading the body from the terminal; end it with Ctrl-D");
        rc = sb_read(&body, stdin, QUEUE_BODY_LIMIT);
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
    if ((rc = qctl_open(c, OPEN_CREATE)))
        goto fail;
    rc = store_run(c->s, put_fn, &op);
    if (rc == PL_ETOOBIG && put_conf(c, q, &conf, &exists) == CLI_OK) { /* conf changed since */
        too_big(m, sizeof m, q, op.a.len, &conf, exists);
        rc = cli_errorf("%s", m);
        goto fail;
    }
    if (rc) {
        rc = qctl_queue_fail(c, rc, q);
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
        cli_note("job %" PRIu64 " of queue '%s' already holds key '%s'; nothing added", op.id, q,
                 key);
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
        /* The row a reference job holds goes with its last reference. */
        if ((rc = staging_job_gone(t, j.body, j.len, NULL)) != 0)
            return rc;
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
        return qctl_flag_u64(c, "lease", 1, UINT64_MAX, 0, &o->lease);
    return CLI_OK;
}

static int jobop_run(Ctx *c, JobOp *o)
{
    int rc;
    if ((rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, jobop_fn, o)) != 0)
        return job_fail(c, rc, o->id, op_verb[o->op]);
    jobop_print(c, o);
    return CLI_OK;
}

/* jobop runs op, which takes no more than ID (and --lease). */
static int jobop(Ctx *c, int op)
{
    JobOp o;
    int rc = jobop_parse(c, op, &o);
    return rc ? rc : jobop_run(c, &o);
}

int qctl_ack(Ctx *c)
{
    return jobop(c, OP_ACK);
}

int qctl_delete(Ctx *c)
{
    return jobop(c, OP_DELETE);
}

int qctl_release(Ctx *c)
{
    JobOp o;
    uint64_t delay;
    int rc;
    if ((rc = jobop_parse(c, OP_RELEASE, &o)) ||
        (rc = qctl_flag_ms(c, "delay", 0, MAX_DELAY_MS, 0, &delay)))
        return rc;
    o.text = qctl_opt(c, "error");
    if (o.text && (rc = qctl_arg_text(c, "error", o.text, QUEUE_REASON_MAX)))
        return rc;
    if (qctl_opt(c, "backoff") && qctl_opt(c, "delay"))
        return qctl_usage(c, "give --delay or --backoff, not both");
    o.delay_ms = qctl_opt(c, "backoff") ? -1 : (int64_t)delay;
    return jobop_run(c, &o);
}

int qctl_bury(Ctx *c)
{
    JobOp o;
    int rc;
    if ((rc = jobop_parse(c, OP_BURY, &o)))
        return rc;
    o.text = qctl_opt(c, "reason") ? qctl_opt(c, "reason") : DEFAULT_REASON;
    if ((rc = qctl_arg_text(c, "reason", o.text, QUEUE_REASON_MAX)))
        return rc;
    return jobop_run(c, &o);
}

int qctl_touch(Ctx *c)
{
    return jobop(c, OP_TOUCH);
}

int qctl_kick_job(Ctx *c)
{
    return jobop(c, OP_KICK);
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

int qctl_reserve(Ctx *c)
{
    const char *q = c->pos[0];
    ReserveOp r = {.queue = q};
    const Job *j = &r.got.j;
    uint64_t timeout, ttr, start, waited;
    int rc;

    if ((rc = qctl_arg_queue(c, q)) ||
        (rc = qctl_flag_ms(c, "timeout", 0, MAX_TIMEOUT_MS, 0, &timeout)) ||
        (rc = qctl_flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)))
        return rc;
    r.ttr = (uint32_t)ttr;
    if ((rc = qctl_open(c, OPEN_WRITE)))
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
        rc = qctl_queue_fail(c, rc, q);
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
        cli_table_add(&p->tab, "%s",
                      cli_dur(p->now > j->created_ms ? p->now - j->created_ms : 0).s);
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

int qctl_peek(Ctx *c)
{
    const char *q = c->pos[0], *sname = qctl_opt(c, "state");
    PeekOp p = {.queue = q, .json = c->json};
    uint64_t limit, total;
    int rc;

    if ((rc = qctl_arg_queue(c, q)) || (rc = qctl_flag_u64(c, "limit", 0, 1000000000, 20, &limit)))
        return rc;
    if ((p.state = queue_state_parse(sname)) < 0)
        return qctl_usage(c, "--state: unknown state '%s'; use ready, delayed, reserved, buried "
                             "or all", sname);
    p.limit = limit ? (size_t)limit : SIZE_MAX;
    p.tab = (CliTable){.ncol = 8, .head = peek_head, .align = "rlrrrlll"};
    if (c->json) {
        p.mem = open_memstream(&p.buf, &p.len);
        PL_ASSERT(p.mem, "open_memstream has memory");
    }
    if ((rc = qctl_open(c, OPEN_READ)))
        goto fail;
    if ((rc = store_read(c->s, peek_fn, &p)) != 0) {
        rc = qctl_queue_fail(c, rc, q);
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

int qctl_show(Ctx *c)
{
    GetOp g = {0};
    const Job *j = &g.h.j;
    uint64_t now;
    int rc;

    if ((rc = arg_id(c, c->pos[0], &g.id)) || (rc = qctl_open(c, OPEN_READ)))
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

int qctl_export(Ctx *c)
{
    const char *q = c->pos[0];
    ExportOp e = {.queue = q};
    int rc;

    if ((rc = qctl_arg_queue(c, q)) || (rc = qctl_open(c, OPEN_READ)))
        return rc;
    rc = store_read(c->s, export_fn, &e);
    if (rc && e.err)
        return cli_errorf("cannot write the export of queue '%s': %s", q, strerror(e.err));
    if (rc)
        return qctl_queue_fail(c, rc, q);
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
    JsonJob j;
    if (json_validate(s, n, m, cap))
        return -1;
    int rc = json_job_read(s, n, &j, m, cap);
    if (rc == JSON_JOB_NOT_OBJECT) {
        snprintf(m, cap, "not a JSON object; each line is one job, like "
                         "{\"priority\":1024,\"key\":null,\"body\":{...}}");
        return -1;
    }
    if (rc == JSON_JOB_NO_BODY) {
        snprintf(m, cap, "no \"body\" (the job's JSON)");
        return -1;
    }
    if (rc)
        return -1; /* m says what */
    it->pri = j.has_pri ? j.pri : DEFAULT_PRI;
    it->key = j.key;
    it->keylen = j.keylen;
    it->body = j.body.p;
    it->len = j.body.n;
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

int qctl_import(Ctx *c)
{
    const char *q = c->pos[0];
    Strbuf in;
    Item *v = NULL;
    size_t n = 0, cap = 0, line = 0, done = 0, existed = 0;
    QueueConf conf;
    char m[512];
    int rc, exists;

    if ((rc = qctl_arg_queue(c, q)))
        return rc;
    sb_init(&in);
    if (isatty(STDIN_FILENO))
        cli_note("reading NDJSON jobs from the terminal; end with Ctrl-D");
    if ((rc = sb_read(&in, stdin, SIZE_MAX - 1)) != 0) {
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
            v = cli_grow(v, n, &cap, sizeof *v, 256);
            memset(&v[n], 0, sizeof v[n]);
            v[n].line = line;
            if (import_line(in.buf + a, e - a, q, &conf, exists, &v[n++], m, sizeof m)) {
                rc = cli_errorf("line %zu: %s; nothing imported", line, m);
                goto fail;
            }
        }
        a = e + 1;
    }
    if (n && (rc = qctl_open(c, OPEN_CREATE)))
        goto fail;
    while (done < n) {
        ImportOp o = {.queue = q, .v = v, .from = done};
        o.to = n - done < IMPORT_CHUNK ? n : done + IMPORT_CHUNK;
        if ((rc = store_run(c->s, import_fn, &o)) != 0) {
            if (rc == PL_EFULL || rc == ENOSPC)
                qctl_room_fail(c, rc);
            else
                qctl_queue_fail(c, rc, q);
            if (done)
                cli_note("imported the first %zu jobs (through line %zu); import the lines from "
                         "%zu on again once fixed", done, v[done - 1].line, v[done].line);
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
