/* pipeline_stages.c: the stages: section of the pipeline file. Each stage is
 * checked against the KindSpec of its kind (the keys it takes, their types
 * and ranges), which the kind declares itself (stages/); its init reads the
 * same keys later with the conf_* getters, so `pickline check` catches
 * whatever it would. What a stage sends over HTTP (URLs, templates, header
 * names and values, query names) is checked with http_check.h, so that no
 * value in the file can change a request. */
#include "pipeline.h"
#include "pipeline_int.h"

#include "http_check.h"
#include "model.h"
#include "pl.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONC_MAX 10000
#define CONC_DEFAULT 8
#define BATCH_CAP 100          /* batch defaults to min(concurrency, BATCH_CAP) */
#define THRESHOLD_COUNT_MAX (UINT64_MAX - 1) /* reject_threshold: count */

static const char *const stage_keys[] = {"name", "kind", "input", "output", "concurrency",
                                         "batch", "rate", "timeout", "connect_timeout",
                                         "insecure", "priority", "priority_field", NULL};
static const char *const rule_keys[] = {"when", "to", NULL};
static const char *const ops[] = {"equals", "not_equals", "exists", "in", NULL};
static const char *const cond_keys[] = {"field", "equals", "not_equals", "exists", "in", NULL};
static const char *const threshold_keys[] = {"count", "rate", NULL};

static int in_list(const char *const *a, const char *s)
{
    for (; a && *a; a++)
        if (strcmp(*a, s) == 0)
            return 1;
    return 0;
}

