/* engine_int.h: what engine.c (the loop, ops, tick, drain, open and close)
 * and the stages' runtime behind stage.h share (slot.c: slots, their
 * outputs, emits; hold.c: holds, reservers, the in-flight file; apply.c:
 * what the writer thread applies; slot_int.h: what those three share).
 * Private to engine/runtime: nothing else includes it (the tests' fake,
 * tests/t_engine.c, aside). */
#ifndef PL_ENGINE_INT_H
#define PL_ENGINE_INT_H

#include "engine.h"
#include "http.h"
#include "listen.h"
#include "notify.h"

#include <ev.h>
#include <pthread.h>
#include <stdint.h>

typedef struct Held Held;
typedef struct Flight Flight;

struct Engine {
    const Pipeline *p;
    Store *store;
    Committer *cm;
    struct ev_loop *loop;
    Http *http;
    Listener *listener;
    char callback_base[128];
    Stage *stages;
    size_t nstages;
    ev_async wake;
    ev_prepare prep;
    ev_check check;
    uint64_t woke_ns, block_max_ns;
    uint64_t woke_cpu_ns, block_cpu_max_ns; /* the same in the loop thread's CPU time */
    int stop_requested;
    ev_signal sigterm, sigint, sighup, sigusr1;
    const StageKind *const *kinds; /* engine_open's, to check a reloaded file */
    int reload;            /* draining to restart with the file again (SIGHUP) */
    ev_timer tick, drain_timer;
    EngineOp tick_op;
    int tick_busy;
    pthread_mutex_t mu;
    EngineOp *done_head, *done_tail;
    int draining, drain_expired, drained;
    int fatal;             /* the store is unusable (MDB_PANIC): stop, restart recovers */
    int lock_fd;           /* DIR/engine.lock, flocked while the engine runs; -1 none */
    struct Observe *obs;   /* what it tells about itself (observe.h) */
    uint64_t started_ms;
    int redispatch;        /* a dispatch stopped at its budget: go on at the next wake */
    unsigned ops_in_flight;
    Notify notify;         /* the service manager's watchdog (notify.h) */
    Held *held;            /* one per distinct input queue (hold.c) */
    size_t nheld;
    const char **fuse_q;   /* fused queues and the stage that takes their rows (apply.c) */
    Stage **fuse_to;
    size_t nfuse;
    Flight *flight;        /* the in-flight file's entries, mapped (hold.c) */
    void *flight_map;
    size_t flight_len;
    int flight_anon;       /* no file: a crash does not count the attempts in flight */
};

/* engine_check_drained ends the loop once a draining engine has nothing in
 * flight (engine.c). */
void engine_check_drained(Engine *e);

/* slots_open gives stage st (with an input queue) its slots and reservers,
 * before its kind's init; slots_close frees them, after its kind's fini
 * (hold.c). */
void slots_open(Stage *st);
void slots_close(Stage *st);

/* holds_open makes the held sets of the stages' input queues and the
 * in-flight file DIR/engine.inflight, after storing the attempts of the
 * jobs the last run left in it (after every slots_open, before any stage
 * runs); holds_close frees them. */
int holds_open(Engine *e, const char *dir, char *err, size_t errlen);
void holds_close(Engine *e);

/* holds_count sets, for the engine's input queue `queue`, *held to the
 * jobs the engine holds in memory (in its slots or read ahead for them:
 * ready on disk, see hold.c) and *working to those its slots work or
 * commit (loop thread). Both 0 for a queue no stage reads. */
void holds_count(Engine *e, const char *queue, uint64_t *held, uint64_t *working);

/* fuse_plan finds the fused queues: each read by one stage only, whose
 * kind takes rows (take_row), after every stage is open; holds_close frees
 * what it made. */
void fuse_plan(Engine *e);

/* slots_set runs st's kind's slot_init on each of its slots (after init). */
void slots_set(Stage *st);

/* A loop turn is bounded: finished ops (engine.c) and dispatches past
 * this wait for the loop's next wake, so that it polls its sockets in
 * between. */
#define SLOTS_BUDGET_NS 1000000ull

/* slots_kick asks for jobs for st's free slots and one reserve's worth
 * ahead of them (none while draining). */
void slots_kick(Stage *st);

/* slots_dispatch gives the jobs waiting in st's spares to its free slots
 * and starts them; past SLOTS_BUDGET_NS it sets e->redispatch and wakes
 * the loop, which calls it again for every stage. */
void slots_dispatch(Stage *st);

/* slots_drop lets go of every job waiting in st's spares (a drain: not
 * started, nothing to write, the jobs are ready on disk). */
void slots_drop(Stage *st);

/* slots_cancel cancels the HTTP requests of st's working slots (their done
 * sees HTTP_CANCELED and retries): the drain time is over. */
void slots_cancel(Stage *st);

#endif
