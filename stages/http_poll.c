/* http_poll.c: polls a changes feed on an interval and turns each change
 * into a job on its output queue. The stage's cursor (the feed's cursor
 * value, its ETag, and the next page still to fetch) moves in the same
 * commit as the jobs of each page, so a crash re-reads at most the page it
 * had not committed, and idempotency keys (key_field) make that harmless.
 *
 *   kind: http_poll
 *   url: http://127.0.0.1:9001/changes
 *   interval: 1              # seconds between polls once drained
 *   cursor_param: since      # query parameter carrying the cursor
 *   cursor_field: cursor     # response field with the next cursor
 *   items_field: changes     # response field with the array of changes
 *   next_field: next         # response field with the next page's URL
 *   key_field: id            # change field used as the job's idempotency key
 *
 * Polite polling. A feed that answers 5xx, 408 or 429 (or does not answer:
 * a timeout, a refused or reset connection) is asked again after a backoff
 * that doubles with every failure in a row: 2, 4, 8 ... times the interval
 * (at least 1 s, 2 s, 4 s ...), at most POLL_BACKOFF_MAX, plus up to a
 * quarter more of jitter; and never before its Retry-After says (seconds or
 * an HTTP-date, up to POLL_RETRY_AFTER_MAX). The first good answer ends
 * the backoff.
 *
 * The next page. A feed's answer names its next page (next_field): a link
 * that starts with one / is read against url:'s origin; an absolute one is
 * followed only on that origin (scheme, host and port), because the
 * stage's headers, its tokens among them, go with every request it sends.
 * A link elsewhere (or no URL at all) fails the poll with the reason: the
 * page is not taken, nothing moves, and the feed is asked again after the
 * backoff (its owner has to fix the link). */
#include "common.h"
#include "engine.h"
#include "http_check.h"
#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct PollStage {
    Stage *stage;
    const char *url, *cursor_param, *cursor_field, *items_field, *next_field, *key_field;
    double interval, backoff;
    char **headers;
    ev_timer timer;
    HttpReq *req;
    int busy, stopped, following;
    Strbuf state, etag_hdr;
    StageCall call;             /* call.url: the URL being polled */
} PollStage;

/* The cursor as stored: cursor NUL etag NUL next. */
static void state_split(const Strbuf *st, const char **cur, const char **etag, const char **next)
{
    static const char empty[] = "";
    *cur = *etag = *next = empty;
    if (!st->len)
        return;
    const char *p = st->buf, *end = st->buf + st->len;
    *cur = p;
    p += strlen(p) + 1;
    if (p < end) {
        *etag = p;
        p += strlen(p) + 1;
        if (p < end)
            *next = p;
    }
}

static void poll_schedule(PollStage *k, double after)
{
    if (k->stopped)
        return;
    ev_timer_stop(k->stage->loop, &k->timer);
    ev_timer_set(&k->timer, after, 0);
    ev_timer_start(k->stage->loop, &k->timer);
}

#define POLL_BACKOFF_MAX 300.0      /* seconds: the longest backoff after failures */
#define POLL_RETRY_AFTER_MAX 3600.0 /* seconds: the longest Retry-After honoured */

/* poll_backoff doubles the backoff (the first: twice the interval, at
 * least 1 s) and returns it with up to a quarter more of jitter. */
static double poll_backoff(PollStage *k)
{
    double first = 2 * k->interval < 1 ? 1 : 2 * k->interval;
    k->backoff = k->backoff ? k->backoff * 2 : first;
    if (k->backoff > POLL_BACKOFF_MAX)
        k->backoff = POLL_BACKOFF_MAX;
    return k->backoff * (1 + 0.25 * (double)(pl_random64() % 1000) / 1000.0);
}

static void poll_committed(void *arg, int rc)
{
    PollStage *k = arg;
    k->busy = 0;
    if (rc) {
        poll_schedule(k, poll_backoff(k));
        return;
    }
    k->backoff = 0;
    poll_schedule(k, k->following ? 0 : k->interval);
}

/* poll_fail schedules the next poll after a failure: a transient one backs
 * off, and waits at least retry_after seconds (the feed's Retry-After). */
static void poll_fail(PollStage *k, const char *what, int transient, double retry_after)
{
    double after = k->interval;
    if (transient) {
        after = poll_backoff(k);
        if (retry_after > POLL_RETRY_AFTER_MAX)
            retry_after = POLL_RETRY_AFTER_MAX;
        if (retry_after > after)
            after = retry_after;
    }
    stage_log(k->stage, PL_LOG_WARN, 0, "poll %s: %s; next poll in %.1f s%s", k->call.url.buf,
              what, after, transient && retry_after >= after ? " (its Retry-After)" : "");
    stage_dep_failed(k->stage, what); /* /ready counts them */
    k->busy = 0;
    poll_schedule(k, after);
}

