/* observe.c: the snapshot of the store read on a thread of its own, the
 * readiness verdict, the throughput history, and GET /health and /ready
 * (see observe.h).
 *
 * Threads: the reader thread sleeps until the loop asks for a snapshot,
 * reads one in a short read transaction (a cursor pass over the batches
 * and the rejects: on the loop it could block it for as long as they are
 * many), and hands it back through `fresh` and an ev_async. The loop owns
 * `snap` and the list of exchanges waiting for it. */
#include "observe.h"

#include "engine_int.h"
#include "json.h"
#include "pl.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

typedef struct Waiter {
    Exchange *x;
    ObserveFn fn;
    struct Waiter *next;
} Waiter;

struct Observe {
    Engine *e;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int want, quit;         /* under mu */
    Snapshot *fresh;        /* under mu: read by the thread, not yet taken by the loop */
    ev_async arrived;
    /* the loop's */
    Snapshot *snap;
    Waiter *waiting;
    int asked;
    ObsHistory hist;
    unsigned ticks;
};

/* ---------------------------------------------------------------- reading */

static void snap_free(Snapshot *s)
{
    if (!s)
        return;
    free(s->queues);
    free(s->models);
    free(s->reasons);
    free(s);
}

typedef struct Reader {
    Snapshot *s;
    size_t qcap, mcap, rcap;
} Reader;

static int read_queue(const QueueStats *q, void *arg)
{
    Reader *r = arg;
    Snapshot *s = r->s;
    if (s->nqueues == r->qcap) {
        r->qcap = r->qcap ? r->qcap * 2 : 16;
        s->queues = xrealloc(s->queues, r->qcap * sizeof *s->queues);
    }
    s->queues[s->nqueues++] = *q;
    return 0;
}

