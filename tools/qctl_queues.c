/* qctl_queues.c: the commands on whole queues and on the data directory:
 * kick and purge (in bounded transactions), pause and resume, create and
 * configure (a queue's settings), stats (depths, totals, the map) and info
 * (the map and the staged rows), verify (every record checked) and compact
 * (a compacted copy). */
#include "qctl.h"

#include "json.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"
#include "store.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHUNK 10000u             /* jobs per transaction: purge, kick */

/* ---------------------------------------------------------------- queues */

int qctl_arg_queue(const Ctx *c, const char *q)
{
    if (!queue_name_ok(q))
        return qctl_usage(c, "invalid queue name '%s': use 1 to %d of A-Z a-z 0-9 _ . -",
                          q, QUEUE_NAME_MAX);
    return CLI_OK;
}

static void conf_json(FILE *f, const QueueConf *cf)
{
    fprintf(f, "{\"ttr_ms\":%" PRIu32 ",\"max_attempts\":%" PRIu32 ",\"backoff_ms\":%" PRIu32
               ",\"backoff_max_ms\":%" PRIu32 ",\"max_body\":%" PRIu32 ",\"key_retention_s\":%" PRIu32 "}",
            cf->ttr_ms, cf->max_attempts, cf->backoff_ms, cf->backoff_max_ms, cf->max_body,
            cf->key_retention_s);
}

int qctl_queue_fail(const Ctx *c, int rc, const char *q)
{
    switch (rc) {
    case PL_ENOQUEUE:
        return cli_errorf("queue '%s' does not exist; create it with 'qctl create %s' or put a "
                          "job to it", q, q);
    case PL_EPAUSED:
        return cli_errorf("queue '%s' is paused; resume it with 'qctl resume %s'", q, q);
    case PL_EFULL:
    case ENOSPC:
        return qctl_room_fail(c, rc);
    default:
        return cli_errorf("queue '%s': %s", q, pl_strerror(rc));
    }
}

static int stats_fn(Txn *t, void *arg)
{
    QueueStats *st = arg;
    return queue_stats(t, st->name, st);
}

int qctl_read_stats(Ctx *c, const char *q, QueueStats *st)
{
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", q);
    return store_read(c->s, stats_fn, st);
}

/* ----------------------------------------------------------- the map */

/* Staged: the staged rows (the working rows of the line), by model. */
typedef struct Staged {
    StagedCount all;
    StagedCount *v;
    size_t n, cap;
} Staged;

static int staged_add(const StagedCount *sc, void *arg)
{
    Staged *st = arg;
    st->v = cli_grow(st->v, st->n, &st->cap, sizeof *st->v, 8);
    st->v[st->n++] = *sc;
    st->all.rows += sc->rows;
    st->all.refs += sc->refs;
    st->all.legacy += sc->legacy;
    st->all.bytes += sc->bytes;
    return 0;
}

static int staged_fn(Txn *t, void *arg)
{
    Staged *st = arg;
    memset(&st->all, 0, sizeof st->all);
    st->n = 0;
    return staging_row_count(t, staged_add, st);
}

/* read_staged counts the staged rows: 0, or a message and CLI_FAIL. */
static int read_staged(Ctx *c, Staged *st)
{
    int rc = store_read(c->s, staged_fn, st);
    if (rc)
        return cli_errorf("cannot count the staged rows of '%s': %s", c->dir, pl_strerror(rc));
    return 0;
}

/* info_human and info_json describe the map (store_info) and the staged
 * rows. */
