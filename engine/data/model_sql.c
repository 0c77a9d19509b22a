/* model_sql.c: a model in SQL: quoted identifiers and column lists, a row
 * as a CSV line for COPY (model_csv_row, qload's hot path: it writes into
 * the buffer directly), and the DDL of the tables (model_ddl).
 *
 * CSV is PostgreSQL's COPY ... (FORMAT csv) with the default QUOTE and
 * ESCAPE '"': NULL is an empty unquoted field and every string is quoted,
 * so NULL and "" stay apart and CR, LF, commas and backslashes need nothing
 * more than the quotes. A json column holds the value's JSON text as
 * row_put_object writes it. */
#include "model.h"
#include "model_int.h"

#include "pl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* quoted appends s[0..n) between two q, each q inside doubled: a CSV
 * field, an SQL string literal or an SQL identifier. */
static void quoted(Strbuf *out, const char *s, size_t n, char q)
{
    const char *p;
    sb_add(out, &q, 1);
    while ((p = memchr(s, q, n))) {
        size_t k = (size_t)(p - s) + 1;
        sb_add(out, s, k);
        sb_add(out, &q, 1);
        s += k;
        n -= k;
    }
    sb_add(out, s, n);
    sb_add(out, &q, 1);
}

void model_sql_ident(Strbuf *out, const char *s)
{
    quoted(out, s, strlen(s), '"');
}

void model_columns(const Model *m, Strbuf *out)
{
    for (size_t i = 0; i < m->nfields; i++) {
        if (i)
            sb_add(out, ",", 1);
        model_sql_ident(out, m->fields[i].name);
    }
    if (m->drift == DRIFT_KEEP) {
        if (m->nfields)
            sb_add(out, ",", 1);
        model_sql_ident(out, m->drift_column);
    }
}

/* csv_json appends the JSON text of v as a quoted CSV field: the text is
 * written in place, then its quotes are doubled from the end backwards.
 * Returns 0, or row_put_object's PL_EFORMAT (out is then undone only by
 * the caller). */
static int csv_json(Strbuf *out, const msgpack_object *v)
{
    static const char qs[] = "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";
    size_t start, end, q = 0, add;
    int rc;

    sb_add(out, "\"", 1);
    start = out->len;
    if ((rc = row_put_object(out, v)))
        return rc;
    end = out->len;
    for (size_t i = start; i < end; i++)
        q += out->buf[i] == '"';
    for (add = q; add > 0;) {
        size_t k = add < sizeof qs - 1 ? add : sizeof qs - 1;
        sb_add(out, qs, k);
        add -= k;
    }
    for (size_t src = end, dst = end + q; q > 0 && src > start;) {
        char ch = out->buf[--src];
        out->buf[--dst] = ch;
        if (ch == '"') {
            out->buf[--dst] = '"';
            q--;
        }
    }
    sb_add(out, "\"", 1);
    return 0;
}

/* csv_value appends sep (when not 0) and v as one CSV field; json: the
 * column is json, so any value is written as its JSON text. Returns 0 or
 * csv_json's PL_EFORMAT. */
static int csv_value(Strbuf *out, const msgpack_object *v, int json, char sep)
{
    char t[40], *p;

    sb_grow(out, 24);
    if (sep)
        out->buf[out->len++] = sep;
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (json)
        return csv_json(out, v);
    switch (v->type) {
    case MSGPACK_OBJECT_STR: {
        size_t n = v->via.str.size;
        if (memchr(v->via.str.ptr, '"', n)) {
            quoted(out, v->via.str.ptr, n, '"');
            break;
        }
        sb_grow(out, n + 2);
        p = out->buf + out->len;
        *p++ = '"';
        memcpy(p, v->via.str.ptr, n);
        p[n] = '"';
        out->len += n + 2;
        break;
    }
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        sb_add_u64(out, v->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        sb_add_i64(out, v->via.i64);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        out->buf[out->len++] = v->via.boolean ? 't' : 'f';
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(v->via.f64)) {
            model_fmt_double(t, sizeof t, v->via.f64);
            sb_adds(out, t);
        } else {
            sb_adds(out, isnan(v->via.f64) ? "NaN" : v->via.f64 > 0 ? "Infinity" : "-Infinity");
        }
        break;
    case MSGPACK_OBJECT_EXT:
        if (v->via.ext.type == ROW_EXT_NUMBER && row_is_json_number(v->via.ext.ptr, v->via.ext.size))
            sb_add(out, v->via.ext.ptr, v->via.ext.size);
        else if (v->via.ext.type == ROW_EXT_NUMBER) /* let the warehouse refuse it, visibly */
            quoted(out, v->via.ext.ptr, v->via.ext.size, '"');
        break;
    default: /* maps, lists, binary: their JSON text */
        return csv_json(out, v);
    }
    return 0;
}

