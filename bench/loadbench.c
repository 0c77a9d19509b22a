/* loadbench: bulk loading into PostgreSQL with qload, against psql's \copy
 * (and pgloader when installed) loading the same rows into the same table in
 * the same run, plus qload's peak memory on a large batch.
 *
 *   loadbench [--rows N] [--rss-rows N] [--no-rss] [--rounds N] [--json] [--keep]
 *
 * The rows are the seed's users model (13 columns, DESIGN.md) with varied
 * values: names with quotes, commas and non-ASCII letters, NULLs in the
 * optional columns. They are staged into a fresh store as one sealed batch
 * (staging_append, a commit every 50,000 rows) and written as a CSV file
 * with model_csv_row from the same bytes, so both loaders get identical data;
 * each load is checked (row count and an order-independent digest of the
 * table) against psql's. qload runs as its own process, found next to this
 * program; its peak RSS comes from wait4's rusage.
 *
 * Prints a table (each row as it is measured); with --json one JSON object
 * per row. Asserts no time. */
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
#include <malloc.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_ROWS 50000
#define MIB (1024.0 * 1024.0)

static int opt_json, opt_keep;
static size_t opt_rows = 1000000, opt_rss_rows = 5000000;
static int opt_rss = 1;
static unsigned opt_rounds = 2;

static char basedir[256];
static char qload_path[PATH_MAX];
static PgTmp *pg;
static PGconn *conn;
static const Model *users;
static Pipeline *pipe_;
static char yaml_path[400];
static Strbuf yaml;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "loadbench: %s: %s\n", what, why);
    exit(1);
}

/* ---------------------------------------------------------------- output */

/* json_str prints s as a JSON string literal. */
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
        char tail[160] = "";
        if (peer && pv > 0)
            snprintf(tail, sizeof tail, "%12.1f %7.2fx  %-9s (%s)", pv, v / pv, target ? target : "",
                     peer);
        else if (target)
            snprintf(tail, sizeof tail, "%12s %8s  %-9s", "", "", target);
        printf("%-44s %12.1f %-7s %s\n", label, v, unit, tail);
    }
    fflush(stdout);
}

/* note prints a row that measured nothing (a skipped peer, a failure). */
static void note(const char *name, const char *params, const char *text)
{
    if (opt_json) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"skipped\":", name, params);
        json_str(text);
        printf("}\n");
    } else
        printf("%-44s %s\n", "", text);
    fflush(stdout);
}

/* info prints a line of the human table only (per-round measurements). */
static void info(const char *label, double v, const char *unit, const char *extra)
{
    if (!opt_json) {
        printf("  %-42s %12.1f %-7s %s\n", label, v, unit, extra ? extra : "");
        fflush(stdout);
    }
}

/* ---------------------------------------------------------------- the rows */

static const char pipeline_yaml[] =
    "# loadbench: the seed's users model (DESIGN.md), 13 columns\n"
    "queues:\n"
    "  users_in: {}\n"
    "  users_out: {}\n"
    "stages:\n"
    "  - {name: hop, kind: noop, input: users_in, output: users_out}\n"
    "models:\n"
    "  users:\n"
    "    table: users\n"
    "    drift: reject\n"
    "    properties:\n"
    "      id:         {type: serial, key: true}\n"
    "      tenant:     {type: integer, required: true, min: 0, key: true}\n"
    "      first_name: {type: string, length: 50, required: true}\n"
    "      last_name:  {type: string, length: 50, required: true}\n"
    "      title:      {type: string, length: 50}\n"
    "      email:\n"
    "        type: string\n"
    "        length: [5, 99]\n"
    "        unique: true\n"
    "        format: email\n"
    "        messages:\n"
    "          length: \"email must be 5 to 99 characters long\"\n"
    "          format: \"email must look like name@example.com\"\n"
    "          unique: \"this email is already taken\"\n"
    "      passhash:   {type: string, length: 50}\n"
    "      salt:       {type: string, length: 50}\n"
    "      permission: {type: integer, default: 1}\n"
    "      phone:      {type: string, length: 50}\n"
    "      created_at: {type: datetime, required: true}\n"
    "      updated_at: {type: datetime}\n"
    "      deleted_at: {type: datetime, paranoid: true, default: \"2999-12-31T00:00:00Z\"}\n";

