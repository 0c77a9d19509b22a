/* hold.c: how the stages' slots get their jobs (slot_int.h): the holds,
 * the reservers and their spares, the watch that lets spares go when a
 * more urgent job comes, dispatch to the free slots, the slots' open and
 * close, and the in-flight file.
 *
 * A stage with an input queue has reservers: each one parked CommitOp that
 * takes up to `batch` jobs into spares (copying id and body inside the
 * transaction) and comes back when a job is ready or after a second. A
 * free slot takes a spare; it is free again when its last commit is done
 * (slot_free).
 *
 * Holds, not leases. The engine is the one worker of its slots, so it does
 * not write a lease when it takes a job: queue_hold_n reads ready jobs and
 * leaves them ready on disk, and the engine keeps the ids it holds in a set
 * per input queue (Held), so that no two slots take one job. A hop is then
 * one write transaction, the ack with its outputs, where a lease costs a
 * write to take the job as well. The end of a hold checks that the job is
 * still ready where it was taken (queue.h): `qctl reserve` of a held job
 * wins, and the slot's commit then writes nothing. A crash ends every hold
 * with its job still ready, as the expiry of a lease would.
 *
 * max_attempts stays honest for a job that kills the engine each time: the
 * in-flight file DIR/engine.inflight (a shared mapping, written with plain
 * stores and never flushed: it survives the death of the process, not of
 * the machine) names the job each slot holds and the attempts it had when
 * taken. The next engine_open stores one attempt for each job still named
 * there, and buries it past max_attempts (queue_held_lost), before any stage
 * starts. A power cut may lose the file, and with it the count of that one
 * attempt, or keep an entry a later commit had made stale, which the
 * attempts check tells apart. */
#include "slot_int.h"
#include "inflight.h"
#include "staging.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Held: the ids of the jobs the engine holds from one input queue, for the
 * reservers (writer thread) and the slots ending (loop thread). An open
 * addressing set: 0 is empty, HELD_GONE a deleted entry. */
#define HELD_GONE UINT64_MAX
struct Held {
    char queue[QUEUE_NAME_MAX + 1];
    pthread_mutex_t mu;
    uint64_t *v;
    size_t cap, n, used;     /* used: n and the deleted entries */
};

/* The in-flight file (inflight.h): a header, then one entry per slot. */
#define FLIGHT_MAGIC INFLIGHT_MAGIC
typedef InflightHead FlightHead;
struct Flight {             /* an InflightEntry, named as engine_int.h declares it */
    uint64_t id;
    uint32_t qid, attempts;
};
_Static_assert(sizeof(struct Flight) == sizeof(InflightEntry) &&
               offsetof(struct Flight, qid) == offsetof(InflightEntry, qid) &&
               offsetof(struct Flight, attempts) == offsetof(InflightEntry, attempts),
               "the in-flight file's entries are InflightEntry");

/* The most jobs one reserve takes (a stage's batch: is capped here). */
#define RSV_MAX 256
/* The most reserves of one stage in flight at once. */
#define RSV_COUNT_MAX 4

/* Spare: a job a reserve took, waiting for a free slot. */
typedef struct Spare {
    uint64_t id;
    uint32_t qid, attempts, pri;
    Strbuf body;
} Spare;

typedef struct Reserver {
    EngineOp eo;
    Job *js;         /* RSV_MAX: the views hold_n gives, copied out in apply */
    Stage *stage;
    Held *held;      /* the ids held from queue (shared with its other readers) */
    Spare *sp;       /* the jobs the last reserve took: sp[next..got) wait for slots */
    size_t want, got, next;
    int active;
    int paused;      /* after a failed reserve, until pause fires */
    ev_timer pause;
    const char *queue;
} Reserver;

/* Feed: how a stage's slots get their jobs. Reserves take up to `cap` jobs
 * into spares (held: no write); a slot that comes free takes a spare at
 * once, without waiting for a commit, and the reservers keep one reserve's
 * worth of jobs ahead of the free slots. */
typedef struct Watch {
    EngineOp eo;
    Stage *stage;
    uint32_t pri;    /* the least urgent spare's priority when it was armed */
    int active;
} Watch;

