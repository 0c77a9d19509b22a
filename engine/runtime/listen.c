/* listen.c: the engine's HTTP listener (see listen.h for the contract).
 *
 * libmicrohttpd runs in "external" epoll mode: it owns an epoll descriptor
 * (connections, its inter-thread channel) and we watch that one descriptor
 * with l->io and its next timeout with l->tm; both call MHD_run and re-arm
 * the timer from MHD_get_timeout. No thread of ours or libmicrohttpd's ever
 * runs a handler: everything happens on the loop.
 *
 * Connections. The listen socket is ours, watched by l->acc: we accept and
 * hand each connection to libmicrohttpd (MHD_add_connection), so admission
 * is our policy, not its first-come limit:
 *  - per client address (an IPv6 client counts by its /64) at most
 *    per_ip connections: one more closes that address's own oldest idle
 *    kept-alive connection, or, when it has none, is answered 429 and closed;
 *  - at most max_conns in all: at the limit a new client takes the place of
 *    the connection that has waited longest without a complete request
 *    (idle kept-alive ones first, then the oldest unfinished request), so
 *    clients that hold connections open cannot lock others out; when every
 *    connection holds a complete request (ours to answer), new clients wait
 *    in the kernel's backlog;
 *  - a request must be complete (headers and body) within request_ms of its
 *    connection's accept, or of its request line on a kept-alive connection,
 *    however slowly its bytes keep coming (libmicrohttpd's own timeout only
 *    counts silence); a kept-alive connection waits idle_ms for its next
 *    request line.
 * A Client records a connection: its phase, its deadline, its address. The
 * reading and idle lists each hold one phase in the order of their
 * deadlines (each phase has one fixed length), so one timer (l->dl) at the
 * earliest deadline serves all, re-armed only when it fires. A connection
 * is closed by shutdown(2) on its socket ("evicted"): libmicrohttpd sees the
 * hang-up at its next run and cleans up as for any client that left, and
 * libmicrohttpd's own limit sits a little above ours for the evicted ones
 * not cleaned up yet. Refused and evicted connections are counted, not
 * logged one by one: the first of a quiet spell is logged, then one summary
 * line per log interval (l->logt); so are libmicrohttpd's own messages.
 *
 * An Exchange is one request. It is created at the first call of the access
 * handler (headers read), where framing, routing, the token and a declared
 * Content-Length over the limit are settled before any body is read; an
 * early refusal is queued there and libmicrohttpd skips the body. Otherwise
 * the body accumulates in x->body and the last call hands x to the route.
 * A handler that does not answer at once leaves the connection waiting;
 * exchange_respond stores the response, resumes the connection, and the
 * access handler, called again by libmicrohttpd, queues it.
 *
 * Strict framing. Ambiguous framing is how requests get smuggled past a
 * proxy, so the first call refuses, with a JSON 400 and the connection
 * closed: two Content-Lengths (even equal), Transfer-Encoding with
 * Content-Length, two Transfer-Encodings, Transfer-Encoding in HTTP/1.0, an
 * HTTP/1.1 request without exactly one Host, a header name that is not a
 * token (a space before the colon), a control character in a value; and
 * with 501 a transfer coding other than chunked (libmicrohttpd would read
 * such a body to the end of the connection). What libmicrohttpd 0.9.75
 * refuses before any call of ours (a request line or header line that is
 * not HTTP, a Content-Length that is not a number, broken chunks, headers
 * over its memory limit, an HTTP version other than 1.x) gets its own short
 * answer (400, 413, 414, 431 or 505, an HTML body or none, the connection
 * closed): this version offers no hook to replace those bodies, and such a
 * request never reaches a handler.
 *
 * Suspension. A handler that keeps x leaves the connection waiting, but
 * not suspended at once: libmicrohttpd (0.9.75) skips its bookkeeping of
 * what a suspended connection waits for, and a connection suspended from
 * the very call that completed the request still says "read" on resume.
 * Resumed, it would read before it answers, and a client that had shut
 * down its write side after the request (read EOF) would lose its answer
 * although the handler did the work. So the handler's call returns without
 * an answer (the connection is then marked as blocked, not reading), and
 * libmicrohttpd's next run calls the access handler again at once, which
 * suspends it: from the access handler, as the API asks. An answer that
 * comes before that call is queued by it instead.
 *
 * Who owns x: the handler while x->held, otherwise the listener until the
 * request completes (on_done). A suspended connection is out of
 * libmicrohttpd's epoll set, so a client that leaves is only noticed after
 * the answer: on_done then frees x and the response with it. Should a
 * request complete while its handler still holds x, x is marked gone and
 * exchange_respond only frees it. */
#include "listen.h"
#include "json.h"
#include "pl.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

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

static void kick(Listener *l);

/* ---------------------------------------------------------------- the log tally */

/* tally_line logs what the tally holds (if anything) and empties it;
 * returns whether there was anything. */
static int tally_line(Listener *l)
{
    Tally *t = &l->tally;
    char line[900];
    size_t n = 0;
#define ADD(...) do { int k_ = snprintf(line + n, sizeof line - n, __VA_ARGS__); \
                      if (k_ > 0) n = n + (size_t)k_ < sizeof line ? n + (size_t)k_ : sizeof line - 1; } while (0)
    if (t->per_ip)
        ADD("; %u refused (over %u connections from one address; last %s)", t->per_ip, l->per_ip, t->ip);
    if (t->evicted)
        ADD("; %u closed to make room (%u connections open at most)", t->evicted, l->max_conns);
    if (t->expired)
        ADD("; %u closed with a request unfinished after %.0f s", t->expired, (double)l->request_ms / 1e3);
    if (t->errors)
        ADD("; %u accept errors (last: %s)", t->errors, t->err);
    if (t->mhd)
        ADD("; %u messages from libmicrohttpd (last: %s; --verbose shows each)", t->mhd, t->msg);