static void info_human(FILE *f, const Ctx *c, const StoreInfo *i, const Staged *st)
{
    uint64_t used = (uint64_t)i->last_page * i->page_size;
    fprintf(f, "data dir    %s\n", c->dir);
    fprintf(f, "map size    %s (limit: %s)\n", cli_size(i->map_size).s,
            i->map_max ? cli_size(i->map_max).s : "none but the disk");
    fprintf(f, "used        %s: %zu pages of %zu B, %.1f%% of the map\n", cli_size(used).s,
            i->last_page, i->page_size, i->map_size ? 100.0 * (double)used / (double)i->map_size : 0);
    fprintf(f, "free pages  %zu (%s), reused before the map grows\n", i->free_pages,
            cli_size((uint64_t)i->free_pages * i->page_size).s);
    fprintf(f, "file size   %s (headroom kept for acks and deletes: %s)\n",
            cli_size(i->file_size).s, cli_size(i->headroom).s);
    fprintf(f, "readers     %u of %u\n", i->readers, i->max_readers);
    fprintf(f, "staged rows %" PRIu64, st->all.rows);
    if (st->all.rows) {
        fprintf(f, " (%s; rows in flight, deleted as batches take them:",
                cli_size(st->all.bytes).s);
        for (size_t k = 0; k < st->n; k++)
            if (st->v[k].rows)
                fprintf(f, " %s %" PRIu64, st->v[k].model, st->v[k].rows);
        fputc(')', f);
    }
    fputc('\n', f);
    if (st->all.legacy) {
        fprintf(f, "legacy rows %" PRIu64 " (staged by a pickline before row instances; never "
                "deleted by the line):", st->all.legacy);
        for (size_t k = 0; k < st->n; k++)
            if (st->v[k].legacy)
                fprintf(f, " %s %" PRIu64, st->v[k].model, st->v[k].legacy);
        fputc('\n', f);
    }
}

static void staged_json(FILE *f, const StagedCount *sc)
{
    fprintf(f, "{\"rows\":%" PRIu64 ",\"refs\":%" PRIu64 ",\"legacy\":%" PRIu64
            ",\"bytes\":%" PRIu64, sc->rows, sc->refs, sc->legacy, sc->bytes);
}

static void info_json(FILE *f, const Ctx *c, const StoreInfo *i, const Staged *st)
{
    fputs("{\"path\":", f);
    json_put_string(f, c->dir, strlen(c->dir));
    fprintf(f, ",\"map_size\":%zu,\"map_max\":%zu,\"page_size\":%zu,\"used_pages\":%zu"
               ",\"used_bytes\":%" PRIu64 ",\"free_pages\":%zu,\"file_size\":%zu"
               ",\"headroom\":%zu,\"readers\":%u,\"max_readers\":%u,\"staged\":",
            i->map_size, i->map_max, i->page_size, i->last_page,
            (uint64_t)i->last_page * i->page_size, i->free_pages, i->file_size, i->headroom,
            i->readers, i->max_readers);
    staged_json(f, &st->all);
    fputs(",\"models\":{", f);
    for (size_t k = 0; k < st->n; k++) {
        if (k)
            fputc(',', f);
        json_put_string(f, st->v[k].model, strlen(st->v[k].model));
        fputc(':', f);
        staged_json(f, &st->v[k]);
        fputc('}', f);
    }
    fputs("}}}", f);
}

/* ----------------------------------------------------------------- kick */

typedef struct KickOp {
    const char *queue;
    size_t n, kicked;
} KickOp;

static int kick_fn(Txn *t, void *arg)
{
    KickOp *k = arg;
    k->kicked = 0;
    return queue_kick(t, k->queue, k->n, &k->kicked);
}

int qctl_kick(Ctx *c)
{
    const char *q = c->pos[0];
    KickOp k = {.queue = q};
    QueueStats st;
    uint64_t want = 0, total = 0;
    int rc;

    if ((rc = qctl_arg_queue(c, q)))
        return rc;
    if (c->npos > 1 && cli_parse_u64(c->pos[1], 1, UINT64_MAX, &want))
        return qctl_usage(c, "N '%s' is not a whole number from 1", c->pos[1]);
    if ((rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    if (c->npos < 2) {
        /* "All" means those buried now: a bound, should workers bury more. */
        if ((rc = qctl_read_stats(c, q, &st)))
            return qctl_queue_fail(c, rc, q);
        want = st.buried;
    }
    while (total < want) {
        k.n = want - total < CHUNK ? (size_t)(want - total) : CHUNK;
        if ((rc = store_run(c->s, kick_fn, &k)) != 0) {
            if (total)
                cli_note("kicked %" PRIu64 " jobs before this error", total);
            return qctl_queue_fail(c, rc, q);
        }
        total += k.kicked;
        if (k.kicked < k.n)
            break;
    }
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"kicked\":%" PRIu64 "}\n", total);
    } else {
        printf("kicked %" PRIu64 " job%s to ready in queue '%s'\n", total, total == 1 ? "" : "s", q);
    }
    return CLI_OK;
}

