/* conf.c: the YAML tree and its getters (conf.h).
 *
 * The reader is libyaml's event API driven by hand: build() makes one node
 * from its start event and, for a list or a map, everything up to its end
 * event. A map's keys are checked for duplicates as they arrive, through a
 * hash table once the map is large (KeySet). The getters word every error
 * with the value as written (conf_desc), so that a message shows what the
 * file says, and with a hint when the fix is plain (quotes on a number). */
#include "conf.h"

#include "pl.h"
#include "strbuf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define DEPTH_MAX 64           /* nesting of maps and lists */

/* ============================================== errors and did-you-mean */

/* conf_errat keeps a message one line of printable text: a value quoted in
 * it may hold anything (a CR, a tab, a NUL escape), which shows as \r, \n,
 * \t or \xNN. */
int conf_errat(const ConfErr *e, int line, const char *fmt, ...)
{
    char msg[1024];
    if (!e->err || e->errlen == 0)
        return PL_EINVAL;
    int k = snprintf(msg, sizeof msg, "%s:%d: %s", e->file, line, e->pfx);
    if (k >= 0 && (size_t)k < sizeof msg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
        va_end(ap);
    }
    size_t o = 0;
    for (const char *p = msg; *p && o + 1 < e->errlen; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c >= 0x20 && c != 0x7f) {
            e->err[o++] = (char)c;
            continue;
        }
        int m = snprintf(esc, sizeof esc, c == '\r' ? "\\r" : c == '\n' ? "\\n" : c == '\t' ?
                         "\\t" : "\\x%02X", c);
        if (o + (size_t)m + 1 > e->errlen)
            break;
        memcpy(e->err + o, esc, (size_t)m);
        o += (size_t)m;
    }
    e->err[o] = '\0';
    return PL_EINVAL;
}

ConfErr conf_err(const char *file, char *err, size_t errlen)
{
    ConfErr e = {.file = file ? file : "(pipeline)", .err = err, .errlen = errlen};
    return e;
}

size_t conf_edit_distance(const char *a, const char *b)
{
    enum { W = 40 };
    size_t n = strlen(a), m = strlen(b), d[W + 1][W + 1];
    if (n > W || m > W)
        return SIZE_MAX;
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            size_t c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c)
                c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c)
                c = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < c)
                c = d[i - 2][j - 2] + 1;
            d[i][j] = c;
        }
    return d[n][m];
}

void conf_near_try(ConfNear *nr, const char *cand)
{
    size_t d = conf_edit_distance(nr->word, cand);
    if (d <= 2 && d < nr->d) {
        nr->d = d;
        nr->best = cand;
    }
}

const char *conf_nearest(const char *word, const char *const *list)
{
    ConfNear nr = CONF_NEAR(word);
    for (; list && *list; list++)
        conf_near_try(&nr, *list);
    return nr.best;
}

void conf_join(char *buf, size_t size, size_t *m, const char *s)
{
    int k = snprintf(buf + *m, size - *m, "%s%s", *m ? ", " : "", s);
    if (k > 0)
        *m = *m + (size_t)k < size ? *m + (size_t)k : size - 1;
}

const char *conf_words(const char *const *list, char *buf, size_t size)
{
    size_t m = 0;
    buf[0] = '\0';
    for (; list && *list; list++)
        conf_join(buf, size, &m, *list);
    return buf;
}

static int in_list(const char *const *a, const char *s)
{
    for (; a && *a; a++)
        if (strcmp(*a, s) == 0)
            return 1;
    return 0;
}

int conf_keys_check(const ConfErr *e, const ConfNode *map, const char *what,
                    const char *const *names)
{
    char list[400];
    for (size_t i = 0; i < map->n; i++) {
        const char *key = map->keys[i], *near;
        int line = conf_key_line(map, (int)i);
        if (in_list(names, key))
            continue;
        if ((near = conf_nearest(key, names)))
            return conf_errat(e, line, "unknown key '%.64s'; did you mean '%s'?", key, near);
        return conf_errat(e, line, "unknown key '%.64s'; %s takes %s", key, what,
                          conf_words(names, list, sizeof list));
    }
    return 0;
}

/* ================================================================== tree */

/* Node: every ConfNode of a tree conf_read builds is the first member of a
 * Node, which has room for more children than it holds. */
typedef struct Node {
    ConfNode c;
    size_t cap;
} Node;