const ConfKey *conf_key(const ConfKey *keys, const char *name)
{
    for (const ConfKey *k = keys; k && k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* stage_keys_check is conf_keys_check for a stage: its keys are names
 * (those of every stage) and kk (its kind's), and a key of another of the
 * kinds says which. */
static int stage_keys_check(const ConfErr *l, const ConfNode *map, const char *what,
                            const char *const *names, const ConfKey *kk, const KindSpec *const *kinds)
{
    for (size_t i = 0; i < map->n; i++) {
        const char *key = map->keys[i];
        int line = conf_key_line(map, (int)i);
        if (in_list(names, key) || conf_key(kk, key))
            continue;
        ConfNear nr = CONF_NEAR(key);
        for (const char *const *a = names; a && *a; a++)
            conf_near_try(&nr, *a);
        for (const ConfKey *k = kk; k && k->name; k++)
            conf_near_try(&nr, k->name);
        if (nr.best)
            return conf_errat(l, line, "unknown key '%.64s'; did you mean '%s'?", key, nr.best);
        for (const KindSpec *const *k = kinds; k && *k; k++)
            if (conf_key((*k)->keys, key))
                return conf_errat(l, line, "unknown key '%.64s' for %s; it belongs to %s stages",
                             key, what, (*k)->name);
        char list[400] = "";
        size_t m = 0;
        for (const char *const *a = names; a && *a; a++)
            conf_join(list, sizeof list, &m, *a);
        for (const ConfKey *k = kk; k && k->name; k++)
            conf_join(list, sizeof list, &m, k->name);
        return conf_errat(l, line, "unknown key '%.64s'; %s takes %s", key, what, list);
    }
    return 0;
}

/* --------------------------------------------------------------- stages */

/* out_add adds queue q to s's outputs unless it is there already. */
static void out_add(StageConf *s, const char *q)
{
    for (size_t i = 0; i < s->noutputs; i++)
        if (strcmp(s->outputs[i], q) == 0)
            return;
    s->outputs = xrealloc(s->outputs, (s->noutputs + 2) * sizeof *s->outputs);
    s->outputs[s->noutputs++] = q;
    s->outputs[s->noutputs] = NULL;
}

/* qref checks that n names a declared queue and sets *out. */
static int qref(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n,
                const char **out)
{
    const char *q;
    int rc;
    if ((rc = conf_as_name(l, key, n, &q)))
        return rc;
    if (!pipeline_queue(p, q)) {
        ConfNear nr = CONF_NEAR(q);
        for (size_t i = 0; i < p->nqueues; i++)
            conf_near_try(&nr, p->queues[i].name);
        if (nr.best)
            return conf_errat(l, n->line, "%s queue '%.64s' is not declared; did you mean '%s'? "
                         "(or add it under queues:)", key, q, nr.best);
        return conf_errat(l, n->line, "%s queue '%.64s' is not declared; add it under queues:", key, q);
    }
    *out = q;
    return 0;
}

/* qrefs checks a queue or a list of queues and adds them to s's outputs. */
static int qrefs(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n, StageConf *s)
{
    char buf[64];
    const char *q;
    int rc;
    if (n->type == CONF_SCALAR && !conf_is_null(n)) {
        if ((rc = qref(l, p, key, n, &q)))
            return rc;
        out_add(s, q);
        return 0;
    }
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "%s: expected a queue name or a list of queue names (got %s)",
                     key, n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        if ((rc = qref(l, p, key, n->kids[i], &q)))
            return rc;
        out_add(s, q);
    }
    return 0;
}

static const char *show(char *buf, size_t size, const char *s)
{
    return http_printable(buf, size, s, strlen(s));
}

/* check_url: an http:// or https:// URL that no value can change (see
 * http_url_check); a template's {field}s only in the path and the query.
 * A callback base (base set) is a prefix: no query. */
static int check_url(const ConfErr *l, const char *key, const ConfNode *n, int tmpl, int base)
{
    char why[400];
    const char *u;
    int rc;
    if ((rc = conf_as_name(l, key, n, &u)))
        return rc;
    if (http_url_check(u, tmpl, why, sizeof why))
        return conf_errat(l, n->line, "%s: %s", key, why);
    if (base && strchr(u, '?'))
        return conf_errat(l, n->line, "%s: has a query (?...); the callback path is appended to "
                     "it, so give scheme://host:port and at most a path", key);
    return 0;
}

/* check_headers: a map of header names to values a stage sends with each
 * request (see http_header_check), as many as it likes. A value may name
 * where a secret is (env:NAME, file:PATH: pipeline_secret), read when the
 * stage starts. */
static int check_headers(const ConfErr *l, const char *key, const ConfNode *n)
{
    char buf[64], why[400];
    const char *s;
    int rc;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "%s: expected a map of names to strings (got %s)", key,
                     conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        char k[96];
        snprintf(k, sizeof k, "%s: %.64s", key, show(buf, sizeof buf, n->keys[i]));
        if ((rc = conf_as_str(l, k, n->kids[i], &s)))
            return rc;
        if (http_header_check(n->keys[i], "", why, sizeof why))
            return conf_errat(l, conf_key_line(n, (int)i), "%s: %s", key, why);
        if (pipeline_secret_is_ref(s)) { /* env:NAME, file:PATH: read when the stage starts */
            const char *bad = pipeline_secret_ref_error(s);
            if (bad)
                return conf_errat(l, n->kids[i]->line, "%s: %s", k, bad);
            continue;
        }
        if (http_header_check(n->keys[i], s, why, sizeof why))
            return conf_errat(l, n->kids[i]->line, "%s: %s", k, why);
    }
    return 0;
}

/* check_qname: a name written into a URL's query as it is (cursor_param):
 * unreserved characters only, so it cannot add parameters or end the URL. */
static int check_qname(const ConfErr *l, const char *key, const ConfNode *n)
{
    char buf[300];
    const char *s;
    int rc;
    if ((rc = conf_as_name(l, key, n, &s)))
        return rc;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._~", *p))
            return conf_errat(l, n->line, "%s: '%s' cannot be a query parameter name; use "
                         "letters, digits, - . _ ~", key, show(buf, sizeof buf, s));
    return 0;
}

static int check_map_of_strs(const ConfErr *l, const char *key, const ConfNode *n, int nonempty)
{
    char buf[64], k[96];
    const char *s;
    int rc;
    if (n->type != CONF_MAP || (nonempty && n->n == 0))
        return conf_errat(l, n->line, "%s: expected a map of names to strings (got %s)", key,
                     n->type == CONF_MAP ? "an empty map" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        snprintf(k, sizeof k, "%s: %.64s", key, n->keys[i]);
        if ((rc = nonempty ? conf_as_name(l, k, n->kids[i], &s) : conf_as_str(l, k, n->kids[i], &s)))
            return rc;
        if (!n->keys[i][0] || strpbrk(n->keys[i], " \t:\r\n"))
            return conf_errat(l, conf_key_line(n, (int)i), "%s: '%.64s' is not a valid name", key,
                         n->keys[i]);
    }
    return 0;
}

/* check_cond checks a route's when: {field: F, OP: V} with exactly one OP. */
static int check_cond(const ConfErr *l, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    const char *s, *op = NULL;
    int rc, b;

    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "when: expected a map like {field: country, equals: NL} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "when", cond_keys)))
        return rc;
    if (!(v = conf_get(n, "field")))
        return conf_errat(l, n->line, "when: field: is required; name the field of the job to test");
    if ((rc = conf_as_name(l, "when: field", v, &s)))
        return rc;
    for (const char *const *o = ops; *o; o++) {
        if (!(v = conf_get(n, *o)))
            continue;
        if (op)
            return conf_errat(l, conf_key_line(n, conf_index(n, *o)), "when: has both '%s' and '%s'; give "
                         "exactly one of equals, not_equals, exists, in", op, *o);
        op = *o;
        if (strcmp(op, "exists") == 0) {
            if ((rc = conf_as_bool(l, "when: exists", v, &b)))
                return rc;
        } else if (strcmp(op, "in") == 0) {
            if (v->type != CONF_SEQ || v->n == 0)
                return conf_errat(l, v->line, "when: in: expected a list of values (got %s)",
                             v->type == CONF_SEQ ? "an empty list" : conf_desc(v, buf, sizeof buf));
            for (size_t i = 0; i < v->n; i++)
                if (v->kids[i]->type != CONF_SCALAR || conf_is_null(v->kids[i]))
                    return conf_errat(l, v->kids[i]->line, "when: in: item %zu: expected a single "
                                 "value (got %s)", i + 1, conf_desc(v->kids[i], buf, sizeof buf));
        } else if (v->type != CONF_SCALAR || conf_is_null(v)) {
            return conf_errat(l, v->line, "when: %s: expected a single value (got %s)%s", op,
                         conf_desc(v, buf, sizeof buf), v->type == CONF_SEQ ? "; use in: for a list" :
                         conf_is_null(v) ? "; use exists: false for a missing field" : "");
        }
    }
    if (!op)
        return conf_errat(l, n->line, "when: needs one of equals, not_equals, exists, in");
    return 0;
}

static int check_routes(const ConfErr *l, const Pipeline *p, const ConfNode *n, StageConf *s)
{
    char buf[64];
    const ConfNode *v;
    int rc;
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "routes: expected a list of {when: ..., to: ...} (got %s)",
                     n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        const ConfNode *r = n->kids[i];
        ConfErr rl = *l;
        snprintf(rl.pfx, sizeof rl.pfx, "%.150sroutes item %zu: ", l->pfx, i + 1);
        if (r->type != CONF_MAP)
            return conf_errat(&rl, r->line, "expected a map {when: ..., to: ...} (got %s)",
                         conf_desc(r, buf, sizeof buf));
        if ((rc = conf_keys_check(&rl, r, "a route", rule_keys)))
            return rc;
        if (!(v = conf_get(r, "when")))
            return conf_errat(&rl, r->line, "when: is required; give a condition like "
                         "{field: country, equals: NL}");
        if ((rc = check_cond(&rl, v)))
            return rc;
        if (!(v = conf_get(r, "to")))
            return conf_errat(&rl, r->line, "to: is required; name the queue (or list of queues) "
                         "the matching jobs go to");
        if ((rc = qrefs(&rl, p, "to", v, s)))
            return rc;
    }
    return 0;
}

