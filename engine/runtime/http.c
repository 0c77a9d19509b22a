/* http.c: the non-blocking HTTP client (see http.h).
 *
 * libcurl's multi socket interface says which sockets to watch (on_curl_sock)
 * and when to call it back (on_curl_timer); we keep one ev_io per socket and
 * one ev_timer for the whole multi (curl keeps every request's timeouts in
 * its own timer tree, so there is no timer per request). After each
 * curl_multi_socket_action, reap collects the finished transfers.
 *
 * A request's life: waiting in its host's FIFO inside its class, until the
 * class has a free slot and the host a token (pump) -> running, its easy
 * handle in the multi -> finished: classified, done runs -> back in the
 * class's pool with its buffers, and its easy handle in the class's handle
 * pool, for the next request. A request that fails before it can run goes
 * on h->late and is finished from an ev_prepare: done never runs inside
 * http_request.
 *
 * done may call anything here except http_close: new requests, cancels, even
 * http_class_free of its own class (the class is then freed when the done
 * returns: c->busy counts the done callbacks on the stack). */
#include "http.h"
#include "pl.h"
#include "strbuf.h"

#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BODY_MAX ((size_t)64 << 20) /* response bodies over this fail (transient) */
#define EXCERPT_MAX 200             /* body bytes quoted in an HTTP error */
#define KEEP_BUF ((size_t)256 << 10) /* a pooled request keeps buffers up to this */
#define HOSTS_SWEEP 64              /* forget idle hosts past this many */

/* ------------------------------------------------------------------ types */

typedef struct List {
    HttpReq *head, *tail;
} List;

/* Sock is the ev_io of one curl socket; curl keeps it (curl_multi_assign). */
typedef struct Sock {
    ev_io io;
    Http *h;
    struct Sock *next, *prev; /* h->socks, or h->spare (next only) */
} Sock;

/* Host is one scheme://host:port of a class: its FIFO of waiting requests
 * and its token bucket (one token: starts are at least 1/rate apart). */
typedef struct Host {
    struct Host *next;
    List wait;
    double tokens;
    ev_tstamp last; /* ev_now when tokens was last refilled */
    char key[];
} Host;

enum { R_FREE, R_WAITING, R_RUNNING, R_LATE, R_DONE };

struct HttpReq {
    HttpClass *c;
    HttpReq *next, *prev; /* in exactly one list, which state names */
    int state;
    Host *host;           /* while waiting */
    uint64_t seq;         /* FIFO order across the class's hosts */
    CURL *easy;           /* while running */
    HttpDone done;
    void *arg;
    uint64_t t0;          /* pl_mono_ns at http_request */
    /* The request, copied: "url\0method\0header\0...\0" then the body. */
    Strbuf in;
    size_t method_off, body_off, nhdr;
    struct curl_slist *hl; /* nodes pointing into in (no allocation by curl) */
    size_t hlcap;
    /* The response. */
    Strbuf body;
    Strbuf hdr;            /* "name\0value\0" pairs */
    int over;             /* body went over BODY_MAX */
    int nobody;           /* HEAD: a Content-Length announces no body */
    char errbuf[CURL_ERROR_SIZE];
    HttpResult res;
};

struct HttpClass {
    Http *h;
    HttpClass *next, *prev; /* h->classes */
    char *name;
    HttpPolicy p;
    Host *hosts;
    unsigned nhosts;
    List running;
    List spare;             /* recycled requests */
    unsigned nspare;
    CURL **easy;            /* recycled easy handles, at most p.concurrency */
    unsigned neasy;
    uint64_t seq;
    ev_timer rate;          /* wakes pump when a host's token is back */
    int busy;               /* done callbacks of this class on the stack */
    int dead;               /* http_class_free ran; freed when !busy */
    HttpStats st;
};

struct Http {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;         /* curl's one timeout */
    ev_prepare late_w;      /* finishes h->late */
    List late;
    unsigned nlate;
    HttpClass *classes;
    Sock *socks, *spare;
    char *ua;
    int busy;               /* done callbacks on the stack */
};

/* ---------------------------------------------------------------- helpers */

/* add_z appends s with its NUL. */
static void add_z(Strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s) + 1);
}

/* recycle empties b, freeing it when it grew past KEEP_BUF so one huge
 * response does not pin its memory in the pool. */
static void recycle(Strbuf *b)
{
    if (b->cap > KEEP_BUF)
        sb_free(b);
    else
        sb_reset(b);
}