/* ------------------------------------------------- purge, pause, resume */

typedef struct PurgeOp {
    const char *queue;
    int state;
    size_t n;
    uint64_t *ids;          /* CHUNK: the jobs of one transaction */
} PurgeOp;

static int purge_collect(const Job *j, void *arg)
{
    PurgeOp *p = arg;
    p->ids[p->n++] = j->id;
    return 0;
}

/* purge_fn deletes up to CHUNK jobs, each giving up the staged row it
 * references (staging_job_gone), so a purge leaves no row that nothing
 * names. */
static int purge_fn(Txn *t, void *arg)
{
    PurgeOp *p = arg;
    p->n = 0;
    int rc = queue_peek(t, p->queue, p->state, CHUNK, purge_collect, p);
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        Job j;
        if ((rc = queue_get(t, p->ids[i], &j)) == 0 &&
            (rc = staging_job_gone(t, j.body, j.len, NULL)) == 0)
            rc = queue_delete(t, p->ids[i]);
    }
    return rc;
}

int qctl_purge(Ctx *c)
{
    const char *q = c->pos[0], *sname = qctl_opt(c, "state");
    PurgeOp p = {.queue = q};
    uint64_t total = 0;
    int rc;

    if ((rc = qctl_arg_queue(c, q)))
        return rc;
    if ((p.state = queue_state_parse(sname)) < 0)
        return qctl_usage(c, "--state: unknown state '%s'; use ready, delayed, reserved, buried "
                             "or all", sname);
    if ((rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    p.ids = xmalloc(CHUNK * sizeof *p.ids);
    /* Bounded transactions: a big purge never holds the writer lock long. */
    do {
        if ((rc = store_run(c->s, purge_fn, &p)) != 0) {
            free(p.ids);
            if (total)
                cli_note("purged %" PRIu64 " jobs before this error", total);
            return qctl_queue_fail(c, rc, q);
        }
        total += p.n;
    } while (p.n == CHUNK);
    free(p.ids);
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"purged\":%" PRIu64 "}\n", total);
    } else {
        printf("purged %" PRIu64 " %s%sjob%s from queue '%s'\n", total,
               p.state ? queue_state_name(p.state) : "", p.state ? " " : "",
               total == 1 ? "" : "s", q);
    }
    return CLI_OK;
}

typedef struct PauseOp {
    const char *queue;
    int paused;
} PauseOp;

static int pause_fn(Txn *t, void *arg)
{
    PauseOp *p = arg;
    return queue_pause(t, p->queue, p->paused);
}

static int pause_run(Ctx *c, int paused)
{
    const char *q = c->pos[0];
    PauseOp p = {q, paused};
    int rc;

    if ((rc = qctl_arg_queue(c, q)) || (rc = qctl_open(c, OPEN_WRITE)))
        return rc;
    if ((rc = store_run(c->s, pause_fn, &p)) != 0)
        return qctl_queue_fail(c, rc, q);
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        printf(",\"paused\":%s}\n", paused ? "true" : "false");
    } else if (paused) {
        printf("paused queue '%s': reserve hands out nothing until 'qctl resume %s'\n", q, q);
    } else {
        printf("resumed queue '%s'\n", q);
    }
    return CLI_OK;
}

int qctl_pause(Ctx *c)
{
    return pause_run(c, 1);
}

int qctl_resume(Ctx *c)
{
    return pause_run(c, 0);
}

/* ---------------------------------------------------- create, configure */

/* ConfSet: the settings given on the command line, to lay over a conf. */
typedef struct ConfSet {
    int any;
    const char *ttr, *attempts, *backoff, *backoff_max, *max_body, *keep; /* given or NULL */
    QueueConf v;
} ConfSet;

