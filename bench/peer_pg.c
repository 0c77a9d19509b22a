/* peer_pg.c: the queue workload against a PostgreSQL SKIP LOCKED table (see peer.h).
 *
 * Every transaction is one prepared statement in autocommit mode, so each batch costs
 * one round trip and one durable commit on either side: the producer's INSERT takes
 * the whole batch as one binary bytea[] parameter, the consumer's statement acks the
 * previous lease and takes the next one through data-modifying CTEs. */
#include "peer.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

/* Type OIDs from pg_type.h (server headers are not part of libpq-dev). */
#define OID_INT8 20
#define OID_INT8ARRAY 1016
#define OID_BYTEAARRAY 1001
#define OID_BYTEA 17

#define PG_ARRAY_HEADER 20      /* ndim, flags, elemtype, dim, lbound: int32 each */
#define PG_IDLE_SLEEP_NS 100000 /* consumer found nothing and acked nothing */
#define ERRLEN 256

static const char sql_schema[] =
    "DROP TABLE IF EXISTS q;"
    "CREATE TABLE q (id bigserial primary key, pri int not null,"
    " state smallint not null default 0, lease_until timestamptz, body bytea not null);"
    "CREATE INDEX q_ready ON q (pri, id) WHERE state = 0";

static const char sql_put[] =
    "INSERT INTO q (pri, body) SELECT 0, b FROM unnest($1::bytea[]) AS u(b)";

/* A data-modifying CTE always runs to completion, referenced or not, and both run
 * in the statement's one transaction: the ack commits together with the lease. */
static const char sql_take[] =
    "WITH ack AS (DELETE FROM q WHERE id = ANY($1::bigint[])),"
    " lease AS (UPDATE q SET state = 1, lease_until = now() + interval '60 seconds'"
    " WHERE id IN (SELECT id FROM q WHERE state = 0 ORDER BY pri, id LIMIT $2"
    " FOR UPDATE SKIP LOCKED) RETURNING id, body)"
    " SELECT id, body FROM lease";

typedef struct Run {
    PGconn *prod, *cons;
    size_t body, batch, n;
    char *arr;              /* binary bytea[] of `batch` bodies; producer-owned */
    double *lat;            /* n put latencies (us) when batch == 1, else NULL */
    int64_t t_end;          /* ns, after the consumer's last ack committed */
    atomic_int stop;
    atomic_int failed;      /* 0, or 1 + index of the thread that failed first */
    char err[2][ERRLEN];    /* producer, consumer */
} Run;

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "peer_pg: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* pct: nearest-rank percentile of sorted v[0..n). */
static double
pct(const double *v, size_t n, unsigned p)
{
    size_t rank = (n * p + 99) / 100;

    return v[rank ? rank - 1 : 0];
}

