/* observe.h: what the engine tells about itself, and how it knows.
 *
 * What is in the store (the queues, the batches by model and state, the
 * rejects by reason, the map and the disk under it) is read into a
 * Snapshot by a thread of its own, so that the loop never scans: an
 * endpoint asks for a snapshot at most OBSERVE_FRESH_MS old and is answered
 * at once, or as soon as the thread has read a fresh one (the exchange
 * waits, the loop does not). What is in memory (the stages' counters, the
 * dependency failures, the throughput history) is read on the loop when
 * the answer is written.
 *
 * The endpoints (each registered by observe_open when there is a listener):
 *   GET /health    liveness: 200 while the loop answers (public)
 *   GET /ready     readiness: 200, or 503 with the reasons (public; the
 *                  reasons name stages and batches, never an error's text):
 *                  a stage whose dependency failed its last N attempts, the
 *                  disk nearly full (under disk_min free) or the map (over
 *                  OBSERVE_MAP_FULL of map_max), a batch sealed and not
 *                  loaded for batch_wait (qload is not loading), draining;
 *                  N, disk_min and batch_wait: the pipeline's health:
 *   GET /metrics   Prometheus text format 0.0.4 (metrics.c)
 *   GET /          the status page; GET /status its JSON (status.c)
 *
 * Private to engine/runtime: engine.c opens, ticks and closes it. */
#ifndef PL_OBSERVE_H
#define PL_OBSERVE_H

#include "engine.h"
#include "listen.h"
#include "queue.h"
#include "staging.h"
#include "store.h"
#include "strbuf.h"

#include <stdint.h>

#define OBSERVE_FRESH_MS 1000      /* an answer's store data is at most this old */
#define OBSERVE_MAP_FULL 0.9       /* of map_max used: not ready */
#define OBSERVE_HISTORY 180        /* throughput samples kept: 15 minutes... */
#define OBSERVE_HISTORY_S 5        /* ...of one every 5 s */
#define OBSERVE_REASONS_MAX 200    /* distinct reject reasons counted; the rest are "other" */
#define OBSERVE_NBATCH (BATCH_FAILED + 1)

/* ObsModel: the batches of one model. */
typedef struct ObsModel {
    char name[128];
    uint64_t batches[OBSERVE_NBATCH]; /* by state */
    uint64_t rows[OBSERVE_NBATCH];    /* rows of those batches (less the ones qload rejected) */
    uint64_t waiting_ms;              /* sealed_ms of its oldest sealed or loading batch; 0 none */
    uint64_t waiting_id;              /* that batch */
} ObsModel;

/* ObsReason: the rejects of one model that failed one rule on one field. */
typedef struct ObsReason {
    char model[128], field[96], rule[32];
    uint64_t n;
} ObsReason;

/* Snapshot: the store as read at ms. */
typedef struct Snapshot {
    uint64_t ms, mono_ns;
    int rc;                 /* the read failed: 0 or why (the lists are then empty) */
    QueueStats *queues;
    size_t nqueues;
    ObsModel *models;
    size_t nmodels;
    ObsReason *reasons;
    size_t nreasons;
    uint64_t rejects;       /* all of them */
    StoreInfo info;
    int disk_known;         /* statvfs of the data directory worked */
    uint64_t disk_free, disk_size; /* bytes available to the engine, and in all */
} Snapshot;

/* ObsHistory: the throughput samples, oldest first: at t_ms[i] the stages
 * had done done[i] jobs in all (counters since the start). */
typedef struct ObsHistory {
    size_t n;
    uint64_t t_ms[OBSERVE_HISTORY], done[OBSERVE_HISTORY];
} ObsHistory;

typedef struct Observe Observe;

/* observe_open starts the reader thread and registers the endpoints on
 * the engine's listener (if any); observe_close stops and frees it (after
 * the listener closed: exchanges still waiting are not answered). */
Observe *observe_open(Engine *e);
void observe_close(Observe *o);

/* observe_tick is the engine's tick (1 s): a history sample every
 * OBSERVE_HISTORY_S. */
void observe_tick(Observe *o);

/* ObserveFn answers x with s, on the loop thread. */
typedef void (*ObserveFn)(Engine *e, const Snapshot *s, Exchange *x);

/* observe_with calls fn(e, snapshot, x) with a snapshot at most
 * OBSERVE_FRESH_MS old: now, or once the thread read one. */
void observe_with(Engine *e, Exchange *x, ObserveFn fn);

/* observe_reasons calls add(arg, reason) for each reason the engine is not
 * ready (none: ready) and returns how many there were. */
size_t observe_reasons(Engine *e, const Snapshot *s, void (*add)(void *arg, const char *reason),
                       void *arg);

/* observe_history returns the throughput samples. */
const ObsHistory *observe_history(Engine *e);

/* The answers (metrics.c, status.c). */
void metrics_answer(Engine *e, const Snapshot *s, Exchange *x);
void status_answer(Engine *e, const Snapshot *s, Exchange *x);
void status_page(void *arg, Exchange *x);

#endif
