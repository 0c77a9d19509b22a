/* test_listen.c: the listener (engine/runtime/listen.c, exchange.c) over real
 * loopback sockets. The listener runs on an ev loop in the test's main
 * thread; the client runs in a thread of its own and speaks raw HTTP/1.1
 * with blocking sockets, so every byte on the wire is the test's choice
 * (pipelining, chunked bodies, Expect, disconnects). */
#include "t.h"
#include "listen.h"
#include "pl.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixture */

static struct ev_loop *loop;
static Listener *lis;
static unsigned port;
static ev_async wake;
static atomic_int want_close, client_done;
static atomic_int calls, held;
static void (*client_fn)(void);

static void on_wake(struct ev_loop *l, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    if (atomic_exchange(&want_close, 0)) {
        listener_close(lis);
        lis = NULL;
    }
    if (atomic_load(&client_done))
        ev_break(l, EVBREAK_ALL);
}

static void *client_main(void *arg)
{
    (void)arg;
    client_fn();
    atomic_store(&client_done, 1);
    ev_async_send(loop, &wake);
    return NULL;
}

static void start(const ListenOpts *o)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    T_CHECK(loop != NULL);
    ListenOpts d = {0};
    T_OK(listener_open(loop, o ? o : &d, &lis));
    port = listener_port(lis);
    T_CHECK(port != 0);
    ev_async_init(&wake, on_wake);
    ev_async_start(loop, &wake);
}

/* run_client runs fn in a client thread while the loop serves. */
static void run_client(void (*fn)(void))
{
    pthread_t th;
    client_fn = fn;
    atomic_store(&client_done, 0);
    T_EQ(pthread_create(&th, NULL, client_main, NULL), 0);
    ev_run(loop, 0);
    pthread_join(th, NULL);
}

static void finish(void)
{
    listener_close(lis);
    lis = NULL;
    ev_async_stop(loop, &wake);
    ev_loop_destroy(loop);
}