static int conf_parse(const Ctx *c, ConfSet *cs)
{
    uint64_t ttr, att, bo, bomax, body, keep;
    int rc;
    if ((rc = qctl_flag_ms(c, "ttr", 1, UINT32_MAX, 0, &ttr)) ||
        (rc = qctl_flag_u64(c, "max-attempts", 0, UINT32_MAX, 0, &att)) ||
        (rc = qctl_flag_ms(c, "backoff", 0, UINT32_MAX, 0, &bo)) ||
        (rc = qctl_flag_ms(c, "backoff-max", 0, UINT32_MAX, 0, &bomax)) ||
        (rc = qctl_flag_u64(c, "max-body", 1, QUEUE_BODY_LIMIT, 0, &body)) ||
        (rc = qctl_flag_u64(c, "key-retention", 0, QUEUE_KEY_RETENTION_MAX, 0, &keep)))
        return rc;
    cs->ttr = qctl_opt(c, "ttr");
    cs->attempts = qctl_opt(c, "max-attempts");
    cs->backoff = qctl_opt(c, "backoff");
    cs->backoff_max = qctl_opt(c, "backoff-max");
    cs->max_body = qctl_opt(c, "max-body");
    cs->keep = qctl_opt(c, "key-retention");
    cs->any = cs->ttr || cs->attempts || cs->backoff || cs->backoff_max || cs->max_body || cs->keep;
    cs->v = (QueueConf){(uint32_t)ttr, (uint32_t)att, (uint32_t)bo, (uint32_t)bomax, (uint32_t)body,
                        (uint32_t)keep};
    return CLI_OK;
}

static void conf_apply(const ConfSet *cs, QueueConf *cf)
{
    if (cs->ttr)
        cf->ttr_ms = cs->v.ttr_ms;
    if (cs->attempts)
        cf->max_attempts = cs->v.max_attempts;
    if (cs->backoff)
        cf->backoff_ms = cs->v.backoff_ms;
    if (cs->backoff_max)
        cf->backoff_max_ms = cs->v.backoff_max_ms;
    if (cs->max_body)
        cf->max_body = cs->v.max_body;
    if (cs->keep)
        cf->key_retention_s = cs->v.key_retention_s;
}

/* conf_bad says what is inconsistent in cf, or returns NULL. */
static const char *conf_bad(const QueueConf *cf)
{
    if (cf->backoff_max_ms < cf->backoff_ms)
        return "--backoff-max is below --backoff (the first retry delay)";
    return NULL;
}

static void conf_print(const Ctx *c, const char *q, const QueueConf *cf, const char *what)
{
    if (c->json) {
        fputs("{\"queue\":", stdout);
        json_put_string(stdout, q, strlen(q));
        fputs(",\"conf\":", stdout);
        conf_json(stdout, cf);
        puts("}");
        return;
    }
    printf("%s queue '%s'\n", what, q);
    printf("  ttr           %ss\n", cli_secs(cf->ttr_ms).s);
    if (cf->max_attempts)
        printf("  max attempts  %" PRIu32 ", then buried\n", cf->max_attempts);
    else
        printf("  max attempts  no limit\n");
    printf("  backoff       %ss, doubling up to %ss\n", cli_secs(cf->backoff_ms).s,
           cli_secs(cf->backoff_max_ms).s);
    printf("  max body      %" PRIu32 " bytes (%s)\n", cf->max_body, cli_size(cf->max_body).s);
    if (cf->key_retention_s)
        printf("  keys kept     %ss after their job is done\n",
               cli_secs((uint64_t)cf->key_retention_s * 1000).s);
    else
        printf("  keys kept     only while their job is in the queue\n");
}

typedef struct ConfOp {
    const char *queue;
    const ConfSet *cs;
    QueueConf conf;
    const char *bad;
} ConfOp;

static int create_fn(Txn *t, void *arg)
{
    ConfOp *o = arg;
    return queue_create(t, o->queue, &o->conf);
}

