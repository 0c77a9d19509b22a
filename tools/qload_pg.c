/* qload_pg.c: the PostgreSQL session: the connection and its settings (UTC,
 * UTF-8, the ledger table, synchronous_commit read back, the server's
 * fsync and full_page_writes: see durable and qload_ledger.c), and what an
 * error is.
 *
 * Errors are classified by SQLSTATE: class 22/23 a row's fault; class 08,
 * 40, 53, 57, 58 and a broken connection are transient (the batch stays
 * loading; --follow reconnects with backoff and retries, else qload exits 1);
 * anything else (42: no such table, no such column, ...) fails the batch with
 * the reason and a hint, and qload goes on with the others. */
#include "qload.h"

#include "model.h"
#include "pl.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ PostgreSQL */

/* signature writes what makes two rows' errors the same error: the
 * SQLSTATE, the constraint and column PostgreSQL names, and the primary
 * message without its quoted values and without what follows a colon
 * ('invalid input syntax for type integer: "x"'). */
static void signature(Loader *L, const PGresult *res, const char *prim)
{
    const char *con = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
    int r = snprintf(L->sig, sizeof L->sig, "%s|%s|%s|", L->state, con ? con : "",
                     col ? col : "");
    size_t n = r < 0 ? 0 : (size_t)r < sizeof L->sig ? (size_t)r : sizeof L->sig - 1;
    int quoted = 0;
    for (const char *p = prim ? prim : ""; *p && n + 1 < sizeof L->sig; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (*p == ':' && !quoted)
            break;
        if (!quoted || *p == '"')
            L->sig[n++] = *p;
    }
    L->sig[n] = '\0';
}

/* classify names the kind of PostgreSQL's error (res may be NULL). */
int qload_classify(Loader *L, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    const char *cm;

    snprintf(L->state, sizeof L->state, "%s", st ? st : "");
    snprintf(L->prim, sizeof L->prim, "%s", prim ? prim : "");
    signature(L, res, prim);
    L->line = 0;
    if (ctx && (cm = strstr(ctx, ", line ")) != NULL)
        L->line = strtol(cm + 7, NULL, 10);
    if (prim) {
        if (det)
            snprintf(L->err, sizeof L->err, "%s; %s (SQLSTATE %s)", prim, det, L->state);
        else
            snprintf(L->err, sizeof L->err, "%s (SQLSTATE %s)", prim, L->state);
    } else {
        const char *m = PQerrorMessage(L->pg);
        snprintf(L->err, sizeof L->err, "%s", m && *m ? m : "connection to the target lost");
    }
    pl_oneline(L->err, sizeof L->err); /* libpq's messages (and a detail) may span lines */
    if (!st || !*st || PQstatus(L->pg) == CONNECTION_BAD)
        return K_CONN;
    if (!strncmp(st, "22", 2) || !strncmp(st, "23", 2))
        return K_ROW;
    if (!strncmp(st, "08", 2) || !strncmp(st, "40", 2) || !strncmp(st, "53", 2) ||
        !strncmp(st, "57", 2) || !strncmp(st, "58", 2))
        return K_CONN;
    return K_PERM;
}

/* pg_check returns K_OK for a good result, else classifies it; res is cleared. */
int qload_pg_check(Loader *L, PGresult *res)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int k = K_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        k = qload_classify(L, res);
    PQclear(res);
    return k;
}

/* pg_exec runs one or more statements with no result rows wanted. */
int qload_pg_exec(Loader *L, const char *sql)
{
    return qload_pg_check(L, PQexec(L->pg, sql));
}

void qload_pg_close(Loader *L)
{
    if (L->pg)
        PQfinish(L->pg);
    L->pg = NULL;
}

static void notice_ignore(void *arg, const char *msg)
{
    (void)arg, (void)msg;
}

/* durable makes this session's COMMITs wait for the WAL flush and checks
 * what else could make a COMMIT non-durable. synchronous_commit is SET for
 * the session (overriding a server, database or role default of off) and
 * read back: a session that does not keep it (a pooler handing statements
 * to other server connections) is refused; each load transaction sets it
 * again with SET LOCAL. fsync = off or full_page_writes = off on the server
 * are warned about once (a crash of the machine can still lose or tear
 * what was committed; qload cannot help that). An UNLOGGED ledger is
 * refused (a crash empties it). A target without synchronous_commit (not
 * PostgreSQL) gets a warning. K_OK, K_CONN or K_PERM with L->err. */
