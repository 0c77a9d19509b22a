/* pgschema.c: the warehouse's tables against the models (pgschema.h): read
 * a table's columns from pg_catalog, compare them with the model, and say
 * each difference as a SchemaChange, with the SQL that makes it when
 * qload --migrate may make it. */
#include "pgschema.h"

#include "cli.h"
#include "model.h"
#include "pl.h"
#include "strbuf.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEN_UNBOUNDED UINT64_MAX    /* text, or varchar without a length */

static const char *const act_names[] = {"create", "add", "widen", "refuse"};

const char *schema_act_name(SchemaAct a)
{
    return (unsigned)a <= SCH_REFUSE ? act_names[a] : "unknown";
}

int schema_type_fits(FieldType t, char cat, const char *base)
{
    int json = !strcmp(base, "json") || !strcmp(base, "jsonb");
    switch (t) {
    case FT_STRING:
    case FT_TEXT:
        return 1;
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT:
    case FT_DECIMAL:
        return cat == 'N' || cat == 'S' || json;
    case FT_BOOLEAN:
        return cat == 'B' || cat == 'S';
    case FT_DATETIME:
    case FT_DATE:
        return cat == 'D' || cat == 'S';
    default:
        return cat == 'S' || json;
    }
}

/* ------------------------------------------------------------ changes */

static SchemaChange *change_add(SchemaDiff *d, const Model *m, SchemaAct act, const char *column)
{
    d->c = cli_grow(d->c, d->n, &d->cap, sizeof *d->c, 8);
    SchemaChange *c = &d->c[d->n++];
    memset(c, 0, sizeof *c);
    c->m = m;
    c->act = act;
    snprintf(c->column, sizeof c->column, "%s", column ? column : "");
    sb_init(&c->sql);
    return c;
}

