/* exchange.c: one request of the engine's HTTP listener (listen.h): its
 * framing, route and token, its body, and its answer.
 *
 * An Exchange is one request. It is created at the first call of the access
 * handler (headers read), where framing, routing, the token and a declared
 * Content-Length over the limit are settled before any body is read; an
 * early refusal is queued there and libmicrohttpd skips the body. Otherwise
 * the body accumulates in x->body and the last call hands x to the route.
 * A handler that does not answer at once leaves the connection waiting;
 * exchange_respond stores the response, resumes the connection, and the
 * access handler, called again by libmicrohttpd, queues it.
 *
 * Strict framing. Ambiguous framing is how requests get smuggled past a
 * proxy, so the first call refuses, with a JSON 400 and the connection
 * closed: two Content-Lengths (even equal), Transfer-Encoding with
 * Content-Length, two Transfer-Encodings, Transfer-Encoding in HTTP/1.0, an
 * HTTP/1.1 request without exactly one Host, a header name that is not a
 * token (a space before the colon), a control character in a value; and
 * with 501 a transfer coding other than chunked (libmicrohttpd would read
 * such a body to the end of the connection). What libmicrohttpd 0.9.75
 * refuses before any call of ours (a request line or header line that is
 * not HTTP, a Content-Length that is not a number, broken chunks, headers
 * over its memory limit, an HTTP version other than 1.x) gets its own short
 * answer (400, 413, 414, 431 or 505, an HTML body or none, the connection
 * closed): this version offers no hook to replace those bodies, and such a
 * request never reaches a handler.
 *
 * Suspension. A handler that keeps x leaves the connection waiting, but
 * not suspended at once: libmicrohttpd (0.9.75) skips its bookkeeping of
 * what a suspended connection waits for, and a connection suspended from
 * the very call that completed the request still says "read" on resume.
 * Resumed, it would read before it answers, and a client that had shut
 * down its write side after the request (read EOF) would lose its answer
 * although the handler did the work. So the handler's call returns without
 * an answer (the connection is then marked as blocked, not reading), and
 * libmicrohttpd's next run calls the access handler again at once, which
 * suspends it: from the access handler, as the API asks. An answer that
 * comes before that call is queued by it instead.
 *
 * Who owns x: the handler while x->held, otherwise the listener until the
 * request completes (on_done). A suspended connection is out of
 * libmicrohttpd's epoll set, so a client that leaves is only noticed after
 * the answer: on_done then frees x and the response with it. Should a
 * request complete while its handler still holds x, x is marked gone and
 * exchange_respond only frees it. */
#include "listen_int.h"
#include "json.h"
#include "pl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- responses */

/* listen_printable copies s into buf for a log line: what a client sent may hold
 * control characters (a forged log line, terminal escapes); those bytes,
 * and any outside listen_printable ASCII, become \xNN. Returns buf. */