static void list_push(List *l, HttpReq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void list_del(List *l, HttpReq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
}

/* host_key writes "scheme://host:port" of url, lower-cased and without
 * user info, into key (truncated to cap). */
static void host_key(const char *url, char *key, size_t cap)
{
    const char *sep = strstr(url, "://");
    const char *a = sep ? sep + 3 : url;
    size_t n = strcspn(a, "/?#");
    const char *at = memrchr(a, '@', n);
    if (at) {
        n -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    size_t k = 0;
    for (const char *p = url; sep && p < sep + 3 && k + 1 < cap; p++)
        key[k++] = *p;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        key[k++] = a[i];
    key[k] = '\0';
    for (size_t i = 0; i < k; i++)
        if (key[i] >= 'A' && key[i] <= 'Z')
            key[i] = (char)(key[i] - 'A' + 'a');
}

static void refill(const HttpClass *c, Host *o, ev_tstamp now)
{
    if (now > o->last) {
        o->tokens += (now - o->last) * c->p.rate_per_s;
        if (o->tokens > 1)
            o->tokens = 1;
    }
    o->last = now;
}

/* host_sweep forgets the hosts that have nothing waiting and a full bucket
 * (a new Host starts full, so forgetting one changes nothing). */
static void host_sweep(HttpClass *c)
{
    ev_tstamp now = ev_now(c->h->loop);
    for (Host **pp = &c->hosts; *pp;) {
        Host *o = *pp;
        if (c->p.rate_per_s > 0)
            refill(c, o, now);
        if (!o->wait.head && (c->p.rate_per_s <= 0 || o->tokens >= 1)) {
            *pp = o->next;
            free(o);
            c->nhosts--;
        } else {
            pp = &o->next;
        }
    }
}

static Host *host_get(HttpClass *c, const char *url)
{
    char key[256];
    host_key(url, key, sizeof key);
    for (Host **pp = &c->hosts; *pp; pp = &(*pp)->next) {
        Host *o = *pp;
        if (strcmp(o->key, key) == 0) {
            *pp = o->next; /* move to front: the busy hosts stay cheap to find */
            o->next = c->hosts;
            c->hosts = o;
            return o;
        }
    }
    if (c->nhosts >= HOSTS_SWEEP)
        host_sweep(c);
    size_t n = strlen(key);
    Host *o = xcalloc(1, sizeof *o + n + 1);
    memcpy(o->key, key, n + 1);
    o->tokens = 1;
    o->last = ev_now(c->h->loop);
    o->next = c->hosts;
    c->hosts = o;
    c->nhosts++;
    return o;
}

/* ------------------------------------------------------- request buffers */

static HttpReq *req_get(HttpClass *c)
{
    HttpReq *r = c->spare.head;
    if (r) {
        list_del(&c->spare, r);
        c->nspare--;
    } else {
        r = xcalloc(1, sizeof *r);
        sb_init(&r->in);
        sb_init(&r->body);
        sb_init(&r->hdr);
    }
    r->c = c;
    return r;
}

static void req_free(HttpReq *r)
{
    sb_free(&r->in);
    sb_free(&r->body);
    sb_free(&r->hdr);
    free(r->hl);
    free(r);
}

static void req_put(HttpClass *c, HttpReq *r)
{
    r->state = R_FREE;
    r->done = NULL;
    r->arg = NULL;
    r->host = NULL;
    r->easy = NULL;
    if (c->dead || c->nspare >= 2 * c->p.concurrency + 16) {
        req_free(r);
        return;
    }
    recycle(&r->in);
    recycle(&r->body);
    recycle(&r->hdr);
    list_push(&c->spare, r);
    c->nspare++;
}

/* copy_request copies rq into r->in and links r->hl, the header list curl
 * reads (curl_slist is a public struct: nodes in our own array need no
 * allocation per request). An "Expect:" header turns off curl's 100-continue
 * wait for bodies unless the caller set Expect. */
static void copy_request(HttpReq *r, const HttpRequest *rq)
{
    Strbuf *b = &r->in;
    sb_reset(b);
    add_z(b, rq->url);
    r->method_off = b->len;
    add_z(b, rq->method ? rq->method : "GET");
    size_t hdr_off = b->len;
    int expect = 0;
    r->nhdr = 0;
    for (const char *const *p = rq->headers; p && *p; p++) {
        add_z(b, *p);
        if (strncasecmp(*p, "Expect:", 7) == 0)
            expect = 1;
        r->nhdr++;
    }
    if (!expect) {
        add_z(b, "Expect:");
        r->nhdr++;
    }
    r->body_off = b->len;
    if (rq->body && rq->len)
        sb_add(b, rq->body, rq->len);
    if (r->nhdr > r->hlcap) {
        r->hlcap = r->nhdr;
        r->hl = xrealloc(r->hl, r->hlcap * sizeof *r->hl);
    }
    char *s = b->buf + hdr_off;
    for (size_t i = 0; i < r->nhdr; i++) {
        r->hl[i].data = s;
        r->hl[i].next = i + 1 < r->nhdr ? &r->hl[i + 1] : NULL;
        s += strlen(s) + 1;
    }
}

/* ----------------------------------------------------------- classifying */

/* excerpt writes the first EXCERPT_MAX bytes of s as printable ASCII. */
static void excerpt(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    if (n > EXCERPT_MAX)
        n = EXCERPT_MAX;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n' || ch == '\r' || ch == '\t')
            ch = ' ';
        else if (ch < 0x20 || ch > 0x7e)
            ch = '?';
        dst[k++] = (char)ch;
    }
    while (k > 0 && dst[k - 1] == ' ')
        k--;
    dst[k] = '\0';
}

/* retry_after parses a Retry-After value: delay-seconds or an HTTP-date. */
static double retry_after(const char *v)
{
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        char *end;
        double s = strtod(v, &end);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end == '\0')
            return s > 0 ? s : 0;
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return 0;
    double d = difftime(t, time(NULL));
    return d > 0 ? d : 0;
}

