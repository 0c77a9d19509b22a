/* pg_reconcile.c: pg_extract's reconciliation (pg_reconcile.h): a pass
 * over the source's keys, range by range, against the copy's.
 *
 * The pass is a small state machine on the loop. Each step is one query,
 * on the source (through pg_extract, which runs it when its link is free)
 * or on the copy (r->tgt), and its end moves the pass on:
 *
 *   TYPES      source: the key columns' types (for the typed check)
 *   SRC_RANGE  source: count, hash and last key of the next `range` keys
 *   TGT_SUM    copy: count and hash of the same range
 *   TGT_KEYS   copy: a page of the range's keys (when the range differed)
 *   SRC_CHECK  source: which of the page's keys it lacks
 *   COMMIT     their tombstones commit (pg_extract's gone)
 *   PAUSE      `pause` seconds before the next range
 *   IDLE       until the next pass
 *
 * Anything that fails (a query, either connection) ends the pass with a
 * log line; the next one starts later, from the first key again. */
#include "pg_reconcile.h"

#include "common.h"
#include "engine.h"
#include "pl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INTERVAL_DEFAULT 3600.0
#define RANGE_DEFAULT 10000
#define PAUSE_DEFAULT 0.1
#define PAGE 1000               /* the copy's keys read at a time, and checked in one query */
#define FIRST_DELAY 1.0         /* the first pass: this long after the cursor is there */
#define RETRY_MAX 60.0          /* a failed pass: again after min(interval, this) */

enum { R_IDLE, R_TYPES, R_SRC_RANGE, R_TGT_SUM, R_TGT_KEYS, R_SRC_CHECK, R_COMMIT, R_PAUSE };

/* The session of the copy: the same text of values as the source's. */
#define TGT_SETUP "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = iso_8601; " \
                  "SET extra_float_digits = 3"

static void step(Reconcile *r);

static double now_s(void)
{
    return (double)pl_mono_ns() / 1e9;
}

/* ------------------------------------------------------------ the SQL */

/* add_keys appends the key columns: "a", "b" (prefix before each, and
 * suffix after each, when not NULL). */
static void add_keys(const Reconcile *r, Strbuf *b, const char *prefix, const char *suffix)
{
    for (size_t i = 0; i < r->m->nkey; i++) {
        if (i)
            sb_adds(b, ", ");
        if (prefix)
            sb_adds(b, prefix);
        model_sql_ident(b, r->m->fields[r->m->key[i]].name);
        if (suffix)
            sb_adds(b, suffix);
    }
}

/* add_hash appends the hash of a key: the first 64 bits of the md5 of its
 * row's text, as a bigint (summed: a numeric, no overflow). */
static void add_hash(const Reconcile *r, Strbuf *b)
{
    sb_adds(b, "('x' || substr(md5(ROW(");
    add_keys(r, b, NULL, NULL);
    sb_adds(b, ")::text), 1, 16))::bit(64)::bigint");
}

/* add_cmp appends " AND (keys) OP ($from, ...)" and counts the params. */
static void add_cmp(const Reconcile *r, Strbuf *b, const char *op, int *np)
{
    sb_adds(b, " AND (");
    add_keys(r, b, NULL, NULL);
    sb_addf(b, ") %s (", op);
    for (size_t i = 0; i < r->m->nkey; i++)
        sb_addf(b, "%s$%d", i ? ", " : "", ++*np);
    sb_adds(b, ")");
}

static void vals_of(const Strbuf *key, size_t nkey, const char **vals, int *n)
{
    for (size_t i = 0; i < nkey; i++)
        vals[(*n)++] = key[i].buf ? key[i].buf : "";
}

/* array_add appends s as an element of a PostgreSQL array literal. */
static void array_add(Strbuf *b, const char *s, size_t n, int first)
{
    sb_adds(b, first ? "\"" : ",\"");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            sb_add(b, "\\", 1);
        sb_add(b, &s[i], 1);
    }
    sb_adds(b, "\"");
}

/* ------------------------------------------------------------ the pass */

static void schedule(Reconcile *r, double after)
{
    ev_timer_stop(r->stage->loop, &r->timer);
    if (r->stopped)
        return;
    ev_timer_set(&r->timer, after, 0);
    ev_timer_start(r->stage->loop, &r->timer);
}

