/* qload_table.c: what qload reads of a model's table in the warehouse: that
 * it matches the model (before the first batch), its column types (the
 * careful path's casts) and whether the model's key has a unique index (a
 * merge's direct COPY); and the columns a batch of the model fills.
 *
 * The table. Before its first batch of a model on a connection (and again
 * after a batch of that model failed), qload compares the table with the
 * model: every column of the model is there, not a generated column, and of
 * a type that can hold the model's values (numbers: a numeric, string or
 * json type; booleans: boolean or string; datetime and date: a date/time or
 * string type; json: json, jsonb or string; strings: any type); every other
 * column NOT NULL has a default or is an identity or generated column; the
 * table is not UNLOGGED. A difference fails the batch (state failed, every
 * difference in its error, `qctl batches` shows it) without rejecting a row;
 * fix the table, then `qctl batches retry ID`.
 *
 * --migrate. Before loading, once a connection, qload_migrate brings the
 * tables up to the models as far as it safely can (pgschema.h: create
 * missing tables, add new columns with their defaults, widen strings) in
 * one transaction, and says what it refuses (a type change, a narrowed or
 * dropped column, a new key or required column without a default). A
 * refusal stops nothing: a batch that the table cannot take fails with the
 * difference, as without --migrate. */
#include "qload.h"

#include "model.h"
#include "pgschema.h"
#include "pl.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the table */

/* diff_add appends one difference to d ("; " between them); when d is
 * nearly full, the rest are only counted. */
