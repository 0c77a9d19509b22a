/* listen_int.h: what listen.c (libmicrohttpd on the loop, connections and
 * their admission, open and close) and exchange.c (one request: framing,
 * routing, the token, the body, the answer) share. Private to
 * engine/runtime; listen.h is the listener's API. */
#ifndef PL_LISTEN_INT_H
#define PL_LISTEN_INT_H

#include "listen.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <stdint.h>

#define LISTEN_MAX_BODY (1u << 20)
#define LISTEN_MAX_CONNS 1000
#define LISTEN_PER_IP 128
#define LISTEN_TIMEOUT_S 30
#define LISTEN_REQUEST_S 10
#define LISTEN_LOG_EVERY_S 10
#define LISTEN_CLOSE_WAIT_MS 1000
#define ACCEPT_BATCH 64      /* accepts per wakeup; also libmicrohttpd's slack over max_conns */
#define BUCKETS 256          /* client addresses hashed */
#define ACCEPT_PAUSE_S 0.1   /* after EMFILE and the like */

typedef struct Route {
    char *method; /* NULL: any */
    char *prefix;
    size_t plen;
    int public;
    ListenHandler fn;
    void *arg;
} Route;

typedef struct Client Client;

typedef struct CList {
    Client *head, *tail;
} CList;

enum { C_READING, C_BUSY, C_IDLE, C_EVICTED };

/* Client: one connection (see "Connections" above). */
struct Client {
    struct MHD_Connection *c; /* set when libmicrohttpd takes it */
    int fd;                   /* libmicrohttpd's until it reports the close */
    unsigned phase;
    uint64_t deadline;        /* ms of pl_mono_ns: READING and IDLE */
    Client *prev, *next;      /* in l->reading or l->idle */
    Client *hnext;            /* in l->bucket[], unless evicted */
    Client *fnext;            /* in l->fresh */
    int fresh;                /* in l->fresh */
    unsigned char key[9];     /* family byte + IPv4 address or IPv6 /64 */
    unsigned char klen;
    char ip[INET6_ADDRSTRLEN];
};

/* What was refused or closed since the last log line (see noted). */
typedef struct Tally {
    unsigned per_ip, evicted, expired, errors, mhd;
    char ip[INET6_ADDRSTRLEN]; /* last address refused */
    char err[64];              /* last accept error */
    char msg[200];             /* last message of libmicrohttpd */
} Tally;

struct Listener {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    ev_io io;          /* libmicrohttpd's epoll descriptor */
    ev_timer tm;       /* libmicrohttpd's next timeout */
    ev_io acc;         /* our listen socket */
    ev_timer pause;    /* accepting again after EMFILE and the like */
    ev_timer dl;       /* the earliest deadline of reading and idle */
    uint64_t dl_at;    /* when l->dl fires (ms of pl_mono_ns) */
    ev_timer logt;     /* the next summary line */
    int lfd;           /* listen socket */
    unsigned port;
    int tls;
    char *token;       /* NULL: no token */
    size_t toklen;
    size_t max_body;
    unsigned max_conns, per_ip;
    uint64_t request_ms, idle_ms;
    double log_every;
    unsigned live;     /* connections not evicted */
    unsigned evicting; /* evicted, not cleaned up by libmicrohttpd yet */
    int accept_waits;  /* l->acc stopped: no room */
    CList reading, idle;
    Client *bucket[BUCKETS];
    Client *adding;    /* handed to MHD_add_connection, not started yet */
    Client *fresh;     /* turned idle during this MHD_run (see run) */
    Tally tally;
    int quiet;         /* log libmicrohttpd's messages through the tally */
    Route *routes;
    size_t nroutes, cap;
    Exchange *held;    /* exchanges a handler holds (doubly linked) */
    int running;       /* inside MHD_run */
    int shutdown;      /* listener_close runs: no new request reaches a handler */
    unsigned closing;  /* 503s from listener_close not yet sent */
};

struct Exchange {
    Listener *l;
    struct MHD_Connection *c; /* NULL once gone */
    Client *cl;
    Exchange *prev, *next;    /* in l->held while held */
    size_t route;              /* index in l->routes (which may move) */
    char *body;
    size_t len, cap;
    struct MHD_Response *resp; /* answer waiting for the access handler */
    unsigned status;           /* of resp */
    unsigned refusal;          /* 0, or the built-in answer due (400, 401, 404, 405, 413, 501) */
    char *why;                 /* the message of a 400 or 501 */
    size_t skipped;            /* body bytes seen, once over max_body */
    unsigned held : 1;        /* a handler owns x */
    unsigned in_handler : 1;  /* inside the route's handler */
    unsigned suspended : 1;
    unsigned to_suspend : 1;  /* held after the handler returned: suspend at the next call */
    unsigned answered : 1;    /* a response is queued or waiting in resp */
    unsigned gone : 1;        /* the request completed while held */
    unsigned closing : 1;     /* answered by listener_close */
    char *path;               /* points into names */
    char names[];             /* method NUL path NUL */
};

/* listen.c */

/* listen_phase moves cl to phase p (C_*); READING and IDLE get their
 * deadline from now. NULL or an evicted cl: nothing. */
void listen_phase(Listener *l, Client *cl, unsigned p);
/* listen_kick makes the loop run libmicrohttpd soon. */
void listen_kick(Listener *l);
/* listen_client_of returns the Client of libmicrohttpd's connection c. */
Client *listen_client_of(struct MHD_Connection *c);
/* listen_accept_again restarts accepting once there is room. */
void listen_accept_again(Listener *l);

/* exchange.c */

/* listen_printable copies s into buf (size bytes) for a log line, control
 * and non-ASCII bytes as \xNN; returns buf. */
const char *listen_printable(const char *s, char *buf, size_t size);
/* exchange_access and exchange_completed are libmicrohttpd's access handler
 * and its request-completed callback (cls: the Listener). */
enum MHD_Result exchange_access(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *len, void **ccls);
void exchange_completed(void *cls, struct MHD_Connection *c, void **ccls,
                        enum MHD_RequestTerminationCode why);
/* exchange_close_held answers every exchange a handler still holds with 503
 * and takes it back from its handler (listener_close). */
void exchange_close_held(Listener *l);
/* listen_routes_free frees l's routes. */
void listen_routes_free(Listener *l);

#endif