/* curl_error fills res from a curl failure: what kind, and curl's detail. */
static void curl_error(HttpReq *r, CURLcode cc, long os_errno, int connected)
{
    HttpResult *res = &r->res;
    const HttpPolicy *p = &r->c->p;
    const char *what;
    res->outcome = HTTP_TRANSIENT;
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        if (!connected && p->connect_timeout_s < p->timeout_s)
            snprintf(res->error, sizeof res->error, "connect timeout after %g s", p->connect_timeout_s);
        else
            snprintf(res->error, sizeof res->error, "timeout after %g s", p->timeout_s);
        return;
    case CURLE_COULDNT_CONNECT:
        what = os_errno == ECONNREFUSED ? "connection refused" : "cannot connect";
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        what = "cannot resolve host";
        break;
    case CURLE_GOT_NOTHING:
        what = "connection closed without a response";
        break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        what = os_errno == ECONNRESET ? "connection reset" : "connection broken";
        break;
    case CURLE_PARTIAL_FILE:
        what = "connection closed in the middle of the response";
        break;
    /* Retrying these cannot help: a bad URL, or a certificate that does not
     * verify (fix the configuration, then replay the buried jobs). */
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        res->outcome = HTTP_PERMANENT;
        what = "bad URL";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        res->outcome = HTTP_PERMANENT;
        what = "TLS verification failed";
        break;
    default:
        what = "request failed";
        break;
    }
    snprintf(res->error, sizeof res->error, "%s (%.200s)", what,
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
}

/* http_error fills res from an HTTP status that is not a success. */
static void http_error(HttpReq *r)
{
    HttpResult *res = &r->res;
    long s = res->status;
    res->outcome = s >= 400 && s < 500 && s != 408 && s != 429 ? HTTP_PERMANENT : HTTP_TRANSIENT;
    char ex[EXCERPT_MAX + 1];
    excerpt(ex, sizeof ex, r->body.buf, r->body.len);
    snprintf(res->error, sizeof res->error, ex[0] ? "HTTP %ld: %s" : "HTTP %ld%s", s, ex);
    if (res->outcome == HTTP_TRANSIENT)
        res->retry_after_s = retry_after(http_result_header(res, "Retry-After"));
}

/* classify fills r->res from the finished transfer on r->easy. */
static void classify(HttpReq *r, CURLcode cc)
{
    HttpResult *res = &r->res;
    long status = 0, os_errno = 0;
    double connect = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    res->status = status;
    if (r->over) {
        res->outcome = HTTP_TRANSIENT;
        snprintf(res->error, sizeof res->error, "response over %zu MiB", BODY_MAX >> 20);
    } else if (cc != CURLE_OK) {
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME, &connect);
        curl_error(r, cc, os_errno, connect > 0 || status > 0);
    } else if (status >= 200 && status < 400) {
        res->outcome = HTTP_OK;
    } else {
        http_error(r);
    }
}