typedef struct Feed {
    Reserver *r;     /* Stage.nrsv of them */
    Watch watch;     /* spares_watch: spares let go when overtaken */
    Held *held;
    Slot **free;     /* the free slots, a stack */
    unsigned nfree;
    unsigned cap;    /* jobs per reserve: the stage's batch:, at most RSV_MAX */
} Feed;

static void spares_watch(Stage *st);

/* After a reserve fails (not "nothing ready": a store error), its reserver
 * waits this long before it asks again, so a broken store is not hammered
 * in a loop. */
#define RSV_PAUSE_S 1.0

/* ---------------------------------------------------------------- held */

static size_t held_slot(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static int held_has(uint64_t id, void *arg)
{
    Held *h = arg;
    for (size_t i = held_slot(id, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->v[i] == id)
            return 1;
        if (h->v[i] == 0)
            return 0;
    }
}

static void held_put(uint64_t *v, size_t cap, uint64_t id)
{
    size_t i = held_slot(id, cap);
    while (v[i] != 0 && v[i] != HELD_GONE)
        i = (i + 1) & (cap - 1);
    v[i] = id;
}

/* held_add and held_del: with h->mu held. */
static void held_add(Held *h, uint64_t id)
{
    if ((h->used + 1) * 4 > h->cap * 3) {
        size_t cap = h->cap;
        while ((h->n + 1) * 2 > cap)
            cap *= 2;
        uint64_t *v = xcalloc(cap, sizeof *v);
        for (size_t i = 0; i < h->cap; i++)
            if (h->v[i] && h->v[i] != HELD_GONE)
                held_put(v, cap, h->v[i]);
        free(h->v);
        h->v = v;
        h->cap = cap;
        h->used = h->n;
    }
    held_put(h->v, h->cap, id);
    h->n++;
    h->used++;
}

static void held_del(Held *h, uint64_t id)
{
    for (size_t i = held_slot(id, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->v[i] == id) {
            h->v[i] = HELD_GONE;
            h->n--;
            return;
        }
        PL_ASSERT(h->v[i] != 0, "a held job is let go once");
    }
}

static Held *held_of(Engine *e, const char *queue)
{
    for (size_t i = 0; i < e->nheld; i++)
        if (!strcmp(e->held[i].queue, queue))
            return &e->held[i];
    return NULL;
}

void holds_count(Engine *e, const char *queue, uint64_t *held, uint64_t *working)
{
    *held = *working = 0;
    Held *h = held_of(e, queue);
    if (h) {
        pthread_mutex_lock(&h->mu);
        *held = h->n;
        pthread_mutex_unlock(&h->mu);
    }
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        if (st->rsv && st->conf->input && !strcmp(st->conf->input, queue))
            *working += st->in_flight;
    }
}

/* flight_set names the job slot s holds (before its kind starts on it);
 * flight_clear lets it go. */
static void flight_set(Engine *e, const Slot *s, uint32_t attempts)
{
    Flight *f = &e->flight[s->flight];
    f->qid = s->qid;
    f->attempts = attempts;
    __atomic_store_n(&f->id, s->id, __ATOMIC_RELEASE);
}

static void flight_clear(Engine *e, const Slot *s)
{
    __atomic_store_n(&e->flight[s->flight].id, 0, __ATOMIC_RELEASE);
}

/* let_go ends slot s's hold on its job (loop thread): after its last
 * commit, or when the reserve that took it failed. */
static void let_go(Slot *s, Held *h)
{
    Engine *e = s->stage->engine;
    flight_clear(e, s);
    pthread_mutex_lock(&h->mu);
    held_del(h, s->id);
    pthread_mutex_unlock(&h->mu);
}

