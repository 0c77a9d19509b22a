/* test_http.c: engine/runtime/http.c over real loopback HTTP. A fixture server
 * (libmicrohttpd, a thread per connection) runs inside each test's process;
 * a raw socket thread stands in for a server that resets connections. */
#include "t.h"
#include "http.h"
#include "pl.h"

#include <arpa/inet.h>
#include <ev.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------- the fixture */

#define BIG ((uint64_t)65 << 20)

static struct {
    struct MHD_Daemon *d;
    unsigned port;
    atomic_int conns;               /* connections accepted */
    atomic_int active, max_active;  /* /sleep requests in the handler */
    atomic_int stop;
} fx;

typedef struct Upload {
    char *p;
    size_t len;
} Upload;

static void on_conn(void *cls, struct MHD_Connection *conn, void **ctx, enum MHD_ConnectionNotificationCode code)
{
    (void)cls, (void)conn, (void)ctx;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        fx.conns++;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode code)
{
    (void)cls, (void)conn, (void)code;
    Upload *u = *con_cls;
    if (u) {
        free(u->p);
        free(u);
        *con_cls = NULL;
    }
}

static ssize_t big_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    if (pos >= BIG)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = BIG - pos < max ? (size_t)(BIG - pos) : max;
    memset(buf, 'x', n);
    return (ssize_t)n;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body, size_t len,
                             const char *hname, const char *hval)
{
    struct MHD_Response *rs = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(rs, "Content-Type", "application/json");
    if (hname)
        MHD_add_response_header(rs, hname, hval);
    enum MHD_Result ok = MHD_queue_response(conn, status, rs);
    MHD_destroy_response(rs);
    return ok;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls, (void)version;
    Upload *u = *con_cls;
    if (!u) {
        *con_cls = calloc(1, sizeof *u);
        return MHD_YES;
    }
    if (*upload_size) {
        u->p = realloc(u->p, u->len + *upload_size + 1);
        memcpy(u->p + u->len, upload, *upload_size);
        u->len += *upload_size;
        u->p[u->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(url, "/ok"))
        return reply(conn, 200, "{\"ok\":true}", 11, "X-Fixture", "yes");
    if (!strcmp(url, "/404"))
        return reply(conn, 404, "no such thing\n\x01\xff end", 20, NULL, NULL);
    if (!strcmp(url, "/long404")) {
        char b[1000];
        memset(b, 'a', sizeof b);
        return reply(conn, 404, b, sizeof b, NULL, NULL);
    }
    if (!strcmp(url, "/500"))
        return reply(conn, 500, "boom", 4, NULL, NULL);
    if (!strcmp(url, "/408"))
        return reply(conn, 408, "", 0, NULL, NULL);
    if (!strcmp(url, "/429"))
        return reply(conn, 429, "slow down", 9, "Retry-After", "7");
    if (!strcmp(url, "/503date")) {
        char date[64];
        time_t t = time(NULL) + 30;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        return reply(conn, 503, "maintenance", 11, "Retry-After", date);
    }
    if (!strcmp(url, "/sleep")) {
        const char *ms = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "ms");
        int n = ++fx.active;
        for (int m = fx.max_active; n > m && !atomic_compare_exchange_weak(&fx.max_active, &m, n);)
            ;
        for (int left = ms ? atoi(ms) : 100; left > 0 && !fx.stop; left -= 5)
            usleep(5000);
        fx.active--;
        return reply(conn, 200, "slept", 5, NULL, NULL);
    }
    if (!strcmp(url, "/close"))
        return MHD_NO; /* MHD closes the connection without an answer */
    if (!strcmp(url, "/echo")) {
        const char *xt = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Test");
        const char *ua = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "User-Agent");
        size_t n = u->len + 256;
        char *b = malloc(n);
        int k = snprintf(b, n, "%s|%s|%s|%zu|%s", method, xt ? xt : "-", ua ? ua : "-", u->len,
                         u->p ? u->p : "");
        enum MHD_Result ok = reply(conn, 200, b, (size_t)k, NULL, NULL);
        free(b);
        return ok;
    }
    if (!strcmp(url, "/big")) {
        int cl = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "cl") != NULL;
        struct MHD_Response *rs =
            MHD_create_response_from_callback(cl ? BIG : MHD_SIZE_UNKNOWN, 64 * 1024, big_reader, NULL, NULL);
        enum MHD_Result ok = MHD_queue_response(conn, 200, rs);
        MHD_destroy_response(rs);
        return ok;
    }
    return reply(conn, 400, "unknown path", 12, NULL, NULL);
}

