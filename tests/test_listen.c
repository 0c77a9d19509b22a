/* test_listen.c: the listener (engine/runtime/listen.c, exchange.c) over real
 * loopback sockets (the fixture: t_listen.h): routes, the token, body limits,
 * answers later, many connections and pipelining, disconnects, queries and
 * headers, binary bodies, keep-alive, close with exchanges suspended, idle
 * and full connections, open's errors. Strict framing, half-closed and slow
 * clients: test_listen_strict.c. */
#include "t.h"
#include "t_listen.h"
#include "pl.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static double now_ms(void)
{
    return (double)pl_mono_ns() / 1e6;
}

/* ---------------------------------------------------------------- handlers */

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

/* h_hold never answers: listener_close must. */
static void h_hold(void *arg, Exchange *x)
{
    (void)arg;
    (void)x;
    atomic_fetch_add(&tl_held, 1);
}

/* ---------------------------------------------------------------- tests */

static void c_routes(void)
{
    TlConn c;
    TlResp r;
    tl_conn_open(&c); /* all on one connection: refusals keep it alive */
    static const struct { const char *m, *path, *want; } ok[] = {
        {"GET", "/a", "a"},           {"GET", "/a/x", "a"},       {"GET", "/a/b", "ab"},
        {"GET", "/a/bc", "ab"},       {"POST", "/a/b", "ab-post"}, {"GET", "/a/b/c", "abc"},
        {"DELETE", "/a/b/c/d", "abc"}, {"GET", "/a/b?x=/a/b/c", "ab"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        tl_rq(&c, ok[i].m, ok[i].path, NULL, NULL, 0, &r);
        T_EQ(r.status, 200);
        T_CHECK(tl_body_is(&r, ok[i].want));
        tl_resp_free(&r);
    }
    tl_rq(&c, "GET", "/b", NULL, NULL, 0, &r);
    T_EQ(r.status, 404);
    T_CHECK(tl_body_is(&r, "{\"error\":\"no such path\"}\n"));
    T_CHECK(strcmp(tl_header(&r, "Content-Type"), "application/json") == 0);
    tl_resp_free(&r);
    tl_rq(&c, "PUT", "/a/b", NULL, NULL, 0, &r);
    T_EQ(r.status, 405);
    T_CHECK(strstr(r.body, "\"error\"") != NULL);
    T_CHECK(strstr(tl_header(&r, "Allow"), "GET") && strstr(tl_header(&r, "Allow"), "POST"));
    tl_resp_free(&r);
    tl_rq(&c, "PUT", "/a", NULL, NULL, 0, &r);
    T_EQ(r.status, 405);
    T_CHECK(strcmp(tl_header(&r, "Allow"), "GET") == 0);
    tl_resp_free(&r);
    tl_rq(&c, "GET", "/a", NULL, NULL, 0, &r); /* still the same connection */
    T_EQ(r.status, 200);
    tl_resp_free(&r);
    tl_conn_close(&c);
}

static void routes(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    listener_route(tl_lis, "GET", "/a/b", 0, tl_h_name, "old");
    listener_route(tl_lis, "GET", "/a/b", 0, tl_h_name, "ab"); /* replaces "old" */
    listener_route(tl_lis, "POST", "/a/b", 0, tl_h_name, "ab-post");
    listener_route(tl_lis, NULL, "/a/b/c", 0, tl_h_name, "abc");
    tl_run_client(c_routes);
    T_EQ(atomic_load(&tl_calls), 9);
    tl_finish();
}

static void c_token(void)
{
    TlResp r;
    static const char *bad[] = {NULL, "Authorization: Bearer s3cret-0123456789X\r\n",
                                "Authorization: Bearer s3cret-012345678\r\n",
                                "Authorization: Bearer s3cret-01234567891\r\n",
                                "Authorization: Basic s3cret-0123456789\r\n", "Authorization: Bearer \r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_get("GET", "/p", bad[i], &r);
        T_EQ(r.status, 401);
        T_CHECK(strncmp(tl_header(&r, "WWW-Authenticate"), "Bearer", 6) == 0);
        T_CHECK(strcmp(tl_header(&r, "Content-Type"), "application/json") == 0);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        tl_resp_free(&r);
    }
    tl_get("GET", "/p", "Authorization: Bearer s3cret-0123456789\r\n", &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "p"));
    tl_resp_free(&r);
    tl_get("GET", "/p", "authorization: bearer s3cret-0123456789\r\n", &r);
    T_EQ(r.status, 200);
    tl_resp_free(&r);
    tl_get("GET", "/health", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "health"));
    tl_resp_free(&r);

    /* A refused request with a body: answered before the body is read
     * (the client waits for 100 Continue and gets the 401 instead). */
    TlConn c;
    tl_conn_open(&c);
    tl_send_str(&c, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    T_CHECK(tl_read_resp(&c, &r));
    T_EQ(r.status, 401);
    tl_resp_free(&r);
    tl_conn_close(&c);
}