/* slot_free: see slot_int.h. */
void slot_free(Slot *s)
{
    Stage *st = s->stage;
    Feed *f = st->rsv;
    let_go(s, f->held);
    s->state = SLOT_FREE;
    s->req = NULL;
    sb_reset(&s->acts);
    st->in_flight--;
    f->free[f->nfree++] = s;
    slots_dispatch(st);
    slots_kick(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
}

/* ---------------------------------------------------------------- reserver */

/* rsv_unhold lets go of the jobs a reserve took and no slot has: when its
 * apply runs again (its transaction retried), when its commit failed, and
 * in a drain. With r->held->mu held. */
static void rsv_unhold(Reserver *r)
{
    for (size_t i = r->next; i < r->got; i++)
        held_del(r->held, r->sp[i].id);
    r->got = r->next = 0;
}

static int rsv_apply(Txn *t, CommitOp *op)
{
    Reserver *r = (Reserver *)op;
    Held *h = r->held;
    Job *js = r->js;
    size_t got = 0;
    pthread_mutex_lock(&h->mu);
    rsv_unhold(r);
    int rc = queue_hold_n(t, r->queue, r->want, h->n, held_has, h, js, &got);
    if (rc == PL_EPAUSED)
        rc = PL_EEMPTY; /* a paused queue is one with nothing to give */
    /* Copy out now: the views die with the transaction. */
    for (size_t i = 0; !rc && i < got; i++) {
        Spare *p = &r->sp[i];
        p->id = js[i].id;
        p->qid = js[i].qid;
        p->attempts = js[i].attempts;
        p->pri = js[i].pri;
        sb_reset(&p->body);
        sb_add(&p->body, js[i].body, js[i].len);
        held_add(h, p->id);
        r->got = i + 1;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void slots_drop(Stage *st)
{
    Feed *f = st->rsv;
    if (!f)
        return;
    pthread_mutex_lock(&f->held->mu);
    for (unsigned k = 0; k < st->nrsv; k++)
        if (!f->r[k].active)
            rsv_unhold(&f->r[k]);
    pthread_mutex_unlock(&f->held->mu);
}

/* Each job is named in the in-flight file before its kind starts on it. A
 * turn is bounded (SLOTS_BUDGET_NS): the rest starts at the loop's next
 * wake (Engine.redispatch). */
void slots_dispatch(Stage *st)
{
    Feed *f = st->rsv;
    Engine *e = st->engine;
    if (!f || st->draining || e->draining)
        return;
    uint64_t t0 = pl_mono_ns();
    unsigned n = 0;
    for (unsigned k = 0; k < st->nrsv && f->nfree; k++) {
        Reserver *r = &f->r[k];
        if (r->active)
            continue;
        while (r->next < r->got && f->nfree) {
            if (++n % 8 == 0 && pl_mono_ns() - t0 > SLOTS_BUDGET_NS) {
                e->redispatch = 1;
                ev_async_send(e->loop, &e->wake);
                return;
            }
            Spare *p = &r->sp[r->next++];
            Slot *s = f->free[--f->nfree];
            Strbuf body = s->body;
            slot_body_forget(s);
            s->id = p->id;
            s->lease = 0;
            s->qid = p->qid;
            s->attempts = p->attempts;
            s->pri = p->pri;
            s->pri_set = 0;
            s->out_pri = slot_pri_default(st->conf, s->pri);
            s->body = p->body; /* the spare takes the slot's old buffer */
            p->body = body;
            s->state = SLOT_WORKING;
            s->started_ns = pl_mono_ns();
            sb_reset(&s->acts);
            st->in_flight++;
            flight_set(e, s, p->attempts - 1);
            st->kind->start(s);
        }
        if (r->next == r->got)
            r->next = r->got = 0;
    }
}

static void rsv_done(EngineOp *eo, int rc)
{
    Reserver *r = (Reserver *)eo;
    Stage *st = r->stage;
    r->active = 0;
    st->reserving--;
    r->want = 0;
    if (rc || st->draining) {
        /* The transaction failed (what it read may not be there), or the
         * stage drains: nothing of it is started. */
        pthread_mutex_lock(&r->held->mu);
        rsv_unhold(r);
        pthread_mutex_unlock(&r->held->mu);
    }
    if (rc && rc != PL_EEMPTY) {
        stage_log(st, PL_LOG_ERROR, 0, "reserve from '%s' failed: %s; trying again in %.0f s",
                  r->queue, pl_strerror(rc), RSV_PAUSE_S);
        r->paused = 1;
        ev_timer_set(&r->pause, RSV_PAUSE_S, 0);
        ev_timer_start(st->loop, &r->pause);
    }
    slots_dispatch(st);
    slots_kick(st);
    spares_watch(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
}

/* Spares and priorities. A spare is a job taken ahead of the slots; a job
 * put later at a more urgent priority must still be worked first, and a
 * paused queue must give nothing more. So while a stage has spares that
 * something could overtake (priority above 0), a watch waits parked in the
 * committer, looking after each transaction (one index seek) for a ready
 * job more urgent than the least urgent spare, or a pause; then the
 * spares are let go (they are ready on disk: nothing to write) and the
 * reservers take the best jobs again. */
static int watch_apply(Txn *t, CommitOp *op)
{
    Watch *w = (Watch *)op;
    Stage *st = w->stage;
    Held *h = ((Feed *)st->rsv)->held;
    int yes = 0;
    pthread_mutex_lock(&h->mu);
    int rc = queue_overtaken(t, st->conf->input, w->pri, held_has, h, &yes);
    pthread_mutex_unlock(&h->mu);
    if (rc)
        return rc;
    return yes ? 0 : PL_EEMPTY;
}

static void watch_done(EngineOp *eo, int rc)
{
    Watch *w = (Watch *)eo;
    Stage *st = w->stage;
    Feed *f = st->rsv;
    w->active = 0;
    if (rc == 0) {
        pthread_mutex_lock(&f->held->mu);
        for (unsigned k = 0; k < st->nrsv; k++)
            if (!f->r[k].active)
                rsv_unhold(&f->r[k]);
        pthread_mutex_unlock(&f->held->mu);
        slots_kick(st);
    }
    spares_watch(st);
    if (st->engine->draining)
        engine_check_drained(st->engine);
}

/* spares_watch arms the watch when the stage has spares that a more
 * urgent job could overtake. */
static void spares_watch(Stage *st)
{
    Feed *f = st->rsv;
    Engine *e = st->engine;
    if (!f || f->watch.active || st->draining || e->draining)
        return;
    uint32_t pri = 0;
    int any = 0;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        for (size_t i = r->next; !r->active && i < r->got; i++) {
            any = 1;
            if (r->sp[i].pri > pri)
                pri = r->sp[i].pri;
        }
    }
    if (!any || pri == 0)
        return;
    Watch *w = &f->watch;
    w->stage = st;
    w->pri = pri;
    w->active = 1;
    w->eo.op.apply = watch_apply;
    w->eo.op.park = 1;
    w->eo.op.deadline_ns = pl_mono_ns() + 1000000000ull;
    w->eo.loop_done = watch_done;
    engine_submit(e, &w->eo);
}

static void on_rsv_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    Reserver *r = container_of(w, Reserver, pause);
    r->paused = 0;
    slots_kick(r->stage);
}

/* slots_kick asks for jobs while there is room for them: the free slots
 * and one reserve's worth ahead of them, less what waits in spares or is
 * asked already; with a reserve in flight, another only for a whole batch
 * (no trickle of one-job reserves). */
void slots_kick(Stage *st)
{
    Feed *f = st->rsv;
    if (!f || st->draining || st->engine->draining)
        return;
    long pending = 0;
    unsigned active = 0;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        pending += (long)(r->active ? r->want : r->got - r->next);
        active += r->active;
    }
    long room = (long)f->nfree + f->cap - pending;
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        if (r->active || r->paused || r->got)
            continue;
        if (room <= 0 || (active && room < (long)f->cap))
            return;
        r->want = room < (long)f->cap ? (size_t)room : f->cap;
        room -= (long)r->want;
        r->active = 1;
        active++;
        st->reserving++;
        r->eo.op.apply = rsv_apply;
        r->eo.op.park = 1;
        r->eo.op.deadline_ns = pl_mono_ns() + 1000000000ull;
        r->eo.loop_done = rsv_done;
        engine_submit(st->engine, &r->eo);
    }
}

