/* t.h: the test harness. Each test runs in its own process (fork) with a
 * fresh temporary data directory (t_dir()); a failed check prints file:line
 * and the expression, and the process exits non-zero. The runner prints
 * "PASS suite.name" / "FAIL suite.name" per test and "N passed, N failed". */
#ifndef T_H
#define T_H

#include <stdint.h>
#include <stdio.h>

typedef struct TCase {
    const char *name;
    void (*fn)(void);
} TCase;

#define T_CASE(fn) {#fn, fn}

_Noreturn void t_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define T_CHECK(cond) \
    do { if (!(cond)) t_fail(__FILE__, __LINE__, "check failed: %s", #cond); } while (0)
#define T_EQ(a, b) \
    do { long long a_ = (long long)(a), b_ = (long long)(b); \
         if (a_ != b_) t_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define T_OK(expr) \
    do { int rc_ = (expr); \
         if (rc_ != 0) t_fail(__FILE__, __LINE__, "%s returned %d (%s)", #expr, rc_, pl_strerror(rc_)); } while (0)
#define T_ERR(expr, want) \
    do { int rc_ = (expr), w_ = (want); \
         if (rc_ != w_) t_fail(__FILE__, __LINE__, "%s returned %d (%s), wanted %d (%s)", #expr, \
                               rc_, pl_strerror(rc_), w_, pl_strerror(w_)); } while (0)

/* t_dir returns this test's fresh temporary directory (removed afterwards). */
const char *t_dir(void);

/* t_root returns the top of the tree: the working directory (tests/run runs
 * there) or three levels above the test program (build/VARIANT/tests/). */
const char *t_root(void);

/* t_main runs the cases named on the command line (all when none). */
int t_main(int argc, char **argv, const char *suite, const TCase *cases);

#endif