/* ------------------------------------------------------- curl callbacks */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    HttpReq *r = arg;
    size_t len = size * n;
    if (len > BODY_MAX - r->body.len) {
        r->over = 1;
        return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
    }
    sb_add(&r->body, p, len);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    HttpReq *r = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        sb_reset(&r->hdr); /* a new response (after a 100 Continue): forget the last */
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon || colon == p)
        return len;
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    sb_add(&r->hdr, p, (size_t)(colon - p));
    sb_add(&r->hdr, "", 1);
    sb_add(&r->hdr, v, (size_t)(end - v));
    sb_add(&r->hdr, "", 1);
    if (!r->nobody && (size_t)(colon - p) == 14 && strncasecmp(p, "Content-Length", 14) == 0 &&
        strtoull(v, NULL, 10) > BODY_MAX) {
        r->over = 1;
        return 0; /* refuse it before a byte of the body arrives */
    }
    return len;
}

static void reap(Http *h);

static void on_sock_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    Sock *k = container_of(w, Sock, io);
    Http *h = k->h; /* k may be gone after socket_action */
    int how = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0) |
              (revents & EV_ERROR ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(h->multi, w->fd, how, &running);
    reap(h);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Http *h = container_of(w, Http, timer);
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    reap(h);
}

/* on_curl_sock keeps the ev_io of socket s in step with what curl waits for. */
static int on_curl_sock(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
    (void)easy;
    Http *h = arg;
    Sock *k = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            ev_io_stop(h->loop, &k->io);
            if (k->prev)
                k->prev->next = k->next;
            else
                h->socks = k->next;
            if (k->next)
                k->next->prev = k->prev;
            k->next = h->spare;
            h->spare = k;
        }
        return 0;
    }
    if (!k) {
        k = h->spare;
        if (k)
            h->spare = k->next;
        else
            k = xmalloc(sizeof *k);
        ev_io_init(&k->io, on_sock_io, s, 0);
        k->h = h;
        k->prev = NULL;
        k->next = h->socks;
        if (h->socks)
            h->socks->prev = k;
        h->socks = k;
        curl_multi_assign(h->multi, s, k);
    }
    int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (ev_is_active(&k->io) && (k->io.events & (EV_READ | EV_WRITE)) == ev)
        return 0;
    ev_io_stop(h->loop, &k->io);
    ev_io_set(&k->io, s, ev);
    if (ev)
        ev_io_start(h->loop, &k->io);
    return 0;
}

/* on_curl_timer arms the one-shot timer curl asks for (never calls curl
 * back from inside: a 0 ms timeout fires on the next loop iteration). */