const char *listen_printable(const char *s, char *buf, size_t size)
{
    size_t n = 0;
    for (; *s && n + 5 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[n++] = (char)c;
        else
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
    }
    if (*s && n + 4 <= size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

/* json_error returns a new {"error":msg} body in *len; the caller frees it. */
static char *json_error(const char *msg, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        pl_assert_fail(__FILE__, __LINE__, "open_memstream", "out of memory");
    fputs("{\"error\":", f);
    json_put_string(f, msg, strlen(msg));
    fputs("}\n", f);
    if (fclose(f) != 0)
        pl_assert_fail(__FILE__, __LINE__, "fclose(memstream)", "out of memory");
    *len = n;
    return buf;
}

static struct MHD_Response *make(const char *type, const void *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    PL_ASSERT(resp != NULL, "libmicrohttpd could not allocate a response");
    if (type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return resp;
}

static struct MHD_Response *make_error(const char *msg)
{
    size_t n;
    char *body = json_error(msg, &n);
    struct MHD_Response *resp = make("application/json", body, n);
    free(body);
    return resp;
}

/* queue hands resp to libmicrohttpd for x, from inside the access handler,
 * and returns what the access handler must return. */
static enum MHD_Result queue(Exchange *x, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result rc = MHD_queue_response(x->c, status, resp);
    MHD_destroy_response(resp);
    x->answered = 1;
    listen_phase(x->l, x->cl, C_BUSY);
    if (rc != MHD_YES) {
        char m[64], u[200];
        pl_log(PL_LOG_WARN, "listen: cannot queue the %u answer to %s %s", status,
               listen_printable(x->names, m, sizeof m), listen_printable(x->path, u, sizeof u));
    }
    return rc;
}

/* ---------------------------------------------------------------- exchanges */

static void x_free(Exchange *x)
{
    if (x->resp)
        MHD_destroy_response(x->resp);
    free(x->body);
    free(x->why);
    free(x);
}

static void hold(Exchange *x)
{
    Listener *l = x->l;
    x->held = 1;
    x->prev = NULL;
    x->next = l->held;
    if (l->held)
        l->held->prev = x;
    l->held = x;
}

/* unlink takes x out of l->held (x->held stays as it is). */
static void unlink_held(Exchange *x)
{
    Listener *l = x->l;
    if (x->prev)
        x->prev->next = x->next;
    else if (l && l->held == x)
        l->held = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

const char *exchange_method(const Exchange *x)
{
    return x->names;
}

const char *exchange_path(const Exchange *x)
{
    return x->path;
}

const char *exchange_header(const Exchange *x, const char *name)
{
    if (!x->c)
        return NULL;
    return MHD_lookup_connection_value(x->c, MHD_HEADER_KIND, name);
}

const char *exchange_query(const Exchange *x, const char *key)
{
    const char *v = NULL;
    if (!x->c || MHD_lookup_connection_value_n(x->c, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, NULL) != MHD_YES)
        return NULL;
    return v ? v : ""; /* "?flag" has a key and no value */
}

const char *exchange_body(const Exchange *x, size_t *len)
{
    if (len)
        *len = x->len;
    return x->body ? x->body : "";
}

/* answer stores resp for waiting x and resumes it; the access handler
 * queues resp when libmicrohttpd calls it again. */
static void answer(Exchange *x, unsigned status, struct MHD_Response *resp)
{
    if (x->in_handler) { /* answered from inside the handler: queue now */
        if (queue(x, status, resp) != MHD_YES)
            x->answered = 0; /* the access handler closes the connection */
        return;
    }
    PL_ASSERT(x->suspended || x->to_suspend, "a held exchange is in its handler, suspended or about to be");
    x->resp = resp;
    x->status = status;
    x->answered = 1;
    x->to_suspend = 0;
    if (x->suspended) {
        x->suspended = 0;
        MHD_resume_connection(x->c);
    }
    /* Not suspended yet: libmicrohttpd calls the access handler again at its
     * next run, which queues resp. */
    listen_kick(x->l);
}

void exchange_respond(Exchange *x, unsigned status, const char *content_type,
                      const void *body, size_t len)
{
    PL_ASSERT(x->held, "exchange_respond is called once per exchange");
    unlink_held(x);
    x->held = 0;
    if (x->gone) {
        x_free(x);
        return;
    }
    answer(x, status, make(content_type, body, len));
}

void exchange_error(Exchange *x, unsigned status, const char *msg)
{
    size_t n;
    char *body = json_error(msg, &n);
    exchange_respond(x, status, "application/json", body, n);
    free(body);
}

/* ---------------------------------------------------------------- routing */

void listener_route(Listener *l, const char *method, const char *prefix, int public,
                    ListenHandler fn, void *arg)
{
    Route *r = NULL;
    for (size_t i = 0; i < l->nroutes; i++) {
        Route *o = &l->routes[i];
        if (!strcmp(o->prefix, prefix) && (o->method ? method && !strcmp(o->method, method) : !method)) {
            r = o;
            break;
        }
    }
    if (!r) {
        if (l->nroutes == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 8;
            l->routes = xrealloc(l->routes, l->cap * sizeof *l->routes);
        }
        r = &l->routes[l->nroutes++];
        r->method = method ? xstrdup(method) : NULL;
        r->prefix = xstrdup(prefix);
        r->plen = strlen(prefix);
    }
    r->public = public;
    r->fn = fn;
    r->arg = arg;
}

/* lookup returns the route for method and path (*status 0), or NULL and
 * sets *status to 404 or 405 (with the allowed methods in allow). */
static const Route *lookup(const Listener *l, const char *method, const char *path,
                           unsigned *status, char *allow, size_t allowlen)
{
    size_t best = 0;
    int found = 0;
    for (size_t i = 0; i < l->nroutes; i++) {
        const Route *r = &l->routes[i];
        if ((!found || r->plen > best) && !strncmp(path, r->prefix, r->plen)) {
            best = r->plen;
            found = 1;
        }
    }
    *status = 404;
    if (!found)
        return NULL;
    const Route *any = NULL;
    size_t used = 0;
    allow[0] = 0;
    for (size_t i = 0; i < l->nroutes; i++) {
        const Route *r = &l->routes[i];
        if (r->plen != best || strncmp(path, r->prefix, r->plen))
            continue;
        if (r->method && !strcmp(r->method, method)) {
            *status = 0;
            return r;
        }
        if (!r->method)
            any = r;
        else if (used < allowlen) {
            int n = snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", r->method);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    if (any) {
        *status = 0;
        return any;
    }
    *status = 405;
    return NULL;
}

/* authorized says whether the request carries the listener's bearer token.
 * The comparison takes the same time wherever the tokens differ. */
static int authorized(const Listener *l, struct MHD_Connection *c)
{
    if (!l->token)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    unsigned char diff = n != l->toklen;
    for (size_t i = 0; i < l->toklen; i++)
        diff |= (unsigned char)l->token[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

/* ---------------------------------------------------------------- framing */

typedef struct Framing {
    unsigned cl, te, host;
    int bad_name_seen;
    const char *te_value;
    char bad_name[48];  /* a header name that is not a token */
    char bad_value[48]; /* the name of a header with a control character in its value */
} Framing;

static int tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t klen,
                                   const char *value, size_t vlen)
{
    (void)kind;
    Framing *f = cls;
    int ok = klen > 0;
    for (size_t i = 0; ok && i < klen; i++)
        ok = tchar((unsigned char)key[i]);
    if (!ok && !f->bad_name_seen++)
        snprintf(f->bad_name, sizeof f->bad_name, "%.*s", (int)(klen < 40 ? klen : 40), key);
    for (size_t i = 0; value && i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            if (!f->bad_value[0])
                snprintf(f->bad_value, sizeof f->bad_value, "%.*s", (int)(klen < 40 ? klen : 40), key);
            break;
        }
    }
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        f->cl++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->te++;
        f->te_value = value ? value : "";
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST))
        f->host++;
    return MHD_YES;
}

/* framing_error returns why the request's framing is refused (a new
 * string, *status 400 or 501), or NULL when it is fine. */
static char *framing_error(struct MHD_Connection *c, const char *version, unsigned *status)
{
    Framing f = {0};
    char msg[200];
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, &f);
    int http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    *status = 400;
    if (f.bad_name_seen)
        snprintf(msg, sizeof msg, "malformed header name '%s': a header name is letters, digits and "
                 "!#$%%&'*+-.^_`|~, with no space before the colon", f.bad_name);
    else if (f.bad_value[0])
        snprintf(msg, sizeof msg, "header '%s' holds a control character", f.bad_value);
    else if (!http10 && f.host != 1)
        snprintf(msg, sizeof msg, f.host ? "more than one Host header" : "an HTTP/1.1 request needs a Host header");
    else if (f.cl > 1)
        snprintf(msg, sizeof msg, "more than one Content-Length header; send exactly one");
    else if (f.te && f.cl)
        snprintf(msg, sizeof msg, "both Transfer-Encoding and Content-Length; send one of them");
    else if (f.te > 1)
        snprintf(msg, sizeof msg, "more than one Transfer-Encoding header; send one (chunked)");
    else if (f.te && http10)
        snprintf(msg, sizeof msg, "Transfer-Encoding in an HTTP/1.0 request; send a Content-Length");
    else if (f.te && strcasecmp(f.te_value, "chunked") != 0) {
        *status = 501;
        snprintf(msg, sizeof msg, "Transfer-Encoding '%.40s' is not supported; send the body chunked "
                 "or with a Content-Length", f.te_value);
    } else
        return NULL;
    return xstrdup(msg);
}

/* ---------------------------------------------------------------- access handler */

/* refuse queues the built-in answer for status (400, 401, 404, 405, 413, 501). */
static enum MHD_Result refuse(Exchange *x, unsigned status)
{
    struct MHD_Response *resp;
    unsigned st;
    char allow[128];
    switch (status) {
    case 400:
    case 501:
        /* The framing is not to be trusted: nothing after this request on
         * the connection is read as another one. */
        resp = make_error(x->why);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        break;
    case 401:
        resp = make_error("a valid bearer token is required");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"pickline\"");
        break;
    case 404:
        resp = make_error("no such path");
        break;
    case 405:
        lookup(x->l, x->names, x->path, &st, allow, sizeof allow);
        resp = make_error("method not allowed on this path");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        break;
    default:
        resp = make_error("request body too large");
        break;
    }
    return queue(x, status, resp);
}

/* begin creates the exchange at the first call (headers read) and settles
 * what can be settled before the body: framing, route, token, declared
 * length. A framing error is answered at once and closes the connection.
 * Another refusal of a request with a body is sent at once too, so the body
 * is never read (libmicrohttpd closes such a connection); one without a
 * body waits for the last call, which keeps the connection alive. */
static enum MHD_Result begin(Listener *l, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, void **ccls)
{
    size_t ml = strlen(method), ul = strlen(url);
    Exchange *x = xcalloc(1, sizeof *x + ml + ul + 2);
    x->l = l;
    x->c = c;
    x->cl = listen_client_of(c);
    memcpy(x->names, method, ml + 1);
    x->path = x->names + ml + 1;
    memcpy(x->path, url, ul + 1);
    *ccls = x;

    if ((x->why = framing_error(c, version, &x->refusal)) != NULL)
        return refuse(x, x->refusal);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int body = cl ? strcmp(cl, "0") != 0
                  : MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
    char allow[128];
    const Route *r = lookup(l, method, url, &x->refusal, allow, sizeof allow);
    if (r)
        x->route = (size_t)(r - l->routes);
    if (r && !r->public && !authorized(l, c))
        x->refusal = 401;
    else if (r && cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > l->max_body)
            x->refusal = 413;
        else if (n) { /* one allocation for a declared body of up to 64 KiB */
            x->cap = (n < 65536 ? (size_t)n : 65536) + 1;
            x->body = xmalloc(x->cap);
        }
    }
    if (x->refusal && body)
        return refuse(x, x->refusal);
    return MHD_YES;
}