static void fix_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fx.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                            handler, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_CONNECTION, on_conn,
                            NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    T_CHECK(fx.d != NULL);
    fx.port = MHD_get_daemon_info(fx.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    T_CHECK(fx.port != 0);
}

static void fix_stop(void)
{
    fx.stop = 1;
    MHD_stop_daemon(fx.d);
}

/* A server that reads the request and resets the connection (SO_LINGER 0). */
static int rst_fd = -1;
static pthread_t rst_th;

static void *rst_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(rst_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char b[4096];
        if (read(fd, b, sizeof b) < 0)
            b[0] = 0;
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
}

static unsigned listen_port(int *fdp)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof sa;
    T_CHECK(fd >= 0);
    T_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa));
    T_OK(listen(fd, 16));
    T_OK(getsockname(fd, (struct sockaddr *)&sa, &n));
    *fdp = fd;
    return ntohs(sa.sin_port);
}

/* ------------------------------------------------------ the client side */

static struct ev_loop *L;
static Http *H;
static int in_request; /* inside http_request: a done now is a bug */
static int ndone, want;

typedef struct Got {
    int n;
    int outcome;
    long status;
    char body[256];
    size_t len;
    double retry, elapsed;
    char error[256];
    char ctype[64], fixture[16];
    int missing_null;
} Got;

static const char *U(const char *path)
{
    static char b[8][256];
    static int i;
    char *s = b[i++ & 7];
    snprintf(s, sizeof b[0], "http://127.0.0.1:%u%s", fx.port, path);
    return s;
}

static void copy_result(Got *g, const HttpResult *r)
{
    g->n++;
    g->outcome = r->outcome;
    g->status = r->status;
    g->len = r->len;
    T_CHECK(r->body != NULL && r->body[r->len] == '\0');
    snprintf(g->body, sizeof g->body, "%s", r->body);
    g->retry = r->retry_after_s;
    g->elapsed = r->elapsed_s;
    snprintf(g->error, sizeof g->error, "%s", r->error);
    const char *v = http_result_header(r, "content-type");
    snprintf(g->ctype, sizeof g->ctype, "%s", v ? v : "");
    v = http_result_header(r, "X-FIXTURE");
    snprintf(g->fixture, sizeof g->fixture, "%s", v ? v : "");
    g->missing_null = http_result_header(r, "X-Not-There") == NULL;
}

static void got_done(void *arg, const HttpResult *r)
{
    T_CHECK(!in_request);
    copy_result(arg, r);
    if (++ndone >= want)
        ev_break(L, EVBREAK_ALL);
}

static void submit(HttpClass *c, const HttpRequest *rq, HttpDone done, void *arg, HttpReq **out)
{
    in_request = 1;
    http_request(c, rq, done, arg, out);
    in_request = 0;
}

static void get(HttpClass *c, const char *url, Got *g, HttpReq **out)
{
    HttpRequest rq = {.method = "GET", .url = url};
    submit(c, &rq, got_done, g, out);
}

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    t_fail(__FILE__, __LINE__, "timed out waiting: %d of %d requests done", ndone, want);
}

/* run runs the loop until n done callbacks in all (or limit seconds: fail). */
static void run(int n, double limit)
{
    want = n;
    if (ndone >= want)
        return;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, limit, 0.);
    ev_timer_start(L, &guard);
    ev_run(L, 0);
    ev_timer_stop(L, &guard);
    T_EQ(ndone, n);
}

