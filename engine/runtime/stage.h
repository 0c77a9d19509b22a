/* stage.h: the contract between the engine (slot.c, hold.c, apply.c) and a stage kind
 * (one file per kind in stages/).
 *
 * A stage with an input queue gets its jobs in slots: the engine reserves
 * jobs into free slots (at most `concurrency` in flight) and calls
 * kind->start(slot) on the loop thread. The kind works the job without ever
 * blocking (HTTP through the stage's HttpClass) and ends it with exactly one
 * of slot_done, slot_retry or slot_bury. Output jobs and staging writes
 * recorded on the slot (slot_put, slot_row_land, slot_row_merge) commit in
 * ONE transaction with the ack of the input job: a hand-off is atomic.
 *
 * A source (no input queue, e.g. http_poll) drives itself from timers and
 * commits what it found with an Emit (emit_put, emit_cursor, emit_commit):
 * the jobs and the cursor move in one transaction. (A "batch" is only ever
 * a batch of staged rows for qload: staging.h.) */
#ifndef PL_STAGE_H
#define PL_STAGE_H

#include "commit.h"
#include "http.h"
#include "pipeline.h"
#include "row.h"

#include <ev.h>
#include <stdint.h>

typedef struct Engine Engine;
typedef struct Stage Stage;
typedef struct Slot Slot;
typedef struct Emit Emit;

/* StageKind: a stage kind (one file in stages/). It starts with its
 * KindSpec (pipeline.h): the name, flags and keys pipeline_load checks a
 * stage against. The engine is handed the list of kinds (engine_open) and
 * finds each stage's by name.
 *
 * slot_size: a stage with an input queue has `concurrency` slots; before
 * init the engine gives each slot a zeroed block of slot_size bytes as its
 * data (0: none), and frees them after fini. slot_init (may be NULL) sets
 * up what the kind keeps in one slot's data (buffers); the engine calls it
 * for each slot once init succeeded. slot_fini (may be NULL) releases
 * that; the engine calls it for each slot slot_init set up, after fini,
 * when no commit is in flight any more. */
typedef struct StageKind {
    KindSpec spec;
    size_t slot_size;
    int (*init)(Stage *s, char *err, size_t errlen); /* read conf; set s->data */
    void (*slot_init)(Slot *slot);               /* set up slot->data (may be NULL) */
    void (*start)(Slot *slot);                   /* work one job (stages with an input) */
    void (*begin)(Stage *s);                     /* producers: start producing (may be NULL) */
    void (*stop)(Stage *s);                      /* drain: stop producing (may be NULL) */
    void (*fini)(Stage *s);                      /* free s->data (may be NULL) */
    void (*slot_fini)(Slot *slot);               /* release slot->data (may be NULL) */
    /* take_row (may be NULL): take a row sent to the stage's input queue
     * inside the sender's commit, on the writer thread, instead of the
     * reference job that would wait in the queue (a fused hand-off, see
     * slot_take_row). Follows CommitOp.apply's rules. Sets *taken to 1
     * when it took the row, 0 when it declines (the reference goes on the
     * queue and a slot works it as usual); returns 0 or an error (fails
     * the hand-off). */
    int (*take_row)(Stage *s, Txn *t, const char *model, const char *key, uint64_t version,
                    const void *mp, size_t len, int *taken);
    /* took_rows (may be NULL): on the loop thread, after a commit in which
     * take_row took rows (the batch stage's sealer learns that a batch may
     * be open). */
    void (*took_rows)(Stage *s);
} StageKind;

/* The job latency histogram of a stage (start -> committed, in seconds):
 * bucket i < STAGE_LAT_BOUNDS counts the jobs of at most stage_lat_bounds[i]
 * that are over the bound before it; the last bucket the rest (+Inf). The
 * one table behind the counters (slot.c) and /metrics (api.c). */
#define STAGE_LAT_BOUNDS 11
extern const double stage_lat_bounds[STAGE_LAT_BOUNDS];

typedef struct StageCounters {
    uint64_t done, retried, buried, failed_commits;
    uint64_t dep_failures;  /* attempts at the stage's dependency that failed in a row */
    uint64_t lat_buckets[STAGE_LAT_BOUNDS + 1];
    double lat_sum;
} StageCounters;