/* poll_next writes the next page's link, link[0..len), into out as the
 * absolute URL to ask, read against url:'s origin when it starts with one
 * /. Returns 0, or PL_EINVAL with why saying why it is not followed. */
static int poll_next(const PollStage *k, const char *link, size_t len, Strbuf *out, char *why,
                     size_t n)
{
    char shown[300], bad[300];
    size_t o = http_url_origin_len(k->url);
    sb_reset(out);
    if (len && link[0] == '/' && !(len > 1 && link[1] == '/'))
        sb_add(out, k->url, o);
    sb_add(out, link, len);
    int ok = !memchr(link, '\0', len) && http_url_check(out->buf, 0, bad, sizeof bad) == 0;
    if (ok && http_url_same_origin(k->url, out->buf))
        return 0;
    if (ok)
        snprintf(bad, sizeof bad, "another scheme, host or port");
    snprintf(why, n, "the next page's link '%s' (next_field '%s') is not on url:'s origin %.*s "
             "(%s); the stage's headers go with every request, so it follows links only there "
             "(a feed links its pages on its own origin, or relative: /path?page=2): the page is "
             "not taken", http_printable(shown, sizeof shown, link, len), k->next_field, (int)o,
             k->url, bad);
    sb_reset(out);
    return PL_EINVAL;
}

static void poll_done(void *arg, const HttpResult *r)
{
    PollStage *k = arg;
    Stage *s = k->stage;
    k->req = NULL;
    if (r->outcome == HTTP_CANCELED) {
        k->busy = 0;
        return;
    }
    if (r->outcome != HTTP_OK) {
        poll_fail(k, r->error, r->outcome == HTTP_TRANSIENT, r->retry_after_s);
        return;
    }
    stage_dep_ok(s);
    const char *cur, *etag, *next;
    state_split(&k->state, &cur, &etag, &next);
    if (r->status == 304) { /* nothing new since the ETag */
        k->busy = 0;
        k->backoff = 0;
        k->following = 0;
        poll_schedule(k, k->interval);
        return;
    }
    char err[256], why[1024];
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(r->body, r->len, &mp, err, sizeof err) != 0) {
        snprintf(why, sizeof why, "malformed JSON: %s", err);
        msgpack_sbuffer_destroy(&mp);
        poll_fail(k, why, 1, 0);
        return;
    }
    RowView v;
    row_view(&v, mp.data, mp.size);
    const msgpack_object *items = row_field(&v.root, k->items_field);
    if (!items || items->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(why, sizeof why, "response has no '%s' array", k->items_field);
        row_view_free(&v);
        msgpack_sbuffer_destroy(&mp);
        poll_fail(k, why, 1, 0);
        return;
    }
    Strbuf body, key, ncur, nnext;
    sb_init(&nnext);
    const msgpack_object *nx = k->next_field ? row_field(&v.root, k->next_field) : NULL;
    if (nx && nx->type == MSGPACK_OBJECT_STR && nx->via.str.size &&
        poll_next(k, nx->via.str.ptr, nx->via.str.size, &nnext, why, sizeof why) != 0) {
        sb_free(&nnext);
        row_view_free(&v);
        msgpack_sbuffer_destroy(&mp);
        poll_fail(k, why, 1, 0);
        return;
    }
    Emit *b = emit_new(s);
    sb_init(&body);
    sb_init(&key);
    sb_init(&ncur);
    msgpack_sbuffer one;
    msgpack_sbuffer_init(&one);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        one.size = 0;
        row_pack_object(&pk, it);
        sb_reset(&body);
        row_to_json(one.data, one.size, &body);
        int keyed = 0;
        if (k->key_field && it->type == MSGPACK_OBJECT_MAP) {
            sb_reset(&key);
            keyed = row_field_text(it, k->key_field, &key) == 0 && key.len > 0 && key.len <= QUEUE_KEY_MAX;
        }
        emit_put(b, s->conf->outputs[0], body.buf, body.len, keyed ? key.buf : NULL);
    }
    /* The new state: cursor (from the response, else kept), ETag, next page. */
    if (!(k->cursor_field && row_field_text(&v.root, k->cursor_field, &ncur) == 0))
        sb_adds(&ncur, cur);
    const char *et = http_result_header(r, "ETag");
    Strbuf st;
    sb_init(&st);
    sb_add(&st, ncur.buf, ncur.len);
    sb_add(&st, "", 1);
    if (!nnext.len && et)  /* an ETag names the feed's state once drained */
        sb_adds(&st, et);
    sb_add(&st, "", 1);
    sb_add(&st, nnext.buf, nnext.len);
    emit_cursor(b, st.buf, st.len);
    k->following = nnext.len > 0;
    stage_log(s, PL_LOG_DEBUG, 0, "page with %u changes%s", items->via.array.size,
              k->following ? ", following next page" : "");
    sb_free(&st);
    sb_free(&body);
    sb_free(&key);
    sb_free(&ncur);
    sb_free(&nnext);
    msgpack_sbuffer_destroy(&one);
    row_view_free(&v);
    msgpack_sbuffer_destroy(&mp);
    emit_commit(b, poll_committed, k);
}