static int configure_fn(Txn *t, void *arg)
{
    ConfOp *o = arg;
    QueueStats st;
    int rc;
    if ((rc = queue_stats(t, o->queue, &st)) != 0)
        return rc;
    o->conf = st.conf;
    conf_apply(o->cs, &o->conf);
    if ((o->bad = conf_bad(&o->conf)) != NULL)
        return PL_EINVAL;
    return o->cs->any ? queue_configure(t, o->queue, &o->conf) : 0;
}

int qctl_create(Ctx *c)
{
    const char *q = c->pos[0], *bad;
    ConfSet cs;
    ConfOp o = {.queue = q, .cs = &cs};
    int rc;

    if ((rc = qctl_arg_queue(c, q)) || (rc = conf_parse(c, &cs)))
        return rc;
    queue_conf_default(&o.conf);
    conf_apply(&cs, &o.conf);
    if ((bad = conf_bad(&o.conf)) != NULL)
        return qctl_usage(c, "%s", bad);
    if ((rc = qctl_open(c, OPEN_CREATE)))
        return rc;
    rc = store_run(c->s, create_fn, &o);
    if (rc == EEXIST)
        return cli_errorf("queue '%s' already exists; change its settings with 'qctl configure "
                          "%s --ttr S ...'", q, q);
    if (rc == PL_EINVAL)
        return cli_errorf("invalid settings for queue '%s' (%s)", q, pl_strerror(rc));
    if (rc)
        return qctl_queue_fail(c, rc, q);
    conf_print(c, q, &o.conf, "created");
    return CLI_OK;
}

int qctl_configure(Ctx *c)
{
    const char *q = c->pos[0];
    ConfSet cs;
    ConfOp o = {.queue = q, .cs = &cs};
    int rc;

    if ((rc = qctl_arg_queue(c, q)) || (rc = conf_parse(c, &cs)))
        return rc;
    if ((rc = qctl_open(c, cs.any ? OPEN_WRITE : OPEN_READ)))
        return rc;
    rc = cs.any ? store_run(c->s, configure_fn, &o) : store_read(c->s, configure_fn, &o);
    if (rc == PL_EINVAL && o.bad)
        return qctl_usage(c, "%s", o.bad);
    if (rc == PL_EINVAL)
        return cli_errorf("invalid settings for queue '%s' (%s)", q, pl_strerror(rc));
    if (rc)
        return qctl_queue_fail(c, rc, q);
    conf_print(c, q, &o.conf, cs.any ? "configured" : "settings of");
    return CLI_OK;
}

/* ----------------------------------------------------------- stats, info */

static int list_add(const QueueStats *s, void *arg)
{
    ListOp *o = arg;
    o->v = cli_grow(o->v, o->n, &o->cap, sizeof *o->v, 16);
    o->v[o->n++] = *s;
    return 0;
}

int qctl_list_fn(Txn *t, void *arg)
{
    ListOp *o = arg;
    QueueStats st;
    int rc;
    o->n = 0;
    o->ms = pl_now_ms();
    if (!o->queue)
        return queue_list(t, list_add, o);
    if ((rc = queue_stats(t, o->queue, &st)) != 0)
        return rc;
    return list_add(&st, o);
}

static void stats_json(const ListOp *o)
{
    putchar('{');
    for (size_t i = 0; i < o->n; i++) {
        const QueueStats *s = &o->v[i];
        fputs(i ? ",\n " : "\n ", stdout);
        json_put_string(stdout, s->name, strlen(s->name));
        printf(":{\"ready\":%" PRIu64 ",\"delayed\":%" PRIu64 ",\"reserved\":%" PRIu64
               ",\"buried\":%" PRIu64 ",\"puts\":%" PRIu64 ",\"reserves\":%" PRIu64
               ",\"acks\":%" PRIu64 ",\"releases\":%" PRIu64 ",\"buries\":%" PRIu64
               ",\"kicks\":%" PRIu64 ",\"expiries\":%" PRIu64 ",\"deletes\":%" PRIu64
               ",\"paused\":%s",
               s->ready, s->delayed, s->reserved, s->buried, s->puts, s->reserves, s->acks,
               s->releases, s->buries, s->kicks, s->expiries, s->deletes,
               s->paused ? "true" : "false");
        if (s->ready)
            printf(",\"oldest_ready_ms\":%" PRIu64, s->oldest_ready_ms);
        else
            fputs(",\"oldest_ready_ms\":null", stdout);
        printf(",\"created_ms\":%" PRIu64 ",\"conf\":", s->created_ms);
        conf_json(stdout, &s->conf);
        putchar('}');
    }
    puts(o->n ? "\n}" : "}");
}

