/* engine.c: the loop of `pickline run`: the ops that cross from the writer
 * thread back to the loop, the block monitor, the tick, the drain, and
 * opening and closing it all. The stages' runtime (stage.h) is slot.c, hold.c and apply.c.
 *
 * Threads: the loop thread runs libev (stages, HTTP, listener, timers); the
 * committer's writer thread runs every LMDB write transaction. An EngineOp
 * crosses back: the writer pushes finished ops on a locked list and wakes
 * the loop with ev_async; the loop runs their loop_done. */
#include "engine_int.h"
#include "observe.h"
#include "staging.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

Store *engine_store(Engine *e) { return e->store; }
const Pipeline *engine_pipeline(Engine *e) { return e->p; }
struct ev_loop *engine_loop(Engine *e) { return e->loop; }
size_t engine_nstages(Engine *e) { return e->nstages; }
Stage *engine_stage_at(Engine *e, size_t i) { return &e->stages[i]; }
struct Listener *engine_listener(Engine *e) { return e->listener; }
const char *engine_callback_base(Engine *e) { return e->callback_base; }
unsigned engine_listen_port(Engine *e) { return e->listener ? listener_port(e->listener) : 0; }

Stage *engine_stage(Engine *e, const char *name)
{
    for (size_t i = 0; i < e->nstages; i++)
        if (!strcmp(e->stages[i].conf->name, name))
            return &e->stages[i];
    return NULL;
}

void engine_commit_stats(Engine *e, CommitStats *out)
{
    committer_stats(e->cm, out);
}

/* ---------------------------------------------------------------- ops */

static void op_done_writer(CommitOp *op, int rc)
{
    EngineOp *o = (EngineOp *)op;
    Engine *e = o->engine;
    o->rc = rc;
    o->next_done = NULL;
    pthread_mutex_lock(&e->mu);
    int first = e->done_head == NULL;
    if (e->done_tail)
        e->done_tail->next_done = o;
    else
        e->done_head = o;
    e->done_tail = o;
    pthread_mutex_unlock(&e->mu);
    /* One wake-up per list: the loop takes the whole list when it wakes,
     * and an op that comes after that finds the list empty again. */
    if (first)
        ev_async_send(e->loop, &e->wake);
}

void engine_submit(Engine *e, EngineOp *o)
{
    o->engine = e;
    o->op.done = op_done_writer;
    e->ops_in_flight++;
    committer_submit(e->cm, &o->op);
}

static void start_drain(Engine *e, const char *why);

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = container_of(w, Engine, wake);
    if (__atomic_load_n(&e->stop_requested, __ATOMIC_ACQUIRE) && !e->draining)
        start_drain(e, "stop requested");
    pthread_mutex_lock(&e->mu);
    EngineOp *o = e->done_head;
    e->done_head = e->done_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    if (e->redispatch) {
        e->redispatch = 0;
        for (size_t i = 0; i < e->nstages; i++)
            slots_dispatch(&e->stages[i]);
    }
    uint64_t t0 = pl_mono_ns();
    unsigned n = 0;
    while (o) {
        EngineOp *next = o->next_done;
        /* A bounded turn: past SLOTS_BUDGET_NS the rest waits for the next
         * iteration (in order, ahead of what came meanwhile), so that the
         * loop polls its sockets in between. */
        if (++n % 16 == 0 && pl_mono_ns() - t0 > SLOTS_BUDGET_NS) {
            EngineOp *last = o;
            while (last->next_done)
                last = last->next_done;
            pthread_mutex_lock(&e->mu);
            last->next_done = e->done_head;
            if (!e->done_head)
                e->done_tail = last;
            e->done_head = o;
            pthread_mutex_unlock(&e->mu);
            ev_async_send(e->loop, &e->wake);
            break;
        }
        e->ops_in_flight--;
        if (o->rc == MDB_PANIC && !e->fatal) {
            /* LMDB failed to write its meta page: every later transaction
             * of this process fails too. Nothing committed is lost; stop
             * at once (no drain can commit) and let a restart recover. */
            e->fatal = 1;
            pl_log(PL_LOG_ERROR, "engine: the store failed fatally (%s); stopping now: "
                   "restart pickline (nothing acknowledged is lost)", pl_strerror(o->rc));
            ev_break(e->loop, EVBREAK_ALL);
        }
        o->loop_done(o, o->rc);
        o = next;
    }
    if (e->draining)
        engine_check_drained(e);
}

