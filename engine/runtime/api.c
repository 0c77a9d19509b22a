/* api.c: the engine's built-in HTTP endpoints.
 *
 *   POST /queues/NAME/jobs   a change notice: the JSON body becomes a job of a
 *                            declared queue; 202 {"id":N} only after commit.
 *                            Idempotency-Key header (a retry with a key seen
 *                            within the queue's key_retention: 200, the first
 *                            job's id, "existed":true); ?pri=N&delay=S.
 *                            With Content-Type: application/x-ndjson (or
 *                            application/jsonl), many jobs at once: see
 *                            "bulk" below.
 *   GET  /queues             depths by state of every queue (JSON)
 * (GET /health, /ready, /metrics, / and /status: observe.h.) */
#include "engine.h"
#include "json.h"
#include "listen.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct PutReq {
    EngineOp eo;
    Exchange *x;
    char queue[QUEUE_NAME_MAX + 1];
    char *key;
    size_t keylen;
    char *body;
    size_t len;
    uint32_t pri;
    uint64_t delay_ms;
    uint64_t id;
    int existed;
} PutReq;

static int put_apply(Txn *t, CommitOp *op)
{
    PutReq *r = (PutReq *)op;
    PutArgs a = {.pri = r->pri, .delay_ms = r->delay_ms, .key = r->key, .keylen = r->keylen,
                 .body = r->body, .len = r->len};
    return queue_put(t, r->queue, &a, &r->id, &r->existed);
}