static void poll_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    PollStage *k = container_of(w, PollStage, timer);
    Stage *s = k->stage;
    if (k->busy || k->stopped)
        return;
    int rc = stage_cursor(s, &k->state);
    if (rc) {
        stage_log(s, PL_LOG_ERROR, 0, "cannot read the cursor: %s", pl_strerror(rc));
        poll_schedule(k, k->interval);
        return;
    }
    const char *cur, *etag, *next;
    state_split(&k->state, &cur, &etag, &next);
    sb_reset(&k->call.url);
    const char *own[3];
    size_t n = 0;
    if (*next && !http_url_same_origin(k->url, next)) {
        /* Kept by a pickline that followed links anywhere: not followed. */
        stage_log(s, PL_LOG_WARN, 0, "the stored next page is not on url:'s origin; polling "
                  "url: instead");
        next = "";
    }
    if (*next) {
        sb_adds(&k->call.url, next);
    } else {
        sb_adds(&k->call.url, k->url);
        if (k->cursor_param && *cur) {
            sb_adds(&k->call.url, strchr(k->url, '?') ? "&" : "?");
            sb_adds(&k->call.url, k->cursor_param);
            sb_adds(&k->call.url, "=");
            for (const char *p = cur; *p; p++) { /* escape the cursor */
                unsigned char c = (unsigned char)*p;
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~')
                    sb_add(&k->call.url, p, 1);
                else
                    sb_addf(&k->call.url, "%%%02X", c);
            }
        }
        if (*etag) {
            sb_reset(&k->etag_hdr);
            sb_addf(&k->etag_hdr, "If-None-Match: %s", etag);
            own[n++] = k->etag_hdr.buf;
        }
    }
    own[n++] = "Accept: application/json";
    own[n] = NULL;
    k->busy = 1;
    HttpRequest rq = {.method = "GET", .url = k->call.url.buf,
                      .headers = stage_call_headers(&k->call, own)};
    http_request(s->http, &rq, poll_done, k, &k->req);
}

static const ConfKey poll_keys[] = {
    {"url", KEY_URL, 1, 0, 0, STAGE_URL_HINT "changes", NULL},
    {"interval", KEY_SECS, 0, 0.01, CONF_SECS_MAX, NULL, NULL},
    {"cursor_param", KEY_QNAME, 0, 0, 0, NULL, NULL},
    {"cursor_field", KEY_STR, 0, 0, 0, NULL, NULL},
    {"items_field", KEY_STR, 0, 0, 0, NULL, NULL},
    {"next_field", KEY_STR, 0, 0, 0, NULL, NULL},
    {"key_field", KEY_STR, 0, 0, 0, NULL, NULL},
    STAGE_KEY_HEADERS,
    {0},
};

static int poll_init(Stage *s, char *err, size_t errlen)
{
    PollStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    k->interval = 5;
    k->items_field = "changes";
    sb_init(&k->state);
    sb_init(&k->etag_hdr);
    int rc;
    if ((rc = stage_conf_str(s, "url", &k->url, err, errlen)) != 0 ||
        (rc = stage_conf_num(s, "interval", &k->interval, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "cursor_param", &k->cursor_param, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "cursor_field", &k->cursor_field, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "items_field", &k->items_field, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "next_field", &k->next_field, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "key_field", &k->key_field, err, errlen)) != 0 ||
        (rc = stage_conf_headers(s, &k->headers, err, errlen)) != 0)
        return rc;
    stage_call_init(&k->call, k->headers);
    ev_timer_init(&k->timer, poll_tick, 0, 0);
    return 0;
}

static void poll_begin(Stage *s)
{
    PollStage *k = s->data;
    poll_schedule(k, 0);
}

static void poll_stop(Stage *s)
{
    PollStage *k = s->data;
    k->stopped = 1;
    ev_timer_stop(s->loop, &k->timer);
    if (k->req)
        http_cancel(k->req);
}

static void poll_fini(Stage *s)
{
    PollStage *k = s->data;
    if (!k)
        return;
    ev_timer_stop(s->loop, &k->timer);
    stage_headers_free(k->headers);
    sb_free(&k->state);
    stage_call_free(&k->call);
    sb_free(&k->etag_hdr);
    free(k);
}

const StageKind kind_http_poll = {
    .spec = {.name = "http_poll", .article = "an", .flags = KIND_SOURCE, .keys = poll_keys},
    .init = poll_init, .begin = poll_begin, .stop = poll_stop, .fini = poll_fini};