/* take appends upload data to x->body. A body without a declared length
 * that outgrows the limit is dropped and refused at the last call (this
 * libmicrohttpd takes no answer in the middle of a body); the rest is
 * skipped, and past twice max_body the connection is closed. */
static enum MHD_Result take(Exchange *x, const char *data, size_t n)
{
    Listener *l = x->l;
    if (x->refusal == 413) {
        x->skipped += n;
        return x->skipped / 2 <= l->max_body ? MHD_YES : MHD_NO;
    }
    if (n > l->max_body - x->len) {
        x->refusal = 413;
        x->skipped = x->len + n;
        free(x->body);
        x->body = NULL;
        x->len = x->cap = 0;
        return MHD_YES;
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < x->len + n + 1)
            cap *= 2;
        if (cap > l->max_body + 1)
            cap = l->max_body + 1;
        x->body = xrealloc(x->body, cap);
        x->cap = cap;
    }
    memcpy(x->body + x->len, data, n);
    x->len += n;
    x->body[x->len] = 0;
    return MHD_YES;
}

/* dispatch hands the complete request to its route; an exchange the
 * handler keeps waits for exchange_respond (see "Suspension"). */
static enum MHD_Result dispatch(Exchange *x)
{
    const Route *r = &x->l->routes[x->route];
    if (x->l->shutdown) {
        /* A request that completes while listener_close drains would be
         * held past the daemon's end: refuse it (the sender retries). */
        struct MHD_Response *resp = make_error("the listener is shutting down");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        return queue(x, 503, resp);
    }
    listen_phase(x->l, x->cl, C_BUSY);
    hold(x);
    x->in_handler = 1;
    r->fn(r->arg, x);
    x->in_handler = 0;
    if (x->held) {
        x->to_suspend = 1;
        return MHD_YES;
    }
    return x->answered ? MHD_YES : MHD_NO;
}

