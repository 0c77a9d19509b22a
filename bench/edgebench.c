/* edgebench: the edge copy (examples/edge-copy), measured. Two throwaway PostgreSQL
 * clusters (pgtmp: durable, fsync=on), the "source" (the warehouse) and the
 * "edge"; pickline and qload run as child processes found next to this
 * program.
 *
 *   edgebench [--rows N] [--rate R] [--seconds S] [--senders K] [--page N] [--batch-rows N]
 *             [--seal S] [--no-latency] [--no-phases] [--json] [--keep]
 *
 * Initial copy. A users table of N rows (the seed's users model, 14 columns
 * with a marker column; hostile text: quotes, commas, non-ASCII, NULL versus
 * '') is made in the source with INSERT ... SELECT, with the watermark index
 * (updated_at, tenant, id). The peer copies it in the same run:
 *     psql -c "COPY users TO STDOUT" | psql -c "COPY users FROM STDIN"
 * into a fresh database of the edge cluster with the same DDL (the model's:
 * primary key, unique email). Then pickline copies it into another fresh
 * database: `pickline run` (pg_notify + pg_extract, page rows a page, batches
 * sealed at --batch-rows rows (10,000) or S seconds) and `qload --follow --mode merge
 * --create-tables`, started together; the time runs from the engine's start
 * until the target's ledger holds every row. The extract phase ends when
 * every row is staged (the store's batches, read-only); the load phase when
 * the ledger is full. Each copy is checked against the source: the row count
 * and an order-independent digest, sum(hashtextextended(t::text, 0)).
 *
 * Change latency. With the same engine and qload --follow (--poll 0.05)
 * still running, a NOTIFY trigger is put on the source, and K sender threads
 * (own connections) apply R updates a second for S seconds, each in its own
 * transaction: UPDATE users SET marker = i, updated_at = clock_timestamp()
 * WHERE tenant = .. AND id = .. (distinct rows). Update i is sent at
 * start + i/R (a late sender sends at once); its commit time is when the
 * UPDATE returned. A poller thread asks the edge every millisecond for
 * markers above the highest contiguous one seen (an index on marker there)
 * and stamps each on first sight; latency = seen - committed. Prints p50,
 * p99 and max, how many arrived, the achieved send rate, and the batches'
 * own split (open -> sealed -> loaded, from the store). At the end the edge
 * must equal the source again.
 *
 * Prints a table (rows as they are measured); with --json one JSON object per
 * row. Asserts no time. */
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "row.h"
#include "staging.h"
#include "store.h"
#include "pgtmp.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int opt_json, opt_keep, opt_latency = 1, opt_phases = 1;
static size_t opt_rows = 1000000, opt_page = 10000, opt_batch = 10000;
static unsigned opt_rate = 1000, opt_seconds = 10, opt_senders = 4;
static double opt_seal = 0.05; /* a short age: the batch stage seals by rows or by this */

static char basedir[256], datadir[300], yaml_path[300];
static char bindir[PATH_MAX - 32], pickline_path[PATH_MAX], qload_path[PATH_MAX];
static PgTmp *src_pg, *dst_pg;
static char src_ci[600], edge_ci[600], peer_ci[600];
static PGconn *src, *dst;          /* the bench's own connections */
static const Model *users;
static Pipeline *pipe_;
static int failed;                 /* a check failed: exit 1 at the end */

static void die(const char *what, const char *why)
{
    fprintf(stderr, "edgebench: %s: %s\n", what, why);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- output */

static void json_str(const char *s)
{
    Strbuf b;
    sb_init(&b);
    sb_add_json_string(&b, s, strlen(s));
    fputs(b.buf, stdout);
    sb_free(&b);
}

static void row(const char *name, const char *label, const char *params, double v, const char *unit,
                const char *peer, double pv, const char *target)
{
    if (opt_json) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"value\":%.6g,\"unit\":\"%s\"", name, params, v,
               unit);
        if (peer && pv > 0) {
            printf(",\"peer\":");
            json_str(peer);
            printf(",\"peer_value\":%.6g,\"ratio\":%.4g", pv, v / pv);
        }
        if (target) {
            printf(",\"target\":");
            json_str(target);
        }
        printf("}\n");
    } else {
        char tail[200] = "";
        if (peer && pv > 0)
            snprintf(tail, sizeof tail, "%12.1f %7.2fx  %-9s (%s)", pv, v / pv, target ? target : "",
                     peer);
        else if (target)
            snprintf(tail, sizeof tail, "%12s %8s  %-9s", "", "", target);
        printf("%-46s %12.1f %-7s %s\n", label, v, unit, tail);
    }
    fflush(stdout);
}

static void note(const char *name, const char *params, const char *text)
{
    if (opt_json) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"skipped\":", name, params);
        json_str(text);
        printf("}\n");
    } else
        printf("%-46s %s\n", "", text);
    fflush(stdout);
}

