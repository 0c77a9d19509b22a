/* async_submit.c: POSTs the staged row to a service together with a
 * callback URL that carries an unguessable token, and does NOT wait: on the
 * service's 2xx the input job is acked and a waiting job (key: the token,
 * delayed until the deadline) is put on the stage's wait queue
 * "_w.STAGE", in one commit. No worker and no connection is held while
 * waiting. The listener's POST /callbacks/STAGE/TOKEN merges the callback's
 * fields into the row, deletes the waiting job and puts the reference on
 * the output queue, in one commit, then answers 200. An unknown, finished
 * or forged token gets 404 and changes nothing; a repeated callback finds
 * nothing and changes nothing. A waiting job whose deadline passes comes
 * back ready: the stage resubmits the row (a new token) until the input
 * queue's max_attempts, then buries the waiting job with the reason.
 *
 *   kind: async_submit
 *   url: http://127.0.0.1:9004/verify
 *   send: [email, first_name]     # default: the whole row
 *   merge: {verified: identity_ok, score: identity_score}
 *   deadline: 300                 # seconds to wait for the callback */
#include "common.h"
#include "../engine/engine.h"
#include "../engine/listen.h"
#include "../engine/pl.h"
#include "../engine/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct AsyncKd {
    Stage *stage;
    const char *url, *callback_base;
    double deadline;
    const char **send;
    size_t nsend;
    const char **from, **to;
    size_t nmerge;
    char **headers;
    char wait_queue[QUEUE_NAME_MAX + 1];
    char prefix[QUEUE_NAME_MAX + 16];
    ev_timer expire;
    EngineOp expire_op;
    int expire_busy;
    uint32_t max_attempts;
} AsyncKd;

typedef struct AsyncJob {
    JobRef ref;
    uint32_t tries;         /* submissions so far, from the job body */
    char token[33];
    Strbuf url, row, post, waiting;
    char idem[160];
    const char *hdr[35];
    AsyncKd *k;
} AsyncJob;

/* ---------------------------------------------------------------- submit */

static int put_waiting(Txn *t, void *arg)
{
    AsyncJob *j = arg;
    PutArgs a = {.delay_ms = (uint64_t)(j->k->deadline * 1000), .key = j->token, .keylen = 32,
                 .body = j->waiting.buf, .len = j->waiting.len};
    uint64_t id;
    return queue_put(t, j->k->wait_queue, &a, &id, NULL);
}

static void submit_done(void *arg, const HttpResult *r)
{
    Slot *s = arg;
    AsyncJob *j = s->kd;
    s->req = NULL;
    if (http_outcome(s, r, j->url.buf))
        return;
    /* The waiting job remembers the reference and how many submissions. */
    ref_body(&j->waiting, j->ref.model, j->ref.key, j->ref.row);
    j->waiting.len--; /* reopen the object */
    sb_addf(&j->waiting, ",\"tries\":%u}", j->tries + 1);
    slot_extra(s, put_waiting, j);
    slot_done(s);
}