static void on_nap(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* nap runs the loop for s seconds. */
static void nap(double s)
{
    ev_timer t;
    ev_timer_init(&t, on_nap, s, 0.);
    ev_timer_start(L, &t);
    want = 1 << 30;
    ev_run(L, 0);
    ev_timer_stop(L, &t);
}

static double now_s(void)
{
    return (double)pl_mono_ns() / 1e9;
}

static void setup(void)
{
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    fix_start();
    L = ev_loop_new(EVFLAG_AUTO);
    T_OK(http_open(L, NULL, &H));
}

static void teardown(void)
{
    http_close(H);
    H = NULL;
    ev_loop_destroy(L);
    fix_stop();
}

static HttpClass *klass(unsigned conc, double rate, double timeout)
{
    HttpPolicy p = {.concurrency = conc, .rate_per_s = rate, .timeout_s = timeout};
    return http_class_new(H, "test", &p);
}

/* open_class sets up and makes a class (as klass); close_class frees it and
 * tears down. */
static HttpClass *open_class(unsigned conc, double rate, double timeout)
{
    setup();
    return klass(conc, rate, timeout);
}

static void close_class(HttpClass *c)
{
    http_class_free(c);
    teardown();
}

/* close_idle checks that c has nothing in flight or waiting, then closes
 * it as close_class. */
static void close_idle(HttpClass *c)
{
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.in_flight, 0);
    T_EQ(st.waiting, 0);
    close_class(c);
}

/* ------------------------------------------------------------ the tests */

static void ok_json(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got g = {0};
    get(c, U("/ok"), &g, NULL);
    T_EQ(g.n, 0); /* never from inside http_request */
    run(1, 10);
    T_EQ(g.n, 1);
    T_EQ(g.outcome, HTTP_OK);
    T_EQ(g.status, 200);
    T_CHECK(strcmp(g.body, "{\"ok\":true}") == 0);
    T_EQ(g.len, 11);
    T_CHECK(strcmp(g.ctype, "application/json") == 0);
    T_CHECK(strcmp(g.fixture, "yes") == 0);
    T_CHECK(g.missing_null);
    T_CHECK(g.error[0] == '\0');
    T_CHECK(g.retry == 0);
    T_CHECK(g.elapsed > 0 && g.elapsed < 5);
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.started, 1);
    T_EQ(st.ok, 1);
    close_idle(c);
}

static void methods_and_bodies(void)
{
    HttpClass *c = open_class(0, 0, 0);
    static char big[3000];
    memset(big, 'b', sizeof big - 1);
    const char *hdrs[] = {"X-Test: hello", NULL};
    Got g[6] = {{0}};
    HttpRequest post = {.method = "POST", .url = U("/echo"), .headers = hdrs, .body = "{\"a\":1}", .len = 7};
    submit(c, &post, got_done, &g[0], NULL);
    HttpRequest bigpost = {.method = "POST", .url = U("/echo"), .body = big, .len = sizeof big - 1};
    submit(c, &bigpost, got_done, &g[1], NULL);
    HttpRequest put = {.method = "PUT", .url = U("/echo"), .body = "x", .len = 1};
    submit(c, &put, got_done, &g[2], NULL);
    HttpRequest del = {.method = "DELETE", .url = U("/echo")};
    submit(c, &del, got_done, &g[3], NULL);
    HttpRequest emptypost = {.method = "POST", .url = U("/echo")};
    submit(c, &emptypost, got_done, &g[4], NULL);
    HttpRequest head = {.method = "HEAD", .url = U("/big?cl=1")}; /* no body comes */
    submit(c, &head, got_done, &g[5], NULL);
    run(6, 10);
    for (int i = 0; i < 6; i++)
        T_EQ(g[i].outcome, HTTP_OK);
    T_CHECK(strcmp(g[0].body, "POST|hello|pickline/0|7|{\"a\":1}") == 0);
    T_EQ(g[1].len, strlen("POST|-|pickline/0|2999|") + 2999);
    T_CHECK(strcmp(g[2].body, "PUT|-|pickline/0|1|x") == 0);
    T_CHECK(strcmp(g[3].body, "DELETE|-|pickline/0|0|") == 0);
    T_CHECK(strcmp(g[4].body, "POST|-|pickline/0|0|") == 0);
    T_EQ(g[5].status, 200);
    T_EQ(g[5].len, 0);
    close_class(c);
}

