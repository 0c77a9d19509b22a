/* util.c: allocator wrappers, error names, clocks, random tokens, logging
 * (text or JSON lines, to stderr or a file reopened on demand). */
#include "pl.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int pl_log_level = PL_LOG_INFO;

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "pickline: out of memory allocating %zu bytes; aborting "
                    "(durable state is safe on disk, restart to recover)\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static const char *const names[PL_ELAST - PL_EFIRST] = {
    [PL_ENOJOB - PL_EFIRST] = "no such job",
    [PL_ENOQUEUE - PL_EFIRST] = "no such queue",
    [PL_EEMPTY - PL_EFIRST] = "no job ready",
    [PL_EPAUSED - PL_EFIRST] = "queue is paused",
    [PL_ELEASE - PL_EFIRST] = "lease not held (it expired, or the job was reserved again)",
    [PL_ESTATE - PL_EFIRST] = "job is not in a state that allows this",
    [PL_EFULL - PL_EFIRST] = "no room for new jobs: the data map reached its size limit",
    [PL_ETOOBIG - PL_EFIRST] = "value over its size limit",
    [PL_EINVAL - PL_EFIRST] = "invalid argument",
    [PL_EFORMAT - PL_EFIRST] = "record in a format version this pickline does not know (written by a newer pickline)",
    [PL_ENOTDATA - PL_EFIRST] = "not a pickline data directory",
    [PL_EUNUSABLE - PL_EFIRST] = "transaction is unusable after an earlier error",
    [PL_ECORRUPT - PL_EFIRST] = "damaged record in the store (run `qctl verify` for details)",
    [PL_ENOROW - PL_EFIRST] = "no such staged row",
    [PL_ENOBATCH - PL_EFIRST] = "no such batch",
    [PL_ENOREJECT - PL_EFIRST] = "no such reject",
    [PL_ENOPIPELINE - PL_EFIRST] = "no pipeline file kept in the data directory",
};

const char *pl_strerror(int err)
{
    if (err >= PL_EFIRST && err < PL_ELAST)
        return names[err - PL_EFIRST];
    if (err == ENOSPC)
        return "disk full (no space left on device)";
    return mdb_strerror(err); /* LMDB's codes, and strerror() for errno */
}

uint64_t pl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t pl_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift128+, seeded per thread from the kernel's random pool. Lease tokens
 * need to be unguessable only by accident, not by an adversary on the box. */
static _Thread_local uint64_t rs[2];