static const char *const firsts[] = {
    "James", "Mary", "José", "Zoë", "Łukasz", "Aoife", "Nguyễn", "Søren", "Chloé", "Mohammed",
    "Priya", "Wei", "Olga", "Jean-Luc", "Anne Marie", "D'Arcy", "Иван", "明美", "François",
    "Björn", "Siobhán", "Ümit", "Tomás", "Kai", "Fatima", "Lars", "Yuki", "Émile", "Renée", "Ana",
    "Christopher", "Maximilian-Alexander",
};
static const char *const lasts[] = {
    "Smith", "O'Brien", "García", "Müller", "Nakamura", "Kowalski", "van der Berg", "Smith, Jr.",
    "Ng", "Ødegård", "Papadopoulos", "Dupont", "\"The Rock\" Johnson", "Brown", "Ivanova",
    "Schröder", "Li", "MacDonald", "Fernández-López", "Okafor", "Wójcik", "Đorđević",
    "Wolfeschlegelsteinhausen", "田中",
};
static const char *const titles[] = {
    "Engineer", "Senior Software Engineer", "VP, Sales", "Director of \"Growth\"", "CFO", "Ops",
    "Account Manager, EMEA", "Intern", "Head of Data & Analytics", "Café manager",
    "Principal Site Reliability Engineer (Platform)", "",
};
static const char *const handles[] = {
    "jsmith", "mary.o", "jose", "zoe_k", "lukasz.w", "aoife", "nguyen.van", "soren", "c.dupont",
    "mo", "priya.r", "wei", "olga.iv", "jl.picard", "annemarie", "darcy", "ivan", "akemi",
    "francois", "bjorn.s",
};
static const char *const domains[] = {
    "example.com", "mail.example.org", "corp.example.co.uk", "example.net", "eu.example.de",
    "x.io",
};

#define NEL(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_key(msgpack_packer *pk, const char *k)
{
    pk_str(pk, k, strlen(k));
}

static void pk_cstr(msgpack_packer *pk, const char *k, const char *v)
{
    pk_key(pk, k);
    pk_str(pk, v, strlen(v));
}

static size_t fmt_time(char *buf, size_t n, uint64_t secs, uint64_t r)
{
    time_t tt = (time_t)secs;
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    if (r % 10 == 0)
        len += (size_t)snprintf(buf + len, n - len, ".%06u", (unsigned)(r >> 8) % 1000000u);
    buf[len++] = 'Z';
    buf[len] = '\0';
    return len;
}

static void b64(char *out, size_t n, uint64_t seed)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0)
            r = mix(seed + i);
        out[i] = a[r & 63];
        r >>= 6;
    }
    out[n] = '\0';
}

/* gen_row writes row i (0-based) as the normalised msgpack map the validate
 * stage would stage: the 13 declared fields in declaration order, NULLs as
 * nil, defaults filled in. A pure function of i. */
static void gen_row(size_t i, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    uint64_t r = mix(i), r2 = mix(i ^ 0xabcdef12345ULL), r3 = mix(i + 0x5555555555ULL);
    char buf[128];
    size_t n;

    msgpack_pack_map(&pk, 13);
    pk_key(&pk, "id");
    msgpack_pack_uint64(&pk, i + 1);
    pk_key(&pk, "tenant");
    msgpack_pack_int64(&pk, (int64_t)(r % 97) + 1);
    pk_cstr(&pk, "first_name", firsts[(r >> 8) % NEL(firsts)]);
    pk_cstr(&pk, "last_name", lasts[(r >> 16) % NEL(lasts)]);
    pk_key(&pk, "title");
    if ((r >> 24) % 5 == 0)
        msgpack_pack_nil(&pk);
    else {
        const char *t = titles[(r >> 28) % NEL(titles)];
        pk_str(&pk, t, strlen(t));
    }
    pk_key(&pk, "email");
    n = (size_t)snprintf(buf, sizeof buf, "%s.%zu@%s", handles[(r >> 32) % NEL(handles)], i + 1,
                         domains[(r >> 40) % NEL(domains)]);
    pk_str(&pk, buf, n);
    pk_key(&pk, "passhash");
    b64(buf, 44, r2);
    pk_str(&pk, buf, 44);
    pk_key(&pk, "salt");
    n = 16 + (size_t)((r2 >> 50) % 14);
    b64(buf, n, r3);
    pk_str(&pk, buf, n);
    pk_key(&pk, "permission");
    msgpack_pack_int64(&pk, (int64_t)((r >> 44) % 4) + 1);
    pk_key(&pk, "phone");
    switch ((r >> 48) % 10) {
    case 0: case 1: case 2:
        msgpack_pack_nil(&pk);
        break;
    case 3: case 4: case 5:
        n = (size_t)snprintf(buf, sizeof buf, "+1 (555) %03u-%04u", (unsigned)(r3 % 1000),
                             (unsigned)((r3 >> 10) % 10000));
        pk_str(&pk, buf, n);
        break;
    case 6: case 7:
        n = (size_t)snprintf(buf, sizeof buf, "+44 20 %04u %04u", (unsigned)(r3 % 10000),
                             (unsigned)((r3 >> 14) % 10000));
        pk_str(&pk, buf, n);
        break;
    default:
        n = (size_t)snprintf(buf, sizeof buf, "030 %08u", (unsigned)(r3 % 100000000));
        pk_str(&pk, buf, n);
        break;
    }
    uint64_t created = 1546300800 + r2 % (6 * 365 * 86400ULL); /* 2019 .. 2024 */
    pk_key(&pk, "created_at");
    n = fmt_time(buf, sizeof buf, created, r3 >> 4);
    pk_str(&pk, buf, n);
    pk_key(&pk, "updated_at");
    if ((r2 >> 40) % 4 == 0)
        msgpack_pack_nil(&pk);
    else {
        n = fmt_time(buf, sizeof buf, created + (r3 >> 20) % (365 * 86400ULL), r3 >> 9);
        pk_str(&pk, buf, n);
    }
    pk_key(&pk, "deleted_at");
    if ((r2 >> 56) % 20 == 0) {
        n = fmt_time(buf, sizeof buf, created + (r3 >> 30) % (400 * 86400ULL), 1);
        pk_str(&pk, buf, n);
    } else {
        pk_str(&pk, "2999-12-31T00:00:00Z", 20);
    }
}

