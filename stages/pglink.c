/* pglink.c: see pglink.h. */
#include "pglink.h"
#include "pl.h"

#include <stdio.h>
#include <string.h>

static void io_want(PgLink *l, int events)
{
    int fd = l->conn ? PQsocket(l->conn) : -1;
    if (ev_is_active(&l->io) && l->io.fd == fd && (l->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(l->stage->loop, &l->io);
    if (fd < 0 || !events)
        return;
    ev_io_set(&l->io, fd, events);
    ev_io_start(l->stage->loop, &l->io);
}

/* close_conn closes the connection (if any) and stops watching it. */
static void close_conn(PgLink *l)
{
    io_want(l, 0);
    if (l->conn)
        PQfinish(l->conn);
    l->conn = NULL;
    l->state = PGLINK_DOWN;
    l->flushing = 0;
}

void pglink_fail(PgLink *l, const char *what)
{
    char why[800], pq[700];
    /* libpq's messages span lines ("...failed: Connection refused\n\tIs
     * the server running...?"): one line, for the log and the reason */
    snprintf(pq, sizeof pq, "%s", l->conn ? PQerrorMessage(l->conn) : "");
    pl_oneline(pq, sizeof pq);
    snprintf(why, sizeof why, "%s%s%s", what, *pq ? ": " : "", pq);
    l->backoff = l->backoff ? l->backoff * 2 : PGLINK_BACKOFF_MIN;
    if (l->backoff > PGLINK_BACKOFF_MAX)
        l->backoff = PGLINK_BACKOFF_MAX;
    if (!l->down_logged)
        stage_log(l->stage, PL_LOG_WARN, 0, "%s down: %s; %s%sreconnecting with backoff (%.1f s up "
                  "to %.0f s)", l->name, why, l->note ? l->note : "", l->note ? "; " : "",
                  l->backoff, PGLINK_BACKOFF_MAX);
    else
        stage_log(l->stage, PL_LOG_DEBUG, 0, "%s still down: %s", l->name, why);
    l->down_logged = 1;
    if (!l->stopped)
        stage_dep_failed(l->stage, why); /* /ready counts them */
    close_conn(l);
    if (l->ops->down)
        l->ops->down(l, why);
    if (!l->stopped) {
        ev_timer_stop(l->stage->loop, &l->retry);
        ev_timer_set(&l->retry, l->backoff, 0);
        ev_timer_start(l->stage->loop, &l->retry);
    }
}

static void connect_step(PgLink *l)
{
    switch (PQconnectPoll(l->conn)) {
    case PGRES_POLLING_READING:
        io_want(l, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        io_want(l, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        pglink_fail(l, "cannot connect");
        return;
    }
    if (!PQsendQuery(l->conn, l->setup_sql) || PQflush(l->conn) < 0) {
        pglink_fail(l, "cannot set up the session");
        return;
    }
    l->state = PGLINK_SETUP;
    l->failed = 0;
    io_want(l, EV_READ);
}

static void start_connect(PgLink *l)
{
    l->conn = PQconnectStart(l->conninfo);
    if (!l->conn || PQstatus(l->conn) == CONNECTION_BAD) {
        pglink_fail(l, "cannot connect");
        return;
    }
    PQsetnonblocking(l->conn, 1);
    l->state = PGLINK_CONNECTING;
    connect_step(l);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    PgLink *l = container_of(w, PgLink, retry);
    if (l->state == PGLINK_DOWN && !l->stopped)
        start_connect(l);
}

/* result takes one result of what was sent: a row, the end of a statement,
 * or an error (noted: the query or the setup is over once PQgetResult says
 * NULL). */
static void result(PgLink *l, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_SINGLE_TUPLE) {
        if (l->state == PGLINK_BUSY && l->ops->row)
            l->ops->row(l, r);
        return;
    }
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return;
    const char *msg = PQresultErrorMessage(r), *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!l->failed) {
        snprintf(l->error, sizeof l->error, "%s", msg);
        pl_oneline(l->error, sizeof l->error); /* "ERROR:  ...\nDETAIL:  ..." */
        snprintf(l->sqlstate, sizeof l->sqlstate, "%s", ss ? ss : "");
    }
    l->failed = 1;
}

/* finished: PQgetResult said NULL: what was sent is over. */
static void finished(PgLink *l)
{
    int failed = l->failed, st = l->state;
    l->failed = 0;
    if (st == PGLINK_SETUP) {
        if (failed) {
            stage_log(l->stage, PL_LOG_ERROR, 0, "%s: setting up the session failed: %s", l->name,
                      l->error);
            pglink_fail(l, "the session setup failed");
            return;
        }
        l->state = PGLINK_READY;
        stage_dep_ok(l->stage);
        l->again = l->down_logged;
        if (l->ops->up)
            l->ops->up(l);
        l->down_logged = 0;
        l->backoff = 0;
        return;
    }
    l->state = PGLINK_READY;
    if (l->ops->over)
        l->ops->over(l, failed ? l->error : NULL);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    PgLink *l = container_of(w, PgLink, io);
    if (!l->conn)
        return;
    if (l->state == PGLINK_CONNECTING) {
        connect_step(l);
        return;
    }
    if ((revents & EV_WRITE) && l->flushing) {
        int f = PQflush(l->conn);
        if (f < 0) {
            pglink_fail(l, "lost the connection");
            return;
        }
        l->flushing = f == 1;
        io_want(l, EV_READ | (l->flushing ? EV_WRITE : 0));
    }
    if (!(revents & EV_READ))
        return;
    if (!PQconsumeInput(l->conn)) {
        pglink_fail(l, "lost the connection");
        return;
    }
    while (l->conn && !PQisBusy(l->conn)) {
        PGresult *r = PQgetResult(l->conn);
        if (!r) {
            if (l->state == PGLINK_SETUP || l->state == PGLINK_BUSY)
                finished(l); /* may send the next query, or take the link down */
            break;
        }
        int idle = l->state == PGLINK_READY;
        result(l, r);
        PQclear(r);
        if (idle && l->failed) { /* an error out of the blue: an admin shutdown */
            l->failed = 0;
            stage_log(l->stage, PL_LOG_ERROR, 0, "%s: %s", l->name, l->error);
            pglink_fail(l, "the server ended the session");
            return;
        }
    }
    if (!l->conn)
        return;
    if (l->ops->input)
        l->ops->input(l);
    if (l->conn && PQstatus(l->conn) == CONNECTION_BAD)
        pglink_fail(l, "lost the connection");
}

void pglink_init(PgLink *l, Stage *s, const char *conninfo, const char *setup_sql,
                 const char *name, const char *note, const PgLinkOps *ops, void *arg)
{
    memset(l, 0, sizeof *l);
    l->stage = s;
    l->conninfo = conninfo;
    l->setup_sql = setup_sql;
    l->name = name;
    l->note = note;
    l->ops = ops;
    l->arg = arg;
    l->state = PGLINK_DOWN;
    ev_io_init(&l->io, on_io, -1, 0);
    ev_timer_init(&l->retry, on_retry, 0, 0);
}

void pglink_start(PgLink *l)
{
    if (l->stopped || l->state != PGLINK_DOWN)
        return;
    ev_timer_stop(l->stage->loop, &l->retry);
    ev_timer_set(&l->retry, 0, 0);
    ev_timer_start(l->stage->loop, &l->retry);
}

int pglink_query(PgLink *l, const char *sql, int n, const char *const *vals)
{
    PL_ASSERT(l->state == PGLINK_READY, "a PgLink runs one query at a time");
    if (!PQsendQueryParams(l->conn, sql, n, NULL, vals, NULL, NULL, 0))
        goto fail;
    PQsetSingleRowMode(l->conn);
    int f = PQflush(l->conn);
    if (f < 0)
        goto fail;
    l->state = PGLINK_BUSY;
    l->failed = 0;
    l->sqlstate[0] = '\0';
    l->flushing = f == 1;
    io_want(l, EV_READ | (l->flushing ? EV_WRITE : 0));
    return 0;
fail:
    pglink_fail(l, "cannot send the query");
    return -1;
}

void pglink_stop(PgLink *l, int finish)
{
    l->stopped = 1;
    if (l->stage)
        ev_timer_stop(l->stage->loop, &l->retry);
    if (finish && l->state == PGLINK_BUSY)
        return;
    if (l->stage)
        close_conn(l);
}