static void token(void)
{
    ListenOpts o = {.token = "s3cret-0123456789"};
    tl_start(&o);
    listener_route(tl_lis, NULL, "/p", 0, tl_h_name, "p");
    listener_route(tl_lis, "GET", "/health", 1, tl_h_name, "health");
    tl_run_client(c_token);
    T_EQ(atomic_load(&tl_calls), 3);
    tl_finish();
}

static void c_body_limit(void)
{
    char buf[5000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)('a' + i % 26);
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    tl_rq(&c, "POST", "/echo", NULL, buf, 1000, &r); /* exactly the limit */
    T_EQ(r.status, 200);
    T_EQ(r.len, 1000);
    T_CHECK(memcmp(r.body, buf, 1000) == 0);
    tl_resp_free(&r);

    /* Declared too long: refused before the body is sent. */
    tl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n");
    T_CHECK(tl_read_resp(&c, &r));
    T_EQ(r.status, 413);
    T_CHECK(tl_body_is(&r, "{\"error\":\"request body too large\"}\n"));
    T_CHECK(strcmp(tl_header(&r, "Content-Type"), "application/json") == 0);
    tl_resp_free(&r);
    tl_conn_close(&c);

    /* Chunked, outgrowing the limit on the way: dropped, then 413. */
    tl_conn_open(&c);
    char chunk[64];
    tl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        int n = snprintf(chunk, sizeof chunk, "%x\r\n", 600);
        tl_send_all(&c, chunk, (size_t)n);
        tl_send_all(&c, buf, 600);
        tl_send_str(&c, "\r\n");
    }
    tl_send_str(&c, "0\r\n\r\n");
    T_CHECK(tl_read_resp(&c, &r));
    T_EQ(r.status, 413);
    T_CHECK(strstr(r.body, "too large") != NULL);
    tl_resp_free(&r);
    /* Chunked within the limit on the same connection. */
    tl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    tl_send_str(&c, "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    T_CHECK(tl_read_resp(&c, &r));
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "abcdefg"));
    tl_resp_free(&r);
    tl_conn_close(&c);

    /* A body that goes on far past the limit: the connection is closed. */
    tl_conn_open(&c);
    tl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    int closed = 0;
    for (int i = 0; i < 100 && !closed; i++) {
        int n = snprintf(chunk, sizeof chunk, "%zx\r\n", sizeof buf);
        if (send(c.fd, chunk, (size_t)n, MSG_NOSIGNAL) < 0 || send(c.fd, buf, sizeof buf, MSG_NOSIGNAL) < 0 ||
            send(c.fd, "\r\n", 2, MSG_NOSIGNAL) < 0)
            closed = 1;
        tl_sleep_ms(1);
    }
    if (!closed) /* the reset may only show on reading */
        closed = !tl_read_resp(&c, &r);
    T_CHECK(closed);
    tl_conn_close(&c);
}

static void body_limit(void)
{
    ListenOpts o = {.max_body = 1000};
    tl_start(&o);
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_body_limit);
    T_EQ(atomic_load(&tl_calls), 2); /* never for a refused body */
    tl_finish();
}

static void c_later(void)
{
    TlResp r;
    double t0 = now_ms();
    tl_get("GET", "/later?id=seven", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "seven"));
    T_CHECK(now_ms() - t0 >= 45);
    tl_resp_free(&r);
}

static void later(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/later", 0, tl_h_later, NULL);
    tl_run_client(c_later);
    T_EQ(atomic_load(&tl_answered), 1);
    tl_finish();
}

enum { NCONN = 200, NPIPE = 20, DEPTH = 10 };