enum MHD_Result exchange_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *data, size_t *len, void **ccls)
{
    Listener *l = cls;
    Exchange *x = *ccls;
    if (!x)
        return begin(l, c, url, method, version, ccls);
    if (x->resp) { /* resumed with its answer, or answered before suspension */
        struct MHD_Response *resp = x->resp;
        x->resp = NULL;
        return queue(x, x->status, resp);
    }
    if (x->held) { /* the handler still owns x: suspend now (see "Suspension") */
        if (x->to_suspend) {
            x->to_suspend = 0;
            x->suspended = 1;
            MHD_suspend_connection(x->c);
        }
        return MHD_YES;
    }
    if (x->answered) /* refused early; nothing more to read */
        return MHD_YES;
    if (data && !*len) /* not the last call (that one has no data): libmicrohttpd 0.9.75 makes this
                        * one after "100 Continue" to a request without a body, with bytes after it */
        return MHD_YES;
    if (*len) {
        size_t n = *len;
        *len = 0;
        return take(x, data, n);
    }
    if (x->refusal)
        return refuse(x, x->refusal);
    return dispatch(x);
}

/* exchange_completed: the request completed (answer sent, client gone, shutdown). A
 * connection kept alive waits idle for its next request line. */
void exchange_completed(void *cls, struct MHD_Connection *c, void **ccls,
                    enum MHD_RequestTerminationCode why)
{
    (void)why;
    Listener *l = cls;
    Exchange *x = *ccls;
    listen_phase(l, listen_client_of(c), C_IDLE);
    listen_accept_again(l);
    if (!x)
        return;
    *ccls = NULL;
    if (x->closing)
        l->closing--;
    if (x->held) { /* the handler answers later: exchange_respond frees x */
        unlink_held(x);
        x->gone = 1;
        x->c = NULL;
        x->l = NULL;
        x->cl = NULL;
        return;
    }
    x_free(x);
}

/* ---------------------------------------------------------------- close */

void exchange_close_held(Listener *l)
{
    while (l->held) {
        Exchange *x = l->held;
        unlink_held(x);
        x->held = 0;
        x->closing = 1;
        l->closing++;
        struct MHD_Response *resp = make_error("the listener is shutting down");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        answer(x, 503, resp);
    }
}

void listen_routes_free(Listener *l)
{
    for (size_t i = 0; i < l->nroutes; i++) {
        free(l->routes[i].method);
        free(l->routes[i].prefix);
    }
    free(l->routes);
}
