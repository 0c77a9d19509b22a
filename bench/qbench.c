/* qbench: durable queue throughput, latency, reserve cost, memory and loop
 * stalls of pickline's queue core, with beanstalkd (-b DIR -f 0, an fsync on
 * every write) and a PostgreSQL SKIP LOCKED queue table (synchronous_commit
 * on) running the same workload in the same run.
 *
 *   qbench [--json] [--quick] [--no-peers] [--dir DIR]
 *
 * Prints a table; with --json one JSON object per measured row. Only the
 * measured loops are timed; nothing here asserts a time. */
#include "commit.h"
#include "pl.h"
#include "queue.h"
#include "cycles.h"
#include "peer.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int opt_json, opt_quick, opt_peers = 1;
static const char *opt_only;
static uint64_t commit_ns, commits; /* time inside store_txn_commit, cycles bench */
static char basedir[512];
static PgTmp *pg;

/* ---------------------------------------------------------------- output */

typedef struct Row {
    const char *name, *params, *unit;
    double value;
    const char *peer;  /* NULL: none measured */
    double peer_value;
    const char *peer2;
    double peer2_value;
} Row;

static void json_row(const char *name, const char *params, double v, const char *unit,
                     const char *peer, double pv)
{
    printf("{\"name\":\"%s\",\"parameters\":{%s},\"value\":%.6g,\"unit\":\"%s\"", name, params, v, unit);
    if (peer && pv > 0)
        printf(",\"peer\":\"%s\",\"peer_value\":%.6g,\"ratio\":%.4g", peer, pv, v / pv);
    printf("}\n");
    fflush(stdout);
}

static void row(const Row *r)
{
    if (opt_json) {
        if (r->peer2)
            json_row(r->name, r->params, r->value, r->unit, r->peer2, r->peer2_value);
        json_row(r->name, r->params, r->value, r->unit, r->peer, r->peer_value);
        return;
    }
    char a[64] = "", b[64] = "";
    if (r->peer && r->peer_value > 0)
        snprintf(a, sizeof a, "%10.0f %6.2fx", r->peer_value, r->value / r->peer_value);
    else if (r->peer)
        snprintf(a, sizeof a, "%17s", "n/a");
    if (r->peer2 && r->peer2_value > 0)
        snprintf(b, sizeof b, "%10.0f %6.2fx", r->peer2_value, r->value / r->peer2_value);
    else if (r->peer2)
        snprintf(b, sizeof b, "%17s", "n/a");
    printf("%-34s %12.0f %-9s %s  %s\n", r->params, r->value, r->unit, a, b);
    fflush(stdout);
}

static void heading(const char *title, const char *peers)
{
    if (opt_json)
        return;
    printf("\n== %s\n%-34s %12s %-9s %s\n", title, "workload", "pickline", "unit", peers);
}

/* ---------------------------------------------------------------- helpers */

