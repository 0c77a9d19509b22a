/* pipebench: records per second through the whole line, against `psql
 * \copy` of the same rows into an identical table in the same run.
 *
 *   pipebench [--rows N] [--rounds N] [--only copy|preload|listen|ingest]
 *             [--clients N] [--bulk K] [--batch-rows R] [--concurrency C]
 *             [--jobs N] [--json] [--keep] [--perf]
 *
 * The rows are the seed's users model (13 columns, bench/users.c), sent as
 * jobs {"model":"users","row":{...}} to the queue `in` of this pipeline:
 *
 *     in -> validate (model users) -> final -> batch (rows R) -> qload --follow
 *
 * into a throwaway PostgreSQL (pgtmp: fsync=on, synchronous_commit=on); the
 * engine's commits are durable as always. Two forms, each timed from the
 * moment its work starts until the warehouse's ledger holds every row (the
 * store says every batch is loaded):
 *   preload  the N jobs are put into `in` first (one store, 10,000 per
 *            commit, like `qctl import`), then the engine and qload start.
 *   listen   the engine and qload run idle; then --clients connections POST
 *            the jobs to the listener, one job per request, or --bulk K jobs
 *            per request (NDJSON, one commit, one answer) when K > 1.
 * And the listener's ingest alone (ingest): --jobs jobs of 200 bytes put
 * into a queue nobody reads, by --clients connections with the bulk form
 * of POST /queues/in/jobs (1000 jobs a request, each request one commit
 * and one answer after it), and one job per request, against `qctl import`
 * of the same jobs (the store's own bulk put, 1000 a commit) in the same
 * run.
 * The peer is `psql \copy users FROM CSV` of the same rows (model_csv_row of
 * the bytes the validate stage stages), timed as a process. Every load is
 * checked against psql's (row count and an order-independent digest of the
 * table).
 *
 * Where the time goes: the engine's group committer (commits, ops per
 * commit, time in commits against the wall time: "writer busy", of which
 * applying the ops vs the two flushes), the CPU of the engine, qload, the
 * PostgreSQL server and the load client, and the peak RSS of the engine and
 * of qload. The engine runs in a process of its own: this program started
 * again with --engine-child (the same library `pickline run` is, with its
 * commit counters written out at the end). --perf records the engine and
 * qload with `perf record` (cpu-clock, DWARF call graphs) into the scratch
 * directory, kept.
 *
 * Prints a table; with --json one JSON object per row. Asserts no time. */
#include "engine.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"
#include "store.h"
#include "hload.h"
#include "kinds.h"
#include "pgtmp.h"
#include "proc.h"
#include "report.h"
#include "users.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static size_t opt_rows = 300000;
static unsigned opt_rounds = 2, opt_clients = 64, opt_bulk = 1000, opt_conc = 1024, opt_rsv = 256;
static size_t opt_batch_rows = 50000, opt_jobs = 300000;
static const char *opt_only;
static int opt_keep, opt_perf;

static char basedir[256], selfdir[PATH_MAX - 32], qload_path[PATH_MAX], self_path[PATH_MAX],
    qctl_path[PATH_MAX];
static PgTmp *pg;
static PGconn *conn;
static Pipeline *pipe_;
static const Model *users;
static Strbuf yaml;
static char yaml_path[400];
static unsigned port;

/* The children of the run in progress, stopped if we die. */
static Proc *children[4];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "pipebench: %s: %s\n", what, why);
    for (size_t i = 0; i < sizeof children / sizeof children[0]; i++)
        if (children[i] && children[i]->pid) {
            kill(children[i]->pid, SIGKILL);
            proc_wait(children[i], 5);
        }
    exit(1);
}

static void rm_rf(const char *path)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "pipebench: cannot remove %s\n", path);
}

/* ---------------------------------------------------------------- engine child */

/* The engine in a process of its own: pipebench --engine-child YAML DIR
 * PORT STATS. It writes STATS.ready once it listens, and STATS (its commit
 * counters, one JSON line) after it drained on SIGTERM. */
static int engine_child(int argc, char **argv)
{
    if (argc != 6)
        return 2;
    const char *path = argv[2], *dir = argv[3], *stats = argv[5];
    Pipeline *p;
    Engine *e;
    char err[1024], ready[PATH_MAX];
    pl_log_level = PL_LOG_WARN;
    if (pipeline_load(path, stage_kind_specs, &p, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    EngineOpts o = {.data_dir = dir, .port = (unsigned)atoi(argv[4])};
    if (engine_open(p, stage_kinds, &o, &e, err, sizeof err) != 0) {
        fprintf(stderr, "pipebench engine: %s\n", err);
        return 1;
    }
    snprintf(ready, sizeof ready, "%s.ready", stats);
    FILE *f = fopen(ready, "w");
    if (f)
        fclose(f);
    int rc = engine_run(e);
    CommitStats cs;
    engine_commit_stats(e, &cs);
    f = fopen(stats, "w");
    if (f) {
        fprintf(f, "%llu %llu %llu %llu %llu %llu %llu\n", (unsigned long long)cs.commits,
                (unsigned long long)cs.ops, (unsigned long long)cs.max_ops_per_commit,
                (unsigned long long)cs.commit_ns_total, (unsigned long long)cs.apply_ns_total,
                (unsigned long long)cs.commit_ns_max, (unsigned long long)engine_loop_block_max(e));
        fclose(f);
    }
    engine_close(e);
    pipeline_free(p);
    return rc ? 1 : 0;
}

typedef struct EngineStats {
    unsigned long long commits, ops, max_ops, commit_ns, apply_ns, commit_max_ns, block_max_ns;
} EngineStats;

static int read_stats(const char *path, EngineStats *s)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%llu %llu %llu %llu %llu %llu %llu", &s->commits, &s->ops, &s->max_ops,
                   &s->commit_ns, &s->apply_ns, &s->commit_max_ns, &s->block_max_ns);
    fclose(f);
    return n == 7 ? 0 : -1;
}