#undef ADD
    if (!n)
        return 0;
    pl_log(PL_LOG_WARN, "listen: in the last %.0f s: %s", l->log_every, line + 2);
    memset(t, 0, sizeof *t);
    return 1;
}

static void on_logt(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    Listener *l = container_of(w, Listener, logt);
    if (!tally_line(l))
        ev_timer_stop(loop, w); /* quiet again: the next one is logged at once */
}

/* noted says whether the tally's timer runs (the event is only counted);
 * otherwise starts it: the caller logs this first event itself. */
static int noted(Listener *l)
{
    if (l->shutdown || ev_is_active(&l->logt))
        return 1;
    l->logt.repeat = l->log_every;
    ev_timer_again(l->loop, &l->logt);
    return 0;
}

/* ---------------------------------------------------------------- clients */

static void list_add(CList *q, Client *cl)
{
    cl->next = NULL;
    cl->prev = q->tail;
    if (q->tail)
        q->tail->next = cl;
    else
        q->head = cl;
    q->tail = cl;
}

static void list_del(CList *q, Client *cl)
{
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        q->head = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    else
        q->tail = cl->prev;
    cl->prev = cl->next = NULL;
}

static CList *list_of(Listener *l, const Client *cl)
{
    return cl->phase == C_READING ? &l->reading : cl->phase == C_IDLE ? &l->idle : NULL;
}

/* arm_dl sets l->dl to the earliest deadline, unless it fires earlier
 * already: a timer that fires early finds nothing due and re-arms itself,
 * so most changes of phase cost nothing here. */
static void arm_dl(Listener *l)
{
    uint64_t next = UINT64_MAX;
    if (l->reading.head)
        next = l->reading.head->deadline;
    if (l->idle.head && l->idle.head->deadline < next)
        next = l->idle.head->deadline;
    if (l->shutdown || next == UINT64_MAX || (ev_is_active(&l->dl) && l->dl_at <= next))
        return;
    uint64_t now = pl_mono_ns() / 1000000;
    l->dl_at = next;
    l->dl.repeat = next > now ? (double)(next - now) / 1e3 : 1e-3;
    ev_timer_again(l->loop, &l->dl);
}

/* phase moves cl to phase p; READING and IDLE get their deadline from now. */
static void phase(Listener *l, Client *cl, unsigned p)
{
    if (!cl || cl->phase == C_EVICTED)
        return;
    CList *q = list_of(l, cl);
    if (q)
        list_del(q, cl);
    cl->phase = p;
    if (p == C_IDLE && !cl->fresh && !l->tls) {
        cl->fresh = 1;
        cl->fnext = l->fresh;
        l->fresh = cl;
    }
    if ((q = list_of(l, cl)) != NULL) {
        cl->deadline = pl_mono_ns() / 1000000 + (p == C_READING ? l->request_ms : l->idle_ms);
        list_add(q, cl);
        arm_dl(l);
    }
}

static unsigned hash_key(const unsigned char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 16777619u;
    return h % BUCKETS;
}

static void unhash(Listener *l, Client *cl)
{
    Client **p = &l->bucket[hash_key(cl->key, cl->klen)];
    while (*p && *p != cl)
        p = &(*p)->hnext;
    if (*p)
        *p = cl->hnext;
    cl->hnext = NULL;
}

/* evict closes cl's connection (libmicrohttpd cleans up at its next run). */
static void evict(Listener *l, Client *cl)
{
    PL_ASSERT(cl->phase != C_EVICTED, "a connection is evicted once");
    CList *q = list_of(l, cl);
    if (q)
        list_del(q, cl);
    unhash(l, cl);
    cl->phase = C_EVICTED;
    shutdown(cl->fd, SHUT_RDWR);
    l->live--;
    l->evicting++;
}

/* victim is the connection a newcomer may replace at the limit: the
 * longest idle, else the oldest unfinished request; NULL if none. */
static Client *victim(Listener *l)
{
    return l->idle.head ? l->idle.head : l->reading.head;
}

/* room says whether one more connection can be accepted now. */
static int room(const Listener *l)
{
    if (l->live + l->evicting >= l->max_conns + ACCEPT_BATCH)
        return 0; /* libmicrohttpd's limit: wait for its cleanup */
    return l->live < l->max_conns || l->idle.head || l->reading.head;
}

/* accept_again restarts accepting once there is room. */
static void accept_again(Listener *l)
{
    if (l->accept_waits && !l->shutdown && room(l)) {
        l->accept_waits = 0;
        ev_io_start(l->loop, &l->acc);
    }
}

static void on_dl(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    Listener *l = container_of(w, Listener, dl);
    uint64_t now = pl_mono_ns() / 1000000;
    unsigned n = 0, expired = 0;
    Client *cl;
    ev_timer_stop(l->loop, &l->dl);
    while ((cl = l->reading.head) && cl->deadline <= now) {
        evict(l, cl);
        expired++;
        n++;
    }
    while ((cl = l->idle.head) && cl->deadline <= now) {
        evict(l, cl);
        n++;
    }
    if (expired) {
        l->tally.expired += expired;
        if (!noted(l))
            tally_line(l);
    }
    if (n)
        kick(l);
    arm_dl(l);
}