/* Rows go to the store and the CSV file as gen_row makes them. A sample is
 * checked against model_validate: each must be valid, and when the
 * normalised form differs from ours (model.c normalises something we did
 * not foresee), every row goes through model_validate from then on, so the
 * staged rows are always what the validate stage would stage. */
static int use_validated;

typedef struct Gen {
    msgpack_sbuffer sb, vb;
    msgpack_zone zone;
    Strbuf errs;
} Gen;

static void gen_init(Gen *g)
{
    msgpack_sbuffer_init(&g->sb);
    msgpack_sbuffer_init(&g->vb);
    msgpack_zone_init(&g->zone, 4096);
    sb_init(&g->errs);
}

static void gen_free(Gen *g)
{
    msgpack_sbuffer_destroy(&g->sb);
    msgpack_sbuffer_destroy(&g->vb);
    msgpack_zone_destroy(&g->zone);
    sb_free(&g->errs);
}

static msgpack_object unpack(Gen *g, const char *p, size_t n)
{
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_clear(&g->zone);
    if (msgpack_unpack(p, n, &off, &g->zone, &o) != MSGPACK_UNPACK_SUCCESS || off != n)
        die("gen", "a generated row is not one msgpack value (a bug in loadbench)");
    return o;
}

static int sampled(size_t i)
{
    return i < 2000 || i % 9973 == 0;
}

/* gen_bytes makes row i and returns the bytes to stage in *p, *n. */
static void gen_bytes(Gen *g, size_t i, const char **p, size_t *n)
{
    g->sb.size = 0;
    gen_row(i, &g->sb);
    if (!use_validated && !sampled(i)) {
        *p = g->sb.data;
        *n = g->sb.size;
        return;
    }
    msgpack_object o = unpack(g, g->sb.data, g->sb.size);
    size_t nerr = 0;
    g->vb.size = 0;
    sb_reset(&g->errs);
    if (model_validate(users, &o, &g->vb, &g->errs, &nerr) != 0) {
        fprintf(stderr, "loadbench: generated row %zu breaks the users model: [%s]\n", i, g->errs.buf);
        exit(1);
    }
    if (!use_validated && (g->vb.size != g->sb.size || memcmp(g->vb.data, g->sb.data, g->sb.size))) {
        Strbuf a, b;
        sb_init(&a);
        sb_init(&b);
        row_to_json(g->sb.data, g->sb.size, &a);
        row_to_json(g->vb.data, g->vb.size, &b);
        fprintf(stderr, "loadbench: note: model_validate normalises row %zu differently, so every row "
                "is validated from now on (slower staging)\n  ours:       %s\n  normalised: %s\n",
                i, a.buf, b.buf);
        sb_free(&a);
        sb_free(&b);
        use_validated = 1;
    }
    *p = use_validated ? g->vb.data : g->sb.data;
    *n = use_validated ? g->vb.size : g->sb.size;
}

/* ---------------------------------------------------------------- staging */

typedef struct Stager {
    Gen g;
    size_t from, n, total;
    SealPolicy pol;
    uint64_t sealed;
} Stager;

static int stage_apply(Txn *t, void *arg)
{
    Stager *st = arg;
    int rc;
    if (st->from == 0 && (rc = staging_pipeline_put(t, yaml_path, yaml.buf, yaml.len, NULL)) != 0)
        return rc;
    for (size_t i = st->from; i < st->from + st->n; i++) {
        const char *p;
        size_t n;
        gen_bytes(&st->g, i, &p, &n);
        if ((rc = staging_append(t, "users", 0, p, n, &st->pol, NULL)) != 0)
            return rc;
    }
    if (st->from + st->n == st->total)
        return staging_seal_due(t, "users", &st->pol, 1, &st->sealed);
    return 0;
}

typedef struct Check {
    uint64_t batches, sealed, rows;
} Check;

static int check_batch(const BatchRec *b, void *arg)
{
    Check *c = arg;
    c->batches++;
    c->sealed += b->state == BATCH_SEALED;
    c->rows += b->rows;
    return 0;
}

static int check_apply(Txn *t, void *arg)
{
    return batch_each(t, -1, check_batch, arg);
}

/* stage_rows stages rows 0..n-1 into a fresh store at dir as one sealed
 * batch and returns the rows per second of the staging (transactions and
 * their durable commits). */