void slots_open(Stage *st)
{
    st->nslots = st->conf->concurrency ? st->conf->concurrency : 1;
    st->slots = xcalloc(st->nslots, sizeof *st->slots);
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        s->stage = st;
        if (st->kind->slot_size)
            s->data = xcalloc(1, st->kind->slot_size);
        sb_init(&s->body);
        sb_init(&s->acts);
        msgpack_sbuffer_init(&s->bmp);
        SlotOp *so = xcalloc(1, sizeof *so);
        so->slot = s;
        sb_init(&so->why);
        s->op = so;
    }
    /* Enough reservers that all the slots can be refilled at once, `batch`
     * jobs per reserve, a few at most, and one more to keep jobs ahead of
     * the slots. */
    unsigned b = st->conf->batch ? st->conf->batch : 1;
    if (b > RSV_MAX)
        b = RSV_MAX;
    st->nrsv = (st->nslots + b - 1) / b;
    if (st->nrsv > RSV_COUNT_MAX)
        st->nrsv = RSV_COUNT_MAX;
    st->nrsv++;
    Feed *f = xcalloc(1, sizeof *f);
    f->cap = b;
    f->r = xcalloc(st->nrsv, sizeof *f->r);
    f->free = xcalloc(st->nslots, sizeof *f->free);
    for (unsigned k = st->nslots; k > 0; k--)
        f->free[f->nfree++] = &st->slots[k - 1];
    for (unsigned k = 0; k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        r->stage = st;
        r->queue = st->conf->input;
        r->sp = xcalloc(b, sizeof *r->sp);
        for (unsigned j = 0; j < b; j++)
            sb_init(&r->sp[j].body);
        r->js = xcalloc(RSV_MAX, sizeof *r->js);
        ev_timer_init(&r->pause, on_rsv_pause, RSV_PAUSE_S, 0);
    }
    st->rsv = f;
}