/* check_model_ref checks that n names a model declared under models:. With
 * need_models unset, a pipeline without models: takes any name (the rows
 * are staged under it, unchecked). */
static int check_model_ref(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n,
                           int need_models)
{
    const char *m;
    int rc;
    if ((rc = conf_as_name(l, key, n, &m)))
        return rc;
    if (!p->models) {
        if (!need_models)
            return 0;
        return conf_errat(l, n->line, "%s: model '%.64s' is not declared; declare it under models: "
                     "(the pipeline has no models: section)", key, m);
    }
    if (models_find(p->models, m))
        return 0;
    ConfNear nr = CONF_NEAR(m);
    for (size_t i = 0; i < p->models->n; i++)
        conf_near_try(&nr, p->models->m[i].name);
    if (nr.best)
        return conf_errat(l, n->line, "%s: model '%.64s' is not declared; did you mean '%s'? (or "
                     "declare it under models:)", key, m, nr.best);
    return conf_errat(l, n->line, "%s: model '%.64s' is not declared; declare it under models: or "
                 "fix the name", key, m);
}

/* check_threshold checks reject_threshold: {count: N, rate: R}. */
static int check_threshold(const ConfErr *l, const char *key, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    unsigned long long u;
    double d;
    int rc;
    if (n->type != CONF_MAP || n->n == 0)
        return conf_errat(l, n->line, "%s: expected a map like {count: 100, rate: 0.05} (got %s)", key,
                     n->type == CONF_MAP ? "an empty map" : conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "reject_threshold", threshold_keys)))
        return rc;
    if ((v = conf_get(n, "count")) &&
        (rc = conf_as_uint(l, "reject_threshold: count", v, 0, THRESHOLD_COUNT_MAX, &u)))
        return rc;
    if ((v = conf_get(n, "rate")) &&
        (rc = conf_as_num(l, "reject_threshold: rate", v, 0, 1, "rejected rows per row", &d)))
        return rc;
    return 0;
}