static double stage_rows(const char *dir, size_t n)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        die("rm", dir);
    /* Room for the rows up front: growing the map means a retry of a chunk. */
    StoreOpts o = {.create = 1, .map_initial = ((size_t)64 << 20) + n * 512};
    Store *s;
    int rc = store_open(dir, &o, &s);
    if (rc)
        die(dir, pl_strerror(rc));
    Stager st = {.total = n, .pol = {.rows = 0, .after_s = 0, .max_rejects = UINT64_MAX,
                                     .max_reject_rate = 1}};
    gen_init(&st.g);
    uint64_t t0 = pl_mono_ns();
    for (st.from = 0; st.from < n; st.from += st.n) {
        st.n = n - st.from < CHUNK_ROWS ? n - st.from : CHUNK_ROWS;
        if ((rc = store_run(s, stage_apply, &st)) != 0)
            die("staging", pl_strerror(rc));
    }
    double dt = (double)(pl_mono_ns() - t0) / 1e9;
    gen_free(&st.g);
    Check c = {0};
    if ((rc = store_read(s, check_apply, &c)) != 0)
        die("reading the batches back", pl_strerror(rc));
    if (c.batches != 1 || c.sealed != 1 || c.rows != n) {
        fprintf(stderr, "loadbench: %s holds %llu batches (%llu sealed) of %llu rows; expected one "
                "sealed batch of %zu rows\n", dir, (unsigned long long)c.batches,
                (unsigned long long)c.sealed, (unsigned long long)c.rows, n);
        exit(1);
    }
    store_close(s);
    return (double)n / dt;
}

/* write_csv writes rows 0..n-1 to path with model_csv_row: the same bytes
 * that stage_rows staged, so psql and qload load identical data. */
static void write_csv(const char *path, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die(path, strerror(errno));
    Gen g;
    gen_init(&g);
    Strbuf out;
    sb_init(&out);
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        gen_bytes(&g, i, &p, &len);
        msgpack_object o = unpack(&g, p, len);
        if (model_csv_row(users, &o, 0, &out) != 0)
            die("model_csv_row", "refused a generated row");
        if (out.len >= (1 << 20) || i + 1 == n) {
            if (fwrite(out.buf, 1, out.len, f) != out.len)
                die(path, strerror(errno));
            sb_reset(&out);
        }
    }
    if (fclose(f) != 0)
        die(path, strerror(errno));
    sb_free(&out);
    gen_free(&g);
}

/* ---------------------------------------------------------------- processes */

typedef struct Proc {
    double secs;
    double cpu_s;          /* the child's user + system CPU time */
    double rss_mib;        /* the child's peak RSS (wait4's ru_maxrss) */
    double anon_mib;       /* peaks of RssAnon (heap, stacks) and RssFile (mapped */
    double file_mib;       /* files: LMDB's map) in /proc/PID/status, sampled */
    char err[400];         /* the end of its stderr when it failed */
    char said[120];        /* qload: its own summary (rows, seconds) */
} Proc;

#define SAMPLE_NS 2000000L

/* sample_rss reads RssAnon and RssFile of pid and keeps their peaks. */
static void sample_rss(pid_t pid, Proc *p)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        double kib;
        if (sscanf(line, "RssAnon: %lf", &kib) == 1 && kib / 1024 > p->anon_mib)
            p->anon_mib = kib / 1024;
        else if (sscanf(line, "RssFile: %lf", &kib) == 1 && kib / 1024 > p->file_mib)
            p->file_mib = kib / 1024;
    }
    fclose(f);
}

static void tail_of(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    while (k && (buf[k - 1] == '\n' || buf[k - 1] == ' '))
        buf[--k] = '\0';
    const char *s = buf + k;
    for (int lines = 0; s > buf && lines < 3; s--)
        if (s[-1] == '\n')
            lines++;
    size_t len = strlen(s) < n - 1 ? strlen(s) : n - 1;
    memcpy(out, s, len);
    out[len] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '"' || *c == '\\')
            *c = *c == '\n' ? ' ' : '\'';
}

/* run_proc runs argv with stdout and stderr in basedir/tag.out and .err
 * and waits for it (wait4 on its pid only: pgtmp's postmaster is our child
 * too). Returns 0 when it exited 0. */
static int run_proc(char *const argv[], const char *tag, Proc *p)
{
    char out[400], err[400];
    snprintf(out, sizeof out, "%s/%s.out", basedir, tag);
    snprintf(err, sizeof err, "%s/%s.err", basedir, tag);
    memset(p, 0, sizeof *p);
    /* A forked child starts with our resident pages counted in its
     * ru_maxrss (Linux keeps the pre-exec high-water mark): keep ours small. */
    malloc_trim(0);
    fflush(stdout);
    fflush(stderr);
    uint64_t t0 = pl_mono_ns();
    pid_t pid = fork();
    if (pid < 0)
        die("fork", strerror(errno));
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || o < 0 || e < 0)
            _exit(126);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    for (;;) {
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            die("wait4", strerror(errno));
        sample_rss(pid, p);
        struct timespec ts = {0, SAMPLE_NS};
        nanosleep(&ts, NULL);
    }
    p->secs = (double)(pl_mono_ns() - t0) / 1e9;
    p->rss_mib = (double)ru.ru_maxrss * 1024.0 / MIB;
    p->cpu_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char t[300];
    tail_of(err, t, sizeof t);
    if (!t[0])
        tail_of(out, t, sizeof t);
    if (WIFEXITED(status))
        snprintf(p->err, sizeof p->err, "%s exited %d: %s", argv[0], WEXITSTATUS(status), t);
    else
        snprintf(p->err, sizeof p->err, "%s killed by signal %d: %s", argv[0], WTERMSIG(status), t);
    return -1;
}

