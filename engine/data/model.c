/* model.c: models, the metadata layer (model.h): the `models:` section
 * parsed into Models, lookups, the names of types, rules, drift policies
 * and formats, and the helpers model_check.c (validation), model_sql.c
 * (CSV, DDL) and model_json.c (the JSON export) share (model_int.h).
 *
 * Parsing walks the `models:` ConfNode tree in three passes: each model's
 * own keys and properties (so every model name and key is known), then the
 * relations (belongs_to, has_n) which refer to other models, then the load
 * order. It stops at the first error, "FILE:LINE: what; hint", worded by
 * conf.h's getters like the rest of the pipeline file. Names of models and
 * properties are SQL-friendly identifiers of at most 63 bytes (PostgreSQL
 * silently cuts longer ones, which could make two columns one). */
#include "model.h"
#include "model_int.h"

#include "pl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_LEN_MAX 63          /* PostgreSQL's identifier limit (NAMEDATALEN - 1) */
#define STRING_LEN_DEFAULT 50    /* DataMapper's default String length */
#define VARCHAR_MAX 10485760     /* PostgreSQL's varchar(n) limit */
#define NUMERIC_PREC_MAX 1000    /* PostgreSQL's numeric(p) limit */

static const char *const type_names[] = {"serial", "integer", "bigint", "decimal", "boolean",
                                         "string", "text", "datetime", "date", "json", NULL};
static const char *const rule_names[] = {"required", "type", "length", "min", "max",
                                         "format", "drift", "unique", NULL};
static const char *const drift_names[] = {"reject", "ignore", "keep", NULL};
static const char *const format_names[] = {"none", "email", "url", "regex", NULL};
static const char *const on_delete_names[] = {"soft", "hard", NULL};

#define TYPE_LIST "serial, integer, bigint, decimal, boolean, string, text, datetime, date, json"

/* ================================================================ names */

const char *model_type_name(FieldType t)
{
    return (unsigned)t <= FT_JSON ? type_names[t] : "unknown";
}

const char *model_rule_name(Rule r)
{
    return (unsigned)r < RULE_COUNT ? rule_names[r] : "unknown";
}

const char *model_drift_name(DriftPolicy d)
{
    return (unsigned)d <= DRIFT_KEEP ? drift_names[d] : "unknown";
}

const char *model_format_name(FieldFormat f)
{
    return (unsigned)f <= FF_REGEX ? format_names[f] : "unknown";
}

/* =============================================================== shared */

const msgpack_object *model_member(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (model_key_is(&map->via.map.ptr[i].key, name))
            return &map->via.map.ptr[i].val;
    return NULL;
}

int model_field_index(const Model *m, size_t hint, const char *s, size_t n)
{
    if (hint < m->nfields && model_name_is(m->fields[hint].name, s, n))
        return (int)hint;
    for (size_t j = 0; j < m->nfields; j++)
        if (model_name_is(m->fields[j].name, s, n))
            return (int)j;
    return -1;
}

void model_fmt_double(char *t, size_t size, double d)
{
    for (int prec = 15;; prec++) {
        snprintf(t, size, "%.*g", prec, d);
        if (prec == 17 || strtod(t, NULL) == d)
            break;
    }
}

void model_pack_number(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_ext(pk, n, ROW_EXT_NUMBER);
    msgpack_pack_ext_body(pk, s, n);
}

/* ================================================================ parse */

static int is_int_type(FieldType t)
{
    return t == FT_SERIAL || t == FT_INTEGER || t == FT_BIGINT;
}

static int is_num_type(FieldType t)
{
    return is_int_type(t) || t == FT_DECIMAL;
}

