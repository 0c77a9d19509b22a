/* listen.c: the engine's HTTP listener (see listen.h for the contract).
 *
 * libmicrohttpd runs in "external" epoll mode: it owns an epoll descriptor
 * (listen socket, connections, its inter-thread channel) and we watch that
 * one descriptor with l->io and its next timeout with l->tm; both call
 * MHD_run and re-arm the timer from MHD_get_timeout. No thread of ours or
 * libmicrohttpd's ever runs a handler: everything happens on the loop.
 *
 * An Exchange is one request. It is created at the first call of the access
 * handler (headers read), where routing, the token and a declared
 * Content-Length over the limit are settled before any body is read; an
 * early refusal is queued there and libmicrohttpd skips the body. Otherwise
 * the body accumulates in x->body and the last call hands x to the route.
 * A handler that does not answer at once leaves the connection suspended;
 * exchange_respond stores the response, resumes the connection, and the
 * access handler, called again by libmicrohttpd, queues it.
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
#include "listen.h"
#include "json.h"
#include "pl.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_MAX_BODY (1u << 20)
#define LISTEN_MAX_CONNS 1000
#define LISTEN_TIMEOUT_S 30
#define LISTEN_CLOSE_WAIT_MS 1000

typedef struct Route {
    char *method; /* NULL: any */
    char *prefix;
    size_t plen;
    int public;
    ListenHandler fn;
    void *arg;
} Route;

struct Listener {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    ev_io io;          /* libmicrohttpd's epoll descriptor */
    ev_timer tm;       /* libmicrohttpd's next timeout */
    int lfd;           /* listen socket, ours (MHD_OPTION_LISTEN_SOCKET) */
    unsigned port;
    char *token;       /* NULL: no token */
    size_t toklen;
    size_t max_body;
    Route *routes;
    size_t nroutes, cap;
    Exchange *held;    /* exchanges a handler holds (doubly linked) */
    int running;       /* inside MHD_run */
    int shutdown;      /* listener_close runs: no new request reaches a handler */
    unsigned closing;  /* 503s from listener_close not yet sent */
};

struct Exchange {
    Listener *l;
    struct MHD_Connection *c; /* NULL once gone */
    Exchange *prev, *next;    /* in l->held while held */
    size_t route;              /* index in l->routes (which may move) */
    char *body;
    size_t len, cap;
    struct MHD_Response *resp; /* answer waiting for the access handler */
    unsigned status;           /* of resp */
    unsigned refusal;          /* 0, or the built-in answer due (401, 404, 405, 413) */
    size_t skipped;            /* body bytes seen, once over max_body */
    unsigned held : 1;        /* a handler owns x */
    unsigned in_handler : 1;  /* inside the route's handler */
    unsigned suspended : 1;
    unsigned to_suspend : 1;  /* held after the handler returned: suspend at the next call */
    unsigned answered : 1;    /* a response is queued or waiting in resp */
    unsigned gone : 1;        /* the request completed while held */
    unsigned closing : 1;     /* answered by listener_close */
    char *path;               /* points into names */
    char names[];             /* method NUL path NUL */
};

/* ---------------------------------------------------------------- responses */

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
    if (rc != MHD_YES)
        pl_log(PL_LOG_WARN, "listen: cannot queue the %u answer to %s %s", status, x->names, x->path);
    return rc;
}

/* ---------------------------------------------------------------- exchanges */

static void x_free(Exchange *x)
{
    if (x->resp)
        MHD_destroy_response(x->resp);
    free(x->body);
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

/* kick makes the loop call MHD_run soon: a resumed connection waits for
 * it, and in external mode libmicrohttpd has no channel of its own (no
 * eventfd) that would wake its epoll descriptor. */
static void kick(Listener *l)
{
    ev_feed_event(l->loop, &l->io, EV_READ);
}

/* answer stores resp for suspended x and resumes it; the access handler
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
    if (ev_is_active(&x->l->io)) /* not while listener_close drains */
        kick(x->l);
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

/* ---------------------------------------------------------------- access handler */

/* refuse queues the built-in answer for status (401, 404, 405, 413). */
static enum MHD_Result refuse(Exchange *x, unsigned status)
{
    struct MHD_Response *resp;
    unsigned st;
    char allow[128];
    switch (status) {
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
 * what can be settled before the body: route, token, declared length. A
 * refusal of a request with a body is sent at once, so the body is never
 * read (libmicrohttpd closes such a connection); one without a body waits
 * for the last call, which keeps the connection alive. */
static enum MHD_Result begin(Listener *l, struct MHD_Connection *c, const char *url,
                             const char *method, void **ccls)
{
    size_t ml = strlen(method), ul = strlen(url);
    Exchange *x = xcalloc(1, sizeof *x + ml + ul + 2);
    x->l = l;
    x->c = c;
    memcpy(x->names, method, ml + 1);
    x->path = x->names + ml + 1;
    memcpy(x->path, url, ul + 1);
    *ccls = x;

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
 * handler keeps is suspended until exchange_respond. */
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
    hold(x);
    x->in_handler = 1;
    r->fn(r->arg, x);
    x->in_handler = 0;
    if (x->held) {
        /* Not suspended yet: see "Suspension" at the top of this file. */
        x->to_suspend = 1;
        return MHD_YES;
    }
    return x->answered ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *data, size_t *len, void **ccls)
{
    (void)version;
    Listener *l = cls;
    Exchange *x = *ccls;
    if (!x)
        return begin(l, c, url, method, ccls);
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
    if (*len) {
        size_t n = *len;
        *len = 0;
        return take(x, data, n);
    }
    if (x->refusal)
        return refuse(x, x->refusal);
    return dispatch(x);
}

/* on_done: the request completed (answer sent, client gone, shutdown). */
static void on_done(void *cls, struct MHD_Connection *c, void **ccls,
                    enum MHD_RequestTerminationCode why)
{
    (void)c;
    (void)why;
    Listener *l = cls;
    Exchange *x = *ccls;
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
        return;
    }
    x_free(x);
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    pl_log(PL_LOG_INFO, "listen: %s", msg);
}

/* ---------------------------------------------------------------- loop */

/* arm sets l->tm to libmicrohttpd's next timeout (none: stopped). */
static void arm(Listener *l)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(l->d, &ms) != MHD_YES) {
        ev_timer_stop(l->loop, &l->tm);
        return;
    }
    /* 0 means work is pending: the next loop iteration, after other
     * watchers had their turn (repeat 0 would stop the timer). */
    l->tm.repeat = ms ? (ev_tstamp)ms / 1e3 : 1e-6;
    ev_timer_again(l->loop, &l->tm);
}

