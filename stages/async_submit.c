/* async_submit.c: POSTs the staged row to a service together with a
 * callback URL that carries a secret token, and does NOT wait: on the
 * service's 2xx the input job is acked and a waiting job (delayed until the
 * deadline) is put on the stage's wait queue "_w.STAGE", in one commit. No
 * worker and no connection is held while waiting. The listener's POST
 * /callbacks/STAGE/TOKEN checks the callback's fields against the row's
 * model, merges them into the row (the instance the reference names),
 * deletes the waiting job and puts the reference on the output queue, in
 * one commit, then answers 200. A waiting job whose deadline passes comes
 * back ready: the stage resubmits the row (a new token) until the input
 * queue's max_attempts, then buries the waiting job with the reason.
 *
 * Tokens. Callbacks come from outside and skip the listener's bearer token,
 * so the URL is the only secret. A token is 36 bytes from the kernel's
 * CSPRNG (getrandom(2), never the xorshift generator), base64url: 48
 * characters of [A-Za-z0-9_-]. Its first 16 (96 bits) are the selector,
 * the waiting job's idempotency key, looked up; the other 32 (192 bits) are
 * the verifier, of which the waiting job keeps only the SHA-256 (so `qctl
 * peek` or `export` of the waits never shows a usable token), compared in
 * constant time, so the lookup's timing tells nothing about the secret part. A token is good
 * once, until the deadline: an unknown, forged or answered one gets 404, one
 * past its deadline (or whose wait was given up or set aside) 410, and
 * nothing changes. Tokens issued by a pickline before these (32 hex
 * characters) are refused: their rows are submitted again at the deadline.
 *
 * Callback data is checked before it touches the row: each merged value
 * against its field of the model (model_check_field: type, length, format,
 * ...; an undeclared field by the model's drift policy), and merged in its
 * normalised form. A callback that fails gets 422 with the reasons, the
 * row stays as it was, and the waiting job is buried with the reason (`qctl
 * peek _w.STAGE --state buried`; a kick submits the row again). When the
 * pipeline declares no model of the row's name, values are merged as sent.
 *
 *   kind: async_submit
 *   url: http://127.0.0.1:9004/verify
 *   send: [email, first_name]     # default: the whole row
 *   merge: {verified: identity_ok, score: identity_score}
 *   deadline: 300                 # seconds to wait for the callback */
#include "common.h"
#include "engine.h"
#include "listen.h"
#include "model.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct AsyncStage {
    Stage *stage;
    const char *url, *callback_base;
    double deadline;
    const char **send;
    size_t nsend;
    StageMerge merge;
    char **headers;
    char wait_queue[QUEUE_NAME_MAX + 1];
    char prefix[QUEUE_NAME_MAX + 16];
    ev_timer expire;
    EngineOp expire_op;
    int expire_busy;
    struct ExpItem *items;  /* EXPIRE_MAX: the expire op's copies of the waiting jobs */
    uint32_t max_attempts;
} AsyncStage;

typedef struct AsyncJob {
    StageRowCall rc;
    uint32_t tries;         /* submissions so far, from the job body */
    uint32_t pri;           /* the priority its output will have (slot_priority) */
    char token[CALLBACK_TOKEN_LEN + 1];
    Strbuf waiting;
    AsyncStage *k;
} AsyncJob;

/* ---------------------------------------------------------------- tokens */

#define SELECTOR_LEN 16
#define VERIFIER_LEN (CALLBACK_TOKEN_LEN - SELECTOR_LEN)
#define VHASH_LEN (2 * SHA256_DIGEST_SIZE)