void slots_set(Stage *st)
{
    for (unsigned k = 0; st->kind->slot_init && k < st->nslots; k++)
        st->kind->slot_init(&st->slots[k]);
    st->slots_set = 1;
}

void slots_close(Stage *st)
{
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        SlotOp *so = s->op;
        if (st->slots_set && st->kind->slot_fini)
            st->kind->slot_fini(s);
        free(s->data); /* the kind's fini released what was in it */
        sb_free(&s->body);
        sb_free(&s->acts);
        slot_body_forget(s);
        msgpack_sbuffer_destroy(&s->bmp);
        if (so)
            sb_free(&so->why);
        free(so);
    }
    free(st->slots);
    st->slots = NULL;
    st->nslots = 0;
    Feed *f = st->rsv;
    for (unsigned k = 0; f && k < st->nrsv; k++) {
        Reserver *r = &f->r[k];
        ev_timer_stop(st->loop, &r->pause);
        for (unsigned j = 0; j < f->cap; j++)
            sb_free(&r->sp[j].body);
        free(r->sp);
        free(r->js);
    }
    if (f) {
        free(f->r);
        free(f->free);
        free(f);
    }
    st->rsv = NULL;
    st->nrsv = 0;
}

void slots_cancel(Stage *st)
{
    for (unsigned k = 0; k < st->nslots; k++) {
        Slot *s = &st->slots[k];
        if (s->state == SLOT_WORKING && s->req)
            http_cancel(s->req); /* its done sees HTTP_CANCELED and retries */
    }
}

/* ---------------------------------------------------------------- in-flight file */

typedef struct Lost {
    const Flight *f;
    size_t n;
    size_t counted, buried;
} Lost;

/* count_lost stores the attempts of the holds a stopped engine left in its
 * in-flight file (queue_held_lost). */
static int count_lost(Txn *t, void *arg)
{
    Lost *l = arg;
    l->counted = l->buried = 0;
    for (size_t i = 0; i < l->n; i++) {
        const Flight *f = &l->f[i];
        if (!f->id)
            continue;
        char why[160];
        int buried = 0;
        snprintf(why, sizeof why, "the engine stopped while working it (attempt %u; a crash, "
                 "kill -9 or power cut)", f->attempts + 1);
        int rc = queue_held_lost(t, f->id, f->qid, f->attempts, why, &buried);
        if (rc)
            return rc;
        l->counted++;
        l->buried += buried != 0;
    }
    return 0;
}

static int read_uuid(Txn *t, void *arg)
{
    return staging_uuid(t, arg);
}

/* holds_open makes a Held per input queue and the in-flight file of
 * DIR/engine.inflight, after storing what the last one left (see the top
 * of this file). */