static Node *node_new(int type, int line)
{
    Node *n = xcalloc(1, sizeof *n);
    n->c.type = type;
    n->c.line = line;
    return n;
}

void conf_free(ConfNode *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        if (c->keys)
            free(c->keys[i]);
        conf_free(c->kids[i]);
    }
    free(c->keys);
    free(c->kids);
    free(c->value);
    free(c->raw);
    free(c->klines);
    free(container_of(c, Node, c));
}

/* node_add appends kid (under key, for a map) to n; takes key and kid. */
static void node_add(Node *n, char *key, int kline, ConfNode *kid)
{
    if (n->c.n == n->cap) {
        n->cap = n->cap ? 2 * n->cap : 8;
        n->c.kids = xrealloc(n->c.kids, n->cap * sizeof *n->c.kids);
        if (n->c.type == CONF_MAP) {
            n->c.keys = xrealloc(n->c.keys, n->cap * sizeof *n->c.keys);
            n->c.klines = xrealloc(n->c.klines, n->cap * sizeof *n->c.klines);
        }
    }
    if (n->c.type == CONF_MAP) {
        n->c.keys[n->c.n] = key;
        n->c.klines[n->c.n] = kline;
    }
    n->c.kids[n->c.n++] = kid;
}

int conf_index(const ConfNode *map, const char *key)
{
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0)
            return (int)i;
    return -1;
}

/* KeySet: the keys of a map being read, for the duplicate-key check: an
 * open-addressing table of indexes into the map's keys (index + 1; 0 is an
 * empty slot), kept at most half full. A map of N keys is checked in O(N)
 * instead of a scan per key (O(N^2): 200,000 keys took minutes). Maps with
 * fewer than KEYSET_MIN keys are scanned and have no table. */
typedef struct KeySet {
    uint32_t *slot;
    size_t cap;
} KeySet;
#define KEYSET_MIN 16

static size_t key_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32));
}

static void keyset_put(KeySet *ks, const ConfNode *map, size_t i)
{
    size_t m = ks->cap - 1, h = key_hash(map->keys[i]) & m;
    while (ks->slot[h])
        h = (h + 1) & m;
    ks->slot[h] = (uint32_t)(i + 1);
}

/* keyset_find returns the index of key among map's keys, or -1. */
static int keyset_find(const KeySet *ks, const ConfNode *map, const char *key)
{
    if (!ks->slot)
        return conf_index(map, key);
    size_t m = ks->cap - 1;
    for (size_t h = key_hash(key) & m; ks->slot[h]; h = (h + 1) & m)
        if (strcmp(map->keys[ks->slot[h] - 1], key) == 0)
            return (int)(ks->slot[h] - 1);
    return -1;
}

/* keyset_added takes in map's newest key, growing the table (from
 * KEYSET_MIN keys on) to keep it at most half full. */
static void keyset_added(KeySet *ks, const ConfNode *map)
{
    if (map->n < KEYSET_MIN)
        return;
    PL_ASSERT(map->n < UINT32_MAX, "a map of 4 billion keys cannot fit a pipeline file");
    if (2 * map->n > ks->cap) {
        free(ks->slot);
        ks->cap = 4 * KEYSET_MIN;
        while (ks->cap < 4 * map->n)
            ks->cap *= 2;
        ks->slot = xcalloc(ks->cap, sizeof *ks->slot);
        for (size_t i = 0; i < map->n; i++)
            keyset_put(ks, map, i);
        return;
    }
    keyset_put(ks, map, map->n - 1);
}

int conf_key_line(const ConfNode *map, int i)
{
    if (i < 0 || (size_t)i >= map->n)
        return map->line;
    return map->klines ? map->klines[i] : map->kids[i]->line;
}

int conf_is_null(const ConfNode *n)
{
    return n->type == CONF_SCALAR && !n->quoted &&
           (!n->value[0] || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
            strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0);
}

const char *conf_desc(const ConfNode *n, char *buf, size_t size)
{
    if (n->type == CONF_MAP)
        return "a map";
    if (n->type == CONF_SEQ)
        return "a list";
    if (n->raw) { /* as written: the expansion may be a secret */
        snprintf(buf, size, n->quoted ? "\"%.40s%s\"%s" : "'%.40s%s'%s", n->raw,
                 strlen(n->raw) > 40 ? "..." : "", n->value[0] ? "" : ", which is empty");
        return buf;
    }
    if (conf_is_null(n))
        return "nothing";
    snprintf(buf, size, n->quoted ? "the string \"%.40s%s\"" : "'%.40s%s'", n->value,
             strlen(n->value) > 40 ? "..." : "");
    return buf;
}