static void async_start(Slot *s)
{
    AsyncKd *k = s->stage->kd;
    AsyncJob *j = s->kd;
    char err[256], why[512];
    if (job_ref(s, &j->ref, err, sizeof err) != 0) {
        slot_bury(s, err);
        return;
    }
    j->tries = 0;
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(s->body.buf, s->body.len, &mp, err, sizeof err) == 0) {
        RowView v;
        Strbuf t;
        sb_init(&t);
        if (row_view(&v, mp.data, mp.size) == 0) {
            if (row_field_text(&v.root, "tries", &t) == 0)
                j->tries = (uint32_t)strtoul(t.buf, NULL, 10);
            row_view_free(&v);
        }
        sb_free(&t);
    }
    msgpack_sbuffer_destroy(&mp);
    int rc = stage_row(s->stage, j->ref.model, j->ref.key, j->ref.row, &j->row);
    if (rc) {
        snprintf(why, sizeof why, "staged row %s/%s: %s", j->ref.model, j->ref.key,
                 rc == PL_ENOROW ? "not found" : pl_strerror(rc));
        slot_bury(s, why);
        return;
    }
    RowView v;
    if (row_view(&v, j->row.buf, j->row.len) != 0) {
        slot_bury(s, "staged row is not valid msgpack");
        return;
    }
    if (v.root.type != MSGPACK_OBJECT_MAP) {
        row_view_free(&v);
        slot_bury(s, "staged row is not a msgpack map");
        return;
    }
    snprintf(j->token, sizeof j->token, "%016llx%016llx", (unsigned long long)pl_random64(),
             (unsigned long long)pl_random64());
    /* The body: the send fields (or the whole row) and the callback URL. */
    sb_reset(&j->post);
    sb_adds(&j->post, "{");
    msgpack_sbuffer one;
    msgpack_sbuffer_init(&one);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    const msgpack_object_map *m = &v.root.via.map;
    size_t n = k->nsend ? k->nsend : m->size;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t nl;
        const msgpack_object *val;
        if (k->nsend) {
            name = k->send[i];
            nl = strlen(name);
            val = row_field(&v.root, name);
        } else {
            if (m->ptr[i].key.type != MSGPACK_OBJECT_STR)
                continue;
            name = m->ptr[i].key.via.str.ptr;
            nl = m->ptr[i].key.via.str.size;
            val = &m->ptr[i].val;
        }
        sb_add_json_string(&j->post, name, nl);
        sb_adds(&j->post, ":");
        if (val) {
            one.size = 0;
            row_pack_object(&pk, val);
            row_to_json(one.data, one.size, &j->post);
        } else {
            sb_adds(&j->post, "null");
        }
        sb_adds(&j->post, ",");
    }
    msgpack_sbuffer_destroy(&one);
    row_view_free(&v);
    sb_adds(&j->post, "\"callback_url\":");
    Strbuf cb;
    sb_init(&cb);
    sb_addf(&cb, "%s%s%s", k->callback_base, k->prefix, j->token);
    sb_add_json_string(&j->post, cb.buf, cb.len);
    sb_free(&cb);
    sb_adds(&j->post, "}");
    sb_reset(&j->url);
    sb_adds(&j->url, k->url);
    size_t h = 0;
    idem_header(s, j->idem, sizeof j->idem);
    j->hdr[h++] = j->idem;
    j->hdr[h++] = "Content-Type: application/json";
    for (char **p = k->headers; p && *p && h < 34; p++)
        j->hdr[h++] = *p;
    j->hdr[h] = NULL;
    HttpRequest rq = {.method = "POST", .url = j->url.buf, .headers = j->hdr, .body = j->post.buf,
                      .len = j->post.len};
    http_request(s->stage->http, &rq, submit_done, s, &s->req);
}

/* ---------------------------------------------------------------- callback */

typedef struct CbOp {
    EngineOp eo;
    AsyncKd *k;
    Exchange *x;
    char token[65];
    msgpack_sbuffer src;
    int status;
    char msg[200];
} CbOp;