static void c_many(void)
{
    static TlConn c[NCONN];
    TlResp r;
    char target[64];
    /* 200 connections, one request each, all suspended at once, answered
     * in an order unrelated to their arrival. */
    for (int i = 0; i < NCONN; i++) {
        tl_conn_open(&c[i]);
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", i, 10 + (i * 37) % 60);
        tl_send_req(&c[i], "GET", target, NULL, NULL, 0);
    }
    for (int i = 0; i < NCONN; i++) {
        T_CHECK(tl_read_resp(&c[i], &r));
        T_EQ(r.status, 200);
        T_EQ(atoi(r.body), i);
        tl_resp_free(&r);
    }
    /* The same connections again, after their resume. */
    for (int i = 0; i < NCONN; i++) {
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", 1000 + i, 5 + (i * 13) % 30);
        tl_send_req(&c[i], "GET", target, NULL, NULL, 0);
    }
    for (int i = 0; i < NCONN; i++) {
        T_CHECK(tl_read_resp(&c[i], &r));
        T_EQ(atoi(r.body), 1000 + i);
        tl_resp_free(&r);
        tl_conn_close(&c[i]);
    }
    /* Pipelined: 10 requests sent at once on each of 20 connections. */
    for (int i = 0; i < NPIPE; i++) {
        tl_conn_open(&c[i]);
        char all[DEPTH * 128];
        size_t n = 0;
        for (int k = 0; k < DEPTH; k++)
            n += (size_t)snprintf(all + n, sizeof all - n, "GET /later?id=%d&ms=%d HTTP/1.1\r\nHost: t\r\n\r\n",
                                  i * 100 + k, 1 + (i + k) % 7);
        tl_send_all(&c[i], all, n);
    }
    for (int k = 0; k < DEPTH; k++)
        for (int i = 0; i < NPIPE; i++) {
            T_CHECK(tl_read_resp(&c[i], &r));
            T_EQ(atoi(r.body), i * 100 + k);
            tl_resp_free(&r);
        }
    for (int i = 0; i < NPIPE; i++)
        tl_conn_close(&c[i]);
}

static void many(void)
{
    ListenOpts o = {.max_conns_per_ip = NCONN};
    tl_start(&o);
    listener_route(tl_lis, "GET", "/later", 0, tl_h_later, NULL);
    tl_run_client(c_many);
    T_EQ(atomic_load(&tl_answered), 2 * NCONN + NPIPE * DEPTH);
    tl_finish();
}

static void c_disconnect(void)
{
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    tl_send_req(&c, "GET", "/later?id=gone&ms=150", NULL, NULL, 0);
    tl_wait_held(1);
    tl_conn_close(&c); /* while the exchange is suspended */
    tl_conn_open(&c);
    tl_send_req(&c, "POST", "/later?id=gone2&ms=100", NULL, "some body", 9);
    tl_wait_held(2);
    shutdown(c.fd, SHUT_RDWR);
    tl_conn_close(&c);
    tl_conn_open(&c); /* and one that resets the connection */
    tl_send_req(&c, "GET", "/later?id=gone3&ms=50", NULL, NULL, 0);
    tl_wait_held(3);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tl_conn_close(&c);
    while (atomic_load(&tl_answered) < 3)
        tl_sleep_ms(10);
    tl_sleep_ms(50);
    tl_get("GET", "/later?id=after&ms=1", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "after"));
    tl_resp_free(&r);
}

static void disconnect(void)
{
    tl_start(NULL);
    listener_route(tl_lis, NULL, "/later", 0, tl_h_later, NULL);
    tl_run_client(c_disconnect);
    T_EQ(atomic_load(&tl_answered), 4);
    tl_finish();
}

static void c_query_headers(void)
{
    TlResp r;
    tl_get("GET", "/info/sub?x=hello%20w%26rld&flag&empty=", "X-Test: v1\r\n", &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "GET /info/sub x=[hello w&rld] flag=[] empty=[] missing=(null) h=[v1] hm=(null)"));
    tl_resp_free(&r);
    tl_get("GET", "/err", NULL, &r);
    T_EQ(r.status, 422);
    T_CHECK(tl_body_is(&r, "{\"error\":\"a\\\"b\\\\c\\nd\\u0001e/\xc3\xa9\"}\n"));
    tl_resp_free(&r);
}

