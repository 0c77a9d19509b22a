/* model_json.c: the models as one JSON document (models_json, `qctl schema
 * --json`), for tools downstream: every property with its rules, the keys,
 * the relations and the load order. Defaults are written as row_to_json
 * writes their value. */
#include "model.h"
#include "model_int.h"

#include <inttypes.h>
#include <string.h>

static void json_key(Strbuf *out, int first, const char *k)
{
    if (!first)
        sb_add(out, ",", 1);
    sb_add_json_string(out, k, strlen(k));
    sb_add(out, ":", 1);
}

static void json_str(Strbuf *out, const char *s)
{
    if (s)
        sb_add_json_string(out, s, strlen(s));
    else
        sb_adds(out, "null");
}

static void json_num(Strbuf *out, int has, double d)
{
    char t[40];
    if (has) {
        model_fmt_double(t, sizeof t, d);
        sb_adds(out, t);
    } else {
        sb_adds(out, "null");
    }
}

static void field_json(Strbuf *out, const Field *f)
{
    sb_add(out, "{", 1);
    json_key(out, 1, "name");
    json_str(out, f->name);
    json_key(out, 0, "type");
    json_str(out, model_type_name(f->type));
    json_key(out, 0, "required");
    sb_adds(out, f->required || f->key ? "true" : "false");
    json_key(out, 0, "key");
    sb_adds(out, f->key ? "true" : "false");
    json_key(out, 0, "unique");
    sb_adds(out, f->unique ? "true" : "false");
    json_key(out, 0, "length");
    if (f->has_length)
        sb_addf(out, "[%" PRIu64 ",%" PRIu64 "]", f->len_min, f->len_max);
    else
        sb_adds(out, "null");
    json_key(out, 0, "min");
    json_num(out, f->has_min, f->min);
    json_key(out, 0, "max");
    json_num(out, f->has_max, f->max);
    json_key(out, 0, "precision");
    if (f->precision)
        sb_addf(out, "%u", f->precision);
    else
        sb_adds(out, "null");
    json_key(out, 0, "scale");
    if (f->precision)
        sb_addf(out, "%u", f->scale);
    else
        sb_adds(out, "null");
    json_key(out, 0, "format");
    json_str(out, f->format == FF_NONE ? NULL : model_format_name(f->format));
    json_key(out, 0, "regex");
    json_str(out, f->format == FF_REGEX ? f->regex_src : NULL);
    json_key(out, 0, "default");
    if (!f->has_default || row_to_json(f->default_mp.data, f->default_mp.size, out))
        sb_adds(out, "null");
    json_key(out, 0, "paranoid");
    sb_adds(out, f->paranoid ? "true" : "false");
    json_key(out, 0, "messages");
    sb_add(out, "{", 1);
    for (int r = 0, first = 1; r < RULE_COUNT; r++)
        if (f->messages[r]) {
            json_key(out, first, model_rule_name((Rule)r));
            json_str(out, f->messages[r]);
            first = 0;
        }
    sb_adds(out, "}");
    json_key(out, 0, "from");
    json_str(out, f->from);
    sb_adds(out, "}");
}

void models_json(const Models *ms, Strbuf *out)
{
    sb_adds(out, "{\"models\":[");
    for (size_t i = 0; i < ms->n; i++) {
        const Model *m = &ms->m[i];
        if (i)
            sb_add(out, ",", 1);
        sb_add(out, "{", 1);
        json_key(out, 1, "name");
        json_str(out, m->name);
        json_key(out, 0, "table");
        json_str(out, m->table);
        json_key(out, 0, "drift");
        json_str(out, model_drift_name(m->drift));
        json_key(out, 0, "drift_column");
        json_str(out, m->drift == DRIFT_KEEP ? m->drift_column : NULL);
        json_key(out, 0, "key");
        sb_add(out, "[", 1);
        for (size_t k = 0; k < m->nkey; k++) {
            if (k)
                sb_add(out, ",", 1);
            json_str(out, m->fields[m->key[k]].name);
        }
        sb_add(out, "]", 1);
        json_key(out, 0, "paranoid");
        json_str(out, m->paranoid >= 0 ? m->fields[m->paranoid].name : NULL);
        json_key(out, 0, "on_delete");
        json_str(out, m->on_delete == ON_DELETE_HARD ? "hard" : "soft");
        json_key(out, 0, "version");
        sb_addf(out, "\"%016llx\"", (unsigned long long)m->version);
        json_key(out, 0, "fields");
        sb_add(out, "[", 1);
        for (size_t k = 0; k < m->nfields; k++) {
            if (k)
                sb_add(out, ",", 1);
            field_json(out, &m->fields[k]);
        }
        sb_add(out, "]", 1);
        for (int hn = 0; hn < 2; hn++) {
            int first = 1;
            json_key(out, 0, hn ? "has_n" : "belongs_to");
            sb_add(out, "[", 1);
            for (size_t r = 0; r < m->nrels; r++) {
                const Relation *rel = &m->rels[r];
                if (rel->has_n != hn)
                    continue;
                if (!first)
                    sb_add(out, ",", 1);
                first = 0;
                sb_add(out, "{", 1);
                json_key(out, 1, "name");
                json_str(out, rel->name);
                json_key(out, 0, "model");
                json_str(out, rel->model);
                if (hn) {
                    json_key(out, 0, "through");
                    json_str(out, rel->through);
                } else {
                    const Model *p = models_find(ms, rel->model);
                    json_key(out, 0, "fields");
                    sb_add(out, "[", 1);
                    for (size_t k = 0; k < rel->nfields; k++) {
                        if (k)
                            sb_add(out, ",", 1);
                        json_str(out, rel->fields[k]);
                    }
                    sb_add(out, "]", 1);
                    json_key(out, 0, "references");
                    sb_add(out, "[", 1);
                    for (size_t k = 0; p && k < p->nkey; k++) {
                        if (k)
                            sb_add(out, ",", 1);
                        json_str(out, p->fields[p->key[k]].name);
                    }
                    sb_add(out, "]", 1);
                }
                sb_add(out, "}", 1);
            }
            sb_add(out, "]", 1);
        }
        sb_add(out, "}", 1);
    }
    sb_adds(out, "],\"load_order\":[");
    for (size_t k = 0; k < ms->n; k++) {
        if (k)
            sb_add(out, ",", 1);
        json_str(out, ms->m[ms->order[k]].name);
    }
    sb_adds(out, "]}");
}