/* ---------------------------------------------------------------- postgres */

static PGresult *sql(const char *q)
{
    PGresult *r = PQexec(conn, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "pipebench: PostgreSQL refused %.200s: %s", q, PQerrorMessage(conn));
        exit(1);
    }
    return r;
}

static void sql_do(const char *q)
{
    PQclear(sql(q));
}

static void reset_target(void)
{
    sql_do("TRUNCATE users");
    sql_do("DO $$BEGIN IF to_regclass('pickline_ledger') IS NOT NULL THEN "
           "DELETE FROM pickline_ledger; END IF; END$$");
    sql_do("CHECKPOINT");
}

typedef struct Digest {
    long long rows;
    char sum[80];
} Digest;

static void digest(Digest *d)
{
    PGresult *r = sql("SELECT count(*), coalesce(sum(hashtextextended(u::text, 0)::numeric), 0)::text "
                      "FROM users u");
    d->rows = atoll(PQgetvalue(r, 0, 0));
    snprintf(d->sum, sizeof d->sum, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
}

/* pg_pid: the postmaster's pid, from postmaster.pid in its data directory
 * (the socket directory's data/). */
static pid_t pg_pid(void)
{
    char dir[300] = "", path[400];
    const char *h = strstr(pgtmp_conninfo(pg), "host=");
    if (h)
        sscanf(h + 5, "%299s", dir);
    snprintf(path, sizeof path, "%s/data/postmaster.pid", dir);
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* ---------------------------------------------------------------- the rows */

/* Jobs: line i ({"body":BODY}\n, the bulk form) at jobs.buf + loff[i];
 * its body at jobs.buf + joff[2i] .. joff[2i+1]; with --bulk, request r is
 * lines r*K .. r*K+K-1 at reqoff[r]. */
static Strbuf jobs;
static size_t *joff, *loff, *reqoff, nreq;
static char csv_path[400];

static void make_rows(void)
{
    UsersGen g;
    users_gen_init(&g, users);
    Strbuf csv;
    sb_init(&csv);
    sb_init(&jobs);
    joff = xmalloc(2 * opt_rows * sizeof *joff);
    loff = xmalloc((opt_rows + 1) * sizeof *loff);
    FILE *f = fopen(csv_path, "w");
    if (!f)
        die(csv_path, strerror(errno));
    for (size_t i = 0; i < opt_rows; i++) {
        loff[i] = jobs.len;
        sb_adds(&jobs, "{\"body\":");
        joff[2 * i] = jobs.len;
        sb_adds(&jobs, "{\"model\":\"users\",\"row\":");
        users_gen_json(&g, i, &jobs);
        sb_adds(&jobs, "}");
        joff[2 * i + 1] = jobs.len;
        sb_adds(&jobs, "}\n");
        users_gen_csv(&g, i, &csv);
        if (csv.len >= (1 << 20) || i + 1 == opt_rows) {
            if (fwrite(csv.buf, 1, csv.len, f) != csv.len)
                die(csv_path, strerror(errno));
            sb_reset(&csv);
        }
    }
    loff[opt_rows] = jobs.len;
    if (fclose(f) != 0)
        die(csv_path, strerror(errno));
    sb_free(&csv);
    users_gen_free(&g);
    size_t k = opt_bulk > 1 ? opt_bulk : 1;
    nreq = (opt_rows + k - 1) / k;
    reqoff = xmalloc((nreq + 1) * sizeof *reqoff);
    for (size_t r = 0; r < nreq; r++)
        reqoff[r] = loff[r * k];
    reqoff[nreq] = jobs.len;
}

/* ---------------------------------------------------------------- the line */

static void write_yaml(void)
{
    sb_init(&yaml);
    sb_addf(&yaml,
            "# pipebench: in -> validate -> final -> batch, then qload --follow\n"
            "listen: {port: %u}\n"
            "drain: 30\n"
            "queues:\n"
            "  in: {}\n"
            "  final: {}\n"
            "stages:\n"
            "  - {name: check, kind: validate, input: in, output: final, model: users,\n"
            "     concurrency: %u, batch: %u}\n"
            "  - {name: seal, kind: batch, input: final, model: users, rows: %zu, seconds: 1,\n"
            "     concurrency: %u, batch: %u}\n",
            port, opt_conc, opt_rsv, opt_batch_rows, opt_conc, opt_rsv);
    sb_adds(&yaml, USERS_MODEL_YAML);
    snprintf(yaml_path, sizeof yaml_path, "%s/pipeline.yml", basedir);
    FILE *f = fopen(yaml_path, "w");
    if (!f || fputs(yaml.buf, f) < 0 || fclose(f) != 0)
        die(yaml_path, strerror(errno));
    char err[512];
    if (pipeline_load(yaml_path, stage_kind_specs, &pipe_, err, sizeof err) != 0)
        die("the pipeline file", err);
    users = models_find(pipe_->models, "users");
    if (!users)
        die("the pipeline file", "no users model");
}

typedef struct Preload {
    size_t from, n;
} Preload;

static int preload_apply(Txn *t, void *arg)
{
    Preload *p = arg;
    int rc;
    if (p->from == 0 && (rc = staging_pipeline_put(t, yaml_path, yaml.buf, yaml.len,
                                                     pipe_->models)) != 0)
        return rc;
    for (size_t i = p->from; i < p->from + p->n; i++) {
        PutArgs a = {.body = jobs.buf + joff[2 * i], .len = joff[2 * i + 1] - joff[2 * i]};
        uint64_t id;
        if ((rc = queue_put(t, "in", &a, &id, NULL)) != 0)
            return rc;
    }
    return 0;
}

/* preload puts every job into `in` of a fresh store at dir; returns jobs/s. */
static double preload(const char *dir)
{
    rm_rf(dir);
    StoreOpts o = {.create = 1, .map_initial = ((size_t)64 << 20) + opt_rows * 2048};
    Store *s;
    int rc = store_open(dir, &o, &s);
    if (rc)
        die(dir, pl_strerror(rc));
    uint64_t t0 = pl_mono_ns();
    for (size_t done = 0; done < opt_rows;) {
        Preload p = {done, opt_rows - done < 10000 ? opt_rows - done : 10000};
        if ((rc = store_run(s, preload_apply, &p)) != 0)
            die("preload", pl_strerror(rc));
        done += p.n;
    }
    double dt = (double)(pl_mono_ns() - t0) / 1e9;
    store_close(s);
    return (double)opt_rows / dt;
}

typedef struct Loaded {
    uint64_t rows, batches, failed;
} Loaded;

static int loaded_fn(const BatchRec *b, void *arg)
{
    Loaded *l = arg;
    if (b->state == BATCH_LOADED) {
        l->rows += b->rows - b->removed;
        l->batches++;
    } else if (b->state == BATCH_FAILED || b->state == BATCH_HELD) {
        l->failed++;
    }
    return 0;
}

static int loaded_apply(Txn *t, void *arg)
{
    Loaded *l = arg;
    memset(l, 0, sizeof *l);
    return batch_each(t, -1, loaded_fn, arg);
}

typedef struct Run {
    const char *form;       /* "preload" or "listen" */
    Proc eng, ql, perf_e, perf_q;
    EngineStats es;
    double secs;            /* the measured time */
    double cpu_engine, cpu_qload, cpu_pg, cpu_client;
    HloadResult hr;
    double ingest_secs;     /* listen: until the last answer */
    int ok;
    char err[600];
} Run;

typedef struct Client {
    HloadOpts o;
    HloadResult *r;
    int rc;
    double cpu_s;
} Client;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *client_thread(void *arg)
{
    Client *c = arg;
    double c0 = thread_cpu();
    c->rc = hload_run(&c->o, c->r);
    c->cpu_s = thread_cpu() - c0;
    return NULL;
}

static void perf_attach(Proc *p, pid_t pid, const char *tag)
{
    char pids[32], out[400], log[400];
    snprintf(pids, sizeof pids, "%d", (int)pid);
    snprintf(out, sizeof out, "%s/perf.%s.data", basedir, tag);
    snprintf(log, sizeof log, "%s/perf.%s.log", basedir, tag);
    char *argv[] = {"perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384", "-p", pids,
                    "-o", out, NULL};
    if (proc_start(p, argv, log, log) != 0)
        fprintf(stderr, "pipebench: perf: %s\n", p->err);
}

/* run_line runs one form of the line (see the top) and fills r. */
static void run_line(Run *r, const char *form, unsigned round)
{
    char dir[400], stats[400], out[400], err[400], ready[420];
    memset(r, 0, sizeof *r);
    r->form = form;
    int listen = !strcmp(form, "listen");
    snprintf(dir, sizeof dir, "%s/data-%s-%u", basedir, form, round);
    snprintf(stats, sizeof stats, "%s/engine-%s-%u.stats", basedir, form, round);
    snprintf(ready, sizeof ready, "%s.ready", stats);
    reset_target();
    if (listen)
        rm_rf(dir);
    else
        preload(dir);
    malloc_trim(0);

    /* The store is watched from here: opened while nobody writes to it (an
     * open races with a writer that grows the map: MDB_MAP_RESIZED). */
    Store *s = NULL;
    StoreOpts so = {0};
    int rc;
    if (!listen && (rc = store_open(dir, &so, &s)) != 0)
        die(dir, pl_strerror(rc));
    pid_t pgp = pg_pid();
    double pg0 = pgp ? proc_tree_cpu(pgp) : 0;
    uint64_t t0 = pl_mono_ns();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%u", port);
    char *eargv[] = {self_path, "--engine-child", yaml_path, dir, portarg, stats, NULL};
    snprintf(out, sizeof out, "%s/engine-%s-%u.out", basedir, form, round);
    snprintf(err, sizeof err, "%s/engine-%s-%u.err", basedir, form, round);
    children[0] = &r->eng;
    children[1] = &r->ql;
    children[2] = &r->perf_e;
    children[3] = &r->perf_q;
    if (proc_start(&r->eng, eargv, out, err) != 0)
        die("engine", r->eng.err);
    /* The engine is ready once it listens (its store and queues exist). */
    while (access(ready, F_OK) != 0) {
        if (!proc_poll(&r->eng)) {
            snprintf(r->err, sizeof r->err, "the engine stopped: %s", r->eng.err);
            return;
        }
        usleep(1000);
    }
    if (listen && (rc = store_open(dir, &so, &s)) != 0)
        die(dir, pl_strerror(rc));
    char *qargv[] = {qload_path, "--data", dir, "--target", (char *)pgtmp_conninfo(pg), "--follow",
                     "--mode", "append", "--poll", "0.05", "--json", "--quiet", NULL};
    snprintf(out, sizeof out, "%s/qload-%s-%u.out", basedir, form, round);
    snprintf(err, sizeof err, "%s/qload-%s-%u.err", basedir, form, round);
    if (proc_start(&r->ql, qargv, out, err) != 0)
        die("qload", r->ql.err);
    if (opt_perf) {
        perf_attach(&r->perf_e, r->eng.pid, form);
        char tag[64];
        snprintf(tag, sizeof tag, "%s.qload", form);
        perf_attach(&r->perf_q, r->ql.pid, tag);
    }

    Client c = {.r = &r->hr};
    pthread_t th;
    if (listen) {
        t0 = pl_mono_ns();
        c.o = (HloadOpts){.port = port, .path = "/queues/in/jobs", .conns = opt_clients,
                          .ctype = opt_bulk > 1 ? "application/x-ndjson" : "application/json",
                          .buf = jobs.buf, .off = opt_bulk > 1 ? reqoff : joff,
                          .n = opt_bulk > 1 ? nreq : 2 * opt_rows - 1, .stride = opt_bulk > 1 ? 1 : 2};
        pthread_create(&th, NULL, client_thread, &c);
    }

    Loaded l = {0};
    for (;;) {
        if (store_read(s, loaded_apply, &l) != 0)
            die("reading the batches", dir);
        if (l.rows >= opt_rows || l.failed)
            break;
        if (!proc_poll(&r->eng) || !proc_poll(&r->ql))
            break;
        usleep(5000);
    }
    r->secs = (double)(pl_mono_ns() - t0) / 1e9;
    store_close(s);
    r->cpu_engine = proc_cpu(r->eng.pid);
    r->cpu_qload = proc_cpu(r->ql.pid);
    r->cpu_pg = pgp ? proc_tree_cpu(pgp) - pg0 : 0;
    if (listen) {
        pthread_join(th, NULL);
        r->cpu_client = c.cpu_s;
        r->ingest_secs = r->hr.secs;
        if (c.rc != 0)
            snprintf(r->err, sizeof r->err, "the load client: %s", r->hr.err);
    }
    if (opt_perf) {
        proc_stop(&r->perf_e, SIGINT, 60);
        proc_stop(&r->perf_q, SIGINT, 60);
    }
    int erc = proc_stop(&r->eng, SIGTERM, 60), qrc = proc_stop(&r->ql, SIGTERM, 30);
    if (!r->err[0] && l.failed)
        snprintf(r->err, sizeof r->err, "%llu batches failed or held (qctl --data %s batches)",
                 (unsigned long long)l.failed, dir);
    if (!r->err[0] && l.rows < opt_rows)
        snprintf(r->err, sizeof r->err, "%s stopped before every row was loaded (%llu of %zu): "
                 "%s", erc ? "the engine" : "qload", (unsigned long long)l.rows, opt_rows,
                 erc ? r->eng.err : r->ql.err);
    if (!r->err[0] && erc)
        snprintf(r->err, sizeof r->err, "the engine: %s", r->eng.err);
    (void)qrc; /* qload exits 0 on SIGTERM; its errors show as rows not loaded */
    if (!r->err[0] && read_stats(stats, &r->es) != 0)
        snprintf(r->err, sizeof r->err, "the engine wrote no counters to %s", stats);
    if (!opt_keep)
        rm_rf(dir);
    r->ok = !r->err[0];
}

static double run_psql(Proc *p)
{
    Strbuf cols, cmd;
    sb_init(&cols);
    sb_init(&cmd);
    model_columns(users, &cols);
    sb_addf(&cmd, "\\copy users (%s) FROM '%s' WITH (FORMAT csv)", cols.buf, csv_path);
    char *argv[] = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", (char *)pgtmp_conninfo(pg), "-c",
                    cmd.buf, NULL};
    char out[400];
    snprintf(out, sizeof out, "%s/psql.out", basedir);
    reset_target();
    malloc_trim(0);
    if (proc_run(p, argv, out, out) != 0)
        die("psql \\copy", p->err);
    sb_free(&cols);
    sb_free(&cmd);
    return (double)opt_rows / p->secs;
}

/* ---------------------------------------------------------------- ingest */

#define INGEST_BODY 200
#define INGEST_BULK 1000

/* The ingest jobs: line i ({"body":{...}}, 200-byte body, NDJSON) at
 * ilines.buf + ioff[i]; its body at ibody_off[i] (ibody_len bytes). */
static Strbuf ilines;
static size_t *ioff, *ibody, *ireq, nireq;
static char ingest_path[400];

static void make_ingest(void)
{
    sb_init(&ilines);
    ioff = xmalloc((opt_jobs + 1) * sizeof *ioff);
    ibody = xmalloc((opt_jobs + 1) * sizeof *ibody);
    for (size_t i = 0; i < opt_jobs; i++) {
        char body[INGEST_BODY + 1];
        int n = snprintf(body, sizeof body, "{\"change\":%zu,\"table\":\"users\",\"op\":\"update\","
                         "\"at\":\"2026-11-25T10:00:00Z\",\"pad\":\"", i);
        while (n < INGEST_BODY - 2)
            body[n++] = 'x';
        body[n++] = '"';
        body[n++] = '}';
        body[n] = '\0';
        ioff[i] = ilines.len;
        sb_adds(&ilines, "{\"body\":");
        ibody[i] = ilines.len;
        sb_add(&ilines, body, (size_t)n);
        sb_adds(&ilines, "}\n");
    }
    ioff[opt_jobs] = ilines.len;
    nireq = (opt_jobs + INGEST_BULK - 1) / INGEST_BULK;
    ireq = xmalloc((nireq + 1) * sizeof *ireq);
    for (size_t r = 0; r < nireq; r++)
        ireq[r] = ioff[r * INGEST_BULK];
    ireq[nireq] = ilines.len;
    snprintf(ingest_path, sizeof ingest_path, "%s/ingest.ndjson", basedir);
    FILE *f = fopen(ingest_path, "w");
    if (!f || fwrite(ilines.buf, 1, ilines.len, f) != ilines.len || fclose(f) != 0)
        die(ingest_path, strerror(errno));
}

static const char ingest_yaml_fmt[] =
    "# pipebench ingest: a queue nobody reads\n"
    "listen: {port: %u, max_body: 4194304}\n"
    "queues:\n"
    "  in: {}\n"
    "  side: {}\n"
    "  out: {}\n"
    "stages:\n"
    "  - {name: idle, kind: noop, input: side, output: out}\n";

/* run_import: qctl import of every ingest job into a fresh store; jobs/s. */
static double run_import(unsigned round, Proc *p)
{
    char dir[400], cmd[PATH_MAX + 1000], out[400];
    snprintf(dir, sizeof dir, "%s/import-%u", basedir, round);
    rm_rf(dir);
    snprintf(out, sizeof out, "%s/import.out", basedir);
    /* qctl reads stdin: through sh, timed as a process all the same. */
    snprintf(cmd, sizeof cmd, "exec '%s' --data '%s' import in < '%s'", qctl_path, dir, ingest_path);
    char *argv[] = {"sh", "-c", cmd, NULL};
    malloc_trim(0);
    if (proc_run(p, argv, out, out) != 0)
        die("qctl import", p->err);
    rm_rf(dir);
    return (double)opt_jobs / p->secs;
}

/* run_posts: the engine on a fresh store, every ingest job POSTed, bulk
 * (INGEST_BULK a request) or one by one; jobs/s until the last answer. */
static double run_posts(unsigned round, int bulk, Run *r)
{
    char dir[400], stats[420], out[420], err[420], ready[440], path[400], portarg[16];
    memset(r, 0, sizeof *r);
    snprintf(dir, sizeof dir, "%s/ingest-%s-%u", basedir, bulk ? "bulk" : "single", round);
    snprintf(stats, sizeof stats, "%s.stats", dir);
    snprintf(ready, sizeof ready, "%s.ready", stats);
    snprintf(path, sizeof path, "%s/ingest.yml", basedir);
    snprintf(out, sizeof out, "%s.out", dir);
    snprintf(err, sizeof err, "%s.err", dir);
    snprintf(portarg, sizeof portarg, "%u", port);
    rm_rf(dir);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, ingest_yaml_fmt, port) < 0 || fclose(f) != 0)
        die(path, strerror(errno));
    char *eargv[] = {self_path, "--engine-child", path, dir, portarg, stats, NULL};
    children[0] = &r->eng;
    if (proc_start(&r->eng, eargv, out, err) != 0)
        die("engine", r->eng.err);
    while (access(ready, F_OK) != 0) {
        if (!proc_poll(&r->eng))
            die("the engine stopped", r->eng.err);
        usleep(1000);
    }
    size_t *off = bulk ? ireq : ibody;
    size_t *tmp = NULL;
    if (!bulk) {
        /* body i: ibody[i] .. ibody[i] + INGEST_BODY; hload wants off[i+1]
         * as the end: make the pairs. */
        tmp = xmalloc(2 * opt_jobs * sizeof *tmp);
        for (size_t i = 0; i < opt_jobs; i++) {
            tmp[2 * i] = ibody[i];
            tmp[2 * i + 1] = ibody[i] + INGEST_BODY;
        }
    }
    HloadResult hr;
    int rc = 0;
    if (bulk) {
        HloadOpts o = {.port = port, .path = "/queues/in/jobs", .ctype = "application/x-ndjson",
                       .conns = opt_clients, .buf = ilines.buf, .off = off, .n = nireq};
        rc = hload_run(&o, &hr);
    } else {
        /* One request per job: hload sends off[i] .. off[i+1], so every
         * other entry of tmp is a body and the rest are skipped by
         * sending requests 0, 2, 4, ... */
        HloadOpts o = {.port = port, .path = "/queues/in/jobs", .ctype = "application/json",
                       .conns = opt_clients, .buf = ilines.buf, .off = tmp, .n = 2 * opt_jobs - 1,
                       .stride = 2};
        rc = hload_run(&o, &hr);
    }
    free(tmp);
    r->hr = hr;
    r->ingest_secs = hr.secs;
    r->cpu_engine = proc_cpu(r->eng.pid);
    if (proc_stop(&r->eng, SIGTERM, 60) != 0 && !r->err[0])
        snprintf(r->err, sizeof r->err, "the engine: %s", r->eng.err);
    if (rc != 0)
        snprintf(r->err, sizeof r->err, "the load client: %s", hr.err);
    if (!r->err[0] && read_stats(stats, &r->es) != 0)
        snprintf(r->err, sizeof r->err, "the engine wrote no counters to %s", stats);
    if (!opt_keep)
        rm_rf(dir);
    r->ok = !r->err[0];
    return r->ok ? (double)opt_jobs / hr.secs : 0;
}