int conf_threshold(const char *file, const ConfNode *n, unsigned long long *count,
                   double *rate, char *err, size_t errlen)
{
    int rc = conf_uint(file, n, "count", THRESHOLD_COUNT_MAX, count, err, errlen);
    return rc ? rc : conf_num(file, n, "rate", 0, 1, rate, err, errlen);
}

/* check_kind_keys checks the keys of s's kind k. */
static int check_kind_keys(const ConfErr *l, const Pipeline *p, const KindSpec *k, const ConfNode *n,
                           StageConf *s)
{
    const ConfNode *v;
    const char *str, **strs;
    size_t m;
    double d;
    int rc = 0;

    for (const ConfKey *key = k->keys; key && key->name && !rc; key++) {
        if (!(v = conf_get(n, key->name))) {
            if (key->required)
                return conf_errat(l, n->line, "%s: is required for %s %s stage; %s", key->name,
                             k->article, k->name, key->hint);
            continue;
        }
        switch (key->type) {
        case KEY_STR:
            rc = conf_as_name(l, key->name, v, &str);
            break;
        case KEY_URL:
        case KEY_TMPL:
        case KEY_BASE:
            rc = check_url(l, key->name, v, key->type == KEY_TMPL, key->type == KEY_BASE);
            break;
        case KEY_QNAME:
            rc = check_qname(l, key->name, v);
            break;
        case KEY_SECS:
            rc = conf_as_num(l, key->name, v, key->min, key->max, "seconds", &d);
            break;
        case KEY_STRS:
            if (!(rc = conf_as_strs(l, key->name, v, &strs, &m))) {
                for (size_t i = 0; i < m && !rc; i++)
                    if (!strs[i][0])
                        rc = conf_errat(l, v->line, "%s: has an empty name; remove it", key->name);
                free(strs);
            }
            break;
        case KEY_HEADERS:
            rc = check_headers(l, key->name, v);
            break;
        case KEY_MERGE:
            rc = check_map_of_strs(l, key->name, v, 1);
            break;
        case KEY_ROUTES:
            rc = check_routes(l, p, v, s);
            break;
        case KEY_UINT: {
            unsigned long long u;
            rc = conf_as_uint(l, key->name, v, (unsigned long long)key->min,
                        (unsigned long long)key->max, &u);
            break;
        }
        case KEY_MODEL:
        case KEY_MODEL_OPT:
            rc = check_model_ref(l, p, key->name, v, key->type == KEY_MODEL);
            break;
        case KEY_THRESHOLD:
            rc = check_threshold(l, key->name, v);
            break;
        default: /* KEY_QUEUES */
            rc = qrefs(l, p, key->name, v, s);
            break;
        }
        if (!rc && key->check)
            rc = key->check(l, key->name, v);
    }
    return rc;
}

/* check_common reads the settings every stage has into s. */
static int check_common(const ConfErr *l, const ConfNode *n, StageConf *s)
{
    const ConfNode *v;
    unsigned long long u;
    int rc;

    s->concurrency = CONC_DEFAULT;
    s->timeout_s = 30;
    s->connect_timeout_s = 5;
    if ((v = conf_get(n, "concurrency"))) {
        if ((rc = conf_as_uint(l, "concurrency", v, 1, CONC_MAX, &u)))
            return rc;
        s->concurrency = (unsigned)u;
    }
    s->batch = s->concurrency < BATCH_CAP ? s->concurrency : BATCH_CAP;
    if ((v = conf_get(n, "batch"))) {
        if ((rc = conf_as_uint(l, "batch", v, 1, CONC_MAX, &u)))
            return rc;
        if (u > s->concurrency)
            return conf_errat(l, v->line, "batch: %llu is more than concurrency (%u); a stage "
                         "reserves at most concurrency jobs at a time", u, s->concurrency);
        s->batch = (unsigned)u;
    }
    if ((v = conf_get(n, "rate")) && (rc = conf_as_num(l, "rate", v, 0.001, 1e6, "requests per "
                                                 "second", &s->rate_per_s)))
        return rc;
    if ((v = conf_get(n, "timeout")) &&
        (rc = conf_as_num(l, "timeout", v, 0.001, CONF_SECS_MAX, "seconds", &s->timeout_s)))
        return rc;
    if ((v = conf_get(n, "connect_timeout")) &&
        (rc = conf_as_num(l, "connect_timeout", v, 0.001, CONF_SECS_MAX, "seconds", &s->connect_timeout_s)))
        return rc;
    if ((v = conf_get(n, "insecure")) && (rc = conf_as_bool(l, "insecure", v, &s->insecure)))
        return rc;
    if ((v = conf_get(n, "priority"))) {
        if ((rc = conf_as_uint(l, "priority", v, 0, UINT32_MAX, &u)))
            return rc;
        s->has_priority = 1;
        s->priority = (uint32_t)u;
    }
    if ((v = conf_get(n, "priority_field")) &&
        (rc = conf_as_name(l, "priority_field", v, &s->priority_field)))
        return rc;
    return 0;
}

