/* cycles.c: the durable put -> reserve -> ack cycle through the group
 * committer, shared by qbench and enginebench (the same baseline in both). */
#include "cycles.h"
#include "commit.h"
#include "pl.h"
#include "queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double secs(uint64_t ns) { return (double)ns / 1e9; }

typedef struct Cyc {
    size_t body, batch, n;
    char *buf;
    uint64_t acked;
} Cyc;

static void die(const char *what, int rc)
{
    fprintf(stderr, "cycles: %s: %s\n", what, pl_strerror(rc));
    exit(1);
}

/* The same cycle through the group committer: each side submits one op of
 * `batch` jobs and waits for it; ops waiting together share a commit. */
typedef struct GOp {
    CommitOp op;
    Cyc *c;
    int consumer;
    Job *js;
    uint64_t *ids, *leases;
    size_t held, got;
} GOp;

static int gop_apply(Txn *t, CommitOp *op)
{
    GOp *g = (GOp *)op;
    Cyc *c = g->c;
    int rc;
    if (!g->consumer) {
        for (size_t i = 0; i < g->held; i++) {
            PutArgs a = {.pri = (uint32_t)(i & 3), .body = c->buf, .len = c->body};
            uint64_t id;
            if ((rc = queue_put(t, "bench", &a, &id, NULL)) != 0)
                return txn_fail(t, rc);
        }
        return 0;
    }
    for (size_t i = 0; i < g->held; i++)
        if ((rc = queue_ack(t, g->ids[i], g->leases[i])) != 0)
            return txn_fail(t, rc);
    g->got = 0;
    rc = queue_reserve_n(t, "bench", c->batch, 0, g->js, &g->got);
    if (rc && rc != PL_EEMPTY && rc != PL_ENOQUEUE)
        return txn_fail(t, rc);
    if (!g->got && !g->held)
        return PL_EEMPTY; /* nothing done: park until a put */
    for (size_t i = 0; i < g->got; i++) {
        g->ids[i] = g->js[i].id;
        g->leases[i] = g->js[i].lease;
    }
    return 0;
}

typedef struct GThr {
    Cyc *c;
    Committer *cm;
    int consumer;
} GThr;

static void *gcyc(void *arg)
{
    GThr *th = arg;
    Cyc *c = th->c;
    GOp g = {.op = {.apply = gop_apply, .park = th->consumer}, .c = c, .consumer = th->consumer};
    g.js = xcalloc(c->batch, sizeof *g.js);
    g.ids = xcalloc(c->batch, sizeof *g.ids);
    g.leases = xcalloc(c->batch, sizeof *g.leases);
    for (size_t done = 0; th->consumer ? c->acked < c->n : done < c->n;) {
        if (!th->consumer)
            g.held = c->n - done < c->batch ? c->n - done : c->batch;
        g.op.deadline_ns = pl_mono_ns() + 1000000000ull;
        int rc = committer_run(th->cm, &g.op);
        if (rc == PL_EEMPTY && th->consumer)
            continue;
        if (rc)
            die("group cycle", rc);
        if (!th->consumer) {
            done += g.held;
            continue;
        }
        c->acked += g.held;
        g.held = g.got;
    }
    free(g.js);
    free(g.ids);
    free(g.leases);
    return NULL;
}

double cycles_group(Store *s, size_t body, size_t batch, size_t n, double *per_commit)
{
    Committer *cm;
    int rc = committer_open(s, 0, &cm);
    if (rc)
        die("committer", rc);
    Cyc c = {.body = body, .batch = batch, .n = n, .buf = xmalloc(body)};
    memset(c.buf, 'x', body);
    GThr a = {&c, cm, 0}, b = {&c, cm, 1};
    pthread_t p, q;
    uint64_t t0 = pl_mono_ns();
    pthread_create(&p, NULL, gcyc, &a);
    pthread_create(&q, NULL, gcyc, &b);
    pthread_join(p, NULL);
    pthread_join(q, NULL);
    double dt = secs(pl_mono_ns() - t0);
    CommitStats cs;
    committer_stats(cm, &cs);
    committer_close(cm);
    *per_commit = cs.commits ? (double)n * 3 / (double)cs.commits : 0;
    free(c.buf);
    return (double)n / dt;
}