static Store *fresh_store(const char *name, size_t map)
{
    char dir[700], cmd[800];
    snprintf(dir, sizeof dir, "%s/%s", basedir, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        exit(1);
    StoreOpts o = {.create = 1, .map_initial = map};
    Store *s;
    int rc = store_open(dir, &o, &s);
    if (rc) {
        fprintf(stderr, "qbench: cannot open %s: %s\n", dir, pl_strerror(rc));
        exit(1);
    }
    return s;
}

static void drop_store(Store *s)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", store_path(s));
    store_close(s);
    if (system(cmd) != 0)
        fprintf(stderr, "qbench: cannot remove data\n");
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- cycles */

/* One producer and one consumer thread, each with its own transactions of
 * `batch` jobs: the producer puts; the consumer acks what it reserved in its
 * previous transaction and reserves the next batch in the same one. */
typedef struct Cyc {
    Store *s;
    size_t body, batch, n;
    char *buf;
    uint64_t acked;
} Cyc;

static void die_rc(const char *what, int rc)
{
    fprintf(stderr, "qbench: %s: %s\n", what, pl_strerror(rc));
    exit(1);
}

static void *cyc_producer(void *arg)
{
    Cyc *c = arg;
    for (size_t done = 0; done < c->n;) {
        Txn *t;
        int rc = store_txn_begin(c->s, 1, &t);
        if (rc)
            die_rc("begin", rc);
        size_t k = c->n - done < c->batch ? c->n - done : c->batch;
        for (size_t i = 0; i < k; i++) {
            PutArgs a = {.pri = (uint32_t)(i & 3), .body = c->buf, .len = c->body};
            uint64_t id;
            if ((rc = queue_put(t, "bench", &a, &id, NULL)) != 0)
                die_rc("put", rc);
        }
        uint64_t c0 = pl_mono_ns();
        if ((rc = store_txn_commit(t)) != 0)
            die_rc("commit", rc);
        __atomic_add_fetch(&commit_ns, pl_mono_ns() - c0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&commits, 1, __ATOMIC_RELAXED);
        done += k;
    }
    return NULL;
}

static void *cyc_consumer(void *arg)
{
    Cyc *c = arg;
    Job *js = xcalloc(c->batch, sizeof *js);
    uint64_t *ids = xcalloc(c->batch, sizeof *ids), *leases = xcalloc(c->batch, sizeof *leases);
    size_t held = 0;
    while (c->acked < c->n) {
        Txn *t;
        int rc = store_txn_begin(c->s, 1, &t);
        if (rc)
            die_rc("begin", rc);
        for (size_t i = 0; i < held; i++)
            if ((rc = queue_ack(t, ids[i], leases[i])) != 0)
                die_rc("ack", rc);
        size_t got = 0;
        rc = queue_reserve_n(t, "bench", c->batch, 0, js, &got);
        if (rc && rc != PL_EEMPTY && rc != PL_ENOQUEUE)
            die_rc("reserve", rc);
        if (!held && !got) {
            store_txn_abort(t);
            usleep(50);
            continue;
        }
        uint64_t c0 = pl_mono_ns();
        if ((rc = store_txn_commit(t)) != 0)
            die_rc("commit", rc);
        __atomic_add_fetch(&commit_ns, pl_mono_ns() - c0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&commits, 1, __ATOMIC_RELAXED);
        c->acked += held;
        for (size_t i = 0; i < got; i++) {
            ids[i] = js[i].id;
            leases[i] = js[i].lease;
        }
        held = got;
    }
    free(js);
    free(ids);
    free(leases);
    return NULL;
}

static double ours_cycles(size_t body, size_t batch, size_t n)
{
    Store *s = fresh_store("cycles", (size_t)2 << 30);
    Cyc c = {.s = s, .body = body, .batch = batch, .n = n, .buf = xmalloc(body)};
    memset(c.buf, 'x', body);
    pthread_t p, q;
    uint64_t t0 = pl_mono_ns();
    pthread_create(&p, NULL, cyc_producer, &c);
    pthread_create(&q, NULL, cyc_consumer, &c);
    pthread_join(p, NULL);
    pthread_join(q, NULL);
    double dt = secs(pl_mono_ns() - t0);
    free(c.buf);
    drop_store(s);
    return (double)n / dt;
}

static double ours_group_cycles(size_t body, size_t batch, size_t n, double *per_commit)
{
    Store *s = fresh_store("gcycles", (size_t)2 << 30);
    double v = cycles_group(s, body, batch, n, per_commit);
    drop_store(s);
    return v;
}

static double peer_bs(size_t body, size_t batch, size_t n, PeerResult *r)
{
    char wd[700];
    snprintf(wd, sizeof wd, "%s/beanstalkd", basedir);
    memset(r, 0, sizeof *r);
    if (peer_beanstalkd_run(wd, body, batch, n, r) != 0) {
        fprintf(stderr, "qbench: beanstalkd peer: %s\n", r->err);
        return 0;
    }
    return r->cycles_per_s;
}

static double peer_pq(size_t body, size_t batch, size_t n, PeerResult *r)
{
    memset(r, 0, sizeof *r);
    if (!pg)
        return 0;
    if (peer_pg_run(pg, body, batch, n, r) != 0) {
        fprintf(stderr, "qbench: postgresql peer: %s\n", r->err);
        return 0;
    }
    return r->cycles_per_s;
}

static void bench_cycles(void)
{
    heading("durable put->reserve->ack cycles, 1 producer + 1 consumer, N jobs per commit",
            "  beanstalkd -f0    ratio   pg skip-locked    ratio");
    const size_t bodies[] = {100, 4096}, batches[] = {1, 100, 1000};
    for (size_t b = 0; b < 2; b++)
        for (size_t k = 0; k < 3; k++) {
            if (getenv("QBENCH_CASE") && atoi(getenv("QBENCH_CASE")) != (int)(b * 3 + k))
                continue;
            size_t body = bodies[b], batch = batches[k];
            size_t n = batch == 1 ? 4000 : batch == 100 ? 200000 : 600000;
            if (body > 1000)
                n /= 3;
            if (opt_quick)
                n /= 10;
            commit_ns = commits = 0;
            double v = ours_cycles(body, batch, n);
            if (getenv("QBENCH_VERBOSE"))
                fprintf(stderr, "qbench: %zu commits, mean commit %.3f ms\n", (size_t)commits,
                        commits ? (double)commit_ns / (double)commits / 1e6 : 0);
            PeerResult br = {0}, pr = {0};
            double bv = 0, pv = 0;
            if (opt_peers) {
                size_t bn = opt_quick ? 1000 : 6000;
                bv = peer_bs(body, batch, bn, &br);
                size_t pn = batch == 1 ? (opt_quick ? 500 : 3000) : n / (batch == 100 ? 2 : 1);
                pv = peer_pq(body, batch, pn, &pr);
            }
            double opc;
            double g = ours_group_cycles(body, batch, n, &opc);
            char params[200], label[80];
            snprintf(params, sizeof params, "\"body\":%zu,\"per_commit\":%zu,\"jobs\":%zu,\"mode\":\"own txns\"",
                     body, batch, n);
            snprintf(label, sizeof label, "body %zu B, %zu/txn, own txns", body, batch);
            Row r = {"cycles", opt_json ? params : label, "cycles/s", v,
                     opt_peers ? "beanstalkd -f 0" : NULL, bv,
                     opt_peers ? "postgresql skip locked" : NULL, pv};
            row(&r);
            snprintf(params, sizeof params, "\"body\":%zu,\"per_commit\":%zu,\"jobs\":%zu,\"mode\":\"group commit\",\"ops_per_commit\":%.0f",
                     body, batch, n, opc);
            snprintf(label, sizeof label, "body %zu B, %zu/op, group commit", body, batch);
            Row r2 = r;
            r2.params = opt_json ? params : label;
            r2.value = g;
            row(&r2);
        }
}

/* ---------------------------------------------------------------- group commit */

/* Producer and consumer in one process, each waiting for its own durable
 * answer before the next operation; the committer merges their commits. */
typedef struct Pp {
    Committer *cm;
    size_t n;
    double *lat;
    uint64_t acked;
} Pp;

typedef struct PutOp {
    CommitOp op;
    uint64_t id;
    const char *body;
    size_t len;
} PutOp;

static int pp_put(Txn *t, CommitOp *op)
{
    PutOp *p = (PutOp *)op;
    PutArgs a = {.pri = 1, .body = p->body, .len = p->len};
    return queue_put(t, "pp", &a, &p->id, NULL);
}

typedef struct CycOp {
    CommitOp op;
    uint64_t ack, ack_lease, got, got_lease;
} CycOp;

static int pp_cycle(Txn *t, CommitOp *op)
{
    CycOp *c = (CycOp *)op;
    int rc;
    if (c->ack && (rc = queue_ack(t, c->ack, c->ack_lease)) != 0)
        return rc;
    Job j;
    c->got = 0;
    rc = queue_reserve(t, "pp", 0, &j);
    if (rc == 0) {
        c->got = j.id;
        c->got_lease = j.lease;
    } else if (rc == PL_EEMPTY || rc == PL_ENOQUEUE) {
        return c->ack ? 0 : PL_EEMPTY; /* nothing done: park until a put */
    } else {
        return txn_fail(t, rc);
    }
    return 0;
}

static void *pp_producer(void *arg)
{
    Pp *p = arg;
    char body[100];
    memset(body, 'x', sizeof body);
    for (size_t i = 0; i < p->n; i++) {
        PutOp op = {.op = {.apply = pp_put}, .body = body, .len = sizeof body};
        uint64_t t0 = pl_mono_ns();
        int rc = committer_run(p->cm, &op.op);
        p->lat[i] = (double)(pl_mono_ns() - t0) / 1e3;
        if (rc)
            die_rc("put", rc);
    }
    return NULL;
}

static void *pp_consumer(void *arg)
{
    Pp *p = arg;
    CycOp c = {.op = {.apply = pp_cycle, .park = 1}};
    while (p->acked < p->n) {
        c.op.deadline_ns = pl_mono_ns() + 1000000000ull;
        int rc = committer_run(p->cm, &c.op);
        if (rc && rc != PL_EEMPTY)
            die_rc("cycle", rc);
        if (c.ack)
            p->acked++;
        c.ack = rc ? 0 : c.got;
        c.ack_lease = c.got_lease;
    }
    return NULL;
}

static void bench_group(double bs_pingpong)
{
    size_t n = opt_quick ? 1000 : 6000;
    Store *s = fresh_store("group", (size_t)256 << 20);
    Committer *cm;
    int rc = committer_open(s, 0, &cm);
    if (rc)
        die_rc("committer", rc);
    Pp p = {.cm = cm, .n = n, .lat = xcalloc(n, sizeof(double))};
    pthread_t a, b;
    uint64_t t0 = pl_mono_ns();
    pthread_create(&a, NULL, pp_producer, &p);
    pthread_create(&b, NULL, pp_consumer, &p);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    double dt = secs(pl_mono_ns() - t0);
    CommitStats cs;
    committer_stats(cm, &cs);
    committer_close(cm);
    drop_store(s);
    if (getenv("QBENCH_VERBOSE"))
        fprintf(stderr, "qbench: pingpong %llu commits for %zu cycles, mean commit %.0f us\n",
                (unsigned long long)cs.commits, n, cs.commits ? (double)cs.commit_ns_total / (double)cs.commits / 1e3 : 0);
    qsort(p.lat, n, sizeof(double), cmpd);
    double p50 = p.lat[n / 2], p99 = p.lat[n * 99 / 100];
    free(p.lat);

    PeerResult br = {0}, pr = {0};
    double bv = bs_pingpong, pv = 0;
    if (opt_peers && bv == 0)
        bv = peer_bs(100, 1, opt_quick ? 1000 : 4000, &br);
    if (opt_peers)
        pv = peer_pq(100, 1, opt_quick ? 500 : 3000, &pr);
    heading("group commit: producer and consumer each wait for their durable answer",
            "  beanstalkd -f0    ratio   pg skip-locked    ratio");
    Row r = {"pingpong", opt_json ? "\"body\":100,\"per_op_wait\":true" : "body 100 B, wait per op",
             "cycles/s", (double)n / dt, opt_peers ? "beanstalkd -f 0" : NULL, bv,
             opt_peers ? "postgresql skip locked" : NULL, pv};
    row(&r);
    Row l50 = {"put_durable_latency_p50", opt_json ? "\"body\":100" : "put -> durable, p50", "us", p50, NULL, 0, NULL, 0};
    Row l99 = {"put_durable_latency_p99", opt_json ? "\"body\":100" : "put -> durable, p99", "us", p99, NULL, 0, NULL, 0};
    Row opc = {"ops_per_commit", opt_json ? "\"body\":100" : "ops per commit (mean)", "ops",
               cs.commits ? (double)cs.ops / (double)cs.commits : 0, NULL, 0, NULL, 0};
    row(&l50);
    row(&l99);
    row(&opc);
}

/* ---------------------------------------------------------------- depth */

typedef struct FillArg {
    const char *q;
    size_t k;
} FillArg;

static int fill_some(Txn *t, void *arg)
{
    FillArg *f = arg;
    char body[100];
    memset(body, 'x', sizeof body);
    for (size_t i = 0; i < f->k; i++) {
        PutArgs a = {.pri = (uint32_t)(i % 8), .body = body, .len = sizeof body};
        uint64_t id;
        int rc = queue_put(t, f->q, &a, &id, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* Queues for the depth bench never bury: reserve+release loops on one job. */
static int create_unlimited(Txn *t, void *arg)
{
    QueueConf c;
    queue_conf_default(&c);
    c.max_attempts = 0;
    int rc = queue_create(t, arg, &c);
    return rc == EEXIST ? 0 : rc;
}

static int fill(Store *s, const char *q, size_t n)
{
    int rc0 = store_run(s, create_unlimited, (void *)q);
    if (rc0)
        return rc0;
    for (size_t done = 0; done < n;) {
        FillArg f = {q, n - done < 10000 ? n - done : 10000};
        int rc = store_run(s, fill_some, &f);
        if (rc)
            return rc;
        done += f.k;
    }
    return 0;
}

/* ns per reserve+release pair at the head of q: the job goes back to its
 * place, so the depth stays what it was. Best of 3 runs. */
static double reserve_cost(Store *s, const char *q, size_t iters)
{
    double best = 1e18;
    for (int rep = 0; rep < 3; rep++) {
        Txn *t;
        int rc = store_txn_begin(s, 1, &t);
        if (rc)
            die_rc("begin", rc);
        Job j;
        uint64_t t0 = pl_mono_ns();
        for (size_t i = 0; i < iters; i++) {
            if ((rc = queue_reserve(t, q, 0, &j)) != 0 ||
                (rc = queue_release(t, j.id, j.lease, 0, NULL, NULL)) != 0)
                die_rc("reserve", rc);
        }
        double ns = (double)(pl_mono_ns() - t0) / (double)iters;
        store_txn_abort(t);
        if (ns < best)
            best = ns;
    }
    return best;
}

/* The depth store is filled by a child process, which reports its peak
 * RSS: a process holding 1,000,000 queued jobs. */
static void bench_depth(void)
{
    size_t deep = 1000000;
    Store *s = fresh_store("depth", (size_t)1 << 30);
    store_close(s);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/depth", basedir);
    int fd[2];
    if (pipe(fd) != 0)
        exit(1);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        StoreOpts o = {.create = 1};
        Store *cs;
        int rc = store_open(dir, &o, &cs);
        if (!rc)
            rc = fill(cs, "deep", deep);
        Txn *t;
        Job *js = xcalloc(1000, sizeof *js);
        size_t got = 0;
        if (!rc && (rc = store_txn_begin(cs, 1, &t)) == 0) {
            rc = queue_reserve_n(t, "deep", 1000, 0, js, &got);
            for (size_t i = 0; i < got && !rc; i++)
                rc = queue_release(t, js[i].id, js[i].lease, 0, NULL, NULL);
            store_txn_abort(t);
        }
        free(js);
        store_close(cs);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double kb = rc ? -1 : (double)ru.ru_maxrss;
        if (write(fd[1], &kb, sizeof kb) != sizeof kb)
            _exit(2);
        _exit(rc ? 1 : 0);
    }
    close(fd[1]);
    double kb = -1;
    if (read(fd[0], &kb, sizeof kb) != sizeof kb || kb < 0) {
        fprintf(stderr, "qbench: depth fill failed\n");
        exit(1);
    }
    close(fd[0]);
    waitpid(pid, NULL, 0);

    StoreOpts o = {.create = 0, .map_initial = (size_t)2 << 30};
    int rc = store_open(dir, &o, &s);
    if (rc)
        die_rc("open depth", rc);
    rc = fill(s, "shallow", 10);
    if (rc)
        die_rc("fill", rc);
    size_t iters = opt_quick ? 20000 : 100000;
    double c10 = reserve_cost(s, "shallow", iters), c1m = reserve_cost(s, "deep", iters);
    drop_store(s);
    heading("reserve cost and memory", "  at 10 deep        ratio");
    if (opt_json) {
        json_row("reserve_release_ns", "\"depth\":1000000", c1m, "ns", "pickline at depth 10", c10);
        json_row("peak_rss_1m_jobs", "\"jobs\":1000000,\"body\":100", kb / 1024.0, "MiB", NULL, 0);
        return;
    }
    printf("%-34s %12.0f %-9s %10.0f %6.2fx\n", "reserve+release at 1,000,000 deep", c1m, "ns/op",
           c10, c1m / c10);
    printf("%-34s %12.1f %-9s\n", "peak RSS, process with 1M jobs", kb / 1024.0, "MiB");
}

/* ---------------------------------------------------------------- loop stall */

/* A libev loop that ticks every millisecond and hands batches of 100 puts
 * to the committer (done comes back through ev_async): the worst gap
 * between ticks shows whether a flush ever blocks the loop. The same loop
 * committing on its own thread is the contrast. */
typedef struct Stall {
    struct ev_loop *loop;
    ev_timer tick;
    ev_async wake;
    Committer *cm;
    Store *s;
    int inflight, sync;
    uint64_t last, worst, ticks, ops, end;
    PutOp op;
} Stall;

static int stall_apply(Txn *t, CommitOp *op)
{
    char body[100];
    memset(body, 'y', sizeof body);
    for (int i = 0; i < 100; i++) {
        PutArgs a = {.pri = 1, .body = body, .len = sizeof body};
        uint64_t id;
        int rc = queue_put(t, "stall", &a, &id, NULL);
        if (rc)
            return txn_fail(t, rc);
    }
    (void)op;
    return 0;
}

static void stall_done(CommitOp *op, int rc)
{
    Stall *st = op->arg;
    if (rc)
        die_rc("stall commit", rc);
    ev_async_send(st->loop, &st->wake);
}

static void stall_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    Stall *st = (Stall *)((char *)w - offsetof(Stall, wake));
    st->inflight = 0;
    st->ops += 100;
}

static void stall_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    Stall *st = (Stall *)((char *)w - offsetof(Stall, tick));
    uint64_t now = pl_mono_ns();
    if (st->last && now - st->last > st->worst)
        st->worst = now - st->last;
    st->last = now;
    st->ticks++;
    if (now >= st->end) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (st->sync) {
        Txn *t;
        if (store_txn_begin(st->s, 1, &t) == 0) {
            stall_apply(t, &st->op.op);
            if (store_txn_commit(t) == 0)
                st->ops += 100;
        }
    } else if (!st->inflight) {
        st->inflight = 1;
        committer_submit(st->cm, &st->op.op);
    }
}

static void stall_run(int sync, double *worst_ms, double *ops_s)
{
    Stall st = {.sync = sync};
    st.s = fresh_store("stall", (size_t)512 << 20);
    st.loop = ev_loop_new(EVFLAG_AUTO);
    if (!sync && committer_open(st.s, 0, &st.cm) != 0)
        exit(1);
    st.op.op.apply = stall_apply;
    st.op.op.done = stall_done;
    st.op.op.arg = &st;
    ev_timer_init(&st.tick, stall_tick, 0.001, 0.001);
    ev_timer_start(st.loop, &st.tick);
    ev_async_init(&st.wake, stall_wake);
    ev_async_start(st.loop, &st.wake);
    uint64_t t0 = pl_mono_ns();
    st.end = t0 + (uint64_t)(opt_quick ? 1e9 : 3e9);
    ev_run(st.loop, 0);
    double dt = secs(pl_mono_ns() - t0);
    if (st.cm) {
        /* Let an op in flight finish before the loop goes away. */
        while (st.inflight) {
            ev_run(st.loop, EVRUN_ONCE);
        }
        committer_close(st.cm);
    }
    ev_loop_destroy(st.loop);
    drop_store(st.s);
    *worst_ms = (double)st.worst / 1e6;
    *ops_s = (double)st.ops / dt;
}

static void bench_stall(void)
{
    double w_async, o_async, w_sync, o_sync;
    stall_run(0, &w_async, &o_async);
    stall_run(1, &w_sync, &o_sync);
    heading("engine loop stall: 1 ms timer, 100 puts per commit", "  commit on loop    ratio");
    if (opt_json) {
        json_row("loop_worst_gap_ms", "\"tick_ms\":1,\"writer_thread\":true", w_async, "ms",
                 "commit on the loop thread", w_sync);
        json_row("loop_puts_per_s", "\"tick_ms\":1,\"writer_thread\":true", o_async, "puts/s",
                 "commit on the loop thread", o_sync);
        return;
    }
    printf("%-34s %12.2f %-9s %10.2f %6.2fx\n", "worst gap between 1 ms ticks", w_async, "ms",
           w_sync, w_async / w_sync);
    printf("%-34s %12.0f %-9s %10.0f %6.2fx\n", "puts/s while ticking", o_async, "puts/s", o_sync,
           o_async / o_sync);
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f, "usage: qbench [--json] [--quick] [--no-peers] [--only cycles|group|depth|stall] [--dir DIR]\n"
               "  Durable queue benchmarks, with beanstalkd (-f 0) and a PostgreSQL\n"
               "  SKIP LOCKED queue table as peers in the same run.\n"
               "  --quick     smaller runs (a smoke test; numbers are noisier)\n"
               "  --no-peers  skip beanstalkd and PostgreSQL\n"
               "  --dir DIR   where the data directories go (default: a temp dir)\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            opt_json = 1;
        else if (!strcmp(argv[i], "--quick"))
            opt_quick = 1;
        else if (!strcmp(argv[i], "--no-peers"))
            opt_peers = 0;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            opt_only = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    pl_log_level = PL_LOG_WARN;
    if (dir) {
        snprintf(basedir, sizeof basedir, "%s", dir);
    } else {
        snprintf(basedir, sizeof basedir, "%s/qbench.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
        if (!mkdtemp(basedir)) {
            perror("qbench: mkdtemp");
            return 1;
        }
    }
    if (opt_peers) {
        char err[256];
        pg = pgtmp_start(err, sizeof err);
        if (!pg)
            fprintf(stderr, "qbench: no PostgreSQL peer: %s\n", err);
    }
    if (!opt_json)
        printf("qbench: data in %s; every commit is durable (two flushes)\n", basedir);
    if (!opt_only || !strcmp(opt_only, "cycles"))
        bench_cycles();
    if (!opt_only || !strcmp(opt_only, "group"))
        bench_group(0);
    if (!opt_only || !strcmp(opt_only, "depth"))
        bench_depth();
    if (!opt_only || !strcmp(opt_only, "stall"))
        bench_stall();
    pgtmp_stop(pg);
    if (!dir) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", basedir);
        if (system(cmd) != 0)
            fprintf(stderr, "qbench: cannot remove %s\n", basedir);
    }
    return 0;
}