/* ask_close has the loop close the listener (from the client thread). */
static void ask_close(void)
{
    atomic_store(&want_close, 1);
    ev_async_send(loop, &wake);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static double now_ms(void)
{
    return (double)pl_mono_ns() / 1e6;
}

/* ---------------------------------------------------------------- client */

typedef struct Conn {
    int fd;
    char *buf; /* received, not yet consumed */
    size_t n, cap;
} Conn;

typedef struct Resp {
    int status;
    char head[4096];
    char *body;
    size_t len;
} Resp;

static void conn_open(Conn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_CHECK(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {10, 0}; /* no test waits this long */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void conn_close(Conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->n = c->cap = 0;
}

static void send_all(Conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        T_CHECK(k > 0);
        s += k;
        n -= (size_t)k;
    }
}

static void send_str(Conn *c, const char *s)
{
    send_all(c, s, strlen(s));
}

/* fill reads more into c->buf; returns 0 at EOF or error. */
static int fill(Conn *c)
{
    if (c->cap - c->n < 65536) {
        c->cap = c->cap ? 2 * c->cap : 131072;
        c->buf = realloc(c->buf, c->cap);
        T_CHECK(c->buf != NULL);
    }
    ssize_t k = recv(c->fd, c->buf + c->n, c->cap - c->n, 0);
    if (k <= 0)
        return 0;
    c->n += (size_t)k;
    return 1;
}

static void consume(Conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->n - n);
    c->n -= n;
}

/* read_resp reads one response (Content-Length framed, as the listener
 * always answers); returns 0 if the connection ended first. */
static int read_resp(Conn *c, Resp *r)
{
    char *end;
    memset(r, 0, sizeof *r);
    while (!c->buf || !(end = memmem(c->buf, c->n, "\r\n\r\n", 4)))
        if (!fill(c))
            return 0;
    size_t hl = (size_t)(end - c->buf) + 4;
    T_CHECK(hl < sizeof r->head);
    memcpy(r->head, c->buf, hl);
    r->head[hl] = 0;
    T_CHECK(sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1);
    const char *cl = strcasestr(r->head, "\r\nContent-Length:");
    T_CHECK(cl != NULL);
    r->len = strtoul(cl + 17, NULL, 10);
    while (c->n < hl + r->len)
        if (!fill(c))
            return 0;
    r->body = malloc(r->len + 1);
    memcpy(r->body, c->buf + hl, r->len);
    r->body[r->len] = 0;
    consume(c, hl + r->len);
    return 1;
}

/* read_resp100 is read_resp after an optional "100 Continue". */
static int read_resp100(Conn *c, Resp *r)
{
    char *end;
    while (!c->buf || c->n < 25 || !(end = memmem(c->buf, c->n, "\r\n\r\n", 4)))
        if (!fill(c))
            break;
    if (c->n >= 12 && !memcmp(c->buf, "HTTP/1.1 100", 12) && (end = memmem(c->buf, c->n, "\r\n\r\n", 4)))
        consume(c, (size_t)(end - c->buf) + 4);
    return read_resp(c, r);
}

static void resp_free(Resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* header returns the value of response header name (copied into a static
 * buffer), or NULL. */
static const char *header(const Resp *r, const char *name)
{
    static char v[512];
    char pat[128];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *p = strcasestr(r->head, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\r");
    if (n >= sizeof v)
        n = sizeof v - 1;
    memcpy(v, p, n);
    v[n] = 0;
    return v;
}

static void send_req(Conn *c, const char *method, const char *target, const char *hdrs,
                     const void *body, size_t len)
{
    char h[2048];
    int n = snprintf(h, sizeof h, "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, target, hdrs ? hdrs : "");
    if (body)
        n += snprintf(h + n, sizeof h - (size_t)n, "Content-Length: %zu\r\n", len);
    n += snprintf(h + n, sizeof h - (size_t)n, "\r\n");
    send_all(c, h, (size_t)n);
    if (body && len)
        send_all(c, body, len);
}

/* rq sends one request on c and reads its answer into r. */
static void rq(Conn *c, const char *method, const char *target, const char *hdrs,
               const void *body, size_t len, Resp *r)
{
    send_req(c, method, target, hdrs, body, len);
    T_CHECK(read_resp(c, r));
}

/* get is rq on a fresh connection, for one-shot checks. */
static void get(const char *method, const char *target, const char *hdrs, Resp *r)
{
    Conn c;
    conn_open(&c);
    rq(&c, method, target, hdrs, NULL, 0, r);
    conn_close(&c);
}

static int body_is(const Resp *r, const char *s)
{
    if (r->len == strlen(s) && memcmp(r->body, s, r->len) == 0)
        return 1;
    fprintf(stderr, "body: %.*s (wanted %s)\n", (int)r->len, r->body, s);
    return 0;
}

/* ---------------------------------------------------------------- handlers */

static void h_name(void *arg, Exchange *x)
{
    atomic_fetch_add(&calls, 1);
    exchange_respond(x, 200, "text/plain", arg, strlen(arg));
}

static int echo_nul_ok = 1;

static void h_echo(void *arg, Exchange *x)
{
    (void)arg;
    atomic_fetch_add(&calls, 1);
    size_t n;
    const char *b = exchange_body(x, &n);
    if (b[n] != 0)
        echo_nul_ok = 0;
    exchange_respond(x, 200, "application/octet-stream", b, n);
}

static void h_info(void *arg, Exchange *x)
{
    (void)arg;
    char out[1024];
    const char *v[6] = {exchange_query(x, "x"), exchange_query(x, "flag"), exchange_query(x, "empty"),
                        exchange_query(x, "missing"), exchange_header(x, "x-test"),
                        exchange_header(x, "X-Missing")};
    for (int i = 0; i < 6; i++)
        if (!v[i])
            v[i] = "(null)";
    int n = snprintf(out, sizeof out, "%s %s x=[%s] flag=[%s] empty=[%s] missing=%s h=[%s] hm=%s",
                     exchange_method(x), exchange_path(x), v[0], v[1], v[2], v[3], v[4], v[5]);
    exchange_respond(x, 200, "text/plain", out, (size_t)n);
}

static void h_err(void *arg, Exchange *x)
{
    (void)arg;
    exchange_error(x, 422, "a\"b\\c\nd\x01" "e/\xc3\xa9");
}

/* Later: an answer some milliseconds after the handler returned. */
typedef struct Later {
    ev_timer t;
    Exchange *x;
    char id[32];
} Later;

static atomic_int answered;

static void later_fire(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    Later *p = (Later *)w;
    atomic_fetch_add(&answered, 1);
    exchange_respond(p->x, 200, "text/plain", p->id, strlen(p->id));
    free(p);
}

/* h_later answers ?id after ?ms (default 50) milliseconds. */
static void h_later(void *arg, Exchange *x)
{
    (void)arg;
    atomic_fetch_add(&calls, 1);
    Later *p = xcalloc(1, sizeof *p);
    p->x = x;
    const char *id = exchange_query(x, "id"), *ms = exchange_query(x, "ms");
    snprintf(p->id, sizeof p->id, "%s", id ? id : "");
    ev_timer_init(&p->t, later_fire, (ms ? atoi(ms) : 50) / 1e3, 0);
    ev_timer_start(loop, &p->t);
    atomic_fetch_add(&held, 1);
}

/* h_hold never answers: listener_close must. */
static void h_hold(void *arg, Exchange *x)
{
    (void)arg;
    (void)x;
    atomic_fetch_add(&held, 1);
}

static void wait_held(int n)
{
    for (int i = 0; i < 1000 && atomic_load(&held) < n; i++)
        sleep_ms(5);
    T_EQ(atomic_load(&held), n);
}

/* ---------------------------------------------------------------- tests */

static void c_routes(void)
{
    Conn c;
    Resp r;
    conn_open(&c); /* all on one connection: refusals keep it alive */
    static const struct { const char *m, *path, *want; } ok[] = {
        {"GET", "/a", "a"},           {"GET", "/a/x", "a"},       {"GET", "/a/b", "ab"},
        {"GET", "/a/bc", "ab"},       {"POST", "/a/b", "ab-post"}, {"GET", "/a/b/c", "abc"},
        {"DELETE", "/a/b/c/d", "abc"}, {"GET", "/a/b?x=/a/b/c", "ab"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rq(&c, ok[i].m, ok[i].path, NULL, NULL, 0, &r);
        T_EQ(r.status, 200);
        T_CHECK(body_is(&r, ok[i].want));
        resp_free(&r);
    }
    rq(&c, "GET", "/b", NULL, NULL, 0, &r);
    T_EQ(r.status, 404);
    T_CHECK(body_is(&r, "{\"error\":\"no such path\"}\n"));
    T_CHECK(strcmp(header(&r, "Content-Type"), "application/json") == 0);
    resp_free(&r);
    rq(&c, "PUT", "/a/b", NULL, NULL, 0, &r);
    T_EQ(r.status, 405);
    T_CHECK(strstr(r.body, "\"error\"") != NULL);
    T_CHECK(strstr(header(&r, "Allow"), "GET") && strstr(header(&r, "Allow"), "POST"));
    resp_free(&r);
    rq(&c, "PUT", "/a", NULL, NULL, 0, &r);
    T_EQ(r.status, 405);
    T_CHECK(strcmp(header(&r, "Allow"), "GET") == 0);
    resp_free(&r);
    rq(&c, "GET", "/a", NULL, NULL, 0, &r); /* still the same connection */
    T_EQ(r.status, 200);
    resp_free(&r);
    conn_close(&c);
}

static void routes(void)
{
    start(NULL);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    listener_route(lis, "GET", "/a/b", 0, h_name, "old");
    listener_route(lis, "GET", "/a/b", 0, h_name, "ab"); /* replaces "old" */
    listener_route(lis, "POST", "/a/b", 0, h_name, "ab-post");
    listener_route(lis, NULL, "/a/b/c", 0, h_name, "abc");
    run_client(c_routes);
    T_EQ(atomic_load(&calls), 9);
    finish();
}

static void c_token(void)
{
    Resp r;
    static const char *bad[] = {NULL, "Authorization: Bearer s3cret-0123456789X\r\n",
                                "Authorization: Bearer s3cret-012345678\r\n",
                                "Authorization: Bearer s3cret-01234567891\r\n",
                                "Authorization: Basic s3cret-0123456789\r\n", "Authorization: Bearer \r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        get("GET", "/p", bad[i], &r);
        T_EQ(r.status, 401);
        T_CHECK(strncmp(header(&r, "WWW-Authenticate"), "Bearer", 6) == 0);
        T_CHECK(strcmp(header(&r, "Content-Type"), "application/json") == 0);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        resp_free(&r);
    }
    get("GET", "/p", "Authorization: Bearer s3cret-0123456789\r\n", &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "p"));
    resp_free(&r);
    get("GET", "/p", "authorization: bearer s3cret-0123456789\r\n", &r);
    T_EQ(r.status, 200);
    resp_free(&r);
    get("GET", "/health", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "health"));
    resp_free(&r);

    /* A refused request with a body: answered before the body is read
     * (the client waits for 100 Continue and gets the 401 instead). */
    Conn c;
    conn_open(&c);
    send_str(&c, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    T_CHECK(read_resp(&c, &r));
    T_EQ(r.status, 401);
    resp_free(&r);
    conn_close(&c);
}

static void token(void)
{
    ListenOpts o = {.token = "s3cret-0123456789"};
    start(&o);
    listener_route(lis, NULL, "/p", 0, h_name, "p");
    listener_route(lis, "GET", "/health", 1, h_name, "health");
    run_client(c_token);
    T_EQ(atomic_load(&calls), 3);
    finish();
}

static void c_body_limit(void)
{
    char buf[5000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)('a' + i % 26);
    Conn c;
    Resp r;
    conn_open(&c);
    rq(&c, "POST", "/echo", NULL, buf, 1000, &r); /* exactly the limit */
    T_EQ(r.status, 200);
    T_EQ(r.len, 1000);
    T_CHECK(memcmp(r.body, buf, 1000) == 0);
    resp_free(&r);

    /* Declared too long: refused before the body is sent. */
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n");
    T_CHECK(read_resp(&c, &r));
    T_EQ(r.status, 413);
    T_CHECK(body_is(&r, "{\"error\":\"request body too large\"}\n"));
    T_CHECK(strcmp(header(&r, "Content-Type"), "application/json") == 0);
    resp_free(&r);
    conn_close(&c);

    /* Chunked, outgrowing the limit on the way: dropped, then 413. */
    conn_open(&c);
    char chunk[64];
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        int n = snprintf(chunk, sizeof chunk, "%x\r\n", 600);
        send_all(&c, chunk, (size_t)n);
        send_all(&c, buf, 600);
        send_str(&c, "\r\n");
    }
    send_str(&c, "0\r\n\r\n");
    T_CHECK(read_resp(&c, &r));
    T_EQ(r.status, 413);
    T_CHECK(strstr(r.body, "too large") != NULL);
    resp_free(&r);
    /* Chunked within the limit on the same connection. */
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    send_str(&c, "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    T_CHECK(read_resp(&c, &r));
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "abcdefg"));
    resp_free(&r);
    conn_close(&c);

    /* A body that goes on far past the limit: the connection is closed. */
    conn_open(&c);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    int closed = 0;
    for (int i = 0; i < 100 && !closed; i++) {
        int n = snprintf(chunk, sizeof chunk, "%zx\r\n", sizeof buf);
        if (send(c.fd, chunk, (size_t)n, MSG_NOSIGNAL) < 0 || send(c.fd, buf, sizeof buf, MSG_NOSIGNAL) < 0 ||
            send(c.fd, "\r\n", 2, MSG_NOSIGNAL) < 0)
            closed = 1;
        sleep_ms(1);
    }
    if (!closed) /* the reset may only show on reading */
        closed = !read_resp(&c, &r);
    T_CHECK(closed);
    conn_close(&c);
}

static void body_limit(void)
{
    ListenOpts o = {.max_body = 1000};
    start(&o);
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_body_limit);
    T_EQ(atomic_load(&calls), 2); /* never for a refused body */
    finish();
}

static void c_later(void)
{
    Resp r;
    double t0 = now_ms();
    get("GET", "/later?id=seven", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "seven"));
    T_CHECK(now_ms() - t0 >= 45);
    resp_free(&r);
}