static void
put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint64_t
get64(const char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/* pqerr copies libpq's (possibly multi-line) message as one line. */
static void
pqerr(char *err, size_t errlen, const char *what, const char *msg)
{
    size_t len = strcspn(msg, "\n");

    seterr(err, errlen, "%s: %.*s", what, (int)len, msg);
}

/* exec runs sql (no parameters) and wants COMMAND_OK or TUPLES_OK. */
static int
exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pqerr(err, errlen, sql, PQerrorMessage(c));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static PGconn *
connect_db(const char *conninfo, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(conninfo);

    if (!c || PQstatus(c) != CONNECTION_OK) {
        pqerr(err, errlen, "connect", c ? PQerrorMessage(c) : "out of memory");
        goto fail;
    }
    /* Durable commits even if the cluster's default were relaxed; and no NOTICEs
     * (DROP TABLE IF EXISTS) on the benchmark's stderr. */
    if (exec(c, "SET synchronous_commit = on; SET client_min_messages = warning",
             err, errlen) == -1)
        goto fail;
    return c;

fail:
    PQfinish(c);
    return NULL;
}

static int
prepare(PGconn *c, const char *name, const char *sql, int nparams, const Oid *types,
        char *err, size_t errlen)
{
    PGresult *res = PQprepare(c, name, sql, nparams, types);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pqerr(err, errlen, name, PQerrorMessage(c));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* check_fsync fails unless the server has fsync on: without it nothing is durable. */
static int
check_fsync(PGconn *c, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, "SHOW fsync");
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        pqerr(err, errlen, "SHOW fsync", PQerrorMessage(c));
    else if (strcmp(PQgetvalue(res, 0, 0), "on") != 0)
        seterr(err, errlen, "the server runs with fsync=%s; the comparison needs fsync=on",
               PQgetvalue(res, 0, 0));
    else
        rc = 0;
    PQclear(res);
    return rc;
}

static void
run_fail(Run *run, int who)
{
    int none = 0;

    atomic_compare_exchange_strong(&run->failed, &none, who + 1);
    atomic_store(&run->stop, 1);
}

static void *
producer(void *arg)
{
    Run *run = arg;
    char *err = run->err[0];
    const int fmt = 1;

    for (size_t done = 0, k; done < run->n; done += k) {
        const char *val = run->arr;
        int len;
        int64_t t0;
        PGresult *res;
        ExecStatusType st;
        const char *tuples;

        if (atomic_load(&run->stop)) {
            seterr(err, ERRLEN, "stopped: the other thread failed");
            goto fail;
        }
        k = run->n - done < run->batch ? run->n - done : run->batch;
        put32(run->arr + 12, (uint32_t)k);
        len = (int)(PG_ARRAY_HEADER + k * (4 + run->body));
        t0 = now_ns();
        res = PQexecPrepared(run->prod, "put", 1, &val, &len, &fmt, 0);
        st = PQresultStatus(res);
        tuples = PQcmdTuples(res);
        if (st != PGRES_COMMAND_OK || strtoull(tuples, NULL, 10) != k) {
            if (st != PGRES_COMMAND_OK)
                pqerr(err, ERRLEN, "insert", PQerrorMessage(run->prod));
            else
                seterr(err, ERRLEN, "insert: %s rows, expected %zu", tuples, k);
            PQclear(res);
            goto fail;
        }
        PQclear(res);
        if (run->lat)
            run->lat[done] = (double)(now_ns() - t0) / 1e3;
    }
    return NULL;

fail:
    run_fail(run, 0);
    return NULL;
}

static void *
consumer(void *arg)
{
    Run *run = arg;
    char *err = run->err[1];
    uint64_t *ids = xmalloc(run->batch * sizeof *ids);
    char *idtext = xmalloc(run->batch * 21 + 3);
    size_t held = 0, leased = 0, acked = 0;

    while (acked < run->n) {
        size_t k = run->n - leased < run->batch ? run->n - leased : run->batch;
        size_t off = 0, got;
        char limit[32];
        const char *vals[2] = { idtext, limit };
        PGresult *res;

        idtext[off++] = '{';
        for (size_t i = 0; i < held; i++)
            off += (size_t)sprintf(idtext + off, i ? ",%llu" : "%llu", (unsigned long long)ids[i]);
        idtext[off++] = '}';
        idtext[off] = '\0';
        snprintf(limit, sizeof limit, "%zu", k);

        res = PQexecPrepared(run->cons, "take", 2, vals, NULL, NULL, 1);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pqerr(err, ERRLEN, "ack+lease", PQerrorMessage(run->cons));
            PQclear(res);
            goto fail;
        }
        got = (size_t)PQntuples(res);
        for (size_t i = 0; i < got; i++) {
            if (PQgetlength(res, (int)i, 0) != 8 || PQgetlength(res, (int)i, 1) != (int)run->body) {
                seterr(err, ERRLEN, "leased a row with a %d-byte body, expected %zu",
                       PQgetlength(res, (int)i, 1), run->body);
                PQclear(res);
                goto fail;
            }
            ids[i] = get64(PQgetvalue(res, (int)i, 0));
        }
        PQclear(res);
        acked += held;
        if (got == 0 && held == 0) {
            /* The producer is behind: do not spin on the server. */
            struct timespec ts = { 0, PG_IDLE_SLEEP_NS };

            if (atomic_load(&run->stop)) {
                seterr(err, ERRLEN, "stopped: the other thread failed");
                goto fail;
            }
            nanosleep(&ts, NULL);
        }
        held = got;
        leased += got;
    }
    run->t_end = now_ns();
    free(ids);
    free(idtext);
    return NULL;

fail:
    free(ids);
    free(idtext);
    run_fail(run, 1);
    return NULL;
}

