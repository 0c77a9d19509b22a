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

/* ------------------------------------------------ what may be sent at all
 *
 * The pipeline file's checks (pipeline.c) and http_request use these, so a
 * URL or header that `pickline check` accepts is one that every parser on
 * the way reads the same, and one that nothing at run time can turn into a
 * second request line or header. Each returns 0, or PL_EINVAL with why set
 * to one line that says what is wrong and how to write it instead ("has a
 * line break (CR or LF) at byte 11; ..."), without the key's name. */

/* http_url_check checks an absolute http:// or https:// URL (the scheme in
 * any case): no control characters (CR/LF would end the request line), no
 * spaces, backslashes, non-ASCII bytes, #fragments or broken %-escapes; a
 * host that is a valid name, a 4-part decimal IPv4 address or a [bracketed]
 * IPv6 address (see http_host_check); an optional port from 1 to 65535
 * without leading zeros; no user:password@. With tmpl set, {field}s may
 * stand in the path and the query (never in the scheme, host or port);
 * without it, { and } are refused. */
int http_url_check(const char *url, int tmpl, char *why, size_t n);

/* http_url_path_end returns the offset in url (checked by http_url_check)
 * where its path ends: the first ? or # after the host, or its length. */
size_t http_url_path_end(const char *url);

/* http_host_check checks the host[len] of a URL or a connection string: a
 * DNS name (labels of 1 to 63 letters, digits and -, not starting or ending
 * with -, at most 253 bytes, one trailing dot allowed), or, when its last
 * label is a number (as in 999.1.1.1, 127.1 or 0x7f.1: parsers read such a
 * host as an IPv4 address in differing ways), exactly 4 decimal parts from
 * 0 to 255 without leading zeros. IPv6 is http_url_check's (in brackets). */
int http_host_check(const char *host, size_t len, char *why, size_t n);

/* http_port_check checks port[len]: 1 to 65535, digits only, no leading 0. */
int http_port_check(const char *port, size_t len, char *why, size_t n);

/* http_header_check checks a header a stage sends: name a token (letters,
 * digits and !#$%&'*+-.^_`|~), not Content-Length or Transfer-Encoding
 * (curl frames the body); value one line: no CR, LF, NUL or other control
 * character but the tab. */
int http_header_check(const char *name, const char *value, char *why, size_t n);

/* http_printable writes s[0..len) into dst (cap >= 8 bytes) for a message
 * about a URL, a header or a value: printable ASCII as it is, anything else
 * as \r, \n, \t or \xNN (so a message stays one line), cut after 64 bytes
 * of s with "...". Returns dst. */
const char *http_printable(char *dst, size_t cap, const char *s, size_t len);

#endif