static void later(void)
{
    start(NULL);
    listener_route(lis, "GET", "/later", 0, h_later, NULL);
    run_client(c_later);
    T_EQ(atomic_load(&answered), 1);
    finish();
}

enum { NCONN = 200, NPIPE = 20, DEPTH = 10 };

static void c_many(void)
{
    static Conn c[NCONN];
    Resp r;
    char target[64];
    /* 200 connections, one request each, all suspended at once, answered
     * in an order unrelated to their arrival. */
    for (int i = 0; i < NCONN; i++) {
        conn_open(&c[i]);
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", i, 10 + (i * 37) % 60);
        send_req(&c[i], "GET", target, NULL, NULL, 0);
    }
    for (int i = 0; i < NCONN; i++) {
        T_CHECK(read_resp(&c[i], &r));
        T_EQ(r.status, 200);
        T_EQ(atoi(r.body), i);
        resp_free(&r);
    }
    /* The same connections again, after their resume. */
    for (int i = 0; i < NCONN; i++) {
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", 1000 + i, 5 + (i * 13) % 30);
        send_req(&c[i], "GET", target, NULL, NULL, 0);
    }
    for (int i = 0; i < NCONN; i++) {
        T_CHECK(read_resp(&c[i], &r));
        T_EQ(atoi(r.body), 1000 + i);
        resp_free(&r);
        conn_close(&c[i]);
    }
    /* Pipelined: 10 requests sent at once on each of 20 connections. */
    for (int i = 0; i < NPIPE; i++) {
        conn_open(&c[i]);
        char all[DEPTH * 128];
        size_t n = 0;
        for (int k = 0; k < DEPTH; k++)
            n += (size_t)snprintf(all + n, sizeof all - n, "GET /later?id=%d&ms=%d HTTP/1.1\r\nHost: t\r\n\r\n",
                                  i * 100 + k, 1 + (i + k) % 7);
        send_all(&c[i], all, n);
    }
    for (int k = 0; k < DEPTH; k++)
        for (int i = 0; i < NPIPE; i++) {
            T_CHECK(read_resp(&c[i], &r));
            T_EQ(atoi(r.body), i * 100 + k);
            resp_free(&r);
        }
    for (int i = 0; i < NPIPE; i++)
        conn_close(&c[i]);
}