struct Stage {
    /* read-only for kinds */
    Engine *engine;
    const StageConf *conf;
    const StageKind *kind;
    struct ev_loop *loop;
    HttpClass *http;
    unsigned in_flight;     /* jobs being worked or committed */
    int draining;
    StageCounters ctr;
    /* read-write for kinds */
    void *data;             /* the kind's data for the stage (init sets it) */
    /* private (slot.c, hold.c) */
    Slot *slots;
    unsigned nslots;
    unsigned reserving;     /* reserves in flight */
    void *rsv;              /* nrsv reservers (hold.c) */
    unsigned nrsv;
    int slots_set;          /* the kind's slot_init ran */
    char dep_error[240];    /* the last failure stage_dep_failed noted */
};

struct Slot {
    /* read-only for kinds */
    Stage *stage;
    uint64_t id, lease;     /* lease: 0, the engine holds its jobs in memory */
    uint32_t attempts;      /* the attempt this is (1 the first time) */
    uint32_t pri;           /* the job's priority (lower is more urgent) */
    Strbuf body;            /* the job's body (JSON), NUL-terminated */
    /* read-write for kinds */
    void *data;             /* the kind's slot_size bytes, allocated by the engine */
    HttpReq *req;           /* the kind's request in flight, for drain to cancel */
    /* private */
    int state;
    uint32_t qid;           /* the queue the job is held from (queue_hold_n) */
    uint32_t flight;        /* its entry in the in-flight file (hold.c) */
    uint64_t started_ns;
    Strbuf acts;
    void *op;
    msgpack_sbuffer bmp;    /* the body decoded by slot_body */
    RowView bview;
    int body_ok;
    int pri_set;            /* out_pri is decided (slot_priority) */
    uint32_t out_pri;
};

/* slot_body decodes the slot's job body, a JSON object, and sets *root to
 * it (a msgpack map): once per job, into buffers the slot owns, so that a
 * kind and the helpers it calls share one decode. The view is valid until
 * the slot takes its next job. Returns 0, or PL_EINVAL with err saying why
 * the body is not a JSON object ("invalid JSON at byte N: ..."). */
int slot_body(Slot *s, const msgpack_object **root, char *err, size_t errlen);

/* slot_priority decides the priority of the slot's outputs (lower is more
 * urgent) and sets *pri. It is the input job's priority, unless the stage
 * says `priority: N` (then N) or `priority_field: F`: then it is the value
 * of field F of the record the outputs carry, when that record has one (not
 * null), which must be a whole number 0..4294967295 (never coerced: "3" is
 * not one). rec is that record (a msgpack map), when the kind holds it (the
 * validate stage: the normalised row); with rec NULL the runtime finds it:
 * the row the slot landed (slot_row_land), else the job body when it has
 * field F, else the staged row the body references. Decided once per job:
 * a later call returns the same. Returns 0, or PL_EINVAL with err saying
 * which field holds what; the kind buries the job with it (slot_done does so
 * when the kind did not ask). Every output of the slot (slot_put,
 * slot_row_land, and a forward in place) gets this priority. */
int slot_priority(Slot *s, const msgpack_object *rec, uint32_t *pri, char *err, size_t errlen);

/* Outputs of a slot, committed with its ack by slot_done. queue must be one
 * of the stage's declared outputs. key: an idempotency key or NULL. */
void slot_put(Slot *s, const char *queue, const void *body, size_t len, const char *key);
/* slot_row_land lands a row: mp (a msgpack map) becomes a new instance of
 * the staged row (model, key) (staging.h), and a reference job naming it,
 * {"model":M,"key":K,"row_id":N}, goes on queue (one of the stage's
 * outputs). Two jobs that land the same key land two instances. */
void slot_row_land(Slot *s, const char *model, const char *key, const void *mp, size_t len,
                   const char *queue);
/* slot_row_merge sets fields to[i] of instance row of the staged row
 * (model, key) (0: the legacy row) from fields from[i] of src (a msgpack
 * map), in the commit (read-modify-write in the transaction); n is at most
 * SLOT_MERGE_MAX. A missing row fails the commit with PL_ENOROW: the job is
 * buried. */
#define SLOT_MERGE_MAX 64
void slot_row_merge(Slot *s, const char *model, const char *key, uint64_t row, const void *src,
                    size_t len, const char *const *from, const char *const *to, size_t n);
