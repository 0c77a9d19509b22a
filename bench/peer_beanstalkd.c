/* peer_beanstalkd.c: the queue workload against a durable beanstalkd (see peer.h).
 *
 * One connection per thread, each driven in rounds: write the round's commands, read
 * exactly as many replies. The socket is non-blocking during a round and the reply
 * reader runs while the commands are still being written, so a large pipelined batch
 * cannot deadlock against beanstalkd, which stops reading a connection until its
 * reply has been written. */
#include "peer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BS_TTR 60                /* seconds; far longer than any run holds a job */
#define BS_MAXLINE 256           /* longest reply line we accept */
#define BS_DEFAULT_MAX_JOB 65535 /* beanstalkd's default -z */
#define BS_START_TIMEOUT_MS 5000
#define BS_TERM_TIMEOUT_MS 2000
#define BS_STALL_MS 30000       /* a round that moves no byte this long has failed */
#define BS_IOV 512

enum { RP_INSERTED, RP_RESERVED, RP_DELETED, RP_TIMED_OUT, RP_DEADLINE_SOON, RP_OK };

typedef struct Reply {
    int kind;
    unsigned long long id;  /* INSERTED, RESERVED */
    const char *data;       /* RESERVED, OK: valid until the next read on the conn */
    size_t len;
} Reply;

/* Conn: one client connection and the buffers of its current round. */
typedef struct Conn {
    int fd;
    const atomic_int *stop; /* set by the other thread when it failed */
    size_t body;            /* the body size every RESERVED must carry */
    /* A round's output: pre (commands that differ), then rep repeated nrep times. */
    char *pre;
    size_t prelen, precap;
    const char *rep;
    size_t replen, nrep;
    size_t sent;            /* bytes of the round's output sent so far */
    char *in;               /* replies read, unparsed from inoff to inlen */
    size_t inoff, inlen, incap;
    size_t rcvd;            /* bytes ever read, to tell a stall from slow progress */
    char err[256];
} Conn;

typedef struct Server {
    pid_t pid;
    int port;
    char workdir[PATH_MAX];
    char bindir[PATH_MAX];  /* <workdir>/binlog */
    int made_workdir, made_bindir;
} Server;

typedef struct Run {
    Conn prod, cons;
    size_t batch, n;
    const char *putcmd;
    size_t putlen;
    double *lat;            /* n put latencies (us) when batch == 1, else NULL */
    int64_t t_end;          /* ns, after the consumer's last DELETED */
    atomic_int stop;
    atomic_int failed;      /* 0, or 1 + index of the thread that failed first */
} Run;

/* A pipelined reserve waits up to 1 s for a put; TIMED_OUT just means ask again. */
static const char rescmd[] = "reserve-with-timeout 1\r\n";

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "peer_beanstalkd: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* pct: nearest-rank percentile of sorted v[0..n). */
static double
pct(const double *v, size_t n, unsigned p)
{
    size_t rank = (n * p + 99) / 100;

    return v[rank ? rank - 1 : 0];
}

/* ------------------------------------------------------------------ connection */

static int
conn_open(Conn *c, int port, size_t body, const atomic_int *stop)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    c->body = body;
    c->stop = stop;
    if (c->fd == -1)
        goto fail;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == -1)
        goto fail;
    /* Small commands and replies: never let Nagle hold one back. */
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
        goto fail;
    return 0;

fail:
    seterr(c->err, sizeof c->err, "connect 127.0.0.1:%d: %s", port, strerror(errno));
    return -1;
}

static void
conn_close(Conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->pre);
    free(c->in);
    c->pre = c->in = NULL;
}

static void
conn_append(Conn *c, const char *s, size_t len)
{
    if (c->prelen + len > c->precap) {
        c->precap = (c->prelen + len) * 2;
        c->pre = xrealloc(c->pre, c->precap);
    }
    memcpy(c->pre + c->prelen, s, len);
    c->prelen += len;
}