static void many(void)
{
    ListenOpts o = {.max_conns_per_ip = NCONN};
    start(&o);
    listener_route(lis, "GET", "/later", 0, h_later, NULL);
    run_client(c_many);
    T_EQ(atomic_load(&answered), 2 * NCONN + NPIPE * DEPTH);
    finish();
}

static void c_disconnect(void)
{
    Conn c;
    Resp r;
    conn_open(&c);
    send_req(&c, "GET", "/later?id=gone&ms=150", NULL, NULL, 0);
    wait_held(1);
    conn_close(&c); /* while the exchange is suspended */
    conn_open(&c);
    send_req(&c, "POST", "/later?id=gone2&ms=100", NULL, "some body", 9);
    wait_held(2);
    shutdown(c.fd, SHUT_RDWR);
    conn_close(&c);
    conn_open(&c); /* and one that resets the connection */
    send_req(&c, "GET", "/later?id=gone3&ms=50", NULL, NULL, 0);
    wait_held(3);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_close(&c);
    while (atomic_load(&answered) < 3)
        sleep_ms(10);
    sleep_ms(50);
    get("GET", "/later?id=after&ms=1", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "after"));
    resp_free(&r);
}

static void disconnect(void)
{
    start(NULL);
    listener_route(lis, NULL, "/later", 0, h_later, NULL);
    run_client(c_disconnect);
    T_EQ(atomic_load(&answered), 4);
    finish();
}

static void c_query_headers(void)
{
    Resp r;
    get("GET", "/info/sub?x=hello%20w%26rld&flag&empty=", "X-Test: v1\r\n", &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "GET /info/sub x=[hello w&rld] flag=[] empty=[] missing=(null) h=[v1] hm=(null)"));
    resp_free(&r);
    get("GET", "/err", NULL, &r);
    T_EQ(r.status, 422);
    T_CHECK(body_is(&r, "{\"error\":\"a\\\"b\\\\c\\nd\\u0001e/\xc3\xa9\"}\n"));
    resp_free(&r);
}

static void query_headers(void)
{
    start(NULL);
    listener_route(lis, "GET", "/info", 0, h_info, NULL);
    listener_route(lis, "GET", "/err", 0, h_err, NULL);
    run_client(c_query_headers);
    finish();
}

