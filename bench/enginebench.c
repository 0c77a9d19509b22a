/* enginebench: the engine's own costs, with a peer in the same run.
 *
 *   chain     jobs/s through 3 no-op stages (q0 -> q1 -> q2 -> q3), against
 *             the durable cycle through the group committer at the same
 *             batch size (bench/cycles.c, qbench's "group commit" row).
 *             Each stage works up to 1024 jobs at once (concurrency), in
 *             reserves of 100; the peer keeps 80 ops of 100 jobs in flight,
 *             so both have thousands of jobs in the air and commits are
 *             shared the same way.
 *   enrich    http_enrich requests/s against a local fixture that answers
 *             at once (keep-alive), and the loop's longest block
 *   listener  change notices accepted per second (durable 202s) at 64
 *             concurrent clients (wrk), against beanstalkd puts (-f 0) from
 *             64 connections
 *
 *   enginebench [--json] [--quick] [--only chain|enrich|listener]
 * Prints a table; with --json one JSON object per row. Asserts no time. */
#include "engine.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"
#include "kinds.h"
#include "cycles.h"
#include "peer.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int opt_json, opt_quick;
static const char *opt_only;
static char basedir[256];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "enginebench: %s: %s\n", what, why);
    exit(1);
}

static void row(const char *name, const char *label, const char *params, double v, const char *unit,
                const char *peer, double pv)
{
    if (opt_json) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"value\":%.6g,\"unit\":\"%s\"", name, params, v, unit);
        if (peer && pv > 0)
            printf(",\"peer\":\"%s\",\"peer_value\":%.6g,\"ratio\":%.4g", peer, pv, v / pv);
        printf("}\n");
    } else if (peer && pv > 0) {
        printf("%-40s %12.1f %-10s %12.1f %7.2fx  (%s)\n", label, v, unit, pv, v / pv, peer);
    } else {
        printf("%-40s %12.1f %-10s\n", label, v, unit);
    }
    fflush(stdout);
}

/* ---------------------------------------------------------------- engine */

typedef struct Run {
    Pipeline *p;
    Engine *e;
    pthread_t th;
    char dir[300];
} Run;

static void *run_thread(void *arg)
{
    Run *r = arg;
    engine_run(r->e);
    return NULL;
}

/* run_open writes yaml into the bench dir, loads it and opens the engine
 * (not yet running: the caller may prefill through engine_store). */