static int on_curl_timer(CURLM *multi, long ms, void *arg)
{
    (void)multi;
    Http *h = arg;
    ev_timer_stop(h->loop, &h->timer);
    if (ms >= 0) {
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

/* ----------------------------------------------------------- the engine */

static void easy_put(HttpClass *c, CURL *e)
{
    if (!e)
        return;
    if (!c->dead && c->neasy < c->p.concurrency) {
        curl_easy_reset(e);
        c->easy[c->neasy++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

/* finish runs r's done and recycles r. The class may be freed on return
 * (http_class_free called from this done or an outer one). */
static void finish(HttpReq *r)
{
    HttpClass *c = r->c;
    Http *h = c->h;
    HttpResult *res = &r->res;
    switch (res->outcome) {
    case HTTP_OK: c->st.ok++; break;
    case HTTP_PERMANENT: c->st.permanent++; break;
    case HTTP_TRANSIENT: c->st.transient++; break;
    default: c->st.canceled++; break;
    }
    res->body = r->body.buf;
    res->len = r->body.len;
    res->elapsed_s = (double)(pl_mono_ns() - r->t0) / 1e9;
    r->state = R_DONE;
    c->busy++;
    h->busy++;
    r->done(r->arg, res);
    h->busy--;
    c->busy--;
    req_put(c, r);
    if (c->dead && !c->busy)
        free(c); /* http_class_free freed the rest and left c to us */
}

/* fail_late finishes r (its outcome and error set) from the ev_prepare:
 * the caller may be http_request. */
static void fail_late(HttpReq *r)
{
    Http *h = r->c->h;
    r->state = R_LATE;
    list_push(&h->late, r);
    h->nlate++;
    ev_prepare_start(h->loop, &h->late_w);
}

static void late_del(Http *h, HttpReq *r)
{
    list_del(&h->late, r);
    h->nlate--;
}

static void on_late(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    Http *h = container_of(w, Http, late_w);
    /* Only as many as are here now: one that a done adds waits a turn. */
    for (unsigned n = h->nlate; n && h->late.head; n--) {
        HttpReq *r = h->late.head;
        late_del(h, r);
        finish(r);
    }
    if (!h->late.head)
        ev_prepare_stop(loop, w);
}

/* ms converts a timeout to curl's milliseconds; never 0, which means none. */
static long ms(double s)
{
    double m = s * 1000 + 0.5;
    return m < 1 ? 1 : m > 1e9 ? 1000000000L : (long)m;
}

/* start puts r's transfer in the multi. */
static void start(HttpReq *r)
{
    HttpClass *c = r->c;
    Http *h = c->h;
    const HttpPolicy *p = &c->p;
    const char *url = r->in.buf, *method = r->in.buf + r->method_off;
    size_t blen = r->in.len - r->body_off;
    CURL *e = c->neasy ? c->easy[--c->neasy] : curl_easy_init();
    if (!e) {
        r->res.outcome = HTTP_TRANSIENT;
        snprintf(r->res.error, sizeof r->res.error, "cannot make a curl handle (out of memory)");
        fail_late(r);
        return;
    }
    r->easy = e;
    r->errbuf[0] = '\0';
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
#if CURL_AT_LEAST_VERSION(7, 85, 0)
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
#else
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK;
#endif
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, h->ua) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms(p->connect_timeout_s)) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms(p->timeout_s)) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hl) != CURLE_OK;
    if (p->insecure) {
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
    }
    r->nobody = strcmp(method, "HEAD") == 0;
    if (r->nobody) {
        bad |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) != CURLE_OK;
    } else if (blen || strcmp(method, "POST") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->in.buf + r->body_off) != CURLE_OK;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "POST") != 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    else if (strcmp(method, "GET") == 0 && blen)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    CURLMcode mc = bad ? CURLM_OK : curl_multi_add_handle(h->multi, e);
    if (bad || mc != CURLM_OK) {
        r->easy = NULL;
        easy_put(c, e);
        r->res.outcome = HTTP_TRANSIENT;
        snprintf(r->res.error, sizeof r->res.error, "cannot start the request: %s",
                 bad ? "curl refused an option" : curl_multi_strerror(mc));
        fail_late(r);
        return;
    }
    r->state = R_RUNNING;
    list_push(&c->running, r);
    c->st.in_flight++;
    c->st.started++;
}

/* pump starts waiting requests while the class has a free slot, oldest
 * first among the hosts that have a token, and arms c->rate when the rest
 * wait only for tokens. */
static void pump(HttpClass *c)
{
    if (c->dead)
        return;
    double rate = c->p.rate_per_s;
    ev_tstamp now = ev_now(c->h->loop);
    double wait = -1;
    while (c->st.in_flight < c->p.concurrency && c->st.waiting) {
        Host *best = NULL;
        wait = -1;
        for (Host *o = c->hosts; o; o = o->next) {
            if (!o->wait.head)
                continue;
            if (rate > 0) {
                refill(c, o, now);
                if (o->tokens < 1 - 1e-9) {
                    double w = (1 - o->tokens) / rate;
                    if (wait < 0 || w < wait)
                        wait = w;
                    continue;
                }
            }
            if (!best || o->wait.head->seq < best->wait.head->seq)
                best = o;
        }
        if (!best)
            break;
        HttpReq *r = best->wait.head;
        list_del(&best->wait, r);
        c->st.waiting--;
        r->host = NULL;
        if (rate > 0)
            best->tokens -= 1;
        start(r);
    }
    if (wait >= 0 && c->st.in_flight < c->p.concurrency && c->st.waiting) {
        c->rate.repeat = wait > 0.001 ? wait : 0.001;
        ev_timer_again(c->h->loop, &c->rate);
    } else {
        ev_timer_stop(c->h->loop, &c->rate);
    }
}

static void on_rate(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    pump(container_of(w, HttpClass, rate));
}