static int ref_of(const void *body, size_t len, JobRef *ref, uint32_t *tries)
{
    char err[128];
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    int rc = row_from_json_object(body, len, &mp, err, sizeof err);
    if (rc == 0) {
        RowView v;
        Strbuf c;
        sb_init(&c);
        rc = row_view(&v, mp.data, mp.size);
        if (!rc) {
            if (staging_ref_parse(&v.root, ref) != 0)
                rc = PL_EFORMAT;
            *tries = row_field_text(&v.root, "tries", &c) == 0 ? (uint32_t)strtoul(c.buf, NULL, 10) : 0;
            row_view_free(&v);
        }
        sb_free(&c);
    }
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

static int cb_apply(Txn *t, CommitOp *op)
{
    CbOp *c = (CbOp *)op;
    AsyncKd *k = c->k;
    uint64_t id;
    int rc = queue_lookup_key(t, k->wait_queue, c->token, strlen(c->token), &id);
    if (rc)
        return rc;
    Job j;
    if ((rc = queue_get(t, id, &j)) != 0)
        return rc;
    JobRef ref;
    uint32_t tries;
    if ((rc = ref_of(j.body, j.len, &ref, &tries)) != 0)
        return rc;
    if ((rc = queue_ack(t, id, 0)) != 0)
        return rc;
    if ((rc = staging_row_merge(t, ref.model, ref.key, ref.row, c->src.data, c->src.size, k->from,
                                k->to, k->nmerge)) != 0)
        return txn_fail(t, rc);
    Strbuf out;
    sb_init(&out);
    ref_body(&out, ref.model, ref.key, ref.row);
    PutArgs a = {.body = out.buf, .len = out.len};
    rc = queue_put(t, k->stage->conf->outputs[0], &a, &id, NULL);
    sb_free(&out);
    return rc ? txn_fail(t, rc) : 0;
}

static void cb_done(EngineOp *eo, int rc)
{
    CbOp *c = (CbOp *)eo;
    if (rc == 0) {
        static const char ok[] = "{\"status\":\"accepted\"}\n";
        exchange_respond(c->x, 200, "application/json", ok, sizeof ok - 1);
        stage_log(c->k->stage, PL_LOG_INFO, 0, "callback %.8s... merged", c->token);
    } else if (rc == PL_ENOJOB) {
        exchange_error(c->x, 404, "unknown or already answered callback token");
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot take the callback now: %s; retry later", pl_strerror(rc));
        exchange_error(c->x, 503, msg);
    }
    msgpack_sbuffer_destroy(&c->src);
    free(c);
}

static void on_callback(void *arg, Exchange *x)
{
    AsyncKd *k = arg;
    const char *token = exchange_path(x) + strlen(k->prefix);
    size_t tl = strlen(token);
    if (tl != 32 || strspn(token, "0123456789abcdef") != 32) {
        exchange_error(x, 404, "unknown or already answered callback token");
        return;
    }
    size_t len;
    const char *body = exchange_body(x, &len);
    CbOp *c = xcalloc(1, sizeof *c);
    c->k = k;
    c->x = x;
    memcpy(c->token, token, tl);
    msgpack_sbuffer_init(&c->src);
    char err[200], msg[300];
    if (row_from_json_object(body, len, &c->src, err, sizeof err) != 0) {
        snprintf(msg, sizeof msg, "callback body must be a JSON object: %s", err);
        msgpack_sbuffer_destroy(&c->src);
        free(c);
        exchange_error(x, 400, msg);
        return;
    }
    c->eo.op.apply = cb_apply;
    c->eo.loop_done = cb_done;
    engine_submit(k->stage->engine, &c->eo);
}

/* ---------------------------------------------------------------- deadline */

static int expire_apply(Txn *t, CommitOp *op)
{
    AsyncKd *k = (AsyncKd *)((char *)op - offsetof(AsyncKd, expire_op));
    Job js[64];
    size_t got = 0;
    int rc = queue_reserve_n(t, k->wait_queue, 64, 0, js, &got);
    if (rc == PL_EEMPTY || rc == PL_EPAUSED)
        return 0;
    if (rc)
        return rc;
    for (size_t i = 0; i < got && rc == 0; i++) {
        JobRef ref;
        uint32_t tries = 0;
        if (ref_of(js[i].body, js[i].len, &ref, &tries) != 0) {
            rc = queue_bury(t, js[i].id, js[i].lease, "waiting job body is not a reference");
            continue;
        }
        if (k->max_attempts && tries >= k->max_attempts) {
            char why[200];
            snprintf(why, sizeof why, "no callback within %.0f s after %u submissions", k->deadline, tries);
            rc = queue_bury(t, js[i].id, js[i].lease, why);
            continue;
        }
        /* Submit again: the reference goes back to the input queue. */
        Strbuf b;
        sb_init(&b);
        ref_body(&b, ref.model, ref.key, ref.row);
        b.len--; /* reopen the object */
        sb_addf(&b, ",\"tries\":%u}", tries);
        PutArgs a = {.body = b.buf, .len = b.len};
        uint64_t id;
        uint64_t wid = js[i].id, wl = js[i].lease;
        rc = queue_put(t, k->stage->conf->input, &a, &id, NULL);
        sb_free(&b);
        if (!rc)
            rc = queue_ack(t, wid, wl);
    }
    return rc ? txn_fail(t, rc) : 0;
}

static void expire_done(EngineOp *eo, int rc)
{
    AsyncKd *k = (AsyncKd *)((char *)eo - offsetof(AsyncKd, expire_op));
    k->expire_busy = 0;
    if (rc)
        stage_log(k->stage, PL_LOG_ERROR, 0, "deadline check failed: %s", pl_strerror(rc));
}

static void on_expire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    AsyncKd *k = (AsyncKd *)((char *)w - offsetof(AsyncKd, expire));
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
    AsyncKd *k = arg;
    QueueConf c;
    queue_conf_default(&c);
    c.max_attempts = 0; /* the stage decides, from the input queue's limit */
    int rc = queue_create(t, k->wait_queue, &c);
    return rc == EEXIST ? 0 : rc;
}