static int lookup(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

/* ident_ok: a letter or _, then letters, digits or _, at most 63 bytes. */
static int ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_LEN_MAX || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* v_ident reads a name that is an identifier. */
static int v_ident(const ConfErr *l, const char *key, const ConfNode *n, const char **out)
{
    int rc = conf_as_name(l, key, n, out);
    if (rc)
        return rc;
    if (!ident_ok(*out))
        return conf_errat(l, n->line, "%s: '%.64s' is not a valid name; use 1 to %d of letters, "
                     "digits and _, starting with a letter or _", key, *out, NAME_LEN_MAX);
    return 0;
}

static const char *const model_keys[] = {"table", "drift", "drift_column", "on_delete",
                                         "properties", "belongs_to", "has_n", NULL};
static const char *const prop_keys[] = {"type", "required", "key", "unique", "length", "min",
                                        "max", "format", "regex", "default", "paranoid",
                                        "precision", "scale", "messages", "from", NULL};
static const char *const bt_keys[] = {"model", "fields", NULL};
static const char *const hn_keys[] = {"model", "through", NULL};

/* pick reads a word of list (with a did-you-mean), returning its index. */
static int pick(const ConfErr *l, const char *key, const ConfNode *n, const char *const *list,
                int *out)
{
    char lb[300];
    const char *s, *near;
    int rc = conf_as_name(l, key, n, &s), i;
    if (rc)
        return rc;
    if ((i = lookup(list, s)) >= 0) {
        *out = i;
        return 0;
    }
    if ((near = conf_nearest(s, list)))
        return conf_errat(l, n->line, "%s: unknown %s '%.64s'; did you mean '%s'?", key, key, s, near);
    return conf_errat(l, n->line, "%s: unknown %s '%.64s'; use one of %s", key, key, s,
                 conf_words(list, lb, sizeof lb));
}

/* parse_default turns the default's text into a msgpack value of f's type
 * and checks it against f's own rules. */
static int parse_default(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64], msg[300] = "", jerr[200];
    const char *s = n->value;
    size_t len;
    msgpack_sbuffer raw;
    msgpack_packer pk;
    RowView v;
    int rc = 0;

    if (n->type != CONF_SCALAR)
        return conf_errat(l, n->line, "default: expected a single value (got %s)%s",
                     conf_desc(n, buf, sizeof buf), f->type == FT_JSON ? "; write a json default as "
                     "JSON text in quotes, like default: '{\"a\": 1}'" : "");
    if (conf_is_null(n))
        return conf_errat(l, n->line, "default: is empty; give a value or remove default:");
    len = strlen(s);
    msgpack_sbuffer_init(&raw);
    msgpack_packer_init(&pk, &raw, msgpack_sbuffer_write);
    switch (f->type) {
    case FT_SERIAL:
    case FT_INTEGER:
    case FT_BIGINT: {
        char *end;
        long long x;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (!(model_is_digit(s[0]) || ((s[0] == '-' || s[0] == '+') && model_is_digit(s[1]))) || *end ||
            errno) {
            rc = conf_errat(l, n->line, "default: expected a whole number for %s property (got %s)",
                       model_type_name(f->type), conf_desc(n, buf, sizeof buf));
            goto out;
        }
        msgpack_pack_int64(&pk, x);
        break;
    }
    case FT_DECIMAL:
        if (!row_is_json_number(s, len)) {
            rc = conf_errat(l, n->line, "default: expected a number like 12.50 (got %s)",
                       conf_desc(n, buf, sizeof buf));
            goto out;
        }
        model_pack_number(&pk, s, len);
        break;
    case FT_BOOLEAN: {
        int b;
        if ((rc = conf_as_bool(l, "default", n, &b)))
            goto out;
        if (b)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        break;
    }
    case FT_JSON:
        if (row_from_json(s, len, &raw, jerr, sizeof jerr)) {
            rc = conf_errat(l, n->line, "default: is not valid JSON (%s); write JSON text in quotes, "
                       "like default: '{\"a\": 1}'", jerr);
            goto out;
        }
        break;
    default:
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, s, len);
    }
    if (row_view(&v, raw.data, raw.size)) {
        rc = conf_errat(l, n->line, "default: cannot be stored; write a simpler value");
        goto out;
    }
    msgpack_packer_init(&pk, &f->default_mp, msgpack_sbuffer_write);
    f->default_mp.size = 0;
    rc = model_check_default(f, &v.root, &pk, msg, sizeof msg);
    row_view_free(&v);
    if (rc) {
        rc = conf_errat(l, n->line, "default: %.64s breaks the property's own rules: %s; fix the "
                   "default or the rule", s, msg);
        goto out;
    }
    f->has_default = 1;
    f->default_text = s;
out:
    msgpack_sbuffer_destroy(&raw);
    return rc;
}

static int parse_length(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64];
    unsigned long long a = 0, b;
    int rc;

    if (n->type == CONF_SCALAR) {
        if ((rc = conf_as_uint(l, "length", n, 1, VARCHAR_MAX, &b)))
            return rc;
    } else if (n->type == CONF_SEQ && n->n == 2) {
        if ((rc = conf_as_uint(l, "length's minimum", n->kids[0], 0, VARCHAR_MAX, &a)) ||
            (rc = conf_as_uint(l, "length's maximum", n->kids[1], 1, VARCHAR_MAX, &b)))
            return rc;
        if (a > b)
            return conf_errat(l, n->line, "length: the minimum %llu is more than the maximum %llu; "
                         "write [min, max]", a, b);
    } else {
        return conf_errat(l, n->line, "length: expected a number of characters or [min, max] "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    }
    f->has_length = 1;
    f->len_min = a;
    f->len_max = b;
    return 0;
}

static int parse_messages(const ConfErr *l, Field *f, const ConfNode *n)
{
    char buf[64], lb[200];
    int rc;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "messages: expected a map of rule: text, like {length: "
                     "\"...\"} (got %s)", conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        const char *near, *k = n->keys[i];
        int r = lookup(rule_names, k);
        if (r < 0) {
            if ((near = conf_nearest(k, rule_names)))
                return conf_errat(l, n->kids[i]->line, "messages: unknown rule '%.64s'; did you "
                             "mean '%s'?", k, near);
            return conf_errat(l, n->kids[i]->line, "messages: unknown rule '%.64s'; the rules are %s",
                         k, conf_words(rule_names, lb, sizeof lb));
        }
        snprintf(buf, sizeof buf, "messages: %s", k);
        if ((rc = conf_as_name(l, buf, n->kids[i], &f->messages[r])))
            return rc;
    }
    return 0;
}