/* slot_take_row, inside a slot's commit (a slot_extra fn, writer thread):
 * offers the row mp of staged row (model, key), validated against model
 * version `version` (0: not validated; staging.h, "Model versions"), to
 * the stage fused to queue
 * (one of the slot's stage's outputs). A queue is fused when exactly one
 * stage reads it and that stage's kind takes rows (take_row: batch); the
 * row passes when the queue is idle (not paused, no job waiting: nothing
 * to overtake), counted as a put and an ack of the queue. Sets *taken to 1
 * when the row was taken in this transaction (no reference for queue is
 * needed), 0 when it was not (put the reference as usual); returns 0 or an
 * error. */
int slot_take_row(Slot *s, Txn *t, const char *queue, const char *model, const char *key,
                  uint64_t version, const void *mp, size_t len, int *taken);

/* slot_extra lets a kind run its own action in the same transaction (the
 * async callback registry); fn runs on the writer thread and must follow
 * CommitOp.apply's rules. arg must live until the slot ends. */
void slot_extra(Slot *s, int (*fn)(Txn *t, void *arg), void *arg);

/* slot_done commits the ack and the outputs; the slot is free afterwards. */
void slot_done(Slot *s);
/* slot_retry releases the job for a later attempt after at least after_s
 * seconds (and the queue's exponential backoff with jitter), noting error;
 * past the queue's max_attempts the queue buries it. */
void slot_retry(Slot *s, double after_s, const char *error);
/* slot_give_back ends a job the engine's drain cut short (a canceled call,
 * work the kind stopped): in the drain of a reload (SIGHUP) nothing is
 * written, so the job is ready again as it was, its attempts not counted
 * (reloads never bring a job nearer max_attempts); in the drain of a stop
 * it is slot_retry(s, 0, why), the attempt counted. */
void slot_give_back(Slot *s, const char *why);
/* slot_bury sets the job aside with reason (a permanent failure);
 * slot_buryf with the reason formatted as by printf. */
void slot_bury(Slot *s, const char *reason);
void slot_buryf(Slot *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Producers (sources, and a stage that produces on its own): an Emit is
 * one commit of what the stage found. emit_new starts one; emit_put adds an
 * output job (queue one of the stage's outputs, key an idempotency key or
 * NULL) at the stage's `priority:` (default 0), or with `priority_field: F`
 * at the value of the body's field F (a body without it gets the default;
 * one whose F is not a whole number 0..4294967295 too, with a warning
 * logged); emit_cursor sets the stage's cursor (stage_cursor reads it). */
Emit *emit_new(Stage *s);
void emit_put(Emit *e, const char *queue, const void *body, size_t len, const char *key);
void emit_cursor(Emit *e, const void *value, size_t len);
/* emit_extra runs fn in the emit's transaction, in order with the other
 * changes (a source's staging writes: rows appended to batches); fn follows
 * CommitOp.apply's rules and arg must live until done runs. */
void emit_extra(Emit *e, int (*fn)(Txn *t, void *arg), void *arg);
/* emit_commit commits e and frees it; done(arg, rc) runs on the loop. */
void emit_commit(Emit *e, void (*done)(void *arg, int rc), void *arg);
/* emit_count returns the number of jobs put in e. */
size_t emit_count(const Emit *e);

/* stage_cursor reads the stage's stored cursor into out (empty if none). */
int stage_cursor(Stage *s, Strbuf *out);

/* stage_row reads instance row of the staged row (model, key) (0: the
 * legacy row) into out (msgpack). PL_ENOROW if there is none. A short read
 * transaction on the loop thread. */
int stage_row(Stage *s, const char *model, const char *key, uint64_t row, Strbuf *out);

/* stage_dep_failed notes that an attempt of stage s at what it depends on
 * (a service, a database) failed, why; stage_dep_ok that one worked. A
 * stage whose last health: dependency_failures attempts failed makes the
 * engine unready (GET /ready). slot_retry and a slot's committed ack note them
 * for the stages with an input queue; a source notes its own. */
void stage_dep_failed(Stage *s, const char *why);
void stage_dep_ok(Stage *s);

/* stage_log logs one event of stage s and job (0: none) with pl_logx:
 * "stage=NAME job=ID msg" in text, fields stage and job in JSON. */
void stage_log(const Stage *s, int level, uint64_t job, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