static void diff_add(Strbuf *d, size_t *more, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void diff_add(Strbuf *d, size_t *more, const char *fmt, ...)
{
    char one[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(one, sizeof one, fmt, ap);
    va_end(ap);
    if (d->len + strlen(one) > 320) {
        ++*more;
        return;
    }
    if (d->len)
        sb_adds(d, "; ");
    sb_adds(d, one);
}

/* table_check compares the model's table with the model before its first
 * batch on a connection: every column of the model is there, of a type
 * that can hold the model's values (type_fits), and is no generated
 * column; every other column NOT NULL has a default (or is an identity or
 * generated column); the table is not UNLOGGED (a crash would empty it
 * while the ledger keeps its batches loaded). K_OK; K_PERM with the whole
 * batch error in msg (msg empty: L->err, L->state from PostgreSQL, e.g. no
 * such table); K_CONN. */
int qload_table_check(Loader *L, char *msg, size_t n)
{
    const Model *m = L->m;
    int ver = PQserverVersion(L->pg);
    PGresult *res;
    Strbuf d;
    size_t more = 0;
    int k = K_OK;

    msg[0] = '\0';
    sb_reset(&L->sql);
    sb_addf(&L->sql,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory,"
            " coalesce(bt.typname, t.typname), a.attnotnull, a.atthasdef, %s, %s,"
            " c.relpersistence FROM pg_class c"
            " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
            " AND NOT a.attisdropped LEFT JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type bt ON bt.oid = t.typbasetype WHERE c.oid = $1::regclass",
            ver >= 100000 ? "a.attidentity::text" : "''::text",
            ver >= 120000 ? "a.attgenerated::text" : "''::text");
    sb_reset(&L->tmp);
    model_sql_ident(&L->tmp, m->table);
    const char *v[1] = {L->tmp.buf};
    res = PQexecParams(L->pg, L->sql.buf, 1, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return qload_pg_check(L, res);
    int nr = PQntuples(res);
    sb_init(&d);
    if (nr > 0 && !strcmp(PQgetvalue(res, 0, 8), "u"))
        diff_add(&d, &more, "it is UNLOGGED: PostgreSQL empties it after a crash while the ledger "
                 "keeps its batches loaded (ALTER TABLE %s SET LOGGED)", m->table);
    for (size_t i = 0; i < L->ncols; i++) {
        FieldType ft = i < m->nfields ? m->fields[i].type : FT_JSON;
        int r;
        for (r = 0; r < nr; r++)
            if (!PQgetisnull(res, r, 0) && !strcmp(PQgetvalue(res, r, 0), L->cols[i]))
                break;
        if (r == nr) {
            diff_add(&d, &more, "no column %s (the model's %s field)", L->cols[i],
                     model_type_name(ft));
            continue;
        }
        if (!schema_type_fits(ft, PQgetvalue(res, r, 2)[0], PQgetvalue(res, r, 3)))
            diff_add(&d, &more, "column %s is %s, which cannot hold the model's %s values",
                     L->cols[i], PQgetvalue(res, r, 1), model_type_name(ft));
        else if (*PQgetvalue(res, r, 7))
            diff_add(&d, &more, "column %s is a generated column, which cannot take the "
                     "model's %s values", L->cols[i], model_type_name(ft));
    }
    for (int r = 0; r < nr; r++) {
        const char *col = PQgetvalue(res, r, 0);
        size_t i;
        if (PQgetisnull(res, r, 0))
            continue;
        for (i = 0; i < L->ncols && strcmp(L->cols[i], col) != 0; i++)
            ;
        if (i == L->ncols && !strcmp(PQgetvalue(res, r, 4), "t") &&
            !strcmp(PQgetvalue(res, r, 5), "f") && !*PQgetvalue(res, r, 6) &&
            !*PQgetvalue(res, r, 7))
            diff_add(&d, &more, "column %s is NOT NULL without a default, and model %s has no "
                     "field %s to fill it", col, m->name, col);
    }
    PQclear(res);
    if (d.len) {
        snprintf(msg, n, "table %s does not match model %s: %s%s; alter the table (or fix the "
                 "model), then run `qctl batches retry %" PRIu64 "`", m->table, m->name, d.buf,
                 more ? "; and more" : "", L->b.id);
        k = K_PERM;
    }
    sb_free(&d);
    return k;
}

/* col_types reads the table's column types (for the careful path's casts;
 * the base type, so that varchar(n) refuses a long value instead of
 * truncating it). */
int qload_col_types(Loader *L)
{
    const char *v[1];
    PGresult *res;
    int k;

    sb_reset(&L->tmp);
    model_sql_ident(&L->tmp, L->m->table);
    v[0] = L->tmp.buf;
    res = PQexecParams(L->pg,
                       "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
                       " WHERE a.attrelid = $1::regclass AND a.attnum > 0"
                       " AND NOT a.attisdropped",
                       1, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return qload_pg_check(L, res);
    k = K_OK;
    for (size_t i = 0; i < L->ncols; i++) {
        free(L->types[i]);
        L->types[i] = NULL;
        for (int r = 0; r < PQntuples(res); r++) {
            if (!strcmp(PQgetvalue(res, r, 0), L->cols[i])) {
                L->types[i] = xstrdup(PQgetvalue(res, r, 1));
                break;
            }
        }
        if (!L->types[i] && k == K_OK) {
            snprintf(L->err, sizeof L->err, "it has no column %s", L->cols[i]);
            snprintf(L->state, sizeof L->state, "42703");
            k = K_PERM;
        }
    }
    PQclear(res);
    return k;
}

/* key_indexed tells whether the model's table has a unique index (or
 * primary key) on exactly the model's key: only then can a direct COPY
 * stand for a merge (a second row of a key is refused, not added). */
int qload_key_indexed(Loader *L, signed char *out)
{
    const Model *m = L->m;
    Strbuf keys;
    sb_init(&keys);
    sb_adds(&keys, "{");
    /* sorted, to compare as sets */
    const char *names[64];
    size_t n = m->nkey < 64 ? m->nkey : 64;
    for (size_t i = 0; i < n; i++)
        names[i] = m->fields[m->key[i]].name;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *x = names[j];
            names[j] = names[j - 1];
            names[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++) {
        sb_adds(&keys, i ? ",\"" : "\"");
        sb_adds(&keys, names[i]);
        sb_adds(&keys, "\"");
    }
    sb_adds(&keys, "}");
    sb_reset(&L->tmp);
    model_sql_ident(&L->tmp, m->table);
    const char *v[2] = {L->tmp.buf, keys.buf};
    PGresult *res = PQexecParams(
        L->pg,
        "SELECT 1 FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique"
        " AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)"
        " FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))"
        " = $2::text[] AND i.indnatts = cardinality($2::text[])",
        2, NULL, v, NULL, NULL, 0);
    sb_free(&keys);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return qload_pg_check(L, res);
    *out = PQntuples(res) > 0 ? 1 : -1;
    PQclear(res);
    return K_OK;
}

void qload_set_columns(Loader *L, const Model *m)
{
    for (size_t i = 0; i < L->ncols; i++)
        free(L->types[i]);
    free(L->cols);
    free(L->types);
    L->ncols = m->nfields + (m->drift == DRIFT_KEEP);
    L->cols = xcalloc(L->ncols, sizeof *L->cols);
    L->types = xcalloc(L->ncols, sizeof *L->types);
    for (size_t i = 0; i < m->nfields; i++)
        L->cols[i] = (char *)m->fields[i].name;
    if (m->drift == DRIFT_KEEP)
        L->cols[m->nfields] = (char *)(m->drift_column ? m->drift_column : "extra");
}

/* ------------------------------------------------------------ --migrate */

int qload_migrate(Loader *L)
{
    SchemaDiff d = {0};
    char err[700];
    int k = K_OK, said = L->migrate_done;

    if (schema_diff(L->pg, L->ms, NULL, &d, err, sizeof err) != 0) {
        snprintf(L->err, sizeof L->err, "--migrate: %s", err);
        k = PQstatus(L->pg) == CONNECTION_BAD ? K_CONN : K_PERM;
        goto out;
    }
    sb_reset(&L->sql);
    for (size_t i = 0; i < d.n; i++)
        if (d.c[i].sql.len) {
            sb_add(&L->sql, d.c[i].sql.buf, d.c[i].sql.len);
            sb_adds(&L->sql, "\n");
        }
    if (L->sql.len) {
        if ((k = qload_pg_exec(L, "BEGIN")) != K_OK)
            goto out;
        if ((k = qload_pg_exec(L, L->sql.buf)) != K_OK) {
            char e[700];
            snprintf(e, sizeof e, "%.*s", (int)sizeof e - 1, L->err);
            qload_pg_exec(L, "ROLLBACK");
            snprintf(L->err, sizeof L->err, "--migrate: PostgreSQL refused the changes (nothing "
                     "was changed): %s; see them with `qctl schema diff --target ...`", e);
            k = k == K_CONN ? K_CONN : K_PERM;
            goto out;
        }
        if ((k = qload_pg_exec(L, "COMMIT")) != K_OK)
            goto out;
    }
    L->n_refused = 0;
    for (size_t i = 0; i < d.n; i++) {
        const SchemaChange *c = &d.c[i];
        if (c->act == SCH_CREATE)
            qload_say(L, "--migrate: created table %s", c->m->table);
        else if (c->act == SCH_ADD)
            qload_say(L, "--migrate: table %s: added column %s", c->m->table, c->reason);
        else if (c->act == SCH_WIDEN)
            qload_say(L, "--migrate: table %s: widened column %s %s", c->m->table, c->column,
                      c->reason);
        else if (!said)
            qload_say(L, "--migrate: table %s: refused: %s", c->m->table, c->reason);
        L->n_refused += c->act == SCH_REFUSE;
    }
    L->migrate_done = 1;
out:
    schema_diff_free(&d);
    return k;
}