/* ident_suggest writes a column name for source field name: lower case,
 * runs of other characters as one _, no _ at either end, a _ first when it
 * would start with a digit ("US Gross" -> us_gross). */
static void ident_suggest(const char *name, char *out, size_t n)
{
    size_t o = 0;
    int gap = 0;
    for (const char *p = name; *p && o + 2 < n; p++) {
        unsigned char c = (unsigned char)*p;
        if (isalnum(c) && c < 0x80) {
            if (gap && o)
                out[o++] = '_';
            if (o == 0 && isdigit(c))
                out[o++] = '_';
            out[o++] = (char)tolower(c);
            gap = 0;
        } else {
            gap = 1;
        }
    }
    if (o == 0)
        out[o++] = 'f';
    out[o] = '\0';
}

/* FROM_MAX: the longest source field or path from: takes. */
#define FROM_MAX 255

/* parse_from reads from: (a source field, or a dotted path into nested
 * objects) of f. */
static int parse_from(const ConfErr *l, Model *m, Field *f, const ConfNode *v)
{
    int rc = conf_as_name(l, "from", v, &f->from);
    if (rc)
        return rc;
    size_t n = strlen(f->from);
    if (n > FROM_MAX)
        return conf_errat(l, v->line, "from: the source field is %zu bytes; at most %d", n,
                          FROM_MAX);
    if (strcmp(f->from, f->name) == 0)
        return conf_errat(l, v->line, "from: '%s' is the property's own name; remove from:",
                          f->name);
    if (f->from[0] == '.' || f->from[n - 1] == '.' || strstr(f->from, ".."))
        return conf_errat(l, v->line, "from: '%.64s' has an empty step; a path is field names "
                          "joined by single dots, like address.city", f->from);
    for (const char *p = f->from; p; p = strchr(p, '.'), p = p ? p + 1 : NULL)
        f->npath++;
    f->path = xcalloc(f->npath, sizeof *f->path);
    const char *p = f->from;
    for (size_t i = 0; i < f->npath; i++) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        f->path[i] = xstrndup(p, len);
        p += len + 1;
    }
    m->nfrom++;
    return 0;
}