/* info prints a line of the human table only (a phase, a check). */
static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...)
{
    if (opt_json)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("  ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

/* ---------------------------------------------------------------- the pipeline */

static const char model_yaml[] =
    "models:\n"
    "  users:\n"
    "    table: users\n"
    "    properties:\n"
    "      tenant:     {type: integer, required: true, min: 0, key: true}\n"
    "      id:         {type: bigint, required: true, key: true}\n"
    "      first_name: {type: string, length: 50, required: true}\n"
    "      last_name:  {type: string, length: 50, required: true}\n"
    "      title:      {type: string, length: 50}\n"
    "      email:\n"
    "        type: string\n"
    "        length: [5, 99]\n"
    "        unique: true\n"
    "        format: email\n"
    "      passhash:   {type: string, length: 50}\n"
    "      salt:       {type: string, length: 50}\n"
    "      permission: {type: integer, default: 1}\n"
    "      phone:      {type: string, length: 50}\n"
    "      created_at: {type: datetime, required: true}\n"
    "      updated_at: {type: datetime, required: true}\n"
    "      deleted_at: {type: datetime, paranoid: true, default: \"2999-12-31T00:00:00Z\"}\n"
    "      marker:     {type: bigint}      # edgebench: the update's number\n";

static void write_pipeline(void)
{
    FILE *f = fopen(yaml_path, "w");
    if (!f)
        die(yaml_path, strerror(errno));
    fprintf(f,
            "# edgebench: the edge copy of a users table (examples/edge-copy)\n"
            "drain: 5\n"
            "%s"
            "queues:\n"
            "  pg_keys: {ttr: 30, max_attempts: 100, backoff: 0.05}\n"
            "stages:\n"
            "  - name: users_notices\n"
            "    kind: pg_notify\n"
            "    dsn: \"env:EDGEBENCH_SOURCE\"\n"
            "    channels: [users_changed]\n"
            "    output: pg_keys\n"
            "    wake: users_src\n"
            "  - name: users_src\n"
            "    kind: pg_extract\n"
            "    input: pg_keys\n"
            "    dsn: \"env:EDGEBENCH_SOURCE\"\n"
            "    table: users\n"
            "    model: users\n"
            "    updated_column: updated_at\n"
            "    interval: 1\n"
            "    page: %zu\n"
            "    rows: %zu\n"
            "    seconds: %g\n",
            model_yaml, opt_page, opt_batch, opt_seal);
    if (fclose(f) != 0)
        die(yaml_path, strerror(errno));
}

/* ---------------------------------------------------------------- postgres */

static PGconn *connect_to(const char *ci)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        die("connecting to PostgreSQL", PQerrorMessage(c));
    PQclear(PQexec(c, "SET TimeZone = 'UTC'"));
    return c;
}

static PGresult *sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "edgebench: PostgreSQL refused %.300s: %s", q, PQerrorMessage(c));
        exit(1);
    }
    return r;
}

static void sql_do(PGconn *c, const char *q)
{
    PQclear(sql(c, q));
}

/* sql_num runs q and returns its first value as a number; -1 when q fails
 * (a table not there yet). */