static void permanent_404(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got g = {0}, l = {0};
    get(c, U("/404"), &g, NULL);
    get(c, U("/long404"), &l, NULL);
    run(2, 10);
    T_EQ(g.outcome, HTTP_PERMANENT);
    T_EQ(g.status, 404);
    T_CHECK(strcmp(g.error, "HTTP 404: no such thing ?? end") == 0);
    T_CHECK(g.retry == 0);
    T_EQ(l.outcome, HTTP_PERMANENT);
    T_EQ(strlen(l.error), strlen("HTTP 404: ") + 200);
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.permanent, 2);
    close_class(c);
}

static void transient_statuses(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got a = {0}, b = {0}, d = {0}, e = {0};
    get(c, U("/500"), &a, NULL);
    get(c, U("/408"), &b, NULL);
    get(c, U("/429"), &d, NULL);
    get(c, U("/503date"), &e, NULL);
    run(4, 10);
    T_EQ(a.outcome, HTTP_TRANSIENT);
    T_EQ(a.status, 500);
    T_CHECK(strcmp(a.error, "HTTP 500: boom") == 0);
    T_EQ(b.outcome, HTTP_TRANSIENT);
    T_EQ(b.status, 408);
    T_CHECK(strcmp(b.error, "HTTP 408") == 0);
    T_EQ(d.outcome, HTTP_TRANSIENT);
    T_EQ(d.status, 429);
    T_CHECK(d.retry == 7);
    T_CHECK(strcmp(d.error, "HTTP 429: slow down") == 0);
    T_EQ(e.outcome, HTTP_TRANSIENT);
    T_EQ(e.status, 503);
    T_CHECK(e.retry >= 27 && e.retry <= 31);
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.transient, 4);
    close_class(c);
}

static void timeout(void)
{
    HttpClass *c = open_class(0, 0, 0.5);
    Got g = {0};
    double t0 = now_s();
    get(c, U("/sleep?ms=5000"), &g, NULL);
    run(1, 10);
    double dt = now_s() - t0;
    T_EQ(g.outcome, HTTP_TRANSIENT);
    T_CHECK(strcmp(g.error, "timeout after 0.5 s") == 0);
    T_CHECK(dt >= 0.45 && dt < 1.0);
    close_class(c);
}

static void refused(void)
{
    setup();
    int fd;
    unsigned port = listen_port(&fd);
    close(fd); /* nobody listens there now */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", port);
    HttpClass *c = klass(0, 0, 0);
    Got g = {0};
    get(c, url, &g, NULL);
    run(1, 10);
    T_EQ(g.outcome, HTTP_TRANSIENT);
    T_EQ(g.status, 0);
    T_CHECK(strncmp(g.error, "connection refused", 18) == 0);
    close_class(c);
}

static void reset(void)
{
    setup();
    unsigned port = listen_port(&rst_fd);
    T_OK(pthread_create(&rst_th, NULL, rst_main, NULL));
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", port);
    HttpClass *c = klass(0, 0, 0);
    Got g = {0};
    get(c, url, &g, NULL);
    run(1, 10);
    T_EQ(g.outcome, HTTP_TRANSIENT);
    T_EQ(g.status, 0);
    T_CHECK(strncmp(g.error, "connection reset", 16) == 0);
    shutdown(rst_fd, SHUT_RDWR);
    pthread_join(rst_th, NULL);
    close(rst_fd);
    close_class(c);
}

static void closed_without_answer(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got g = {0};
    get(c, U("/close"), &g, NULL);
    run(1, 10);
    T_EQ(g.outcome, HTTP_TRANSIENT);
    T_EQ(g.status, 0);
    T_CHECK(strncmp(g.error, "connection closed without a response", 36) == 0);
    close_class(c);
}

static void dns_failure(void)
{
    HttpClass *c = open_class(0, 0, 5);
    Got g = {0};
    get(c, "http://pickline-test.invalid/x", &g, NULL);
    run(1, 15);
    T_EQ(g.outcome, HTTP_TRANSIENT);
    T_CHECK(strncmp(g.error, "cannot resolve host", 19) == 0 || strncmp(g.error, "timeout", 7) == 0);
    close_class(c);
}