static void c_binary(void)
{
    size_t n = 300000;
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 7 % 256); /* NULs included */
    Conn c;
    Resp r;
    conn_open(&c);
    rq(&c, "POST", "/echo", NULL, b, n, &r);
    T_EQ(r.status, 200);
    T_EQ(r.len, n);
    T_CHECK(memcmp(r.body, b, n) == 0);
    resp_free(&r);
    rq(&c, "POST", "/echo", NULL, "\0\0\0", 3, &r);
    T_EQ(r.len, 3);
    T_CHECK(memcmp(r.body, "\0\0\0", 3) == 0);
    resp_free(&r);
    rq(&c, "POST", "/echo", NULL, "", 0, &r);
    T_EQ(r.status, 200);
    T_EQ(r.len, 0);
    resp_free(&r);
    conn_close(&c);
    free(b);
}

static void binary(void)
{
    start(NULL);
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_binary);
    T_EQ(atomic_load(&calls), 3);
    T_CHECK(echo_nul_ok);
    finish();
}

static void c_keepalive(void)
{
    Conn c;
    Resp r;
    conn_open(&c);
    for (int i = 0; i < 3; i++) {
        rq(&c, "GET", "/a", NULL, NULL, 0, &r);
        T_EQ(r.status, 200);
        T_CHECK(header(&r, "Connection") == NULL || strcasecmp(header(&r, "Connection"), "close") != 0);
        resp_free(&r);
        rq(&c, "GET", "/later?id=k&ms=20", NULL, NULL, 0, &r);
        T_CHECK(body_is(&r, "k"));
        resp_free(&r);
        rq(&c, "POST", "/echo", NULL, "xyz", 3, &r);
        T_CHECK(body_is(&r, "xyz"));
        resp_free(&r);
    }
    conn_close(&c);
}

static void keepalive(void)
{
    start(NULL);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    listener_route(lis, "GET", "/later", 0, h_later, NULL);
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_keepalive);
    T_EQ(atomic_load(&calls), 9);
    finish();
}

static void c_close(void)
{
    Conn c[5];
    Resp r;
    for (int i = 0; i < 5; i++) {
        conn_open(&c[i]);
        send_req(&c[i], "GET", "/hold", NULL, NULL, 0);
    }
    wait_held(5);
    ask_close();
    for (int i = 0; i < 5; i++) {
        T_CHECK(read_resp(&c[i], &r));
        T_EQ(r.status, 503);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        T_CHECK(strcasecmp(header(&r, "Connection"), "close") == 0);
        resp_free(&r);
        conn_close(&c[i]);
    }
    /* Not listening any more. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0);
    close(fd);
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    T_CHECK(d != NULL);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void close_suspended(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_async_init(&wake, on_wake);
    ev_async_start(loop, &wake);
    int fds = count_fds();
    ListenOpts o = {0};
    T_OK(listener_open(loop, &o, &lis));
    port = listener_port(lis);
    listener_route(lis, "GET", "/hold", 0, h_hold, NULL);
    run_client(c_close);
    T_CHECK(lis == NULL);
    T_EQ(count_fds(), fds); /* listen socket, epoll, channel: all closed */
    finish();
}

static void c_idle(void)
{
    Conn c;
    Resp r;
    conn_open(&c);
    rq(&c, "GET", "/a", NULL, NULL, 0, &r);
    resp_free(&r);
    double t0 = now_ms();
    char b;
    T_EQ(recv(c.fd, &b, 1, 0), 0); /* closed by the server when idle */
    double dt = now_ms() - t0;
    T_CHECK(dt > 700 && dt < 3000);
    conn_close(&c);
}

static void c_full(void)
{
    Conn a, d, e, f;
    Resp r;
    char b;
    /* Both connections hold a request of ours: a new client waits in the
     * backlog. */
    conn_open(&a);
    send_req(&a, "GET", "/later?id=a&ms=600", NULL, NULL, 0);
    conn_open(&d);
    send_req(&d, "GET", "/later?id=d&ms=1500", NULL, NULL, 0);
    wait_held(2);
    conn_open(&e);
    send_req(&e, "GET", "/a", NULL, NULL, 0);
    struct pollfd p = {.fd = e.fd, .events = POLLIN};
    T_EQ(poll(&p, 1, 200), 0);
    /* a's answer leaves it idle (for 30 s): the waiting client takes its
     * place at once. */
    T_CHECK(read_resp(&a, &r));
    T_CHECK(body_is(&r, "a"));
    resp_free(&r);
    T_CHECK(read_resp(&e, &r));
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "a"));
    resp_free(&r);
    T_EQ(recv(a.fd, &b, 1, 0), 0); /* closed to make room */
    T_CHECK(read_resp(&d, &r));
    T_CHECK(body_is(&r, "d"));
    resp_free(&r);
    /* Two idle connections: a new one replaces the one idle longest (e). */
    conn_open(&f);
    rq(&f, "GET", "/a", NULL, NULL, 0, &r);
    T_EQ(r.status, 200);
    resp_free(&r);
    T_EQ(recv(e.fd, &b, 1, 0), 0);
    rq(&d, "GET", "/a", NULL, NULL, 0, &r); /* d is still served */
    T_EQ(r.status, 200);
    resp_free(&r);
    conn_close(&a);
    conn_close(&d);
    conn_close(&e);
    conn_close(&f);
}

