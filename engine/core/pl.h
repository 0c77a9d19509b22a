/* pl.h: what every part of pickline shares: error codes, pl_strerror, the
 * allocator wrappers (out of memory aborts), clocks and one-line logging. */
#ifndef PL_H
#define PL_H

#include <stddef.h>
#include <stdint.h>

/* Our own error codes sit in a reserved negative range below LMDB's
 * (-30799..-30780); errno values are positive and pass through, and so do
 * LMDB's own codes. pl_strerror() names all three kinds. */
enum {
    PL_EFIRST = -30900,
    PL_ENOJOB = PL_EFIRST, /* no job with that id */
    PL_ENOQUEUE,           /* no queue with that name */
    PL_EEMPTY,             /* no job ready in the queue */
    PL_EPAUSED,            /* the queue is paused */
    PL_ELEASE,             /* the caller's lease is not (or no longer) held */
    PL_ESTATE,             /* the job is not in a state that allows this */
    PL_EFULL,              /* no room for new jobs (map limit); acks still work */
    PL_ETOOBIG,            /* a body, key or reason over its limit */
    PL_EINVAL,             /* a bad argument: name, priority, ... */
    PL_EFORMAT,            /* an on-disk record of an unknown format version */
    PL_ENOTDATA,           /* the directory is not a pickline data directory */
    PL_EUNUSABLE,          /* a transaction that failed earlier; abort it */
    PL_ECORRUPT,           /* an on-disk record that does not decode (damaged store) */
    PL_ENOROW,             /* no staged row (model, key) */
    PL_ENOBATCH,           /* no batch with that id (or no row of that seq in it) */
    PL_ENOREJECT,          /* no reject with that id */
    PL_ENOPIPELINE,        /* no pipeline file kept in the data directory */
    PL_ELAST
};

/* pl_strerror returns a static description of err: one of ours, LMDB's or errno's. */
const char *pl_strerror(int err);

/* Allocation: these never return NULL; out of memory aborts with a message.
 * The durable state is in LMDB and restart is the recovery path. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* pl_now_ms returns wall-clock milliseconds since the epoch (persisted times:
 * leases and delays survive a restart). pl_mono_ns returns a monotonic clock
 * in nanoseconds for measuring intervals. */
uint64_t pl_now_ms(void);
uint64_t pl_mono_ns(void);

/* pl_random64 returns a random non-zero 64-bit number from a fast
 * generator (xorshift128+, seeded from getrandom() once per thread): for
 * jitter and lease tokens, never for a secret an outsider must not guess. */
uint64_t pl_random64(void);

/* pl_random_bytes fills buf with n bytes from the kernel's CSPRNG
 * (getrandom(2)); for secrets (callback tokens). Returns 0 or an errno. */
int pl_random_bytes(void *buf, size_t n);

/* Logging: one line per event, whatever the message holds (line breaks in
 * it are folded: pl_oneline), written with one write(2) so that the lines
 * of several threads never mix. To stderr, or to the file pl_log_open
 * named. Two formats:
 *   text  2024-05-01T12:00:00.123Z info stage=NAME job=ID message
 *         (stage= and job= only when the event has them)
 *   json  {"time":"2024-05-01T12:00:00.123Z","level":"info","message":"...",
 *          "stage":"NAME","job":ID}  (stage and job null when it has none;
 *         any byte that is not valid UTF-8 becomes U+FFFD)
 * The level and format are set once at start (pickline run's flags),
 * before any thread logs. */
enum { PL_LOG_ERROR, PL_LOG_WARN, PL_LOG_INFO, PL_LOG_DEBUG };
enum { PL_LOG_TEXT, PL_LOG_JSON };
extern int pl_log_level;  /* events above it are not written; PL_LOG_INFO */
extern int pl_log_format; /* PL_LOG_TEXT */
void pl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pl_logx logs an event of stage (NULL: none) and job (0: none). */
void pl_logx(int level, const char *stage, uint64_t job, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* pl_log_level_parse returns the level named s ("error", "warn", "info",
 * "debug"), or -1; pl_log_format_parse the format ("text", "json"), or -1. */
int pl_log_level_parse(const char *s);
int pl_log_format_parse(const char *s);

/* pl_log_open sends the log to the file at path (opened to append, created
 * 0640 if missing) instead of stderr. Returns 0 or an errno value (the log
 * stays where it was). */
int pl_log_open(const char *path);

/* pl_log_reopen opens the log file's path again, for a log rotator that
 * renamed it (SIGUSR1): the lines after it go to the new file. A no-op
 * returning 0 while the log goes to stderr; on failure the log stays on the
 * old file and the errno value is returned. Safe while other threads log. */
int pl_log_reopen(void);

/* pl_log_path returns the log file's path, or NULL for stderr. */
const char *pl_log_path(void);

/* pl_oneline folds string s, in a buffer of size bytes, into one line:
 * each line break (CR, LF), with the spaces and tabs around it, becomes
 * "; " (none at the end), and other control characters become spaces;
 * what no longer fits in size is cut. For messages of other programs that
 * span lines, like libpq's ("...failed: Connection refused\n\tIs the
 * server running...?\n"). Returns s. */
char *pl_oneline(char *s, size_t size);

/* PL_ASSERT stays on in release builds; msg names the broken rule. */
#define PL_ASSERT(cond, msg) \
    ((cond) ? (void)0 : pl_assert_fail(__FILE__, __LINE__, #cond, (msg)))
_Noreturn void pl_assert_fail(const char *file, int line, const char *expr, const char *msg);

/* container_of returns the struct T whose member m is at p: how a libev
 * watcher or an op embedded in its owner finds the owner again (libev's
 * "associating custom data with a watcher"). */
#define container_of(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

/* Big-endian encoding for LMDB keys, so cursor order is numeric order. */
static inline void pl_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}
static inline void pl_put_be64(unsigned char *p, uint64_t v)
{
    pl_put_be32(p, (uint32_t)(v >> 32));
    pl_put_be32(p + 4, (uint32_t)v);
}
static inline uint32_t pl_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t pl_get_be64(const unsigned char *p)
{
    return (uint64_t)pl_get_be32(p) << 32 | pl_get_be32(p + 4);
}

#endif