/* key_of fills cl's address key (IPv4-mapped IPv6 counts as IPv4; IPv6 by
 * its /64, what one subscriber usually holds) and its printable form. */
static void key_of(Client *cl, const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, cl->ip, sizeof cl->ip);
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            cl->key[0] = 4;
            memcpy(cl->key + 1, s6->sin6_addr.s6_addr + 12, 4);
            cl->klen = 5;
        } else {
            cl->key[0] = 6;
            memcpy(cl->key + 1, s6->sin6_addr.s6_addr, 8);
            cl->klen = 9;
        }
    } else if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, cl->ip, sizeof cl->ip);
        cl->key[0] = 4;
        memcpy(cl->key + 1, &s4->sin_addr, 4);
        cl->klen = 5;
    } else {
        snprintf(cl->ip, sizeof cl->ip, "(family %d)", sa->ss_family);
        cl->key[0] = 0;
        cl->klen = 1;
    }
}

/* same_address counts the connections of cl's address in *n and finds
 * the longest idle one. */
static Client *same_address(Listener *l, const Client *cl, unsigned *n)
{
    Client *idle = NULL;
    *n = 0;
    for (Client *o = l->bucket[hash_key(cl->key, cl->klen)]; o; o = o->hnext) {
        if (o->klen != cl->klen || memcmp(o->key, cl->key, cl->klen) != 0)
            continue;
        (*n)++;
        if (o->phase == C_IDLE && (!idle || o->deadline < idle->deadline))
            idle = o;
    }
    return idle;
}

/* refuse_fd answers a connection over the per-address limit with 429 (in
 * plain HTTP; a TLS client sees the connection closed) and closes it. */
static void refuse_fd(Listener *l, int fd)
{
    if (!l->tls) {
        static const char body[] = "{\"error\":\"too many connections from your address; "
                                   "close some or retry later\"}\n";
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                         "Connection: close\r\nRetry-After: 1\r\nContent-Length: %zu\r\n\r\n%s",
                         sizeof body - 1, body);
        if (send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            /* nothing to do: the close says it as well */
        }
        shutdown(fd, SHUT_WR);
    }
    close(fd);
}

/* add hands an accepted socket to libmicrohttpd as cl. */
static void add(Listener *l, Client *cl, const struct sockaddr_storage *sa, socklen_t salen)
{
    unsigned b = hash_key(cl->key, cl->klen);
    cl->hnext = l->bucket[b];
    l->bucket[b] = cl;
    cl->phase = C_BUSY; /* phase() below puts it in the reading list */
    l->live++;
    l->adding = cl;
    if (MHD_add_connection(l->d, cl->fd, (const struct sockaddr *)sa, salen) != MHD_YES) {
        /* libmicrohttpd closed the socket; on_conn has freed cl if it had
         * started it, else it is still ours. */
        int e = errno;
        if (l->adding == cl) {
            l->adding = NULL;
            unhash(l, cl);
            l->live--;
            free(cl);
        }
        l->tally.errors++;
        snprintf(l->tally.err, sizeof l->tally.err, "libmicrohttpd: %s", strerror(e));
        if (!noted(l))
            tally_line(l);
        return;
    }
    PL_ASSERT(l->adding == NULL, "libmicrohttpd reports a connection it takes");
    phase(l, cl, C_READING);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    Listener *l = container_of(w, Listener, acc);
    int added = 0;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (!room(l)) { /* every connection holds a request of ours: the backlog waits */
            ev_io_stop(loop, &l->acc);
            l->accept_waits = 1;
            break;
        }
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(l->lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                break;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in the
             * backlog, and a level-triggered watcher would spin on it. */
            l->tally.errors++;
            snprintf(l->tally.err, sizeof l->tally.err, "%s", strerror(e));
            if (!noted(l))
                tally_line(l);
            ev_io_stop(loop, &l->acc);
            ev_timer_set(&l->pause, ACCEPT_PAUSE_S, 0);
            ev_timer_start(loop, &l->pause);
            break;
        }
        Client *cl = xcalloc(1, sizeof *cl);
        cl->fd = fd;
        key_of(cl, &sa);
        unsigned n;
        Client *own = same_address(l, cl, &n);
        if (n >= l->per_ip) {
            if (!own) {
                refuse_fd(l, fd);
                l->tally.per_ip++;
                snprintf(l->tally.ip, sizeof l->tally.ip, "%s", cl->ip);
                if (!noted(l))
                    pl_log(PL_LOG_WARN, "listen: refused a connection from %s: %u connections from that "
                           "address already (max_conns_per_ip); further refusals are summed up every %.0f s",
                           cl->ip, n, l->log_every);
                free(cl);
                continue;
            }
            evict(l, own); /* its own spare connection makes room */
        } else if (l->live >= l->max_conns) {
            Client *v = victim(l);
            PL_ASSERT(v != NULL, "room() found a connection to replace");
            if (!noted(l))
                pl_log(PL_LOG_WARN, "listen: %u connections open (max_conns): closed one from %s that %s "
                       "to make room; further ones are summed up every %.0f s", l->max_conns, v->ip,
                       v->phase == C_IDLE ? "was idle" : "had not finished its request", l->log_every);
            evict(l, v);
            l->tally.evicted++;
        }
        add(l, cl, &sa, salen);
        added = 1;
    }
    if (added)
        kick(l);
}

static void on_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    Listener *l = container_of(w, Listener, pause);
    if (!l->shutdown && !l->accept_waits)
        ev_io_start(loop, &l->acc);
}