/* thread_cpu_ns: the calling thread's CPU time. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The loop's block monitor: ev_check runs when the loop wakes from its
 * poll, ev_prepare just before it polls again; between them are the
 * callbacks of one iteration, which is how long the loop was blocked. */
static void on_check(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = container_of(w, Engine, check);
    e->woke_ns = pl_mono_ns();
    e->woke_cpu_ns = thread_cpu_ns();
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = container_of(w, Engine, prep);
    if (e->woke_ns) {
        uint64_t d = pl_mono_ns() - e->woke_ns;
        if (d > e->block_max_ns)
            e->block_max_ns = d;
        d = thread_cpu_ns() - e->woke_cpu_ns;
        if (d > e->block_cpu_max_ns)
            e->block_cpu_max_ns = d;
    }
}

uint64_t engine_loop_block_max(Engine *e)
{
    return e->block_max_ns;
}

uint64_t engine_loop_block_cpu_max(Engine *e)
{
    return e->block_cpu_max_ns;
}

void engine_stop(Engine *e)
{
    __atomic_store_n(&e->stop_requested, 1, __ATOMIC_RELEASE);
    ev_async_send(e->loop, &e->wake);
}

/* ---------------------------------------------------------------- tick */

/* The tick promotes due delayed jobs and expires leases even when no stage
 * reserves (a queue nobody reads, leases of a crashed run). */
static int tick_apply(Txn *t, CommitOp *op)
{
    (void)op;
    size_t n;
    return queue_tick(t, 10000, &n);
}

static void tick_done(EngineOp *eo, int rc)
{
    Engine *e = eo->engine;
    e->tick_busy = 0;
    if (rc)
        pl_log(PL_LOG_ERROR, "engine: tick failed: %s", pl_strerror(rc));
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = container_of(w, Engine, tick);
    observe_tick(e->obs);
    if (e->tick_busy || e->draining)
        return;
    e->tick_busy = 1;
    e->tick_op.op.apply = tick_apply;
    e->tick_op.loop_done = tick_done;
    engine_submit(e, &e->tick_op);
}

/* ---------------------------------------------------------------- drain */

void engine_check_drained(Engine *e)
{
    unsigned busy = 0;
    for (size_t i = 0; i < e->nstages; i++)
        busy += e->stages[i].in_flight + e->stages[i].reserving;
    if (busy == 0 && e->ops_in_flight == 0 && !e->drained) {
        e->drained = 1;
        pl_log(PL_LOG_INFO, "engine: drained; every job committed or released");
        ev_break(e->loop, EVBREAK_ALL);
    }
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = container_of(w, Engine, drain_timer);
    e->drain_expired = 1;
    pl_log(PL_LOG_WARN, "engine: drain time over; releasing the jobs still in flight");
    for (size_t i = 0; i < e->nstages; i++)
        slots_cancel(&e->stages[i]);
    engine_check_drained(e);
}

static void start_drain(Engine *e, const char *why)
{
    pl_log(PL_LOG_INFO, "engine: %s: draining (stop reserving, finish or release in-flight jobs)", why);
    e->draining = 1;
    if (e->reload) /* the unit stays up: RELOADING=1, then the new engine's READY=1 */
        notify_reloading("reloading the pipeline file: draining");
    else
        notify_stopping("draining");
    ev_timer_stop(e->loop, &e->tick);
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *st = &e->stages[i];
        st->draining = 1;
        slots_drop(st);
        if (st->kind->stop)
            st->kind->stop(st);
    }
    ev_timer_init(&e->drain_timer, on_drain_timeout, e->p->drain_s, 0);
    ev_timer_start(e->loop, &e->drain_timer);
    engine_check_drained(e);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    Engine *e = w->data;
    if (e->draining && e->reload) {
        e->reload = 0;
        pl_log(PL_LOG_INFO, "engine: signal %d while draining for a reload: stopping instead",
               w->signum);
        notify_stopping("draining");
        return;
    }
    if (e->draining) {
        pl_log(PL_LOG_WARN, "engine: second signal; stopping now (the jobs in flight are ready "
               "again; the next start counts their attempts)");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    char why[32];
    snprintf(why, sizeof why, "signal %d", w->signum);
    start_drain(e, why);
}