static void query_headers(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/info", 0, h_info, NULL);
    listener_route(tl_lis, "GET", "/err", 0, h_err, NULL);
    tl_run_client(c_query_headers);
    tl_finish();
}

static void c_binary(void)
{
    size_t n = 300000;
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 7 % 256); /* NULs included */
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    tl_rq(&c, "POST", "/echo", NULL, b, n, &r);
    T_EQ(r.status, 200);
    T_EQ(r.len, n);
    T_CHECK(memcmp(r.body, b, n) == 0);
    tl_resp_free(&r);
    tl_rq(&c, "POST", "/echo", NULL, "\0\0\0", 3, &r);
    T_EQ(r.len, 3);
    T_CHECK(memcmp(r.body, "\0\0\0", 3) == 0);
    tl_resp_free(&r);
    tl_rq(&c, "POST", "/echo", NULL, "", 0, &r);
    T_EQ(r.status, 200);
    T_EQ(r.len, 0);
    tl_resp_free(&r);
    tl_conn_close(&c);
    free(b);
}

static void binary(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_binary);
    T_EQ(atomic_load(&tl_calls), 3);
    T_CHECK(tl_echo_nul_ok);
    tl_finish();
}

static void c_keepalive(void)
{
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    for (int i = 0; i < 3; i++) {
        tl_rq(&c, "GET", "/a", NULL, NULL, 0, &r);
        T_EQ(r.status, 200);
        T_CHECK(tl_header(&r, "Connection") == NULL || strcasecmp(tl_header(&r, "Connection"), "close") != 0);
        tl_resp_free(&r);
        tl_rq(&c, "GET", "/later?id=k&ms=20", NULL, NULL, 0, &r);
        T_CHECK(tl_body_is(&r, "k"));
        tl_resp_free(&r);
        tl_rq(&c, "POST", "/echo", NULL, "xyz", 3, &r);
        T_CHECK(tl_body_is(&r, "xyz"));
        tl_resp_free(&r);
    }
    tl_conn_close(&c);
}

static void keepalive(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    listener_route(tl_lis, "GET", "/later", 0, tl_h_later, NULL);
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_keepalive);
    T_EQ(atomic_load(&tl_calls), 9);
    tl_finish();
}

static void c_close(void)
{
    TlConn c[5];
    TlResp r;
    for (int i = 0; i < 5; i++) {
        tl_conn_open(&c[i]);
        tl_send_req(&c[i], "GET", "/hold", NULL, NULL, 0);
    }
    tl_wait_held(5);
    tl_ask_close();
    for (int i = 0; i < 5; i++) {
        T_CHECK(tl_read_resp(&c[i], &r));
        T_EQ(r.status, 503);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        T_CHECK(strcasecmp(tl_header(&r, "Connection"), "close") == 0);
        tl_resp_free(&r);
        tl_conn_close(&c[i]);
    }
    /* Not listening any more. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tl_port)};
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
    tl_loop_new();
    int fds = count_fds();
    ListenOpts o = {0};
    T_OK(listener_open(tl_loop, &o, &tl_lis));
    tl_port = listener_port(tl_lis);
    listener_route(tl_lis, "GET", "/hold", 0, h_hold, NULL);
    tl_run_client(c_close);
    T_CHECK(tl_lis == NULL);
    T_EQ(count_fds(), fds); /* listen socket, epoll, channel: all closed */
    tl_finish();
}

static void c_idle(void)
{
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    tl_rq(&c, "GET", "/a", NULL, NULL, 0, &r);
    tl_resp_free(&r);
    double t0 = now_ms();
    char b;
    T_EQ(recv(c.fd, &b, 1, 0), 0); /* closed by the server when idle */
    double dt = now_ms() - t0;
    T_CHECK(dt > 700 && dt < 3000);
    tl_conn_close(&c);
}