static void full(void)
{
    ListenOpts o = {.max_conns = 2};
    start(&o);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    listener_route(lis, "GET", "/later", 0, h_later, NULL);
    run_client(c_full);
    finish();
}

static void limits(void)
{
    ListenOpts o = {.timeout_s = 1, .max_conns = 2};
    start(&o);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    run_client(c_idle);
    finish();
}

static void open_errors(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    Listener *a, *b;
    T_OK(listener_open(loop, NULL, &a));
    ListenOpts o = {.port = listener_port(a)};
    T_ERR(listener_open(loop, &o, &b), EADDRINUSE);
    T_CHECK(b == NULL);
    ListenOpts bad = {.address = "no-such-host.invalid"};
    T_ERR(listener_open(loop, &bad, &b), EADDRNOTAVAIL);
    /* A token of 15 characters is refused; so is the wildcard address
     * without a token, unless insecure says it is meant; a certificate
     * needs its key. */
    ListenOpts shorttok = {.token = "0123456789abcde"};
    T_ERR(listener_open(loop, &shorttok, &b), EINVAL);
    ListenOpts open_ = {.address = "0.0.0.0"};
    T_ERR(listener_open(loop, &open_, &b), EACCES);
    ListenOpts open6 = {.address = "::"};
    int rc6 = listener_open(loop, &open6, &b);
    T_CHECK(rc6 == EACCES || rc6 == EADDRNOTAVAIL || rc6 == EAFNOSUPPORT); /* no IPv6 here: fine */
    ListenOpts certonly = {.tls_cert = "-----BEGIN CERTIFICATE-----\n"};
    T_ERR(listener_open(loop, &certonly, &b), EINVAL);
    ListenOpts badcert = {.tls_cert = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                          .tls_key = "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"};
    T_ERR(listener_open(loop, &badcert, &b), EPROTO);
    Listener *c;
    ListenOpts insecure = {.address = "0.0.0.0", .insecure = 1};
    T_OK(listener_open(loop, &insecure, &c));
    listener_close(c);
    ListenOpts tok = {.address = "0.0.0.0", .token = "0123456789abcdef"};
    T_OK(listener_open(loop, &tok, &c));
    listener_close(c);
    /* The default address is loopback 127.0.0.1, not the wildcard: the
     * same port is still free on 127.0.0.2. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listener_port(a))};
    sa.sin_addr.s_addr = htonl(0x7f000002);
    T_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    listener_close(a);
    listener_close(NULL);
    ev_loop_destroy(loop);
}

/* ---------------------------------------------------------------- half-closed clients */

enum { HC_THREADS = 20, HC_EACH = 10 };
static atomic_int hc_ok, hc_bad;

/* hc_one sends one request, shuts its write side down at once (as a client
 * that says "that was all" does), and reads the answer. */
static void *hc_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int k = 0; k < HC_EACH; k++) {
        Conn c;
        Resp r;
        char target[64], body[64];
        conn_open(&c);
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", id * 100 + k, 1 + (id + k) % 20);
        int n = snprintf(body, sizeof body, "{\"n\":%d}", id * 100 + k);
        send_req(&c, "POST", target, NULL, body, (size_t)n);
        shutdown(c.fd, SHUT_WR);
        if (read_resp(&c, &r) && r.status == 200 && atoi(r.body) == id * 100 + k)
            atomic_fetch_add(&hc_ok, 1);
        else
            atomic_fetch_add(&hc_bad, 1);
        if (r.body)
            resp_free(&r);
        conn_close(&c);
    }
    return NULL;
}

static void c_half_close(void)
{
    pthread_t th[HC_THREADS];
    for (int i = 0; i < HC_THREADS; i++)
        T_EQ(pthread_create(&th[i], NULL, hc_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < HC_THREADS; i++)
        pthread_join(th[i], NULL);
    /* Answered at once (in the handler) after a half-close, too. */
    for (int k = 0; k < 20; k++) {
        Conn c;
        Resp r;
        conn_open(&c);
        send_req(&c, "POST", "/echo", NULL, "abc", 3);
        shutdown(c.fd, SHUT_WR);
        T_CHECK(read_resp(&c, &r));
        T_EQ(r.status, 200);
        T_CHECK(body_is(&r, "abc"));
        resp_free(&r);
        conn_close(&c);
    }
}

static void half_close(void)
{
    start(NULL);
    listener_route(lis, "POST", "/later", 0, h_later, NULL);
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_half_close);
    fprintf(stderr, "half-closed clients: %d answered, %d not\n", atomic_load(&hc_ok), atomic_load(&hc_bad));
    T_EQ(atomic_load(&hc_bad), 0);
    T_EQ(atomic_load(&hc_ok), HC_THREADS * HC_EACH);
    finish();
}

/* ---------------------------------------------------------------- strict HTTP */

/* raw sends text on a fresh connection and reads one answer into r;
 * *closed says whether the server closed the connection after it. */