/* check_priority checks priority: and priority_field: against the stage's
 * kind (a stage that puts no job has no priority to give) and, when the
 * stage names a declared model, priority_field against its properties: an
 * integer property (a priority is a whole number 0..4294967295). */
static int check_priority(const ConfErr *l, const Pipeline *p, const KindSpec *k,
                          const ConfNode *n, const StageConf *s)
{
    const ConfNode *v = conf_get(n, "priority_field"), *mv;
    int i;
    if ((k->flags & KIND_SINK) &&
        ((i = conf_index(n, "priority")) >= 0 || (i = conf_index(n, "priority_field")) >= 0))
        return conf_errat(l, conf_key_line(n, i), "%s: %s %s stage puts no job (its rows go into "
                          "batches); set the priority on the stage that feeds it, or remove %s:",
                          n->keys[i], k->article, k->name, n->keys[i]);
    if (!v || !p->models || !(mv = conf_get(n, "model")) || mv->type != CONF_SCALAR)
        return 0;
    const Model *m = models_find(p->models, mv->value);
    if (!m)
        return 0;
    for (size_t f = 0; f < m->nfields; f++) {
        const Field *fd = &m->fields[f];
        if (strcmp(fd->name, s->priority_field) != 0)
            continue;
        if (fd->type == FT_INTEGER || fd->type == FT_BIGINT || fd->type == FT_SERIAL)
            return 0;
        return conf_errat(l, v->line, "priority_field: property '%s' of model '%s' is %s; a "
                          "priority is a whole number 0..4294967295: name an integer property",
                          fd->name, m->name, model_type_name(fd->type));
    }
    ConfNear nr = CONF_NEAR(s->priority_field);
    for (size_t f = 0; f < m->nfields; f++)
        conf_near_try(&nr, m->fields[f].name);
    if (nr.best)
        return conf_errat(l, v->line, "priority_field: model '%s' has no property '%.64s'; did you "
                          "mean '%s'?", m->name, s->priority_field, nr.best);
    return conf_errat(l, v->line, "priority_field: model '%s' has no property '%.64s'; declare it "
                      "(an integer) or name one it has", m->name, s->priority_field);
}

/* kind_list writes the names of kinds, comma-separated, into buf. */
static const char *kind_list(const KindSpec *const *kinds, char *buf, size_t size)
{
    size_t m = 0;
    buf[0] = '\0';
    for (const KindSpec *const *k = kinds; *k; k++)
        conf_join(buf, size, &m, (*k)->name);
    return buf;
}