/* on_sighup checks the pipeline file as it is now, with the kinds the
 * engine runs; a file that checks is restarted with after a drain (the
 * caller of engine_run does it), one that does not changes nothing. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    Engine *e = w->data;
    const char *path = e->p->path;
    if (e->draining) {
        pl_log(PL_LOG_WARN, "engine: SIGHUP ignored: already draining to %s",
               e->reload ? "reload" : "stop");
        return;
    }
    if (!path) {
        pl_log(PL_LOG_ERROR, "engine: SIGHUP ignored: the pipeline was not read from a file");
        return;
    }
    size_t n = 0;
    while (e->kinds && e->kinds[n])
        n++;
    const KindSpec **specs = xcalloc(n + 1, sizeof *specs);
    for (size_t i = 0; i < n; i++)
        specs[i] = &e->kinds[i]->spec;
    char err[1024] = "";
    Pipeline *np = NULL;
    int rc = pipeline_load(path, specs, &np, err, sizeof err);
    free(specs);
    if (rc) {
        pl_log(PL_LOG_ERROR, "engine: SIGHUP: %s does not check, so the engine runs on with the "
               "pipeline it has; fix the file and send SIGHUP again: %s", path,
               err[0] ? err : pl_strerror(rc));
        return;
    }
    char why[600];
    snprintf(why, sizeof why, "SIGHUP: %s checks (%zu queues, %zu stages); reloading", path,
             np->nqueues, np->nstages);
    pipeline_free(np);
    e->reload = 1;
    start_drain(e, why);
}

static void on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    (void)w;
    int rc = pl_log_reopen();
    if (rc)
        pl_log(PL_LOG_ERROR, "engine: SIGUSR1: cannot reopen the log file %s: %s; logging on to "
               "the file that was open", pl_log_path(), strerror(rc));
    else if (pl_log_path())
        pl_log(PL_LOG_INFO, "engine: SIGUSR1: log file %s reopened", pl_log_path());
}

/* A SIGTERM or SIGINT that came while no loop watched the signals: while
 * the engine opened (engine_run drains at once), or after a run (a reload
 * stops instead of restarting). */
static volatile sig_atomic_t quiet_stop;

static void on_quiet_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT)
        quiet_stop = 1;
}

/* quiet_signals takes SIGHUP, SIGUSR1, SIGTERM and SIGINT while no loop
 * watches them (their default ends the process at once): while the engine
 * opens, after a run (libev gives a stopped signal back its default), and
 * from a reload's exec (which keeps them blocked and pending) until now. A
 * SIGHUP or SIGUSR1 then does nothing; a SIGTERM or SIGINT is noted. */
static void quiet_signals(void)
{
    static const int sigs[] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};
    struct sigaction sa;
    sigset_t set;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_quiet_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&set, sigs[i]);
    }
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int engine_stop_signaled(void)
{
    return quiet_stop;
}

int engine_reloading(const Engine *e)
{
    return e->reload && e->drained && !e->fatal && !quiet_stop;
}

int engine_take_lock(Engine *e)
{
    int fd = e->lock_fd;
    e->lock_fd = -1;
    return fd;
}

/* ---------------------------------------------------------------- open/run */

typedef struct QArg {
    const Pipeline *p;
} QArg;