static Client *client_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* on_conn: libmicrohttpd takes a connection (from add) or lets it go. */
static void on_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe)
{
    Listener *l = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        Client *cl = l->adding;
        PL_ASSERT(cl != NULL, "libmicrohttpd only serves connections we add");
        l->adding = NULL;
        cl->c = c;
        *socket_context = cl;
        return;
    }
    Client *cl = *socket_context;
    if (!cl)
        return;
    *socket_context = NULL;
    if (cl->fresh) {
        Client **p = &l->fresh;
        while (*p != cl)
            p = &(*p)->fnext;
        *p = cl->fnext;
    }
    if (cl->phase == C_EVICTED) {
        l->evicting--;
    } else {
        CList *q = list_of(l, cl);
        if (q)
            list_del(q, cl);
        unhash(l, cl);
        l->live--;
    }
    free(cl);
    accept_again(l);
}

/* on_uri: a request line arrived; on a kept-alive connection its request
 * starts the clock now. (A new connection's runs since its accept.) */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)uri;
    Listener *l = cls;
    Client *cl = client_of(c);
    if (cl && cl->phase == C_IDLE)
        phase(l, cl, C_READING);
    return NULL;
}

/* ---------------------------------------------------------------- responses */

/* printable copies s into buf for a log line: what a client sent may hold
 * control characters (a forged log line, terminal escapes); those bytes,
 * and any outside printable ASCII, become \xNN. Returns buf. */