/* conn_send writes as much of the round's output as the socket takes now. */
static int
conn_send(Conn *c, size_t total)
{
    while (c->sent < total) {
        struct iovec iov[BS_IOV];
        struct msghdr m = { .msg_iov = iov };
        size_t off = c->sent;
        ssize_t w;

        if (off < c->prelen) {
            iov[m.msg_iovlen++] = (struct iovec){ c->pre + off, c->prelen - off };
            off = c->prelen;
        }
        if (c->nrep) {
            size_t i = (off - c->prelen) / c->replen, o = (off - c->prelen) % c->replen;

            for (; i < c->nrep && m.msg_iovlen < BS_IOV; i++, o = 0)
                iov[m.msg_iovlen++] = (struct iovec){ (char *)c->rep + o, c->replen - o };
        }
        w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            seterr(c->err, sizeof c->err, "send: %s", strerror(errno));
            return -1;
        }
        c->sent += (size_t)w;
    }
    return 0;
}

/* conn_fill reads once; 1 if it got bytes, 0 if none are waiting, -1 on error/EOF. */
static int
conn_fill(Conn *c)
{
    ssize_t r;

    if (c->inoff == c->inlen) {
        c->inoff = c->inlen = 0;
    } else if (c->inoff > 0 && c->incap - c->inlen < 4096) {
        memmove(c->in, c->in + c->inoff, c->inlen - c->inoff);
        c->inlen -= c->inoff;
        c->inoff = 0;
    }
    if (c->incap - c->inlen < 4096) {
        c->incap = c->incap ? c->incap * 2 : 65536;
        c->in = xrealloc(c->in, c->incap);
    }
    for (;;) {
        r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
        if (r > 0) {
            c->inlen += (size_t)r;
            c->rcvd += (size_t)r;
            return 1;
        }
        if (r == 0) {
            seterr(c->err, sizeof c->err, "beanstalkd closed the connection");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        seterr(c->err, sizeof c->err, "recv: %s", strerror(errno));
        return -1;
    }
}

/* num parses a decimal at *s followed by ' ' or the end; advances *s past it. */
static int
num(const char **s, unsigned long long *v)
{
    char *end;

    if (**s < '0' || **s > '9')
        return -1;
    errno = 0;
    *v = strtoull(*s, &end, 10);
    if (errno || (*end != ' ' && *end != '\0'))
        return -1;
    *s = *end ? end + 1 : end;
    return 0;
}

/* conn_parse takes one complete reply off the input: 1 and *rp filled, 0 when more
 * bytes are needed, -1 on a malformed or unexpected reply (c->err says which). */
static int
conn_parse(Conn *c, Reply *rp)
{
    size_t avail = c->inlen - c->inoff, ll, used;
    const char *p, *s, *eol;
    char line[BS_MAXLINE + 1];
    unsigned long long a, b;

    if (avail < 2)              /* also: nothing read yet, c->in may be NULL */
        return 0;
    p = c->in + c->inoff;
    eol = memmem(p, avail, "\r\n", 2);
    if (!eol) {
        if (avail > BS_MAXLINE)
            goto toolong;
        return 0;
    }
    ll = (size_t)(eol - p);
    if (ll > BS_MAXLINE)
        goto toolong;
    memcpy(line, p, ll);
    line[ll] = '\0';
    used = ll + 2;
    memset(rp, 0, sizeof *rp);

    if (strncmp(line, "INSERTED ", 9) == 0) {
        s = line + 9;
        if (num(&s, &a) == -1 || *s)
            goto bad;
        rp->kind = RP_INSERTED;
        rp->id = a;
    } else if (strncmp(line, "RESERVED ", 9) == 0 || strncmp(line, "OK ", 3) == 0) {
        int reserved = line[0] == 'R';

        s = line + (reserved ? 9 : 3);
        if (reserved && num(&s, &a) == -1)
            goto bad;
        if (num(&s, &b) == -1 || *s)
            goto bad;
        if (reserved && b != c->body) {
            seterr(c->err, sizeof c->err, "reserved a %llu-byte job, expected %zu bytes",
                   b, c->body);
            return -1;
        }
        if (b > avail - used || avail - used - b < 2)
            return 0;
        if (p[used + b] != '\r' || p[used + b + 1] != '\n')
            goto bad;
        rp->kind = reserved ? RP_RESERVED : RP_OK;
        rp->id = reserved ? a : 0;
        rp->data = p + used;
        rp->len = b;
        used += b + 2;
    } else if (strcmp(line, "DELETED") == 0) {
        rp->kind = RP_DELETED;
    } else if (strcmp(line, "TIMED_OUT") == 0) {
        rp->kind = RP_TIMED_OUT;
    } else if (strcmp(line, "DEADLINE_SOON") == 0) {
        rp->kind = RP_DEADLINE_SOON;
    } else {
        goto bad;
    }
    c->inoff += used;
    return 1;

bad:
    seterr(c->err, sizeof c->err, "unexpected reply from beanstalkd: \"%.100s\"", line);
    return -1;
toolong:
    seterr(c->err, sizeof c->err, "reply line from beanstalkd longer than %d bytes", BS_MAXLINE);
    return -1;
}

/* conn_round sends the output set up in c (pre, then rep x nrep) and reads exactly
 * nreplies replies into rep[]. Fails when the peer thread has set stop and this one
 * would have to wait, or when nothing moves for BS_STALL_MS (a hung server). */
static int
conn_round(Conn *c, Reply *rep, size_t nreplies)
{
    size_t total = c->prelen + c->nrep * c->replen, got = 0, seen = SIZE_MAX;
    int64_t progress = 0;

    c->sent = 0;
    for (;;) {
        struct pollfd pfd = { .fd = c->fd };
        int r;

        if (c->sent < total && conn_send(c, total) == -1)
            return -1;
        while (got < nreplies && (r = conn_parse(c, &rep[got])) != 0) {
            if (r == -1)
                return -1;
            got++;
        }
        if (got == nreplies && c->sent == total)
            return 0;
        if (got < nreplies) {
            r = conn_fill(c);
            if (r == -1)
                return -1;
            if (r == 1)
                continue;
        }
        if (atomic_load(c->stop)) {
            seterr(c->err, sizeof c->err, "stopped: the other thread failed");
            return -1;
        }
        /* About to wait: only now is the clock worth reading. */
        if (c->sent + c->rcvd != seen) {
            seen = c->sent + c->rcvd;
            progress = now_ns();
        } else if (now_ns() - progress > (int64_t)BS_STALL_MS * 1000000) {
            seterr(c->err, sizeof c->err, "no progress from beanstalkd for %d s", BS_STALL_MS / 1000);
            return -1;
        }
        pfd.events = (short)((got < nreplies ? POLLIN : 0) | (c->sent < total ? POLLOUT : 0));
        if (poll(&pfd, 1, 100) == -1 && errno != EINTR) {
            seterr(c->err, sizeof c->err, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ server */

static int
free_port(char *err, size_t errlen)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) == -1)
        seterr(err, errlen, "finding a free port: %s", strerror(errno));
    else
        port = ntohs(sa.sin_port);
    if (fd != -1)
        close(fd);
    return port;
}

/* binlog_clear removes beanstalkd's files (lock, binlog.N) from dir; -1 if a live
 * beanstalkd holds the lock. */
static int
binlog_clear(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX + 300];
    DIR *d;
    struct dirent *e;
    int fd;

    snprintf(path, sizeof path, "%s/lock", dir);
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd != -1) {
        struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

        if (fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type != F_UNLCK) {
            close(fd);
            seterr(err, errlen, "%s is in use by beanstalkd pid %d", dir, (int)lk.l_pid);
            return -1;
        }
        close(fd);
    }
    d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, "lock") == 0 || strncmp(e->d_name, "binlog.", 7) == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

