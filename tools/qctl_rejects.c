/* qctl_rejects.c: the rejected rows (staging.h): list, show, export,
 * replay (one, with a fixed row, or all) and drop. Output gathered inside a
 * transaction goes into a Strbuf first (views die with the transaction)
 * and is printed after; export writes while its read transaction is open
 * (one consistent snapshot). */
#include "qctl.h"

#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPLAY_CHUNK 500u        /* rejects per transaction: replay --all */
#define ROW_LIMIT (64u << 20)    /* --row -: the largest fixed row read from stdin */

static int arg_reject(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return qctl_usage(c, "reject id '%s' is not a whole number from 1", s);
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
    qctl_opt_u64_json(b, "batch", r->r.batch);
    sb_addf(b, ",\"time_ms\":%" PRIu64 ",\"row\":", r->r.time_ms);
    qctl_row_json(b, r->r.row, r->r.row_len);
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

int qctl_rejects(Ctx *c)
{
    RejList l = {.model = c->npos ? c->pos[0] : NULL, .json = c->json};
    uint64_t limit;
    int rc;

    l.tab = (CliTable){.ncol = 6, .head = reject_head, .align = "rlllrl"};
    if ((rc = qctl_flag_u64(c, "limit", 0, 1000000000, 20, &limit)) ||
        (l.model && (rc = qctl_arg_model(c, l.model))))
        return rc;
    l.limit = (size_t)limit;
    sb_init(&l.out);
    if ((rc = qctl_open(c, OPEN_READ)))
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

int qctl_rejects_export(Ctx *c)
{
    RejList l = {.model = c->npos ? c->pos[0] : NULL, .export = 1};
    int rc;

    if ((l.model && (rc = qctl_arg_model(c, l.model))))
        return rc;
    if (c->json)
        return qctl_usage(c, "export always writes JSON (one object per line); drop --json");
    sb_init(&l.out);
    if ((rc = qctl_open(c, OPEN_READ)))
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
    qctl_row_json(&s->row, r.r.row, r.r.row_len);
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

int qctl_rejects_show(Ctx *c)
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
    if ((rc = qctl_open(c, OPEN_READ)))
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

int qctl_rejects_drop(Ctx *c)
{
    DropOp o;
    int rc;
    if ((rc = arg_reject(c, c->pos[0], &o.id)) || (rc = qctl_open(c, OPEN_WRITE)))
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
    uint64_t version;           /* a direct one: the model version it was validated with */
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
        r->version = m->version;
    }
    if ((rc = reject_replay(t, r->id, row, len, r->direct ? r->version : 0, &r->job)) != 0)
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
    a->ids = cli_grow(a->ids, a->n, &a->cap, sizeof *a->ids, 256);
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
    if ((rc = qctl_open(c, OPEN_WRITE)))
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

int qctl_rejects_replay(Ctx *c)
{
    const char *src = qctl_opt(c, "row"), *pipe = qctl_opt(c, "pipeline");
    Replay r = {0};
    NeedOp need = {0};
    Pipeline *p = NULL;
    msgpack_sbuffer fixed;
    Strbuf in;
    char err[1024] = "";
    int rc;

    if (qctl_opt(c, "all")) {
        if (src)
            return qctl_usage(c, "--row fixes one reject; replay --all replays the stored rows");
        if (c->npos && (rc = qctl_arg_model(c, c->pos[0])))
            return rc;
        return replay_all(c, c->npos ? c->pos[0] : NULL, pipe);
    }
    if (!c->npos)
        return qctl_usage(c, "missing ID (or --all [MODEL])");
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
            if ((rc = sb_read(&in, stdin, ROW_LIMIT)) != 0) {
                rc = cli_errorf("cannot read the fixed row from stdin: %s",
                                rc == EFBIG ? "over 64 MiB" : strerror(rc));
                goto done;
            }
            text = in.buf;
            n = in.len;
        }
        if (row_from_json_object(text, n, &fixed, err, sizeof err) != 0) {
            rc = qctl_usage(c, "--row: %s; give the fixed row as one JSON object", err);
            goto done;
        }
        r.fixed = fixed.data;
        r.fixed_len = fixed.size;
    }
    if ((rc = qctl_open(c, OPEN_WRITE)))
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
