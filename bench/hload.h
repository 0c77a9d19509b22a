/* hload.h: an HTTP/1.1 load client for the bench programs: many keep-alive
 * connections over loopback, each sending its next POST as soon as the
 * answer to its last one arrived (closed loop, like wrk), until a given
 * list of request bodies is used up. Every body is sent exactly once.
 *
 * One thread drives all connections (epoll); the answer's status is
 * checked (2xx), its body is read and dropped. */
#ifndef PL_BENCH_HLOAD_H
#define PL_BENCH_HLOAD_H

#include <stddef.h>

typedef struct HloadOpts {
    unsigned port;           /* 127.0.0.1:port */
    const char *path;        /* "/queues/in/jobs" */
    const char *ctype;       /* Content-Type: "application/json" */
    const char *token;       /* bearer token or NULL */
    unsigned conns;          /* connections at once */
    /* the requests: n bodies, body i at buf + off[i], off[i+1] - off[i] bytes */
    const char *buf;
    const size_t *off;
    size_t n;
    size_t stride;           /* send requests 0, stride, 2*stride, ... (0: 1) */
    /* key_prefix: when set, request i carries "Idempotency-Key: PREFIX-i" */
    const char *key_prefix;
} HloadOpts;

typedef struct HloadResult {
    size_t sent, ok;         /* requests sent; answered 2xx */
    size_t non2xx;           /* answered otherwise (first one in err) */
    double secs;             /* from the first connect to the last answer */
    double lat_p50_ms, lat_p99_ms, lat_max_ms;
    char err[300];           /* the first failure (an answer, a socket error) */
} HloadResult;

/* hload_run sends every request of o and fills r. Returns 0 when every
 * request got a 2xx answer, -1 otherwise (r->err says why). */
int hload_run(const HloadOpts *o, HloadResult *r);

#endif