static void raw(const char *text, Resp *r, int *closed)
{
    Conn c;
    conn_open(&c);
    send_str(&c, text);
    T_CHECK(read_resp(&c, r));
    /* Nothing more may come: a second answer would mean the rest of the
     * bytes were taken as another request. */
    struct timeval tv = {2, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[256];
    ssize_t k = c.n ? 1 : recv(c.fd, b, sizeof b, 0);
    *closed = k == 0 || (k < 0 && errno == ECONNRESET);
    conn_close(&c);
}

static void c_strict(void)
{
    static const struct { const char *req; int status; const char *says; } bad[] = {
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
         400, "Content-Length"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
         400, "Content-Length"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n", 400, "Transfer-Encoding"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
         "0\r\n\r\n", 400, "Transfer-Encoding"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\n", 400, "Transfer-Encoding"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
         "Transfer-Encoding"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501,
         "Transfer-Encoding"},
        {"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
        {"GET /a HTTP/1.1\r\n\r\n", 400, "Host"},
        {"GET /a HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400, "Host"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nabcde", 400, "header name"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\nContent-Length: 5\r\n\r\nabcde",
         400, "header name"},
        {"GET /a HTTP/1.1\r\nHost: t\r\nX-A: 1\rTransfer-Encoding: chunked\r\n\r\n", 400, "header"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Resp r;
        int closed;
        raw(bad[i].req, &r, &closed);
        if (r.status != bad[i].status || !strstr(r.body, bad[i].says))
            fprintf(stderr, "request %zu: %d %.*s\n", i, r.status, (int)r.len, r.body);
        T_EQ(r.status, bad[i].status);
        T_CHECK(strcmp(header(&r, "Content-Type"), "application/json") == 0);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        T_CHECK(strstr(r.body, bad[i].says) != NULL);
        T_CHECK(closed);
        resp_free(&r);
    }
    /* Still fine: HTTP/1.0 without Host, and one of each header. */
    Resp r;
    int closed;
    raw("GET /a HTTP/1.0\r\n\r\n", &r, &closed);
    T_EQ(r.status, 200);
    resp_free(&r);
    raw("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz", &r, &closed);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "xyz"));
    resp_free(&r);
    raw("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
        "2\r\nxy\r\n0\r\n\r\n", &r, &closed);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "xy"));
    resp_free(&r);
}

static void strict_http(void)
{
    start(NULL);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_strict);
    T_EQ(atomic_load(&calls), 3); /* only the good ones reached a handler */
    finish();
}

/* ---------------------------------------------------------------- slow clients */

enum { SLOW_ADDRS = 11, SLOW_EACH = 100, SLOW_N = SLOW_ADDRS * SLOW_EACH, GREEDY = 140, PER_IP = 128 };
static int slow_fd[SLOW_N + GREEDY];
static int nslow;
static atomic_int trickling;

/* slow_open connects from 127.0.0.(2 + a) and starts a request that is never
 * finished: even ones in their headers, odd ones in their body. */
static int slow_open(int a, int i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_CHECK(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)a);
    T_EQ(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *start = i % 2 ? "POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n{"
                              : "POST /later HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    send(fd, start, strlen(start), MSG_NOSIGNAL);
    return fd;
}

/* trickle sends one byte to every slow connection every 200 ms: enough to
 * keep any "seconds of silence" timeout from firing. */