static void pass_fail(Reconcile *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pass_fail(Reconcile *r, const char *fmt, ...)
{
    char why[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    double again = r->interval < RETRY_MAX ? r->interval : RETRY_MAX;
    stage_log(r->stage, PL_LOG_WARN, 0, "reconciliation with %s stopped: %s; %llu rows found "
              "gone so far; trying again in %.0f s", r->tgt_name, why,
              (unsigned long long)r->gone, again);
    r->state = R_IDLE;
    r->wants_source = 0;
    schedule(r, again);
}

static void pass_begin(Reconcile *r)
{
    r->keys_seen = r->ranges = r->differed = r->checked = r->gone = 0;
    r->have_lo = r->have_hi = r->have_after = 0;
    r->t0 = now_s();
    r->state = R_TYPES;
    for (size_t i = 0; i < r->m->nkey; i++)
        sb_reset(&r->types[i]);
    stage_log(r->stage, PL_LOG_DEBUG, 0, "reconciliation with %s: a pass begins", r->tgt_name);
    step(r);
}

static void pass_end(Reconcile *r)
{
    stage_log(r->stage, r->gone ? PL_LOG_INFO : PL_LOG_DEBUG, 0,
              "reconciled %s with %s in %.1f s: %llu source keys in %llu ranges of %llu, %llu "
              "differed, %llu keys of the copy checked, %llu gone from the source (deletes "
              "staged); the next pass in %.0f s", r->src_table, r->tgt_name, now_s() - r->t0,
              (unsigned long long)r->keys_seen, (unsigned long long)r->ranges, r->range,
              (unsigned long long)r->differed, (unsigned long long)r->checked,
              (unsigned long long)r->gone, r->interval);
    r->state = R_IDLE;
    schedule(r, r->interval);
}

/* range_done moves to the next range (after the pause), or ends the pass. */
static void range_done(Reconcile *r)
{
    if (!r->have_hi) {
        pass_end(r);
        return;
    }
    for (size_t i = 0; i < r->m->nkey; i++) {
        sb_reset(&r->lo[i]);
        sb_add(&r->lo[i], r->hi[i].buf, r->hi[i].len);
    }
    r->have_lo = 1;
    r->state = R_PAUSE;
    schedule(r, r->pause);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Reconcile *r = container_of(w, Reconcile, timer);
    if (r->stopped)
        return;
    if (r->state == R_PAUSE) {
        r->state = R_SRC_RANGE;
        step(r);
    } else if (r->state == R_IDLE) {
        pass_begin(r);
    }
}

/* send_target sends the copy's query of the current state (its link is
 * ready). */
static void send_target(Reconcile *r)
{
    const char *vals[130];
    int n = 0, np = 0;
    Strbuf *b = &r->sql;
    sb_reset(b);
    if (r->state == R_TGT_SUM) {
        sb_adds(b, "SELECT count(*), coalesce(sum(");
        add_hash(r, b);
        sb_addf(b, "), 0)::text FROM %s WHERE true", r->tgt_table);
        if (r->have_lo) {
            add_cmp(r, b, ">", &np);
            vals_of(r->lo, r->m->nkey, vals, &n);
        }
    } else {
        /* The texts are named k0, k1...: an output column named as a key
         * column would be what ORDER BY sorts by (the text: '10' < '9'),
         * and the page would not be the range's next keys. */
        sb_adds(b, "SELECT ");
        for (size_t i = 0; i < r->m->nkey; i++) {
            if (i)
                sb_adds(b, ", ");
            model_sql_ident(b, r->m->fields[r->m->key[i]].name);
            sb_addf(b, "::text AS k%zu", i);
        }
        sb_addf(b, " FROM %s WHERE true", r->tgt_table);
        if (r->have_after) {
            add_cmp(r, b, ">", &np);
            vals_of(r->after, r->m->nkey, vals, &n);
        }
    }
    if (r->have_hi) {
        add_cmp(r, b, "<=", &np);
        vals_of(r->hi, r->m->nkey, vals, &n);
    }
    if (r->state == R_TGT_KEYS) {
        sb_adds(b, " ORDER BY ");
        add_keys(r, b, NULL, NULL);
        sb_addf(b, " LIMIT %d", PAGE);
        r->npage = 0;
    }
    pglink_query(&r->tgt, b->buf, n, vals);
}

/* step starts what the state needs: a source query (asked of pg_extract),
 * or the copy's (now, or once its link is up). */
static void step(Reconcile *r)
{
    if (r->stopped)
        return;
    switch (r->state) {
    case R_TYPES:
    case R_SRC_RANGE:
    case R_SRC_CHECK:
        r->wants_source = 1;
        r->ops->wake(r->arg);
        return;
    case R_TGT_SUM:
    case R_TGT_KEYS:
        if (r->tgt.state == PGLINK_READY)
            send_target(r);
        else
            pglink_start(&r->tgt); /* its up sends it */
        return;
    default:
        return;
    }
}

void reconcile_next(Reconcile *r)
{
    const char *vals[130];
    int n = 0;
    Strbuf *b = &r->sql;
    if (!r->wants_source || r->stopped)
        return;
    r->wants_source = 0;
    sb_reset(b);
    if (r->state == R_TYPES) {
        sb_adds(b, "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute"
                   " a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped");
        vals[n++] = r->src_table;
    } else if (r->state == R_SRC_RANGE) {
        sb_adds(b, "WITH r AS (SELECT ");
        add_keys(r, b, NULL, NULL);
        sb_addf(b, " FROM %s WHERE true", r->src_table);
        if (r->have_lo) {
            int np = 0;
            add_cmp(r, b, ">", &np);
            vals_of(r->lo, r->m->nkey, vals, &n);
        }
        if (r->where)
            sb_addf(b, " AND (%s)", r->where);
        sb_adds(b, " ORDER BY ");
        add_keys(r, b, NULL, NULL);
        sb_addf(b, " LIMIT %llu) SELECT count(*), coalesce(sum(", r->range);
        add_hash(r, b);
        sb_adds(b, "), 0)::text");
        for (size_t i = 0; i < r->m->nkey; i++) {
            sb_adds(b, ", (array_agg(");
            model_sql_ident(b, r->m->fields[r->m->key[i]].name);
            sb_adds(b, "::text ORDER BY ");
            add_keys(r, b, NULL, " DESC");
            sb_adds(b, "))[1]");
        }
        sb_adds(b, " FROM r");
        r->n_src = 0;
        sb_reset(&r->sum_src);
    } else if (r->state == R_SRC_CHECK) {
        /* Which of the page's keys the source lacks, typed, unfiltered. */
        sb_adds(b, "SELECT v.i FROM unnest($1::int[]");
        for (size_t i = 0; i < r->m->nkey; i++)
            sb_addf(b, ", $%zu::text[]", i + 2);
        sb_adds(b, ") AS v(i");
        for (size_t i = 0; i < r->m->nkey; i++)
            sb_addf(b, ", c%zu", i);
        sb_addf(b, ") WHERE NOT EXISTS (SELECT 1 FROM %s t WHERE ", r->src_table);
        for (size_t i = 0; i < r->m->nkey; i++) {
            if (i)
                sb_adds(b, " AND ");
            sb_adds(b, "t.");
            model_sql_ident(b, r->m->fields[r->m->key[i]].name);
            sb_addf(b, " = v.c%zu::%s", i, r->types[i].buf);
        }
        sb_adds(b, ") ORDER BY v.i");
        /* the arrays, in r->keys: each a NUL-terminated literal */
        sb_reset(&r->keys);
        size_t off[65];
        off[0] = 0;
        sb_adds(&r->keys, "{");
        for (size_t p = 0; p < r->npage; p++)
            sb_addf(&r->keys, "%s%zu", p ? "," : "", p);
        sb_add(&r->keys, "}", 2); /* with its NUL */
        for (size_t i = 0; i < r->m->nkey; i++) {
            off[i + 1] = r->keys.len;
            sb_adds(&r->keys, "{");
            for (size_t p = 0; p < r->npage; p++) {
                const Strbuf *k = &r->after[r->m->nkey + p * r->m->nkey + i];
                array_add(&r->keys, k->buf ? k->buf : "", k->len, p == 0);
            }
            sb_add(&r->keys, "}", 2);
        }
        for (size_t i = 0; i <= r->m->nkey; i++)
            vals[n++] = r->keys.buf + off[i];
    }
    r->ops->source_query(r->arg, b->buf, n, vals);
}

void reconcile_source_row(Reconcile *r, const PGresult *res)
{
    if (r->state == R_TYPES) {
        const char *col = PQgetvalue(res, 0, 0);
        for (size_t i = 0; i < r->m->nkey; i++)
            if (!strcmp(col, r->m->fields[r->m->key[i]].name)) {
                sb_reset(&r->types[i]);
                sb_adds(&r->types[i], PQgetvalue(res, 0, 1));
            }
    } else if (r->state == R_SRC_RANGE) {
        r->n_src = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        sb_adds(&r->sum_src, PQgetvalue(res, 0, 1));
        for (size_t i = 0; i < r->m->nkey; i++) {
            sb_reset(&r->hi[i]);
            sb_adds(&r->hi[i], PQgetvalue(res, 0, (int)i + 2));
        }
    } else if (r->state == R_SRC_CHECK) {
        /* a key of the page the source lacks: mark it */
        size_t p = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (p < r->npage)
            r->mark[p] = 1;
    }
}

void reconcile_source_over(Reconcile *r, const char *error)
{
    if (error) {
        pass_fail(r, "a query on the source failed: %s", error);
        return;
    }
    if (r->state == R_TYPES) {
        for (size_t i = 0; i < r->m->nkey; i++)
            if (!r->types[i].len) {
                pass_fail(r, "the source table %s has no key column %s", r->src_table,
                          r->m->fields[r->m->key[i]].name);
                return;
            }
        r->state = R_SRC_RANGE;
    } else if (r->state == R_SRC_RANGE) {
        r->keys_seen += r->n_src;
        r->ranges++;
        r->have_hi = r->n_src >= r->range;
        r->state = R_TGT_SUM;
    } else if (r->state == R_SRC_CHECK) {
        size_t nk = r->m->nkey, ng = 0;
        Strbuf *page = r->after + nk;
        r->checked += r->npage;
        /* Gather the gone keys at the front of the page. */
        for (size_t p = 0; p < r->npage; p++) {
            if (!r->mark[p])
                continue;
            if (ng != p)
                for (size_t i = 0; i < nk; i++) {
                    sb_reset(&page[ng * nk + i]);
                    sb_add(&page[ng * nk + i], page[p * nk + i].buf, page[p * nk + i].len);
                }
            ng++;
        }
        if (ng) {
            r->gone += ng;
            r->state = R_COMMIT;
            r->committing = 1;
            r->ops->gone(r->arg, page, ng);
            return;
        }
        reconcile_gone_done(r, 0);
        return;
    }
    step(r);
}

void reconcile_gone_done(Reconcile *r, int rc)
{
    if (r->committing) {
        r->committing = 0;
        if (rc) {
            pass_fail(r, "the commit of its deletes failed: %s", pl_strerror(rc));
            return;
        }
    }
    if (r->stopped)
        return;
    if (r->npage == PAGE) {
        r->state = R_TGT_KEYS; /* the next page of the range, after r->after */
        step(r);
    } else {
        range_done(r);
    }
}

void reconcile_source_lost(Reconcile *r)
{
    if (r->state == R_TYPES || r->state == R_SRC_RANGE || r->state == R_SRC_CHECK)
        pass_fail(r, "the source connection went down");
}

/* ------------------------------------------------------------ the copy's link */

static void tgt_up(PgLink *l)
{
    Reconcile *r = l->arg;
    if (l->again)
        stage_log(r->stage, PL_LOG_INFO, 0, "connected to %s again", r->tgt_name);
    if (r->state == R_TGT_SUM || r->state == R_TGT_KEYS)
        send_target(r);
}

static void tgt_row(PgLink *l, const PGresult *res)
{
    Reconcile *r = l->arg;
    size_t nk = r->m->nkey;
    if (r->state == R_TGT_SUM) {
        r->n_tgt = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        sb_reset(&r->sum_tgt);
        sb_adds(&r->sum_tgt, PQgetvalue(res, 0, 1));
    } else if (r->state == R_TGT_KEYS && r->npage < PAGE) {
        Strbuf *k = r->after + nk + r->npage * nk;
        for (size_t i = 0; i < nk; i++) {
            sb_reset(&k[i]);
            sb_add(&k[i], PQgetvalue(res, 0, (int)i), (size_t)PQgetlength(res, 0, (int)i));
        }
        r->npage++;
    }
}

static void tgt_over(PgLink *l, const char *error)
{
    Reconcile *r = l->arg;
    size_t nk = r->m->nkey;
    if (error) {
        pass_fail(r, "a query on %s failed: %s", r->tgt_name, error);
        return;
    }
    if (r->state == R_TGT_SUM) {
        if (r->n_tgt == r->n_src && !strcmp(r->sum_tgt.buf ? r->sum_tgt.buf : "",
                                            r->sum_src.buf ? r->sum_src.buf : "")) {
            range_done(r);
            return;
        }
        r->differed++;
        /* the copy's keys of the range, from its start */
        for (size_t i = 0; i < nk; i++) {
            sb_reset(&r->after[i]);
            sb_add(&r->after[i], r->lo[i].buf, r->lo[i].len);
        }
        r->have_after = r->have_lo;
        r->state = R_TGT_KEYS;
        step(r);
    } else if (r->state == R_TGT_KEYS) {
        if (!r->npage) {
            range_done(r);
            return;
        }
        /* the next page starts after this one's last key */
        for (size_t i = 0; i < nk; i++) {
            const Strbuf *last = &r->after[nk + (r->npage - 1) * nk + i];
            sb_reset(&r->after[i]);
            sb_add(&r->after[i], last->buf, last->len);
        }
        r->have_after = 1;
        memset(r->mark, 0, PAGE);
        r->state = R_SRC_CHECK;
        step(r);
    }
}

static void tgt_down(PgLink *l, const char *why)
{
    Reconcile *r = l->arg;
    if (r->state == R_TGT_SUM || r->state == R_TGT_KEYS)
        pass_fail(r, "%s went down: %s", r->tgt_name, why);
}

static const PgLinkOps tgt_ops = {.up = tgt_up, .row = tgt_row, .over = tgt_over,
                                  .down = tgt_down};

/* ------------------------------------------------------------ setup */

static int conf_fail(char *err, size_t errlen, const Stage *s, const char *msg)
{
    snprintf(err, errlen, "%s:%d: stage '%s': %s", engine_pipeline(s->engine)->path,
             s->conf->line, s->conf->name, msg);
    return PL_EINVAL;
}

int reconcile_conf(Reconcile *r, Stage *s, const Model *m, const char *src_table,
                   const char *where, const ReconcileOps *ops, void *arg, char *err,
                   size_t errlen)
{
    const char *dsn = NULL, *table = NULL;
    int rc;
    memset(r, 0, sizeof *r);
    r->stage = s;
    r->m = m;
    r->ops = ops;
    r->arg = arg;
    r->interval = INTERVAL_DEFAULT;
    r->range = RANGE_DEFAULT;
    r->pause = PAUSE_DEFAULT;
    if ((rc = stage_conf_str(s, "reconcile_dsn", &dsn, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "reconcile_table", &table, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "reconcile_interval", &r->interval, err, errlen)) != 0 ||
        (rc = stage_conf_uint(s, "reconcile_range", &r->range, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "reconcile_pause", &r->pause, err, errlen)) != 0)
        return rc;
    if (!dsn) {
        const char *keys[] = {"reconcile_table", "reconcile_interval", "reconcile_range",
                              "reconcile_pause"};
        for (size_t i = 0; i < 4; i++)
            if (conf_get(s->conf->node, keys[i])) {
                char msg[200];
                snprintf(msg, sizeof msg, "%s: needs reconcile_dsn: too (the copy to compare "
                         "the source with); add it or remove %s:", keys[i], keys[i]);
                return conf_fail(err, errlen, s, msg);
            }
        return 0;
    }
    if (m->nkey > 64)
        return conf_fail(err, errlen, s, "reconcile_dsn: the model's key has more than 64 "
                         "columns");
    if (pipeline_secret_is_ref(dsn)) {
        char why[300], msg[400];
        if (pipeline_secret(dsn, &r->conninfo, why, sizeof why) != 0) {
            snprintf(msg, sizeof msg, "reconcile_dsn: %s (a libpq conninfo like \"host=edge "
                     "dbname=app\")", why);
            return conf_fail(err, errlen, s, msg);
        }
        /* checked as stage_pg_dsn does, without libpq's message: it
         * quotes the string, which is a secret */
        char *pmsg = NULL;
        PQconninfoOption *opts = PQconninfoParse(r->conninfo, &pmsg);
        if (!opts) {
            if (pmsg)
                PQfreemem(pmsg);
            pipeline_secret_free(r->conninfo);
            r->conninfo = NULL;
            snprintf(msg, sizeof msg, "reconcile_dsn: %.200s is not a valid libpq connection "
                     "string (libpq's message is not shown: it may quote a password); write "
                     "keyword=value pairs or a postgresql:// URI", dsn);
            return conf_fail(err, errlen, s, msg);
        }
        PQconninfoFree(opts);
    } else {
        r->conninfo = xstrdup(dsn);
    }
    r->on = 1;
    r->src_table = xstrdup(src_table);
    r->where = where ? xstrdup(where) : NULL;
    Strbuf t = SB_INIT;
    if (table && strchr(table, '.')) {
        const char *dot = strchr(table, '.');
        char *schema = xstrndup(table, (size_t)(dot - table));
        model_sql_ident(&t, schema);
        free(schema);
        sb_adds(&t, ".");
        model_sql_ident(&t, dot + 1);
    } else {
        model_sql_ident(&t, table ? table : m->table);
    }
    r->tgt_table = xstrdup(t.buf);
    sb_free(&t);
    snprintf(r->tgt_name, sizeof r->tgt_name, "the copy %s", table ? table : m->table);
    size_t nk = m->nkey;
    r->lo = xcalloc(nk, sizeof *r->lo);
    r->hi = xcalloc(nk, sizeof *r->hi);
    r->types = xcalloc(nk, sizeof *r->types);
    /* after: the next page's start (nk), then the page (PAGE keys) */
    r->after = xcalloc(nk + (size_t)PAGE * nk, sizeof *r->after);
    for (size_t i = 0; i < nk; i++) {
        sb_init(&r->lo[i]);
        sb_init(&r->hi[i]);
        sb_init(&r->types[i]);
    }
    for (size_t i = 0; i < nk + (size_t)PAGE * nk; i++)
        sb_init(&r->after[i]);
    sb_init(&r->sum_src);
    sb_init(&r->sum_tgt);
    sb_init(&r->sql);
    sb_init(&r->keys);
    r->mark = xcalloc(PAGE, 1);
    pglink_init(&r->tgt, s, r->conninfo, TGT_SETUP, r->tgt_name,
                "the reconciliation waits for it", &tgt_ops, r);
    ev_timer_init(&r->timer, on_timer, 0, 0);
    return 0;
}

void reconcile_can_start(Reconcile *r)
{
    if (!r->on || r->can_start || r->stopped)
        return;
    r->can_start = 1;
    stage_log(r->stage, PL_LOG_INFO, 0, "reconciling %s with %s every %.0f s, %llu keys a range",
              r->src_table, r->tgt_name, r->interval, r->range);
    schedule(r, r->interval < FIRST_DELAY ? r->interval : FIRST_DELAY);
}

void reconcile_stop(Reconcile *r)
{
    if (!r->on)
        return;
    r->stopped = 1;
    r->wants_source = 0;
    ev_timer_stop(r->stage->loop, &r->timer);
    pglink_stop(&r->tgt, 0);
}

int reconcile_busy(const Reconcile *r)
{
    return r->on && r->committing;
}

void reconcile_free(Reconcile *r)
{
    if (!r->on)
        return;
    size_t nk = r->m->nkey;
    for (size_t i = 0; i < nk; i++) {
        sb_free(&r->lo[i]);
        sb_free(&r->hi[i]);
        sb_free(&r->types[i]);
    }
    for (size_t i = 0; i < nk + (size_t)PAGE * nk; i++)
        sb_free(&r->after[i]);
    free(r->lo);
    free(r->hi);
    free(r->types);
    free(r->after);
    sb_free(&r->sum_src);
    sb_free(&r->sum_tgt);
    sb_free(&r->sql);
    sb_free(&r->keys);
    free(r->mark);
    pipeline_secret_free(r->conninfo);
    free(r->src_table);
    free(r->tgt_table);
    free(r->where);
    r->on = 0;
}
