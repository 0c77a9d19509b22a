/* qctl_staging.c: the staging side of the line (staging.h): the models of
 * the pipeline the engine runs (kept in the store; schema, and schema diff
 * against the warehouse's tables), and the batches
 * of staged rows that qload loads (batches: list, show, seal, release,
 * retry, fail, prune). Output gathered inside a transaction goes into a
 * Strbuf first (views die with the transaction) and is printed after. */
#include "qctl.h"

#include "json.h"
#include "model.h"
#include "pgschema.h"
#include "pipeline.h"
#include "pl.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- models */

/* A model's name: a letter first, at most 127 bytes. */
int qctl_arg_model(const Ctx *c, const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 127 || !((m[0] >= 'a' && m[0] <= 'z') || (m[0] >= 'A' && m[0] <= 'Z')))
        return qctl_usage(c, "invalid model name '%s': a model's name starts with a letter and has "
                             "at most 127 bytes (see 'qctl schema')", m);
    return CLI_OK;
}

static int arg_batch(const Ctx *c, const char *s, uint64_t *id)
{
    if (cli_parse_u64(s, 1, UINT64_MAX, id))
        return qctl_usage(c, "batch id '%s' is not a whole number from 1", s);
    return CLI_OK;
}

void qctl_row_json(Strbuf *b, const void *mp, size_t n)
{
    if (!mp || !n || row_to_json(mp, n, b) != 0)
        sb_adds(b, "null");
}

void qctl_opt_u64_json(Strbuf *b, const char *name, uint64_t v)
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
        if ((rc = qctl_open(c, OPEN_READ)))
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
    if (f->from) {
        sb_adds(b, " from ");
        sb_add_json_string(b, f->from, strlen(f->from));
    }
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
        sb_addf(b, " format %s", model_format_name(f->format));
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
               m->nkey ? b.buf : "none", model_drift_name(m->drift));
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
                cli_table_add(&t, "%s", model_type_name(f->type));
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

int qctl_schema(Ctx *c)
{
    Pipeline *p;
    Strbuf b;
    int ddl = qctl_opt(c, "ddl") != NULL, rc;

    if (ddl && c->json)
        return qctl_usage(c, "--json and --ddl each choose the output; give one of them");
    if ((rc = models_read(c, qctl_opt(c, "pipeline"), &p)))
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

/* schema diff: the models against the warehouse's tables (pgschema.h). */
int qctl_schema_diff(Ctx *c)
{
    const char *target = qctl_opt(c, "target"), *model = qctl_opt(c, "model"), *env;
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", "qctl", NULL, NULL};
    SchemaDiff d = {0};
    Pipeline *p = NULL;
    PGconn *pg = NULL;
    char err[800];
    int rc;

    if (!target)
        target = (env = getenv("PICKLINE_TARGET")) && *env ? env : NULL;
    if (!target || !*target)
        return qctl_usage(c, "no target: pass --target DSN (a libpq conninfo or URI) or set "
                             "$PICKLINE_TARGET");
    if (model && (rc = qctl_arg_model(c, model)))
        return rc;
    if ((rc = models_read(c, qctl_opt(c, "pipeline"), &p)))
        return rc;
    if (model && !models_find(p->models, model)) {
        rc = cli_errorf("model '%s' is not declared in the pipeline; see 'qctl schema'", model);
        goto out;
    }
    vals[2] = target;
    pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(pg);
        rc = cli_errorf("cannot connect to the target: %.*s; check --target (or $PICKLINE_TARGET)",
                        (int)strcspn(m ? m : "", "\n"), m ? m : "");
        goto out;
    }
    if (schema_diff(pg, p->models, model, &d, err, sizeof err) != 0) {
        rc = cli_errorf("%s", err);
        goto out;
    }
    if (c->json) {
        Strbuf b = SB_INIT;
        schema_diff_json(&d, &b);
        fwrite(b.buf, 1, b.len, stdout);
        putchar('\n');
        sb_free(&b);
    } else {
        schema_diff_print(&d, stdout);
    }
    rc = CLI_OK;
out:
    schema_diff_free(&d);
    if (pg)
        PQfinish(pg);
    pipeline_free(p);
    return rc;
}