/* reap finishes the transfers curl says are done. */
static void reap(Http *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        HttpReq *r = (HttpReq *)(void *)priv;
        PL_ASSERT(r && r->easy == e && r->state == R_RUNNING, "a finished transfer belongs to a running request");
        HttpClass *c = r->c;
        curl_multi_remove_handle(h->multi, e);
        classify(r, cc);
        list_del(&c->running, r);
        c->st.in_flight--;
        r->easy = NULL;
        easy_put(c, e);
        pump(c); /* the next one starts before this done runs */
        finish(r);
    }
}

/* cancel0 takes r out of wherever it is and finishes it as canceled. */
static void cancel0(HttpReq *r)
{
    HttpClass *c = r->c;
    Http *h = c->h;
    switch (r->state) {
    case R_WAITING:
        list_del(&r->host->wait, r);
        r->host = NULL;
        c->st.waiting--;
        break;
    case R_RUNNING:
        curl_multi_remove_handle(h->multi, r->easy);
        list_del(&c->running, r);
        c->st.in_flight--;
        easy_put(c, r->easy);
        r->easy = NULL;
        break;
    case R_LATE:
        late_del(h, r);
        break;
    default:
        PL_ASSERT(0, "http_cancel of a request whose done already ran");
    }
    HttpResult *res = &r->res;
    res->outcome = HTTP_CANCELED;
    res->status = 0;
    res->retry_after_s = 0;
    snprintf(res->error, sizeof res->error, "canceled");
    sb_reset(&r->body);
    sb_reset(&r->hdr);
    pump(c);
    finish(r);
}

/* ------------------------------------------------------------- the API */

int http_open(struct ev_loop *loop, const HttpOpts *o, Http **out)
{
    HttpOpts d = {0};
    Http *h = NULL;
    int rc = ENOMEM;
    *out = NULL;
    if (!o)
        o = &d;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return ENOMEM;
    h = xcalloc(1, sizeof *h);
    h->loop = loop;
    ev_timer_init(&h->timer, on_timer, 0., 0.);
    ev_prepare_init(&h->late_w, on_late);
    h->ua = xstrdup(o->user_agent ? o->user_agent : "pickline/0");
    if (!(h->multi = curl_multi_init()))
        goto fail;
    long maxc = o->max_conns ? (long)o->max_conns : 64;
    long maxh = o->max_host_conns ? (long)o->max_host_conns : 16;
    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_sock) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxh) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, maxc) != CURLM_OK) {
        rc = PL_EINVAL;
        goto fail;
    }
    *out = h;
    return 0;
fail:
    if (h->multi)
        curl_multi_cleanup(h->multi);
    free(h->ua);
    free(h);
    curl_global_cleanup();
    return rc;
}

void http_close(Http *h)
{
    if (!h)
        return;
    PL_ASSERT(!h->busy, "http_close from inside a done callback");
    while (h->classes)
        http_class_free(h->classes);
    PL_ASSERT(!h->late.head, "every late request belongs to a class");
    ev_prepare_stop(h->loop, &h->late_w);
    ev_timer_stop(h->loop, &h->timer);
    curl_multi_cleanup(h->multi); /* closes the idle connections */
    while (h->socks) {            /* in case curl closed some without telling */
        Sock *k = h->socks;
        h->socks = k->next;
        ev_io_stop(h->loop, &k->io);
        free(k);
    }
    while (h->spare) {
        Sock *k = h->spare;
        h->spare = k->next;
        free(k);
    }
    free(h->ua);
    free(h);
    curl_global_cleanup();
}

HttpClass *http_class_new(Http *h, const char *name, const HttpPolicy *p)
{
    HttpClass *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->name = xstrdup(name ? name : "");
    if (p)
        c->p = *p;
    if (!c->p.concurrency)
        c->p.concurrency = 8;
    if (c->p.connect_timeout_s <= 0)
        c->p.connect_timeout_s = 5;
    if (c->p.timeout_s <= 0)
        c->p.timeout_s = 30;
    if (c->p.rate_per_s < 0)
        c->p.rate_per_s = 0;
    c->easy = xcalloc(c->p.concurrency, sizeof *c->easy);
    ev_timer_init(&c->rate, on_rate, 0., 0.);
    c->next = h->classes;
    if (h->classes)
        h->classes->prev = c;
    h->classes = c;
    return c;
}