uint64_t pl_random64(void)
{
    if (!rs[0] && !rs[1]) {
        if (getrandom(rs, sizeof rs, 0) != sizeof rs) {
            rs[0] = pl_mono_ns() ^ (uint64_t)(uintptr_t)&rs;
            rs[1] = pl_now_ms() * 0x9E3779B97F4A7C15ull;
        }
        rs[0] |= 1;
    }
    for (;;) {
        uint64_t s1 = rs[0];
        const uint64_t s0 = rs[1];
        rs[0] = s0;
        s1 ^= s1 << 23;
        rs[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        uint64_t r = rs[1] + s0;
        if (r)
            return r;
    }
}

int pl_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---------------------------------------------------------------- logging */

int pl_log_format = PL_LOG_TEXT;

/* The log's descriptor: stderr, or the file of pl_log_open. A reopen puts
 * the new file in place with dup2, which is atomic: a thread writing a
 * line writes it whole to the old file or to the new one. */
static int log_fd = 2;
static char *log_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int pl_log_level_parse(const char *s)
{
    for (int i = 0; i <= PL_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int pl_log_format_parse(const char *s)
{
    return strcmp(s, "text") == 0 ? PL_LOG_TEXT : strcmp(s, "json") == 0 ? PL_LOG_JSON : -1;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int pl_log_open(const char *path)
{
    int fd = open_log(path);
    if (fd < 0)
        return -fd;
    if (log_fd != 2)
        close(log_fd);
    log_fd = fd;
    free(log_path);
    log_path = xstrdup(path);
    return 0;
}

int pl_log_reopen(void)
{
    if (!log_path)
        return 0;
    int fd = open_log(log_path);
    if (fd < 0)
        return -fd;
    int rc = dup2(fd, log_fd) < 0 ? errno : 0;
    close(fd);
    return rc;
}

const char *pl_log_path(void)
{
    return log_path;
}

/* fold writes src into dst (cap bytes, NUL included) folded into one line
 * (pl_oneline); what does not fit is cut. */
static void fold(const char *r, char *dst, size_t cap)
{
    char *w = dst, *end = dst + cap - 1;
    while (*r && w < end) {
        if (*r == '\n' || *r == '\r') {
            while (w > dst && (w[-1] == ' ' || w[-1] == '\t'))
                w--;
            while (*r == '\n' || *r == '\r' || *r == ' ' || *r == '\t')
                r++;
            if (*r && w > dst && end - w >= 2) {
                *w++ = ';';
                *w++ = ' ';
            }
        } else {
            unsigned char c = (unsigned char)*r++;
            *w++ = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
    }
    *w = '\0';
}

char *pl_oneline(char *s, size_t size)
{
    char buf[2048];
    size_t n = strlen(s);
    char *copy = n < sizeof buf ? memcpy(buf, s, n + 1) : xstrdup(s);
    fold(copy, s, size);
    if (copy != buf)
        free(copy);
    return s;
}

/* utf8_len returns the length of the well-formed UTF-8 sequence at p (at
 * most n bytes), or 0 when there is none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
               : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || len > n || (len == 2 && p[0] < 0xc2) || (len == 4 && p[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((len == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (len == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
        (len == 4 && p[0] == 0xf0 && p[1] < 0x90) || (len == 4 && p[0] == 0xf4 && p[1] >= 0x90))
        return 0; /* overlong, a surrogate, or past U+10FFFF */
    return len;
}

/* Line: the log line being built, in a fixed buffer (no allocation per
 * event); what does not fit is cut. */
typedef struct Line {
    char b[16384];
    size_t n;
} Line;

static void line_add(Line *l, const char *s, size_t n)
{
    if (n > sizeof l->b - 2 - l->n) /* room for the newline */
        n = sizeof l->b - 2 - l->n;
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

static void line_adds(Line *l, const char *s)
{
    line_add(l, s, strlen(s));
}

/* line_json_string appends s as a JSON string (valid UTF-8 whatever s is). */
static void line_json_string(Line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    line_add(l, "\"", 1);
    while (n > 0) {
        char esc[8];
        size_t k = utf8_len(p, n);
        if (k == 0) {
            line_adds(l, "\\ufffd");
            k = 1;
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            line_add(l, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            line_adds(l, esc);
        } else {
            line_add(l, (const char *)p, k);
        }
        p += k;
        n -= k;
    }
    line_add(l, "\"", 1);
}

static void vlog(int level, const char *stage, uint64_t job, const char *fmt, va_list ap)
{
    if (level > pl_log_level)
        return;
    if (level < PL_LOG_ERROR)
        level = PL_LOG_ERROR;
    char ts[40], tsz[64], raw[2048], msg[2048], num[24];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tsz, sizeof tsz, "%s.%03uZ", ts, (unsigned)(now.tv_nsec / 1000000) % 1000u);
    vsnprintf(raw, sizeof raw, fmt, ap);
    fold(raw, msg, sizeof msg);
    snprintf(num, sizeof num, "%llu", (unsigned long long)job);
    Line l;
    l.n = 0;
    if (pl_log_format == PL_LOG_JSON) {
        line_adds(&l, "{\"time\":\"");
        line_adds(&l, tsz);
        line_adds(&l, "\",\"level\":\"");
        line_adds(&l, level_names[level]);
        line_adds(&l, "\",\"message\":");
        line_json_string(&l, msg);
        line_adds(&l, ",\"stage\":");
        if (stage)
            line_json_string(&l, stage);
        else
            line_adds(&l, "null");
        line_adds(&l, ",\"job\":");
        line_adds(&l, job ? num : "null");
        line_adds(&l, "}");
    } else {
        line_adds(&l, tsz);
        line_adds(&l, " ");
        line_adds(&l, level_names[level]);
        line_adds(&l, " ");
        if (stage) {
            line_adds(&l, "stage=");
            line_adds(&l, stage);
            line_adds(&l, " ");
        }
        if (job) {
            line_adds(&l, "job=");
            line_adds(&l, num);
            line_adds(&l, " ");
        }
        line_adds(&l, msg);
    }
    l.b[l.n++] = '\n';
    for (const char *p = l.b; l.n > 0;) {
        ssize_t w = write(log_fd, p, l.n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere to say it */
        p += w;
        l.n -= (size_t)w;
    }
}

void pl_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, 0, fmt, ap);
    va_end(ap);
}

void pl_logx(int level, const char *stage, uint64_t job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, stage, job, fmt, ap);
    va_end(ap);
}

void pl_assert_fail(const char *file, int line, const char *expr, const char *msg)
{
    fprintf(stderr, "pickline: %s:%d: assertion '%s' failed: %s\n", file, line, expr, msg);
    abort();
}