static void run_open(Run *r, const char *name, const char *yaml)
{
    char path[400], cmd[400], err[512];
    snprintf(r->dir, sizeof r->dir, "%s/%s", basedir, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    if (system(cmd) != 0)
        die("rm", r->dir);
    snprintf(path, sizeof path, "%s/%s.yml", basedir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        die("write", path);
    fputs(yaml, f);
    fclose(f);
    if (pipeline_load(path, stage_kind_specs, &r->p, err, sizeof err) != 0)
        die("pipeline", err);
    EngineOpts o = {.data_dir = r->dir};
    if (engine_open(r->p, stage_kinds, &o, &r->e, err, sizeof err) != 0)
        die("engine", err);
}

static void run_start(Run *r)
{
    pthread_create(&r->th, NULL, run_thread, r);
}

static void run_close(Run *r)
{
    engine_stop(r->e);
    pthread_join(r->th, NULL);
    engine_close(r->e);
    pipeline_free(r->p);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "enginebench: cannot remove %s\n", r->dir);
}

typedef struct Depth {
    const char *queue;
    uint64_t ready;
} Depth;

static int read_depth(Txn *t, void *arg)
{
    Depth *d = arg;
    QueueStats st;
    int rc = queue_stats(t, d->queue, &st);
    d->ready = rc ? 0 : st.ready;
    return rc == PL_ENOQUEUE ? 0 : rc;
}

/* wait_depth polls until queue holds n ready jobs; returns seconds waited. */
static double wait_depth(Run *r, const char *queue, uint64_t n, uint64_t t0)
{
    Depth d = {queue, 0};
    for (;;) {
        if (store_read(engine_store(r->e), read_depth, &d) != 0)
            die("read", queue);
        if (d.ready >= n)
            return (double)(pl_mono_ns() - t0) / 1e9;
        usleep(2000);
    }
}

typedef struct Fill {
    const char *queue;
    size_t from, n;
    int rows;  /* also stage a row {"address": ...} per job (enrich) */
} Fill;

static int fill_apply(Txn *t, void *arg)
{
    Fill *f = arg;
    char body[128], key[64];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = 0;
    for (size_t i = f->from; i < f->from + f->n && !rc; i++) {
        int len;
        snprintf(key, sizeof key, "%zu", i);
        if (f->rows) {
            /* The staged row {"address": "street N"} (a new instance, as an
             * extract stage lands it) and the reference to it. */
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_sbuffer_clear(&sb);
            char addr[64];
            int al = snprintf(addr, sizeof addr, "street %zu", i);
            msgpack_pack_map(&pk, 1);
            msgpack_pack_str(&pk, 7);
            msgpack_pack_str_body(&pk, "address", 7);
            msgpack_pack_str(&pk, (size_t)al);
            msgpack_pack_str_body(&pk, addr, (size_t)al);
            uint64_t row;
            if ((rc = staging_row_new(t, "geo", key, sb.data, sb.size, 1, &row)) != 0)
                break;
            len = snprintf(body, sizeof body, "{\"model\":\"geo\",\"key\":\"%s\",\"row_id\":%llu}",
                           key, (unsigned long long)row);
        } else {
            len = snprintf(body, sizeof body, "{\"change\":%zu,\"table\":\"users\",\"pad\":\"%s\"}", i,
                           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        }
        PutArgs a = {.body = body, .len = (size_t)len};
        uint64_t id;
        rc = queue_put(t, f->queue, &a, &id, NULL);
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void prefill(Run *r, const char *queue, size_t n, int rows)
{
    for (size_t done = 0; done < n;) {
        Fill f = {queue, done, n - done < 10000 ? n - done : 10000, rows};
        int rc = store_run(engine_store(r->e), fill_apply, &f);
        if (rc)
            die("prefill", pl_strerror(rc));
        done += f.n;
    }
}

/* ---------------------------------------------------------------- chain */

static void bench_chain(void)
{
    size_t n = opt_quick ? 20000 : 200000;
    unsigned batch = 100;
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "queues: {q0: {max_body: 4096}, q1: {}, q2: {}, q3: {}}\n"
             "stages:\n"
             "  - {name: s1, kind: noop, input: q0, output: q1, concurrency: 1024, batch: %u}\n"
             "  - {name: s2, kind: noop, input: q1, output: q2, concurrency: 1024, batch: %u}\n"
             "  - {name: s3, kind: noop, input: q2, output: q3, concurrency: 1024, batch: %u}\n",
             batch, batch, batch);
    Run r = {0};
    run_open(&r, "chain", yaml);
    prefill(&r, "q0", n, 0);
    uint64_t t0 = pl_mono_ns();
    run_start(&r);
    double dt = wait_depth(&r, "q3", n, t0);
    CommitStats cs;
    engine_commit_stats(r.e, &cs);
    double block = (double)engine_loop_block_max(r.e) / 1e6;
    run_close(&r);

    /* The peer: the durable cycle through the committer, same batch. */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/cycle", basedir);
    StoreOpts so = {.create = 1, .map_initial = (size_t)1 << 30};
    Store *s;
    if (store_open(dir, &so, &s) != 0)
        die("open", dir);
    double opc;
    double cyc = cycles_group(s, 80, batch, n, &opc);
    store_close(s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "enginebench: cannot remove %s\n", dir);

    char params[200];
    snprintf(params, sizeof params, "\"stages\":3,\"batch\":%u,\"concurrency\":1024,\"jobs\":%zu",
             batch, n);
    row("chain_jobs_per_s", "3 no-op stages x1024, batch 100", params, (double)n / dt, "jobs/s",
        "durable cycle via committer, batch 100", cyc);
    row("chain_ops_per_commit", "  ops per commit (mean)", params,
        cs.commits ? (double)cs.ops / (double)cs.commits : 0, "ops", NULL, 0);
    row("chain_loop_block_max", "  longest loop block", params, block, "ms", NULL, 0);
    row("chain_commit_mean", "  mean commit (apply + 2 flushes)", params,
        cs.commits ? (double)cs.commit_ns_total / (double)cs.commits / 1e6 : 0, "ms", NULL, 0);
    row("chain_apply_share", "  of which running the ops", params,
        cs.commit_ns_total ? 100.0 * (double)cs.apply_ns_total / (double)cs.commit_ns_total : 0,
        "%", NULL, 0);
    row("chain_writer_busy", "  writer thread busy (in commits)", params,
        100.0 * (double)cs.commit_ns_total / 1e9 / dt, "%", NULL, 0);
}

/* ---------------------------------------------------------------- enrich */

static enum MHD_Result geo(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                           const char *version, const char *data, size_t *size, void **ptr)
{
    (void)cls, (void)url, (void)method, (void)version, (void)data, (void)size, (void)ptr;
    static const char body[] = "{\"lat\":52.0907,\"lon\":5.1214,\"precision\":\"street\"}";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof body - 1, (void *)body,
                                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void bench_enrich(void)
{
    size_t n = opt_quick ? 10000 : 60000;
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                                            geo, NULL, MHD_OPTION_CONNECTION_LIMIT, 1000,
                                            MHD_OPTION_END);
    if (!d)
        die("fixture", "cannot start the geocoder fixture");
    unsigned port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "queues: {q0: {}, q1: {}}\n"
             "stages:\n"
             "  - name: geocode\n"
             "    kind: http_enrich\n"
             "    input: q0\n"
             "    output: q1\n"
             "    url: http://127.0.0.1:%u/geocode?address={address}\n"
             "    merge: {lat: lat, lon: lon}\n"
             "    concurrency: 64\n"
             "    batch: 64\n",
             port);
    Run r = {0};
    run_open(&r, "enrich", yaml);
    prefill(&r, "q0", n, 1);
    uint64_t t0 = pl_mono_ns();
    run_start(&r);
    double dt = wait_depth(&r, "q1", n, t0);
    double block = (double)engine_loop_block_max(r.e) / 1e6;
    double block_cpu = (double)engine_loop_block_cpu_max(r.e) / 1e6;
    run_close(&r);
    MHD_stop_daemon(d);
    char params[200];
    snprintf(params, sizeof params, "\"concurrency\":64,\"requests\":%zu,\"keepalive\":true", n);
    row("enrich_requests_per_s", "http_enrich vs local fixture (req/s)", params, (double)n / dt, "req/s", NULL, 0);
    row("enrich_loop_block_max", "  longest loop block (wall)", params, block, "ms", NULL, 0);
    row("enrich_loop_block_cpu_max", "  longest loop block (loop thread CPU)", params, block_cpu, "ms",
        NULL, 0);
}

/* ---------------------------------------------------------------- listener */

static double wrk_post(unsigned port, double seconds, char *nonok, size_t nl)
{
    char script[300], cmd[700];
    snprintf(script, sizeof script, "%s/post.lua", basedir);
    FILE *f = fopen(script, "w");
    if (!f)
        die("write", script);
    fputs("wrk.method = \"POST\"\n"
          "wrk.body = '{\"id\":17,\"table\":\"users\",\"op\":\"update\",\"at\":\"2026-11-25T10:00:00Z\"}'\n"
          "wrk.headers[\"Content-Type\"] = \"application/json\"\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "wrk -t2 -c64 -d%.0fs -s '%s' http://127.0.0.1:%u/queues/notices/jobs 2>&1",
             seconds, script, port);
    FILE *p = popen(cmd, "r");
    if (!p)
        die("wrk", strerror(errno));
    char line[512];
    double rps = 0;
    nonok[0] = '\0';
    while (fgets(line, sizeof line, p)) {
        if (!strncmp(line, "Requests/sec:", 13))
            rps = atof(line + 13);
        if (strstr(line, "Non-2xx"))
            snprintf(nonok, nl, "%.200s", line);
    }
    pclose(p);
    return rps;
}

static void bench_listener(void)
{
    if (system("command -v wrk > /dev/null") != 0) {
        fprintf(stderr, "enginebench: wrk is not installed (bash scripts/install-deps.sh); listener skipped\n");
        return;
    }
    double secs = opt_quick ? 3 : 8;
    /* A port of our own: bind 0, read it, release it. */
    char yaml[1024];
    unsigned port = 17000 + (unsigned)(getpid() % 20000);
    snprintf(yaml, sizeof yaml,
             "listen: {port: %u}\n"
             "queues: {notices: {}, out: {}}\n"
             "stages:\n"
             "  - {name: hop, kind: noop, input: notices, output: out, concurrency: 128, batch: 100}\n",
             port);
    Run r = {0};
    run_open(&r, "listener", yaml);
    run_start(&r);
    usleep(200000);
    char nonok[256];
    double rps = wrk_post(engine_listen_port(r.e), secs, nonok, sizeof nonok);
    CommitStats cs;
    engine_commit_stats(r.e, &cs);
    double block = (double)engine_loop_block_max(r.e) / 1e6;
    run_close(&r);
    if (nonok[0])
        fprintf(stderr, "enginebench: wrk saw failures: %s", nonok);
    PeerResult pr;
    char wd[300];
    snprintf(wd, sizeof wd, "%s/beanstalkd", basedir);
    double bv = peer_beanstalkd_puts(wd, 70, 64, secs, &pr) == 0 ? pr.cycles_per_s : 0;
    if (bv == 0)
        fprintf(stderr, "enginebench: beanstalkd peer: %s\n", pr.err);
    row("listener_notices_per_s", "POST notices, 64 clients, durable 202", "\"clients\":64", rps, "req/s",
        "beanstalkd -f 0 puts, 64 connections", bv);
    row("listener_ops_per_commit", "  ops per commit (mean)", "\"clients\":64",
        cs.commits ? (double)cs.ops / (double)cs.commits : 0, "ops", NULL, 0);
    row("listener_loop_block_max", "  longest loop block", "\"clients\":64", block, "ms", NULL, 0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            opt_json = 1;
        else if (!strcmp(argv[i], "--quick"))
            opt_quick = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            opt_only = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: enginebench [--json] [--quick] [--only chain|enrich|listener]\n");
            return 0;
        } else {
            fprintf(stderr, "usage: enginebench [--json] [--quick] [--only chain|enrich|listener]\n");
            return 2;
        }
    }
    pl_log_level = PL_LOG_WARN;
    snprintf(basedir, sizeof basedir, "/var/tmp/enginebench.XXXXXX");
    if (!mkdtemp(basedir))
        die("mkdtemp", strerror(errno));
    if (!opt_json)
        printf("enginebench: data in %s; every commit durable\n%-40s %12s %-10s %12s %8s\n", basedir,
               "workload", "pickline", "unit", "peer", "ratio");
    if (!opt_only || !strcmp(opt_only, "chain"))
        bench_chain();
    if (!opt_only || !strcmp(opt_only, "enrich"))
        bench_enrich();
    if (!opt_only || !strcmp(opt_only, "listener"))
        bench_listener();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", basedir);
    if (system(cmd) != 0)
        fprintf(stderr, "enginebench: cannot remove %s\n", basedir);
    return 0;
}