static void bench_ingest(void)
{
    make_ingest();
    double best_imp = 0, best_bulk = 0, best_single = 0;
    Run rb = {0}, rs = {0}, r;
    char extra[300], lab[100];
    for (unsigned round = 1; round <= opt_rounds; round++) {
        Proc p;
        double v = run_import(round, &p);
        if (v > best_imp)
            best_imp = v;
        snprintf(lab, sizeof lab, "round %u: qctl import", round);
        snprintf(extra, sizeof extra, "(%.2f s, cpu %.2f s)", p.secs, p.cpu_s);
        report_info(lab, v, "jobs/s", extra);
        for (int bulk = 1; bulk >= 0; bulk--) {
            v = run_posts(round, bulk, &r);
            snprintf(lab, sizeof lab, "round %u: POST %s", round, bulk ? "bulk" : "1 job/request");
            if (!r.ok) {
                report_note(lab, "", r.err);
                continue;
            }
            snprintf(extra, sizeof extra, "(%.2f s; CPU engine %.2f s; %llu commits, p99 answer "
                     "%.1f ms)", r.ingest_secs, r.cpu_engine, r.es.commits, r.hr.lat_p99_ms);
            report_info(lab, v, "jobs/s", extra);
            if (bulk && v > best_bulk)
                best_bulk = v, rb = r;
            if (!bulk && v > best_single)
                best_single = v, rs = r;
        }
    }
    char params[300];
    snprintf(params, sizeof params, "\"jobs\":%zu,\"body_bytes\":%d,\"clients\":%u,\"bulk\":%d,"
             "\"rounds\":%u", opt_jobs, INGEST_BODY, opt_clients, INGEST_BULK, opt_rounds);
    if (best_bulk > 0) {
        report_row("ingest_bulk_jobs_per_s", "POST bulk (1000 jobs/request), durable answers", params,
                   best_bulk, "jobs/s", "qctl import (1000/commit)", best_imp, ">= 0.7x");
        report_row("ingest_bulk_answer_p99", "  answer p99 (a request of 1000)", params,
                   rb.hr.lat_p99_ms, "ms", NULL, 0, NULL);
        report_row("ingest_bulk_ops_per_commit", "  requests per commit (mean)", params,
                   rb.es.commits ? (double)rb.es.ops / (double)rb.es.commits : 0, "ops", NULL, 0, NULL);
    }
    snprintf(params, sizeof params, "\"jobs\":%zu,\"body_bytes\":%d,\"clients\":%u,\"bulk\":1,"
             "\"rounds\":%u", opt_jobs, INGEST_BODY, opt_clients, opt_rounds);
    if (best_single > 0) {
        report_row("ingest_single_jobs_per_s", "POST 1 job/request, durable answers", params,
                   best_single, "jobs/s", "qctl import (1000/commit)", best_imp, NULL);
        report_row("ingest_single_ops_per_commit", "  requests per commit (mean)", params,
                   rs.es.commits ? (double)rs.es.ops / (double)rs.es.commits : 0, "ops", NULL, 0, NULL);
    }
    sb_free(&ilines);
    free(ioff);
    free(ibody);
    free(ireq);
}