static void proc_extra(char *buf, size_t n, const Proc *p)
{
    snprintf(buf, n, "(%.2f s, cpu %.2f s, peak RSS %.1f MiB: anon %.1f, file %.1f%s)", p->secs,
             p->cpu_s, p->rss_mib, p->anon_mib, p->file_mib, p->said);
}

/* ---------------------------------------------------------------- postgres */

static PGresult *sql(const char *q)
{
    PGresult *r = PQexec(conn, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "loadbench: PostgreSQL refused %.200s: %s", q, PQerrorMessage(conn));
        exit(1);
    }
    return r;
}

static void sql_do(const char *q)
{
    PQclear(sql(q));
}

/* reset_target empties users and the ledger (so the same batch loads
 * again), then checkpoints so that no loader pays for the other's dirty
 * buffers. */
static void reset_target(void)
{
    sql_do("TRUNCATE users");
    sql_do("DO $$BEGIN IF to_regclass('pickline_ledger') IS NOT NULL THEN "
           "DELETE FROM pickline_ledger; END IF; END$$");
    sql_do("CHECKPOINT");
}

typedef struct Digest {
    long long rows;
    char sum[80];          /* sum of the rows' text hashes: order-independent */
} Digest;

static void digest(Digest *d)
{
    PGresult *r = sql("SELECT count(*), coalesce(sum(hashtextextended(u::text, 0)::numeric), 0)::text "
                      "FROM users u");
    d->rows = atoll(PQgetvalue(r, 0, 0));
    snprintf(d->sum, sizeof d->sum, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
}

static int same(const Digest *a, const Digest *b)
{
    return a->rows == b->rows && !strcmp(a->sum, b->sum);
}

static const char *conninfo(void)
{
    return pgtmp_conninfo(pg);
}

/* ---------------------------------------------------------------- loaders */

static int load_psql(const char *csv, const char *tag, Proc *p)
{
    Strbuf cols, cmd;
    sb_init(&cols);
    sb_init(&cmd);
    model_columns(users, &cols);
    sb_addf(&cmd, "\\copy users (%s) FROM '%s' WITH (FORMAT csv)", cols.buf, csv);
    char *argv[] = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", (char *)conninfo(), "-c",
                    cmd.buf, NULL};
    int rc = run_proc(argv, tag, p);
    sb_free(&cols);
    sb_free(&cmd);
    return rc;
}

/* qload_said reads the rows and seconds of qload's --json summary in
 * basedir/tag.out; 0 when it holds one. */
static int qload_said(const char *tag, long long *rows, double *secs)
{
    char path[400], line[512];
    snprintf(path, sizeof path, "%s/%s.out", basedir, tag);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        const char *r = strstr(line, "\"rows\":"), *t = strstr(line, "\"seconds\":");
        if (r && t) {
            *rows = atoll(r + 7);
            *secs = atof(t + 10);
            ok = 0;
        }
    }
    fclose(f);
    return ok;
}

/* load_qload copies the pristine store (one sealed batch) to a scratch
 * directory, so every round loads the same batch, and runs qload on it. */
static int load_qload(const char *store, const char *tag, Proc *p)
{
    char dir[400], cmd[1000];
    snprintf(dir, sizeof dir, "%s/%s.data", basedir, tag);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dir, store, dir);
    if (system(cmd) != 0)
        die("copying the store", cmd);
    char *argv[] = {qload_path, "--data", dir, "--target", (char *)conninfo(), "--mode", "append",
                    "--json", "--quiet", NULL};
    int rc = run_proc(argv, tag, p);
    long long rows = 0;
    double secs = 0;
    if (rc == 0 && qload_said(tag, &rows, &secs) != 0) {
        snprintf(p->err, sizeof p->err, "qload printed no JSON summary (see %s/%s.out)", basedir, tag);
        rc = -1;
    }
    if (rc == 0)
        snprintf(p->said, sizeof p->said, "; qload says %lld rows in %.2f s", rows, secs);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!opt_keep && system(cmd) != 0)
        fprintf(stderr, "loadbench: cannot remove %s\n", dir);
    return rc;
}

/* load_pgloader loads csv with pgloader's own CSV reader, over the same
 * unix socket. */