static long long sql_num(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

typedef struct Digest {
    long long rows;
    char sum[64];
} Digest;

/* digest: the row count and an order-independent hash of every row's text. */
static void digest(PGconn *c, Digest *d)
{
    PGresult *r = sql(c, "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text "
                         "FROM users t");
    d->rows = atoll(PQgetvalue(r, 0, 0));
    snprintf(d->sum, sizeof d->sum, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
}

static int same(const Digest *a, const Digest *b)
{
    return a->rows == b->rows && !strcmp(a->sum, b->sum);
}

/* db_ci writes the conninfo of database db in the cluster of base (a later
 * keyword wins in a libpq conninfo). */
static void db_ci(char *out, size_t n, const char *base, const char *db)
{
    snprintf(out, n, "%s dbname=%s", base, db);
}

static const char seed_sql[] =
    "INSERT INTO users (tenant, id, first_name, last_name, title, email, passhash, salt, "
    "permission, phone, created_at, updated_at, deleted_at) "
    "SELECT g %% 97, g, "
    "(ARRAY['James', 'Zoë', 'Łukasz', 'D''Arcy', 'Jean-Luc', 'Иван', '明美', 'Søren', "
    "'Anne Marie', 'Nguyễn'])[1 + g %% 10], "
    "(ARRAY['Smith', 'O''Brien', 'Smith, Jr.', '\"The Rock\" Johnson', 'Müller', 'van der Berg', "
    "'田中', 'Fernández-López'])[1 + (g / 10) %% 8], "
    "CASE WHEN g %% 5 = 0 THEN NULL WHEN g %% 5 = 1 THEN '' ELSE (ARRAY['Engineer', 'VP, Sales', "
    "'Director of \"Growth\"', 'Café manager'])[1 + (g / 5) %% 4] END, "
    "'user.' || g || '@example.com', "
    "md5(g::text) || substr(md5((g + 1)::text), 1, 12), "
    "substr(md5((g * 3)::text), 1, 16 + g %% 14), "
    "1 + g %% 4, "
    "CASE WHEN g %% 10 < 3 THEN NULL ELSE '+1 (555) ' || lpad((g %% 1000)::text, 3, '0') || '-' || "
    "lpad((g %% 10000)::text, 4, '0') END, "
    "ts, ts + (g %% 8760) * interval '1 hour' + (g %% 999983) * interval '1 microsecond', "
    "CASE WHEN g %% 20 = 0 THEN ts + interval '400 days' ELSE '2999-12-31T00:00:00Z' END "
    "FROM (SELECT g, timestamptz '2019-01-01 00:00:00+00' + g * interval '97 seconds' AS ts "
    "FROM generate_series(1, %zu) g) s";

static const char notify_sql[] =
    "CREATE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    PERFORM pg_notify('users_changed', json_build_object('table', 'users',\n"
    "        'key', json_build_object('tenant', NEW.tenant, 'id', NEW.id))::text);\n"
    "    RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER users_notify AFTER INSERT OR UPDATE ON users\n"
    "    FOR EACH ROW EXECUTE FUNCTION users_notify();\n";

/* ---------------------------------------------------------------- processes */

typedef struct Child {
    pid_t pid;
    char name[32], log[400];
} Child;

static void tail_of(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[2048];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    snprintf(out, n, "%s", buf);
}

/* child_start runs argv with stdin /dev/null and stdout+stderr appended to
 * basedir/tag.log. */
static void child_start(Child *c, char *const argv[], const char *tag)
{
    snprintf(c->name, sizeof c->name, "%s", tag);
    snprintf(c->log, sizeof c->log, "%s/%s.log", basedir, tag);
    fflush(stdout);
    fflush(stderr);
    c->pid = fork();
    if (c->pid < 0)
        die("fork", strerror(errno));
    if (c->pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || o < 0)
            _exit(126);
        dup2(in, 0);
        dup2(o, 1);
        dup2(o, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
}

/* child_check dies when c has exited (it should be running). */
static void child_check(Child *c)
{
    int st;
    if (c->pid <= 0 || waitpid(c->pid, &st, WNOHANG) != c->pid)
        return;
    char t[2048];
    tail_of(c->log, t, sizeof t);
    fprintf(stderr, "edgebench: %s exited (%s %d) while it should run; %s ends:\n%s\n", c->name,
            WIFEXITED(st) ? "status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
            c->log, t);
    exit(1);
}

/* child_cpu returns the user + system CPU seconds of a running child. */
static double child_cpu(const Child *c)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)c->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, stt = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
        return 0;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* child_stop sends SIGTERM and waits (30 s, then SIGKILL); returns the exit
 * status, or -1 when it had to be killed. */
static int child_stop(Child *c)
{
    if (c->pid <= 0)
        return 0;
    kill(c->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
            c->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ns(10000000L);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &st, 0);
    c->pid = 0;
    return -1;
}

/* run_shell runs cmd with bash -o pipefail and returns its seconds; dies
 * when it fails. */
static double run_shell(const char *cmd, const char *tag)
{
    Child c;
    char *argv[] = {"bash", "-o", "pipefail", "-c", (char *)cmd, NULL};
    uint64_t t0 = now_ns();
    child_start(&c, argv, tag);
    int st;
    if (waitpid(c.pid, &st, 0) != c.pid)
        die("waitpid", strerror(errno));
    double secs = (double)(now_ns() - t0) / 1e9;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char t[2048];
        tail_of(c.log, t, sizeof t);
        fprintf(stderr, "edgebench: %s failed: %s\n", cmd, t);
        exit(1);
    }
    return secs;
}

/* ---------------------------------------------------------------- the store */

typedef struct Sum {
    uint64_t batches, rows, sealed_rows, since_ms;
    uint64_t n_after, rows_after;       /* batches created at or after since_ms */
    double open_ms, load_ms;            /* their sums of sealed - created, loaded - sealed */
    uint64_t n_loaded;
} Sum;

static int sum_batch(const BatchRec *b, void *arg)
{
    Sum *s = arg;
    s->batches++;
    s->rows += b->rows;
    if (b->state != BATCH_OPEN)
        s->sealed_rows += b->rows;
    if (s->since_ms && b->created_ms >= s->since_ms && b->rows > 0) {
        s->n_after++;
        s->rows_after += b->rows;
        if (b->sealed_ms && b->loaded_ms) {
            s->n_loaded++;
            s->open_ms += (double)(b->sealed_ms - b->created_ms);
            s->load_ms += (double)(b->loaded_ms - b->sealed_ms);
        }
    }
    return 0;
}

static int sum_apply(Txn *t, void *arg)
{
    return batch_each(t, -1, sum_batch, arg);
}

/* batches_sum reads the batches of the engine's data directory dir (*st:
 * the store, opened read-only once the engine made it); -1 when it could
 * not yet. */
static int batches_sum(const char *dir, Store **st, Sum *s)
{
    if (!*st) {
        char p[400];
        snprintf(p, sizeof p, "%s/data.mdb", dir);
        if (access(p, R_OK) != 0)
            return -1;
        StoreOpts o = {.readonly = 1};
        if (store_open(dir, &o, st) != 0) {
            *st = NULL;
            return -1;
        }
    }
    uint64_t since = s->since_ms;
    memset(s, 0, sizeof *s);
    s->since_ms = since;
    return store_read(*st, sum_apply, s) == 0 ? 0 : -1;
}

static Store *store;

/* ---------------------------------------------------------------- initial copy */

static Child eng, ql;

static double bench_copy(void)
{
    char params[300], cmd[2000], label[120];
    size_t n = opt_rows;
    Digest ref, d;
    snprintf(params, sizeof params, "\"rows\":%zu,\"columns\":%zu,\"page\":%zu,\"batch_rows\":%zu,"
             "\"seal_s\":%g,\"mode\":\"merge\"", n, users->nfields, opt_page, opt_batch, opt_seal);
    digest(src, &ref);

    /* The peer: psql COPY out | psql COPY in, into a fresh database with
     * the same DDL. */
    Strbuf ddl;
    sb_init(&ddl);
    models_ddl(pipe_->models, &ddl);
    sql_do(dst, "CREATE DATABASE peer");
    PGconn *pc = connect_to(peer_ci);
    sql_do(pc, ddl.buf);
    sql_do(pc, "CHECKPOINT");
    snprintf(cmd, sizeof cmd,
             "psql -X -q -v ON_ERROR_STOP=1 -d '%s' -c 'COPY users TO STDOUT' | "
             "psql -X -q -v ON_ERROR_STOP=1 -d '%s' -c 'COPY users FROM STDIN'", src_ci, peer_ci);
    double psecs = run_shell(cmd, "psql-copy");
    digest(pc, &d);
    PQfinish(pc);
    if (!same(&d, &ref)) {
        fprintf(stderr, "edgebench: psql COPY | psql COPY copied %lld rows, digest %s; the source "
                "has %lld rows, digest %s\n", d.rows, d.sum, ref.rows, ref.sum);
        exit(1);
    }
    double prps = (double)n / psecs;
    info("psql COPY | psql COPY: %.2f s, %.0f rows/s (digest equal to the source's)", psecs, prps);
    sql_do(dst, "DROP DATABASE peer");
    sql_do(dst, "CHECKPOINT");
    sb_free(&ddl);

    /* pickline: the engine and qload --follow, started together. */
    sql_do(dst, "CREATE DATABASE edge");
    char *eargv[] = {pickline_path, "run", yaml_path, "--data", datadir, NULL};
    char *qargv[] = {qload_path, "--data", datadir, "--pipeline", yaml_path, "--target", edge_ci,
                     "--follow", "--mode", "merge", "--create-tables", "--poll", "0.05", "--quiet",
                     NULL};
    PGconn *ec = connect_to(edge_ci);
    uint64_t t0 = now_ns(), t_ext = 0, t_load = 0;
    child_start(&eng, eargv, "pickline");
    double limit = 120 + (double)n / 2000.0;
    Sum s = {0};
    long long loaded = 0;
    while (!t_load) {
        child_check(&eng);
        if (ql.pid)
            child_check(&ql);
        if (!ql.pid && batches_sum(datadir, &store, &s) == 0)
            child_start(&ql, qargv, "qload");   /* the data directory exists */
        if (!t_ext && batches_sum(datadir, &store, &s) == 0 && s.rows >= n)
            t_ext = now_ns();
        if (ql.pid && (loaded = sql_num(ec, "SELECT sum(rows) FROM pickline_ledger")) >= (long long)n)
            t_load = now_ns();
        if ((double)(now_ns() - t0) / 1e9 > limit) {
            fprintf(stderr, "edgebench: the copy did not finish in %.0f s: %llu rows staged, %lld "
                    "loaded (logs in %s)\n", limit, (unsigned long long)s.rows, loaded, basedir);
            exit(1);
        }
        sleep_ns(10000000L);
    }
    double cpu_e = child_cpu(&eng), cpu_q = child_cpu(&ql);
    double secs = (double)(t_load - t0) / 1e9, esecs = (double)(t_ext - t0) / 1e9;
    batches_sum(datadir, &store, &s);
    digest(ec, &d);
    PQfinish(ec);
    info("pickline: every row staged after %.2f s (%.0f rows/s), every row loaded after %.2f s "
         "(the load ends %.2f s after the extract)", esecs, (double)n / esecs, secs, secs - esecs);
    info("  cpu so far: pickline %.2f s, qload %.2f s; %llu batches, %llu rows staged", cpu_e, cpu_q,
         (unsigned long long)s.batches, (unsigned long long)s.rows);
    if (!same(&d, &ref) || s.rows != n) {
        char m[400];
        snprintf(m, sizeof m, "MISMATCH: the edge has %lld rows, digest %s; the source %lld rows, "
                 "digest %s; %llu rows staged", d.rows, d.sum, ref.rows, ref.sum,
                 (unsigned long long)s.rows);
        note("initial_copy_rows_per_s", params, m);
        failed = 1;
        return prps;
    }
    info("the edge equals the source: %lld rows, digest %s", d.rows, d.sum);
    snprintf(label, sizeof label, "initial copy, %zu rows (engine start..loaded)", n);
    row("initial_copy_rows_per_s", label, params, (double)n / secs, "rows/s",
        "psql COPY | psql COPY", prps, ">= 0.5x");
    if (opt_json) {
        row("initial_extract_rows_per_s", "", params, (double)n / esecs, "rows/s", NULL, 0, NULL);
        row("psql_copy_rows_per_s", "", params, prps, "rows/s", NULL, 0, NULL);
    } else {
        snprintf(label, sizeof label, "  extract phase (engine start..all staged)");
        row("initial_extract_rows_per_s", label, params, (double)n / esecs, "rows/s", NULL, 0, NULL);
    }
    return prps;
}

/* ---------------------------------------------------------------- latency */

typedef struct Lat {
    size_t nupd;
    uint64_t start;                  /* update i is due at start + i * 1e9 / rate */
    uint64_t *sent, *committed, *seen;
    volatile int senders_done;
    int bad;                         /* an UPDATE that did not update one row */
    char err[300];
} Lat;

static Lat lat;

typedef struct Sender {
    pthread_t th;
    unsigned k;
} Sender;

static size_t stride;

static void *sender_main(void *arg)
{
    Sender *s = arg;
    PGconn *c = connect_to(src_ci);
    PQclear(PQprepare(c, "u", "UPDATE users SET marker = $1, updated_at = clock_timestamp() "
                      "WHERE tenant = $2 AND id = $3", 3, NULL));
    for (size_t i = s->k; i < lat.nupd; i += opt_senders) {
        uint64_t due = lat.start + (uint64_t)((double)i * 1e9 / opt_rate);
        struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        size_t id = (i * stride) % opt_rows + 1;
        char m[24], t[24], k[24];
        snprintf(m, sizeof m, "%zu", i + 1);
        snprintf(t, sizeof t, "%zu", id % 97);
        snprintf(k, sizeof k, "%zu", id);
        const char *v[3] = {m, t, k};
        lat.sent[i] = now_ns();
        PGresult *r = PQexecPrepared(c, "u", 3, v, NULL, NULL, 0);
        lat.committed[i] = now_ns();
        if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0) {
            lat.bad = 1;
            snprintf(lat.err, sizeof lat.err, "UPDATE of id %zu: %s %s", id, PQcmdTuples(r),
                     PQerrorMessage(c));
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static void *poller_main(void *arg)
{
    (void)arg;
    PGconn *c = connect_to(edge_ci);
    PQclear(PQprepare(c, "p", "SELECT marker FROM users WHERE marker > $1", 1, NULL));
    size_t floor = 0, nseen = 0;      /* markers 1..floor all seen */
    uint64_t quiet_end = 0;
    while (nseen < lat.nupd) {
        char f[24];
        snprintf(f, sizeof f, "%zu", floor);
        const char *v[1] = {f};
        PGresult *r = PQexecPrepared(c, "p", 1, v, NULL, NULL, 0);
        uint64_t t = now_ns();
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            for (int j = 0; j < PQntuples(r); j++) {
                long long m = atoll(PQgetvalue(r, j, 0));
                if (m >= 1 && (size_t)m <= lat.nupd && !lat.seen[m - 1]) {
                    lat.seen[m - 1] = t;
                    nseen++;
                }
            }
        }
        PQclear(r);
        while (floor < lat.nupd && lat.seen[floor])
            floor++;
        if (lat.senders_done && !quiet_end)
            quiet_end = now_ns() + 30000000000ull;   /* 30 s for the stragglers */
        if (quiet_end && now_ns() > quiet_end)
            break;
        sleep_ns(1000000L);
    }
    PQfinish(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void bench_latency(void)
{
    char params[300], label[120];
    size_t n = (size_t)opt_rate * opt_seconds;
    if (n > opt_rows)
        n = opt_rows;
    snprintf(params, sizeof params, "\"rate\":%u,\"seconds\":%u,\"updates\":%zu,\"senders\":%u,"
             "\"rows\":%zu,\"seal_s\":%g,\"batch_rows\":%zu,\"qload_poll_s\":0.05,"
             "\"page\":%zu", opt_rate, opt_seconds, n, opt_senders, opt_rows, opt_seal, opt_batch, opt_page);
    for (stride = 7919; gcd(stride, opt_rows) != 1; stride += 2) {
    }
    sql_do(src, notify_sql);
    PGconn *ec = connect_to(edge_ci);
    sql_do(ec, "CREATE INDEX users_marker ON users (marker)");
    sleep_ns(500000000L);    /* pg_notify is listening already; let the line settle */

    lat.nupd = n;
    lat.sent = xcalloc(n, sizeof(uint64_t));
    lat.committed = xcalloc(n, sizeof(uint64_t));
    lat.seen = xcalloc(n, sizeof(uint64_t));
    Sum s = {.since_ms = pl_now_ms()};
    double cpu_e0 = child_cpu(&eng), cpu_q0 = child_cpu(&ql);
    pthread_t poller;
    Sender *snd = xcalloc(opt_senders, sizeof *snd);
    lat.start = now_ns() + 100000000ull;
    if (pthread_create(&poller, NULL, poller_main, NULL) != 0)
        die("pthread_create", "poller");
    for (unsigned k = 0; k < opt_senders; k++) {
        snd[k].k = k;
        if (pthread_create(&snd[k].th, NULL, sender_main, &snd[k]) != 0)
            die("pthread_create", "sender");
    }
    for (unsigned k = 0; k < opt_senders; k++) {
        while (pthread_tryjoin_np(snd[k].th, NULL) == EBUSY) {
            child_check(&eng);
            child_check(&ql);
            sleep_ns(50000000L);
        }
    }
    lat.senders_done = 1;
    while (pthread_tryjoin_np(poller, NULL) == EBUSY) {
        child_check(&eng);
        child_check(&ql);
        sleep_ns(50000000L);
    }
    double cpu_e = child_cpu(&eng) - cpu_e0, cpu_q = child_cpu(&ql) - cpu_q0;
    if (lat.bad) {
        note("change_latency_p50_ms", params, lat.err);
        failed = 1;
    }

    uint64_t *l = xcalloc(n, sizeof(uint64_t));
    size_t got = 0;
    uint64_t lag = 0, commit_sum = 0, last_sent = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t due = lat.start + (uint64_t)((double)i * 1e9 / opt_rate);
        if (lat.sent[i] > due && lat.sent[i] - due > lag)
            lag = lat.sent[i] - due;
        if (lat.sent[i] > last_sent)
            last_sent = lat.sent[i];
        commit_sum += lat.committed[i] - lat.sent[i];
        if (lat.seen[i])
            l[got++] = lat.seen[i] > lat.committed[i] ? lat.seen[i] - lat.committed[i] : 0;
    }
    qsort(l, got, sizeof *l, cmp_u64);
    double send_rate = (double)n / ((double)(last_sent - lat.start) / 1e9 + 1.0 / opt_rate);
    info("%zu updates by %u senders: %.0f updates/s sent (asked %u/s), the latest sent %.1f ms "
         "behind its schedule; an UPDATE's commit took %.2f ms on average", n, opt_senders,
         send_rate, opt_rate, (double)lag / 1e6, (double)commit_sum / (double)n / 1e6);
    batches_sum(datadir, &store, &s);
    if (s.n_loaded)
        info("batches of the run: %llu (%.1f rows each), open..sealed %.0f ms, sealed..loaded %.0f ms "
             "on average; cpu pickline %.2f s, qload %.2f s", (unsigned long long)s.n_after,
             (double)s.rows_after / (double)s.n_after, s.open_ms / (double)s.n_loaded,
             s.load_ms / (double)s.n_loaded, cpu_e, cpu_q);
    if (got == 0) {
        note("change_latency_p50_ms", params, "no update arrived in the edge within 30 s");
        failed = 1;
    } else {
        double p50 = (double)l[(got - 1) / 2] / 1e6, p99 = (double)l[(size_t)((double)(got - 1) * 0.99)] / 1e6;
        double mx = (double)l[got - 1] / 1e6;
        snprintf(label, sizeof label, "change latency p50 (%u/s for %u s, seal %gs)", opt_rate,
                 opt_seconds, opt_seal);
        row("change_latency_p50_ms", label, params, p50, "ms", NULL, 0, NULL);
        row("change_latency_p99_ms", "change latency p99", params, p99, "ms", NULL, 0, NULL);
        row("change_latency_max_ms", "change latency max", params, mx, "ms", NULL, 0, NULL);
    }
    row("changes_arrived", "changes arrived in the edge", params, (double)got, "updates", NULL, 0, NULL);
    row("update_rate_sent", "updates sent to the source", params, send_rate, "upd/s", NULL, 0, NULL);
    if (got < n)
        failed = 1;

    /* The edge equals the source once the line is quiet. */
    Digest a, b;
    uint64_t end = now_ns() + 30000000000ull;
    do {
        digest(src, &a);
        digest(ec, &b);
        if (same(&a, &b))
            break;
        sleep_ns(200000000L);
    } while (now_ns() < end);
    if (same(&a, &b))
        info("the edge equals the source after the updates: %lld rows, digest %s", b.rows, b.sum);
    else {
        info("MISMATCH after the updates: the edge %lld rows, digest %s; the source %lld rows, "
             "digest %s", b.rows, b.sum, a.rows, a.sum);
        failed = 1;
    }
    PQfinish(ec);
    free(l);
    free(snd);
    free(lat.sent);
    free(lat.committed);
    free(lat.seen);
}

/* ---------------------------------------------------------------- phases apart */

/* run_child runs argv to its end; returns its exit status, with its
 * seconds and CPU seconds (wait4's rusage). */
static int run_child(char *const argv[], const char *tag, double *secs, double *cpu)
{
    Child c;
    struct rusage ru;
    int st;
    uint64_t t0 = now_ns();
    child_start(&c, argv, tag);
    while (wait4(c.pid, &st, 0, &ru) != c.pid) {
        if (errno != EINTR)
            die("wait4", strerror(errno));
    }
    *secs = (double)(now_ns() - t0) / 1e9;
    *cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* load_alone loads the sealed batches of dir with a one-shot qload in mode
 * into a fresh database db, checks it against the source and returns the
 * rows per second (0 when it failed). */
static double load_alone(const char *dir, const char *db, const char *mode, const Digest *ref,
                         double *cpu)
{
    char ci[700], q[100];
    double secs;
    db_ci(ci, sizeof ci, pgtmp_conninfo(dst_pg), db);
    snprintf(q, sizeof q, "CREATE DATABASE %s", db);
    sql_do(dst, q);
    char *argv[] = {qload_path, "--data", (char *)dir, "--pipeline", yaml_path, "--target", ci,
                    "--mode", (char *)mode, "--create-tables", "--quiet", NULL};
    char tag[64];
    snprintf(tag, sizeof tag, "qload-%s-alone", mode);
    int rc = run_child(argv, tag, &secs, cpu);
    PGconn *c = connect_to(ci);
    Digest d;
    digest(c, &d);
    PQfinish(c);
    snprintf(q, sizeof q, "DROP DATABASE %s", db);
    sql_do(dst, q);
    sql_do(dst, "CHECKPOINT");
    if (rc != 0 || !same(&d, ref)) {
        info("qload --mode %s alone: exit %d, %lld rows, digest %s (the source: %lld, %s): MISMATCH",
             mode, rc, d.rows, d.sum, ref->rows, ref->sum);
        failed = 1;
        return 0;
    }
    return (double)opt_rows / secs;
}

/* bench_phases measures the phases of the copy one at a time: the engine
 * alone until every row is staged and sealed, then a one-shot qload of
 * those batches in merge mode, and (from a copy of the data directory) in
 * append mode, each into a fresh database. */
static void bench_phases(double prps)
{
    char params[300], dir[400], dir2[400], cmd[1000];
    size_t n = opt_rows;
    Digest ref;
    snprintf(params, sizeof params, "\"rows\":%zu,\"columns\":%zu,\"page\":%zu,\"batch_rows\":%zu,"
             "\"seal_s\":%g", n, users->nfields, opt_page, opt_batch, opt_seal);
    snprintf(dir, sizeof dir, "%s/data-phases", basedir);
    snprintf(dir2, sizeof dir2, "%s/data-phases-append", basedir);
    digest(src, &ref);
    sql_do(src, "CHECKPOINT");

    Child e;
    Store *st = NULL;
    Sum s = {0};
    char *eargv[] = {pickline_path, "run", yaml_path, "--data", dir, NULL};
    uint64_t t0 = now_ns(), t_staged = 0;
    child_start(&e, eargv, "pickline-alone");
    for (;;) {
        child_check(&e);
        if (batches_sum(dir, &st, &s) == 0) {
            if (!t_staged && s.rows >= n)
                t_staged = now_ns();
            if (s.sealed_rows >= n)
                break;
        }
        if ((double)(now_ns() - t0) / 1e9 > 120 + (double)n / 2000.0)
            die("the engine alone", "did not stage every row in time");
        sleep_ns(5000000L);
    }
    double cpu_e = child_cpu(&e);
    store_close(st);
    if (child_stop(&e) != 0)
        info("pickline (alone) did not exit 0 on SIGTERM (log %s/pickline-alone.log)", basedir);
    double esecs = (double)(t_staged - t0) / 1e9;
    info("the engine alone: every row staged after %.2f s (cpu %.2f s), sealed after %.2f s", esecs,
         cpu_e, (double)(now_ns() - t0) / 1e9);
    row("extract_alone_rows_per_s", "extract alone (pg_extract -> staging)", params, (double)n / esecs,
        "rows/s", "psql COPY | psql COPY", prps, NULL);

    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", dir, dir2);
    if (system(cmd) != 0)
        die("cp -a", dir);
    double cpu, v = load_alone(dir, "phase_merge", "merge", &ref, &cpu);
    if (v > 0) {
        info("qload --mode merge alone: %.2f s, cpu %.2f s", (double)n / v, cpu);
        row("load_merge_alone_rows_per_s", "load alone, qload --mode merge", params, v, "rows/s",
            "psql COPY | psql COPY", prps, NULL);
    }
    v = load_alone(dir2, "phase_append", "append", &ref, &cpu);
    if (v > 0) {
        info("qload --mode append alone: %.2f s, cpu %.2f s", (double)n / v, cpu);
        row("load_append_alone_rows_per_s", "load alone, qload --mode append", params, v, "rows/s",
            "psql COPY | psql COPY", prps, NULL);
    }
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: edgebench [--rows N] [--rate R] [--seconds S] [--senders K] [--page N]\n"
            "                 [--batch-rows N]\n"
            "                 [--seal S] [--no-latency] [--no-phases] [--json] [--keep]\n"
            "  --rows N      rows of the users table copied (default 1000000)\n"
            "  --rate R      updates a second in the latency run (default 1000)\n"
            "  --seconds S   seconds of updates (default 10)\n"
            "  --senders K   connections sending the updates (default 4)\n"
            "  --page N      pg_extract's page (default 10000)\n"
            "  --batch-rows N  seal a batch at N rows (default 10000)\n"
            "  --seal S      seal a batch S seconds after its first row (default 0.05)\n"
            "  --no-latency  no change latency run\n"
            "  --no-phases   no run of the copy's phases one at a time (the engine alone,\n"
            "                then qload alone in merge and in append mode)\n"
            "  --json        one JSON object per measured row\n"
            "  --keep        keep the scratch directory (data directory, logs)\n"
            "pickline and qload are run from the directory this program is in; psql from\n"
            "$PATH; PostgreSQL from pgtmp (two throwaway clusters).\n");
}

static unsigned long long parse_count(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || v == 0 || v > UINT32_MAX) {
        fprintf(stderr, "edgebench: %s wants a whole number from 1 to %u (got '%s')\n", opt,
                (unsigned)UINT32_MAX, s);
        exit(2);
    }
    return v;
}

static void find_bins(const char *argv0)
{
    ssize_t k = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
    if (k > 0)
        bindir[k] = '\0';
    else
        snprintf(bindir, sizeof bindir, "%s", argv0);
    char *slash = strrchr(bindir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(bindir, sizeof bindir, ".");
    snprintf(pickline_path, sizeof pickline_path, "%s/pickline", bindir);
    snprintf(qload_path, sizeof qload_path, "%s/qload", bindir);
    if (access(pickline_path, X_OK) != 0 || access(qload_path, X_OK) != 0) {
        fprintf(stderr, "edgebench: pickline and qload must be built next to edgebench (%s); "
                "build them with scons\n", bindir);
        exit(1);
    }
    if (system("command -v psql > /dev/null 2>&1") != 0)
        die("psql", "not on $PATH; install postgresql-client");
}

static void cleanup(void)
{
    child_stop(&ql);
    child_stop(&eng);
    store_close(store);
    store = NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json"))
            opt_json = 1;
        else if (!strcmp(a, "--keep"))
            opt_keep = 1;
        else if (!strcmp(a, "--no-latency"))
            opt_latency = 0;
        else if (!strcmp(a, "--no-phases"))
            opt_phases = 0;
        else if (!strcmp(a, "--rows") && i + 1 < argc)
            opt_rows = (size_t)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--rate") && i + 1 < argc)
            opt_rate = (unsigned)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--seconds") && i + 1 < argc)
            opt_seconds = (unsigned)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--senders") && i + 1 < argc)
            opt_senders = (unsigned)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--batch-rows") && i + 1 < argc)
            opt_batch = (size_t)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--page") && i + 1 < argc)
            opt_page = (size_t)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--seal") && i + 1 < argc) {
            char *end;
            opt_seal = strtod(argv[++i], &end);
            if (*end || !(opt_seal >= 0.01 && opt_seal <= 3600)) {
                fprintf(stderr, "edgebench: --seal wants seconds from 0.01 to 3600 (got '%s')\n",
                        argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "edgebench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (opt_senders > 64) {
        fprintf(stderr, "edgebench: --senders wants 1 to 64\n");
        return 2;
    }
    pl_log_level = PL_LOG_WARN;
    find_bins(argv[0]);

    char cmdline[1024] = "";
    for (int i = 0; i < argc; i++)
        snprintf(cmdline + strlen(cmdline), sizeof cmdline - strlen(cmdline), "%s%s", i ? " " : "",
                 argv[i]);
    if (opt_json) {
        printf("{\"name\":\"command\",\"command\":");
        json_str(cmdline);
        printf("}\n");
    } else
        printf("edgebench: %s\n", cmdline);
    fflush(stdout);

    snprintf(basedir, sizeof basedir, "/var/tmp/edgebench.XXXXXX");
    if (!mkdtemp(basedir))
        die("mkdtemp", strerror(errno));
    snprintf(datadir, sizeof datadir, "%s/data", basedir);
    snprintf(yaml_path, sizeof yaml_path, "%s/edge.yml", basedir);
    write_pipeline();
    char err[512];
    if (pipeline_load(yaml_path, NULL, &pipe_, err, sizeof err) != 0)
        die("the pipeline file", err);
    if (!pipe_->models || !(users = models_find(pipe_->models, "users")))
        die("the pipeline file", "no users model in it");

    if (!(src_pg = pgtmp_start(err, sizeof err)))
        die("PostgreSQL (source)", err);
    if (!(dst_pg = pgtmp_start(err, sizeof err)))
        die("PostgreSQL (edge)", err);
    snprintf(src_ci, sizeof src_ci, "%s", pgtmp_conninfo(src_pg));
    db_ci(edge_ci, sizeof edge_ci, pgtmp_conninfo(dst_pg), "edge");
    db_ci(peer_ci, sizeof peer_ci, pgtmp_conninfo(dst_pg), "peer");
    if (setenv("EDGEBENCH_SOURCE", src_ci, 1) != 0)
        die("setenv", strerror(errno));
    src = connect_to(src_ci);
    dst = connect_to(pgtmp_conninfo(dst_pg));

    /* The source table: the model's DDL, the rows, the watermark index. */
    Strbuf b;
    sb_init(&b);
    models_ddl(pipe_->models, &b);
    sql_do(src, b.buf);
    sb_reset(&b);
    sb_addf(&b, seed_sql, opt_rows);
    uint64_t t0 = now_ns();
    sql_do(src, b.buf);
    sql_do(src, "CREATE INDEX users_watermark ON users (updated_at, tenant, id)");
    sql_do(src, "VACUUM ANALYZE users");
    sql_do(src, "CHECKPOINT");
    sb_free(&b);
    if (!opt_json) {
        PGresult *r = sql(src, "SELECT current_setting('server_version'), "
                               "pg_size_pretty(pg_total_relation_size('users'))");
        printf("data in %s; two PostgreSQL %s clusters (fsync=on, synchronous_commit=on) on unix "
               "sockets\nsource: %zu users (%s with indexes), made in %.1f s\npickline, qload: %s\n",
               basedir, PQgetvalue(r, 0, 0), opt_rows, PQgetvalue(r, 0, 1),
               (double)(now_ns() - t0) / 1e9, bindir);
        PQclear(r);
        printf("%-46s %12s %-7s %12s %8s  %-9s %s\n", "workload", "pickline", "unit", "peer", "ratio",
               "target", "(peer)");
        fflush(stdout);
    }

    double prps = bench_copy();
    if (opt_latency && !failed)
        bench_latency();

    int qs = child_stop(&ql), es = child_stop(&eng);
    if (qs != 0 || es != 0) {
        fprintf(stderr, "edgebench: on SIGTERM qload exited %d and pickline %d (expected 0; logs in "
                "%s)\n", qs, es, basedir);
        failed = 1;
    }
    cleanup();
    if (opt_phases && !failed) {
        sql_do(dst, "DROP DATABASE edge");
        sql_do(dst, "CHECKPOINT");
        bench_phases(prps);
    }
    PQfinish(src);
    PQfinish(dst);
    pgtmp_stop(src_pg);
    pgtmp_stop(dst_pg);
    pipeline_free(pipe_);
    if (opt_keep || failed) {
        fprintf(stderr, "edgebench: kept %s\n", basedir);
    } else {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", basedir);
        if (system(cmd) != 0)
            fprintf(stderr, "edgebench: cannot remove %s\n", basedir);
    }
    return failed;
}