static void reason(SchemaChange *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(SchemaChange *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
}

void schema_diff_free(SchemaDiff *d)
{
    for (size_t i = 0; i < d->n; i++)
        sb_free(&d->c[i].sql);
    free(d->c);
    d->c = NULL;
    d->n = d->cap = 0;
}

/* str_len reads the length of a string column type: "character varying(N)"
 * gives N; "text" and "character varying" are unbounded. 0 for any other
 * type. */
static uint64_t str_len(const char *type)
{
    static const char vc[] = "character varying";
    if (!strcmp(type, "text") || !strcmp(type, vc))
        return LEN_UNBOUNDED;
    if (!strncmp(type, vc, sizeof vc - 1) && type[sizeof vc - 1] == '(')
        return strtoull(type + sizeof vc, NULL, 10);
    return 0;
}

/* Column: one column of the table, as read. */
typedef struct Column {
    const char *name, *type, *base;
    char cat;
    int notnull, hasdef, fills;     /* fills: an identity or generated column */
    int seen;                       /* the model has it */
} Column;

/* column_of describes f as a column for people: name type [NOT NULL]
 * [DEFAULT value] (the default as the DDL writes it). */
static void column_text(const Field *f, const char *name, Strbuf *out)
{
    Strbuf ddl = SB_INIT;
    sb_adds(out, name);
    sb_adds(out, " ");
    model_pg_type(f, out);
    if (f && (f->required || f->key))
        sb_adds(out, " NOT NULL");
    if (f && f->has_default) {
        model_column_ddl(f, &ddl);
        const char *d = strstr(ddl.buf, " DEFAULT ");
        if (d)
            sb_adds(out, d);
    }
    sb_free(&ddl);
}

/* compare_column adds the change (if any) between field f (NULL: the drift
 * column, jsonb) named name and the table's column c (NULL: missing). */
static void compare_column(SchemaDiff *d, const Model *m, const Field *f, const char *name,
                           const Column *c)
{
    Strbuf mt = SB_INIT, txt = SB_INIT;
    SchemaChange *ch;

    model_pg_type(f, &mt);
    if (!c) {
        if (f && f->key) {
            ch = change_add(d, m, SCH_REFUSE, name);
            reason(ch, "property %s is part of the key and the table has no such column: adding it "
                   "would change the table's primary key, which qload --migrate does not do; "
                   "alter the table yourself", name);
        } else if (f && f->required && !f->has_default) {
            ch = change_add(d, m, SCH_REFUSE, name);
            reason(ch, "property %s is required and has no default: the rows already in the table "
                   "would have no value, so qload --migrate cannot add it NOT NULL; give it a "
                   "default: in the model (or make it optional), or add the column yourself",
                   name);
        } else {
            ch = change_add(d, m, SCH_ADD, name);
            sb_adds(&ch->sql, "ALTER TABLE ");
            model_sql_ident(&ch->sql, m->table);
            sb_adds(&ch->sql, " ADD COLUMN ");
            if (f) {
                model_column_ddl(f, &ch->sql);
                if (f->unique)
                    sb_adds(&ch->sql, " UNIQUE");
            } else {
                model_sql_ident(&ch->sql, name);
                sb_adds(&ch->sql, " jsonb");
            }
            sb_adds(&ch->sql, ";");
            column_text(f, name, &txt);
            reason(ch, "%s", txt.buf);
        }
        snprintf(ch->model_type, sizeof ch->model_type, "%s", mt.buf);
        goto out;
    }
    if (!strcmp(c->type, mt.buf))
        goto out;
    uint64_t ml = str_len(mt.buf), tl = str_len(c->type);
    if (ml && tl && ml > tl) {
        ch = change_add(d, m, SCH_WIDEN, name);
        sb_adds(&ch->sql, "ALTER TABLE ");
        model_sql_ident(&ch->sql, m->table);
        sb_adds(&ch->sql, " ALTER COLUMN ");
        model_sql_ident(&ch->sql, name);
        sb_addf(&ch->sql, " TYPE %s;", mt.buf);
        reason(ch, "from %s to %s", c->type, mt.buf);
    } else if (ml && tl && ml < tl) {
        ch = change_add(d, m, SCH_REFUSE, name);
        reason(ch, "the model narrows column %s from %s to %s: qload --migrate never narrows a "
               "column (values already there might not fit); the table keeps %s, which still "
               "takes the model's rows", name, c->type, mt.buf, c->type);
    } else if (ml && tl) {
        goto out; /* text and varchar without a length: the same */
    } else {
        int fits = schema_type_fits(f ? f->type : FT_JSON, c->cat, c->base);
        ch = change_add(d, m, SCH_REFUSE, name);
        reason(ch, "column %s is %s and the model's %s property is %s: qload --migrate never "
               "changes a column's type; %s; change it yourself (ALTER TABLE %s ALTER COLUMN %s "
               "TYPE %s) if its values allow, or keep the model's type as the table has it",
               name, c->type, f ? model_type_name(f->type) : "drift", mt.buf,
               fits ? "the column still takes the model's values"
                    : "rows of the model cannot load into it as it is",
               m->table, name, mt.buf);
    }
    snprintf(ch->model_type, sizeof ch->model_type, "%s", mt.buf);
    snprintf(ch->table_type, sizeof ch->table_type, "%s", c->type);
out:
    sb_free(&mt);
    sb_free(&txt);
}

/* compare_table adds the changes of model m, whose table's columns are
 * cols[0..n) (exists: the table is there). */
static void compare_table(SchemaDiff *d, const Models *ms, const Model *m, int exists,
                          Column *cols, size_t n)
{
    if (!exists) {
        SchemaChange *ch = change_add(d, m, SCH_CREATE, NULL);
        model_ddl(ms, m, &ch->sql);
        reason(ch, "table %s does not exist: CREATE TABLE with the model's %zu columns", m->table,
               m->nfields + (m->drift == DRIFT_KEEP));
        return;
    }
    size_t nf = m->nfields + (m->drift == DRIFT_KEEP);
    for (size_t i = 0; i < nf; i++) {
        const Field *f = i < m->nfields ? &m->fields[i] : NULL;
        const char *name = f ? f->name : m->drift_column;
        Column *c = NULL;
        for (size_t j = 0; j < n && !c; j++)
            if (!strcmp(cols[j].name, name))
                c = &cols[j];
        if (c)
            c->seen = 1;
        compare_column(d, m, f, name, c);
    }
    for (size_t j = 0; j < n; j++) {
        Column *c = &cols[j];
        if (c->seen)
            continue;
        SchemaChange *ch = change_add(d, m, SCH_REFUSE, c->name);
        snprintf(ch->table_type, sizeof ch->table_type, "%s", c->type);
        reason(ch, "column %s is in the table but not in the model (a property dropped?): "
               "qload --migrate never drops a column; %s", c->name,
               c->fills ? "it fills itself (an identity or generated column)"
               : c->notnull && !c->hasdef
                   ? "it is NOT NULL without a default, so rows of the model cannot load: drop it "
                     "(ALTER TABLE ... DROP COLUMN) or give it a default"
                   : "it stays, and rows of the model leave it NULL or its default");
    }
}

int schema_diff(PGconn *pg, const Models *ms, const char *only, SchemaDiff *d, char *err,
                size_t errlen)
{
    int ver = PQserverVersion(pg);
    char sql[1200];
    Strbuf name = SB_INIT;
    int rc = 0;

    d->ms = ms;
    d->only = only;
    snprintf(sql, sizeof sql,
             "SELECT c.oid IS NOT NULL, a.attname, format_type(a.atttypid, a.atttypmod),"
             " t.typcategory, coalesce(bt.typname, t.typname), a.attnotnull, a.atthasdef, %s, %s"
             " FROM (SELECT to_regclass($1) AS oid) c"
             " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
             " AND NOT a.attisdropped LEFT JOIN pg_type t ON t.oid = a.atttypid"
             " LEFT JOIN pg_type bt ON bt.oid = t.typbasetype ORDER BY a.attnum",
             ver >= 100000 ? "a.attidentity::text" : "''::text",
             ver >= 120000 ? "a.attgenerated::text" : "''::text");
    for (size_t k = 0; k < ms->n && rc == 0; k++) {
        const Model *m = &ms->m[ms->order ? ms->order[k] : k];
        if (only && strcmp(only, m->name) != 0)
            continue;
        sb_reset(&name);
        model_sql_ident(&name, m->table);
        const char *v[1] = {name.buf};
        PGresult *res = PQexecParams(pg, sql, 1, NULL, v, NULL, NULL, 0);
        if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
            const char *e = PQerrorMessage(pg);
            snprintf(err, errlen, "reading table %s: %.*s", m->table,
                     (int)strcspn(e && *e ? e : "no answer", "\n"), e && *e ? e : "no answer");
            PQclear(res);
            rc = -1;
            break;
        }
        int nr = PQntuples(res), exists = nr > 0 && !strcmp(PQgetvalue(res, 0, 0), "t");
        Column *cols = xcalloc((size_t)nr + 1, sizeof *cols);
        size_t n = 0;
        for (int r = 0; r < nr; r++) {
            if (PQgetisnull(res, r, 1))
                continue;
            Column *c = &cols[n++];
            c->name = PQgetvalue(res, r, 1);
            c->type = PQgetvalue(res, r, 2);
            c->cat = PQgetvalue(res, r, 3)[0];
            c->base = PQgetvalue(res, r, 4);
            c->notnull = !strcmp(PQgetvalue(res, r, 5), "t");
            c->hasdef = !strcmp(PQgetvalue(res, r, 6), "t");
            c->fills = *PQgetvalue(res, r, 7) || *PQgetvalue(res, r, 8);
        }
        compare_table(d, ms, m, exists, cols, n);
        free(cols);
        PQclear(res);
    }
    sb_free(&name);
    return rc;
}