static void run(Listener *l)
{
    l->running = 1;
    MHD_run(l->d);
    l->running = 0;
    arm(l);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    run((Listener *)((char *)w - offsetof(Listener, io)));
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    run((Listener *)((char *)w - offsetof(Listener, tm)));
}

/* ---------------------------------------------------------------- open, close */

/* bind_socket returns a listening socket on address:port in *fd, or an
 * errno value. */
static int bind_socket(const char *address, unsigned port, int *fd)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    int rc, one = 1;
    *fd = -1;
    if (port > 65535)
        return EINVAL;
    snprintf(ps, sizeof ps, "%u", port);
    if (getaddrinfo(address, ps, &hints, &ai) != 0 || !ai)
        return EADDRNOTAVAIL;
    int s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        rc = errno;
        goto fail;
    }
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, SOMAXCONN) != 0) {
        rc = errno;
        goto fail;
    }
    freeaddrinfo(ai);
    *fd = s;
    return 0;
fail:
    if (s >= 0)
        close(s);
    freeaddrinfo(ai);
    return rc;
}

int listener_open(struct ev_loop *loop, const ListenOpts *o, Listener **out)
{
    static const ListenOpts none;
    int rc;
    if (!o)
        o = &none;
    *out = NULL;
    Listener *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->lfd = -1;
    l->max_body = o->max_body ? o->max_body : LISTEN_MAX_BODY;
    if (o->token && *o->token) {
        l->token = xstrdup(o->token);
        l->toklen = strlen(o->token);
    }
    if ((rc = bind_socket(o->address ? o->address : "127.0.0.1", o->port, &l->lfd)) != 0)
        goto fail;
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    if (getsockname(l->lfd, (struct sockaddr *)&sa, &salen) != 0) {
        rc = errno;
        goto fail;
    }
    errno = 0;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    l->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, l,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, l,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)l->lfd,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, l,
                            MHD_OPTION_CONNECTION_LIMIT, o->max_conns ? o->max_conns : LISTEN_MAX_CONNS,
                            MHD_OPTION_CONNECTION_TIMEOUT, o->timeout_s ? o->timeout_s : LISTEN_TIMEOUT_S,
                            MHD_OPTION_END);
    if (!l->d) {
        rc = errno ? errno : EIO;
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_BIND_PORT);
    l->port = di ? di->port : 0;
    if (!l->port)
        l->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    PL_ASSERT(di && di->epoll_fd >= 0, "libmicrohttpd in epoll mode has an epoll descriptor");
    ev_io_init(&l->io, on_io, di->epoll_fd, EV_READ);
    ev_io_start(loop, &l->io);
    ev_init(&l->tm, on_timer);
    arm(l);
    *out = l;
    return 0;
fail:
    if (l->d)
        MHD_stop_daemon(l->d);
    if (l->lfd >= 0)
        close(l->lfd);
    free(l->token);
    free(l);
    return rc;
}

unsigned listener_port(const Listener *l)
{
    return l->port;
}

/* drain runs libmicrohttpd, off the loop, until the 503s of listener_close
 * are sent or LISTEN_CLOSE_WAIT_MS passed. */
static void drain(Listener *l)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    uint64_t deadline = pl_mono_ns() + (uint64_t)LISTEN_CLOSE_WAIT_MS * 1000000;
    for (;;) {
        MHD_run(l->d);
        uint64_t now = pl_mono_ns();
        if (!l->closing || now >= deadline)
            break;
        MHD_UNSIGNED_LONG_LONG ms;
        int wait = (int)((deadline - now) / 1000000) + 1;
        if (MHD_get_timeout(l->d, &ms) == MHD_YES && ms < (MHD_UNSIGNED_LONG_LONG)wait)
            wait = (int)ms;
        struct pollfd p = {.fd = di->epoll_fd, .events = POLLIN};
        poll(&p, 1, wait);
    }
}

void listener_close(Listener *l)
{
    if (!l)
        return;
    PL_ASSERT(!l->running, "listener_close is not called from a handler");
    l->shutdown = 1;
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->tm);
    /* In external mode the quiesced listen socket is ours to close at once:
     * the kernel would go on completing handshakes on it. */
    MHD_socket lfd = MHD_quiesce_daemon(l->d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
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
    drain(l);
    /* Remaining connections close here; on_done frees their exchanges. */
    MHD_stop_daemon(l->d);
    for (size_t i = 0; i < l->nroutes; i++) {
        free(l->routes[i].method);
        free(l->routes[i].prefix);
    }
    free(l->routes);
    free(l->token);
    free(l);
}