static const char *printable(const char *s, char *buf, size_t size)
{
    size_t n = 0;
    for (; *s && n + 5 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[n++] = (char)c;
        else
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
    }
    if (*s && n + 4 <= size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

/* json_error returns a new {"error":msg} body in *len; the caller frees it. */
static char *json_error(const char *msg, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        pl_assert_fail(__FILE__, __LINE__, "open_memstream", "out of memory");
    fputs("{\"error\":", f);
    json_put_string(f, msg, strlen(msg));
    fputs("}\n", f);
    if (fclose(f) != 0)
        pl_assert_fail(__FILE__, __LINE__, "fclose(memstream)", "out of memory");
    *len = n;
    return buf;
}

static struct MHD_Response *make(const char *type, const void *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    PL_ASSERT(resp != NULL, "libmicrohttpd could not allocate a response");
    if (type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return resp;
}

static struct MHD_Response *make_error(const char *msg)
{
    size_t n;
    char *body = json_error(msg, &n);
    struct MHD_Response *resp = make("application/json", body, n);
    free(body);
    return resp;
}

/* queue hands resp to libmicrohttpd for x, from inside the access handler,
 * and returns what the access handler must return. */
static enum MHD_Result queue(Exchange *x, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result rc = MHD_queue_response(x->c, status, resp);
    MHD_destroy_response(resp);
    x->answered = 1;
    phase(x->l, x->cl, C_BUSY);
    if (rc != MHD_YES) {
        char m[64], u[200];
        pl_log(PL_LOG_WARN, "listen: cannot queue the %u answer to %s %s", status,
               printable(x->names, m, sizeof m), printable(x->path, u, sizeof u));
    }
    return rc;
}

/* ---------------------------------------------------------------- exchanges */

static void x_free(Exchange *x)
{
    if (x->resp)
        MHD_destroy_response(x->resp);
    free(x->body);
    free(x->why);
    free(x);
}

static void hold(Exchange *x)
{
    Listener *l = x->l;
    x->held = 1;
    x->prev = NULL;
    x->next = l->held;
    if (l->held)
        l->held->prev = x;
    l->held = x;
}

/* unlink takes x out of l->held (x->held stays as it is). */
static void unlink_held(Exchange *x)
{
    Listener *l = x->l;
    if (x->prev)
        x->prev->next = x->next;
    else if (l && l->held == x)
        l->held = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

const char *exchange_method(const Exchange *x)
{
    return x->names;
}

const char *exchange_path(const Exchange *x)
{
    return x->path;
}

const char *exchange_header(const Exchange *x, const char *name)
{
    if (!x->c)
        return NULL;
    return MHD_lookup_connection_value(x->c, MHD_HEADER_KIND, name);
}

const char *exchange_query(const Exchange *x, const char *key)
{
    const char *v = NULL;
    if (!x->c || MHD_lookup_connection_value_n(x->c, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, NULL) != MHD_YES)
        return NULL;
    return v ? v : ""; /* "?flag" has a key and no value */
}

const char *exchange_body(const Exchange *x, size_t *len)
{
    if (len)
        *len = x->len;
    return x->body ? x->body : "";
}

/* kick makes the loop call MHD_run soon: a resumed connection waits for
 * it, and in external mode libmicrohttpd has no channel of its own (no
 * eventfd) that would wake its epoll descriptor. */
static void kick(Listener *l)
{
    if (ev_is_active(&l->io)) /* not while listener_close drains */
        ev_feed_event(l->loop, &l->io, EV_READ);
}

/* answer stores resp for waiting x and resumes it; the access handler
 * queues resp when libmicrohttpd calls it again. */
static void answer(Exchange *x, unsigned status, struct MHD_Response *resp)
{
    if (x->in_handler) { /* answered from inside the handler: queue now */
        if (queue(x, status, resp) != MHD_YES)
            x->answered = 0; /* the access handler closes the connection */
        return;
    }
    PL_ASSERT(x->suspended || x->to_suspend, "a held exchange is in its handler, suspended or about to be");
    x->resp = resp;
    x->status = status;
    x->answered = 1;
    x->to_suspend = 0;
    if (x->suspended) {
        x->suspended = 0;
        MHD_resume_connection(x->c);
    }
    /* Not suspended yet: libmicrohttpd calls the access handler again at its
     * next run, which queues resp. */
    kick(x->l);
}

void exchange_respond(Exchange *x, unsigned status, const char *content_type,
                      const void *body, size_t len)
{
    PL_ASSERT(x->held, "exchange_respond is called once per exchange");
    unlink_held(x);
    x->held = 0;
    if (x->gone) {
        x_free(x);
        return;
    }
    answer(x, status, make(content_type, body, len));
}

void exchange_error(Exchange *x, unsigned status, const char *msg)
{
    size_t n;
    char *body = json_error(msg, &n);
    exchange_respond(x, status, "application/json", body, n);
    free(body);
}

/* ---------------------------------------------------------------- routing */

void listener_route(Listener *l, const char *method, const char *prefix, int public,
                    ListenHandler fn, void *arg)
{
    Route *r = NULL;
    for (size_t i = 0; i < l->nroutes; i++) {
        Route *o = &l->routes[i];
        if (!strcmp(o->prefix, prefix) && (o->method ? method && !strcmp(o->method, method) : !method)) {
            r = o;
            break;
        }
    }
    if (!r) {
        if (l->nroutes == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 8;
            l->routes = xrealloc(l->routes, l->cap * sizeof *l->routes);
        }
        r = &l->routes[l->nroutes++];
        r->method = method ? xstrdup(method) : NULL;
        r->prefix = xstrdup(prefix);
        r->plen = strlen(prefix);
    }
    r->public = public;
    r->fn = fn;
    r->arg = arg;
}

/* lookup returns the route for method and path (*status 0), or NULL and
 * sets *status to 404 or 405 (with the allowed methods in allow). */
static const Route *lookup(const Listener *l, const char *method, const char *path,
                           unsigned *status, char *allow, size_t allowlen)
{
    size_t best = 0;
    int found = 0;
    for (size_t i = 0; i < l->nroutes; i++) {
        const Route *r = &l->routes[i];
        if ((!found || r->plen > best) && !strncmp(path, r->prefix, r->plen)) {
            best = r->plen;
            found = 1;
        }
    }
    *status = 404;
    if (!found)
        return NULL;
    const Route *any = NULL;
    size_t used = 0;
    allow[0] = 0;
    for (size_t i = 0; i < l->nroutes; i++) {
        const Route *r = &l->routes[i];
        if (r->plen != best || strncmp(path, r->prefix, r->plen))
            continue;
        if (r->method && !strcmp(r->method, method)) {
            *status = 0;
            return r;
        }
        if (!r->method)
            any = r;
        else if (used < allowlen) {
            int n = snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", r->method);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    if (any) {
        *status = 0;
        return any;
    }
    *status = 405;
    return NULL;
}

/* authorized says whether the request carries the listener's bearer token.
 * The comparison takes the same time wherever the tokens differ. */
static int authorized(const Listener *l, struct MHD_Connection *c)
{
    if (!l->token)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    unsigned char diff = n != l->toklen;
    for (size_t i = 0; i < l->toklen; i++)
        diff |= (unsigned char)l->token[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

/* ---------------------------------------------------------------- framing */

typedef struct Framing {
    unsigned cl, te, host;
    int bad_name_seen;
    const char *te_value;
    char bad_name[48];  /* a header name that is not a token */
    char bad_value[48]; /* the name of a header with a control character in its value */
} Framing;

static int tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t klen,
                                   const char *value, size_t vlen)
{
    (void)kind;
    Framing *f = cls;
    int ok = klen > 0;
    for (size_t i = 0; ok && i < klen; i++)
        ok = tchar((unsigned char)key[i]);
    if (!ok && !f->bad_name_seen++)
        snprintf(f->bad_name, sizeof f->bad_name, "%.*s", (int)(klen < 40 ? klen : 40), key);
    for (size_t i = 0; value && i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            if (!f->bad_value[0])
                snprintf(f->bad_value, sizeof f->bad_value, "%.*s", (int)(klen < 40 ? klen : 40), key);
            break;
        }
    }
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        f->cl++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->te++;
        f->te_value = value ? value : "";
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST))
        f->host++;
    return MHD_YES;
}

/* framing_error returns why the request's framing is refused (a new
 * string, *status 400 or 501), or NULL when it is fine. */
static char *framing_error(struct MHD_Connection *c, const char *version, unsigned *status)
{
    Framing f = {0};
    char msg[200];
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, &f);
    int http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    *status = 400;
    if (f.bad_name_seen)
        snprintf(msg, sizeof msg, "malformed header name '%s': a header name is letters, digits and "
                 "!#$%%&'*+-.^_`|~, with no space before the colon", f.bad_name);
    else if (f.bad_value[0])
        snprintf(msg, sizeof msg, "header '%s' holds a control character", f.bad_value);
    else if (!http10 && f.host != 1)
        snprintf(msg, sizeof msg, f.host ? "more than one Host header" : "an HTTP/1.1 request needs a Host header");
    else if (f.cl > 1)
        snprintf(msg, sizeof msg, "more than one Content-Length header; send exactly one");
    else if (f.te && f.cl)
        snprintf(msg, sizeof msg, "both Transfer-Encoding and Content-Length; send one of them");
    else if (f.te > 1)
        snprintf(msg, sizeof msg, "more than one Transfer-Encoding header; send one (chunked)");
    else if (f.te && http10)
        snprintf(msg, sizeof msg, "Transfer-Encoding in an HTTP/1.0 request; send a Content-Length");
    else if (f.te && strcasecmp(f.te_value, "chunked") != 0) {
        *status = 501;
        snprintf(msg, sizeof msg, "Transfer-Encoding '%.40s' is not supported; send the body chunked "
                 "or with a Content-Length", f.te_value);
    } else
        return NULL;
    return xstrdup(msg);
}

/* ---------------------------------------------------------------- access handler */

/* refuse queues the built-in answer for status (400, 401, 404, 405, 413, 501). */
static enum MHD_Result refuse(Exchange *x, unsigned status)
{
    struct MHD_Response *resp;
    unsigned st;
    char allow[128];
    switch (status) {
    case 400:
    case 501:
        /* The framing is not to be trusted: nothing after this request on
         * the connection is read as another one. */
        resp = make_error(x->why);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        break;
    case 401:
        resp = make_error("a valid bearer token is required");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"pickline\"");
        break;
    case 404:
        resp = make_error("no such path");
        break;
    case 405:
        lookup(x->l, x->names, x->path, &st, allow, sizeof allow);
        resp = make_error("method not allowed on this path");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        break;
    default:
        resp = make_error("request body too large");
        break;
    }
    return queue(x, status, resp);
}

/* begin creates the exchange at the first call (headers read) and settles
 * what can be settled before the body: framing, route, token, declared
 * length. A framing error is answered at once and closes the connection.
 * Another refusal of a request with a body is sent at once too, so the body
 * is never read (libmicrohttpd closes such a connection); one without a
 * body waits for the last call, which keeps the connection alive. */
static enum MHD_Result begin(Listener *l, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, void **ccls)
{
    size_t ml = strlen(method), ul = strlen(url);
    Exchange *x = xcalloc(1, sizeof *x + ml + ul + 2);
    x->l = l;
    x->c = c;
    x->cl = client_of(c);
    memcpy(x->names, method, ml + 1);
    x->path = x->names + ml + 1;
    memcpy(x->path, url, ul + 1);
    *ccls = x;

    if ((x->why = framing_error(c, version, &x->refusal)) != NULL)
        return refuse(x, x->refusal);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int body = cl ? strcmp(cl, "0") != 0
                  : MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
    char allow[128];
    const Route *r = lookup(l, method, url, &x->refusal, allow, sizeof allow);
    if (r)
        x->route = (size_t)(r - l->routes);
    if (r && !r->public && !authorized(l, c))
        x->refusal = 401;
    else if (r && cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > l->max_body)
            x->refusal = 413;
        else if (n) { /* one allocation for a declared body of up to 64 KiB */
            x->cap = (n < 65536 ? (size_t)n : 65536) + 1;
            x->body = xmalloc(x->cap);
        }
    }
    if (x->refusal && body)
        return refuse(x, x->refusal);
    return MHD_YES;
}