static void bad_urls(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got a = {0}, b = {0};
    get(c, "ftp://127.0.0.1/x", &a, NULL);
    get(c, "http://[::1/x", &b, NULL);
    T_EQ(a.n + b.n, 0);
    run(2, 10);
    T_EQ(a.outcome, HTTP_PERMANENT);
    T_CHECK(strncmp(a.error, "bad URL", 7) == 0);
    T_EQ(b.outcome, HTTP_PERMANENT);
    T_CHECK(strncmp(b.error, "bad URL", 7) == 0);
    close_class(c);
}

/* A CR or LF in a URL or a header (built at run time: a server's next-page
 * URL, a header echoing an answer) is refused before anything is sent: it
 * would end the line and start a header of its own. A tab in a header
 * value is fine (HTTP allows it). */
static void injection_refused(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got g[4] = {{0}};
    const char *inject[] = {"X-Test: hello\r\nX-Injected: 1", NULL};
    const char *lf[] = {"X-Test: a\nb", NULL};
    const char *tab[] = {"X-Test: a\tb", NULL};
    HttpRequest r0 = {.method = "POST", .url = U("/echo"), .headers = inject};
    HttpRequest r1 = {.method = "POST", .url = U("/echo"), .headers = lf};
    HttpRequest r2 = {.method = "GET", .url = U("/ok\r\nX-Injected: 1")};
    HttpRequest r3 = {.method = "POST", .url = U("/echo"), .headers = tab};
    submit(c, &r0, got_done, &g[0], NULL);
    submit(c, &r1, got_done, &g[1], NULL);
    submit(c, &r2, got_done, &g[2], NULL);
    submit(c, &r3, got_done, &g[3], NULL);
    run(4, 10);
    T_EQ(g[0].outcome, HTTP_PERMANENT);
    T_EQ(g[0].status, 0);
    if (!strstr(g[0].error, "bad header: a control character (0x0D) at byte 14,") ||
        !strstr(g[0].error, "X-Test: hello\\r\\nX-Injected: 1"))
        t_fail(__FILE__, __LINE__, "error: %s", g[0].error);
    T_EQ(g[1].outcome, HTTP_PERMANENT);
    T_CHECK(strncmp(g[1].error, "bad header: a control character (0x0A)", 38) == 0);
    T_EQ(g[2].outcome, HTTP_PERMANENT);
    T_EQ(g[2].status, 0);
    T_CHECK(strncmp(g[2].error, "bad URL: a control character (0x0D)", 35) == 0);
    T_EQ(g[3].outcome, HTTP_OK);
    T_CHECK(strcmp(g[3].body, "POST|a\tb|pickline/0|0|") == 0);
    close_class(c);
}

/* A chain: each done starts the next request (100 in a row). */
typedef struct Chain {
    HttpClass *c;
    int left, ok;
} Chain;

static void chain_done(void *arg, const HttpResult *r)
{
    Chain *ch = arg;
    T_CHECK(!in_request);
    ch->ok += r->outcome == HTTP_OK && strcmp(r->body, "{\"ok\":true}") == 0;
    if (--ch->left > 0) {
        HttpRequest rq = {.method = "GET", .url = U("/ok")};
        submit(ch->c, &rq, chain_done, ch, NULL);
    } else {
        ev_break(L, EVBREAK_ALL);
    }
}

static void keepalive_reuse(void)
{
    setup();
    Chain ch = {.c = klass(0, 0, 0), .left = 100};
    HttpRequest rq = {.method = "GET", .url = U("/ok")};
    submit(ch.c, &rq, chain_done, &ch, NULL);
    ev_timer guard;
    ev_timer_init(&guard, on_guard, 20, 0.);
    ev_timer_start(L, &guard);
    ev_run(L, 0);
    ev_timer_stop(L, &guard);
    T_EQ(ch.left, 0);
    T_EQ(ch.ok, 100);
    T_CHECK(fx.conns <= 2);
    http_class_free(ch.c);
    teardown();
}

static HttpClass *stats_class;
static int max_in_flight;

static void conc_done(void *arg, const HttpResult *r)
{
    HttpStats st;
    http_class_stats(stats_class, &st);
    if ((int)st.in_flight > max_in_flight)
        max_in_flight = (int)st.in_flight;
    got_done(arg, r);
}

