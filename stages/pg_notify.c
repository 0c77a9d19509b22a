/* pg_notify.c: change notices from PostgreSQL (step A.2 of the reference
 * pipeline): LISTEN on channels and turn each notification into a job.
 *
 *   - name: users_notices
 *     kind: pg_notify
 *     dsn: "env:SOURCE_DSN"     # libpq conninfo, or env:NAME to read $NAME
 *     channels: [users_changed]
 *     output: pg_keys           # each notification's payload becomes a job
 *     wake: users_src           # optional: a pg_extract stage to wake at once
 *
 * A payload is JSON {"table":T,"key":{column:value,...}} (what a trigger
 * sends with pg_notify(channel, json_build_object(...)::text)), with
 * "op":"delete" for a row deleted (pg_extract then stages its delete when
 * the row is gone; other members are carried as they are); it goes on
 * the output as it is, with the idempotency key "CHANNEL:HASH" (fnv-1a of
 * the payload), so a burst of notices for one row waiting in the queue is one
 * job. All notifications read in one loop turn commit in one Emit (stage.h). A payload
 * that is not such an object cannot be buried (there is no input job): it is
 * logged with the reason, counted, and recorded as a reject (model = the
 * channel, the row {"channel","payload"}, errors naming the problem, the
 * payload as the job to replay on the output), visible in `qctl rejects`.
 *
 * Notifications are lost while the connection is down, so they are only a
 * wake-up: after every (re)connect, once LISTEN is in effect, the stage wakes
 * its `wake` stage (pg_extract_wake), which runs a watermark extract from its
 * cursor and so brings every change made during the gap. Each notice batch
 * also wakes it, for low latency.
 *
 * The connection is a PgLink (pglink.h): it never blocks the loop, runs the
 * LISTENs as its setup after every connect, and reconnects with backoff
 * (0.2 s doubling to 30 s), logged once when it goes down; the stage logs
 * when it listens again. Notifications are read with PQnotifies whenever
 * the server sent something. */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pglink.h"
#include "pl.h"
#include "staging.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct NotifyStage {
    Stage *stage;
    char *conninfo;
    const char **channels;
    size_t nch;
    const char *wake_name;
    Stage *wake;
    PgLink link;
    Strbuf listen_sql;
    uint64_t notices, bad;
    unsigned committing;
} NotifyStage;

/* Bad: the rejects of one batch (length-prefixed: channel, row, errors,
 * payload), read by the commit, freed by its done. */
typedef struct Bad {
    NotifyStage *k;
    Strbuf recs;
} Bad;

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

static void put_chunk(Strbuf *b, const void *p, size_t n)
{
    unsigned char be[4];
    pl_put_be32(be, (uint32_t)n);
    sb_add(b, be, 4);
    sb_add(b, p, n);
}

static const unsigned char *get_chunk(const unsigned char *p, const void **v, size_t *n)
{
    *n = pl_get_be32(p);
    *v = p + 4;
    return p + 4 + *n;
}

