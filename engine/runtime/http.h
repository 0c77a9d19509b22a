/* http.h: a non-blocking HTTP client on the engine's libev loop.
 *
 * One Http per loop drives libcurl's multi socket interface from ev_io and
 * ev_timer watchers: nothing here ever blocks the loop. Connections are
 * reused (keep-alive) across requests to the same host. Requests belong to
 * an HttpClass (one per stage) that bounds how many are in flight and how
 * fast they start per host; requests over either limit wait in FIFO order.
 *
 * There are no long retries here: a request is one attempt (curl may retry
 * a reused connection that the server closed). Its outcome is classified so
 * that the caller (a stage) can ack, bury, or release the job with a delay
 * in the durable queue, which is where a long backoff belongs (a lease must
 * not be held while waiting minutes for a Retry-After). */
#ifndef PL_HTTP_H
#define PL_HTTP_H

#include "http_check.h"

#include <ev.h>
#include <stddef.h>

typedef struct Http Http;
typedef struct HttpClass HttpClass;
typedef struct HttpReq HttpReq;

typedef struct HttpOpts {
    unsigned max_conns;      /* total open connections; 0: 64 */
    unsigned max_host_conns; /* per host; 0: 16 */
    const char *user_agent;  /* NULL: "pickline/0" */
} HttpOpts;

/* http_open creates the client on loop (not owned). Returns 0 and *out. */
int http_open(struct ev_loop *loop, const HttpOpts *o, Http **out);

/* http_close cancels every request still queued or in flight (their done
 * callbacks run with HTTP_CANCELED before it returns) and frees h; NULL is
 * a no-op. Free the classes before; any still open are freed here (as by
 * http_class_free) and their pointers are dangling afterwards. Not from
 * inside a done callback. */
void http_close(Http *h);

typedef struct HttpPolicy {
    unsigned concurrency;      /* requests in flight for the class; 0: 8 */
    double rate_per_s;         /* request starts per second per host, at least
                                * 1/rate apart (no bursts); 0: no limit */
    double connect_timeout_s;  /* 0: 5 */
    double timeout_s;          /* whole request; 0: 30 */
    int insecure;              /* 1 turns TLS verification off (never the default) */
} HttpPolicy;

/* http_class_new makes a class with policy p (copied). */
HttpClass *http_class_new(Http *h, const char *name, const HttpPolicy *p);
/* http_class_free cancels the class's requests (done runs) and frees it; NULL ok.
 * A done callback may free its own class: it goes when that done returns. */
void http_class_free(HttpClass *c);

enum {
    HTTP_OK = 0,      /* a 2xx (or 3xx not followed) response */
    HTTP_PERMANENT,   /* 4xx other than 408 and 429: retrying will not help */
    HTTP_TRANSIENT,   /* 5xx, 408, 429, timeout, refused, reset, DNS: retry later */
    HTTP_CANCELED     /* http_cancel, http_class_free or http_close */
};

typedef struct HttpResult {
    int outcome;
    long status;              /* HTTP status, 0 when no response */
    const char *body;         /* response body, NUL-terminated; valid during done */
    size_t len;
    double retry_after_s;     /* Retry-After of a 429/503 (seconds or HTTP date), else 0 */
    double elapsed_s;         /* since http_request (time waiting included) */
    char error[256];          /* for logs and bury reasons: "HTTP 404: <body excerpt>",
                               * "timeout after 30 s", "connection refused", ... */
} HttpResult;

/* http_result_header returns the value of response header name (case
 * insensitive), or NULL; valid during done. */
const char *http_result_header(const HttpResult *r, const char *name);

typedef void (*HttpDone)(void *arg, const HttpResult *r);

typedef struct HttpRequest {
    const char *method;            /* "GET", "POST", ... */
    const char *url;
    const char *const *headers;    /* NULL-terminated "Name: value" list, or NULL */
    const void *body;              /* copied; NULL for none */
    size_t len;
} HttpRequest;

/* http_request queues rq (everything copied) in class c. done(arg, result)
 * runs exactly once, on the loop thread, never from inside http_request.
 * *out (may be NULL) is a handle for http_cancel, valid until done runs.
 * A URL that is not http(s), or a URL or header line with a control
 * character in it (a CR or LF would start a header of its own; a header
 * may hold a tab) is never sent: done gets HTTP_PERMANENT with "bad URL: "
 * or "bad header: " and the reason. */
void http_request(HttpClass *c, const HttpRequest *rq, HttpDone done, void *arg, HttpReq **out);

/* http_cancel stops a queued or running request; its done runs (now) with
 * HTTP_CANCELED. */
void http_cancel(HttpReq *r);

typedef struct HttpStats {
    unsigned long long started, ok, permanent, transient, canceled;
    unsigned in_flight, waiting;
} HttpStats;
void http_class_stats(const HttpClass *c, HttpStats *out);

#endif