static void c_full(void)
{
    TlConn a, d, e, f;
    TlResp r;
    char b;
    /* Both connections hold a request of ours: a new client waits in the
     * backlog. */
    tl_conn_open(&a);
    tl_send_req(&a, "GET", "/later?id=a&ms=600", NULL, NULL, 0);
    tl_conn_open(&d);
    tl_send_req(&d, "GET", "/later?id=d&ms=1500", NULL, NULL, 0);
    tl_wait_held(2);
    tl_conn_open(&e);
    tl_send_req(&e, "GET", "/a", NULL, NULL, 0);
    struct pollfd p = {.fd = e.fd, .events = POLLIN};
    T_EQ(poll(&p, 1, 200), 0);
    /* a's answer leaves it idle (for 30 s): the waiting client takes its
     * place at once. */
    T_CHECK(tl_read_resp(&a, &r));
    T_CHECK(tl_body_is(&r, "a"));
    tl_resp_free(&r);
    T_CHECK(tl_read_resp(&e, &r));
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "a"));
    tl_resp_free(&r);
    T_EQ(recv(a.fd, &b, 1, 0), 0); /* closed to make room */
    T_CHECK(tl_read_resp(&d, &r));
    T_CHECK(tl_body_is(&r, "d"));
    tl_resp_free(&r);
    /* Two idle connections: a new one replaces the one idle longest (e). */
    tl_conn_open(&f);
    tl_rq(&f, "GET", "/a", NULL, NULL, 0, &r);
    T_EQ(r.status, 200);
    tl_resp_free(&r);
    T_EQ(recv(e.fd, &b, 1, 0), 0);
    tl_rq(&d, "GET", "/a", NULL, NULL, 0, &r); /* d is still served */
    T_EQ(r.status, 200);
    tl_resp_free(&r);
    tl_conn_close(&a);
    tl_conn_close(&d);
    tl_conn_close(&e);
    tl_conn_close(&f);
}

static void full(void)
{
    ListenOpts o = {.max_conns = 2};
    tl_start(&o);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    listener_route(tl_lis, "GET", "/later", 0, tl_h_later, NULL);
    tl_run_client(c_full);
    tl_finish();
}

static void limits(void)
{
    ListenOpts o = {.timeout_s = 1, .max_conns = 2};
    tl_start(&o);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    tl_run_client(c_idle);
    tl_finish();
}

static void open_errors(void)
{
    tl_loop = ev_loop_new(EVFLAG_AUTO);
    Listener *a, *b;
    T_OK(listener_open(tl_loop, NULL, &a));
    ListenOpts o = {.port = listener_port(a)};
    T_ERR(listener_open(tl_loop, &o, &b), EADDRINUSE);
    T_CHECK(b == NULL);
    ListenOpts bad = {.address = "no-such-host.invalid"};
    T_ERR(listener_open(tl_loop, &bad, &b), EADDRNOTAVAIL);
    /* A token of 15 characters is refused; so is the wildcard address
     * without a token, unless insecure says it is meant; a certificate
     * needs its key. */
    ListenOpts shorttok = {.token = "0123456789abcde"};
    T_ERR(listener_open(tl_loop, &shorttok, &b), EINVAL);
    ListenOpts open_ = {.address = "0.0.0.0"};
    T_ERR(listener_open(tl_loop, &open_, &b), EACCES);
    ListenOpts open6 = {.address = "::"};
    int rc6 = listener_open(tl_loop, &open6, &b);
    T_CHECK(rc6 == EACCES || rc6 == EADDRNOTAVAIL || rc6 == EAFNOSUPPORT); /* no IPv6 here: fine */
    ListenOpts certonly = {.tls_cert = "-----BEGIN CERTIFICATE-----\n"};
    T_ERR(listener_open(tl_loop, &certonly, &b), EINVAL);
    ListenOpts badcert = {.tls_cert = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                          .tls_key = "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"};
    T_ERR(listener_open(tl_loop, &badcert, &b), EPROTO);
    Listener *c;
    ListenOpts insecure = {.address = "0.0.0.0", .insecure = 1};
    T_OK(listener_open(tl_loop, &insecure, &c));
    listener_close(c);
    ListenOpts tok = {.address = "0.0.0.0", .token = "0123456789abcdef"};
    T_OK(listener_open(tl_loop, &tok, &c));
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
    ev_loop_destroy(tl_loop);
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(routes),     T_CASE(token),     T_CASE(body_limit), T_CASE(later),
        T_CASE(many),       T_CASE(disconnect), T_CASE(query_headers), T_CASE(binary),
        T_CASE(keepalive),  T_CASE(close_suspended), T_CASE(limits), T_CASE(full), T_CASE(open_errors),
        {NULL, NULL},
    };
    return t_main(argc, argv, "listen", cases);
}
