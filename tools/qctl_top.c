/* qctl_top.c: top, a live view of the line: the stages in the order of
 * the flow, each with the queue it works (depth, jobs done per second: the
 * acks of that queue) and the queues it feeds, as the engine's status page
 * draws them (the engine keeps its stages in the store: staging_line_get);
 * the queues (jobs by state, put/reserve/ack rates, oldest ready), the data
 * map, the batches by state and the rejects, redrawn every interval in its
 * own short read transaction until 'q', Ctrl-C or SIGTERM.
 *
 * The engine works its jobs without a lease (they stay ready on disk): the
 * WORKING column counts the ready jobs its slots work, from the in-flight
 * file (inflight.h) while an engine runs, and READY the rest; RESERVED
 * counts the leases of workers outside the engine (`qctl reserve`). */
#include "qctl.h"

#include "inflight.h"
#include "pl.h"
#include "staging.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* The one piece of global state besides the options: a signal handler can
 * reach nothing else. top blocks SIGINT and SIGTERM except inside ppoll,
 * so a signal always interrupts the wait that would otherwise miss it. */
static volatile sig_atomic_t top_stop;

static void top_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* Frame: one refresh of top, read in its own short transaction. */
typedef struct Frame {
    ListOp list;
    StoreInfo info;
    uint64_t ns;
    int staged;                         /* the counts below were read */
    uint64_t batches[BATCH_FAILED + 1]; /* by state */
    uint64_t rejects;
    Line line;                          /* the engine's stages (none: n 0) */
    char uuid[33];                      /* the store's ("" none yet) */
    uint64_t *working;                  /* per queue of list: jobs the engine works (inflight.h) */
    size_t nworking;
} Frame;

/* frame_working reads how many ready jobs of each queue the running
 * engine's slots work (they are held in memory, ready on disk): all 0
 * when no engine runs. */
static void frame_working(const Ctx *c, Frame *f)
{
    if (f->nworking < f->list.n) {
        f->working = realloc(f->working, f->list.n * sizeof *f->working);
        PL_ASSERT(f->working, "memory for the counts");
        f->nworking = f->list.n;
    }
    uint32_t *qids = calloc(f->list.n ? f->list.n : 1, sizeof *qids);
    PL_ASSERT(qids, "memory for the queue ids");
    for (size_t i = 0; i < f->list.n; i++)
        qids[i] = f->list.v[i].qid;
    if (f->list.n && (!f->uuid[0] ||
                      inflight_working(c->dir, f->uuid, qids, f->working, f->list.n) != 0))
        memset(f->working, 0, f->list.n * sizeof *f->working);
    free(qids);
}

/* frame_ready: the ready jobs of q (of f's list) that no slot of the
 * engine works; frame_work: those it works. */
static uint64_t frame_ready(const Frame *f, const QueueStats *q)
{
    uint64_t w = f->working ? f->working[q - f->list.v] : 0;
    return q->ready > w ? q->ready - w : 0;
}

static uint64_t frame_work(const Frame *f, const QueueStats *q)
{
    return f->working ? f->working[q - f->list.v] : 0;
}

static const QueueStats *frame_find(const Frame *f, const char *name)
{
    for (size_t i = 0; i < f->list.n; i++)
        if (strcmp(f->list.v[i].name, name) == 0)
            return &f->list.v[i];
    return NULL;
}

static CliStr rate(uint64_t now, uint64_t then, double dt, int have)
{
    CliStr r;
    if (!have || now < then || dt <= 0)
        snprintf(r.s, sizeof r.s, "-");
    else
        snprintf(r.s, sizeof r.s, "%.1f", (double)(now - then) / dt);
    return r;
}

static const char *const line_head[] = {"STAGE", "KIND", "WORKS", "READY", "WORKING", "RESERVED",
                                        "DONE/s", "", "FEEDS"};

/* line_level is a stage's column in the flow: 0 for a source or a stage
 * whose queue no stage feeds, else one after the furthest of its feeders
 * (the status page's rule). */
