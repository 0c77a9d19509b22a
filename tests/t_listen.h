/* t_listen.h: what test_listen.c and test_listen_strict.c share (t_listen.c):
 * the listener (engine/runtime/listen.c, exchange.c) over real loopback
 * sockets. The listener runs on an ev loop in the test's main thread; the
 * client runs in a thread of its own and speaks raw HTTP/1.1 with blocking
 * sockets, so every byte on the wire is the test's choice (pipelining,
 * chunked bodies, Expect, disconnects). */
#ifndef T_LISTEN_H
#define T_LISTEN_H

#include "listen.h"

#include <stdatomic.h>
#include <stddef.h>

/* ---------------------------------------------------------------- fixture */

/* The loop, its listener and the listener's port (set by tl_start). */
extern struct ev_loop *tl_loop;
extern Listener *tl_lis;
extern unsigned tl_port;

/* tl_calls counts the handlers' calls; tl_held the requests tl_h_later (or
 * a test's own handler) holds; tl_answered tl_h_later's answers;
 * tl_echo_nul_ok turns 0 if tl_h_echo ever saw a body not NUL-terminated. */
extern atomic_int tl_calls, tl_held, tl_answered;
extern int tl_echo_nul_ok;

/* tl_loop_new makes tl_loop, with the wake-up the client thread uses on it
 * (tl_start does this, then opens the listener). */
void tl_loop_new(void);

/* tl_start opens tl_lis with options o (NULL: the defaults) on a new loop. */
void tl_start(const ListenOpts *o);

/* tl_run_client runs fn in a client thread while the loop serves. */
void tl_run_client(void (*fn)(void));

/* tl_finish closes the listener and destroys the loop. */
void tl_finish(void);

/* tl_ask_close has the loop close the listener (from the client thread). */
void tl_ask_close(void);

void tl_sleep_ms(int ms);

/* ---------------------------------------------------------------- client */

typedef struct TlConn {
    int fd;
    char *buf; /* received, not yet consumed */
    size_t n, cap;
} TlConn;

typedef struct TlResp {
    int status;
    char head[4096];
    char *body;
    size_t len;
} TlResp;

/* tl_conn_open connects c to tl_port on 127.0.0.1 (no test waits longer
 * than its 10 s receive timeout); tl_conn_close closes and frees it. */
void tl_conn_open(TlConn *c);
void tl_conn_close(TlConn *c);

void tl_send_all(TlConn *c, const void *p, size_t n);
void tl_send_str(TlConn *c, const char *s);

/* tl_read_resp reads one response (Content-Length framed, as the listener
 * always answers); returns 0 if the connection ended first. tl_read_resp100
 * is tl_read_resp after an optional "100 Continue". tl_resp_free frees r's
 * body. */
int tl_read_resp(TlConn *c, TlResp *r);
int tl_read_resp100(TlConn *c, TlResp *r);
void tl_resp_free(TlResp *r);

/* tl_header returns the value of response header name (copied into a
 * static buffer), or NULL. */
const char *tl_header(const TlResp *r, const char *name);

/* tl_send_req sends a request (Host: t, then hdrs, then a Content-Length
 * and the body when body is not NULL). */
void tl_send_req(TlConn *c, const char *method, const char *target, const char *hdrs,
                 const void *body, size_t len);

/* tl_rq sends one request on c and reads its answer into r. */
void tl_rq(TlConn *c, const char *method, const char *target, const char *hdrs,
           const void *body, size_t len, TlResp *r);

/* tl_get is tl_rq on a fresh connection, for one-shot checks. */
void tl_get(const char *method, const char *target, const char *hdrs, TlResp *r);

/* tl_body_is says whether r's body is s (and prints it when not). */
int tl_body_is(const TlResp *r, const char *s);

/* ---------------------------------------------------------------- handlers */

/* tl_h_name answers 200 with arg (a string). */
void tl_h_name(void *arg, Exchange *x);

/* tl_h_echo answers 200 with the request's body. */
void tl_h_echo(void *arg, Exchange *x);

/* tl_h_later answers ?id after ?ms (default 50) milliseconds. */
void tl_h_later(void *arg, Exchange *x);

/* tl_wait_held waits until tl_held is n (the test fails if it is not). */
void tl_wait_held(int n);

#endif
