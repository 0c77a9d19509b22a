/* listen.h: the engine's HTTP listener on its libev loop (libmicrohttpd).
 *
 * libmicrohttpd runs without threads of its own: its epoll descriptor is
 * watched by an ev_io and its timeouts by an ev_timer, so handlers run on
 * the loop thread like everything else. A handler gets the whole request
 * (body read, size-limited) and answers it exactly once, at once or later
 * (after a commit): the connection is suspended until then.
 *
 * Built in: a bearer token (401), the body size limit (413), unknown paths
 * (404) and methods (405), each with a JSON error body; loopback by default. */
#ifndef PL_LISTEN_H
#define PL_LISTEN_H

#include <ev.h>
#include <stddef.h>

typedef struct Listener Listener;
typedef struct Exchange Exchange;

typedef struct ListenOpts {
    const char *address;   /* NULL: "127.0.0.1" */
    unsigned port;         /* 0: any free port (see listener_port) */
    const char *token;     /* bearer token required on every route not public; NULL or "": none */
    size_t max_body;       /* 0: 1 MiB */
    unsigned max_conns;    /* connections open at once, more wait in the backlog; 0: 1000 */
    unsigned timeout_s;    /* an idle connection is closed after this; 0: 30 (suspended ones wait) */
} ListenOpts;

/* listener_open binds and starts serving on loop. Returns 0 and *out, or an
 * errno value (EADDRINUSE, EADDRNOTAVAIL for an address that does not
 * resolve, ...). */
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