static size_t line_level(const Line *l, size_t i, unsigned depth)
{
    const LineStage *s = &l->stages[i];
    size_t lv = 0;
    if (!s->input || depth > l->n)
        return 0; /* a cycle: stop */
    for (size_t k = 0; k < l->n; k++)
        for (size_t o = 0; o < l->stages[k].noutputs; o++)
            if (k != i && strcmp(l->stages[k].outputs[o], s->input) == 0) {
                size_t w = line_level(l, k, depth + 1) + 1;
                if (w > lv)
                    lv = w;
            }
    return lv;
}

/* line_draw writes the stages in the order of the flow, one a row: the
 * queue it works (a source: none) with its depth and the rate the stage
 * finishes its jobs (the queue's acks; a source: the puts on what it
 * feeds), and the queues it feeds. */
static void line_draw(FILE *f, const Frame *cur, const Frame *prev, double dt)
{
    const Line *l = &cur->line;
    CliTable t = {.ncol = 9, .head = line_head, .align = "llrrrrrcl"};
    size_t *order = calloc(l->n ? l->n : 1, sizeof *order), *lv = calloc(l->n ? l->n : 1, sizeof *lv);
    PL_ASSERT(order && lv, "memory for the line");
    for (size_t i = 0; i < l->n; i++) {
        lv[i] = line_level(l, i, 0);
        order[i] = i;
    }
    for (size_t i = 1; i < l->n; i++) /* stable: by level, then as declared */
        for (size_t k = i; k > 0 && lv[order[k - 1]] > lv[order[k]]; k--) {
            size_t x = order[k];
            order[k] = order[k - 1];
            order[k - 1] = x;
        }
    for (size_t j = 0; j < l->n; j++) {
        const LineStage *s = &l->stages[order[j]];
        const QueueStats *q = s->input ? frame_find(cur, s->input) : NULL;
        const QueueStats *pq = q && prev ? frame_find(prev, q->name) : NULL;
        char feeds[256] = "";
        size_t used = 0;
        uint64_t puts = 0, pputs = 0;
        int have = prev != NULL;
        for (size_t o = 0; o < s->noutputs; o++) {
            const QueueStats *oq = frame_find(cur, s->outputs[o]), *op = prev ? frame_find(prev, s->outputs[o]) : NULL;
            int n = snprintf(feeds + used, sizeof feeds - used, "%s%s%s", o ? ", " : "", s->outputs[o],
                             oq ? "" : "?");
            used += n > 0 && (size_t)n < sizeof feeds - used ? (size_t)n : 0;
            puts += oq ? oq->puts : 0;
            pputs += op ? op->puts : 0;
            have = have && oq && op;
        }
        cli_table_add(&t, "%s", s->name);
        cli_table_add(&t, "%s", s->kind);
        cli_table_add(&t, "%s", s->input ? s->input : "(source)");
        if (q) {
            cli_table_add(&t, "%" PRIu64, frame_ready(cur, q));
            cli_table_add(&t, "%" PRIu64, frame_work(cur, q));
            cli_table_add(&t, "%" PRIu64, q->reserved);
        } else {
            cli_table_add(&t, "-");
            cli_table_add(&t, "-");
            cli_table_add(&t, "-");
        }
        if (s->input)
            cli_table_add(&t, "%s", rate(q ? q->acks : 0, pq ? pq->acks : 0, dt, q && pq).s);
        else
            cli_table_add(&t, "%s", rate(puts, pputs, dt, have && s->noutputs).s);
        cli_table_add(&t, "%s", "->");
        cli_table_add(&t, "%s", s->noutputs ? feeds : "(batches)");
    }
    cli_table_print(&t, f);
    cli_table_free(&t);
    free(order);
    free(lv);
}

static const char *const top_head[] = {"QUEUE", "READY", "WORKING", "DELAYED", "RESERVED", "BURIED",
                                       "PUT/s", "RES/s", "ACK/s", "OLDEST", "PAUSED"};