static void concurrency_limit(void)
{
    setup();
    HttpClass *c = stats_class = klass(3, 0, 0);
    Got g[20] = {{0}};
    for (int i = 0; i < 20; i++) {
        HttpRequest rq = {.method = "GET", .url = U("/sleep?ms=30")};
        submit(c, &rq, conc_done, &g[i], NULL);
    }
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.in_flight, 3);
    T_EQ(st.waiting, 17);
    run(20, 20);
    for (int i = 0; i < 20; i++)
        T_EQ(g[i].outcome, HTTP_OK);
    T_CHECK(fx.max_active <= 3);
    T_CHECK(fx.max_active >= 1);
    T_CHECK(max_in_flight <= 3);
    http_class_stats(c, &st);
    T_EQ(st.started, 20);
    close_idle(c);
}

static void rate_limit(void)
{
    HttpClass *c = open_class(8, 50, 0);
    Got g[25] = {{0}};
    double t0 = now_s();
    for (int i = 0; i < 25; i++)
        get(c, U("/ok"), &g[i], NULL);
    run(25, 20);
    double dt = now_s() - t0;
    for (int i = 0; i < 25; i++)
        T_EQ(g[i].outcome, HTTP_OK);
    T_CHECK(dt >= 0.45);
    close_class(c);
}

static void cancel(void)
{
    HttpClass *c = open_class(1, 0, 0);
    Got a = {0}, b = {0}, d = {0};
    HttpReq *ra, *rb, *rd;
    get(c, U("/sleep?ms=3000"), &a, &ra);
    get(c, U("/ok"), &b, &rb);
    get(c, U("/ok"), &d, &rd);
    nap(0.1); /* a is in the server's handler now */
    T_EQ(fx.active, 1);
    http_cancel(rb); /* waiting */
    T_EQ(b.n, 1);
    T_EQ(b.outcome, HTTP_CANCELED);
    T_CHECK(strcmp(b.error, "canceled") == 0);
    http_cancel(ra); /* running */
    T_EQ(a.n, 1);
    T_EQ(a.outcome, HTTP_CANCELED);
    T_EQ(a.status, 0);
    run(3, 10); /* d runs now that a's slot is free */
    T_EQ(d.n, 1);
    T_EQ(d.outcome, HTTP_OK);
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.canceled, 2);
    T_EQ(st.ok, 1);
    close_idle(c);
}

/* A done that cancels another request: that done runs nested, once. */
static HttpReq *victim;

static void canceler_done(void *arg, const HttpResult *r)
{
    got_done(arg, r);
    http_cancel(victim);
}

static void cancel_from_done(void)
{
    HttpClass *c = open_class(4, 0, 0);
    Got a = {0}, b = {0};
    HttpRequest rq = {.method = "GET", .url = U("/ok")};
    submit(c, &rq, canceler_done, &a, NULL);
    get(c, U("/sleep?ms=3000"), &b, &victim);
    run(2, 10);
    T_EQ(a.n, 1);
    T_EQ(a.outcome, HTTP_OK);
    T_EQ(b.n, 1);
    T_EQ(b.outcome, HTTP_CANCELED);
    nap(0.05);
    T_EQ(a.n + b.n, 2);
    close_class(c);
}

static void class_free_cancels(void)
{
    HttpClass *c = open_class(5, 0, 0);
    Got g[10] = {{0}};
    for (int i = 0; i < 10; i++)
        get(c, U("/sleep?ms=3000"), &g[i], NULL);
    nap(0.1);
    T_EQ(ndone, 0);
    http_class_free(c);
    T_EQ(ndone, 10);
    for (int i = 0; i < 10; i++) {
        T_EQ(g[i].n, 1);
        T_EQ(g[i].outcome, HTTP_CANCELED);
    }
    teardown();
}