static int load_pgloader(const char *csv, Proc *p)
{
    char sockdir[200] = "", path[400], root[400];
    const char *h = strstr(conninfo(), "host=");
    if (h)
        sscanf(h + 5, "%199s", sockdir);
    int port = 5432;
    const char *po = strstr(conninfo(), "port=");
    if (po)
        port = atoi(po + 5);
    Strbuf names, cmd;
    sb_init(&names);
    sb_init(&cmd);
    for (size_t i = 0; i < users->nfields; i++)
        sb_addf(&names, "%s%s", i ? ", " : "", users->fields[i].name);
    sb_addf(&cmd,
            "LOAD CSV\n"
            "  FROM '%s' (%s)\n"
            "  INTO postgresql://postgres@unix:%s:%d/postgres\n"
            "  TARGET TABLE users (%s)\n"
            "  WITH fields optionally enclosed by '\"',\n"
            "       fields escaped by double-quote,\n"
            "       fields terminated by ','\n"
            ";\n",
            csv, names.buf, sockdir, port, names.buf);
    snprintf(path, sizeof path, "%s/users.load", basedir);
    snprintf(root, sizeof root, "%s/pgloader", basedir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(cmd.buf, f) < 0 || fclose(f) != 0)
        die(path, strerror(errno));
    char *argv[] = {"pgloader", "--root-dir", root, path, NULL};
    int rc = run_proc(argv, "pgloader", p);
    sb_free(&names);
    sb_free(&cmd);
    return rc;
}

/* ---------------------------------------------------------------- benches */

static void bench_load(void)
{
    char params[200], store[300], csv[300], label[100], extra[300];
    size_t n = opt_rows;
    snprintf(params, sizeof params, "\"rows\":%zu,\"columns\":%zu,\"rounds\":%u,\"mode\":\"append\"", n,
             users->nfields, opt_rounds);
    snprintf(store, sizeof store, "%s/store-load", basedir);
    snprintf(csv, sizeof csv, "%s/users-load.csv", basedir);

    double srps = stage_rows(store, n);
    snprintf(label, sizeof label, "stage %zu rows, 1 batch (50k/commit)", n);
    row("stage_rows_per_s", label, params, srps, "rows/s", NULL, 0, NULL);
    write_csv(csv, n);

    Digest ref = {0}, d;
    double best_psql = 0, best_qload = 0, psql_rss = 0, qload_rss = 0;
    const char *qfail = NULL;
    static char qerr[600];
    for (unsigned r = 1; r <= opt_rounds; r++) {
        Proc p;
        reset_target();
        if (load_psql(csv, "psql", &p) != 0)
            die("psql \\copy", p.err);
        digest(&d);
        if (d.rows != (long long)n) {
            fprintf(stderr, "loadbench: psql \\copy loaded %lld rows of %zu\n", d.rows, n);
            exit(1);
        }
        if (r == 1)
            ref = d;
        double v = (double)n / p.secs;
        if (v > best_psql)
            best_psql = v, psql_rss = p.rss_mib;
        snprintf(label, sizeof label, "round %u: psql \\copy", r);
        proc_extra(extra, sizeof extra, &p);
        info(label, v, "rows/s", extra);

        if (!qload_path[0] || qfail)
            continue;
        reset_target();
        if (load_qload(store, "qload", &p) != 0) {
            snprintf(qerr, sizeof qerr, "qload failed: %s", p.err);
            qfail = qerr;
            continue;
        }
        digest(&d);
        if (!same(&d, &ref)) {
            snprintf(qerr, sizeof qerr, "qload loaded different rows than psql (%lld rows, digest %s; "
                     "psql: %lld rows, digest %s)", d.rows, d.sum, ref.rows, ref.sum);
            qfail = qerr;
            continue;
        }
        v = (double)n / p.secs;
        if (v > best_qload)
            best_qload = v, qload_rss = p.rss_mib;
        snprintf(label, sizeof label, "round %u: qload", r);
        proc_extra(extra, sizeof extra, &p);
        info(label, v, "rows/s", extra);
    }
    snprintf(label, sizeof label, "load %zu rows (best of %u)", n, opt_rounds);
    if (!qload_path[0])
        note("load_rows_per_s", params, "qload: not built next to loadbench (tools/qload.c); "
             "psql \\copy alone measured");
    else if (qfail)
        note("load_rows_per_s", params, qfail);
    else
        row("load_rows_per_s", label, params, best_qload, "rows/s", "psql \\copy csv", best_psql,
            ">= 0.9x");
    if (!opt_json && !qfail && qload_path[0])
        printf("  %-42s %12.1f %-7s (psql \\copy %.1f MiB)\n", "peak RSS of the best qload", qload_rss,
               "MiB", psql_rss);
    if (opt_json || !qload_path[0] || qfail) {
        snprintf(label, sizeof label, "psql \\copy %zu rows (best of %u)", n, opt_rounds);
        row("psql_copy_rows_per_s", label, params, best_psql, "rows/s", NULL, 0, NULL);
    }

    char pparams[200];
    snprintf(pparams, sizeof pparams, "\"rows\":%zu,\"columns\":%zu,\"mode\":\"append\"", n, users->nfields);
    if (system("command -v pgloader > /dev/null 2>&1") != 0) {
        note("load_vs_pgloader_rows_per_s", pparams, "pgloader: not installed (apt-get install pgloader)");
    } else {
        Proc p;
        reset_target();
        if (load_pgloader(csv, &p) != 0) {
            char m[500];
            snprintf(m, sizeof m, "pgloader failed: %s", p.err);
            note("load_vs_pgloader_rows_per_s", pparams, m);
        } else {
            digest(&d);
            double v = (double)n / p.secs;
            snprintf(extra, sizeof extra, "(%.2f s, cpu %.2f s, peak RSS %.1f MiB%s)", p.secs, p.cpu_s,
                     p.rss_mib, same(&d, &ref) ? "" : "; ROWS DIFFER from psql's");
            info("pgloader", v, "rows/s", extra);
            if (d.rows != (long long)n)
                fprintf(stderr, "loadbench: pgloader loaded %lld rows of %zu (see %s/pgloader.out)\n",
                        d.rows, n, basedir);
            if (qload_path[0] && !qfail)
                row("load_vs_pgloader_rows_per_s", "qload vs pgloader", pparams, best_qload, "rows/s",
                    "pgloader 3 csv", v, ">= 3x");
            else if (opt_json)
                row("pgloader_rows_per_s", "pgloader", pparams, v, "rows/s", NULL, 0, NULL);
        }
    }
    if (!opt_keep) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", store, csv);
        if (system(cmd) != 0)
            fprintf(stderr, "loadbench: cannot remove %s\n", store);
    }
}