static int bad_apply(Txn *t, void *arg)
{
    Bad *b = arg;
    const unsigned char *p = (const unsigned char *)b->recs.buf, *end = p + b->recs.len;
    while (p < end) {
        const void *ch, *row, *errs, *job;
        size_t chl, rl, el, jl;
        p = get_chunk(p, &ch, &chl);
        p = get_chunk(p, &row, &rl);
        p = get_chunk(p, &errs, &el);
        p = get_chunk(p, &job, &jl);
        char model[128];
        snprintf(model, sizeof model, "%.*s", (int)chl, (const char *)ch);
        RejectRec r = {.model = model, .key = "", .stage = b->k->stage->conf->name,
                       .queue = b->k->stage->conf->outputs[0], .row = row, .row_len = rl,
                       .errors = errs, .errors_len = el, .job = job, .job_len = jl};
        uint64_t rid;
        int rc = reject_add(t, &r, &rid);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- payloads */

/* payload_check: NULL when p is a notice {"table":T,"key":{...}}, else why not. */
static const char *payload_check(const char *p, size_t n, char *err, size_t errlen)
{
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    const char *why = NULL;
    char perr[200];
    if (row_from_json_object(p, n, &mp, perr, sizeof perr) != 0) {
        snprintf(err, errlen, "the payload is not a JSON object (%s)", perr);
        why = err;
    } else {
        RowView v;
        row_view(&v, mp.data, mp.size);
        const msgpack_object *t = row_field(&v.root, "table"), *key = row_field(&v.root, "key");
        if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size == 0) {
            why = "the payload has no \"table\" string";
        } else if (!key || key->type != MSGPACK_OBJECT_MAP || key->via.map.size == 0) {
            why = "the payload has no \"key\" object naming the row's key columns";
        } else {
            for (uint32_t i = 0; i < key->via.map.size; i++) {
                int ty = key->via.map.ptr[i].val.type;
                if (ty == MSGPACK_OBJECT_MAP || ty == MSGPACK_OBJECT_ARRAY ||
                    ty == MSGPACK_OBJECT_NIL) {
                    why = "a value of the payload's \"key\" is null, an object or an array";
                    break;
                }
            }
        }
        row_view_free(&v);
    }
    msgpack_sbuffer_destroy(&mp);
    return why;
}

static void bad_add(Bad *b, const char *channel, const char *payload, const char *why)
{
    msgpack_sbuffer row;
    msgpack_packer pk;
    msgpack_sbuffer_init(&row);
    msgpack_packer_init(&pk, &row, msgpack_sbuffer_write);
    size_t cl = strlen(channel), pl = strlen(payload);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str(&pk, 7);
    msgpack_pack_str_body(&pk, "channel", 7);
    msgpack_pack_str(&pk, cl);
    msgpack_pack_str_body(&pk, channel, cl);
    msgpack_pack_str(&pk, 7);
    msgpack_pack_str_body(&pk, "payload", 7);
    msgpack_pack_str(&pk, pl);
    msgpack_pack_str_body(&pk, payload, pl);
    Strbuf e;
    sb_init(&e);
    sb_adds(&e, "[{\"field\":\"payload\",\"rule\":\"format\",\"message\":");
    Strbuf m;
    sb_init(&m);
    sb_addf(&m, "%s; a notice is {\"table\":T,\"key\":{column:value,...}}", why);
    sb_add_json_string(&e, m.buf, m.len);
    sb_adds(&e, "}]");
    put_chunk(&b->recs, channel, cl);
    put_chunk(&b->recs, row.data, row.size);
    put_chunk(&b->recs, e.buf, e.len);
    put_chunk(&b->recs, payload, pl);
    sb_free(&e);
    sb_free(&m);
    msgpack_sbuffer_destroy(&row);
}

static void notices_committed(void *arg, int rc)
{
    Bad *b = arg;
    NotifyStage *k = b->k;
    k->committing--;
    if (rc)
        stage_log(k->stage, PL_LOG_ERROR, 0, "notices lost: their commit failed (%s); the "
                  "wake stage's watermark extract still brings the rows", pl_strerror(rc));
    sb_free(&b->recs);
    free(b);
}

/* take_notices commits every notification waiting in libpq as jobs (one
 * Emit), and wakes the wake stage. */
static void take_notices(NotifyStage *k)
{
    PGnotify *n;
    Emit *e = NULL;
    Bad *bad = NULL;
    char key[200], err[300];
    size_t good = 0;
    while ((n = PQnotifies(k->link.conn)) != NULL) {
        size_t pl = strlen(n->extra);
        k->notices++;
        const char *why = payload_check(n->extra, pl, err, sizeof err);
        if (!e)
            e = emit_new(k->stage);
        if (why) {
            k->bad++;
            stage_log(k->stage, PL_LOG_WARN, 0, "bad notice on channel %s (%llu so far): %s; "
                      "payload %.200s", n->relname, (unsigned long long)k->bad, why, n->extra);
            if (!bad) {
                bad = xcalloc(1, sizeof *bad);
                bad->k = k;
                sb_init(&bad->recs);
            }
            bad_add(bad, n->relname, n->extra, why);
        } else {
            snprintf(key, sizeof key, "%.100s:%016llx", n->relname,
                     (unsigned long long)fnv(n->extra, pl));
            emit_put(e, k->stage->conf->outputs[0], n->extra, pl, key);
            good++;
        }
        PQfreemem(n);
    }
    if (!e)
        return;
    if (!bad) {
        bad = xcalloc(1, sizeof *bad);
        bad->k = k;
        sb_init(&bad->recs);
    }
    if (bad->recs.len)
        emit_extra(e, bad_apply, bad);
    k->committing++;
    emit_commit(e, notices_committed, bad);
    if (good && k->wake)
        pg_extract_wake(k->wake);
}

/* ---------------------------------------------------------------- connection */

/* listening: the LISTENs are in effect (again). Notices of a gap are gone:
 * the wake stage catches up. */
static void listening(PgLink *l)
{
    NotifyStage *k = l->arg;
    stage_log(k->stage, PL_LOG_INFO, 0, "listening on %zu channel%s%s%s%s", k->nch,
              k->nch == 1 ? "" : "s", l->again ? " again" : "", k->wake ? "; waking " : "",
              k->wake ? k->wake_name : "");
    if (k->wake)
        pg_extract_wake(k->wake);
}

static void notified(PgLink *l)
{
    take_notices(l->arg);
}

static const PgLinkOps notify_link = {.up = listening, .input = notified};

/* ---------------------------------------------------------------- init */

static const ConfKey pgn_keys[] = {
    {"dsn", KEY_STR, 1, 0, 0, STAGE_DSN_HINT, stage_check_dsn},
    {"channels", KEY_STRS, 1, 0, 0, "list the channels the source's triggers NOTIFY on", NULL},
    {"wake", KEY_STR, 0, 0, 0, NULL, NULL},
    {0},
};

static int pgn_init(Stage *s, char *err, size_t errlen)
{
    const Pipeline *p = engine_pipeline(s->engine);
    const char *file = p->path, *dsn = NULL;
    int rc;
    NotifyStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    k->stage = s;
    sb_init(&k->listen_sql);
    if ((rc = stage_conf_str(s, "dsn", &dsn, err, errlen)) != 0 ||
        (rc = stage_conf_strs(s, "channels", &k->channels, &k->nch, err, errlen)) != 0 ||
        (rc = stage_conf_str(s, "wake", &k->wake_name, err, errlen)) != 0)
        return rc;
    if (!dsn) {
        snprintf(err, errlen, "%s:%d: stage '%s': dsn: is required; give a libpq conninfo or "
                 "env:NAME", file, s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    if (!k->nch) {
        snprintf(err, errlen, "%s:%d: stage '%s': channels: is required; list the channels the "
                 "source's triggers NOTIFY on", file, s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    if (k->wake_name) {
        const StageConf *w = NULL;
        for (size_t i = 0; i < p->nstages; i++)
            if (!strcmp(p->stages[i].name, k->wake_name))
                w = &p->stages[i];
        if (!w || strcmp(w->kind, "pg_extract") != 0) {
            snprintf(err, errlen, "%s:%d: stage '%s': wake: '%s' is %s; name a pg_extract stage",
                     file, s->conf->line, s->conf->name, k->wake_name,
                     w ? "not a pg_extract stage" : "not a stage of this pipeline");
            return PL_EINVAL;
        }
    }
    if ((rc = stage_pg_dsn(s, dsn, &k->conninfo, err, errlen)) != 0)
        return rc;
    for (size_t i = 0; i < k->nch; i++) {
        sb_adds(&k->listen_sql, "LISTEN ");
        model_sql_ident(&k->listen_sql, k->channels[i]);
        sb_adds(&k->listen_sql, "; ");
    }
    pglink_init(&k->link, s, k->conninfo, k->listen_sql.buf, "source",
                "notices are missed until it is back (the wake stage catches up then)",
                &notify_link, k);
    return 0;
}

static void pgn_begin(Stage *s)
{
    NotifyStage *k = s->data;
    if (k->wake_name)
        k->wake = engine_stage(s->engine, k->wake_name);
    pglink_start(&k->link);
}

static void pgn_stop(Stage *s)
{
    NotifyStage *k = s->data;
    if (k)
        pglink_stop(&k->link, 0);
}

static void pgn_fini(Stage *s)
{
    NotifyStage *k = s->data;
    if (!k)
        return;
    pglink_stop(&k->link, 0);
    if (k->committing) /* a forced stop: the commits in flight point at k */
        return;
    free(k->channels);
    free(k->conninfo);
    sb_free(&k->listen_sql);
    free(k);
    s->data = NULL;
}

const StageKind kind_pg_notify = {
    .spec = {.name = "pg_notify", .article = "a", .flags = KIND_SOURCE, .keys = pgn_keys},
    .init = pgn_init, .begin = pgn_begin, .stop = pgn_stop, .fini = pgn_fini};