/* take appends upload data to x->body. A body without a declared length
 * that outgrows the limit is dropped and refused at the last call (this
 * libmicrohttpd takes no answer in the middle of a body); the rest is
 * skipped, and past twice max_body the connection is closed. */
static enum MHD_Result take(Exchange *x, const char *data, size_t n)
{
    Listener *l = x->l;
    if (x->refusal == 413) {
        x->skipped += n;
        return x->skipped / 2 <= l->max_body ? MHD_YES : MHD_NO;
    }
    if (n > l->max_body - x->len) {
        x->refusal = 413;
        x->skipped = x->len + n;
        free(x->body);
        x->body = NULL;
        x->len = x->cap = 0;
        return MHD_YES;
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < x->len + n + 1)
            cap *= 2;
        if (cap > l->max_body + 1)
            cap = l->max_body + 1;
        x->body = xrealloc(x->body, cap);
        x->cap = cap;
    }
    memcpy(x->body + x->len, data, n);
    x->len += n;
    x->body[x->len] = 0;
    return MHD_YES;
}

/* dispatch hands the complete request to its route; an exchange the
 * handler keeps waits for exchange_respond (see "Suspension"). */
static enum MHD_Result dispatch(Exchange *x)
{
    const Route *r = &x->l->routes[x->route];
    if (x->l->shutdown) {
        /* A request that completes while listener_close drains would be
         * held past the daemon's end: refuse it (the sender retries). */
        struct MHD_Response *resp = make_error("the listener is shutting down");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        return queue(x, 503, resp);
    }
    phase(x->l, x->cl, C_BUSY);
    hold(x);
    x->in_handler = 1;
    r->fn(r->arg, x);
    x->in_handler = 0;
    if (x->held) {
        x->to_suspend = 1;
        return MHD_YES;
    }
    return x->answered ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *data, size_t *len, void **ccls)
{
    Listener *l = cls;
    Exchange *x = *ccls;
    if (!x)
        return begin(l, c, url, method, version, ccls);
    if (x->resp) { /* resumed with its answer, or answered before suspension */
        struct MHD_Response *resp = x->resp;
        x->resp = NULL;
        return queue(x, x->status, resp);
    }
    if (x->held) { /* the handler still owns x: suspend now (see "Suspension") */
        if (x->to_suspend) {
            x->to_suspend = 0;
            x->suspended = 1;
            MHD_suspend_connection(x->c);
        }
        return MHD_YES;
    }
    if (x->answered) /* refused early; nothing more to read */
        return MHD_YES;
    if (data && !*len) /* not the last call (that one has no data): libmicrohttpd 0.9.75 makes this
                        * one after "100 Continue" to a request without a body, with bytes after it */
        return MHD_YES;
    if (*len) {
        size_t n = *len;
        *len = 0;
        return take(x, data, n);
    }
    if (x->refusal)
        return refuse(x, x->refusal);
    return dispatch(x);
}