/* parse_field reads property name (node n) of model m into f. */
static int parse_field(const ConfErr *ml, Model *m, Field *f, const char *name, const ConfNode *n)
{
    char buf[64], lb[300];
    const ConfNode *v, *tn;
    const char *tname;
    ConfErr l = *ml;
    int rc, t;

    snprintf(l.pfx, sizeof l.pfx, "%.100sproperty '%.64s': ", ml->pfx, name);
    f->name = name;
    f->line = n->line;
    if (!ident_ok(name)) {
        char col[NAME_LEN_MAX + 1];
        ident_suggest(name, col, sizeof col);
        return conf_errat(&l, n->line, "'%.64s' is not a valid property name (a property is a "
                          "column): use 1 to %d of letters, digits and _, starting with a letter "
                          "or _; to read a source field of that name, name the property and give "
                          "the field as from:, like %s: {type: ..., from: \"%.64s\"}", name,
                          NAME_LEN_MAX, col, name);
    }
    if (strcmp(name, "_deleted") == 0)
        return conf_errat(&l, n->line, "_deleted is reserved for soft deletes; rename the property");
    if (n->type == CONF_SCALAR && !conf_is_null(n)) {
        tn = n; /* the short form, name: string */
    } else if (n->type == CONF_MAP) {
        if ((rc = conf_keys_check(&l, n, "a property", prop_keys)))
            return rc;
        if (!(tn = conf_get(n, "type")))
            return conf_errat(&l, n->line, "type: is required; use one of " TYPE_LIST);
    } else {
        return conf_errat(&l, n->line, "expected a map like {type: string, required: true} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    }
    if ((rc = conf_as_name(&l, "type", tn, &tname)))
        return rc;
    if ((t = lookup(type_names, tname)) < 0) {
        const char *near = conf_nearest(tname, type_names);
        if (near)
            return conf_errat(&l, tn->line, "type: unknown type '%.64s'; did you mean '%s'?", tname,
                         near);
        return conf_errat(&l, tn->line, "type: unknown type '%.64s'; use one of %s", tname,
                     conf_words(type_names, lb, sizeof lb));
    }
    f->type = (FieldType)t;
    if (n->type != CONF_MAP)
        goto defaults;
    if ((v = conf_get(n, "from")) && (rc = parse_from(&l, m, f, v)))
        return rc;

    if (((v = conf_get(n, "required")) && (rc = conf_as_bool(&l, "required", v, &f->required))) ||
        ((v = conf_get(n, "key")) && (rc = conf_as_bool(&l, "key", v, &f->key))) ||
        ((v = conf_get(n, "unique")) && (rc = conf_as_bool(&l, "unique", v, &f->unique))) ||
        ((v = conf_get(n, "paranoid")) && (rc = conf_as_bool(&l, "paranoid", v, &f->paranoid))))
        return rc;
    if (f->key && f->type == FT_JSON)
        return conf_errat(&l, conf_get(n, "key")->line, "key: a json property cannot be part of the "
                     "key; use a scalar type (string, integer, ...)");
    if (f->paranoid) {
        if (f->type != FT_DATETIME)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: a soft-delete property "
                         "must be a datetime (this one is %s); change type: to datetime",
                         model_type_name(f->type));
        if (f->key)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: the soft-delete "
                         "property cannot be part of the key; remove key: or paranoid:");
        if (m->paranoid >= 0)
            return conf_errat(&l, conf_get(n, "paranoid")->line, "paranoid: model already has a "
                         "soft-delete property '%s'; keep one", m->fields[m->paranoid].name);
        m->paranoid = (int)(f - m->fields);
    }
    if ((v = conf_get(n, "length"))) {
        if (f->type != FT_STRING && f->type != FT_TEXT)
            return conf_errat(&l, v->line, "length: only string and text properties have a length "
                         "(this one is %s); remove it%s", model_type_name(f->type),
                         is_num_type(f->type) ? " or use min: and max:" : "");
        if ((rc = parse_length(&l, f, v)))
            return rc;
    }
    for (int mx = 0; mx < 2; mx++) {
        const char *k = mx ? "max" : "min";
        if (!(v = conf_get(n, k)))
            continue;
        if (!is_num_type(f->type))
            return conf_errat(&l, v->line, "%s: only number properties have a %s (this one is %s)%s",
                         k, k, model_type_name(f->type), f->type == FT_STRING || f->type == FT_TEXT
                         ? "; use length: for the number of characters" : "; remove it");
        if ((rc = conf_as_num(&l, k, v, -INFINITY, INFINITY, NULL, mx ? &f->max : &f->min)))
            return rc;
        *(mx ? &f->has_max : &f->has_min) = 1;
    }
    if (f->has_min && f->has_max && f->min > f->max)
        return conf_errat(&l, conf_get(n, "max")->line, "max: %g is less than min: %g; swap them",
                     f->max, f->min);
    for (int pr = 0; pr < 2; pr++) {
        const char *k = pr ? "scale" : "precision";
        unsigned long long u;
        if (!(v = conf_get(n, k)))
            continue;
        if (f->type != FT_DECIMAL)
            return conf_errat(&l, v->line, "%s: only decimal properties have a %s (this one is %s); "
                         "remove it", k, k, model_type_name(f->type));
        if ((rc = conf_as_uint(&l, k, v, pr ? 0 : 1, NUMERIC_PREC_MAX, &u)))
            return rc;
        *(pr ? &f->scale : &f->precision) = (unsigned)u;
    }
    if (conf_get(n, "scale") && !f->precision)
        return conf_errat(&l, conf_get(n, "scale")->line, "scale: needs precision: too (the total "
                     "number of digits), like {precision: 10, scale: 2}");
    if (f->scale > f->precision)
        return conf_errat(&l, conf_get(n, "scale")->line, "scale: %u is more than precision: %u; "
                     "scale counts the digits after the point, precision all of them",
                     f->scale, f->precision);
    if ((v = conf_get(n, "format")) || conf_get(n, "regex")) {
        const ConfNode *rn = conf_get(n, "regex");
        int fmt = FF_REGEX;
        if (f->type != FT_STRING && f->type != FT_TEXT)
            return conf_errat(&l, (v ? v : rn)->line, "%s: only string and text properties have a "
                         "format (this one is %s); remove it", v ? "format" : "regex",
                         model_type_name(f->type));
        if (v && (rc = pick(&l, "format", v, format_names, &fmt)))
            return rc;
        if (fmt == FF_NONE)
            return conf_errat(&l, v->line, "format: none is the same as no format; remove format:");
        if (fmt == FF_REGEX && !rn)
            return conf_errat(&l, v->line, "format: regex needs regex: too, like regex: "
                         "\"^[A-Z]{2}[0-9]+$\" (a POSIX extended regex)");
        if (fmt != FF_REGEX && rn)
            return conf_errat(&l, rn->line, "regex: only with format: regex (this one is format: "
                         "%s); remove one of them", model_format_name(fmt));
        if (fmt == FF_REGEX) {
            char rerr[200];
            if ((rc = conf_as_name(&l, "regex", rn, &f->regex_src)))
                return rc;
            int e = regcomp(&f->regex, f->regex_src, REG_EXTENDED | REG_NOSUB);
            if (e) {
                regerror(e, &f->regex, rerr, sizeof rerr);
                regfree(&f->regex);
                return conf_errat(&l, rn->line, "regex: cannot compile '%.100s': %s; write a POSIX "
                             "extended regex, like ^[A-Z]{2}[0-9]+$", f->regex_src, rerr);
            }
        }
        f->format = (FieldFormat)fmt;
    }
    if ((v = conf_get(n, "messages")) && (rc = parse_messages(&l, f, v)))
        return rc;
defaults:
    if (f->type == FT_STRING && !f->has_length) {
        f->has_length = 1;
        f->len_min = 0;
        f->len_max = STRING_LEN_DEFAULT;
    }
    if ((v = conf_get(n, "default")) && (rc = parse_default(&l, f, v)))
        return rc;
    return 0;
}