static int declare_queues(Txn *t, void *arg)
{
    QArg *a = arg;
    for (size_t i = 0; i < a->p->nqueues; i++) {
        const QueueDecl *d = &a->p->queues[i];
        QueueStats st;
        int rc = queue_stats(t, d->name, &st);
        if (rc == PL_ENOQUEUE)
            rc = queue_create(t, d->name, &d->conf);
        else if (rc == 0 && memcmp(&st.conf, &d->conf, sizeof d->conf) != 0)
            rc = queue_configure(t, d->name, &d->conf);
        if (rc)
            return rc;
    }
    /* Keep the file the engine runs (and the store's identity) in the
     * store: qctl and qload read the models from it. */
    char uuid[33];
    int rc = staging_uuid(t, uuid);
    if (!rc && a->p->text)
        rc = staging_pipeline_put(t, a->p->path, a->p->text, a->p->text_len, a->p->models);
    if (!rc)
        rc = staging_line_put(t, a->p); /* the stages, for qctl top */
    return rc;
}

/* engine_lock makes e the one engine of data directory dir: an exclusive
 * flock on DIR/engine.lock, held until the process ends (a SIGKILL lets
 * it go: no stale lock to clean). The file says who holds it, so a second
 * engine is refused naming the first. qctl and qload never take it. */