/* verifier_hash writes the lower-case hex SHA-256 of the n bytes of v. */
static void verifier_hash(const char *v, size_t n, char out[VHASH_LEN + 1])
{
    struct sha256_ctx h;
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_init(&h);
    sha256_update(&h, n, (const uint8_t *)v);
    sha256_digest(&h, sizeof d, d);
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int async_submit_token_new(char tok[CALLBACK_TOKEN_LEN + 1])
{
    unsigned char r[CALLBACK_TOKEN_LEN / 4 * 3];
    int rc = pl_random_bytes(r, sizeof r);
    if (rc)
        return rc;
    for (size_t i = 0, k = 0; i < sizeof r; i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        tok[k++] = b64url[v >> 18 & 63];
        tok[k++] = b64url[v >> 12 & 63];
        tok[k++] = b64url[v >> 6 & 63];
        tok[k++] = b64url[v & 63];
    }
    tok[CALLBACK_TOKEN_LEN] = '\0';
    memset(r, 0, sizeof r);
    return 0;
}

int async_submit_token_ok(const char *s, size_t n)
{
    if (n != CALLBACK_TOKEN_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!memchr(b64url, s[i], sizeof b64url - 1) || !s[i])
            return 0;
    return 1;
}

int async_submit_secret_equal(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* ---------------------------------------------------------------- submit */

/* put_waiting runs in the commit that acks the input job: the waiting job
 * holds the reference, the submissions so far, the token's verifier and
 * its expiry, under the selector as its key. */
static int put_waiting(Txn *t, void *arg)
{
    AsyncJob *j = arg;
    uint64_t ms = (uint64_t)(j->k->deadline * 1000);
    sb_reset(&j->waiting);
    stage_ref_body(&j->waiting, j->rc.ref.model, j->rc.ref.key, j->rc.ref.row);
    j->waiting.len--; /* reopen the object */
    char vh[VHASH_LEN + 1];
    verifier_hash(j->token + SELECTOR_LEN, VERIFIER_LEN, vh);
    sb_addf(&j->waiting, ",\"tries\":%u,\"verifier_sha256\":\"%s\",\"expires_ms\":%llu}",
            j->tries + 1, vh, (unsigned long long)(t->now + ms));
    PutArgs a = {.pri = j->pri, .delay_ms = ms, .key = j->token, .keylen = SELECTOR_LEN,
                 .body = j->waiting.buf, .len = j->waiting.len};
    uint64_t id;
    return queue_put(t, j->k->wait_queue, &a, &id, NULL);
}

/* submitted: the service took the row; the wait begins with the ack. */
static void submitted(Slot *s, const msgpack_object *json, const void *mp, size_t len)
{
    (void)json, (void)mp, (void)len;
    AsyncJob *j = s->data;
    char why[QUEUE_REASON_MAX];
    /* The waiting job carries the priority the output will be put at. */
    if (slot_priority(s, NULL, &j->pri, why, sizeof why) != 0) {
        slot_bury(s, why);
        return;
    }
    slot_extra(s, put_waiting, s->data);
    slot_done(s);
}

static void async_start(Slot *s)
{
    AsyncStage *k = s->stage->data;
    AsyncJob *j = s->data;
    char err[256], why[512];
    RowView v;
    if (stage_rowcall_read(s, &j->rc, &v) != 0)
        return;
    j->tries = 0;
    const msgpack_object *body;
    sb_reset(&j->waiting); /* scratch until put_waiting */
    if (slot_body(s, &body, err, sizeof err) == 0 && row_field_text(body, "tries", &j->waiting) == 0)
        j->tries = (uint32_t)strtoul(j->waiting.buf, NULL, 10);
    int rc = async_submit_token_new(j->token);
    if (rc) {
        row_view_free(&v);
        snprintf(why, sizeof why, "cannot make a callback token: %s", pl_strerror(rc));
        slot_retry(s, 1, why);
        return;
    }
    /* The body: the send fields (or the whole row) and the callback URL. */
    Strbuf *b = &j->rc.call.body;
    sb_reset(b);
    sb_adds(b, "{");
    size_t before = b->len;
    stage_put_fields(b, &v.root, k->nsend ? k->send : NULL, k->nsend);
    row_view_free(&v);
    if (b->len > before)
        sb_adds(b, ",");
    sb_adds(b, "\"callback_url\":");
    sb_reset(&j->waiting); /* scratch until put_waiting */
    sb_addf(&j->waiting, "%s%s%s", k->callback_base, k->prefix, j->token);
    sb_add_json_string(b, j->waiting.buf, j->waiting.len);
    sb_adds(b, "}");
    sb_reset(&j->rc.call.url);
    sb_adds(&j->rc.call.url, k->url);
    static const char *const own[] = {"Content-Type: application/json", NULL};
    stage_http(s, &j->rc.call, "POST", own, submitted);
}

/* ---------------------------------------------------------------- callback */

typedef struct CbOp {
    EngineOp eo;
    AsyncStage *k;
    Exchange *x;
    char token[CALLBACK_TOKEN_LEN + 1];
    msgpack_sbuffer src;        /* the callback's body */
    msgpack_sbuffer norm;       /* the merged fields, checked and normalised */
    Strbuf errors;              /* 422: the failed rules (JSON array members) */
    uint64_t job;               /* the waiting job */
    unsigned status;            /* the answer: 200, 404, 410 or 422 */
    char msg[QUEUE_REASON_MAX];
} CbOp;

/* Waiting: what a waiting job's body holds. */
typedef struct Waiting {
    JobRef ref;
    uint32_t tries;
    char vhash[VHASH_LEN + 1];          /* the verifier's SHA-256 (hex) */
    char verifier[VERIFIER_LEN + 1];    /* a wait written before the hash: the verifier itself */
    uint64_t expires_ms;
} Waiting;

static int waiting_of(const void *body, size_t len, Waiting *w)
{
    char err[128];
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    memset(w, 0, sizeof *w);
    int rc = row_from_json_object(body, len, &mp, err, sizeof err);
    if (rc == 0) {
        RowView v;
        Strbuf c;
        sb_init(&c);
        rc = row_view(&v, mp.data, mp.size);
        if (!rc) {
            const msgpack_object *e = row_field(&v.root, "expires_ms");
            if (staging_ref_parse(&v.root, &w->ref) != 0)
                rc = PL_EFORMAT;
            if (row_field_text(&v.root, "tries", &c) == 0)
                w->tries = (uint32_t)strtoul(c.buf, NULL, 10);
            sb_reset(&c);
            if (row_field_text(&v.root, "verifier_sha256", &c) == 0 && c.len == VHASH_LEN)
                memcpy(w->vhash, c.buf, VHASH_LEN + 1);
            sb_reset(&c);
            if (row_field_text(&v.root, "verifier", &c) == 0 && c.len == VERIFIER_LEN)
                memcpy(w->verifier, c.buf, VERIFIER_LEN + 1);
            if (e && e->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                w->expires_ms = e->via.u64;
            row_view_free(&v);
        }
        sb_free(&c);
    }
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

/* refuse sets the answer when nothing is written. */
static int refuse(CbOp *c, unsigned status, const char *msg)
{
    c->status = status;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    return 0;
}

#define UNKNOWN "unknown or already answered callback token"

static int cb_apply(Txn *t, CommitOp *op)
{
    CbOp *c = (CbOp *)op;
    AsyncStage *k = c->k;
    const Pipeline *p = engine_pipeline(k->stage->engine);
    uint64_t id;
    Job j;
    Waiting w;
    char why[QUEUE_REASON_MAX];
    int rc;

    c->status = 0;
    c->msg[0] = '\0';
    c->job = 0;
    rc = queue_lookup_key(t, k->wait_queue, c->token, SELECTOR_LEN, &id);
    if (rc == PL_ENOJOB || rc == PL_ENOQUEUE)
        return refuse(c, 404, UNKNOWN);
    if (rc)
        return rc;
    if ((rc = queue_get(t, id, &j)) == PL_ENOJOB)
        return refuse(c, 404, UNKNOWN);
    if (rc)
        return rc;
    c->job = id;
    /* The secret half, in constant time: a forged verifier and an unknown
     * selector get the same answer. */
    char vh[VHASH_LEN + 1];
    verifier_hash(c->token + SELECTOR_LEN, VERIFIER_LEN, vh);
    if (waiting_of(j.body, j.len, &w) != 0 ||
        !(w.vhash[0] ? async_submit_secret_equal(w.vhash, vh, VHASH_LEN)
          : w.verifier[0] && async_submit_secret_equal(w.verifier, c->token + SELECTOR_LEN, VERIFIER_LEN)))
        return refuse(c, 404, UNKNOWN);
    if (j.state != JOB_DELAYED || t->now >= w.expires_ms) {
        snprintf(why, sizeof why, "callback token expired: %s; the row is submitted again with a "
                 "new token (or, past the attempts, the wait is buried in '%s')",
                 j.state == JOB_BURIED ? "the wait for it was set aside"
                 : "its deadline passed", k->wait_queue);
        return refuse(c, 410, why);
    }

    RowView src;
    if (row_view(&src, c->src.data, c->src.size) != 0)
        return refuse(c, 400, "callback body does not decode");
    const Model *m = p->models ? models_find(p->models, w.ref.model) : NULL;
    int ok = stage_merge_check(&k->merge, m, &src.root, &c->norm, &c->errors) == 0;
    row_view_free(&src);
    const void *row;
    size_t rowlen;
    rc = staging_row_get(t, w.ref.model, w.ref.key, w.ref.row, &row, &rowlen, NULL);
    if (rc && rc != PL_ENOROW)
        return rc;
    if (!ok || rc == PL_ENOROW) {
        /* Set the wait aside with the reason: the row is as it was. */
        char first[300];
        if (!ok) {
            stage_first_error(c->errors.buf, c->errors.len, first, sizeof first);
            snprintf(why, sizeof why, "callback data refused (model '%s'): %s; the row is as it "
                     "was; kick this job to submit the row again", w.ref.model, first);
        } else {
            snprintf(why, sizeof why, "callback for staged row %s/%s: the row is gone (purged?); "
                     "nothing to merge into", w.ref.model, w.ref.key);
        }
        if ((rc = queue_bury(t, id, 0, why)) != 0)
            return rc;
        c->status = ok ? 410 : 422;
        snprintf(c->msg, sizeof c->msg, "%s", why);
        return 0;
    }

    /* Good: the merge, the hand-on, and the wait is over: all or nothing. */
    const char *const *names = (const char *const *)k->merge.to;
    if ((rc = queue_ack(t, id, 0)) != 0)
        return rc;
    rc = staging_row_merge(t, w.ref.model, w.ref.key, w.ref.row, c->norm.data, c->norm.size,
                           names, names, k->merge.n);
    if (rc)
        return txn_fail(t, rc);
    Strbuf out;
    sb_init(&out);
    stage_ref_body(&out, w.ref.model, w.ref.key, w.ref.row);
    PutArgs a = {.pri = j.pri, .body = out.buf, .len = out.len};
    rc = queue_put(t, k->stage->conf->outputs[0], &a, &id, NULL);
    sb_free(&out);
    if (rc)
        return txn_fail(t, rc);
    c->status = 200;
    return 0;
}

static void cb_free(CbOp *c)
{
    msgpack_sbuffer_destroy(&c->src);
    msgpack_sbuffer_destroy(&c->norm);
    sb_free(&c->errors);
    free(c);
}

static void cb_done(EngineOp *eo, int rc)
{
    CbOp *c = (CbOp *)eo;
    Stage *st = c->k->stage;
    if (rc) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot take the callback now: %s; retry later", pl_strerror(rc));
        exchange_error(c->x, 503, msg);
    } else if (c->status == 200) {
        static const char ok[] = "{\"status\":\"accepted\"}\n";
        exchange_respond(c->x, 200, "application/json", ok, sizeof ok - 1);
        stage_log(st, PL_LOG_INFO, c->job, "callback %.8s... merged", c->token);
    } else if (c->status == 422) {
        Strbuf b;
        sb_init(&b);
        sb_adds(&b, "{\"error\":");
        sb_add_json_string(&b, c->msg, strlen(c->msg));
        sb_adds(&b, ",\"errors\":[");
        sb_add(&b, c->errors.buf, c->errors.len);
        sb_adds(&b, "]}\n");
        exchange_respond(c->x, 422, "application/json", b.buf, b.len);
        sb_free(&b);
        stage_log(st, PL_LOG_WARN, c->job, "callback %.8s... refused, the wait buried: %s",
                  c->token, c->msg);
    } else {
        if (c->status == 410)
            stage_log(st, PL_LOG_INFO, c->job, "callback %.8s... refused: %s", c->token, c->msg);
        exchange_error(c->x, c->status, c->msg);
    }
    cb_free(c);
}

static void on_callback(void *arg, Exchange *x)
{
    AsyncStage *k = arg;
    const char *token = exchange_path(x) + strlen(k->prefix);
    size_t tl = strlen(token);
    if (!async_submit_token_ok(token, tl)) {
        exchange_error(x, 404, UNKNOWN);
        return;
    }
    size_t len;
    const char *body = exchange_body(x, &len);
    CbOp *c = xcalloc(1, sizeof *c);
    c->k = k;
    c->x = x;
    memcpy(c->token, token, tl);
    msgpack_sbuffer_init(&c->src);
    msgpack_sbuffer_init(&c->norm);
    sb_init(&c->errors);
    char err[200], msg[300];
    if (row_from_json_object(body, len, &c->src, err, sizeof err) != 0) {
        snprintf(msg, sizeof msg, "callback body must be a JSON object: %s", err);
        cb_free(c);
        exchange_error(x, 400, msg);
        return;
    }
    c->eo.op.apply = cb_apply;
    c->eo.loop_done = cb_done;
    engine_submit(k->stage->engine, &c->eo);
}

/* ---------------------------------------------------------------- deadline */

/* ExpItem: a waiting job past its deadline, copied out of the reserve (its
 * views die with the first write). */
typedef struct ExpItem {
    uint64_t id, lease;
    int ok;
    Waiting w;
} ExpItem;

#define EXPIRE_MAX 64

static int expire_apply(Txn *t, CommitOp *op)
{
    AsyncStage *k = container_of(op, AsyncStage, expire_op);
    Job js[EXPIRE_MAX];
    ExpItem *it = k->items;
    size_t got = 0;
    int rc = queue_reserve_n(t, k->wait_queue, EXPIRE_MAX, 0, js, &got);
    if (rc == PL_EEMPTY || rc == PL_EPAUSED)
        return 0;
    if (rc)
        return rc;
    for (size_t i = 0; i < got; i++) {
        it[i].id = js[i].id;
        it[i].lease = js[i].lease;
        it[i].ok = waiting_of(js[i].body, js[i].len, &it[i].w) == 0;
    }
    for (size_t i = 0; i < got && rc == 0; i++) {
        const Waiting *w = &it[i].w;
        if (!it[i].ok) {
            rc = queue_bury(t, it[i].id, it[i].lease, "waiting job body is not a reference");
            continue;
        }
        if (k->max_attempts && w->tries >= k->max_attempts) {
            char why[200];
            snprintf(why, sizeof why, "no callback within %.0f s after %u submissions", k->deadline,
                     w->tries);
            rc = queue_bury(t, it[i].id, it[i].lease, why);
            continue;
        }
        /* Submit again: the reference goes back to the input queue (the
         * token dies with the waiting job). */
        Strbuf b;
        sb_init(&b);
        stage_ref_body(&b, w->ref.model, w->ref.key, w->ref.row);
        b.len--; /* reopen the object */
        sb_addf(&b, ",\"tries\":%u}", w->tries);
        PutArgs a = {.pri = js[i].pri, .body = b.buf, .len = b.len};
        uint64_t id;
        rc = queue_put(t, k->stage->conf->input, &a, &id, NULL);
        sb_free(&b);
        if (!rc)
            rc = queue_ack(t, it[i].id, it[i].lease);
    }
    return rc ? txn_fail(t, rc) : 0;
}

static void expire_done(EngineOp *eo, int rc)
{
    AsyncStage *k = container_of(eo, AsyncStage, expire_op);
    k->expire_busy = 0;
    if (rc)
        stage_log(k->stage, PL_LOG_ERROR, 0, "deadline check failed: %s", pl_strerror(rc));
}

static void on_expire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    AsyncStage *k = container_of(w, AsyncStage, expire);
    if (k->expire_busy || k->stage->draining)
        return;
    k->expire_busy = 1;
    k->expire_op.op.apply = expire_apply;
    k->expire_op.loop_done = expire_done;
    engine_submit(k->stage->engine, &k->expire_op);
}

/* ---------------------------------------------------------------- life */

static int create_wait(Txn *t, void *arg)
{
    AsyncStage *k = arg;
    QueueConf c;
    queue_conf_default(&c);
    c.max_attempts = 0; /* the stage decides, from the input queue's limit */
    int rc = queue_create(t, k->wait_queue, &c);
    return rc == EEXIST ? 0 : rc;
}

static const ConfKey submit_keys[] = {
    {"url", KEY_URL, 1, 0, 0, STAGE_URL_HINT "match", NULL}, /* sent as written: no {field}s */
    {"deadline", KEY_SECS, 0, 0.1, 30 * CONF_SECS_MAX, NULL, NULL},
    {"send", KEY_STRS, 0, 0, 0, NULL, NULL},
    STAGE_KEY_MERGE,
    {"callback_base", KEY_BASE, 0, 0, 0, NULL, NULL},
    STAGE_KEY_HEADERS,
    {0},
};

static int async_init(Stage *s, char *err, size_t errlen)
{
    const char *file = engine_pipeline(s->engine)->path;
    AsyncStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    k->deadline = 300;
    k->callback_base = engine_callback_base(s->engine);
    int rc;
    if ((rc = stage_conf_str(s, "url", &k->url, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "deadline", &k->deadline, err, errlen)) != 0 ||
        (rc = stage_conf_strs(s, "send", &k->send, &k->nsend, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "callback_base", &k->callback_base, err, errlen)) != 0 ||
        (rc = stage_conf_headers(s, &k->headers, err, errlen)) != 0)
        return rc;
    if (!engine_listener(s->engine)) {
        snprintf(err, errlen, "%s:%d: stage '%s': async_submit needs the listener (add listen:)", file,
                 s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    if ((rc = stage_conf_merge(s, &k->merge, err, errlen)) != 0)
        return rc;
    if (strlen(s->conf->name) + 3 > QUEUE_NAME_MAX) {
        snprintf(err, errlen, "%s:%d: stage '%s': an async_submit stage's name is at most %d characters",
                 file, s->conf->line, s->conf->name, QUEUE_NAME_MAX - 3);
        return PL_EINVAL;
    }
    snprintf(k->wait_queue, sizeof k->wait_queue, "_w.%s", s->conf->name);
    snprintf(k->prefix, sizeof k->prefix, "/callbacks/%s/", s->conf->name);
    const QueueDecl *in = pipeline_queue(engine_pipeline(s->engine), s->conf->input);
    k->max_attempts = in ? in->conf.max_attempts : 10;
    if ((rc = store_run(engine_store(s->engine), create_wait, k)) != 0) {
        snprintf(err, errlen, "stage '%s': cannot create its wait queue: %s", s->conf->name, pl_strerror(rc));
        return rc;
    }
    listener_route(engine_listener(s->engine), "POST", k->prefix, 1, on_callback, k);
    k->items = xcalloc(EXPIRE_MAX, sizeof *k->items);
    double every = k->deadline / 4 < 1 ? k->deadline / 4 : 1;
    ev_timer_init(&k->expire, on_expire, every, every);
    ev_timer_start(s->loop, &k->expire);
    return 0;
}

static void async_stop(Stage *s)
{
    AsyncStage *k = s->data;
    ev_timer_stop(s->loop, &k->expire);
}

static void async_slot_init(Slot *s)
{
    AsyncJob *j = s->data;
    j->k = s->stage->data;
    stage_rowcall_init(&j->rc, j->k->headers);
    sb_init(&j->waiting);
}

static void async_slot_fini(Slot *s)
{
    AsyncJob *j = s->data;
    stage_rowcall_free(&j->rc);
    sb_free(&j->waiting);
}

static void async_fini(Stage *s)
{
    AsyncStage *k = s->data;
    if (k) {
        ev_timer_stop(s->loop, &k->expire);
        free(k->send);
        stage_merge_free(&k->merge);
        free(k->items);
        stage_headers_free(k->headers);
    }
    free(k);
}

const StageKind kind_async_submit = {
    .spec = {.name = "async_submit", .article = "an", .flags = KIND_LISTENER, .keys = submit_keys},
    .slot_size = sizeof(AsyncJob),
    .init = async_init, .slot_init = async_slot_init, .start = async_start, .stop = async_stop,
    .fini = async_fini, .slot_fini = async_slot_fini};