/* on_done: the request completed (answer sent, client gone, shutdown). A
 * connection kept alive waits idle for its next request line. */
static void on_done(void *cls, struct MHD_Connection *c, void **ccls,
                    enum MHD_RequestTerminationCode why)
{
    (void)why;
    Listener *l = cls;
    Exchange *x = *ccls;
    phase(l, client_of(c), C_IDLE);
    accept_again(l);
    if (!x)
        return;
    *ccls = NULL;
    if (x->closing)
        l->closing--;
    if (x->held) { /* the handler answers later: exchange_respond frees x */
        unlink_held(x);
        x->gone = 1;
        x->c = NULL;
        x->l = NULL;
        x->cl = NULL;
        return;
    }
    x_free(x);
}

/* on_log: libmicrohttpd's messages. Once serving, one per log interval at
 * most (they come per connection: a flood of bad clients would flood the
 * log); each shows with --verbose. */
static void on_log(void *cls, const char *fmt, va_list ap)
{
    Listener *l = cls;
    char raw[512], msg[600];
    vsnprintf(raw, sizeof raw, fmt, ap);
    size_t n = strlen(raw);
    while (n && (raw[n - 1] == '\n' || raw[n - 1] == '\r' || raw[n - 1] == '.'))
        raw[--n] = 0;
    printable(raw, msg, sizeof msg); /* some quote the request's URL */
    if (!l->quiet) {
        pl_log(PL_LOG_WARN, "listen: %s", msg);
        return;
    }
    pl_log(PL_LOG_DEBUG, "listen: %s", msg);
    if (pl_log_level >= PL_LOG_DEBUG)
        return;
    if (!noted(l)) {
        pl_log(PL_LOG_INFO, "listen: %s (further messages of libmicrohttpd are summed up every %.0f s)",
               msg, l->log_every);
        return;
    }
    l->tally.mhd++;
    snprintf(l->tally.msg, sizeof l->tally.msg, "%.*s", (int)sizeof l->tally.msg - 1, msg);
}

/* ---------------------------------------------------------------- loop */

/* arm sets l->tm to libmicrohttpd's next timeout (none: stopped). */
static void arm(Listener *l)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(l->d, &ms) != MHD_YES) {
        ev_timer_stop(l->loop, &l->tm);
        return;
    }
    /* 0 means work is pending: the next loop iteration, after other
     * watchers had their turn (repeat 0 would stop the timer). */
    l->tm.repeat = ms ? (ev_tstamp)ms / 1e3 : 1e-6;
    ev_timer_again(l->loop, &l->tm);
}

/* hung_up closes the connections that turned idle in this run and whose
 * client has shut down its side: libmicrohttpd (0.9.75, edge-triggered)
 * takes a short read for "no more data now" and would not read the EOF
 * that came with the request, so the connection would wait idle_ms for
 * nothing. A pipelined request in libmicrohttpd's buffer has had its
 * request line parsed in the same run (its connection is reading, not
 * idle), so only connections with nothing more to do are closed. Not with
 * TLS: GnuTLS may hold a record the socket no longer shows. */
static void hung_up(Listener *l)
{
    int n = 0;
    while (l->fresh) {
        Client *cl = l->fresh;
        l->fresh = cl->fnext;
        cl->fresh = 0;
        char b;
        if (cl->phase == C_IDLE && recv(cl->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
            evict(l, cl);
            n++;
        }
    }
    if (n)
        kick(l);
}

static void run(Listener *l)
{
    l->running = 1;
    MHD_run(l->d);
    l->running = 0;
    hung_up(l);
    arm(l);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    run(container_of(w, Listener, io));
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    run(container_of(w, Listener, tm));
}

/* ---------------------------------------------------------------- open, close */

/* bind_socket returns a listening socket on address:port in *fd and
 * whether that address is loopback in *loopback, or an errno value. */
static int bind_socket(const char *address, unsigned port, int *fd, int *loopback)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    int rc, one = 1;
    *fd = -1;
    if (port > 65535)
        return EINVAL;
    snprintf(ps, sizeof ps, "%u", port);
    if (getaddrinfo(address, ps, &hints, &ai) != 0 || !ai)
        return EADDRNOTAVAIL;
    if (ai->ai_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        *loopback = IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    } else {
        *loopback = ai->ai_family == AF_INET &&
                    (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127;
    }
    int s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        rc = errno;
        goto fail;
    }
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, SOMAXCONN) != 0) {
        rc = errno;
        goto fail;
    }
    freeaddrinfo(ai);
    *fd = s;
    return 0;
fail:
    if (s >= 0)
        close(s);
    freeaddrinfo(ai);
    return rc;
}