int model_csv_row(const Model *m, const msgpack_object *row, int op, Strbuf *out)
{
    const msgpack_object_kv *kv;
    uint32_t size;
    size_t len0 = out->len;
    int inorder = 1, rc;

    if (!row || row->type != MSGPACK_OBJECT_MAP)
        return PL_EFORMAT;
    kv = row->via.map.ptr;
    size = row->via.map.size;
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        const msgpack_object *v;
        if (i < size && model_key_is(&kv[i].key, f->name)) {
            v = &kv[i].val;
        } else {
            inorder = 0;
            v = model_member(row, f->name);
        }
        if ((rc = csv_value(out, v, f->type == FT_JSON, i ? ',' : 0)))
            goto fail;
    }
    if (m->drift == DRIFT_KEEP) {
        size_t i = m->nfields;
        const msgpack_object *v;
        if (i < size && model_key_is(&kv[i].key, m->drift_column)) {
            v = &kv[i].val;
        } else {
            inorder = 0;
            v = model_member(row, m->drift_column);
        }
        if ((rc = csv_value(out, v, 1, i ? ',' : 0)))
            goto fail;
    }
    sb_grow(out, 3);
    if (op) {
        /* A row whose members are exactly the columns in order has no
         * "_deleted" member; any other row is searched for it. */
        const msgpack_object *d = NULL;
        if (!inorder || size != m->nfields + (m->drift == DRIFT_KEEP))
            d = model_member(row, "_deleted");
        if (m->nfields || m->drift == DRIFT_KEEP)
            out->buf[out->len++] = ',';
        out->buf[out->len++] = d && d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean ? 'd' : 'u';
    }
    out->buf[out->len++] = '\n';
    out->buf[out->len] = '\0';
    return 0;
fail:
    sb_setlen(out, len0);
    return rc;
}

/* put_default appends f's default as a SQL literal. */
static void put_default(Strbuf *out, const Field *f)
{
    RowView v;
    if (row_view(&v, f->default_mp.data, f->default_mp.size)) {
        sb_adds(out, "NULL");
        return;
    }
    const msgpack_object *o = &v.root;
    if (f->type == FT_JSON) {
        Strbuf t = SB_INIT;
        int rc = row_put_object(&t, o);
        PL_ASSERT(rc == 0, "a default is JSON: parse_default checked it");
        quoted(out, t.buf, t.len, '\'');
        sb_adds(out, "::jsonb");
        sb_free(&t);
    } else if (o->type == MSGPACK_OBJECT_STR) {
        quoted(out, o->via.str.ptr, o->via.str.size, '\'');
    } else if (o->type == MSGPACK_OBJECT_EXT) {
        if (o->via.ext.type == ROW_EXT_NUMBER && row_is_json_number(o->via.ext.ptr, o->via.ext.size))
            sb_add(out, o->via.ext.ptr, o->via.ext.size);
        else
            quoted(out, o->via.ext.ptr, o->via.ext.size, '\'');
    } else {
        int rc = row_put_object(out, o); /* integers, booleans */
        PL_ASSERT(rc == 0, "an integer or a boolean is JSON");
    }
    row_view_free(&v);
}