/* ---------------------------------------------------------------- batches */

static void batch_members(Strbuf *b, const BatchRec *r)
{
    sb_addf(b, "\"id\":%" PRIu64 ",\"model\":", r->id);
    sb_add_json_string(b, r->model, strnlen(r->model, sizeof r->model));
    sb_addf(b, ",\"state\":\"%s\",\"rows\":%" PRIu64 ",\"removed\":%" PRIu64 ",\"rejects\":%"
               PRIu64 ",\"created_ms\":%" PRIu64,
            batch_state_name(r->state), r->rows, r->removed, r->rejects, r->created_ms);
    qctl_opt_u64_json(b, "sealed_ms", r->sealed_ms);
    qctl_opt_u64_json(b, "loaded_ms", r->loaded_ms);
    sb_addf(b, ",\"attempts\":%" PRIu32 ",\"error\":", r->attempts);
    if (r->error[0])
        sb_add_json_string(b, r->error, strnlen(r->error, sizeof r->error));
    else
        sb_adds(b, "null");
    if (r->version)
        sb_addf(b, ",\"model_version\":\"%016" PRIx64 "\"", r->version);
    else
        sb_adds(b, ",\"model_version\":null");
}

static void batch_json(Strbuf *b, const BatchRec *r)
{
    sb_adds(b, "{");
    batch_members(b, r);
    sb_adds(b, "}");
}

/* print_batches writes n batches, at(arg, i), as a JSON array on stdout,
 * one a line. */
