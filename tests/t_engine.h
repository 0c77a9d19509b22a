/* t_engine.h: an engine for testing stage kinds in-process (test_stages.c).
 *
 * It is the real runtime (engine_open with the built-in kinds, the slots,
 * the committer, the HTTP client, the listener) on a real store in the
 * test's directory, driven one job at a time instead of by engine_run: the
 * test puts a job on a stage's input queue, the stage's slot takes it and
 * works it on the loop, and te_work returns once that job's end is
 * committed, saying how it ended. Nothing else runs the stages: a pipeline
 * under test holds the stages it tests, and their outputs are queues that
 * the test reads (te_take). */
#ifndef T_ENGINE_H
#define T_ENGINE_H

#include "engine.h"

/* te_open writes text as the pipeline file (beside the test's data
 * directory, t_dir()), loads it with the built-in kinds and opens the
 * engine on t_dir(): every stage's init runs. A failure fails the test.
 * te_try_open returns the error instead (pipeline_load's or engine_open's,
 * with its message in err). te_close closes the engine and frees the
 * pipeline. */
Engine *te_open(const char *text);
int te_try_open(const char *text, Engine **out, char *err, size_t errlen);
void te_close(Engine *e);

enum { TE_DONE = 1, TE_RETRY, TE_BURY };

/* TeJob: how a job ended. */
typedef struct TeJob {
    uint64_t id;
    int end;             /* TE_DONE (acked or handed on), TE_RETRY (released), TE_BURY */
    char error[1024];    /* TE_BURY: the reason; TE_RETRY: the error it was released with */
    double delay_s;      /* TE_RETRY: how long until it is ready again (0: ready now) */
} TeJob;

/* te_work puts body (JSON) on the input queue of stage, lets the stage's
 * slot take it and runs the loop until its end is committed. */
TeJob te_work(Engine *e, const char *stage, const char *body);

/* te_begin starts stage producing on its own (its kind's begin), as
 * engine_run does; te_run_until then runs it. */
void te_begin(Engine *e, const char *stage);

/* te_put puts body on queue in a commit of the engine; returns its id. */
uint64_t te_put(Engine *e, const char *queue, const char *body);

/* te_take takes the oldest ready job of queue (it is acked) and sets body
 * to its body; 0, or PL_EEMPTY when there is none. */
int te_take(Engine *e, const char *queue, Strbuf *body);

/* te_land stages row (JSON) as a new instance of (model, key) with one
 * reference and returns the reference job's body: {"model","key","row_id"}
 * in ref. */
void te_land(Engine *e, const char *model, const char *key, const char *row, Strbuf *ref);

/* te_row sets json to the staged row (model, key) instance row as JSON; 0
 * or PL_ENOROW. */
int te_row(Engine *e, const char *model, const char *key, uint64_t row, Strbuf *json);

/* te_run_until runs the loop until done(e, arg) returns non-zero (asked
 * after every loop iteration); the test fails after 30 s without. */
void te_run_until(Engine *e, int (*done)(Engine *e, void *arg), void *arg);

#endif