static void *trickle(void *arg)
{
    (void)arg;
    while (atomic_load(&trickling)) {
        for (int i = 0; i < nslow; i++)
            send(slow_fd[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        sleep_ms(200);
    }
    return NULL;
}

/* slow_closed says whether the server has closed slow connection i (none
 * of them is ever answered, so anything to read means the end). */
static int slow_closed(int i)
{
    struct pollfd p = {.fd = slow_fd[i], .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static int slow_open_count(void)
{
    int n = 0;
    for (int i = 0; i < nslow; i++)
        n += !slow_closed(i);
    return n;
}

/* quick_rq is rq from 127.0.0.1 that must be answered within 2 s. */
static void quick_rq(const char *method, const char *target, const char *body, Resp *r)
{
    Conn c;
    conn_open(&c);
    struct timeval tv = {2, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send_req(&c, method, target, NULL, body, body ? strlen(body) : 0);
    int ok = read_resp(&c, r);
    if (!ok)
        fprintf(stderr, "%s %s: no answer within 2 s (%s)\n", method, target, strerror(errno));
    T_CHECK(ok);
    conn_close(&c);
}

static void c_slow(void)
{
    /* 1,100 slow clients from 11 addresses fill the 1,000 connections. */
    for (int a = 0; a < SLOW_ADDRS; a++)
        for (int i = 0; i < SLOW_EACH; i++, nslow++)
            slow_fd[nslow] = slow_open(a, nslow);
    atomic_store(&trickling, 1);
    pthread_t th;
    T_EQ(pthread_create(&th, NULL, trickle, NULL), 0);
    /* One greedy address opens more than its share: the ones over the
     * limit are answered 429 and closed. */
    int first_greedy = nslow;
    for (int i = 0; i < GREEDY; i++, nslow++)
        slow_fd[nslow] = slow_open(SLOW_ADDRS, nslow);
    int refused = 0;
    for (int i = first_greedy; i < nslow; i++) {
        char b[512];
        struct pollfd p = {.fd = slow_fd[i], .events = POLLIN};
        if (poll(&p, 1, i < first_greedy + PER_IP ? 0 : 2000) != 1)
            continue;
        ssize_t k = recv(slow_fd[i], b, sizeof b - 1, 0);
        if (k > 0) {
            b[k] = 0;
            T_CHECK(strncmp(b, "HTTP/1.1 429 ", 13) == 0);
            T_CHECK(strstr(b, "{\"error\":\"too many connections from your address") != NULL);
            refused++;
        }
    }
    T_EQ(refused, GREEDY - PER_IP);

    /* The connections are full of slow clients; others still get in. */
    Resp r;
    quick_rq("GET", "/health", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "health"));
    resp_free(&r);
    quick_rq("POST", "/later?id=notice&ms=5", "{\"n\":1}", &r);
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "notice"));
    resp_free(&r);
    int open = slow_open_count();
    fprintf(stderr, "slow connections still open after /health and the notice: %d\n", open);
    T_CHECK(open >= 990); /* they were served while the slow ones held the rest */

    /* However steadily they trickle, their requests end at the deadline. */
    for (int t = 0; t < 300 && slow_open_count() > 0; t++)
        sleep_ms(50);
    T_EQ(slow_open_count(), 0);

    atomic_store(&trickling, 0);
    pthread_join(th, NULL);
    for (int i = 0; i < nslow; i++)
        close(slow_fd[i]);
}

/* more_fds raises this process's descriptor limit: the test holds both
 * ends of every connection. */
static void more_fds(rlim_t want)
{
    struct rlimit rl;
    T_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur >= want)
        return;
    struct rlimit up = {want, rl.rlim_max > want ? rl.rlim_max : want};
    if (setrlimit(RLIMIT_NOFILE, &up) != 0) { /* not root: up to the hard limit */
        up.rlim_cur = rl.rlim_max;
        up.rlim_max = rl.rlim_max;
        T_EQ(setrlimit(RLIMIT_NOFILE, &up), 0);
    }
    T_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < want)
        fprintf(stderr, "descriptor limit %llu is below the %llu this test needs\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)want);
    T_CHECK(rl.rlim_cur >= want);
}

static void slow_clients(void)
{
    more_fds(4 * (SLOW_N + GREEDY));
    /* The log goes to a file, to count its lines afterwards. */
    char logf[300];
    snprintf(logf, sizeof logf, "%s.log", t_dir());
    fflush(stderr);
    int saved = dup(2), lf = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    T_CHECK(saved >= 0 && lf >= 0);
    dup2(lf, 2);
    close(lf);
    ListenOpts o = {.request_timeout_s = 6, .log_every_s = 2, .max_conns_per_ip = PER_IP};
    start(&o);
    listener_route(lis, "GET", "/health", 1, h_name, "health");
    listener_route(lis, "POST", "/later", 0, h_later, NULL);
    run_client(c_slow);
    finish();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    /* Some 2,500 connections refused or closed: a few lines said so. */
    FILE *f = fopen(logf, "r");
    T_CHECK(f != NULL);
    char line[2048];
    int lines = 0, refused = 0, expired = 0, evicted = 0;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stderr);
        if (!strstr(line, "listen:"))
            continue;
        lines++;
        const char *p = strstr(line, "listen: in the last ");
        if (!p)
            continue;
        for (const char *q = p; (q = strpbrk(q, "0123456789")) != NULL;) {
            char *end;
            long n = strtol(q, &end, 10);
            if (!strncmp(end, " refused (over", 14))
                refused += (int)n;
            else if (!strncmp(end, " closed with a request unfinished", 33))
                expired += (int)n;
            else if (!strncmp(end, " closed to make room", 20))
                evicted += (int)n;
            q = end;
        }
    }
    fclose(f);
    fprintf(stderr, "log: %d lines from the listener; summed up: %d refused, %d closed to make room, "
            "%d past the deadline\n", lines, refused, evicted, expired);
    T_CHECK(lines <= 20);
    T_EQ(refused, GREEDY - PER_IP);
    T_CHECK(evicted >= SLOW_N + GREEDY - (GREEDY - PER_IP) - 1000);
    T_CHECK(expired >= 900);
}

/* A request without a body that asks for 100 Continue, with the next
 * request right behind it (found by tests/test_fuzz_listen.c). */
static void c_expect(void)
{
    Conn c;
    Resp r;
    conn_open(&c);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n"
                 "GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    T_CHECK(read_resp100(&c, &r));
    T_EQ(r.status, 200);
    T_EQ(r.len, 0);
    resp_free(&r);
    T_CHECK(read_resp(&c, &r));
    T_EQ(r.status, 200);
    T_CHECK(body_is(&r, "a"));
    resp_free(&r);
    conn_close(&c);
}

static void expect_no_body(void)
{
    start(NULL);
    listener_route(lis, "GET", "/a", 0, h_name, "a");
    listener_route(lis, "POST", "/echo", 0, h_echo, NULL);
    run_client(c_expect);
    T_EQ(atomic_load(&calls), 2);
    finish();
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(routes),     T_CASE(token),     T_CASE(body_limit), T_CASE(later),
        T_CASE(many),       T_CASE(disconnect), T_CASE(query_headers), T_CASE(binary),
        T_CASE(keepalive),  T_CASE(close_suspended), T_CASE(limits), T_CASE(full), T_CASE(open_errors),
        T_CASE(half_close), T_CASE(strict_http), T_CASE(slow_clients), T_CASE(expect_no_body),
        {NULL, NULL},
    };
    return t_main(argc, argv, "listen", cases);
}