/* ---------------------------------------------------------------- report */

static void report_line(const Run *best, double psql_rps, const char *params, const char *name,
                        const char *label)
{
    char lab[120], pp[400];
    const EngineStats *s = &best->es;
    double wall = best->secs;
    report_row(name, label, params, (double)opt_rows / wall, "rec/s", "psql \\copy csv", psql_rps,
               ">= 0.5x");
#define DETAIL(suffix, text, value, unit)                                                  \
    do {                                                                                   \
        snprintf(lab, sizeof lab, "  %s", text);                                           \
        snprintf(pp, sizeof pp, "%s", params);                                             \
        char nm[100];                                                                      \
        snprintf(nm, sizeof nm, "%s_%s", name, suffix);                                    \
        report_row(nm, lab, pp, value, unit, NULL, 0, NULL);                               \
    } while (0)
    DETAIL("seconds", "wall time", wall, "s");
    if (best->ingest_secs > 0)
        DETAIL("ingest_seconds", "of it until the last POST answered", best->ingest_secs, "s");
    DETAIL("commits", "commits", (double)s->commits, "");
    DETAIL("ops_per_commit", "ops per commit (mean)", s->commits ? (double)s->ops / (double)s->commits : 0,
           "ops");
    DETAIL("writer_busy", "writer busy (time in commits / wall)", 100.0 * (double)s->commit_ns / 1e9 / wall,
           "%");
    DETAIL("apply_share", "of commit time: applying the ops",
           s->commit_ns ? 100.0 * (double)s->apply_ns / (double)s->commit_ns : 0, "%");
    DETAIL("flush_share", "of commit time: commit and 2 flushes",
           s->commit_ns ? 100.0 * (double)(s->commit_ns - s->apply_ns) / (double)s->commit_ns : 0, "%");
    DETAIL("commit_mean", "mean commit", s->commits ? (double)s->commit_ns / (double)s->commits / 1e6 : 0,
           "ms");
    DETAIL("loop_block_max", "longest loop block", (double)s->block_max_ns / 1e6, "ms");
    DETAIL("cpu_engine", "CPU: engine", best->cpu_engine, "s");
    DETAIL("cpu_qload", "CPU: qload", best->cpu_qload, "s");
    DETAIL("cpu_postgres", "CPU: PostgreSQL (server, backends)", best->cpu_pg, "s");
    if (best->cpu_client > 0)
        DETAIL("cpu_client", "CPU: the load client", best->cpu_client, "s");
    DETAIL("rss_engine", "peak RSS: engine", best->eng.rss_mib, "MiB");
    DETAIL("rss_qload", "peak RSS: qload", best->ql.rss_mib, "MiB");
#undef DETAIL
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pipebench [--rows N] [--rounds N] [--only copy|preload|listen|ingest]\n"
            "                 [--clients N] [--bulk K] [--batch-rows R] [--concurrency C]\n"
            "                 [--reserve B] [--jobs N] [--json] [--keep] [--perf]\n"
            "  --rows N         users rows through the line (default 300000)\n"
            "  --rounds N       rounds of each form and of psql; the best counts (default 2)\n"
            "  --only FORM      copy (psql alone), preload, listen, or ingest (the listener alone)\n"
            "  --clients N      listen: connections at once (default 64)\n"
            "  --bulk K         listen: K jobs per request (NDJSON, default 1000); 1: one job per request\n"
            "  --batch-rows R   the batch stage seals at R rows (default 50000)\n"
            "  --concurrency C  slots of each stage (default 1024)\n"
            "  --reserve B      jobs per reserve (the stages' batch:, default 256)\n"
            "  --jobs N         ingest: jobs of 200 bytes (default 300000)\n"
            "  --json           one JSON object per row\n"
            "  --keep           keep the scratch directory\n"
            "  --perf           perf record the engine and qload (files in the scratch dir)\n");
}

