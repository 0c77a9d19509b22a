/* hload.c: an HTTP/1.1 closed-loop load client (hload.h). */
#include "hload.h"

#include "pl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct Conn {
    int fd;
    size_t req;              /* index of the request in flight; SIZE_MAX none */
    char *out;               /* head + body being sent */
    size_t outlen, outoff;
    char *in;                /* the answer being read */
    size_t inlen, incap;
    uint64_t sent_ns;
} Conn;

static int conn_open(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* prepare builds request i into c->out. */
static void prepare(const HloadOpts *o, Conn *c, size_t i)
{
    size_t blen = o->off[i + 1] - o->off[i];
    char head[600], key[160] = "", auth[300] = "";
    if (o->key_prefix)
        snprintf(key, sizeof key, "Idempotency-Key: %s-%zu\r\n", o->key_prefix, i);
    if (o->token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", o->token);
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: %s\r\n%s%s"
                      "Content-Length: %zu\r\n\r\n",
                      o->path, o->port, o->ctype ? o->ctype : "application/json", key, auth, blen);
    c->out = xrealloc(c->out, (size_t)hl + blen);
    memcpy(c->out, head, (size_t)hl);
    memcpy(c->out + hl, o->buf + o->off[i], blen);
    c->outlen = (size_t)hl + blen;
    c->outoff = 0;
    c->inlen = 0;
    c->req = i;
    c->sent_ns = pl_mono_ns();
}

/* answer_len: the length of a complete answer at the head of in, 0 when
 * more is needed; sets *status. -1 when it is not HTTP. */
static long answer_len(const char *in, size_t n, int *status)
{
    const char *end = memmem(in, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    if (n < 12 || strncmp(in, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(in + 9);
    size_t hl = (size_t)(end - in) + 4;
    size_t cl = 0;
    for (const char *p = in; p < end; p++) {
        if ((p == in || p[-1] == '\n') && !strncasecmp(p, "Content-Length:", 15)) {
            cl = strtoul(p + 15, NULL, 10);
            break;
        }
    }
    return n >= hl + cl ? (long)(hl + cl) : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int hload_run(const HloadOpts *o, HloadResult *r)
{
    memset(r, 0, sizeof *r);
    unsigned nc = o->conns ? o->conns : 1;
    Conn *cs = xcalloc(nc, sizeof *cs);
    double *lat = xmalloc((o->n ? o->n : 1) * sizeof *lat);
    size_t next = 0, done = 0, step = o->stride ? o->stride : 1;
    size_t total = (o->n + step - 1) / step;
    int ep = epoll_create1(EPOLL_CLOEXEC), rc = 0;
    uint64_t t0 = pl_mono_ns();
    for (unsigned k = 0; k < nc; k++)
        cs[k].fd = -1;
    for (unsigned k = 0; k < nc; k++) {
        cs[k].req = SIZE_MAX;
        if ((cs[k].fd = conn_open(o->port)) < 0) {
            snprintf(r->err, sizeof r->err, "connect to 127.0.0.1:%u: %s", o->port, strerror(errno));
            rc = -1;
            goto out;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = k};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[k].fd, &ev);
    }
    while (done < total) {
        struct epoll_event evs[128];
        int m = epoll_wait(ep, evs, 128, 30000);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0) {
            snprintf(r->err, sizeof r->err, "no answer for 30 s (%zu of %zu done)", done, total);
            rc = -1;
            goto out;
        }
        for (int e = 0; e < m; e++) {
            Conn *c = &cs[evs[e].data.u32];
            if (c->req == SIZE_MAX) {
                if (next >= o->n)
                    continue;
                prepare(o, c, next);
                next += step;
                r->sent++;
            }
            while (c->outoff < c->outlen) {
                ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
                if (w < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (w <= 0) {
                    snprintf(r->err, sizeof r->err, "send: %s", strerror(errno));
                    rc = -1;
                    goto out;
                }
                c->outoff += (size_t)w;
            }
            if (!(evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            for (;;) {
                if (c->incap - c->inlen < 4096) {
                    c->incap = c->incap ? c->incap * 2 : 16384;
                    c->in = xrealloc(c->in, c->incap);
                }
                ssize_t k = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (k <= 0) {
                    snprintf(r->err, sizeof r->err, "the server closed a connection (%s) with "
                             "request %zu in flight", k ? strerror(errno) : "EOF", c->req);
                    rc = -1;
                    goto out;
                }
                c->inlen += (size_t)k;
            }
            int status = 0;
            long al = answer_len(c->in, c->inlen, &status);
            if (al < 0) {
                snprintf(r->err, sizeof r->err, "an answer that is not HTTP: %.60s", c->in);
                rc = -1;
                goto out;
            }
            if (al == 0 || c->req == SIZE_MAX)
                continue;
            lat[done] = (double)(pl_mono_ns() - c->sent_ns) / 1e6;
            done++;
            if (status >= 200 && status < 300) {
                r->ok++;
            } else {
                if (!r->non2xx) {
                    const char *b = memmem(c->in, (size_t)al, "\r\n\r\n", 4);
                    snprintf(r->err, sizeof r->err, "HTTP %d: %.*s", status,
                             b ? (int)((size_t)al - (size_t)(b + 4 - c->in)) : 0, b ? b + 4 : "");
                }
                r->non2xx++;
            }
            c->req = SIZE_MAX;
            if (next < o->n) {
                prepare(o, c, next);
                next += step;
                r->sent++;
                while (c->outoff < c->outlen) {
                    ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
                    if (w < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                    if (w <= 0) {
                        snprintf(r->err, sizeof r->err, "send: %s", strerror(errno));
                        rc = -1;
                        goto out;
                    }
                    c->outoff += (size_t)w;
                }
            }
        }
    }
    r->secs = (double)(pl_mono_ns() - t0) / 1e9;
    if (done) {
        qsort(lat, done, sizeof *lat, cmp_double);
        r->lat_p50_ms = lat[done / 2];
        r->lat_p99_ms = lat[done * 99 / 100];
        r->lat_max_ms = lat[done - 1];
    }
    if (r->non2xx)
        rc = -1;
out:
    for (unsigned k = 0; k < nc; k++) {
        if (cs[k].fd >= 0)
            close(cs[k].fd);
        free(cs[k].out);
        free(cs[k].in);
    }
    close(ep);
    free(cs);
    free(lat);
    return rc;
}