static void bench_rss(void)
{
    char params[200], store[300], csv[300], label[100], extra[300];
    size_t n = opt_rss_rows;
    snprintf(params, sizeof params, "\"rows\":%zu,\"columns\":%zu,\"rounds\":1,\"mode\":\"append\"", n,
             users->nfields);
    snprintf(store, sizeof store, "%s/store-rss", basedir);
    snprintf(csv, sizeof csv, "%s/users-rss.csv", basedir);

    double srps = stage_rows(store, n);
    snprintf(label, sizeof label, "stage %zu rows, 1 batch (50k/commit)", n);
    row("stage_rows_per_s", label, params, srps, "rows/s", NULL, 0, NULL);
    write_csv(csv, n);

    Proc pp, qp;
    Digest ref, d;
    reset_target();
    if (load_psql(csv, "psql-rss", &pp) != 0)
        die("psql \\copy", pp.err);
    digest(&ref);
    if (ref.rows != (long long)n) {
        fprintf(stderr, "loadbench: psql \\copy loaded %lld rows of %zu\n", ref.rows, n);
        exit(1);
    }
    proc_extra(extra, sizeof extra, &pp);
    info("psql \\copy", (double)n / pp.secs, "rows/s", extra);
    if (!qload_path[0]) {
        note("qload_peak_rss", params, "qload: not built next to loadbench (tools/qload.c)");
        if (opt_json)
            row("psql_copy_peak_rss", "psql \\copy peak RSS", params, pp.rss_mib, "MiB", NULL, 0, NULL);
        goto out;
    }
    reset_target();
    if (load_qload(store, "qload-rss", &qp) != 0) {
        char m[500];
        snprintf(m, sizeof m, "qload failed: %s", qp.err);
        note("qload_peak_rss", params, m);
        goto out;
    }
    digest(&d);
    if (!same(&d, &ref)) {
        char m[500];
        snprintf(m, sizeof m, "qload loaded different rows than psql (%lld rows, digest %s; psql: "
                 "%lld rows, digest %s)", d.rows, d.sum, ref.rows, ref.sum);
        note("qload_peak_rss", params, m);
        goto out;
    }
    snprintf(label, sizeof label, "load %zu rows (1 round)", n);
    row("load_rows_per_s", label, params, (double)n / qp.secs, "rows/s", "psql \\copy csv",
        (double)n / pp.secs, ">= 0.9x");
    snprintf(label, sizeof label, "qload peak RSS, %zu-row batch", n);
    row("qload_peak_rss", label, params, qp.rss_mib, "MiB", "psql \\copy peak RSS", pp.rss_mib, "< 64 MiB");
    /* ru_maxrss counts the store's pages qload touched through LMDB's
     * read-only map (file-backed, reclaimable page cache) with its heap;
     * the sampled split tells which of the two grows with the batch. */
    row("qload_peak_rss_anon", "  of which anonymous (heap, stacks)", params, qp.anon_mib, "MiB",
        "psql \\copy", pp.anon_mib, NULL);
    row("qload_peak_rss_file", "  of which mapped files (LMDB map, libs)", params, qp.file_mib, "MiB",
        "psql \\copy", pp.file_mib, NULL);
out:
    if (!opt_keep) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", store, csv);
        if (system(cmd) != 0)
            fprintf(stderr, "loadbench: cannot remove %s\n", store);
    }
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadbench [--rows N] [--rss-rows N] [--no-rss] [--rounds N] [--json] [--keep]\n"
            "  --rows N       rows of the load rounds (default 1000000)\n"
            "  --rss-rows N   rows of the batch whose peak RSS is measured (default 5000000)\n"
            "  --no-rss       skip the peak RSS run\n"
            "  --rounds N     load rounds; the best counts (default 2)\n"
            "  --json         one JSON object per measured row\n"
            "  --keep         keep the scratch directory (stores, CSV files, logs)\n"
            "qload is run from the directory this program is in; psql, and pgloader when\n"
            "installed, from $PATH; PostgreSQL from pgtmp (a throwaway cluster).\n");
}