/* ---------------------------------------------------------- YAML reader */

typedef struct Reader {
    yaml_parser_t yp;
    const ConfErr *e;
    const char *text;
    size_t len;
} Reader;

/* line_at returns the start of 1-based line `line` of the text, or NULL. */
static const char *line_at(const Reader *r, size_t line)
{
    const char *p = r->text, *end = r->text + r->len;
    for (size_t i = 1; i < line; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return NULL;
        p = nl + 1;
    }
    return p;
}

/* yaml_fail turns libyaml's error into ours, naming a tab in the
 * indentation (YAML forbids them; libyaml's own words do not say so). */
static int yaml_fail(Reader *r)
{
    const yaml_parser_t *p = &r->yp;
    size_t line = p->problem_mark.line + 1;
    if (p->error == YAML_MEMORY_ERROR)
        return conf_errat(r->e, (int)line, "out of memory reading the YAML");
    if (p->error == YAML_READER_ERROR) { /* no mark: count the lines up to the offset */
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < r->len; i++)
            line += r->text[i] == '\n';
        return conf_errat(r->e, (int)line, "invalid text: %s (byte %zu); save the file as UTF-8",
                     p->problem ? p->problem : "unreadable", p->problem_offset);
    }
    const char *s = line_at(r, line), *end = r->text + r->len;
    for (; s && s < end && (*s == ' ' || *s == '\t'); s++)
        if (*s == '\t')
            return conf_errat(r->e, (int)line, "tab in the indentation; YAML indents with spaces "
                         "only (libyaml: %s)", p->problem ? p->problem : "error");
    /* A ${VAR} inside { } or [ ] is not plain text to YAML: say so. */
    const char *ls = line_at(r, line), *le = ls ? memchr(ls, '\n', (size_t)(end - ls)) : NULL;
    const char *quote = ls && memmem(ls, (size_t)((le ? le : end) - ls), "${", 2) ?
        " (inside { } or [ ], write a ${VAR} in quotes: \"${VAR}\")" : "";
    if (p->context && p->context_mark.line != p->problem_mark.line)
        return conf_errat(r->e, (int)line, "invalid YAML: %s (%s at line %zu); check the "
                     "indentation and the quoting%s", p->problem ? p->problem : "error",
                     p->context, p->context_mark.line + 1, quote);
    return conf_errat(r->e, (int)line, "invalid YAML: %s%s%s%s; check the indentation and the "
                 "quoting%s", p->problem ? p->problem : "error", p->context ? " (" : "",
                 p->context ? p->context : "", p->context ? ")" : "", quote);
}

static int next(Reader *r, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&r->yp, ev))
        return yaml_fail(r);
    return 0;
}

/* build makes the node that starts with event ev (which it deletes) and,
 * for a list or a map, everything up to its end event. */