static int check_stage(const ConfErr *l, Pipeline *p, size_t idx, const ConfNode *n,
                       const KindSpec *const *kinds)
{
    char buf[64], what[64], list[400];
    const ConfNode *v;
    const KindSpec *k = NULL;
    const char *kind;
    StageConf *s = &p->stages[p->nstages++];
    ConfErr sl = *l;
    int rc, i;

    snprintf(sl.pfx, sizeof sl.pfx, "stage %zu: ", idx + 1);
    if (n->type != CONF_MAP)
        return conf_errat(&sl, n->line, "expected a map with name:, kind: and the stage's settings "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    s->node = n;
    s->line = n->line;
    if (!(v = conf_get(n, "name")))
        return conf_errat(&sl, n->line, "name: is required; give the stage a name (1 to %d of "
                     "A-Z a-z 0-9 _ . -)", QUEUE_NAME_MAX);
    if ((rc = conf_as_name(&sl, "name", v, &s->name)))
        return rc;
    if (!queue_name_ok(s->name))
        return conf_errat(&sl, v->line, "name: '%.64s' is invalid; use 1 to %d of A-Z a-z 0-9 _ . -",
                     s->name, QUEUE_NAME_MAX);
    for (size_t j = 0; j + 1 < p->nstages; j++)
        if (strcmp(p->stages[j].name, s->name) == 0)
            return conf_errat(&sl, v->line, "stage name '%s' is already used at line %d; give each "
                         "stage its own name", s->name, p->stages[j].line);
    snprintf(sl.pfx, sizeof sl.pfx, "stage '%s': ", s->name);

    if (!(v = conf_get(n, "kind")))
        return conf_errat(&sl, n->line, "kind: is required; use one of %s",
                          kind_list(kinds, list, sizeof list));
    if ((rc = conf_as_name(&sl, "kind", v, &kind)))
        return rc;
    for (const KindSpec *const *kk = kinds; *kk && !k; kk++)
        if (strcmp((*kk)->name, kind) == 0)
            k = *kk;
    if (!k) {
        ConfNear nr = CONF_NEAR(kind);
        for (const KindSpec *const *kk = kinds; *kk; kk++)
            conf_near_try(&nr, (*kk)->name);
        if (nr.best)
            return conf_errat(&sl, v->line, "kind: unknown kind '%.64s'; did you mean '%s'?", kind,
                         nr.best);
        return conf_errat(&sl, v->line, "kind: unknown kind '%.64s'; use one of %s", kind,
                          kind_list(kinds, list, sizeof list));
    }
    s->kind = k->name;
    s->spec = k;

    if ((k->flags & KIND_SOURCE) && (i = conf_index(n, "input")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "input: %s %s stage has no input (it is a source); "
                     "remove input:", k->article, k->name);
    if ((k->flags & KIND_ROUTE) && (i = conf_index(n, "output")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "output: %s %s stage has no output:; it writes the "
                     "queues named in routes: (to:) and default:", k->article, k->name);
    if ((k->flags & KIND_SINK) && (i = conf_index(n, "output")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "output: %s %s stage has no output (it seals its "
                     "rows into batches for qload: the end of the line); remove output:",
                     k->article, k->name);
    snprintf(what, sizeof what, "%s %s stage", k->article, k->name);
    if ((rc = stage_keys_check(&sl, n, what, stage_keys, k->keys, kinds)))
        return rc;

    if (!(k->flags & KIND_SOURCE)) {
        if (!(v = conf_get(n, "input"))) {
            if (!(k->flags & KIND_INPUT_OPTIONAL))
                return conf_errat(&sl, n->line, "input: is required; name the queue this stage reads");
        } else if ((rc = qref(&sl, p, "input", v, &s->input))) {
            return rc;
        }
    }
    if (!(k->flags & (KIND_ROUTE | KIND_SINK))) {
        if (!(v = conf_get(n, "output")))
            return conf_errat(&sl, n->line, "output: is required; name the queue this stage writes%s",
                         (k->flags & KIND_FAN_OUT) ? " (or a list: each gets every job)" : "");
        if (v->type == CONF_SEQ && v->n != 1 && !(k->flags & KIND_FAN_OUT))
            return conf_errat(&sl, v->line, "output: %s %s stage writes exactly one queue (got %zu)",
                         k->article, k->name, v->n);
        if ((rc = qrefs(&sl, p, "output", v, s)))
            return rc;
    }
    if ((rc = check_common(&sl, n, s)) || (rc = check_kind_keys(&sl, p, k, n, s)) ||
        (rc = check_priority(&sl, p, k, n, s)))
        return rc;
    if ((k->flags & KIND_SINK) && !p->models)
        return conf_errat(&sl, n->line, "%s %s stage needs the models: section (qload loads batches "
                     "by their model); declare the model of its rows under models:", k->article,
                     k->name);
    if (k->flags & KIND_LISTENER)
        p->listen_enabled = 1;
    return 0;
}

int pipeline_check_stages(const ConfErr *l, Pipeline *p, const ConfNode *n,
                          const KindSpec *const *kinds)
{
    char buf[64];
    int rc;
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "stages: expected a list of stages (- name: ..., kind: ...) "
                     "(got %s)", n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    p->stages = xcalloc(n->n, sizeof *p->stages);
    for (size_t i = 0; i < n->n; i++)
        if ((rc = check_stage(l, p, i, n->kids[i], kinds)))
            return rc;
    return 0;
}