int listener_open(struct ev_loop *loop, const ListenOpts *o, Listener **out)
{
    static const ListenOpts none;
    int rc, loopback = 0;
    if (!o)
        o = &none;
    *out = NULL;
    int tls = (o->tls_cert && *o->tls_cert) || (o->tls_key && *o->tls_key);
    if (o->token && *o->token && strlen(o->token) < LISTEN_TOKEN_MIN)
        return EINVAL;
    if (tls && !(o->tls_cert && *o->tls_cert && o->tls_key && *o->tls_key))
        return EINVAL;
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return ENOTSUP;
    Listener *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->lfd = -1;
    l->tls = tls;
    l->max_body = o->max_body ? o->max_body : LISTEN_MAX_BODY;
    l->max_conns = o->max_conns ? o->max_conns : LISTEN_MAX_CONNS;
    l->per_ip = o->max_conns_per_ip ? o->max_conns_per_ip : LISTEN_PER_IP;
    unsigned idle_s = o->timeout_s ? o->timeout_s : LISTEN_TIMEOUT_S;
    l->idle_ms = (uint64_t)idle_s * 1000;
    l->request_ms = (uint64_t)(o->request_timeout_s ? o->request_timeout_s : LISTEN_REQUEST_S) * 1000;
    l->log_every = o->log_every_s ? o->log_every_s : LISTEN_LOG_EVERY_S;
    if (o->token && *o->token) {
        l->token = xstrdup(o->token);
        l->toklen = strlen(o->token);
    }
    const char *address = o->address ? o->address : "127.0.0.1";
    if ((rc = bind_socket(address, o->port, &l->lfd, &loopback)) != 0)
        goto fail;
    if (!loopback && !l->token && !o->insecure) {
        rc = EACCES;
        goto fail;
    }
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    if (getsockname(l->lfd, (struct sockaddr *)&sa, &salen) != 0) {
        rc = errno;
        goto fail;
    }
    l->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                             : ((struct sockaddr_in *)&sa)->sin_port);
    struct MHD_OptionItem tlsopt[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)o->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)o->tls_key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
        {MHD_OPTION_END, 0, NULL},
    };
    errno = 0;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET |
                     (tls ? MHD_USE_TLS : 0);
    l->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, l,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, l,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, l,
                            MHD_OPTION_NOTIFY_CONNECTION, on_conn, l,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, l,
                            /* ours is the limit; the slack is for evicted connections
                             * libmicrohttpd has not cleaned up yet (see room) */
                            MHD_OPTION_CONNECTION_LIMIT, l->max_conns + ACCEPT_BATCH,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
                            MHD_OPTION_ARRAY, tls ? tlsopt : tlsopt + 3,
                            MHD_OPTION_END);
    if (!l->d) {
        rc = tls ? EPROTO : errno ? errno : EIO;
        if (tls)
            pl_log(PL_LOG_ERROR, "listen: libmicrohttpd refused the TLS certificate or key (its reason "
                   "is logged above); check tls: cert and key (PEM, the key unencrypted, matching the certificate)");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    PL_ASSERT(di && di->epoll_fd >= 0, "libmicrohttpd in epoll mode has an epoll descriptor");
    ev_io_init(&l->io, on_io, di->epoll_fd, EV_READ);
    ev_io_start(loop, &l->io);
    ev_init(&l->tm, on_timer);
    ev_io_init(&l->acc, on_accept, l->lfd, EV_READ);
    ev_io_start(loop, &l->acc);
    ev_init(&l->pause, on_pause);
    ev_init(&l->dl, on_dl);
    ev_init(&l->logt, on_logt);
    arm(l);
    l->quiet = 1;
    if (!loopback && !l->token)
        pl_log(PL_LOG_WARN, "listen: %s is reachable from other machines and no token is set (insecure: "
               "true): anyone who reaches it can put jobs and read the queues", address);
    *out = l;
    return 0;
fail:
    if (l->d)
        MHD_stop_daemon(l->d);
    if (l->lfd >= 0)
        close(l->lfd);
    free(l->token);
    free(l);
    return rc;
}

unsigned listener_port(const Listener *l)
{
    return l->port;
}

/* drain runs libmicrohttpd, off the loop, until the 503s of listener_close
 * are sent or LISTEN_CLOSE_WAIT_MS passed. */
static void drain(Listener *l)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    uint64_t deadline = pl_mono_ns() + (uint64_t)LISTEN_CLOSE_WAIT_MS * 1000000;
    for (;;) {
        MHD_run(l->d);
        uint64_t now = pl_mono_ns();
        if (!l->closing || now >= deadline)
            break;
        MHD_UNSIGNED_LONG_LONG ms;
        int wait = (int)((deadline - now) / 1000000) + 1;
        if (MHD_get_timeout(l->d, &ms) == MHD_YES && ms < (MHD_UNSIGNED_LONG_LONG)wait)
            wait = (int)ms;
        struct pollfd p = {.fd = di->epoll_fd, .events = POLLIN};
        poll(&p, 1, wait);
    }
}

void listener_close(Listener *l)
{
    if (!l)
        return;
    PL_ASSERT(!l->running, "listener_close is not called from a handler");
    l->shutdown = 1;
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->tm);
    ev_io_stop(l->loop, &l->acc);
    ev_timer_stop(l->loop, &l->pause);
    ev_timer_stop(l->loop, &l->dl);
    ev_timer_stop(l->loop, &l->logt);
    tally_line(l);
    /* The listen socket is ours: close it at once, or the kernel would go
     * on completing handshakes on it. */
    close(l->lfd);
    while (l->held) {
        Exchange *x = l->held;
        unlink_held(x);
        x->held = 0;
        x->closing = 1;
        l->closing++;
        struct MHD_Response *resp = make_error("the listener is shutting down");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        answer(x, 503, resp);
    }
    drain(l);
    /* Remaining connections close here; on_done and on_conn free their
     * exchanges and clients. */
    l->quiet = 0;
    MHD_stop_daemon(l->d);
    for (size_t i = 0; i < l->nroutes; i++) {
        free(l->routes[i].method);
        free(l->routes[i].prefix);
    }
    free(l->routes);
    free(l->token);
    free(l);
}