static size_t parse_count(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || v == 0 || v > UINT32_MAX) {
        fprintf(stderr, "loadbench: %s wants a whole number from 1 to %u (got '%s')\n", opt,
                (unsigned)UINT32_MAX, s);
        exit(2);
    }
    return (size_t)v;
}

/* find_qload looks for qload next to this program: BUILDDIR/VARIANT. */
static void find_qload(const char *argv0)
{
    char self[PATH_MAX - 16];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k > 0)
        self[k] = '\0';
    else
        snprintf(self, sizeof self, "%s", argv0);
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(self, sizeof self, ".");
    snprintf(qload_path, sizeof qload_path, "%s/qload", self);
    if (access(qload_path, X_OK) != 0)
        qload_path[0] = '\0';
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json"))
            opt_json = 1;
        else if (!strcmp(a, "--keep"))
            opt_keep = 1;
        else if (!strcmp(a, "--no-rss"))
            opt_rss = 0;
        else if (!strcmp(a, "--rows") && i + 1 < argc)
            opt_rows = parse_count(a, argv[++i]);
        else if (!strcmp(a, "--rss-rows") && i + 1 < argc)
            opt_rss_rows = parse_count(a, argv[++i]);
        else if (!strcmp(a, "--rounds") && i + 1 < argc)
            opt_rounds = (unsigned)parse_count(a, argv[++i]);
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "loadbench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    pl_log_level = PL_LOG_WARN;
    find_qload(argv[0]);

    char cmdline[1024] = "";
    for (int i = 0; i < argc; i++)
        snprintf(cmdline + strlen(cmdline), sizeof cmdline - strlen(cmdline), "%s%s", i ? " " : "",
                 argv[i]);
    if (opt_json) {
        printf("{\"name\":\"command\",\"command\":");
        json_str(cmdline);
        printf("}\n");
    } else
        printf("loadbench: %s\n", cmdline);
    fflush(stdout);

    snprintf(basedir, sizeof basedir, "/var/tmp/loadbench.XXXXXX");
    if (!mkdtemp(basedir))
        die("mkdtemp", strerror(errno));
    snprintf(yaml_path, sizeof yaml_path, "%s/pipeline.yml", basedir);
    sb_init(&yaml);
    sb_adds(&yaml, pipeline_yaml);
    FILE *f = fopen(yaml_path, "w");
    if (!f || fputs(yaml.buf, f) < 0 || fclose(f) != 0)
        die(yaml_path, strerror(errno));
    char err[512];
    if (pipeline_load(yaml_path, NULL, &pipe_, err, sizeof err) != 0)
        die("the pipeline file", err);
    if (!pipe_->models || !(users = models_find(pipe_->models, "users")))
        die("the pipeline file", "no users model in it (pipeline.c does not read models: yet?)");

    if (!(pg = pgtmp_start(err, sizeof err)))
        die("PostgreSQL", err);
    conn = PQconnectdb(conninfo());
    if (PQstatus(conn) != CONNECTION_OK)
        die("connecting to PostgreSQL", PQerrorMessage(conn));
    Strbuf ddl;
    sb_init(&ddl);
    models_ddl(pipe_->models, &ddl);
    sql_do(ddl.buf);
    sb_free(&ddl);

    if (!opt_json) {
        PGresult *r = sql("SELECT current_setting('server_version')");
        printf("data in %s; PostgreSQL %s (fsync=on, synchronous_commit=on) on a unix socket\n"
               "qload: %s\n", basedir, PQgetvalue(r, 0, 0),
               qload_path[0] ? qload_path : "not built next to loadbench; its rows are skipped");
        PQclear(r);
        printf("%-44s %12s %-7s %12s %8s  %-9s %s\n", "workload", "pickline", "unit", "peer", "ratio",
               "target", "(peer)");
        fflush(stdout);
    }
    bench_load();
    if (opt_rss)
        bench_rss();

    PQfinish(conn);
    pgtmp_stop(pg);
    pipeline_free(pipe_);
    sb_free(&yaml);
    if (opt_keep) {
        fprintf(stderr, "loadbench: kept %s\n", basedir);
    } else {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", basedir);
        if (system(cmd) != 0)
            fprintf(stderr, "loadbench: cannot remove %s\n", basedir);
    }
    return 0;
}