/* wait_exit waits up to ms for pid; 1 if reaped (or gone), 0 if still running. */
static int
wait_exit(pid_t pid, long ms, int *status)
{
    for (long waited = 0;; waited += 5) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid || (r == -1 && errno == ECHILD))
            return 1;
        if (waited >= ms)
            return 0;
        sleep_ms(5);
    }
}

static void
server_stop(Server *s)
{
    int status;

    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        if (!wait_exit(s->pid, BS_TERM_TIMEOUT_MS, &status)) {
            kill(s->pid, SIGKILL);
            wait_exit(s->pid, LONG_MAX, &status);
        }
        s->pid = 0;
    }
    if (s->made_bindir) {
        binlog_clear(s->bindir, NULL, 0);
        rmdir(s->bindir);
        s->made_bindir = 0;
    }
    if (s->made_workdir) {
        rmdir(s->workdir);
        s->made_workdir = 0;
    }
}

/* server_start runs beanstalkd as a child bound to the calling thread (it gets
 * SIGKILL if we die) and waits until it accepts connections. */
static int
server_start(Server *s, const char *workdir, size_t body, char *err, size_t errlen)
{
    char portstr[16], zstr[32];
    char *argv[] = { "beanstalkd", "-l", "127.0.0.1", "-p", portstr, "-b", s->bindir,
                     "-f", "0", NULL, NULL, NULL };
    int pfd[2], e, status;
    ssize_t nr;
    pid_t parent = getpid();

    if (snprintf(s->workdir, sizeof s->workdir, "%s", workdir) >= (int)sizeof s->workdir ||
        snprintf(s->bindir, sizeof s->bindir, "%s/binlog", workdir) >= (int)sizeof s->bindir) {
        seterr(err, errlen, "workdir path too long");
        return -1;
    }
    if (mkdir(s->workdir, 0755) == 0)
        s->made_workdir = 1;
    else if (errno != EEXIST)
        goto fail_errno_dir;
    if (mkdir(s->bindir, 0755) == -1) {
        if (errno != EEXIST) {
            workdir = s->bindir;
            goto fail_errno_dir;
        }
        /* A leftover from a crashed run would be replayed into our queue. */
        if (binlog_clear(s->bindir, err, errlen) == -1)
            return -1;
    }
    s->made_bindir = 1;

    if ((s->port = free_port(err, errlen)) == -1)
        return -1;
    snprintf(portstr, sizeof portstr, "%d", s->port);
    if (body > BS_DEFAULT_MAX_JOB) {
        snprintf(zstr, sizeof zstr, "%zu", body);
        argv[9] = "-z";
        argv[10] = zstr;
    }

    if (pipe2(pfd, O_CLOEXEC) == -1) {
        seterr(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    s->pid = fork();
    if (s->pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        close(pfd[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
            _exit(126);
        if (devnull != -1) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execvp(argv[0], argv);
        e = errno;
        nr = write(pfd[1], &e, sizeof e);
        _exit(127);
    }
    e = errno;
    close(pfd[1]);
    if (s->pid == -1) {
        s->pid = 0;
        close(pfd[0]);
        seterr(err, errlen, "fork: %s", strerror(e));
        return -1;
    }
    /* The pipe closes on a successful exec, or carries exec's errno. */
    do
        nr = read(pfd[0], &e, sizeof e);
    while (nr == -1 && errno == EINTR);
    close(pfd[0]);
    if (nr == (ssize_t)sizeof e) {
        wait_exit(s->pid, LONG_MAX, &status);
        s->pid = 0;
        if (e == ENOENT)
            seterr(err, errlen, "beanstalkd not found on $PATH (apt-get install beanstalkd)");
        else
            seterr(err, errlen, "cannot run beanstalkd: %s", strerror(e));
        return -1;
    }

    for (long waited = 0;; waited += 5) {
        Conn probe = { .fd = -1 };
        atomic_int never = 0;

        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            seterr(err, errlen, "beanstalkd exited during startup (%s %d); see its stderr",
                   WIFEXITED(status) ? "status" : "signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return -1;
        }
        if (conn_open(&probe, s->port, 0, &never) == 0) {
            conn_close(&probe);
            return 0;
        }
        conn_close(&probe);
        if (waited >= BS_START_TIMEOUT_MS) {
            seterr(err, errlen, "beanstalkd not accepting on port %d after %d ms", s->port,
                   BS_START_TIMEOUT_MS);
            return -1;
        }
        sleep_ms(5);
    }

fail_errno_dir:
    seterr(err, errlen, "mkdir %s: %s", workdir, strerror(errno));
    return -1;
}

/* server_check asks, over c, for the server's pid: the free port could have been
 * taken by someone else between our probe and beanstalkd's bind. */
static int
server_check(const Server *s, Conn *c)
{
    static const char stats[] = "stats\r\n";
    Reply rp;
    const char *p;
    char num[32];

    c->prelen = 0;
    conn_append(c, stats, sizeof stats - 1);
    c->nrep = 0;
    if (conn_round(c, &rp, 1) == -1)
        return -1;
    snprintf(num, sizeof num, "\npid: %d\n", (int)s->pid);
    p = rp.kind == RP_OK ? memmem(rp.data, rp.len, num, strlen(num)) : NULL;
    if (!p) {
        seterr(c->err, sizeof c->err, "port %d is not served by the beanstalkd we started",
               s->port);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ workload */

static void
run_fail(Run *run, int who)
{
    int none = 0;

    atomic_compare_exchange_strong(&run->failed, &none, who + 1);
    atomic_store(&run->stop, 1);
}

static void *
producer(void *arg)
{
    Run *run = arg;
    Conn *c = &run->prod;
    Reply *rep = xrealloc(NULL, run->batch * sizeof *rep);

    c->prelen = 0;
    c->rep = run->putcmd;
    c->replen = run->putlen;
    for (size_t done = 0, k; done < run->n; done += k) {
        int64_t t0 = now_ns();

        k = run->n - done < run->batch ? run->n - done : run->batch;
        c->nrep = k;
        if (conn_round(c, rep, k) == -1)
            goto fail;
        if (run->lat)
            run->lat[done] = (double)(now_ns() - t0) / 1e3;
        for (size_t i = 0; i < k; i++) {
            if (rep[i].kind != RP_INSERTED) {
                seterr(c->err, sizeof c->err, "put: expected INSERTED");
                goto fail;
            }
        }
    }
    free(rep);
    return NULL;

fail:
    free(rep);
    run_fail(run, 0);
    return NULL;
}

/* consumer: each round deletes the jobs reserved in the previous round, then asks
 * for the next batch. Ping-pong (batch 1) alternates a reserve round and a delete
 * round. */
static void *
consumer(void *arg)
{
    Run *run = arg;
    Conn *c = &run->cons;
    int pingpong = run->batch == 1;
    unsigned long long *ids = xrealloc(NULL, run->batch * sizeof *ids);
    Reply *rep = xrealloc(NULL, 2 * run->batch * sizeof *rep);
    size_t held = 0, reserved = 0, deleted = 0;

    c->rep = rescmd;
    c->replen = sizeof rescmd - 1;
    while (deleted < run->n) {
        size_t k = run->n - reserved < run->batch ? run->n - reserved : run->batch;
        size_t acked = held;

        if (pingpong && held)
            k = 0;
        c->prelen = 0;
        for (size_t i = 0; i < held; i++) {
            char cmd[48];
            int len = snprintf(cmd, sizeof cmd, "delete %llu\r\n", ids[i]);

            conn_append(c, cmd, (size_t)len);
        }
        c->nrep = k;
        if (conn_round(c, rep, acked + k) == -1)
            goto fail;
        for (size_t i = 0; i < acked; i++) {
            if (rep[i].kind != RP_DELETED) {
                seterr(c->err, sizeof c->err, "delete %llu: expected DELETED", ids[i]);
                goto fail;
            }
        }
        deleted += acked;
        held = 0;
        for (size_t i = acked; i < acked + k; i++) {
            if (rep[i].kind == RP_RESERVED)
                ids[held++] = rep[i].id;
            else if (rep[i].kind != RP_TIMED_OUT && rep[i].kind != RP_DEADLINE_SOON) {
                seterr(c->err, sizeof c->err, "reserve: expected RESERVED or TIMED_OUT");
                goto fail;
            }
        }
        reserved += held;
    }
    run->t_end = now_ns();
    free(ids);
    free(rep);
    return NULL;

fail:
    free(ids);
    free(rep);
    run_fail(run, 1);
    return NULL;
}

int
peer_beanstalkd_run(const char *workdir, size_t body, size_t batch, size_t n, PeerResult *r)
{
    Server srv = { 0 };
    Run run = { .prod = { .fd = -1 }, .cons = { .fd = -1 }, .batch = batch, .n = n };
    char *putcmd = NULL;
    pthread_t th[2];
    int started = 0, rc = -1, hl;
    int64_t t0;

    memset(r, 0, sizeof *r);
    if (!workdir || !*workdir || batch == 0 || n == 0) {
        seterr(r->err, sizeof r->err, "peer_beanstalkd_run: need a workdir, batch > 0, n > 0");
        return -1;
    }
    if (server_start(&srv, workdir, body, r->err, sizeof r->err) == -1)
        goto done;
    if (conn_open(&run.prod, srv.port, body, &run.stop) == -1 ||
        conn_open(&run.cons, srv.port, body, &run.stop) == -1 ||
        server_check(&srv, &run.prod) == -1) {
        seterr(r->err, sizeof r->err, "%s", run.prod.err[0] ? run.prod.err : run.cons.err);
        goto done;
    }

    /* Every put is the same bytes: build the command once. */
    hl = snprintf(NULL, 0, "put 0 0 %d %zu\r\n", BS_TTR, body);
    putcmd = xrealloc(NULL, (size_t)hl + body + 3);
    snprintf(putcmd, (size_t)hl + 1, "put 0 0 %d %zu\r\n", BS_TTR, body);
    for (size_t i = 0; i < body; i++)
        putcmd[hl + i] = (char)('a' + i % 26);
    memcpy(putcmd + hl + body, "\r\n", 2);
    run.putcmd = putcmd;
    run.putlen = (size_t)hl + body + 2;
    if (batch == 1)
        run.lat = xrealloc(NULL, n * sizeof *run.lat);

    t0 = now_ns();
    if ((errno = pthread_create(&th[0], NULL, producer, &run)) != 0) {
        seterr(r->err, sizeof r->err, "pthread_create: %s", strerror(errno));
        goto done;
    }
    started = 1;
    if ((errno = pthread_create(&th[1], NULL, consumer, &run)) != 0) {
        seterr(r->err, sizeof r->err, "pthread_create: %s", strerror(errno));
        atomic_store(&run.stop, 1);
        goto done;
    }
    started = 2;
    for (; started > 0; started--)
        pthread_join(th[started - 1], NULL);

    switch (atomic_load(&run.failed)) {
    case 1:
        seterr(r->err, sizeof r->err, "beanstalkd producer: %s", run.prod.err);
        goto done;
    case 2:
        seterr(r->err, sizeof r->err, "beanstalkd consumer: %s", run.cons.err);
        goto done;
    }
    r->cycles_per_s = (double)n / ((double)(run.t_end - t0) / 1e9);
    if (run.lat) {
        qsort(run.lat, n, sizeof *run.lat, cmp_double);
        r->p50_us = pct(run.lat, n, 50);
        r->p99_us = pct(run.lat, n, 99);
    }
    rc = 0;

done:
    /* Only the producer can be running here: it gives up once stop is set. */
    for (; started > 0; started--)
        pthread_join(th[started - 1], NULL);
    conn_close(&run.prod);
    conn_close(&run.cons);
    server_stop(&srv);
    free(putcmd);
    free(run.lat);
    return rc;
}

/* ------------------------------------------------------------------ puts */

typedef struct PutRun {
    int port;
    size_t body;
    int64_t until;
    const char *cmd;
    size_t cmdlen;
    unsigned long long puts;
    char err[256];
} PutRun;

static void *
put_loop(void *arg)
{
    PutRun *p = arg;
    atomic_int stop = 0;
    Conn c = { .fd = -1 };
    char buf[256];

    if (conn_open(&c, p->port, p->body, &stop) == -1) {
        snprintf(p->err, sizeof p->err, "%s", c.err);
        return NULL;
    }
    while (now_ns() < p->until) {
        size_t off = 0, got = 0;

        while (off < p->cmdlen) {
            ssize_t w = send(c.fd, p->cmd + off, p->cmdlen - off, MSG_NOSIGNAL);
            if (w <= 0) {
                snprintf(p->err, sizeof p->err, "send: %s", strerror(errno));
                goto out;
            }
            off += (size_t)w;
        }
        while (got < 2 || memcmp(buf + got - 2, "\r\n", 2) != 0) {
            ssize_t r = recv(c.fd, buf + got, sizeof buf - 1 - got, 0);
            if (r <= 0 || got + (size_t)r >= sizeof buf - 1) {
                snprintf(p->err, sizeof p->err, "recv: %s", r == 0 ? "closed" : strerror(errno));
                goto out;
            }
            got += (size_t)r;
        }
        if (strncmp(buf, "INSERTED ", 9) != 0) {
            buf[got] = '\0';
            snprintf(p->err, sizeof p->err, "unexpected reply: %.60s", buf);
            goto out;
        }
        p->puts++;
    }
out:
    conn_close(&c);
    return NULL;
}

int
peer_beanstalkd_puts(const char *workdir, size_t body, unsigned conns, double seconds, PeerResult *r)
{
    Server srv = { 0 };
    PutRun *runs = NULL;
    pthread_t *th = NULL;
    char *cmd = NULL;
    int rc = -1, hl;
    unsigned started = 0;

    memset(r, 0, sizeof *r);
    if (server_start(&srv, workdir, body, r->err, sizeof r->err) == -1)
        goto done;
    hl = snprintf(NULL, 0, "put 0 0 %d %zu\r\n", BS_TTR, body);
    cmd = xrealloc(NULL, (size_t)hl + body + 3);
    snprintf(cmd, (size_t)hl + 1, "put 0 0 %d %zu\r\n", BS_TTR, body);
    memset(cmd + hl, 'x', body);
    memcpy(cmd + hl + body, "\r\n", 2);
    runs = calloc(conns, sizeof *runs);
    th = calloc(conns, sizeof *th);
    if (!runs || !th)
        goto done;
    int64_t t0 = now_ns(), until = t0 + (int64_t)(seconds * 1e9);
    for (; started < conns; started++) {
        runs[started] = (PutRun){ .port = srv.port, .body = body, .until = until, .cmd = cmd,
                                  .cmdlen = (size_t)hl + body + 2 };
        if (pthread_create(&th[started], NULL, put_loop, &runs[started]) != 0)
            break;
    }
    unsigned long long total = 0;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        total += runs[i].puts;
        if (runs[i].err[0] && !r->err[0])
            snprintf(r->err, sizeof r->err, "beanstalkd put: %.200s", runs[i].err);
    }
    double dt = (double)(now_ns() - t0) / 1e9;
    if (!r->err[0]) {
        r->cycles_per_s = (double)total / dt;
        rc = 0;
    }
done:
    server_stop(&srv);
    free(runs);
    free(th);
    free(cmd);
    return rc;
}