static void print_batches(size_t n, const BatchRec *(*at)(const void *arg, size_t i),
                          const void *arg)
{
    Strbuf b;
    sb_init(&b);
    sb_adds(&b, "[");
    for (size_t i = 0; i < n; i++) {
        sb_adds(&b, i ? ",\n" : "\n");
        batch_json(&b, at(arg, i));
    }
    sb_adds(&b, n ? "\n]\n" : "]\n");
    fwrite(b.buf, 1, b.len, stdout);
    sb_free(&b);
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

static const BatchRec *blist_at(const void *arg, size_t i)
{
    const BatchList *l = arg;
    return &l->v[l->limit ? (l->start + i) % l->limit : i];
}

static const char *const batch_head[] = {"ID", "MODEL", "STATE", "ROWS", "REJECTS", "AGE",
                                         "ERROR"};

int qctl_batches(Ctx *c)
{
    const char *sname = qctl_opt(c, "state");
    BatchList l = {.state = -1, .model = qctl_opt(c, "model")};
    CliTable t = {.ncol = 7, .head = batch_head, .align = "rllrrrl"};
    uint64_t limit;
    int rc;

    if ((rc = qctl_flag_u64(c, "limit", 0, 1000000000, 20, &limit)) ||
        (l.model && (rc = qctl_arg_model(c, l.model))))
        return rc;
    if (sname && strcmp(sname, "all") != 0 && (l.state = batch_state_parse(sname)) < 0)
        return qctl_usage(c, "--state: unknown state '%s'; use open, sealed, held, loading, "
                             "loaded, failed or all", sname);
    l.limit = (size_t)limit;
    if ((rc = qctl_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_read(c->s, blist_fn, &l)) != 0) {
        rc = cli_errorf("cannot list the batches of '%s': %s", c->dir, pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        print_batches(l.n, blist_at, &l);
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
        qctl_row_json(&s->out, mp, len);
        sb_adds(&s->out, "}");
    } else {
        sb_addf(&s->out, "%6" PRIu32 "  ", seq);
        qctl_row_json(&s->out, mp, len);
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

int qctl_batches_show(Ctx *c)
{
    BatchShow s = {.json = c->json};
    const BatchRec *b = &s.b;
    uint64_t rows, now;
    int rc;

    if ((rc = arg_batch(c, c->pos[0], &s.id)) ||
        (rc = qctl_flag_u64(c, "rows", 0, UINT32_MAX, 10, &rows)))
        return rc;
    s.max = (uint32_t)rows;
    sb_init(&s.out);
    if ((rc = qctl_open(c, OPEN_READ)))
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
    const char *reason = op == BOP_FAIL ? qctl_opt(c, "reason") : NULL;
    const char *was;
    int rc;

    if ((rc = arg_batch(c, c->pos[0], &o.id)) ||
        (reason && (rc = qctl_arg_text(c, "reason", reason, 500))))
        return rc;
    o.reason = reason ? reason : DEFAULT_FAIL_REASON;
    if ((rc = qctl_open(c, OPEN_WRITE)))
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
            return cli_errorf("batch %" PRIu64 " is %s; only a held batch can be released", o.id,
                              was);
        if (op == BOP_RETRY)
            return cli_errorf("batch %" PRIu64 " is %s; only a failed batch can be retried", o.id,
                              was);
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

int qctl_batches_release(Ctx *c)
{
    return batchop_run(c, BOP_RELEASE);
}

int qctl_batches_retry(Ctx *c)
{
    return batchop_run(c, BOP_RETRY);
}

int qctl_batches_fail(Ctx *c)
{
    return batchop_run(c, BOP_FAIL);
}

/* SealOp: the open batches (of one model or all) sealed now. */
typedef struct SealOp {
    const char *model;
    BatchRec *v;
    size_t n, cap;
} SealOp;

static const BatchRec *seal_at(const void *arg, size_t i)
{
    return &((const SealOp *)arg)->v[i];
}

static int seal_collect(const BatchRec *b, void *arg)
{
    SealOp *o = arg;
    if (b->rows == 0 || (o->model && strcmp(b->model, o->model) != 0))
        return 0;
    o->v = cli_grow(o->v, o->n, &o->cap, sizeof *o->v, 16);
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

int qctl_batches_seal(Ctx *c)
{
    SealOp o = {.model = c->npos ? c->pos[0] : NULL};
    int all = qctl_opt(c, "all") != NULL, rc;

    if (all == (o.model != NULL))
        return qctl_usage(c, "give a MODEL to seal its open batch, or --all for every model's");
    if (o.model && (rc = qctl_arg_model(c, o.model)))
        return rc;
    if ((rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, seal_fn, &o)) != 0) {
        rc = cli_errorf("cannot seal %s%s%s: %s", o.model ? "the open batch of model '" :
                        "the open batches", o.model ? o.model : "", o.model ? "'" : "",
                        pl_strerror(rc));
        goto done;
    }
    if (c->json) {
        print_batches(o.n, seal_at, &o);
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
    o->ids = cli_grow(o->ids, o->n, &o->cap, sizeof *o->ids, 64);
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

int qctl_batches_prune(Ctx *c)
{
    uint64_t older_ms;
    PruneOp o = {0};
    int rc;

    if ((rc = qctl_flag_ms(c, "older-than", 0, UINT64_MAX / 2, 7ull * 86400 * 1000, &older_ms)))
        return rc;
    if ((rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    uint64_t now = pl_now_ms();
    o.cutoff_ms = now > older_ms ? now - older_ms : 1;
    if ((rc = store_read(c->s, prune_list, &o)) != 0) {
        rc = cli_errorf("cannot list the loaded batches: %s", pl_strerror(rc));
        goto done;
    }
    while (o.done < o.n) {
        if ((rc = store_run(c->s, prune_fn, &o)) != 0) {
            rc = cli_errorf("pruned %zu of %zu loaded batches, then: %s", o.done, o.n,
                            pl_strerror(rc));
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