/* hash_add folds n bytes of p into the FNV-1a hash *h, then a separator
 * byte (so that "ab","c" and "a","bc" differ). */
static void hash_add(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ c[i]) * 0x100000001b3ull;
    *h = (*h ^ 0xff) * 0x100000001b3ull;
}

static void hash_str(uint64_t *h, const char *s)
{
    hash_add(h, s ? s : "", s ? strlen(s) : 0);
}

static void hash_u64(uint64_t *h, uint64_t v)
{
    unsigned char b[8];
    pl_put_be64(b, v);
    hash_add(h, b, 8);
}

/* shape_hash is m's version (model.h, "Versions"): never 0. */
static uint64_t shape_hash(const Model *m)
{
    uint64_t h = 0xcbf29ce484222325ull;
    hash_str(&h, "pickline model shape 1");
    hash_str(&h, m->table);
    hash_str(&h, m->drift == DRIFT_KEEP ? m->drift_column : "");
    for (size_t i = 0; i < m->nfields; i++) {
        const Field *f = &m->fields[i];
        hash_str(&h, f->name);
        hash_u64(&h, (uint64_t)f->type);
        hash_u64(&h, f->type == FT_STRING ? f->len_max : 0);
        hash_u64(&h, ((uint64_t)f->precision << 32) | f->scale);
        hash_u64(&h, (uint64_t)((f->required ? 1 : 0) | (f->key ? 2 : 0) | (f->unique ? 4 : 0) |
                                (f->paranoid ? 8 : 0) | (f->has_default ? 16 : 0)));
        if (f->has_default)
            hash_add(&h, f->default_mp.data, f->default_mp.size);
    }
    return h ? h : 1;
}

/* parse_model reads model i's own keys and properties (pass 1). */
static int parse_model(const ConfErr *ml, Models *ms, size_t i, const char *name, const ConfNode *n)
{
    char buf[64];
    const ConfNode *props, *v;
    Model *m = &ms->m[i];
    ConfErr l = *ml;
    int rc, d;

    snprintf(l.pfx, sizeof l.pfx, "model '%.64s': ", name);
    m->name = m->table = name;
    m->line = n->line;
    m->paranoid = -1;
    m->drift_column = "extra";
    if (!ident_ok(name))
        return conf_errat(&l, n->line, "'%.64s' is not a valid model name; use 1 to %d of letters, "
                     "digits and _, starting with a letter or _", name, NAME_LEN_MAX);
    if (n->type != CONF_MAP)
        return conf_errat(&l, n->line, "expected a map with properties: (got %s)",
                     conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(&l, n, "a model", model_keys)))
        return rc;
    if ((v = conf_get(n, "table"))) {
        if ((rc = conf_as_name(&l, "table", v, &m->table)))
            return rc;
        if (strchr(m->table, '.'))
            return conf_errat(&l, v->line, "table: '%.64s' names a schema; give the table alone and "
                         "choose the schema with the target's search_path", m->table);
        if (strlen(m->table) > NAME_LEN_MAX)
            return conf_errat(&l, v->line, "table: '%.64s...' is longer than %d bytes, which "
                         "PostgreSQL would cut; shorten it", m->table, NAME_LEN_MAX);
    }
    for (size_t j = 0; j < i; j++)
        if (strcmp(ms->m[j].table, m->table) == 0)
            return conf_errat(&l, v ? v->line : n->line, "table '%s' is already the table of model "
                         "'%s'; give each model its own table:", m->table, ms->m[j].name);
    if ((v = conf_get(n, "drift"))) {
        if ((rc = pick(&l, "drift", v, drift_names, &d)))
            return rc;
        m->drift = (DriftPolicy)d;
    }
    if ((v = conf_get(n, "drift_column"))) {
        if (m->drift != DRIFT_KEEP)
            return conf_errat(&l, v->line, "drift_column: is only used with drift: keep; remove it "
                         "or set drift: keep");
        if ((rc = v_ident(&l, "drift_column", v, &m->drift_column)))
            return rc;
    }
    if (!(props = conf_get(n, "properties")))
        return conf_errat(&l, n->line, "properties: is required; declare the fields, like "
                     "properties: {id: {type: serial, key: true}}");
    if (props->type != CONF_MAP || props->n == 0)
        return conf_errat(&l, props->line, "properties: expected a map of name: {type: ...} (got %s)",
                     props->type == CONF_MAP ? "an empty map" : conf_desc(props, buf, sizeof buf));
    m->fields = xcalloc(props->n, sizeof *m->fields);
    m->nfields = props->n;
    for (size_t j = 0; j < props->n; j++)
        if ((rc = parse_field(&l, m, &m->fields[j], props->keys[j], props->kids[j])))
            return rc;
    m->key = xcalloc(props->n, sizeof *m->key);
    for (size_t j = 0; j < props->n; j++)
        if (m->fields[j].key)
            m->key[m->nkey++] = j;
    if (m->drift == DRIFT_KEEP)
        for (size_t j = 0; j < m->nfields; j++)
            if (strcmp(m->fields[j].name, m->drift_column) == 0)
                return conf_errat(&l, m->fields[j].line, "property '%s' is also the drift column "
                             "(drift_column: %s); give drift_column: another name",
                             m->drift_column, m->drift_column);
    /* A source field that is also a property's name would feed two
     * columns, one by name and one by from:; say which. */
    for (size_t j = 0; j < m->nfields; j++) {
        const Field *f = &m->fields[j];
        for (size_t k = 0; f->from && k < m->nfields; k++)
            if (k != j && strcmp(m->fields[k].name, f->from) == 0)
                return conf_errat(&l, f->line, "property '%s': from: '%.64s' reads field '%s', "
                                  "which is also the name of property '%s'; a row's field feeds "
                                  "one property by its name: rename property '%s' or give it a "
                                  "from: too", f->name, f->from, m->fields[k].name,
                                  m->fields[k].name, m->fields[k].name);
        if (m->drift == DRIFT_KEEP && f->from && strcmp(f->path[0], m->drift_column) == 0)
            return conf_errat(&l, f->line, "property '%s': from: '%.64s' reads the drift column "
                              "'%s'; give drift_column: another name", f->name, f->from,
                              m->drift_column);
    }
    m->on_delete = m->paranoid >= 0 ? ON_DELETE_SOFT : ON_DELETE_HARD;
    if ((v = conf_get(n, "on_delete"))) {
        if ((rc = pick(&l, "on_delete", v, on_delete_names, &d)))
            return rc;
        if (d == ON_DELETE_SOFT && m->paranoid < 0)
            return conf_errat(&l, v->line, "on_delete: soft sets the paranoid column, and model "
                         "'%s' has none; declare one ({type: datetime, paranoid: true}) or use "
                         "on_delete: hard", name);
        m->on_delete = (OnDelete)d;
    }
    m->version = shape_hash(m);
    return 0;
}