/* ------------------------------------------------------------ output */

static void json_str_or_null(Strbuf *b, const char *s)
{
    if (s && *s)
        sb_add_json_string(b, s, strlen(s));
    else
        sb_adds(b, "null");
}

void schema_diff_json(const SchemaDiff *d, Strbuf *out)
{
    sb_addf(out, "{\"in_sync\":%s,\"models\":[", d->n ? "false" : "true");
    int first = 1;
    for (size_t k = 0; k < d->ms->n; k++) {
        const Model *m = &d->ms->m[d->ms->order ? d->ms->order[k] : k];
        if (d->only && strcmp(d->only, m->name) != 0)
            continue;
        sb_adds(out, first ? "{\"model\":" : ",{\"model\":");
        first = 0;
        json_str_or_null(out, m->name);
        sb_adds(out, ",\"table\":");
        json_str_or_null(out, m->table);
        sb_adds(out, ",\"changes\":[");
        int any = 0;
        for (size_t i = 0; i < d->n; i++) {
            const SchemaChange *c = &d->c[i];
            if (c->m != m)
                continue;
            sb_adds(out, any ? ",{\"column\":" : "{\"column\":");
            any = 1;
            json_str_or_null(out, c->column);
            sb_addf(out, ",\"action\":\"%s\",\"model_type\":", schema_act_name(c->act));
            json_str_or_null(out, c->model_type);
            sb_adds(out, ",\"table_type\":");
            json_str_or_null(out, c->table_type);
            sb_adds(out, ",\"sql\":");
            json_str_or_null(out, c->sql.len ? c->sql.buf : NULL);
            sb_adds(out, ",\"reason\":");
            json_str_or_null(out, c->reason);
            sb_adds(out, "}");
        }
        sb_adds(out, "]}");
    }
    sb_adds(out, "]}");
}

void schema_diff_print(const SchemaDiff *d, FILE *f)
{
    for (size_t k = 0; k < d->ms->n; k++) {
        const Model *m = &d->ms->m[d->ms->order ? d->ms->order[k] : k];
        size_t n = 0;
        if (d->only && strcmp(d->only, m->name) != 0)
            continue;
        for (size_t i = 0; i < d->n; i++)
            n += d->c[i].m == m;
        if (!n) {
            fprintf(f, "%s (table %s): in sync\n", m->name, m->table);
            continue;
        }
        fprintf(f, "%s (table %s): %zu change%s\n", m->name, m->table, n, n == 1 ? "" : "s");
        for (size_t i = 0; i < d->n; i++) {
            const SchemaChange *c = &d->c[i];
            if (c->m != m)
                continue;
            if (c->act == SCH_ADD)
                fprintf(f, "  add     %s\n", c->reason);
            else if (c->act == SCH_CREATE)
                fprintf(f, "  create  %s\n", c->reason);
            else
                fprintf(f, "  %-7s %s: %s\n", schema_act_name(c->act), c->column, c->reason);
        }
    }
    if (!d->n)
        fprintf(f, "the tables match the models\n");
    else
        fprintf(f, "qload --migrate makes the create, add and widen changes; it never makes a "
                   "refused one\n");
}