int holds_open(Engine *e, const char *dir, char *err, size_t errlen)
{
    size_t nslots = 0;
    e->held = xcalloc(e->nstages ? e->nstages : 1, sizeof *e->held);
    for (size_t i = 0; i < e->nstages; i++) {
        Stage *st = &e->stages[i];
        if (!st->rsv)
            continue;
        Held *h = held_of(e, st->conf->input);
        if (!h) {
            h = &e->held[e->nheld++];
            snprintf(h->queue, sizeof h->queue, "%s", st->conf->input);
            pthread_mutex_init(&h->mu, NULL);
            h->cap = 64;
            h->v = xcalloc(h->cap, sizeof *h->v);
        }
        Feed *f = st->rsv;
        f->held = h;
        for (unsigned k = 0; k < st->nrsv; k++)
            f->r[k].held = h;
        for (unsigned k = 0; k < st->nslots; k++)
            st->slots[k].flight = (uint32_t)nslots++;
    }

    char path[4200], uuid[33];
    int rc = store_run(e->store, read_uuid, uuid);
    if (rc) {
        snprintf(err, errlen, "cannot read the store's identity: %s", pl_strerror(rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/engine.inflight", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return errno;
    }
    /* What the last engine held when it stopped. */
    struct stat sb;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size >= sizeof(FlightHead)) {
        size_t len = (size_t)sb.st_size;
        char *buf = xmalloc(len);
        ssize_t got = pread(fd, buf, len, 0);
        FlightHead fh;
        memcpy(&fh, buf, sizeof fh);
        if (got == (ssize_t)len && !memcmp(fh.magic, FLIGHT_MAGIC, 8) && !memcmp(fh.uuid, uuid, 32) &&
            sizeof fh + (size_t)fh.nslots * sizeof(Flight) <= len) {
            Lost l = {(const Flight *)(buf + sizeof fh), fh.nslots, 0, 0};
            rc = store_run(e->store, count_lost, &l);
            if (rc)
                snprintf(err, errlen, "cannot count the attempts the last run left in '%s': %s",
                         path, pl_strerror(rc));
            else if (l.counted)
                pl_log(PL_LOG_WARN, "engine: the last run stopped while working %zu jobs; their "
                       "attempts are counted (%zu buried past max_attempts)", l.counted, l.buried);
        } else if (got > 0) {
            pl_log(PL_LOG_WARN, "engine: '%s' is not this store's in-flight file; its contents are "
                   "ignored", path);
        }
        free(buf);
    }
    if (rc) {
        close(fd);
        return rc;
    }
    /* A fresh one, every block allocated: a store into a mapping of a
     * hole on a full disk is a SIGBUS. Without it the engine still runs,
     * only a crash does not count the attempts it ends. */
    e->flight_len = sizeof(FlightHead) + (nslots ? nslots : 1) * sizeof(Flight);
    int frc = ftruncate(fd, 0) != 0 ? errno : posix_fallocate(fd, 0, (off_t)e->flight_len);
    void *m = frc ? MAP_FAILED : mmap(NULL, e->flight_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        pl_log(PL_LOG_WARN, "engine: cannot make '%s' (%s): a crash will not count the attempts "
               "of the jobs in flight against max_attempts", path, strerror(frc ? frc : errno));
        m = mmap(NULL, e->flight_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        PL_ASSERT(m != MAP_FAILED, "an anonymous mapping of a few pages works");
        e->flight_anon = 1;
    }
    close(fd);
    memset(m, 0, e->flight_len);
    FlightHead fh = {.nslots = (uint32_t)nslots};
    memcpy(fh.magic, FLIGHT_MAGIC, 8);
    memcpy(fh.uuid, uuid, 32);
    memcpy(m, &fh, sizeof fh);
    e->flight_map = m;
    e->flight = (Flight *)((char *)m + sizeof fh);
    return 0;
}

void holds_close(Engine *e)
{
    for (size_t i = 0; i < e->nheld; i++) {
        pthread_mutex_destroy(&e->held[i].mu);
        free(e->held[i].v);
    }
    free(e->held);
    e->held = NULL;
    e->nheld = 0;
    if (e->flight_map)
        munmap(e->flight_map, e->flight_len);
    e->flight_map = NULL;
    free(e->fuse_q);
    free(e->fuse_to);
    e->fuse_q = NULL;
    e->fuse_to = NULL;
    e->nfuse = 0;
}