static int same_kind(FieldType a, FieldType b)
{
    if (is_int_type(a) && is_int_type(b))
        return 1;
    if ((a == FT_STRING || a == FT_TEXT) && (b == FT_STRING || b == FT_TEXT))
        return 1;
    return a == b;
}

/* model_ref reads a reference to a declared model (with a did-you-mean). */
static int model_ref(const ConfErr *l, const Models *ms, const char *key, const ConfNode *v,
                     const char **out)
{
    const char *s;
    int rc = conf_as_name(l, key, v, &s);
    if (rc)
        return rc;
    if (models_find(ms, s)) {
        *out = s;
        return 0;
    }
    ConfNear nr = CONF_NEAR(s);
    for (size_t i = 0; i < ms->n; i++)
        conf_near_try(&nr, ms->m[i].name);
    if (nr.best)
        return conf_errat(l, v->line, "%s: model '%.64s' is not declared; did you mean '%s'?", key, s,
                     nr.best);
    return conf_errat(l, v->line, "%s: model '%.64s' is not declared; declare it under models: or "
                 "fix the name", key, s);
}

/* rel_start begins relation name (node n) of the model ml names: r's name
 * and line, and l, ml with "belongs_to 'NAME': " (what) after its prefix. */
static void rel_start(ConfErr *l, const ConfErr *ml, Relation *r, const char *what,
                      const char *name, const ConfNode *n)
{
    *l = *ml;
    snprintf(l->pfx, sizeof l->pfx, "%.100s%s '%.64s': ", ml->pfx, what, name);
    r->name = name;
    r->line = n->line;
}

