/* sealer.h: the seal timer of a stage that fills batches (batch,
 * pg_extract).
 *
 * Every min(1 s, seconds/4) a Sealer commits staging_seal_due for its
 * models, which seals (or, by the policy's reject thresholds, holds) an open
 * batch older than its policy's after_s, and logs every batch it sealed or
 * held once that is committed, with those the stage's own appends sealed
 * (sealer_note: a batch that reached its rows), each batch once. It commits
 * only while a non-empty batch of its models may be open: after
 * sealer_touch (rows were appended), until a commit of it finds none. */
#ifndef PL_STAGES_SEALER_H
#define PL_STAGES_SEALER_H

#include "stage.h"
#include "staging.h"

#include <pthread.h>

#define SEALER_LOGGED 64

typedef struct SealerOp SealerOp;

typedef struct Sealer {
    /* private */
    Stage *stage;
    const char **models;        /* n models it seals, each with its policy */
    const SealPolicy **pols;
    size_t n, cap;
    ev_timer timer;
    SealerOp *op;
    int busy, dirty, stopped;
    pthread_mutex_t mu;         /* guards noted: the appends note on the writer thread */
    uint64_t *noted;
    size_t nnoted, capnoted;
    uint64_t logged[SEALER_LOGGED];
    size_t nlogged;
} Sealer;

/* The keys of a kind that fills batches, its seal policy: rows (seal a
 * batch at this many rows, default 10000) and seconds (seal an open batch
 * this long after it opened, default 5). sealer_conf reads them into pol
 * (and no thresholds of rejects). 0 or PL_EINVAL with err set. */
#define SEALER_KEY_ROWS {"rows", KEY_UINT, 0, 1, UINT32_MAX, NULL, NULL}
#define SEALER_KEY_SECONDS {"seconds", KEY_SECS, 0, 0.01, CONF_SECS_MAX, NULL, NULL}
int sealer_conf(const Stage *s, SealPolicy *pol, char *err, size_t errlen);

/* sealer_init readies z for stage s with a tick of min(1 s, seconds/4);
 * sealer_add adds a model it seals and its policy (both must outlive z);
 * sealer_start starts the timer. */
void sealer_init(Sealer *z, Stage *s, double seconds);
void sealer_add(Sealer *z, const char *model, const SealPolicy *pol);
void sealer_start(Sealer *z);

/* sealer_touch says a batch of z's models may be open (rows were appended,
 * or are about to be: call it before submitting the commit that appends). */
void sealer_touch(Sealer *z);

/* sealer_note records that an append of the stage sealed batch id: it is
 * logged once a commit of z confirms it (the append's transaction may have
 * failed or run again). Callable on the writer thread. */
void sealer_note(Sealer *z, uint64_t id);

/* sealer_stop stops the timer (drain). sealer_busy says whether a commit
 * of z is in flight (its fini must then leave z to it). sealer_free frees
 * what z holds; a zeroed z that sealer_init never readied holds nothing. */
void sealer_stop(Sealer *z);
int sealer_busy(const Sealer *z);
void sealer_free(Sealer *z);

#endif