static unsigned long parse_count(const char *opt, const char *s, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || v == 0 || v > max) {
        fprintf(stderr, "pipebench: %s wants a whole number from 1 to %lu (got '%s')\n", opt, max, s);
        exit(2);
    }
    return v;
}

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
        die("a free port", strerror(errno));
    close(fd);
    return ntohs(sa.sin_port);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--engine-child"))
        return engine_child(argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json"))
            ; /* report_init */
        else if (!strcmp(a, "--keep"))
            opt_keep = 1;
        else if (!strcmp(a, "--perf"))
            opt_perf = opt_keep = 1;
        else if (!strcmp(a, "--rows") && i + 1 < argc)
            opt_rows = parse_count(a, argv[++i], 100000000);
        else if (!strcmp(a, "--rounds") && i + 1 < argc)
            opt_rounds = (unsigned)parse_count(a, argv[++i], 100);
        else if (!strcmp(a, "--clients") && i + 1 < argc)
            opt_clients = (unsigned)parse_count(a, argv[++i], 1000);
        else if (!strcmp(a, "--bulk") && i + 1 < argc)
            opt_bulk = (unsigned)parse_count(a, argv[++i], 100000);
        else if (!strcmp(a, "--batch-rows") && i + 1 < argc)
            opt_batch_rows = parse_count(a, argv[++i], 10000000);
        else if (!strcmp(a, "--concurrency") && i + 1 < argc)
            opt_conc = (unsigned)parse_count(a, argv[++i], 65536);
        else if (!strcmp(a, "--reserve") && i + 1 < argc)
            opt_rsv = (unsigned)parse_count(a, argv[++i], 256);
        else if (!strcmp(a, "--jobs") && i + 1 < argc)
            opt_jobs = parse_count(a, argv[++i], 100000000);
        else if (!strcmp(a, "--only") && i + 1 < argc)
            opt_only = argv[++i];
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pipebench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    int json = 0;
    for (int i = 1; i < argc; i++)
        json |= !strcmp(argv[i], "--json");
    if (opt_only && strcmp(opt_only, "copy") && strcmp(opt_only, "preload") && strcmp(opt_only, "listen") &&
        strcmp(opt_only, "ingest")) {
        fprintf(stderr, "pipebench: --only takes copy, preload, listen or ingest\n");
        return 2;
    }
    pl_log_level = PL_LOG_WARN;
    signal(SIGPIPE, SIG_IGN);
    proc_self_dir(selfdir, sizeof selfdir);
    snprintf(qload_path, sizeof qload_path, "%s/qload", selfdir);
    snprintf(self_path, sizeof self_path, "%s/pipebench", selfdir);
    snprintf(qctl_path, sizeof qctl_path, "%s/qctl", selfdir);
    if (access(qload_path, X_OK) != 0)
        die(qload_path, "not found: build qload next to pipebench (scons)");
    report_init(json, argc, argv);

    snprintf(basedir, sizeof basedir, "/var/tmp/pipebench.XXXXXX");
    if (!mkdtemp(basedir))
        die("mkdtemp", strerror(errno));
    snprintf(csv_path, sizeof csv_path, "%s/users.csv", basedir);
    port = free_port();
    if (opt_only && !strcmp(opt_only, "ingest")) {
        bench_ingest();
        rm_rf(basedir);
        return 0;
    }
    write_yaml();
    make_rows();

    char err[512];
    if (!(pg = pgtmp_start(err, sizeof err)))
        die("PostgreSQL", err);
    conn = PQconnectdb(pgtmp_conninfo(pg));
    if (PQstatus(conn) != CONNECTION_OK)
        die("connecting to PostgreSQL", PQerrorMessage(conn));
    Strbuf ddl;
    sb_init(&ddl);
    models_ddl(pipe_->models, &ddl);
    sql_do(ddl.buf);
    sb_free(&ddl);
    {
        PGresult *r = sql("SELECT current_setting('server_version')");
        report_text("data in %s; PostgreSQL %s (fsync=on, synchronous_commit=on); %zu users rows, "
                    "%.0f B of JSON per job; every commit durable\n", basedir, PQgetvalue(r, 0, 0),
                    opt_rows, (double)(joff[1] - joff[0]));
        PQclear(r);
    }

    int do_pre = !opt_only || !strcmp(opt_only, "preload");
    int do_lis = !opt_only || !strcmp(opt_only, "listen");
    double best_psql = 0;
    Run best_pre = {0}, best_lis = {0}, r;
    Digest ref = {0}, d;
    char extra[300];
    for (unsigned round = 1; round <= opt_rounds; round++) {
        Proc p;
        double v = run_psql(&p);
        digest(&d);
        if (d.rows != (long long)opt_rows)
            die("psql \\copy", "loaded a different number of rows");
        ref = d;
        if (v > best_psql)
            best_psql = v;
        snprintf(extra, sizeof extra, "(%.2f s, cpu %.2f s, peak RSS %.1f MiB)", p.secs, p.cpu_s,
                 p.rss_mib);
        char lab[80];
        snprintf(lab, sizeof lab, "round %u: psql \\copy", round);
        report_info(lab, v, "rows/s", extra);
        for (int f = 0; f < 2; f++) {
            if ((f == 0 && !do_pre) || (f == 1 && !do_lis))
                continue;
            run_line(&r, f == 0 ? "preload" : "listen", round);
            snprintf(lab, sizeof lab, "round %u: %s", round, r.form);
            if (!r.ok) {
                report_note(lab, "", r.err);
                continue;
            }
            digest(&d);
            if (d.rows != ref.rows || strcmp(d.sum, ref.sum) != 0) {
                snprintf(extra, sizeof extra, "the warehouse holds other rows than psql loaded "
                         "(%lld rows, digest %s; psql: %lld, %s)", d.rows, d.sum, ref.rows, ref.sum);
                report_note(lab, "", extra);
                continue;
            }
            snprintf(extra, sizeof extra, "(%.2f s; CPU engine %.2f, qload %.2f, pg %.2f s)", r.secs,
                     r.cpu_engine, r.cpu_qload, r.cpu_pg);
            report_info(lab, (double)opt_rows / r.secs, "rec/s", extra);
            Run *b = f == 0 ? &best_pre : &best_lis;
            if (!b->ok || r.secs < b->secs)
                *b = r;
        }
    }
    char params[300];
    snprintf(params, sizeof params, "\"rows\":%zu,\"columns\":%zu,\"rounds\":%u", opt_rows,
             users->nfields, opt_rounds);
    report_row("psql_copy_rows_per_s", "psql \\copy csv (best)", params, best_psql, "rows/s", NULL, 0,
               NULL);
    snprintf(params, sizeof params, "\"rows\":%zu,\"batch_rows\":%zu,\"concurrency\":%u,\"reserve\":%u,"
             "\"rounds\":%u", opt_rows, opt_batch_rows, opt_conc, opt_rsv, opt_rounds);
    if (best_pre.ok)
        report_line(&best_pre, best_psql, params, "e2e_preload",
                    "preloaded queue -> validate -> batch -> qload");
    snprintf(params + strlen(params), sizeof params - strlen(params), ",\"clients\":%u,\"bulk\":%u",
             opt_clients, opt_bulk);
    if (best_lis.ok)
        report_line(&best_lis, best_psql, params, "e2e_listen",
                    opt_bulk > 1 ? "POST bulk -> validate -> batch -> qload"
                                 : "POST 1 job/request -> validate -> batch -> qload");

    if (!opt_only)
        bench_ingest();

    PQfinish(conn);
    pgtmp_stop(pg);
    pipeline_free(pipe_);
    sb_free(&yaml);
    sb_free(&jobs);
    free(joff);
    free(loff);
    free(reqoff);
    if (opt_keep)
        fprintf(stderr, "pipebench: kept %s\n", basedir);
    else
        rm_rf(basedir);
    return 0;
}
