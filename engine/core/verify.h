/* verify.h: a whole-store check (`qctl verify`), like LMDB's mdb_stat and
 * Redis's redis-check-aof: walk every record of a data directory, decode
 * it, and check that the indexes and counters agree with the jobs.
 *
 * It reads one consistent snapshot (a read transaction): the engine may
 * run beside it. It repairs nothing; it says what it found, one problem
 * per call of the report function, each naming the record and its key. */
#ifndef PL_VERIFY_H
#define PL_VERIFY_H

#include "store.h"

#include <stdint.h>

typedef struct VerifyCounts {
    uint64_t records;     /* every key/value read */
    uint64_t jobs, bodies, index, keys, retained_keys, queues, staged, meta;
    uint64_t problems;
} VerifyCounts;

/* VerifyFn gets one problem: what (a short record name: "job 42",
 * "queue 'x'", "index r/...") and why. */
typedef void (*VerifyFn)(void *arg, const char *what, const char *why);

/* store_verify checks s in one read transaction, calls report for each
 * problem (at most max_reports; the count goes on) and fills *out.
 * Returns 0 when the walk finished (problems or not: see out->problems),
 * or the LMDB error that stopped it. */
int store_verify(Store *s, VerifyFn report, void *arg, uint64_t max_reports, VerifyCounts *out);

#endif
