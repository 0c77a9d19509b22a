/* test_listen_strict.c: the listener (engine/runtime/listen.c, exchange.c)
 * against clients that push its edges, over real loopback sockets (the
 * fixture: t_listen.h): half-closed clients, strict HTTP/1.1 framing
 * (Content-Length, Transfer-Encoding, Host, header names), slow clients
 * (per-address limits, request deadlines, making room), and Expect without a
 * body. The listener's ordinary work: test_listen.c. */
#include "t.h"
#include "t_listen.h"
#include "pl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------- half-closed clients */

enum { HC_THREADS = 20, HC_EACH = 10 };
static atomic_int hc_ok, hc_bad;

/* hc_one sends one request, shuts its write side down at once (as a client
 * that says "that was all" does), and reads the answer. */
static void *hc_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int k = 0; k < HC_EACH; k++) {
        TlConn c;
        TlResp r;
        char target[64], body[64];
        tl_conn_open(&c);
        snprintf(target, sizeof target, "/later?id=%d&ms=%d", id * 100 + k, 1 + (id + k) % 20);
        int n = snprintf(body, sizeof body, "{\"n\":%d}", id * 100 + k);
        tl_send_req(&c, "POST", target, NULL, body, (size_t)n);
        shutdown(c.fd, SHUT_WR);
        if (tl_read_resp(&c, &r) && r.status == 200 && atoi(r.body) == id * 100 + k)
            atomic_fetch_add(&hc_ok, 1);
        else
            atomic_fetch_add(&hc_bad, 1);
        if (r.body)
            tl_resp_free(&r);
        tl_conn_close(&c);
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
        TlConn c;
        TlResp r;
        tl_conn_open(&c);
        tl_send_req(&c, "POST", "/echo", NULL, "abc", 3);
        shutdown(c.fd, SHUT_WR);
        T_CHECK(tl_read_resp(&c, &r));
        T_EQ(r.status, 200);
        T_CHECK(tl_body_is(&r, "abc"));
        tl_resp_free(&r);
        tl_conn_close(&c);
    }
}

static void half_close(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "POST", "/later", 0, tl_h_later, NULL);
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_half_close);
    fprintf(stderr, "half-closed clients: %d answered, %d not\n", atomic_load(&hc_ok), atomic_load(&hc_bad));
    T_EQ(atomic_load(&hc_bad), 0);
    T_EQ(atomic_load(&hc_ok), HC_THREADS * HC_EACH);
    tl_finish();
}

/* ---------------------------------------------------------------- strict HTTP */

/* raw sends text on a fresh connection and reads one answer into r;
 * *closed says whether the server closed the connection after it. */
static void raw(const char *text, TlResp *r, int *closed)
{
    TlConn c;
    tl_conn_open(&c);
    tl_send_str(&c, text);
    T_CHECK(tl_read_resp(&c, r));
    /* Nothing more may come: a second answer would mean the rest of the
     * bytes were taken as another request. */
    struct timeval tv = {2, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[256];
    ssize_t k = c.n ? 1 : recv(c.fd, b, sizeof b, 0);
    *closed = k == 0 || (k < 0 && errno == ECONNRESET);
    tl_conn_close(&c);
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
        TlResp r;
        int closed;
        raw(bad[i].req, &r, &closed);
        if (r.status != bad[i].status || !strstr(r.body, bad[i].says))
            fprintf(stderr, "request %zu: %d %.*s\n", i, r.status, (int)r.len, r.body);
        T_EQ(r.status, bad[i].status);
        T_CHECK(strcmp(tl_header(&r, "Content-Type"), "application/json") == 0);
        T_CHECK(strstr(r.body, "{\"error\":") == r.body);
        T_CHECK(strstr(r.body, bad[i].says) != NULL);
        T_CHECK(closed);
        tl_resp_free(&r);
    }
    /* Still fine: HTTP/1.0 without Host, and one of each header. */
    TlResp r;
    int closed;
    raw("GET /a HTTP/1.0\r\n\r\n", &r, &closed);
    T_EQ(r.status, 200);
    tl_resp_free(&r);
    raw("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz", &r, &closed);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "xyz"));
    tl_resp_free(&r);
    raw("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
        "2\r\nxy\r\n0\r\n\r\n", &r, &closed);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "xy"));
    tl_resp_free(&r);
}

static void strict_http(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_strict);
    T_EQ(atomic_load(&tl_calls), 3); /* only the good ones reached a handler */
    tl_finish();
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
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tl_port)};
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
        tl_sleep_ms(200);
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
static void quick_rq(const char *method, const char *target, const char *body, TlResp *r)
{
    TlConn c;
    tl_conn_open(&c);
    struct timeval tv = {2, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tl_send_req(&c, method, target, NULL, body, body ? strlen(body) : 0);
    int ok = tl_read_resp(&c, r);
    if (!ok)
        fprintf(stderr, "%s %s: no answer within 2 s (%s)\n", method, target, strerror(errno));
    T_CHECK(ok);
    tl_conn_close(&c);
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
    TlResp r;
    quick_rq("GET", "/health", NULL, &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "health"));
    tl_resp_free(&r);
    quick_rq("POST", "/later?id=notice&ms=5", "{\"n\":1}", &r);
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "notice"));
    tl_resp_free(&r);
    int open = slow_open_count();
    fprintf(stderr, "slow connections still open after /health and the notice: %d\n", open);
    T_CHECK(open >= 990); /* they were served while the slow ones held the rest */

    /* However steadily they trickle, their requests end at the deadline. */
    for (int t = 0; t < 300 && slow_open_count() > 0; t++)
        tl_sleep_ms(50);
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
    tl_start(&o);
    listener_route(tl_lis, "GET", "/health", 1, tl_h_name, "health");
    listener_route(tl_lis, "POST", "/later", 0, tl_h_later, NULL);
    tl_run_client(c_slow);
    tl_finish();
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
    TlConn c;
    TlResp r;
    tl_conn_open(&c);
    tl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n"
                 "GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    T_CHECK(tl_read_resp100(&c, &r));
    T_EQ(r.status, 200);
    T_EQ(r.len, 0);
    tl_resp_free(&r);
    T_CHECK(tl_read_resp(&c, &r));
    T_EQ(r.status, 200);
    T_CHECK(tl_body_is(&r, "a"));
    tl_resp_free(&r);
    tl_conn_close(&c);
}

static void expect_no_body(void)
{
    tl_start(NULL);
    listener_route(tl_lis, "GET", "/a", 0, tl_h_name, "a");
    listener_route(tl_lis, "POST", "/echo", 0, tl_h_echo, NULL);
    tl_run_client(c_expect);
    T_EQ(atomic_load(&tl_calls), 2);
    tl_finish();
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(half_close), T_CASE(strict_http), T_CASE(slow_clients), T_CASE(expect_no_body),
        {NULL, NULL},
    };
    return t_main(argc, argv, "listen_strict", cases);
}