static const char *const stats_head[] = {"QUEUE", "READY", "DELAYED", "RESERVED", "BURIED",
                                         "PUTS", "RESERVES", "ACKS", "BURIES", "OLDEST", "PAUSED"};

int qctl_stats(Ctx *c)
{
    ListOp o = {.queue = c->npos ? c->pos[0] : NULL};
    CliTable t = {.ncol = 11, .head = stats_head, .align = "lrrrrrrrrrl"};
    StoreInfo info;
    Staged staged = {0};
    int rc;

    if ((o.queue && (rc = qctl_arg_queue(c, o.queue))) || (rc = qctl_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_read(c->s, qctl_list_fn, &o)) != 0) {
        rc = o.queue ? qctl_queue_fail(c, rc, o.queue)
                     : cli_errorf("cannot list queues: %s", pl_strerror(rc));
        goto fail;
    }
    if (c->json) {
        stats_json(&o);
        rc = CLI_OK;
        goto fail;
    }
    if ((rc = store_info(c->s, &info)) != 0) {
        rc = cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
        goto fail;
    }
    if ((rc = read_staged(c, &staged)) != 0)
        goto fail;
    for (size_t i = 0; i < o.n; i++) {
        const QueueStats *s = &o.v[i];
        cli_table_add(&t, "%s", s->name);
        cli_table_add(&t, "%" PRIu64, s->ready);
        cli_table_add(&t, "%" PRIu64, s->delayed);
        cli_table_add(&t, "%" PRIu64, s->reserved);
        cli_table_add(&t, "%" PRIu64, s->buried);
        cli_table_add(&t, "%" PRIu64, s->puts);
        cli_table_add(&t, "%" PRIu64, s->reserves);
        cli_table_add(&t, "%" PRIu64, s->acks);
        cli_table_add(&t, "%" PRIu64, s->buries);
        cli_table_add(&t, "%s", s->ready ? cli_dur(s->oldest_ready_ms).s : "-");
        cli_table_add(&t, "%s", s->paused ? "paused" : "-");
    }
    if (o.n)
        cli_table_print(&t, stdout);
    else
        puts("no queues yet; 'qctl put QUEUE JSON' or 'qctl create QUEUE' makes one");
    putchar('\n');
    info_human(stdout, c, &info, &staged);
    rc = CLI_OK;
fail:
    cli_table_free(&t);
    free(o.v);
    free(staged.v);
    return rc;
}

int qctl_info(Ctx *c)
{
    StoreInfo info;
    Staged staged = {0};
    int rc;
    if ((rc = qctl_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_info(c->s, &info)) != 0)
        return cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
    if ((rc = read_staged(c, &staged)) != 0)
        return rc;
    if (c->json) {
        info_json(stdout, c, &info, &staged);
        putchar('\n');
    } else {
        info_human(stdout, c, &info, &staged);
    }
    free(staged.v);
    return CLI_OK;
}

/* --------------------------------------------------------------- compact */

/* dir_bytes sums the sizes of the regular files in dir. */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    uint64_t n = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            n += (uint64_t)st.st_size;
    closedir(d);
    return n;
}

