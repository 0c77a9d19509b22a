/* api.c: the engine's built-in HTTP endpoints.
 *
 *   POST /queues/NAME/jobs   a change notice: the JSON body becomes a job of a
 *                            declared queue; 202 {"id":N} only after commit.
 *                            Idempotency-Key header (a retry with a key seen
 *                            within the queue's key_retention: 200, the first
 *                            job's id, "existed":true); ?pri=N&delay=S.
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
    if (!pipeline_queue(engine_pipeline(e), r->queue)) {
        snprintf(msg, sizeof msg, "queue '%s' is not declared in the pipeline; declare it under queues:", r->queue);
        free(r);
        exchange_error(x, 404, msg);
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