void http_class_free(HttpClass *c)
{
    if (!c)
        return;
    PL_ASSERT(!c->dead, "http_class_free twice");
    Http *h = c->h;
    c->dead = 1; /* pump does nothing now: cancels start no one */
    c->busy++;
    for (Host *o = c->hosts; o; o = o->next)
        while (o->wait.head)
            cancel0(o->wait.head);
    while (c->running.head)
        cancel0(c->running.head);
    for (;;) { /* from the head again each time: a done may cancel others */
        HttpReq *r = h->late.head;
        while (r && r->c != c)
            r = r->next;
        if (!r)
            break;
        cancel0(r);
    }
    c->busy--;
    ev_timer_stop(h->loop, &c->rate);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->classes = c->next;
    if (c->next)
        c->next->prev = c->prev;
    while (c->hosts) {
        Host *o = c->hosts;
        c->hosts = o->next;
        free(o);
    }
    while (c->spare.head) {
        HttpReq *r = c->spare.head;
        list_del(&c->spare, r);
        req_free(r);
    }
    for (unsigned i = 0; i < c->neasy; i++)
        curl_easy_cleanup(c->easy[i]);
    free(c->easy);
    free(c->name);
    if (!c->busy)
        free(c);
}

/* ctl_at returns the offset of the first control character in s (a tab
 * too unless tab_ok), or -1. */
static long ctl_at(const char *s, int tab_ok)
{
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && !(c == '\t' && tab_ok)) || c == 0x7f)
            return (long)(p - s);
    }
    return -1;
}

/* refuse_injection: whatever a caller built at run time (a URL from a
 * server's answer, a header echoing one), a CR or LF in the URL or in a
 * header would end the request line or the header and start one of its
 * own: such a request is refused, never sent. The pipeline file's URLs and
 * headers are checked stricter at load (http_url_check). */
static int refuse_injection(const HttpRequest *rq, char *err, size_t n)
{
    char s[300];
    long at = ctl_at(rq->url, 0);
    if (at >= 0) {
        snprintf(err, n, "bad URL: a control character (0x%02X) at byte %ld, refused (it could "
                 "inject headers): %s", (unsigned char)rq->url[at], at + 1,
                 http_printable(s, sizeof s, rq->url, strlen(rq->url)));
        return 1;
    }
    for (const char *const *h = rq->headers; h && *h; h++)
        if ((at = ctl_at(*h, 1)) >= 0) {
            snprintf(err, n, "bad header: a control character (0x%02X) at byte %ld, refused (it "
                     "could inject headers): %s", (unsigned char)(*h)[at], at + 1,
                     http_printable(s, sizeof s, *h, strlen(*h)));
            return 1;
        }
    return 0;
}

void http_request(HttpClass *c, const HttpRequest *rq, HttpDone done, void *arg, HttpReq **out)
{
    PL_ASSERT(c && !c->dead, "http_request on a freed class");
    PL_ASSERT(rq && rq->url && done, "http_request needs a URL and a done callback");
    HttpReq *r = req_get(c);
    r->done = done;
    r->arg = arg;
    r->t0 = pl_mono_ns();
    r->over = 0;
    sb_reset(&r->body);
    sb_reset(&r->hdr);
    memset(&r->res, 0, sizeof r->res);
    copy_request(r, rq);
    if (out)
        *out = r;
    if (strncasecmp(rq->url, "http://", 7) != 0 && strncasecmp(rq->url, "https://", 8) != 0) {
        r->res.outcome = HTTP_PERMANENT;
        snprintf(r->res.error, sizeof r->res.error, "bad URL (not http or https): %.200s", rq->url);
        fail_late(r);
        return;
    }
    if (refuse_injection(rq, r->res.error, sizeof r->res.error)) {
        r->res.outcome = HTTP_PERMANENT;
        fail_late(r);
        return;
    }
    r->host = host_get(c, rq->url);
    r->seq = c->seq++;
    r->state = R_WAITING;
    list_push(&r->host->wait, r);
    c->st.waiting++;
    pump(c);
}

void http_cancel(HttpReq *r)
{
    if (r)
        cancel0(r);
}

const char *http_result_header(const HttpResult *res, const char *name)
{
    const HttpReq *r = container_of(res, HttpReq, res);
    const char *p = r->hdr.buf, *end = p + r->hdr.len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0)
            return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

void http_class_stats(const HttpClass *c, HttpStats *out)
{
    *out = c->st;
}