static void close_cancels(void)
{
    HttpClass *c = open_class(5, 0, 0);
    Got g[10] = {{0}}, bad = {0};
    for (int i = 0; i < 10; i++)
        get(c, U("/sleep?ms=3000"), &g[i], NULL);
    get(c, "gopher://x/", &bad, NULL); /* finished late, not yet delivered */
    nap(0.1);
    get(c, "gopher://y/", &bad, NULL);
    T_EQ(ndone, 1);
    http_close(H); /* frees c too */
    H = NULL;
    T_EQ(ndone, 12);
    for (int i = 0; i < 10; i++) {
        T_EQ(g[i].n, 1);
        T_EQ(g[i].outcome, HTTP_CANCELED);
    }
    T_EQ(bad.n, 2);
    T_EQ(bad.outcome, HTTP_CANCELED);
    teardown();
}

/* A done that frees its own class: the others are canceled (nested), and
 * the class goes away when the outer done returns. */
static HttpClass *doomed;

static void suicide_done(void *arg, const HttpResult *r)
{
    got_done(arg, r);
    http_class_free(doomed);
    doomed = NULL;
}

static void class_free_from_done(void)
{
    setup();
    doomed = klass(2, 0, 0);
    Got a = {0}, g[5] = {{0}};
    HttpRequest rq = {.method = "GET", .url = U("/ok")};
    submit(doomed, &rq, suicide_done, &a, NULL);
    for (int i = 0; i < 5; i++)
        get(doomed, U("/sleep?ms=3000"), &g[i], NULL);
    run(6, 10);
    T_EQ(a.outcome, HTTP_OK);
    for (int i = 0; i < 5; i++) {
        T_EQ(g[i].n, 1);
        T_EQ(g[i].outcome, HTTP_CANCELED);
    }
    T_CHECK(doomed == NULL);
    teardown();
}

static void body_cap(void)
{
    HttpClass *c = open_class(0, 0, 0);
    Got a = {0}, b = {0};
    get(c, U("/big"), &a, NULL);
    get(c, U("/big?cl=1"), &b, NULL);
    run(2, 30);
    T_EQ(a.outcome, HTTP_TRANSIENT);
    T_CHECK(strcmp(a.error, "response over 64 MiB") == 0);
    T_EQ(b.outcome, HTTP_TRANSIENT);
    T_CHECK(strcmp(b.error, "response over 64 MiB") == 0);
    Got c2 = {0};
    get(c, U("/ok"), &c2, NULL); /* the recycled request is clean */
    run(3, 10);
    T_EQ(c2.outcome, HTTP_OK);
    T_CHECK(strcmp(c2.body, "{\"ok\":true}") == 0);
    close_class(c);
}

static int burst_ok;

static void burst_done(void *arg, const HttpResult *r)
{
    (void)arg;
    T_CHECK(!in_request);
    burst_ok += r->outcome == HTTP_OK && r->len == 11 && strcmp(r->body, "{\"ok\":true}") == 0;
    if (++ndone >= want)
        ev_break(L, EVBREAK_ALL);
}

static void burst_1000(void)
{
    HttpClass *c = open_class(0, 0, 0);
    double t0 = now_s();
    for (int i = 0; i < 1000; i++) {
        HttpRequest rq = {.method = "GET", .url = U("/ok")};
        submit(c, &rq, burst_done, NULL, NULL);
    }
    run(1000, 60);
    double dt = now_s() - t0;
    T_EQ(burst_ok, 1000);
    fprintf(stderr, "burst_1000: %.0f requests/s, %d connections\n", 1000 / dt, (int)fx.conns);
    HttpStats st;
    http_class_stats(c, &st);
    T_EQ(st.ok, 1000);
    close_class(c);
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(ok_json),
        T_CASE(methods_and_bodies),
        T_CASE(permanent_404),
        T_CASE(transient_statuses),
        T_CASE(timeout),
        T_CASE(refused),
        T_CASE(reset),
        T_CASE(closed_without_answer),
        T_CASE(dns_failure),
        T_CASE(bad_urls),
        T_CASE(injection_refused),
        T_CASE(keepalive_reuse),
        T_CASE(concurrency_limit),
        T_CASE(rate_limit),
        T_CASE(cancel),
        T_CASE(cancel_from_done),
        T_CASE(class_free_cancels),
        T_CASE(close_cancels),
        T_CASE(class_free_from_done),
        T_CASE(body_cap),
        T_CASE(burst_1000),
        {NULL, NULL},
    };
    return t_main(argc, argv, "http", cases);
}