static int durable(Loader *L)
{
    static int warned_nosync, warned_settings;
    PGresult *res;
    int k = qload_pg_exec(L, "SET synchronous_commit = on");

    L->sync_local = 1;
    if (k == K_PERM && !strcmp(L->state, "42704")) {
        L->sync_local = 0;
        if (!warned_nosync++)
            qload_say(L, "warning: the target has no synchronous_commit setting (%s): qload "
                      "cannot make sure a COMMIT is durable before it drops the batch's rows from "
                      "the store", L->err);
    } else if (k != K_OK) {
        return k;
    }
    res = PQexec(L->pg, "SELECT (SELECT setting FROM pg_settings WHERE name ="
                        " 'synchronous_commit'), (SELECT setting FROM pg_settings WHERE name ="
                        " 'fsync'), (SELECT setting FROM pg_settings WHERE name ="
                        " 'full_page_writes'), (SELECT relpersistence FROM pg_class WHERE oid ="
                        " 'pickline_ledger'::regclass)");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        k = qload_pg_check(L, res);
        if (k == K_CONN)
            return k;
        if (!warned_settings++)
            qload_say(L, "warning: cannot read the target's settings (%s): qload cannot check that "
                      "its COMMITs are durable", L->err);
        return K_OK;
    }
    const char *sync = PQgetvalue(res, 0, 0), *fs = PQgetvalue(res, 0, 1);
    const char *fpw = PQgetvalue(res, 0, 2), *ledger = PQgetvalue(res, 0, 3);
    if (L->sync_local && !PQgetisnull(res, 0, 0) && !strcmp(sync, "off")) {
        snprintf(L->err, sizeof L->err,
                 "the target's session keeps synchronous_commit = off although qload set it on "
                 "(a connection pooler that does not keep session settings?): its COMMIT could "
                 "return before the batch is durable, and qload would drop rows the warehouse can "
                 "still lose; connect qload to PostgreSQL directly or through a session pool");
        PQclear(res);
        return K_PERM;
    }
    if (!strcmp(ledger, "u")) {
        snprintf(L->err, sizeof L->err,
                 "the ledger pickline_ledger is UNLOGGED: PostgreSQL empties it after a crash, "
                 "and the batches it recorded would load again; run ALTER TABLE pickline_ledger "
                 "SET LOGGED");
        PQclear(res);
        return K_PERM;
    }
    if (!warned_settings && (!strcmp(fs, "off") || !strcmp(fpw, "off"))) {
        warned_settings = 1;
        qload_say(L, "warning: the warehouse runs with %s%s%s: qload makes its COMMITs wait for "
                  "the WAL flush, but a crash of the warehouse's machine (power, kernel) can still "
                  "lose or corrupt batches qload has marked loaded and dropped from the store; set "
                  "%s on the server", !strcmp(fs, "off") ? "fsync = off" : "",
                  !strcmp(fs, "off") && !strcmp(fpw, "off") ? " and " : "",
                  !strcmp(fpw, "off") ? "full_page_writes = off" : "",
                  !strcmp(fs, "off") && !strcmp(fpw, "off") ? "both" : "it");
    }
    PQclear(res);
    return K_OK;
}

/* DDL_TRIES: how often ddl_exec runs its statements when another session
 * created the same tables at the same instant. */
#define DDL_TRIES 5

/* ddl_exec runs statements that create what does not exist yet (CREATE
 * TABLE IF NOT EXISTS ...). Several qloads, one per engine, may start at
 * once against one fresh warehouse: IF NOT EXISTS does not see a table
 * another session is creating, so the later session waits for the other's
 * commit and then fails with unique_violation on PostgreSQL's catalog
 * (23505, pg_type_typname_nsp_index) or duplicate_table (42P07). The tables
 * exist then: the statements run again, and this time change nothing. */
static int ddl_exec(Loader *L, const char *sql)
{
    for (int i = 1;; i++) {
        int k = qload_pg_exec(L, sql);
        if (k == K_OK || i == DDL_TRIES ||
            (strcmp(L->state, "23505") != 0 && strcmp(L->state, "42P07") != 0 &&
             strcmp(L->state, "42710") != 0))
            return k;
        usleep(20000u * (unsigned)i);
    }
}

/* pg_connect connects and prepares the session: UTC, UTF-8, the ledger, and
 * with --create-tables the models' tables. K_OK, K_CONN or K_PERM (with
 * L->err). */
int qload_pg_connect(Loader *L)
{
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", "qload", L->o.target, NULL};
    int k;

    qload_pg_close(L);
    L->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(L->pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(L->pg);
        snprintf(L->err, sizeof L->err, "%s", m && *m ? m : "cannot connect");
        /* "...failed: Connection refused\n\tIs the server running...?\n":
         * one line */
        pl_oneline(L->err, sizeof L->err);
        /* A bad conninfo never gets better by waiting. */
        k = strstr(L->err, "invalid connection option") || strstr(L->err, "missing \"=\"") ||
                    strstr(L->err, "invalid URI") || strstr(L->err, "invalid integer value")
                ? K_PERM : K_CONN;
        qload_pg_close(L);
        return k;
    }
    PQsetNoticeProcessor(L->pg, notice_ignore, NULL);
    for (size_t i = 0; i < L->nvers; i++)
        L->vers[i].checked = 0;
    L->leftovers_done = 0;
    k = ddl_exec(L, "SET TimeZone = 'UTC'; SET client_encoding = 'UTF8';"
                         " SET client_min_messages = warning;"
                         " CREATE TABLE IF NOT EXISTS pickline_ledger (store text, batch bigint,"
                         " model text, rows bigint, rejected bigint,"
                         " loaded_at timestamptz NOT NULL DEFAULT now(),"
                         " PRIMARY KEY (store, batch))");
    if (k == K_OK)
        k = durable(L);
    if (k == K_OK && L->o.migrate) {
        k = qload_migrate(L);
    } else if (k == K_OK && L->o.create_tables) {
        sb_reset(&L->sql);
        models_ddl(L->ms, &L->sql);
        k = ddl_exec(L, L->sql.buf);
        if (k != K_OK && k != K_CONN) {
            char e[700];
            snprintf(e, sizeof e, "%.*s", (int)sizeof e - 1, L->err);
            snprintf(L->err, sizeof L->err,
                     "--create-tables: PostgreSQL refused the models' DDL: %s; fix the models "
                     "or create the tables yourself", e);
            return K_PERM;
        }
    }
    if (k == K_ROW)
        k = K_PERM;
    return k;
}
