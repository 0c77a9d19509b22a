/* engine.h: `pickline run`: one process, one libev loop, the stages of a
 * pipeline working its queues, the listener, and the group committer.
 *
 * Every mutation goes through the committer (one write transaction per
 * batch of operations, on its own thread), and nothing is answered before
 * its commit: the loop never waits on a flush. */
#ifndef PL_ENGINE_H
#define PL_ENGINE_H

#include "commit.h"
#include "pipeline.h"
#include "stage.h"
#include "store.h"

typedef struct EngineOpts {
    const char *data_dir;  /* NULL: the pipeline's, else $PICKLINE_DATA, else ./pickline-data */
    unsigned port;         /* overrides the pipeline's listen port when non-zero */
    int lock_fd;           /* > 2: the data directory's engine.lock, open and flocked, handed
                            * over by the engine this one replaces (engine_take_lock);
                            * used when it is that directory's, else closed */
} EngineOpts;

/* engine_open opens the data directory, creates or updates the declared
 * queues, starts the committer, the HTTP client, the listener and every
 * stage's kind (init). kinds is the NULL-terminated list of the stage kinds
 * there are (the one p was loaded with: stages/kinds.h); p and kinds must
 * outlive the engine. Returns 0 and *out, or an error with a message in
 * err. */
int engine_open(const Pipeline *p, const StageKind *const *kinds, const EngineOpts *o,
                Engine **out, char *err, size_t errlen);

/* engine_run runs the loop until SIGTERM or SIGINT, then drains: stops
 * reserving, lets in-flight jobs finish for the pipeline's drain time,
 * releases the rest, commits, and returns 0. It returns MDB_PANIC at once
 * when the store failed fatally (a restart recovers).
 *
 * Other signals: SIGUSR1 reopens the log file (pl_log_reopen). SIGHUP
 * reads the pipeline file again and checks it (pipeline_load with the
 * engine's kinds): when it checks, the engine drains as for SIGTERM and
 * engine_run returns 0 with engine_reloading(e) set, for the caller to
 * start again with the file (pickline run re-executes itself); when it
 * does not, the engine logs why and runs on as it was. A SIGTERM or
 * SIGINT during that drain turns it into a stop. */
int engine_run(Engine *e);

/* engine_reloading tells whether engine_run returned to be started again
 * with the pipeline file re-read (SIGHUP, above). */
int engine_reloading(const Engine *e);

/* engine_stop_signaled tells whether a SIGTERM or SIGINT came while no
 * engine's loop watched them (while one opened, or after its run): a
 * reload then stops instead (pickline run). */
int engine_stop_signaled(void);

/* engine_take_lock hands the flock of the data directory (engine.lock)
 * over to the caller, for the engine that replaces this one (a reload):
 * returns its descriptor, which the caller owns from now on (engine_close
 * no longer closes it), or -1 when there is none. */
int engine_take_lock(Engine *e);

/* engine_stop asks a running engine to drain and return from engine_run,
 * as SIGTERM does. Safe from any thread. */
void engine_stop(Engine *e);

/* engine_loop_block_max returns the longest time (ns) the loop spent in one
 * iteration's callbacks since the start: how long it was ever blocked. */
uint64_t engine_loop_block_max(Engine *e);

/* engine_loop_block_cpu_max is the same in the loop thread's CPU time: the
 * longest iteration without the time the thread was not running (the
 * machine's other threads and processes had the CPU). */
uint64_t engine_loop_block_cpu_max(Engine *e);

/* engine_close frees e (after engine_run returned); NULL is a no-op. */
void engine_close(Engine *e);

/* For the API endpoints and stages. */
Store *engine_store(Engine *e);
const Pipeline *engine_pipeline(Engine *e);
struct ev_loop *engine_loop(Engine *e);
Stage *engine_stage(Engine *e, const char *name);
size_t engine_nstages(Engine *e);
Stage *engine_stage_at(Engine *e, size_t i);
void engine_commit_stats(Engine *e, CommitStats *out);
unsigned engine_listen_port(Engine *e);
/* engine_callback_base: "http://ADDR:PORT" of the listener, for callback URLs. */
const char *engine_callback_base(Engine *e);

/* EngineOp: an operation for the committer whose completion runs on the
 * loop thread (the committer's done runs on its writer thread). */
typedef struct EngineOp EngineOp;
struct EngineOp {
    CommitOp op;                            /* op.apply set by the submitter */
    void (*loop_done)(EngineOp *o, int rc); /* on the loop thread */
    /* private */
    int rc;
    EngineOp *next_done;
    Engine *engine;
};
/* engine_submit hands o to the committer; o->loop_done(o, rc) runs on the
 * loop thread once its transaction committed (or failed). */
void engine_submit(Engine *e, EngineOp *o);

/* engine_listener returns the engine's listener (NULL when the pipeline has
 * none), where api.c and stages register their routes. */
struct Listener *engine_listener(Engine *e);

/* api_register adds the built-in endpoints of the queues (api.c): POST
 * /queues/NAME/jobs, GET /queues. (GET /health, /ready, /metrics, / and
 * /status are observe.h's.) */
void api_register(Engine *e);

#endif