static int build(Reader *r, yaml_event_t *ev, int depth, ConfNode **out)
{
    Node *n = NULL;
    KeySet ks = {NULL, 0};
    yaml_event_t e;
    int rc = 0, line = (int)ev->start_mark.line + 1;
    const yaml_char_t *anchor = NULL, *tag = NULL;

    if (ev->type == YAML_ALIAS_EVENT) {
        rc = conf_errat(r->e, line, "aliases (*%s) are not supported; write the value out",
                   (const char *)ev->data.alias.anchor);
        goto fail;
    }
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    } else {
        rc = conf_errat(r->e, line, "unexpected YAML event %d", (int)ev->type);
        goto fail;
    }
    if (anchor) {
        rc = conf_errat(r->e, line, "anchors (&%s) are not supported; write the value out",
                   (const char *)anchor);
        goto fail;
    }
    if (depth > DEPTH_MAX) {
        rc = conf_errat(r->e, line, "nested deeper than %d levels; a pipeline file is flatter",
                   DEPTH_MAX);
        goto fail;
    }
    if (tag && !(ev->type == YAML_SCALAR_EVENT &&
                 strcmp((const char *)tag, YAML_STR_TAG) == 0)) {
        rc = conf_errat(r->e, line, "tags (%s) are not supported; remove it (quote a value to "
                   "make it a string)", (const char *)tag);
        goto fail;
    }

    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = node_new(CONF_SCALAR, line);
        n->c.value = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        if (strlen(n->c.value) != ev->data.scalar.length) {
            rc = conf_errat(r->e, line, "a value contains a NUL character; remove it");
            goto fail;
        }
        n->c.quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        n = node_new(CONF_SEQ, line);
        for (;;) {
            ConfNode *kid;
            if ((rc = next(r, &e)))
                goto fail;
            if (e.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            if ((rc = build(r, &e, depth + 1, &kid)))
                goto fail;
            node_add(n, NULL, 0, kid);
        }
        break;
    default: /* YAML_MAPPING_START_EVENT */
        n = node_new(CONF_MAP, line);
        for (;;) {
            ConfNode *kid;
            if ((rc = next(r, &e)))
                goto fail;
            if (e.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            int kline = (int)e.start_mark.line + 1;
            if (e.type != YAML_SCALAR_EVENT || e.data.scalar.anchor || e.data.scalar.tag) {
                yaml_event_delete(&e);
                rc = conf_errat(r->e, kline, "a key must be plain text (no list, map, anchor or "
                           "tag); write it as name:");
                goto fail;
            }
            char *key = xstrndup((const char *)e.data.scalar.value, e.data.scalar.length);
            int nul = strlen(key) != e.data.scalar.length;
            yaml_event_delete(&e);
            if (nul) {
                rc = conf_errat(r->e, kline, "a key contains a NUL character; remove it");
                free(key);
                goto fail;
            }
            int dup = keyset_find(&ks, &n->c, key);
            if (dup >= 0) {
                rc = conf_errat(r->e, kline, "duplicate key '%.64s' (also at line %d); remove one",
                           key, n->c.klines[dup]);
                free(key);
                goto fail;
            }
            if ((rc = next(r, &e))) {
                free(key);
                goto fail;
            }
            if ((rc = build(r, &e, depth + 1, &kid))) {
                free(key);
                goto fail;
            }
            node_add(n, key, kline, kid);
            keyset_added(&ks, &n->c);
        }
        break;
    }
    free(ks.slot);
    yaml_event_delete(ev);
    *out = &n->c;
    return 0;
fail:
    free(ks.slot);
    yaml_event_delete(ev);
    conf_free(n ? &n->c : NULL);
    return rc;
}

int conf_read(const ConfErr *e, const char *text, size_t len, ConfNode **root)
{
    Reader r = {.e = e, .text = text, .len = len};
    yaml_event_t ev;
    ConfNode *doc = NULL;
    int rc;

    *root = NULL;
    if (!yaml_parser_initialize(&r.yp))
        return conf_errat(e, 1, "cannot start the YAML parser (out of memory)");
    yaml_parser_set_input_string(&r.yp, (const unsigned char *)text, len);
    if ((rc = next(&r, &ev)))
        goto fail;
    yaml_event_delete(&ev); /* stream start */
    if ((rc = next(&r, &ev)))
        goto fail;
    if (ev.type == YAML_DOCUMENT_START_EVENT) {
        yaml_event_delete(&ev);
        if ((rc = next(&r, &ev)) || (rc = build(&r, &ev, 0, &doc)))
            goto fail;
        if ((rc = next(&r, &ev)))
            goto fail;
        yaml_event_delete(&ev); /* document end */
        if ((rc = next(&r, &ev)))
            goto fail;
        if (ev.type == YAML_DOCUMENT_START_EVENT) {
            rc = conf_errat(e, (int)ev.start_mark.line + 1, "a second YAML document (---); keep the "
                       "whole pipeline in one document");
            yaml_event_delete(&ev);
            goto fail;
        }
    }
    yaml_event_delete(&ev); /* stream end */
    yaml_parser_delete(&r.yp);
    *root = doc;
    return 0;
fail:
    yaml_parser_delete(&r.yp);
    conf_free(doc);
    return rc;
}

/* ========================================================= variables */

const char *conf_text(const ConfNode *n)
{
    return n->raw ? n->raw : n->value;
}

static int name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* expand writes the expansion of scalar n's value into b: 0, or PL_EINVAL
 * with e's message. */