static void top_draw(const Ctx *c, FILE *f, const Frame *cur, const Frame *prev, uint64_t every)
{
    CliTable t = {.ncol = 11, .head = top_head, .align = "lrrrrrrrrrl"};
    double dt = prev ? (double)(cur->ns - prev->ns) / 1e9 : 0;
    const StoreInfo *i = &cur->info;
    uint64_t used = (uint64_t)i->last_page * i->page_size;

    fprintf(f, "pickline top  %s  %s  every %ss  q quits\n\n", c->dir,
            cli_clock(cur->list.ms).s, cli_secs(every).s);
    if (cur->line.n) {
        line_draw(f, cur, prev, dt);
        fputc('\n', f);
    }
    for (size_t k = 0; k < cur->list.n; k++) {
        const QueueStats *s = &cur->list.v[k], *p = prev ? frame_find(prev, s->name) : NULL;
        cli_table_add(&t, "%s", s->name);
        cli_table_add(&t, "%" PRIu64, frame_ready(cur, s));
        cli_table_add(&t, "%" PRIu64, frame_work(cur, s));
        cli_table_add(&t, "%" PRIu64, s->delayed);
        cli_table_add(&t, "%" PRIu64, s->reserved);
        cli_table_add(&t, "%" PRIu64, s->buried);
        cli_table_add(&t, "%s", rate(s->puts, p ? p->puts : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", rate(s->reserves, p ? p->reserves : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", rate(s->acks, p ? p->acks : 0, dt, p != NULL).s);
        cli_table_add(&t, "%s", s->ready ? cli_dur(s->oldest_ready_ms).s : "-");
        cli_table_add(&t, "%s", s->paused ? "paused" : "-");
    }
    if (cur->list.n)
        cli_table_print(&t, f);
    else
        fputs("no queues yet\n", f);
    fprintf(f, "\nmap  %s used of %s (%.1f%%), limit %s, file %s, %zu free pages, readers %u/%u\n",
            cli_size(used).s, cli_size(i->map_size).s,
            i->map_size ? 100.0 * (double)used / (double)i->map_size : 0,
            i->map_max ? cli_size(i->map_max).s : "none", cli_size(i->file_size).s,
            i->free_pages, i->readers, i->max_readers);
    if (cur->staged)
        fprintf(f, "batches  open %" PRIu64 ", sealed %" PRIu64 ", held %" PRIu64 ", loading %"
                   PRIu64 ", loaded %" PRIu64 ", failed %" PRIu64 "; rejects %" PRIu64 "\n",
                cur->batches[BATCH_OPEN], cur->batches[BATCH_SEALED], cur->batches[BATCH_HELD],
                cur->batches[BATCH_LOADING], cur->batches[BATCH_LOADED],
                cur->batches[BATCH_FAILED], cur->rejects);
    cli_table_free(&t);
}

/* top_show writes a drawn frame: over the last one on a terminal (home,
 * each line cleared to its end, the rest of the screen cleared: no flicker),
 * else one after the other. */
static void top_show(const char *frame, size_t len, int tty)
{
    if (!tty) {
        fwrite(frame, 1, len, stdout);
        putchar('\n');
        fflush(stdout);
        return;
    }
    fputs("\033[H", stdout);
    for (const char *p = frame, *end = frame + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fwrite(p, 1, n, stdout);
        fputs("\033[K\n", stdout);
        p += n + 1;
    }
    fputs("\033[J", stdout);
    fflush(stdout);
}

/* top_wait waits ms for the next refresh, reading keys when stdin is a
 * terminal. Returns 1 when it is time to quit: 'q', SIGINT or SIGTERM. */
static int top_wait(int *keys, uint64_t ms, const sigset_t *mask)
{
    uint64_t end = pl_mono_ns() + ms * 1000000;
    for (;;) {
        uint64_t now = pl_mono_ns();
        if (top_stop)
            return 1;
        if (now >= end)
            return 0;
        struct timespec ts = {(time_t)((end - now) / 1000000000), (long)((end - now) % 1000000000)};
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = ppoll(&pfd, *keys ? 1 : 0, &ts, mask);
        if (r < 0 && errno != EINTR)
            return 1;
        if (r > 0) {
            char b[64];
            ssize_t k = read(STDIN_FILENO, b, sizeof b);
            if (k <= 0)
                *keys = 0; /* end of input: go on without keys */
            for (ssize_t i = 0; i < k; i++)
                if (b[i] == 'q' || b[i] == 'Q')
                    return 1;
        }
    }
}

static int top_batch(const BatchRec *b, void *arg)
{
    Frame *f = arg;
    if (b->state >= 0 && b->state <= BATCH_FAILED)
        f->batches[b->state]++;
    return 0;
}

static int top_reject(const RejectRead *r, void *arg)
{
    (void)r;
    ((Frame *)arg)->rejects++;
    return 0;
}

/* top_fn reads a frame: the queues, then the batches and rejects (a scan of
 * their records; a frame without them still draws the queues). */
static int top_fn(Txn *t, void *arg)
{
    Frame *f = arg;
    int rc;
    if ((rc = qctl_list_fn(t, &f->list)) != 0)
        return rc;
    memset(f->batches, 0, sizeof f->batches);
    f->rejects = 0;
    if (staging_uuid(t, f->uuid) != 0)
        f->uuid[0] = '\0';
    staging_line_free(&f->line);
    if ((rc = staging_line_get(t, &f->line)) != 0 && rc != PL_ENOPIPELINE && rc != PL_EFORMAT)
        return rc; /* no line kept (an engine never ran here, or an older one): no stage view */
    f->staged = batch_each(t, -1, top_batch, f) == 0 && reject_each(t, NULL, top_reject, f) == 0;
    return 0;
}

int qctl_top(Ctx *c)
{
    Frame fr[2];
    Frame *cur = &fr[0], *prev = NULL;
    uint64_t every, iterations;
    struct termios saved, raw;
    struct sigaction sa = {0}, old_int, old_term;
    sigset_t block, old, wait;
    int rc, keys = isatty(STDIN_FILENO), tty = isatty(STDOUT_FILENO);

    memset(fr, 0, sizeof fr);
    if ((rc = qctl_flag_ms(c, "interval", 100, 3600000, 1000, &every)) ||
        (rc = qctl_flag_u64(c, "iterations", 0, UINT32_MAX, 0, &iterations)))
        return rc;
    if (c->json)
        return qctl_usage(c, "top has no --json output; use 'qctl stats --json'");
    if ((rc = qctl_open(c, OPEN_READ)))
        return rc;

    sa.sa_handler = top_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    wait = old;
    sigdelset(&wait, SIGINT);
    sigdelset(&wait, SIGTERM);
    if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        keys = 0;
    }
    if (tty)
        fputs("\033[?25l\033[2J", stdout); /* hide the cursor, clear once */

    for (uint64_t n = 1;; n++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *mem;

        /* Each refresh is its own short read transaction; none spans a wait. */
        if ((rc = store_read(c->s, top_fn, cur)) != 0 ||
            (rc = store_info(c->s, &cur->info)) != 0) {
            rc = cli_errorf("cannot read '%s': %s", c->dir, pl_strerror(rc));
            break;
        }
        cur->ns = pl_mono_ns();
        frame_working(c, cur);
        mem = open_memstream(&buf, &len);
        PL_ASSERT(mem, "open_memstream has memory");
        top_draw(c, mem, cur, prev, every);
        fclose(mem);
        top_show(buf, len, tty);
        free(buf);
        prev = cur;
        cur = cur == &fr[0] ? &fr[1] : &fr[0];
        if ((iterations && n >= iterations) || top_wait(&keys, every, &wait)) {
            rc = CLI_OK;
            break;
        }
    }

    if (tty)
        fputs("\033[?25h", stdout);
    if (keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    sigprocmask(SIG_SETMASK, &old, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(fr[0].list.v);
    free(fr[1].list.v);
    staging_line_free(&fr[0].line);
    staging_line_free(&fr[1].line);
    free(fr[0].working);
    free(fr[1].working);
    return rc;
}