static int async_init(Stage *s, char *err, size_t errlen)
{
    const char *file = engine_pipeline(s->engine)->path;
    AsyncKd *k = xcalloc(1, sizeof *k);
    s->kd = k;
    k->stage = s;
    k->deadline = 300;
    k->callback_base = engine_callback_base(s->engine);
    int rc;
    if ((rc = conf_str(file, s->conf->node, "url", &k->url, err, errlen)) != 0 ||
        (rc = conf_num(file, s->conf->node, "deadline", 0.1, 30 * 86400.0, &k->deadline, err, errlen)) != 0 ||
        (rc = conf_strs(file, s->conf->node, "send", &k->send, &k->nsend, err, errlen)) != 0 ||
        (rc = conf_str(file, s->conf->node, "callback_base", &k->callback_base, err, errlen)) != 0 ||
        (rc = conf_headers(s, &k->headers, err, errlen)) != 0)
        return rc;
    if (!engine_listener(s->engine)) {
        snprintf(err, errlen, "%s:%d: stage '%s': async_submit needs the listener (add listen:)", file,
                 s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    const ConfNode *m = conf_get(s->conf->node, "merge");
    if (!m || m->type != CONF_MAP || !m->n) {
        snprintf(err, errlen, "%s:%d: stage '%s': merge must map callback fields to row fields", file,
                 s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    k->from = xcalloc(m->n, sizeof *k->from);
    k->to = xcalloc(m->n, sizeof *k->to);
    for (size_t i = 0; i < m->n; i++) {
        k->from[i] = m->keys[i];
        k->to[i] = m->kids[i]->type == CONF_SCALAR ? m->kids[i]->value : m->keys[i];
    }
    k->nmerge = m->n;
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
    for (unsigned i = 0; i < s->nslots; i++) {
        AsyncJob *j = xcalloc(1, sizeof *j);
        j->k = k;
        sb_init(&j->url);
        sb_init(&j->row);
        sb_init(&j->post);
        sb_init(&j->waiting);
        s->slots[i].kd = j;
    }
    double every = k->deadline / 4 < 1 ? k->deadline / 4 : 1;
    ev_timer_init(&k->expire, on_expire, every, every);
    ev_timer_start(s->loop, &k->expire);
    return 0;
}

static void async_stop(Stage *s)
{
    AsyncKd *k = s->kd;
    ev_timer_stop(s->loop, &k->expire);
}

static void async_fini(Stage *s)
{
    AsyncKd *k = s->kd;
    for (unsigned i = 0; i < s->nslots; i++) {
        AsyncJob *j = s->slots[i].kd;
        if (!j)
            continue;
        sb_free(&j->url);
        sb_free(&j->row);
        sb_free(&j->post);
        sb_free(&j->waiting);
        free(j);
        s->slots[i].kd = NULL;
    }
    if (k) {
        ev_timer_stop(s->loop, &k->expire);
        free(k->send);
        free(k->from);
        free(k->to);
        headers_free(k->headers);
    }
    free(k);
}

const StageKind kind_async_submit = {.name = "async_submit", .init = async_init, .start = async_start,
                                     .stop = async_stop, .fini = async_fini};
