/* util.c: allocator wrappers, error names, clocks, random tokens, logging. */
#include "pl.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

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

void pl_log(int level, const char *fmt, ...)
{
    static const char *const lv[] = {"error", "warn", "info", "debug"};
    if (level > pl_log_level)
        return;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %s %s\n", ts, lv[level], line);
}

void pl_assert_fail(const char *file, int line, const char *expr, const char *msg)
{
    fprintf(stderr, "pickline: %s:%d: assertion '%s' failed: %s\n", file, line, expr, msg);
    abort();
}
