/* pglink.h: one PostgreSQL connection of a stage, on the stage's loop,
 * that never blocks it (pg_extract and pg_notify).
 *
 * A PgLink connects (PQconnectStart/PQconnectPoll), runs the kind's setup
 * SQL, and is then ready for one query at a time (pglink_query: single-row
 * mode), all driven by one ev_io on PQsocket and PQconsumeInput, PQisBusy,
 * PQgetResult (PQfinish is the only call that may write synchronously, and
 * only a few bytes). Any failure closes the connection and reconnects after
 * a backoff, 0.2 s doubling to 30 s, logged once when the link goes down
 * ("NAME down: why; NOTE reconnecting with backoff ...") and, at debug
 * level, while it stays down; the kind logs its being back (ops->up). A
 * connection that dies silently (no FIN, no RST) is only noticed with TCP
 * keepalives: put keepalives_idle=... in the dsn. */
#ifndef PL_STAGES_PGLINK_H
#define PL_STAGES_PGLINK_H

#include "stage.h"

#include <ev.h>
#include <libpq-fe.h>

#define PGLINK_BACKOFF_MIN 0.2
#define PGLINK_BACKOFF_MAX 30.0

typedef struct PgLink PgLink;

/* PgLinkOps: what the link tells its kind, on the loop. Any may be NULL. */
typedef struct PgLinkOps {
    /* up: connected, the setup SQL done: ready for queries. l->again says
     * whether it was down before (a reconnect). */
    void (*up)(PgLink *l);
    /* row: a row of the query in flight (PGRES_SINGLE_TUPLE). */
    void (*row)(PgLink *l, const PGresult *r);
    /* over: the query in flight is over; error NULL, or the server's
     * message (l->sqlstate holds its SQLSTATE). The link is ready again:
     * over may send the next query, or take the link down. */
    void (*over)(PgLink *l, const char *error);
    /* input: the server sent something (notifications, PQnotifies). */
    void (*input)(PgLink *l);
    /* down: the link went down (why); work waiting for it must be
     * released. It reconnects by itself after the backoff. */
    void (*down)(PgLink *l, const char *why);
} PgLinkOps;

enum { PGLINK_DOWN, PGLINK_CONNECTING, PGLINK_SETUP, PGLINK_READY, PGLINK_BUSY };

struct PgLink {
    /* read-only for the kind */
    Stage *stage;
    PGconn *conn;          /* NULL while down */
    int state;             /* PGLINK_* */
    int again;             /* up after being down */
    double backoff;        /* the next reconnect's wait (s) */
    char sqlstate[6];      /* of the last query's error */
    void *arg;             /* read-write: the kind's */
    /* private */
    const char *conninfo, *setup_sql, *name, *note;
    const PgLinkOps *ops;
    int down_logged, stopped, flushing, failed;
    char error[600];
    ev_io io;
    ev_timer retry;
};

/* pglink_init readies l for stage s: conninfo (libpq), setup_sql (sent
 * after every connect, several statements allowed), name (what the logs
 * call it: "source users"), note (said when it goes down, may be NULL),
 * ops and arg (the kind's). Every string must outlive l. Nothing connects
 * until pglink_start. */
void pglink_init(PgLink *l, Stage *s, const char *conninfo, const char *setup_sql,
                 const char *name, const char *note, const PgLinkOps *ops, void *arg);

/* pglink_start connects as soon as the loop runs (a link that is down and
 * waiting for its backoff: now). A no-op while it is up or connecting. */
void pglink_start(PgLink *l);

/* pglink_query sends sql with n text parameters in single-row mode: each
 * row comes to ops->row, the end to ops->over. Only while READY. Returns 0,
 * or -1 when it could not be sent: the link is then down (ops->down ran). */
int pglink_query(PgLink *l, const char *sql, int n, const char *const *vals);

/* pglink_fail takes the link down after a failure the kind found (what:
 * "the query failed"), with libpq's message when it has one, and schedules
 * the reconnect. */
void pglink_fail(PgLink *l, const char *what);

/* pglink_stop stops reconnecting and closes the connection (drain, fini),
 * without telling the kind (ops->down does not run). With finish set, a
 * query in flight is let finish first (its rows and over still come); a
 * second call without closes it then. */
void pglink_stop(PgLink *l, int finish);

#endif