static int expand(const ConfErr *e, const ConfNode *n, Strbuf *b)
{
    const char *p = n->value;
    while (*p) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') { /* $${: a literal ${ */
            sb_add(b, "${", 2);
            p += 3;
            continue;
        }
        if (p[0] != '$' || p[1] != '{') {
            sb_add(b, p++, 1);
            continue;
        }
        const char *name = p + 2, *q = name, *def = NULL;
        size_t deflen = 0;
        while (name_char(*q))
            q++;
        size_t len = (size_t)(q - name);
        if (!len || !name_start(*name))
            return conf_errat(e, n->line, "'${' must be followed by a variable name (a letter or "
                              "_, then letters, digits, _) and '}', like ${API_TOKEN}; write $${ "
                              "for a literal ${");
        if (q[0] == ':' && q[1] == '-') {
            def = q + 2;
            const char *end = strchr(def, '}');
            if (!end)
                return conf_errat(e, n->line, "${%.*s:-... has no closing '}'", (int)len, name);
            deflen = (size_t)(end - def);
            if (memmem(def, deflen, "${", 2))
                return conf_errat(e, n->line, "${%.*s:-...}: a default cannot hold another ${...}; "
                                  "write it out", (int)len, name);
            q = end;
        }
        if (*q != '}')
            return conf_errat(e, n->line, "${%.*s is not closed: write ${%.*s} or "
                              "${%.*s:-default}", (int)len, name, (int)len, name, (int)len, name);
        char var[256];
        if (len >= sizeof var)
            return conf_errat(e, n->line, "${%.64s...}: the variable name is over %zu characters",
                              name, sizeof var - 1);
        memcpy(var, name, len);
        var[len] = '\0';
        const char *val = getenv(var);
        if (def && (!val || !*val))
            sb_add(b, def, deflen);
        else if (!val)
            return conf_errat(e, n->line, "${%s} is not set; export %s, or give a default: "
                              "${%s:-default}", var, var, var);
        else
            sb_adds(b, val);
        p = q + 1;
    }
    return 0;
}

int conf_subst(const ConfErr *e, ConfNode *n)
{
    int rc;
    if (n->type == CONF_SCALAR) {
        if (!strstr(n->value, "${") || n->raw)
            return 0;
        Strbuf b;
        sb_init(&b);
        if ((rc = expand(e, n, &b))) {
            sb_free(&b);
            return rc;
        }
        n->raw = n->value;
        n->value = xstrndup(b.buf ? b.buf : "", b.len);
        sb_free(&b);
        return 0;
    }
    for (size_t i = 0; i < n->n; i++) {
        if (n->type == CONF_MAP && strstr(n->keys[i], "${"))
            return conf_errat(e, conf_key_line(n, (int)i), "key '%.64s': variables are expanded "
                              "in values, not in keys; write the key out", n->keys[i]);
        if ((rc = conf_subst(e, n->kids[i])))
            return rc;
    }
    return 0;
}

/* ============================================================== getters */

const ConfNode *conf_get(const ConfNode *map, const char *key)
{
    if (!map || map->type != CONF_MAP)
        return NULL;
    int i = conf_index(map, key);
    return i < 0 ? NULL : map->kids[i];
}

static const char *unquote_hint(const ConfNode *n)
{
    return n->type == CONF_SCALAR && n->quoted ? "; write it without quotes" : "";
}