static int parse_belongs_to(const ConfErr *ml, const Models *ms, const Model *m, Relation *r,
                            const char *name, const ConfNode *n)
{
    char buf[64], keys[300];
    const ConfNode *v;
    const Model *p;
    ConfErr l;
    int rc;

    rel_start(&l, ml, r, "belongs_to", name, n);
    if (!ident_ok(name))
        return conf_errat(&l, n->line, "'%.64s' is not a valid relation name; use letters, digits "
                     "and _", name);
    if (n->type != CONF_MAP)
        return conf_errat(&l, n->line, "expected a map like {model: tenants, fields: [tenant_id]} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(&l, n, "a belongs_to", bt_keys)))
        return rc;
    if (!(v = conf_get(n, "model")))
        return conf_errat(&l, n->line, "model: is required; name the parent model");
    if ((rc = model_ref(&l, ms, "model", v, &r->model)))
        return rc;
    p = models_find(ms, r->model);
    keys[0] = '\0';
    for (size_t k = 0, o = 0; k < p->nkey && o < sizeof keys; k++) {
        int w = snprintf(keys + o, sizeof keys - o, "%s%s", k ? ", " : "",
                         p->fields[p->key[k]].name);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    if (p->nkey == 0)
        return conf_errat(&l, v->line, "model '%s' has no key to refer to; mark its identifying "
                     "fields with key: true", p->name);
    if (!(v = conf_get(n, "fields")))
        return conf_errat(&l, n->line, "fields: is required; list this model's columns that hold "
                     "the key of '%s' (%s), like fields: [%s_id]", p->name, keys, name);
    if (v->type == CONF_SCALAR && !conf_is_null(v)) {
        r->fields = xcalloc(1, sizeof *r->fields);
        r->fields[0] = v->value;
        r->nfields = 1;
    } else if (v->type == CONF_SEQ) {
        r->fields = xcalloc(v->n ? v->n : 1, sizeof *r->fields);
        for (size_t k = 0; k < v->n; k++)
            if ((rc = conf_as_name(&l, "fields item", v->kids[k], &r->fields[r->nfields++])))
                return rc;
    } else {
        return conf_errat(&l, v->line, "fields: expected a list of this model's columns (got %s)",
                     conf_desc(v, buf, sizeof buf));
    }
    if (r->nfields != p->nkey)
        return conf_errat(&l, v->line, "fields: lists %zu column%s but the key of '%s' has %zu (%s); "
                     "list one column per key field, in that order", r->nfields,
                     r->nfields == 1 ? "" : "s", p->name, p->nkey, keys);
    for (size_t k = 0; k < r->nfields; k++) {
        int fi = model_field_index(m, SIZE_MAX, r->fields[k], strlen(r->fields[k]));
        const Field *pf = &p->fields[p->key[k]];
        if (fi < 0)
            return conf_errat(&l, v->line, "fields: '%.64s' is not a property of model '%s'; "
                         "declare it under properties: (like {type: %s})", r->fields[k],
                         m->name, model_type_name(pf->type == FT_SERIAL ? FT_BIGINT : pf->type));
        if (!same_kind(m->fields[fi].type, pf->type))
            return conf_errat(&l, v->line, "fields: '%s' is %s but the key field '%s' of '%s' is %s; "
                         "make the types match", r->fields[k], model_type_name(m->fields[fi].type),
                         pf->name, p->name, model_type_name(pf->type));
    }
    return 0;
}

static int parse_has_n(const ConfErr *ml, const Models *ms, Relation *r, const char *name,
                       const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    ConfErr l;
    int rc;

    rel_start(&l, ml, r, "has_n", name, n);
    r->has_n = 1;
    if (n->type != CONF_MAP && !conf_is_null(n))
        return conf_errat(&l, n->line, "expected a map like {model: authorities, through: ...} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if (n->type == CONF_MAP && (rc = conf_keys_check(&l, n, "a has_n", hn_keys)))
        return rc;
    if ((v = conf_get(n, "model"))) {
        if ((rc = model_ref(&l, ms, "model", v, &r->model)))
            return rc;
    } else if (models_find(ms, name)) {
        r->model = models_find(ms, name)->name;
    } else {
        return conf_errat(&l, n->line, "model '%.64s' is not declared; declare it under models: or "
                     "give model:", name);
    }
    if ((v = conf_get(n, "through")) && (rc = model_ref(&l, ms, "through", v, &r->through)))
        return rc;
    return 0;
}

/* parse_rels reads model i's belongs_to and has_n (pass 2). */
static int parse_rels(const ConfErr *ml, Models *ms, size_t i, const ConfNode *n)
{
    char buf[64];
    Model *m = &ms->m[i];
    const ConfNode *bt = conf_get(n, "belongs_to"), *hn = conf_get(n, "has_n");
    ConfErr l = *ml;
    int rc;

    snprintf(l.pfx, sizeof l.pfx, "model '%.64s': ", m->name);
    if (bt && bt->type != CONF_MAP)
        return conf_errat(&l, bt->line, "belongs_to: expected a map of name: {model: ..., fields: "
                     "[...]} (got %s)", conf_desc(bt, buf, sizeof buf));
    if (hn && hn->type != CONF_MAP)
        return conf_errat(&l, hn->line, "has_n: expected a map of name: {model: ...} (got %s)",
                     conf_desc(hn, buf, sizeof buf));
    size_t nb = bt ? bt->n : 0, nh = hn ? hn->n : 0;
    m->rels = xcalloc(nb + nh + 1, sizeof *m->rels);
    m->nrels = nb + nh;
    for (size_t k = 0; k < nb; k++)
        if ((rc = parse_belongs_to(&l, ms, m, &m->rels[k], bt->keys[k], bt->kids[k])))
            return rc;
    for (size_t k = 0; k < nh; k++) {
        if (bt && conf_get(bt, hn->keys[k]))
            return conf_errat(&l, hn->kids[k]->line, "'%.64s' is both a belongs_to and a has_n; "
                         "rename one", hn->keys[k]);
        if ((rc = parse_has_n(&l, ms, &m->rels[nb + k], hn->keys[k], hn->kids[k])))
            return rc;
    }
    return 0;
}

/* parent_pending returns a belongs_to of model i whose parent (another
 * model) is not placed yet, or NULL. */
static const Relation *parent_pending(const Models *ms, size_t i, const char *placed)
{
    const Model *m = &ms->m[i];
    for (size_t r = 0; r < m->nrels; r++) {
        const Relation *rel = &m->rels[r];
        if (rel->has_n || strcmp(rel->model, m->name) == 0)
            continue;
        size_t p = (size_t)(models_find(ms, rel->model) - ms->m);
        if (!placed[p])
            return rel;
    }
    return NULL;
}

/* order_models puts parents before children, file order among equals. */
static int order_models(const ConfErr *l, Models *ms)
{
    char *placed = xcalloc(ms->n + 1, 1);
    size_t *path = NULL;
    int rc = 0;

    ms->order = xcalloc(ms->n + 1, sizeof *ms->order);
    for (size_t k = 0; k < ms->n; k++) {
        size_t pick_i = SIZE_MAX;
        for (size_t i = 0; i < ms->n && pick_i == SIZE_MAX; i++)
            if (!placed[i] && !parent_pending(ms, i, placed))
                pick_i = i;
        if (pick_i == SIZE_MAX) {
            /* Every model left waits for another one left: walk up to a repeat. */
            size_t cur = 0, len = 0, start = 0;
            char cyc[400];
            size_t o = 0;
            path = xcalloc(ms->n + 1, sizeof *path);
            while (placed[cur])
                cur++;
            for (;;) {
                size_t j;
                for (j = 0; j < len && path[j] != cur; j++)
                    ;
                if (j < len) {
                    start = j;
                    break;
                }
                path[len++] = cur;
                const Relation *rel = parent_pending(ms, cur, placed);
                cur = (size_t)(models_find(ms, rel->model) - ms->m);
            }
            cyc[0] = '\0';
            for (size_t j = start; j <= len && o < sizeof cyc; j++) {
                int w = snprintf(cyc + o, sizeof cyc - o, "%s%s", j > start ? " -> " : "",
                                 ms->m[j < len ? path[j] : path[start]].name);
                if (w < 0)
                    break;
                o += (size_t)w;
            }
            const Relation *first = parent_pending(ms, path[start], placed);
            rc = conf_errat(l, first->line, "belongs_to makes a cycle between models: %s; a parent "
                       "is loaded before its children, so one of these must be a plain column "
                       "instead of a belongs_to", cyc);
            goto out;
        }
        placed[pick_i] = 1;
        ms->order[k] = pick_i;
    }
out:
    free(path);
    free(placed);
    return rc;
}

int models_parse(const char *file, const ConfNode *node, Models **out, char *err, size_t errlen)
{
    char buf[64];
    ConfErr l = conf_err(file, err, errlen);
    Models *ms;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!node || node->type != CONF_MAP || node->n == 0)
        return conf_errat(&l, node ? node->line : 1, "models: expected a map of models, like models: "
                     "{users: {properties: {id: {type: serial, key: true}}}} (got %s)",
                     !node ? "nothing" : node->type == CONF_MAP ? "an empty map"
                                                                : conf_desc(node, buf, sizeof buf));
    ms = xcalloc(1, sizeof *ms);
    ms->m = xcalloc(node->n, sizeof *ms->m);
    for (size_t i = 0; i < node->n; i++) {
        ms->n = i + 1;
        if ((rc = parse_model(&l, ms, i, node->keys[i], node->kids[i])))
            goto fail;
    }
    for (size_t i = 0; i < node->n; i++)
        if ((rc = parse_rels(&l, ms, i, node->kids[i])))
            goto fail;
    if ((rc = order_models(&l, ms)))
        goto fail;
    *out = ms;
    return 0;
fail:
    models_free(ms);
    return rc;
}

void models_free(Models *ms)
{
    if (!ms)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        Model *m = &ms->m[i];
        for (size_t j = 0; j < m->nfields; j++) {
            if (m->fields[j].format == FF_REGEX)
                regfree(&m->fields[j].regex);
            msgpack_sbuffer_destroy(&m->fields[j].default_mp);
            for (size_t k = 0; k < m->fields[j].npath; k++)
                free(m->fields[j].path[k]);
            free(m->fields[j].path);
        }
        for (size_t r = 0; r < m->nrels; r++)
            free(m->rels[r].fields);
        free(m->fields);
        free(m->key);
        free(m->rels);
    }
    free(ms->m);
    free(ms->order);
    free(ms);
}

const Model *models_find(const Models *ms, const char *name)
{
    for (size_t i = 0; ms && name && i < ms->n; i++)
        if (strcmp(ms->m[i].name, name) == 0)
            return &ms->m[i];
    return NULL;
}