static void put_done(EngineOp *eo, int rc)
{
    PutReq *r = (PutReq *)eo;
    if (rc == 0) {
        /* 202: a new job, on disk. 200: the Idempotency-Key came before (a
         * retry): nothing added; the id is the first job's, which is still
         * queued ("done":false) or was already worked ("done":true). */
        char out[96];
        int n = r->existed
                    ? snprintf(out, sizeof out, "{\"id\":%llu,\"existed\":true,\"done\":%s}\n",
                               (unsigned long long)r->id, r->existed == 2 ? "true" : "false")
                    : snprintf(out, sizeof out, "{\"id\":%llu,\"existed\":false}\n",
                               (unsigned long long)r->id);
        exchange_respond(r->x, r->existed ? 200 : 202, "application/json", out, (size_t)n);
    } else {
        char msg[256];
        unsigned status = 500;
        if (rc == PL_ETOOBIG) {
            status = 413;
            snprintf(msg, sizeof msg, "body over queue '%s' limit; raise max_body in the pipeline file", r->queue);
        } else if (rc == PL_EFULL || rc == ENOSPC) {
            status = 507;
            snprintf(msg, sizeof msg, "no room for new jobs (%s); retry later", pl_strerror(rc));
        } else {
            snprintf(msg, sizeof msg, "could not store the job: %s", pl_strerror(rc));
        }
        exchange_error(r->x, status, msg);
    }
    free(r->key);
    free(r->body);
    free(r);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- bulk
 *
 * POST /queues/NAME/jobs with Content-Type application/x-ndjson (or
 * application/ndjson, application/jsonl): one job per line, in the form of
 * `qctl export` and `qctl import`, {"body": JSON, "key": "K", "priority": N}
 * ("key" and "priority" optional; other members ignored; blank lines
 * skipped). Every job is put in ONE commit, and the one answer comes after
 * it: 202 {"ids":[...],"added":A,"existed":[i...],"done":[i...]} with the
 * id of each line's job in order, and the 0-based indexes of the jobs whose
 * key the queue had seen (no job added for them: "ids" holds the first
 * job's; "done" when that one was already worked); 200 when every job
 * existed. Idempotency per line: a line's "key", else, when the request has
 * an Idempotency-Key header K, "K:i" for the i-th job, so that a client that
 * retries a whole request with the same header adds nothing twice within
 * the queue's key_retention. All or nothing: a line that is not such an
 * object (400), a body over the queue's max_body (413), or a put that
 * fails (507 no room, 500) adds no job, and the answer names the line.
 * ?pri=N (the default priority of the lines) and ?delay=S apply to all. */

typedef struct BulkItem {
    uint32_t pri;
    size_t key, keylen;       /* the key at keys.buf + key; keylen 0: none */
    const char *body;         /* a span of BulkReq.buf */
    size_t len;
    size_t line;
} BulkItem;

typedef struct BulkReq {
    EngineOp eo;
    Exchange *x;
    char queue[QUEUE_NAME_MAX + 1];
    char *buf;                /* the request's body */
    Strbuf keys;
    BulkItem *it;
    size_t n, cap;
    uint64_t delay_ms;
    uint64_t *ids;
    unsigned char *existed;   /* 0 added, 1 existed (live), 2 existed (done) */
    size_t failed_at;         /* the item whose put failed */
} BulkReq;

static void bulk_free(BulkReq *r)
{
    free(r->buf);
    sb_free(&r->keys);
    free(r->it);
    free(r->ids);
    free(r->existed);
    free(r);
}

static int bulk_apply(Txn *t, CommitOp *op)
{
    BulkReq *r = (BulkReq *)op;
    for (size_t i = 0; i < r->n; i++) {
        const BulkItem *it = &r->it[i];
        PutArgs a = {.pri = it->pri, .delay_ms = r->delay_ms, .body = it->body, .len = it->len,
                     .key = it->keylen ? r->keys.buf + it->key : NULL, .keylen = it->keylen};
        int existed = 0, rc = queue_put(t, r->queue, &a, &r->ids[i], &existed);
        if (rc) {
            r->failed_at = i;
            /* The jobs before it are written: none of them may commit. */
            return i ? txn_fail(t, rc) : rc;
        }
        r->existed[i] = (unsigned char)existed;
    }
    return 0;
}

static void bulk_done(EngineOp *eo, int rc)
{
    BulkReq *r = (BulkReq *)eo;
    if (rc) {
        char msg[300];
        unsigned status = 500;
        size_t line = r->failed_at < r->n ? r->it[r->failed_at].line : 0;
        if (rc == PL_ETOOBIG) {
            status = 413;
            snprintf(msg, sizeof msg, "line %zu: body over queue '%s' limit; raise max_body in the "
                     "pipeline file; no job added", line, r->queue);
        } else if (rc == PL_EFULL || rc == ENOSPC) {
            status = 507;
            snprintf(msg, sizeof msg, "no room for new jobs (%s); no job added; retry later",
                     pl_strerror(rc));
        } else {
            snprintf(msg, sizeof msg, "could not store the jobs (line %zu): %s; no job added", line,
                     pl_strerror(rc));
        }
        exchange_error(r->x, status, msg);
        bulk_free(r);
        return;
    }
    Strbuf b;
    sb_init(&b);
    size_t added = 0;
    sb_adds(&b, "{\"ids\":[");
    for (size_t i = 0; i < r->n; i++) {
        sb_addf(&b, "%s%llu", i ? "," : "", (unsigned long long)r->ids[i]);
        added += r->existed[i] == 0;
    }
    sb_addf(&b, "],\"added\":%zu,\"existed\":[", added);
    for (size_t i = 0, k = 0; i < r->n; i++)
        if (r->existed[i])
            sb_addf(&b, "%s%zu", k++ ? "," : "", i);
    sb_adds(&b, "],\"done\":[");
    for (size_t i = 0, k = 0; i < r->n; i++)
        if (r->existed[i] == 2)
            sb_addf(&b, "%s%zu", k++ ? "," : "", i);
    sb_adds(&b, "]}\n");
    exchange_respond(r->x, added ? 202 : 200, "application/json", b.buf, b.len);
    sb_free(&b);
    bulk_free(r);
}

static int bulk_content(const char *ct)
{
    static const char *const types[] = {"application/x-ndjson", "application/ndjson",
                                        "application/jsonl", "application/x-jsonlines"};
    if (!ct)
        return 0;
    size_t n = strcspn(ct, "; \t");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strlen(types[i]) == n && !strncasecmp(ct, types[i], n))
            return 1;
    return 0;
}

/* bulk_line reads one NDJSON line into a new item of r: 0, or an HTTP
 * status with the reason in msg. */
static unsigned bulk_line(BulkReq *r, const char *s, size_t n, size_t line, uint32_t pri,
                          const QueueConf *cf, char *msg, size_t mn)
{
    char jerr[200];
    if (json_validate(s, n, jerr, sizeof jerr) != 0) {
        snprintf(msg, mn, "line %zu: %s; no job added", line, jerr);
        return 400;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->it = xrealloc(r->it, r->cap * sizeof *r->it);
    }
    BulkItem *it = &r->it[r->n];
    memset(it, 0, sizeof *it);
    it->pri = pri;
    it->line = line;
    JsonJob j;
    char why[160];
    int rc = json_job_read(s, n, &j, why, sizeof why);
    if (rc == JSON_JOB_NOT_OBJECT || rc == JSON_JOB_NO_BODY) {
        snprintf(msg, mn, "line %zu: %s; each line is one job, {\"body\": JSON, \"key\": \"K\", "
                 "\"priority\": N} (key and priority optional); no job added", line, why);
        return 400;
    }
    if (rc) {
        snprintf(msg, mn, "line %zu: %s; no job added", line, why);
        return 400;
    }
    it->body = j.body.p;
    it->len = j.body.n;
    if (j.has_pri)
        it->pri = j.pri;
    if (j.key) {
        it->key = r->keys.len;
        it->keylen = j.keylen;
        sb_add(&r->keys, j.key, j.keylen);
        free(j.key);
    }
    if (it->len > cf->max_body) {
        snprintf(msg, mn, "line %zu: the body (%zu bytes) is over queue '%s' max_body (%u bytes); "
                 "raise max_body in the pipeline file, or send it apart; no job added", line,
                 it->len, r->queue, cf->max_body);
        return 413;
    }
    r->n++;
    return 0;
}

static void on_bulk(Engine *e, Exchange *x, const char *queue, const QueueConf *cf)
{
    BulkReq *r = xcalloc(1, sizeof *r);
    char msg[400];
    unsigned status = 0;
    uint64_t v;
    uint32_t pri = 0;
    const char *q;
    snprintf(r->queue, sizeof r->queue, "%s", queue);
    sb_init(&r->keys);
    if ((q = exchange_query(x, "pri")) != NULL) {
        if (parse_u64(q, UINT32_MAX, &v)) {
            status = 400;
            snprintf(msg, sizeof msg, "pri must be an integer 0..4294967295");
            goto fail;
        }
        pri = (uint32_t)v;
    }
    if ((q = exchange_query(x, "delay")) != NULL) {
        if (parse_u64(q, 365ull * 86400, &v)) {
            status = 400;
            snprintf(msg, sizeof msg, "delay must be whole seconds, 0..31536000");
            goto fail;
        }
        r->delay_ms = v * 1000;
    }
    const char *hkey = exchange_header(x, "Idempotency-Key");
    if (hkey && (!*hkey || strlen(hkey) > QUEUE_KEY_MAX - 11)) {
        status = 400;
        snprintf(msg, sizeof msg, "Idempotency-Key of a bulk request must be 1..%d bytes (the i-th "
                 "job's key is KEY:i)", QUEUE_KEY_MAX - 11);
        goto fail;
    }
    size_t len;
    const char *body = exchange_body(x, &len);
    r->buf = xmalloc(len + 1);
    memcpy(r->buf, body, len);
    r->buf[len] = '\0';
    size_t line = 0;
    for (size_t a = 0; a < len;) {
        const char *nl = memchr(r->buf + a, '\n', len - a);
        size_t end = nl ? (size_t)(nl - r->buf) : len, off;
        line++;
        size_t tl = json_trim(r->buf + a, end - a, &off);
        if (tl && (status = bulk_line(r, r->buf + a + off, tl, line, pri, cf, msg, sizeof msg)) != 0)
            goto fail;
        a = end + 1;
    }
    if (r->n == 0) {
        status = 400;
        snprintf(msg, sizeof msg, "no jobs in the body: one job per line, {\"body\": JSON, \"key\": "
                 "\"K\", \"priority\": N}");
        goto fail;
    }
    if (hkey) {
        for (size_t i = 0; i < r->n; i++) {
            if (r->it[i].keylen)
                continue;
            r->it[i].key = r->keys.len;
            sb_addf(&r->keys, "%s:%zu", hkey, i);
            r->it[i].keylen = r->keys.len - r->it[i].key;
        }
    }
    r->ids = xcalloc(r->n, sizeof *r->ids);
    r->existed = xcalloc(r->n, 1);
    r->failed_at = SIZE_MAX;
    r->x = x;
    r->eo.op.apply = bulk_apply;
    r->eo.loop_done = bulk_done;
    engine_submit(e, &r->eo);
    return;
fail:
    bulk_free(r);
    exchange_error(x, status, msg);
}

static void on_put(void *arg, Exchange *x)
{
    Engine *e = arg;
    const char *path = exchange_path(x) + strlen("/queues/");
    const char *slash = strchr(path, '/');
    char msg[300];
    if (!slash || strcmp(slash, "/jobs") != 0 || slash == path || (size_t)(slash - path) > QUEUE_NAME_MAX) {
        exchange_error(x, 404, "use POST /queues/NAME/jobs");
        return;
    }
    PutReq *r = xcalloc(1, sizeof *r);
    memcpy(r->queue, path, (size_t)(slash - path));
    const QueueDecl *qd = pipeline_queue(engine_pipeline(e), r->queue);
    if (!qd) {
        snprintf(msg, sizeof msg, "queue '%s' is not declared in the pipeline; declare it under queues:", r->queue);
        free(r);
        exchange_error(x, 404, msg);
        return;
    }
    if (bulk_content(exchange_header(x, "Content-Type"))) {
        on_bulk(e, x, r->queue, &qd->conf);
        free(r);
        return;
    }
    size_t len;
    const char *body = exchange_body(x, &len);
    char jerr[200];
    if (json_validate(body, len, jerr, sizeof jerr) != 0) {
        snprintf(msg, sizeof msg, "body is not valid JSON: %s", jerr);
        free(r);
        exchange_error(x, 400, msg);
        return;
    }
    uint64_t v;
    const char *q;
    if ((q = exchange_query(x, "pri")) != NULL) {
        if (parse_u64(q, UINT32_MAX, &v)) {
            free(r);
            exchange_error(x, 400, "pri must be an integer 0..4294967295");
            return;
        }
        r->pri = (uint32_t)v;
    }
    if ((q = exchange_query(x, "delay")) != NULL) {
        if (parse_u64(q, 365ull * 86400, &v)) {
            free(r);
            exchange_error(x, 400, "delay must be whole seconds, 0..31536000");
            return;
        }
        r->delay_ms = v * 1000;
    }
    const char *key = exchange_header(x, "Idempotency-Key");
    if (key) {
        r->keylen = strlen(key);
        if (r->keylen == 0 || r->keylen > QUEUE_KEY_MAX) {
            free(r);
            exchange_error(x, 400, "Idempotency-Key must be 1..200 bytes");
            return;
        }
        r->key = xstrdup(key);
    }
    r->x = x;
    r->body = xmalloc(len + 1);
    memcpy(r->body, body, len);
    r->len = len;
    r->eo.op.apply = put_apply;
    r->eo.loop_done = put_done;
    engine_submit(e, &r->eo);
}

/* ---------------------------------------------------------------- reads */

static int list_json(const QueueStats *s, void *arg)
{
    Strbuf *b = arg;
    if (b->len > 1)
        sb_adds(b, ",");
    sb_add_json_string(b, s->name, strlen(s->name));
    sb_addf(b, ":{\"ready\":%llu,\"delayed\":%llu,\"reserved\":%llu,\"buried\":%llu,"
               "\"puts\":%llu,\"acks\":%llu,\"buries\":%llu,\"oldest_ready_ms\":%llu,\"paused\":%s}",
            (unsigned long long)s->ready, (unsigned long long)s->delayed,
            (unsigned long long)s->reserved, (unsigned long long)s->buried,
            (unsigned long long)s->puts, (unsigned long long)s->acks,
            (unsigned long long)s->buries, (unsigned long long)s->oldest_ready_ms,
            s->paused ? "true" : "false");
    return 0;
}

static int read_queues(Txn *t, void *arg)
{
    return queue_list(t, list_json, arg);
}

static void on_queues(void *arg, Exchange *x)
{
    Engine *e = arg;
    Strbuf b;
    sb_init(&b);
    sb_adds(&b, "{");
    int rc = store_read(engine_store(e), read_queues, &b);
    sb_adds(&b, "}\n");
    if (rc)
        exchange_error(x, 500, pl_strerror(rc));
    else
        exchange_respond(x, 200, "application/json", b.buf, b.len);
    sb_free(&b);
}

void api_register(Engine *e)
{
    Listener *l = engine_listener(e);
    listener_route(l, "POST", "/queues/", 0, on_put, e);
    listener_route(l, "GET", "/queues", 0, on_queues, e);
}