static ObsModel *model_of(Reader *r, const char *name)
{
    Snapshot *s = r->s;
    for (size_t i = 0; i < s->nmodels; i++)
        if (strcmp(s->models[i].name, name) == 0)
            return &s->models[i];
    if (s->nmodels == r->mcap) {
        r->mcap = r->mcap ? r->mcap * 2 : 8;
        s->models = xrealloc(s->models, r->mcap * sizeof *s->models);
    }
    ObsModel *m = &s->models[s->nmodels++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    return m;
}

static int read_batch(const BatchRec *b, void *arg)
{
    Reader *r = arg;
    if (b->state < 0 || b->state >= OBSERVE_NBATCH)
        return 0;
    ObsModel *m = model_of(r, b->model);
    m->batches[b->state]++;
    m->rows[b->state] += b->rows > b->removed ? b->rows - b->removed : 0;
    if ((b->state == BATCH_SEALED || b->state == BATCH_LOADING) && b->sealed_ms &&
        (!m->waiting_ms || b->sealed_ms < m->waiting_ms)) {
        m->waiting_ms = b->sealed_ms;
        m->waiting_id = b->id;
    }
    return 0;
}

static void add_reason(Reader *r, const char *model, const char *field, size_t fl,
                       const char *rule, size_t rl)
{
    Snapshot *s = r->s;
    char f[96], ru[32];
    snprintf(f, sizeof f, "%.*s", (int)fl, field);
    snprintf(ru, sizeof ru, "%.*s", (int)rl, rule);
    for (size_t i = 0; i < s->nreasons; i++) {
        ObsReason *o = &s->reasons[i];
        if (!strcmp(o->model, model) && !strcmp(o->field, f) && !strcmp(o->rule, ru)) {
            o->n++;
            return;
        }
    }
    if (s->nreasons >= OBSERVE_REASONS_MAX) { /* counted under the last one, "other" */
        ObsReason *o = &s->reasons[s->nreasons - 1];
        snprintf(o->model, sizeof o->model, "other");
        snprintf(o->field, sizeof o->field, "other");
        snprintf(o->rule, sizeof o->rule, "other");
        o->n++;
        return;
    }
    if (s->nreasons == r->rcap) {
        r->rcap = r->rcap ? r->rcap * 2 : 16;
        s->reasons = xrealloc(s->reasons, r->rcap * sizeof *s->reasons);
    }
    ObsReason *o = &s->reasons[s->nreasons++];
    snprintf(o->model, sizeof o->model, "%s", model);
    snprintf(o->field, sizeof o->field, "%s", f);
    snprintf(o->rule, sizeof o->rule, "%s", ru);
    o->n = 1;
}

/* json_str reads the JSON string (or null, as "") at *p, which the
 * engine wrote: *p moves past it. 0, or -1 when it is neither. */
static int json_str(const char **p, const char *end, const char **s, size_t *n)
{
    const char *q = *p;
    if (end - q >= 4 && !memcmp(q, "null", 4)) {
        *s = "";
        *n = 0;
        *p = q + 4;
        return 0;
    }
    if (q >= end || *q != '"')
        return -1;
    const char *b = ++q;
    while (q < end && *q != '"')
        q += *q == '\\' && q + 1 < end ? 2 : 1;
    if (q >= end)
        return -1;
    *s = b;
    *n = (size_t)(q - b);
    *p = q + 1;
    return 0;
}

/* read_reject counts a reject under each (field, rule) of its errors, a
 * JSON array of {"field":F,"rule":R,"message":M} that staging wrote: a raw
 * `{"field":` cannot occur inside one of its strings (quotes are escaped). */
static int read_reject(const RejectRead *rr, void *arg)
{
    Reader *r = arg;
    const char *p = rr->r.errors, *end = p ? p + rr->r.errors_len : NULL;
    int any = 0;
    r->s->rejects++;
    while (p && p < end) {
        const char *k = memmem(p, (size_t)(end - p), "{\"field\":", 9), *f, *ru;
        size_t fl, rl;
        if (!k)
            break;
        p = k + 9;
        if (json_str(&p, end, &f, &fl) != 0)
            continue;
        if ((size_t)(end - p) < 8 || memcmp(p, ",\"rule\":", 8) != 0)
            continue;
        p += 8;
        if (json_str(&p, end, &ru, &rl) != 0)
            continue;
        add_reason(r, rr->model, f, fl, ru, rl);
        any = 1;
    }
    if (!any)
        add_reason(r, rr->model, "", 0, "unknown", 7);
    return 0;
}

static int read_all(Txn *t, void *arg)
{
    Reader *r = arg;
    int rc;
    if ((rc = queue_list(t, read_queue, r)) != 0 || (rc = batch_each(t, -1, read_batch, r)) != 0)
        return rc;
    return reject_each(t, NULL, read_reject, r);
}

static Snapshot *snap_read(Store *st)
{
    Snapshot *s = xcalloc(1, sizeof *s);
    Reader r = {.s = s};
    s->ms = pl_now_ms();
    s->rc = store_read(st, read_all, &r);
    if (s->rc) {
        s->nqueues = s->nmodels = s->nreasons = 0;
        s->rejects = 0;
    }
    store_info(st, &s->info);
    struct statvfs vfs;
    if (statvfs(store_path(st), &vfs) == 0) {
        s->disk_known = 1;
        s->disk_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        s->disk_size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    }
    s->mono_ns = pl_mono_ns();
    return s;
}

static void *reader_main(void *arg)
{
    Observe *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (!o->want && !o->quit)
            pthread_cond_wait(&o->cv, &o->mu);
        if (o->quit)
            break;
        o->want = 0;
        pthread_mutex_unlock(&o->mu);
        Snapshot *s = snap_read(engine_store(o->e));
        pthread_mutex_lock(&o->mu);
        snap_free(o->fresh);
        o->fresh = s;
        ev_async_send(engine_loop(o->e), &o->arrived);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

/* on_arrived (loop): take the fresh snapshot, answer who waited for it. */
static void on_arrived(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    Observe *o = container_of(w, Observe, arrived);
    pthread_mutex_lock(&o->mu);
    Snapshot *s = o->fresh;
    o->fresh = NULL;
    pthread_mutex_unlock(&o->mu);
    if (!s)
        return;
    snap_free(o->snap);
    o->snap = s;
    o->asked = 0;
    Waiter *wt = o->waiting;
    o->waiting = NULL;
    while (wt) {
        Waiter *next = wt->next;
        wt->fn(o->e, s, wt->x);
        free(wt);
        wt = next;
    }
}

void observe_with(Engine *e, Exchange *x, ObserveFn fn)
{
    Observe *o = e->obs;
    if (o->snap && pl_mono_ns() - o->snap->mono_ns < (uint64_t)OBSERVE_FRESH_MS * 1000000u) {
        fn(e, o->snap, x);
        return;
    }
    Waiter *w = xcalloc(1, sizeof *w);
    w->x = x;
    w->fn = fn;
    w->next = o->waiting;
    o->waiting = w;
    if (!o->asked) {
        o->asked = 1;
        pthread_mutex_lock(&o->mu);
        o->want = 1;
        pthread_cond_signal(&o->cv);
        pthread_mutex_unlock(&o->mu);
    }
}

/* ---------------------------------------------------------------- readiness */

size_t observe_reasons(Engine *e, const Snapshot *s, void (*add)(void *arg, const char *reason),
                       void *arg)
{
    char why[400];
    size_t n = 0;
    if (e->draining) {
        add(arg, e->reload ? "draining to reload the pipeline file" : "draining to stop");
        n++;
    }
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        if (st->ctr.dep_failures >= e->p->health_dep_failures) {
            snprintf(why, sizeof why, "stage '%s': the last %llu attempts at its dependency failed "
                     "(the log and GET /status say why)", st->conf->name,
                     (unsigned long long)st->ctr.dep_failures);
            add(arg, why);
            n++;
        }
    }
    if (s->rc) {
        snprintf(why, sizeof why, "the store cannot be read: %s", pl_strerror(s->rc));
        add(arg, why);
        n++;
    }
    const StoreInfo *in = &s->info;
    uint64_t used = in->last_page > in->free_pages ? (uint64_t)(in->last_page - in->free_pages) * in->page_size : 0;
    if (in->map_max && (double)used > OBSERVE_MAP_FULL * (double)in->map_max) {
        snprintf(why, sizeof why, "the store uses %.0f%% of its map_max (%llu of %llu bytes): "
                 "puts will be refused soon; free room (load or prune batches, purge queues) or "
                 "raise map_max", 100.0 * (double)used / (double)in->map_max,
                 (unsigned long long)used, (unsigned long long)in->map_max);
        add(arg, why);
        n++;
    }
    if (s->disk_known && e->p->health_disk_min) {
        /* data.mdb is reserved ahead (fallocated): what it holds beyond
         * the pages in use is room too. */
        uint64_t ahead = in->file_size > (uint64_t)in->last_page * in->page_size
                             ? in->file_size - (uint64_t)in->last_page * in->page_size : 0;
        uint64_t room = s->disk_free + ahead;
        uint64_t min = e->p->health_disk_min;
        if (room < min) {
            snprintf(why, sizeof why, "the disk of the data directory is nearly full (%llu bytes "
                     "free, under %llu): free space there before puts are refused",
                     (unsigned long long)room, (unsigned long long)min);
            add(arg, why);
            n++;
        }
    }
    for (size_t i = 0; i < s->nmodels; i++) {
        const ObsModel *m = &s->models[i];
        if (m->waiting_ms && s->ms > m->waiting_ms &&
            (double)(s->ms - m->waiting_ms) > e->p->health_batch_wait_s * 1000.0) {
            snprintf(why, sizeof why, "batch %llu of model '%s' was sealed %llu s ago and is not "
                     "loaded: is qload running? (qctl batches)", (unsigned long long)m->waiting_id,
                     m->name, (unsigned long long)((s->ms - m->waiting_ms) / 1000));
            add(arg, why);
            n++;
        }
    }
    return n;
}

static void add_json(void *arg, const char *reason)
{
    Strbuf *b = arg;
    if (b->len)
        sb_adds(b, ",");
    sb_add_json_string(b, reason, strlen(reason));
}

static void ready_answer(Engine *e, const Snapshot *s, Exchange *x)
{
    Strbuf r, out;
    sb_init(&r);
    sb_init(&out);
    size_t n = observe_reasons(e, s, add_json, &r);
    sb_addf(&out, "{\"status\":\"%s\",\"reasons\":[", n ? "unready" : "ready");
    sb_add(&out, r.buf, r.len);
    sb_adds(&out, "]}\n");
    exchange_respond(x, n ? 503 : 200, "application/json", out.buf, out.len);
    sb_free(&out);
    sb_free(&r);
}

static void on_ready(void *arg, Exchange *x)
{
    observe_with(arg, x, ready_answer);
}

static void on_health(void *arg, Exchange *x)
{
    Engine *e = arg;
    char out[160];
    int n = snprintf(out, sizeof out, "{\"status\":\"ok\",\"stages\":%zu,\"uptime_s\":%llu}\n",
                     e->nstages, (unsigned long long)((pl_now_ms() - e->started_ms) / 1000));
    exchange_respond(x, 200, "application/json", out, (size_t)n);
}

static void on_metrics(void *arg, Exchange *x)
{
    observe_with(arg, x, metrics_answer);
}

static void on_status(void *arg, Exchange *x)
{
    observe_with(arg, x, status_answer);
}

/* ---------------------------------------------------------------- history */

static uint64_t done_total(const Engine *e)
{
    uint64_t n = 0;
    for (size_t i = 0; i < e->nstages; i++)
        n += e->stages[i].ctr.done;
    return n;
}

static void sample(Observe *o)
{
    ObsHistory *h = &o->hist;
    if (h->n == OBSERVE_HISTORY) {
        memmove(h->t_ms, h->t_ms + 1, (OBSERVE_HISTORY - 1) * sizeof *h->t_ms);
        memmove(h->done, h->done + 1, (OBSERVE_HISTORY - 1) * sizeof *h->done);
        h->n--;
    }
    h->t_ms[h->n] = pl_now_ms();
    h->done[h->n] = done_total(o->e);
    h->n++;
}

void observe_tick(Observe *o)
{
    if (o && o->ticks++ % OBSERVE_HISTORY_S == 0)
        sample(o);
}

const ObsHistory *observe_history(Engine *e)
{
    return &e->obs->hist;
}

/* ---------------------------------------------------------------- open/close */

Observe *observe_open(Engine *e)
{
    Observe *o = xcalloc(1, sizeof *o);
    o->e = e;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    ev_async_init(&o->arrived, on_arrived);
    ev_async_start(e->loop, &o->arrived);
    int rc = pthread_create(&o->th, NULL, reader_main, o);
    PL_ASSERT(rc == 0, "the observer thread starts (out of threads?)");
    o->started = 1;
    sample(o);
    Listener *l = e->listener;
    if (l) {
        listener_route(l, "GET", "/health", 1, on_health, e);
        listener_route(l, "GET", "/ready", 1, on_ready, e);
        listener_route(l, "GET", "/metrics", 0, on_metrics, e);
        listener_route(l, "GET", "/status", 0, on_status, e);
        listener_route(l, NULL, "/", 1, status_page, e);
    }
    return o;
}

void observe_close(Observe *o)
{
    if (!o)
        return;
    if (o->started) {
        pthread_mutex_lock(&o->mu);
        o->quit = 1;
        pthread_cond_signal(&o->cv);
        pthread_mutex_unlock(&o->mu);
        pthread_join(o->th, NULL);
    }
    ev_async_stop(o->e->loop, &o->arrived);
    /* The listener closed first and freed the exchanges still waiting. */
    for (Waiter *w = o->waiting, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    snap_free(o->snap);
    snap_free(o->fresh);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}