static void put_sql_type(Strbuf *out, const Field *f)
{
    switch (f->type) {
    case FT_SERIAL: /* the source's ids are copied, never generated here */
    case FT_BIGINT:
        sb_adds(out, "bigint");
        break;
    case FT_INTEGER:
        sb_adds(out, "integer");
        break;
    case FT_DECIMAL:
        if (f->precision)
            sb_addf(out, "numeric(%u,%u)", f->precision, f->scale);
        else
            sb_adds(out, "numeric");
        break;
    case FT_BOOLEAN:
        sb_adds(out, "boolean");
        break;
    case FT_STRING:
        sb_addf(out, "varchar(%" PRIu64 ")", f->len_max);
        break;
    case FT_TEXT:
        sb_adds(out, "text");
        break;
    case FT_DATETIME:
        sb_adds(out, "timestamptz");
        break;
    case FT_DATE:
        sb_adds(out, "date");
        break;
    default:
        sb_adds(out, "jsonb");
    }
}

static void put_cols(Strbuf *out, const Model *m, const size_t *idx, size_t n)
{
    sb_add(out, "(", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_adds(out, ", ");
        model_sql_ident(out, m->fields[idx[i]].name);
    }
    sb_add(out, ")", 1);
}

void model_column_ddl(const Field *f, Strbuf *out)
{
    model_sql_ident(out, f->name);
    sb_add(out, " ", 1);
    put_sql_type(out, f);
    if (f->required || f->key)
        sb_adds(out, " NOT NULL");
    if (f->has_default) {
        sb_adds(out, " DEFAULT ");
        put_default(out, f);
    }
}

void model_pg_type(const Field *f, Strbuf *out)
{
    if (!f) {
        sb_adds(out, "jsonb");
        return;
    }
    switch (f->type) {
    case FT_STRING:
        sb_addf(out, "character varying(%" PRIu64 ")", f->len_max);
        break;
    case FT_DATETIME:
        sb_adds(out, "timestamp with time zone");
        break;
    default:
        put_sql_type(out, f);
    }
}

void model_ddl(const Models *ms, const Model *m, Strbuf *out)
{
    const char *sep = "\n  ";

    sb_adds(out, "CREATE TABLE IF NOT EXISTS ");
    model_sql_ident(out, m->table);
    sb_adds(out, " (");
    for (size_t i = 0; i < m->nfields; i++) {
        sb_adds(out, sep);
        sep = ",\n  ";
        model_column_ddl(&m->fields[i], out);
    }
    if (m->drift == DRIFT_KEEP) {
        sb_adds(out, sep);
        sep = ",\n  ";
        model_sql_ident(out, m->drift_column);
        sb_adds(out, " jsonb");
    }
    if (m->nkey) {
        sb_adds(out, sep);
        sb_adds(out, "PRIMARY KEY ");
        put_cols(out, m, m->key, m->nkey);
    }
    for (size_t i = 0; i < m->nfields; i++) {
        if (!m->fields[i].unique || (m->nkey == 1 && m->key[0] == i))
            continue;
        sb_adds(out, sep);
        sb_adds(out, "UNIQUE ");
        put_cols(out, m, &i, 1);
    }
    for (size_t r = 0; r < m->nrels; r++) {
        const Relation *rel = &m->rels[r];
        const Model *p = rel->has_n ? NULL : models_find(ms, rel->model);
        if (!p)
            continue;
        sb_adds(out, sep);
        sb_adds(out, "FOREIGN KEY (");
        for (size_t i = 0; i < rel->nfields; i++) {
            if (i)
                sb_adds(out, ", ");
            model_sql_ident(out, rel->fields[i]);
        }
        sb_adds(out, ") REFERENCES ");
        model_sql_ident(out, p->table);
        sb_add(out, " ", 1);
        put_cols(out, p, p->key, p->nkey);
    }
    sb_adds(out, "\n);\n");
}

void models_ddl(const Models *ms, Strbuf *out)
{
    for (size_t k = 0; k < ms->n; k++)
        model_ddl(ms, &ms->m[ms->order[k]], out);
}