/* bytea_array builds the binary array_recv form of `batch` pseudo-random bodies
 * (incompressible, so TOAST compression cannot flatter larger bodies). */
static char *
bytea_array(size_t batch, size_t body)
{
    char *a = xmalloc(PG_ARRAY_HEADER + batch * (4 + body)), *p = a;
    uint32_t x = 2463534242u;

    put32(p, 1);                /* ndim */
    put32(p + 4, 0);            /* no NULLs */
    put32(p + 8, OID_BYTEA);
    put32(p + 12, (uint32_t)batch);
    put32(p + 16, 1);           /* lower bound */
    p += PG_ARRAY_HEADER;
    for (size_t i = 0; i < batch; i++) {
        put32(p, (uint32_t)body);
        p += 4;
        for (size_t j = 0; j < body; j++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *p++ = (char)x;
        }
    }
    return a;
}

int
peer_pg_run(PgTmp *pg, size_t body, size_t batch, size_t n, PeerResult *r)
{
    static const Oid put_types[] = { OID_BYTEAARRAY };
    static const Oid take_types[] = { OID_INT8ARRAY, OID_INT8 };
    Run run = { .body = body, .batch = batch, .n = n };
    PGconn *admin = NULL;
    pthread_t th[2];
    int started = 0, rc = -1;
    int64_t t0;

    memset(r, 0, sizeof *r);
    if (!pg || batch == 0 || n == 0) {
        seterr(r->err, sizeof r->err, "peer_pg_run: need a started PgTmp, batch > 0, n > 0");
        return -1;
    }
    if (batch > (INT_MAX - PG_ARRAY_HEADER) / 4 ||
        body > (INT_MAX - PG_ARRAY_HEADER) / batch - 4) {
        seterr(r->err, sizeof r->err, "peer_pg_run: batch * body too large for one INSERT");
        return -1;
    }

    if (!(admin = connect_db(pgtmp_conninfo(pg), r->err, sizeof r->err)) ||
        check_fsync(admin, r->err, sizeof r->err) == -1 ||
        exec(admin, sql_schema, r->err, sizeof r->err) == -1)
        goto done;
    if (!(run.prod = connect_db(pgtmp_conninfo(pg), r->err, sizeof r->err)) ||
        !(run.cons = connect_db(pgtmp_conninfo(pg), r->err, sizeof r->err)) ||
        prepare(run.prod, "put", sql_put, 1, put_types, r->err, sizeof r->err) == -1 ||
        prepare(run.cons, "take", sql_take, 2, take_types, r->err, sizeof r->err) == -1)
        goto done;
    run.arr = bytea_array(batch, body);
    if (batch == 1)
        run.lat = xmalloc(n * sizeof *run.lat);

    t0 = now_ns();
    if ((errno = pthread_create(&th[0], NULL, producer, &run)) != 0) {
        seterr(r->err, sizeof r->err, "pthread_create: %s", strerror(errno));
        goto done;
    }
    started = 1;
    if ((errno = pthread_create(&th[1], NULL, consumer, &run)) != 0) {
        seterr(r->err, sizeof r->err, "pthread_create: %s", strerror(errno));
        atomic_store(&run.stop, 1);
        goto done;
    }
    started = 2;
    for (; started > 0; started--)
        pthread_join(th[started - 1], NULL);

    switch (atomic_load(&run.failed)) {
    case 1:
        seterr(r->err, sizeof r->err, "pg producer: %s", run.err[0]);
        goto done;
    case 2:
        seterr(r->err, sizeof r->err, "pg consumer: %s", run.err[1]);
        goto done;
    }
    r->cycles_per_s = (double)n / ((double)(run.t_end - t0) / 1e9);
    if (run.lat) {
        qsort(run.lat, n, sizeof *run.lat, cmp_double);
        r->p50_us = pct(run.lat, n, 50);
        r->p99_us = pct(run.lat, n, 99);
    }
    rc = 0;

done:
    /* Only the producer can be running here: it gives up once stop is set. */
    for (; started > 0; started--)
        pthread_join(th[started - 1], NULL);
    PQfinish(run.prod);
    PQfinish(run.cons);
    if (admin) {
        char ignored[256];

        exec(admin, "DROP TABLE IF EXISTS q", ignored, sizeof ignored);
        PQfinish(admin);
    }
    free(run.arr);
    free(run.lat);
    return rc;
}
