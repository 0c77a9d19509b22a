/* listen.c: the engine's HTTP listener (see listen.h for the contract):
 * libmicrohttpd on the loop, the connections and their admission, opening
 * and closing. One request (framing, routing, the token, the body, the
 * answer) is exchange.c's.
 *
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
 * line per log interval (l->logt); so are libmicrohttpd's own messages. */
#include "listen_int.h"
#include "pl.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
 * so most changes of listen_phase cost nothing here. */
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

/* listen_phase moves cl to listen_phase p; READING and IDLE get their deadline from now. */
void listen_phase(Listener *l, Client *cl, unsigned p)
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

/* listen_accept_again restarts accepting once there is room. */
void listen_accept_again(Listener *l)
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
        listen_kick(l);
    arm_dl(l);
}

/* key_of fills cl's address key (IPv4-mapped IPv6 counts as IPv4; IPv6 by
 * its /64, what one subscriber usually holds) and its listen_printable form. */
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
    cl->phase = C_BUSY; /* listen_phase() below puts it in the reading list */
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
    listen_phase(l, cl, C_READING);
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
        listen_kick(l);
}

static void on_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    Listener *l = container_of(w, Listener, pause);
    if (!l->shutdown && !l->accept_waits)
        ev_io_start(loop, &l->acc);
}

Client *listen_client_of(struct MHD_Connection *c)
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
    listen_accept_again(l);
}

/* on_uri: a request line arrived; on a kept-alive connection its request
 * starts the clock now. (A new connection's runs since its accept.) */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)uri;
    Listener *l = cls;
    Client *cl = listen_client_of(c);
    if (cl && cl->phase == C_IDLE)
        listen_phase(l, cl, C_READING);
    return NULL;
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
    listen_printable(raw, msg, sizeof msg); /* some quote the request's URL */
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

/* listen_kick makes the loop call MHD_run soon: a resumed connection waits for
 * it, and in external mode libmicrohttpd has no channel of its own (no
 * eventfd) that would wake its epoll descriptor. */
void listen_kick(Listener *l)
{
    if (ev_is_active(&l->io)) /* not while listener_close drains */
        ev_feed_event(l->loop, &l->io, EV_READ);
}

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
        listen_kick(l);
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
    l->d = MHD_start_daemon(flags, 0, NULL, NULL, exchange_access, l,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, l,
                            MHD_OPTION_NOTIFY_COMPLETED, exchange_completed, l,
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
    exchange_close_held(l);
    drain(l);
    /* Remaining connections close here; exchange_completed and on_conn free their
     * exchanges and clients. */
    l->quiet = 0;
    MHD_stop_daemon(l->d);
    listen_routes_free(l);
    free(l->token);
    free(l);
}