static int parse_uint(const char *s, unsigned long long *out)
{
    char *end;
    if (*s == '+')
        s++;
    if (!isdigit((unsigned char)*s))
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

/* parse_num accepts decimal numbers (1, 2.5, .5, 1e3): no hex, inf or nan. */
static int parse_num(const char *s, double *out)
{
    char *end;
    int digits = 0;
    for (const char *p = s; *p; p++) {
        if (isdigit((unsigned char)*p))
            digits = 1;
        else if (!strchr("+-.eE", *p))
            return 0;
    }
    if (!digits)
        return 0;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

int conf_as_str(const ConfErr *e, const char *key, const ConfNode *n, const char **out)
{
    char buf[64];
    if (n->type != CONF_SCALAR || conf_is_null(n))
        return conf_errat(e, n->line, "%s: expected a string (got %s)", key,
                          conf_desc(n, buf, sizeof buf));
    *out = n->value;
    return 0;
}

int conf_as_name(const ConfErr *e, const char *key, const ConfNode *n, const char **out)
{
    const char *s = NULL;
    int rc = conf_as_str(e, key, n, &s);
    if (rc)
        return rc;
    if (!*s)
        return conf_errat(e, n->line, "%s: is empty; give a value or remove the key", key);
    *out = s;
    return 0;
}

int conf_as_uint(const ConfErr *e, const char *key, const ConfNode *n, unsigned long long min,
                 unsigned long long max, unsigned long long *out)
{
    char buf[64];
    unsigned long long v;
    if (n->type == CONF_SCALAR && !n->quoted && parse_uint(n->value, &v) && v >= min && v <= max) {
        *out = v;
        return 0;
    }
    return conf_errat(e, n->line, "%s: expected a whole number from %llu to %llu (got %s)%s", key,
                      min, max, conf_desc(n, buf, sizeof buf), unquote_hint(n));
}

int conf_as_num(const ConfErr *e, const char *key, const ConfNode *n, double min, double max,
                const char *unit, double *out)
{
    char buf[64], range[80] = "";
    double v;
    if (n->type == CONF_SCALAR && !n->quoted && parse_num(n->value, &v) && v >= min && v <= max) {
        *out = v;
        return 0;
    }
    if (!isinf(min) || !isinf(max))
        snprintf(range, sizeof range, " from %g to %g", min, max);
    return conf_errat(e, n->line, "%s: expected a number%s%s%s (got %s)%s", key,
                      unit ? " of " : "", unit ? unit : "", range, conf_desc(n, buf, sizeof buf),
                      unquote_hint(n));
}

int conf_as_bool(const ConfErr *e, const char *key, const ConfNode *n, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    char buf[64];
    for (size_t i = 0; i < 3 && n->type == CONF_SCALAR && !n->quoted; i++)
        if (strcasecmp(n->value, yes[i]) == 0 || strcasecmp(n->value, no[i]) == 0) {
            *out = strcasecmp(n->value, yes[i]) == 0;
            return 0;
        }
    return conf_errat(e, n->line, "%s: expected true or false (got %s)%s", key,
                      conf_desc(n, buf, sizeof buf), unquote_hint(n));
}

int conf_as_strs(const ConfErr *e, const char *key, const ConfNode *n, const char ***out,
                 size_t *nout)
{
    char buf[64], k[96];
    const char **a = NULL;
    size_t m = 0;
    int rc;
    if (n->type == CONF_SCALAR && !conf_is_null(n)) {
        a = xcalloc(2, sizeof *a);
        a[m++] = n->value;
    } else if (n->type == CONF_SEQ) {
        a = xcalloc(n->n + 1, sizeof *a);
        for (; m < n->n; m++) {
            snprintf(k, sizeof k, "%s item %zu", key, m + 1);
            if ((rc = conf_as_str(e, k, n->kids[m], &a[m])))
                goto fail;
        }
    } else {
        return conf_errat(e, n->line, "%s: expected a string or a list of strings (got %s)", key,
                          conf_desc(n, buf, sizeof buf));
    }
    *out = a;
    *nout = m;
    return 0;
fail:
    free(a);
    return rc;
}

int conf_str(const char *file, const ConfNode *map, const char *key, const char **out, char *err,
             size_t errlen)
{
    const ConfNode *n = conf_get(map, key);
    ConfErr e = conf_err(file, err, errlen);
    return n ? conf_as_str(&e, key, n, out) : 0;
}

int conf_num(const char *file, const ConfNode *map, const char *key, double min, double max,
             double *out, char *err, size_t errlen)
{
    const ConfNode *n = conf_get(map, key);
    ConfErr e = conf_err(file, err, errlen);
    return n ? conf_as_num(&e, key, n, min, max, NULL, out) : 0;
}

int conf_uint(const char *file, const ConfNode *map, const char *key, unsigned long long max,
              unsigned long long *out, char *err, size_t errlen)
{
    const ConfNode *n = conf_get(map, key);
    ConfErr e = conf_err(file, err, errlen);
    return n ? conf_as_uint(&e, key, n, 0, max, out) : 0;
}

int conf_bool(const char *file, const ConfNode *map, const char *key, int *out, char *err,
              size_t errlen)
{
    const ConfNode *n = conf_get(map, key);
    ConfErr e = conf_err(file, err, errlen);
    return n ? conf_as_bool(&e, key, n, out) : 0;
}

int conf_strs(const char *file, const ConfNode *map, const char *key, const char ***out,
              size_t *n, char *err, size_t errlen)
{
    const ConfNode *v = conf_get(map, key);
    ConfErr e = conf_err(file, err, errlen);
    return v ? conf_as_strs(&e, key, v, out, n) : 0;
}