int qctl_compact(Ctx *c)
{
    const char *dst = c->pos[0];
    StoreInfo info;
    uint64_t used, after;
    int rc;

    if ((rc = qctl_open(c, OPEN_READ)))
        return rc;
    if ((rc = store_info(c->s, &info)) != 0)
        return cli_errorf("cannot read the map's size of '%s': %s", c->dir, pl_strerror(rc));
    used = (uint64_t)info.last_page * info.page_size;
    rc = store_compact(c->s, dst);
    if (rc == EEXIST || rc == ENOTEMPTY || rc == PL_ENOTDATA)
        return cli_errorf("'%s' is not empty; compact into a new or empty directory", dst);
    if (rc == EACCES || rc == EPERM)
        return cli_errorf("permission denied writing '%s'; pick a directory you can write", dst);
    if (rc == ENOSPC)
        return cli_errorf("no space left writing '%s'; the copy needs up to %s", dst,
                          cli_size(used).s);
    if (rc)
        return cli_errorf("cannot compact '%s' into '%s': %s", c->dir, dst, pl_strerror(rc));
    after = dir_bytes(dst);
    if (c->json) {
        fputs("{\"source\":", stdout);
        json_put_string(stdout, c->dir, strlen(c->dir));
        fputs(",\"dest\":", stdout);
        json_put_string(stdout, dst, strlen(dst));
        printf(",\"before_bytes\":%zu,\"used_bytes\":%" PRIu64 ",\"after_bytes\":%" PRIu64 "}\n",
               info.file_size, used, after);
    } else {
        printf("compacted '%s' into '%s'\n", c->dir, dst);
        printf("  before  %s on disk, %s in use\n", cli_size(info.file_size).s, cli_size(used).s);
        printf("  after   %s\n", cli_size(after).s);
        printf("to use it, stop the engine and swap the directories\n");
    }
    return CLI_OK;
}

/* ---------------------------------------------------------------- verify */

typedef struct VerifyOut {
    const Ctx *c;
    int first;
} VerifyOut;

static void verify_report(void *arg, const char *what, const char *why)
{
    VerifyOut *o = arg;
    if (o->c->json) {
        fputs(o->first ? "" : ",", stdout);
        fputs("{\"record\":", stdout);
        json_put_string(stdout, what, strlen(what));
        fputs(",\"problem\":", stdout);
        json_put_string(stdout, why, strlen(why));
        fputc('}', stdout);
    } else {
        printf("%s: %s\n", what, why);
    }
    o->first = 0;
}

int qctl_verify(Ctx *c)
{
    uint64_t max;
    int rc;
    if ((rc = qctl_flag_u64(c, "max-problems", 1, UINT64_MAX, 1000, &max)))
        return rc;
    if ((rc = qctl_open(c, OPEN_READ)))
        return rc;
    VerifyCounts vc;
    VerifyOut o = {c, 1};
    if (c->json)
        fputs("{\"problems\":[", stdout);
    rc = store_verify(c->s, verify_report, &o, max, &vc);
    if (rc) {
        if (c->json)
            puts("]}");
        return cli_errorf("verify of '%s' stopped: %s", c->dir, pl_strerror(rc));
    }
    if (c->json) {
        printf("],\"problem_count\":%" PRIu64 ",\"records\":%" PRIu64 ",\"queues\":%" PRIu64
               ",\"jobs\":%" PRIu64 ",\"bodies\":%" PRIu64 ",\"index\":%" PRIu64 ",\"keys\":%" PRIu64
               ",\"retained_keys\":%" PRIu64 ",\"staged\":%" PRIu64 ",\"ok\":%s}\n",
               vc.problems, vc.records, vc.queues, vc.jobs, vc.bodies, vc.index, vc.keys,
               vc.retained_keys, vc.staged, vc.problems ? "false" : "true");
    } else {
        if (vc.problems > max)
            printf("... and %" PRIu64 " more\n", vc.problems - max);
        printf("%s: %" PRIu64 " records read: %" PRIu64 " queues, %" PRIu64 " jobs, %" PRIu64
               " index entries, %" PRIu64 " keys (%" PRIu64 " retained), %" PRIu64 " staged\n",
               c->dir, vc.records, vc.queues, vc.jobs, vc.index, vc.keys + vc.retained_keys,
               vc.retained_keys, vc.staged);
        if (vc.problems)
            printf("%" PRIu64 " problem%s found\n", vc.problems, vc.problems == 1 ? "" : "s");
        else
            printf("no problems found\n");
    }
    return vc.problems ? CLI_FAIL : CLI_OK;
}
