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
 * sends with pg_notify(channel, json_build_object(...)::text)); it goes on
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
 * The loop never blocks on PostgreSQL: PQconnectStart/PQconnectPoll,
 * PQsendQuery for the LISTENs, PQconsumeInput/PQnotifies on an ev_io on
 * PQsocket. A failure closes the connection and reconnects after a backoff
 * (0.2 s doubling to 30 s), logged once when the stage goes down and once
 * when it is back. A connection that dies silently (no FIN, no RST) is only
 * noticed with TCP keepalives: put keepalives_idle=... in the dsn. */
#include "common.h"
#include "engine.h"
#include "model.h"
#include "pl.h"
#include "staging.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN 0.2
#define BACKOFF_MAX 30.0

enum { NS_DOWN, NS_CONNECTING, NS_LISTEN, NS_UP };

typedef struct NotifyStage {
    Stage *stage;
    char *conninfo;
    const char **channels;
    size_t nch;
    const char *wake_name;
    Stage *wake;
    PGconn *conn;
    int state, down_logged, stopped, failed;
    double backoff;
    ev_io io;
    ev_timer retry;
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
    while ((n = PQnotifies(k->conn)) != NULL) {
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

static void start_connect(NotifyStage *k);

static void io_want(NotifyStage *k, int events)
{
    int fd = k->conn ? PQsocket(k->conn) : -1;
    if (ev_is_active(&k->io) && k->io.fd == fd && (k->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(k->stage->loop, &k->io);
    if (fd < 0 || !events)
        return;
    ev_io_set(&k->io, fd, events);
    ev_io_start(k->stage->loop, &k->io);
}

static void link_down(NotifyStage *k, const char *what)
{
    const char *pq = k->conn ? PQerrorMessage(k->conn) : "";
    size_t pn = strlen(pq);
    while (pn && (pq[pn - 1] == '\n' || pq[pn - 1] == ' '))
        pn--;
    k->backoff = k->backoff ? k->backoff * 2 : BACKOFF_MIN;
    if (k->backoff > BACKOFF_MAX)
        k->backoff = BACKOFF_MAX;
    stage_log(k->stage, k->down_logged ? PL_LOG_DEBUG : PL_LOG_WARN, 0, "%s: %s%s%.*s; "
              "notices are missed until it is back (the wake stage catches up then); "
              "reconnecting with backoff (%.1f s up to %.0f s)",
              k->down_logged ? "still down" : "down", what, pn ? ": " : "", (int)pn, pq,
              k->backoff, BACKOFF_MAX);
    k->down_logged = 1;
    io_want(k, 0);
    if (k->conn)
        PQfinish(k->conn);
    k->conn = NULL;
    k->state = NS_DOWN;
    if (!k->stopped) {
        ev_timer_stop(k->stage->loop, &k->retry);
        ev_timer_set(&k->retry, k->backoff, 0);
        ev_timer_start(k->stage->loop, &k->retry);
    }
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    NotifyStage *k = container_of(w, NotifyStage, retry);
    if (k->state == NS_DOWN && !k->stopped)
        start_connect(k);
}

static void connect_step(NotifyStage *k)
{
    switch (PQconnectPoll(k->conn)) {
    case PGRES_POLLING_READING:
        io_want(k, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        io_want(k, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        link_down(k, "cannot connect");
        return;
    }
    if (!PQsendQuery(k->conn, k->listen_sql.buf) || PQflush(k->conn) < 0) {
        link_down(k, "cannot send LISTEN");
        return;
    }
    k->state = NS_LISTEN;
    k->failed = 0;
    io_want(k, EV_READ);
}

static void start_connect(NotifyStage *k)
{
    k->conn = PQconnectStart(k->conninfo);
    if (!k->conn || PQstatus(k->conn) == CONNECTION_BAD) {
        link_down(k, "cannot connect");
        return;
    }
    PQsetnonblocking(k->conn, 1);
    k->state = NS_CONNECTING;
    connect_step(k);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    NotifyStage *k = container_of(w, NotifyStage, io);
    if (!k->conn)
        return;
    if (k->state == NS_CONNECTING) {
        connect_step(k);
        return;
    }
    if (PQflush(k->conn) < 0 || !PQconsumeInput(k->conn)) {
        link_down(k, "lost the connection");
        return;
    }
    while (!PQisBusy(k->conn)) {
        PGresult *r = PQgetResult(k->conn);
        if (!r) {
            if (k->state != NS_LISTEN)
                break;
            if (k->failed) {
                link_down(k, "LISTEN failed");
                return;
            }
            k->state = NS_UP;
            stage_log(k->stage, PL_LOG_INFO, 0, "listening on %zu channel%s%s%s%s", k->nch,
                      k->nch == 1 ? "" : "s", k->down_logged ? " again" : "",
                      k->wake ? "; waking " : "", k->wake ? k->wake_name : "");
            k->down_logged = 0;
            k->backoff = 0;
            /* Notices of the gap are gone: the wake stage catches up. */
            if (k->wake)
                pg_extract_wake(k->wake);
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            stage_log(k->stage, PL_LOG_ERROR, 0, "%s", PQresultErrorMessage(r));
            k->failed = 1;
        }
        PQclear(r);
        if (k->state == NS_UP && k->failed) { /* an error out of the blue: admin shutdown */
            link_down(k, "the server ended the session");
            return;
        }
    }
    take_notices(k);
    if (PQstatus(k->conn) == CONNECTION_BAD)
        link_down(k, "lost the connection");
}

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
    ev_io_init(&k->io, on_io, -1, 0);
    ev_timer_init(&k->retry, on_retry, 0, 0);
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
    return 0;
}

static void pgn_begin(Stage *s)
{
    NotifyStage *k = s->data;
    if (k->wake_name)
        k->wake = engine_stage(s->engine, k->wake_name);
    k->state = NS_DOWN;
    ev_timer_set(&k->retry, 0, 0);
    ev_timer_start(s->loop, &k->retry);
}

static void pgn_stop(Stage *s)
{
    NotifyStage *k = s->data;
    if (!k)
        return;
    k->stopped = 1;
    ev_timer_stop(s->loop, &k->retry);
    io_want(k, 0);
    if (k->conn)
        PQfinish(k->conn);
    k->conn = NULL;
    k->state = NS_DOWN;
}

static void pgn_fini(Stage *s)
{
    NotifyStage *k = s->data;
    if (!k)
        return;
    ev_timer_stop(s->loop, &k->retry);
    io_want(k, 0);
    if (k->conn)
        PQfinish(k->conn);
    k->conn = NULL;
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
