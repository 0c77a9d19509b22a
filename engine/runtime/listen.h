/* listen.h: the engine's HTTP listener on its libev loop (libmicrohttpd).
 *
 * libmicrohttpd runs without threads of its own: its epoll descriptor is
 * watched by an ev_io and its timeouts by an ev_timer, so handlers run on
 * the loop thread like everything else. A handler gets the whole request
 * (body read, size-limited) and answers it exactly once, at once or later
 * (after a commit): the connection is suspended until then.
 *
 * Built in: a bearer token (401), the body size limit (413), unknown paths
 * (404) and methods (405), requests whose framing is ambiguous (400: two
 * Content-Lengths, Transfer-Encoding with Content-Length, HTTP/1.1 without
 * Host, a malformed header name ...; 501: a transfer coding other than
 * chunked), each with a JSON error body; loopback by default; limits on
 * connections (in all and per client address) and on the time a request may
 * take to arrive; TLS (GnuTLS through libmicrohttpd). */
#ifndef PL_LISTEN_H
#define PL_LISTEN_H

#include "http_check.h"

#include <ev.h>
#include <stddef.h>

typedef struct Listener Listener;
typedef struct Exchange Exchange;

/* LISTEN_TOKEN_MIN is the shortest bearer token accepted. */
#define LISTEN_TOKEN_MIN HTTP_TOKEN_MIN

typedef struct ListenOpts {
    const char *address;   /* NULL: "127.0.0.1" */
    unsigned port;         /* 0: any free port (see listener_port) */
    const char *token;     /* bearer token required on every route not public; NULL or "": none */
    int insecure;          /* serve a non-loopback address without a token (logged as a warning) */
    size_t max_body;       /* 0: 1 MiB */
    unsigned max_conns;    /* connections open at once; 0: 1000 (see listener_open) */
    unsigned max_conns_per_ip; /* from one client address (IPv6: one /64); 0: 128 */
    unsigned timeout_s;    /* a silent or idle kept-alive connection is closed after this; 0: 30 */
    unsigned request_timeout_s; /* a whole request (headers and body) must arrive within this; 0: 10 */
    const char *tls_cert;  /* PEM text (not a file name) of the certificate chain; with tls_key: HTTPS */
    const char *tls_key;   /* PEM text of its private key */
    unsigned log_every_s;  /* refused and closed connections: one summary line at most this often; 0: 10 */
} ListenOpts;

/* listener_open binds and starts serving on loop. Returns 0 and *out, or an
 * errno value: EADDRINUSE, EADDRNOTAVAIL (an address that does not
 * resolve), EINVAL (a token shorter than LISTEN_TOKEN_MIN, a certificate
 * without its key or the reverse, a port over 65535), EACCES (an address
 * beyond loopback without a token, and not insecure), ENOTSUP (TLS asked of
 * a libmicrohttpd built without it), EPROTO (libmicrohttpd refused the
 * certificate or key; the reason is logged).
 *
 * Admission: a client over max_conns_per_ip is answered 429 and closed
 * (after its own oldest idle kept-alive connection, if it has one, made
 * room). At max_conns a new client takes the place of the connection that
 * waited longest without a complete request (idle kept-alive connections
 * first); when every connection holds a complete request, new ones wait in
 * the kernel's backlog. A request not complete within request_timeout_s of
 * its connection's accept (or of its request line, on a kept-alive
 * connection) is closed, however slowly its bytes keep coming. */
int listener_open(struct ev_loop *loop, const ListenOpts *o, Listener **out);

/* listener_close stops accepting, answers suspended exchanges with 503, and
 * frees l; NULL is a no-op. It waits up to a second for those answers to be
 * sent. Exchanges that handlers still hold are freed with l: a handler must
 * not respond to them afterwards. Not callable from a handler. */
void listener_close(Listener *l);

unsigned listener_port(const Listener *l);

/* A handler owns x until it calls exchange_respond. */
typedef void (*ListenHandler)(void *arg, Exchange *x);

/* listener_route sends requests whose path starts with prefix and whose
 * method is method (NULL: any) to fn. The longest matching prefix wins; when
 * none of its routes takes the method the answer is 405. public != 0 exempts
 * the route from the bearer token (/health). A route with the same method
 * and prefix as an earlier one replaces it. */
void listener_route(Listener *l, const char *method, const char *prefix, int public,
                    ListenHandler fn, void *arg);

/* The accessors are valid while the handler owns x; the strings live as
 * long as x. */
const char *exchange_method(const Exchange *x);
const char *exchange_path(const Exchange *x);   /* without the query string */
const char *exchange_header(const Exchange *x, const char *name);  /* NULL if absent */
const char *exchange_query(const Exchange *x, const char *key);    /* NULL if absent, "" if no value */
const char *exchange_body(const Exchange *x, size_t *len);         /* NUL-terminated */

/* exchange_respond answers x with status, content type (NULL: none) and body
 * (copied) and releases x. Callable any time from the loop thread, once. If
 * the client went away meanwhile, it only frees x. */
void exchange_respond(Exchange *x, unsigned status, const char *content_type,
                      const void *body, size_t len);

/* exchange_error answers with {"error": msg} (JSON-escaped) and status. */
void exchange_error(Exchange *x, unsigned status, const char *msg);

#endif