static int engine_lock(Engine *e, const char *dir, int handed, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/engine.lock", dir);
    if (handed > 2) {
        /* The engine this one replaces (a reload) held the lock and kept
         * it open across exec: no other engine could take the directory
         * in between. Use it when it is this directory's lock. */
        struct stat a, b;
        if (fstat(handed, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino && flock(handed, LOCK_EX | LOCK_NB) == 0) {
            fcntl(handed, F_SETFD, FD_CLOEXEC);
            e->lock_fd = handed;
            return 0;
        }
        close(handed);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int er = errno;
        char who[600] = "";
        ssize_t n = pread(fd, who, sizeof who - 1, 0);
        who[n > 0 ? n : 0] = '\0';
        who[strcspn(who, "\n")] = '\0';
        if (er == EWOULDBLOCK)
            snprintf(err, errlen, "data directory '%s' is in use by another pickline engine (%s); "
                     "stop it first, or give this one another data directory (--data DIR)",
                     dir, *who ? who : "it did not say which");
        else
            snprintf(err, errlen, "cannot lock '%s': %s", path, strerror(er));
        close(fd);
        return er == EWOULDBLOCK ? EBUSY : er;
    }
    char who[600];
    int n = snprintf(who, sizeof who, "pid %ld, pipeline %s\n", (long)getpid(),
                     e->p->path ? e->p->path : "?");
    if (ftruncate(fd, 0) != 0 || pwrite(fd, who, (size_t)n, 0) != n)
        pl_log(PL_LOG_WARN, "engine: cannot write who runs into %s: %s", path, strerror(errno));
    e->lock_fd = fd;
    return 0;
}

/* kind_find returns the kind named name in kinds, or NULL. */
static const StageKind *kind_find(const StageKind *const *kinds, const char *name)
{
    for (const StageKind *const *k = kinds; k && *k; k++)
        if (strcmp((*k)->spec.name, name) == 0)
            return *k;
    return NULL;
}

int engine_open(const Pipeline *p, const StageKind *const *kinds, const EngineOpts *o,
                Engine **out, char *err, size_t errlen)
{
    *out = NULL;
    Engine *e = xcalloc(1, sizeof *e);
    quiet_signals();
    e->p = p;
    e->kinds = kinds;
    e->started_ms = pl_now_ms();
    pthread_mutex_init(&e->mu, NULL);
    const char *dir = o && o->data_dir ? o->data_dir : p->data_dir;
    if (!dir)
        dir = getenv("PICKLINE_DATA");
    if (!dir || !*dir)
        dir = "pickline-data";
    e->lock_fd = -1;
    StoreOpts sopt = {.create = 1};
    int rc = store_open(dir, &sopt, &e->store);
    if (rc) {
        snprintf(err, errlen, "cannot open data directory '%s': %s", dir,
                 *store_error() ? store_error() : pl_strerror(rc));
        goto fail;
    }
    if ((rc = engine_lock(e, dir, o ? o->lock_fd : -1, err, errlen)) != 0)
        goto fail;
    QArg qa = {p};
    if ((rc = store_run(e->store, declare_queues, &qa)) != 0) {
        snprintf(err, errlen, "cannot declare the queues in '%s': %s", dir, pl_strerror(rc));
        goto fail;
    }
    if ((rc = committer_open(e->store, 0, &e->cm)) != 0) {
        snprintf(err, errlen, "cannot start the writer thread: %s", pl_strerror(rc));
        goto fail;
    }
    e->loop = ev_loop_new(EVFLAG_AUTO);
    ev_async_init(&e->wake, on_wake);
    ev_async_start(e->loop, &e->wake);
    ev_check_init(&e->check, on_check);
    ev_set_priority(&e->check, EV_MAXPRI); /* first after the poll: the clock starts there */
    ev_check_start(e->loop, &e->check);
    ev_prepare_init(&e->prep, on_prepare);
    ev_prepare_start(e->loop, &e->prep);
    /* A stage's concurrency is its requests in flight, to one host if
     * that is where they go: the client's limits follow the stages'. */
    HttpOpts ho = {0};
    for (size_t i = 0; i < p->nstages; i++) {
        unsigned c = p->stages[i].concurrency ? p->stages[i].concurrency : 1;
        if (c > ho.max_host_conns)
            ho.max_host_conns = c;
        ho.max_conns += c;
    }
    ho.max_host_conns = ho.max_host_conns < 16 ? 16 : ho.max_host_conns > 256 ? 256
                      : ho.max_host_conns;
    ho.max_conns = ho.max_conns < 64 ? 64 : ho.max_conns > 1024 ? 1024 : ho.max_conns;
    if ((rc = http_open(e->loop, &ho, &e->http)) != 0) {
        snprintf(err, errlen, "cannot start the HTTP client: %s", pl_strerror(rc));
        goto fail;
    }
    if (p->listen_enabled) {
        ListenOpts lo = {.address = p->listen_address, .port = o && o->port ? o->port : p->listen_port,
                         .token = p->listen_token, .insecure = p->listen_insecure,
                         .max_body = p->listen_max_body, .max_conns = p->listen_max_conns,
                         .max_conns_per_ip = p->listen_max_conns_per_ip,
                         .timeout_s = p->listen_idle_timeout_s,
                         .request_timeout_s = p->listen_request_timeout_s,
                         .tls_cert = p->listen_tls_cert, .tls_key = p->listen_tls_key};
        const char *addr = p->listen_address ? p->listen_address : "127.0.0.1";
        int v6 = strchr(addr, ':') != NULL; /* an IPv6 address goes in brackets in a URL */
        if ((rc = listener_open(e->loop, &lo, &e->listener)) != 0) {
            snprintf(err, errlen, "cannot listen on %s%s%s:%u: %s%s", v6 ? "[" : "", addr, v6 ? "]" : "",
                     lo.port, pl_strerror(rc),
                     rc == EACCES ? " (an address beyond loopback needs listen: token, or insecure: true)"
                     : rc == EPROTO ? " (the TLS certificate or key; the reason is logged above)" : "");
            goto fail;
        }
        snprintf(e->callback_base, sizeof e->callback_base, "%s://%s%s%s:%u", lo.tls_cert ? "https" : "http",
                 v6 ? "[" : "", addr, v6 ? "]" : "", listener_port(e->listener));
        api_register(e);
        e->obs = observe_open(e); /* /health, /ready, /metrics, / and /status */
    }
    e->nstages = p->nstages;
    e->stages = xcalloc(p->nstages ? p->nstages : 1, sizeof *e->stages);
    for (size_t i = 0; i < p->nstages; i++) {
        Stage *st = &e->stages[i];
        st->engine = e;
        st->conf = &p->stages[i];
        st->loop = e->loop;
        st->kind = kind_find(kinds, st->conf->kind);
        if (!st->kind) {
            snprintf(err, errlen, "%s:%d: stage '%s': kind '%s' is not built into this pickline",
                     p->path, st->conf->line, st->conf->name, st->conf->kind);
            rc = PL_EINVAL;
            goto fail;
        }
        HttpPolicy hp = {.concurrency = st->conf->concurrency, .rate_per_s = st->conf->rate_per_s,
                         .connect_timeout_s = st->conf->connect_timeout_s,
                         .timeout_s = st->conf->timeout_s, .insecure = st->conf->insecure};
        st->http = http_class_new(e->http, st->conf->name, &hp);
        /* A stage with an input queue works jobs in slots; a kind may
         * also produce on its own (begin), with or without one. */
        if (st->conf->input)
            slots_open(st);
        if (st->kind->init && (rc = st->kind->init(st, err, errlen)) != 0)
            goto fail;
        slots_set(st);
    }
    if ((rc = holds_open(e, dir, err, errlen)) != 0)
        goto fail;
    fuse_plan(e);
    ev_timer_init(&e->tick, on_tick, 1.0, 1.0);
    ev_signal_init(&e->sigterm, on_signal, SIGTERM);
    ev_signal_init(&e->sigint, on_signal, SIGINT);
    ev_signal_init(&e->sighup, on_sighup, SIGHUP);
    ev_signal_init(&e->sigusr1, on_sigusr1, SIGUSR1);
    e->sigterm.data = e->sigint.data = e->sighup.data = e->sigusr1.data = e;
    *out = e;
    return 0;
fail:
    engine_close(e);
    return rc ? rc : PL_EINVAL;
}

int engine_run(Engine *e)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_start(e->loop, &e->sigterm);
    ev_signal_start(e->loop, &e->sigint);
    ev_signal_start(e->loop, &e->sighup);
    ev_signal_start(e->loop, &e->sigusr1);
    ev_timer_start(e->loop, &e->tick);
    if (quiet_stop)
        start_drain(e, "SIGTERM or SIGINT while starting");
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *st = &e->stages[i];
        if (st->kind->begin)
            st->kind->begin(st);
        if (st->conf->input)
            slots_kick(st);
    }
    char status[300];
    snprintf(status, sizeof status, "running %zu stages on %s%s%s", e->nstages,
             store_path(e->store), e->listener ? ", listening on " : "",
             e->listener ? e->callback_base : "");
    pl_log(PL_LOG_INFO, "engine: %s", status);
    /* Open, listening, every stage begun: READY=1 (a Type=notify unit). */
    notify_watchdog_start(&e->notify, e->loop);
    notify_ready(status);
    ev_run(e->loop, 0);
    notify_watchdog_stop(&e->notify);
    /* A signal belongs to one loop at a time: let it go with this run. */
    ev_signal_stop(e->loop, &e->sigterm);
    ev_signal_stop(e->loop, &e->sigint);
    ev_signal_stop(e->loop, &e->sighup);
    ev_signal_stop(e->loop, &e->sigusr1);
    quiet_signals();
    return e->fatal ? MDB_PANIC : 0;
}

void engine_close(Engine *e)
{
    if (!e)
        return;
    /* The order matters after a forced stop (a second signal), when work
     * is still in flight: first everything that may call into the stages
     * (the listener's handlers answer or get 503; canceled requests call
     * their stage's done, which may submit ops), then the writer finishes
     * every op submitted (their apply may read stage data; completions that
     * arrive now are dropped with the loop), and only then the stages free
     * their data. */
    listener_close(e->listener);
    observe_close(e->obs);
    for (size_t i = 0; i < e->nstages; i++)
        http_class_free(e->stages[i].http);
    http_close(e->http);
    committer_close(e->cm);
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *st = &e->stages[i];
        if (st->kind && st->kind->fini)
            st->kind->fini(st);
    }
    for (size_t i = 0; i < e->nstages; i++)
        slots_close(&e->stages[i]);
    free(e->stages);
    holds_close(e);
    if (e->loop)
        ev_loop_destroy(e->loop);
    store_close(e->store);
    if (e->lock_fd >= 0)
        close(e->lock_fd); /* lets the lock go */
    pthread_mutex_destroy(&e->mu);
    free(e);
}

