/* t_listen.c: what test_listen.c and test_listen_strict.c share (t_listen.h):
 * the listener on an ev loop in the test's main thread, a raw HTTP/1.1
 * client over blocking loopback sockets, and the handlers both route. */
#include "t_listen.h"
#include "t.h"
#include "pl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixture */

struct ev_loop *tl_loop;
Listener *tl_lis;
unsigned tl_port;
atomic_int tl_calls, tl_held, tl_answered;
int tl_echo_nul_ok = 1;
static ev_async wake;
static atomic_int want_close, client_done;
static void (*client_fn)(void);

static void on_wake(struct ev_loop *l, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    if (atomic_exchange(&want_close, 0)) {
        listener_close(tl_lis);
        tl_lis = NULL;
    }
    if (atomic_load(&client_done))
        ev_break(l, EVBREAK_ALL);
}

static void *client_main(void *arg)
{
    (void)arg;
    client_fn();
    atomic_store(&client_done, 1);
    ev_async_send(tl_loop, &wake);
    return NULL;
}

void tl_loop_new(void)
{
    tl_loop = ev_loop_new(EVFLAG_AUTO);
    T_CHECK(tl_loop != NULL);
    ev_async_init(&wake, on_wake);
    ev_async_start(tl_loop, &wake);
}

void tl_start(const ListenOpts *o)
{
    tl_loop_new();
    ListenOpts d = {0};
    T_OK(listener_open(tl_loop, o ? o : &d, &tl_lis));
    tl_port = listener_port(tl_lis);
    T_CHECK(tl_port != 0);
}

void tl_run_client(void (*fn)(void))
{
    pthread_t th;
    client_fn = fn;
    atomic_store(&client_done, 0);
    T_EQ(pthread_create(&th, NULL, client_main, NULL), 0);
    ev_run(tl_loop, 0);
    pthread_join(th, NULL);
}

void tl_finish(void)
{
    listener_close(tl_lis);
    tl_lis = NULL;
    ev_async_stop(tl_loop, &wake);
    ev_loop_destroy(tl_loop);
}

void tl_ask_close(void)
{
    atomic_store(&want_close, 1);
    ev_async_send(tl_loop, &wake);
}

void tl_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- client */

void tl_conn_open(TlConn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_CHECK(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tl_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {10, 0}; /* no test waits this long */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void tl_conn_close(TlConn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->n = c->cap = 0;
}

void tl_send_all(TlConn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        T_CHECK(k > 0);
        s += k;
        n -= (size_t)k;
    }
}

void tl_send_str(TlConn *c, const char *s)
{
    tl_send_all(c, s, strlen(s));
}

/* fill reads more into c->buf; returns 0 at EOF or error. */
static int fill(TlConn *c)
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

static void consume(TlConn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->n - n);
    c->n -= n;
}

int tl_read_resp(TlConn *c, TlResp *r)
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

int tl_read_resp100(TlConn *c, TlResp *r)
{
    char *end;
    while (!c->buf || c->n < 25 || !(end = memmem(c->buf, c->n, "\r\n\r\n", 4)))
        if (!fill(c))
            break;
    if (c->n >= 12 && !memcmp(c->buf, "HTTP/1.1 100", 12) && (end = memmem(c->buf, c->n, "\r\n\r\n", 4)))
        consume(c, (size_t)(end - c->buf) + 4);
    return tl_read_resp(c, r);
}

void tl_resp_free(TlResp *r)
{
    free(r->body);
    r->body = NULL;
}

const char *tl_header(const TlResp *r, const char *name)
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

void tl_send_req(TlConn *c, const char *method, const char *target, const char *hdrs,
                 const void *body, size_t len)
{
    char h[2048];
    int n = snprintf(h, sizeof h, "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, target, hdrs ? hdrs : "");
    if (body)
        n += snprintf(h + n, sizeof h - (size_t)n, "Content-Length: %zu\r\n", len);
    n += snprintf(h + n, sizeof h - (size_t)n, "\r\n");
    tl_send_all(c, h, (size_t)n);
    if (body && len)
        tl_send_all(c, body, len);
}

void tl_rq(TlConn *c, const char *method, const char *target, const char *hdrs,
           const void *body, size_t len, TlResp *r)
{
    tl_send_req(c, method, target, hdrs, body, len);
    T_CHECK(tl_read_resp(c, r));
}

void tl_get(const char *method, const char *target, const char *hdrs, TlResp *r)
{
    TlConn c;
    tl_conn_open(&c);
    tl_rq(&c, method, target, hdrs, NULL, 0, r);
    tl_conn_close(&c);
}

int tl_body_is(const TlResp *r, const char *s)
{
    if (r->len == strlen(s) && memcmp(r->body, s, r->len) == 0)
        return 1;
    fprintf(stderr, "body: %.*s (wanted %s)\n", (int)r->len, r->body, s);
    return 0;
}

/* ---------------------------------------------------------------- handlers */

void tl_h_name(void *arg, Exchange *x)
{
    atomic_fetch_add(&tl_calls, 1);
    exchange_respond(x, 200, "text/plain", arg, strlen(arg));
}

void tl_h_echo(void *arg, Exchange *x)
{
    (void)arg;
    atomic_fetch_add(&tl_calls, 1);
    size_t n;
    const char *b = exchange_body(x, &n);
    if (b[n] != 0)
        tl_echo_nul_ok = 0;
    exchange_respond(x, 200, "application/octet-stream", b, n);
}

/* Later: an answer some milliseconds after the handler returned. */
typedef struct Later {
    ev_timer t;
    Exchange *x;
    char id[32];
} Later;

static void later_fire(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    Later *p = (Later *)w;
    atomic_fetch_add(&tl_answered, 1);
    exchange_respond(p->x, 200, "text/plain", p->id, strlen(p->id));
    free(p);
}

void tl_h_later(void *arg, Exchange *x)
{
    (void)arg;
    atomic_fetch_add(&tl_calls, 1);
    Later *p = xcalloc(1, sizeof *p);
    p->x = x;
    const char *id = exchange_query(x, "id"), *ms = exchange_query(x, "ms");
    snprintf(p->id, sizeof p->id, "%s", id ? id : "");
    ev_timer_init(&p->t, later_fire, (ms ? atoi(ms) : 50) / 1e3, 0);
    ev_timer_start(tl_loop, &p->t);
    atomic_fetch_add(&tl_held, 1);
}

void tl_wait_held(int n)
{
    for (int i = 0; i < 1000 && atomic_load(&tl_held) < n; i++)
        tl_sleep_ms(5);
    T_EQ(atomic_load(&tl_held), n);
}
